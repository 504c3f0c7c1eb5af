"""Helpers of the ingest tests: hand-written landing days, in-process runs of the ingest assets, lake reads."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import polars as pl

from churn_assets.assets import ingest
from churn_assets.resources import LandingZone
from churn_assets.resources.filesystems import filesystem, join, polars_storage_options

INGEST = [*ingest.assets, *ingest.asset_checks]


def amplitude_row(
    event_id: str | None,
    user_id: str | None,
    event_time: str | None,
    event_type: str = "screen_view",
    session_id: int | None = -1,
    platform: str = "iOS",
    country: str = "US",
    version_name: str = "1.0.0",
    revenue: float | None = None,
    **extra: object,
) -> dict:
    """One event in the Amplitude export shape of DESIGN.md."""
    row = {
        "$insert_id": event_id,
        "user_id": user_id,
        "event_time": event_time,
        "event_type": event_type,
        "session_id": session_id,
        "platform": platform,
        "country": country,
        "version_name": version_name,
        "revenue": revenue,
    }
    row.update(extra)
    return row


def jsonl(rows: list[dict], gz: bool = False) -> bytes:
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return gzip.compress(data, mtime=0) if gz else data


def write_landing_day(landing_url: str, day: str, files: dict[str, bytes], complete: bool = True) -> str:
    """Writes ``events/date=DAY/<name>`` for each file (and ``_SUCCESS`` when complete); returns the folder."""
    fs = filesystem(landing_url)
    folder = join(landing_url, "events", f"date={day}")
    if not folder.startswith("s3://"):
        os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        fs.pipe_file(join(folder, name), data)
    if complete:
        fs.pipe_file(join(folder, "_SUCCESS"), b"")
    return folder


@dataclass
class Gate:
    """Holds a run's read of one landing file at a known point: ``reached`` is set when the run is about to
    open the file, which it opens once the test sets ``opened``."""

    reached: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)


# file URL -> its gate; a test adds its own and removes them (the run is in-process, in the test's process).
GATES: dict[str, Gate] = {}


class GatedLandingZone(LandingZone):
    """The landing zone, but a read of a file in ``GATES`` waits for its gate to open before the file is opened:
    a run paused mid-step deterministically, with real files (the read that follows is the zone's own)."""

    def read_blocks(
        self, file_url: str, block_bytes: int = 8 * 1024 * 1024, listed: tuple[int, str] | None = None
    ) -> Iterator[bytes]:
        gate = GATES.get(file_url)
        if gate is not None:
            gate.reached.set()
            if not gate.opened.wait(timeout=120):
                raise TimeoutError(f"the test never opened the gate of {file_url}")
        yield from super().read_blocks(file_url, block_bytes, listed)


def gated(resources: dict) -> dict:
    """``resources`` with their landing zone gated (``GatedLandingZone``)."""
    landing = resources["landing"]
    return resources | {
        "landing": GatedLandingZone(url=landing.url, max_quarantined_share=landing.max_quarantined_share)
    }


def tree_digest(root: str | Path) -> dict[str, str]:
    """Every file under a local folder with the sha256 of its bytes and its mtime: proof nothing changed."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            found[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest() + f"@{path.stat().st_mtime_ns}"
            )
    return found


def materialize_ingest(resources: dict, instance: dg.DagsterInstance, first: str, last: str | None = None,
                       selection=None, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """One in-process run of the ingest assets (and their blocking checks) over ``first``..``last``."""
    if last is None or last == first:
        return dg.materialize(INGEST, resources=resources, instance=instance, partition_key=first,
                              selection=selection, raise_on_error=raise_on_error)
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return dg.materialize(INGEST, resources=resources, instance=instance, tags=tags, selection=selection,
                          raise_on_error=raise_on_error)


def read_partition(lake_url: str, asset: str, day: str | dt.date) -> pl.DataFrame:
    url = join(lake_url, asset, f"date={day}", "data.parquet")
    if url.startswith("s3://"):
        return pl.read_parquet(io.BytesIO(filesystem(url).cat_file(url)))
    return pl.read_parquet(url, storage_options=polars_storage_options(url))


def partition_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    """Each materialized partition of ``asset`` → its metadata values (plain Python values)."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key != dg.AssetKey(asset):
            continue
        found[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    return found
