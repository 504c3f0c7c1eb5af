"""``simulate``: write a realistic, seeded landing zone of app events plus the ground truth behind it.

Layout written under ``out_url`` (a local path or ``s3://bucket/prefix``)::

    events/date=YYYY-MM-DD/part-00000.jsonl.gz   (part-00001... with files_per_day > 1), then _SUCCESS
    truth/users.parquet                          one row per user: install_time, churn_date, latent traits
    truth/simulation.json                        the parameters and counts of the run

Export quirks, always on: ~1 % of a day's events arrive in the next day's export folder (with their
original ``event_time``; the last day keeps its own), ~0.5 % are re-sent as exact duplicates within the
same export day. With ``dirty=True`` every export day also holds a few malformed rows of each kind
(``DIRTY_KINDS``) at deterministic positions.

Same arguments and seed give byte-identical files (the events themselves do not depend on the format,
the number of files or ``dirty``). Speed on the 2-core dev machine, jsonl.gz::

    python -c "from churn_assets.simulate import simulate; print(simulate('/tmp/l', users=20000, days=120).line())"
    # 7.75 M events, 188 MB, 7.1 s on an idle machine (~1.1 M events/s); ~12.5 s of CPU in total
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from churn_assets.config import resolve_url
from churn_assets.resources import filesystems
from churn_assets.simulate.population import (
    COUNTRY_CODES,
    ET,
    EVENT_TYPES,
    PLATFORMS,
    US_PER_DAY,
    DayEvents,
    Population,
    splitmix64,
)
from churn_assets.simulate.writer import (
    FORMATS,
    BackgroundWriter,
    GzipStream,
    JsonlRenderer,
    Tables,
    build_tables,
    canonical_frame,
    canonical_records,
    event_record,
    format_id,
    format_time,
    jsonl_line,
    render_table,
)

LATE_RATE = 0.01
DUPLICATE_RATE = 0.005
DUPLICATE_MAX_DISTANCE = 400  # a re-sent event appears up to this many rows after the original
DIRTY_KINDS: tuple[str, ...] = (
    "missing_user_id",
    "missing_event_id",
    "unparsable_time",
    "future_time",
    "stale_time",
    "negative_revenue",
)
DIRTY_PER_KIND = 3  # per export day; the variants of a kind cycle (key absent, null, empty string)

_EPOCH = dt.date(1970, 1, 1)


class SimulationRefused(ValueError):
    """An argument ``simulate`` refuses (a start out of range, an unsupported URL): ``churn-assets simulate``
    shows it as a usage error. Any other error is a bug, and keeps its traceback."""


@dataclass
class SimulationSummary:
    out_url: str
    days: list[dt.date]
    events_written: int  # rows written to the landing files, duplicates and dirty rows included
    users: int
    seconds: float
    # every event the users sent, before --event-share and --thin-before kept some of them: the simulator's work
    events_simulated: int = 0
    unique_events: int = 0
    duplicates: int = 0
    late_events: int = 0
    dirty_rows: int = 0
    churned_users: int = 0
    files: int = 0
    bytes_written: int = 0
    file_format: str = "jsonl.gz"
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        rate = self.events_written / self.seconds if self.seconds > 0 else 0.0
        first, last = (self.days[0], self.days[-1]) if self.days else ("-", "-")
        kept = (
            f"; {self.events_simulated:,} simulated, {self.events_simulated / self.seconds:,.0f}/s, before "
            f"--event-share/--thin-before kept some"
            if self.events_simulated > self.unique_events and self.seconds > 0 else ""
        )
        return (
            f"simulated {self.events_written:,} events ({self.users:,} users, {len(self.days)} days "
            f"{first}..{last}) in {self.seconds:.1f} s ({rate:,.0f} events/s{kept}), "
            f"{self.bytes_written / 1e6:,.1f} MB in {self.files} files under {self.out_url}"
        )


def _epoch_us(day: dt.date) -> int:
    return (day - _EPOCH).days * US_PER_DAY


def simulate(
    out_url: str,
    users: int = 500,
    days: int = 21,
    start: dt.date = dt.date(2025, 1, 1),
    seed: int = 7,
    dirty: bool = False,
    file_format: str = "jsonl.gz",
    files_per_day: int = 1,
    progress: bool = False,
    thin_before: dt.date | None = None,
    event_share: float = 1.0,
) -> SimulationSummary:
    """Simulate ``users`` app users over ``days`` days from ``start`` and write the landing zone.

    ``thin_before``: the export days before this date hold only the first event of each user active
    that day. The users, their days of activity and everything after the date are as without it, so a
    long history of a large population is cheap to write and to ingest while ``install_times`` and the
    ``user_daily`` rows (one per active user and day) keep their full size: the benchmarks' ``day``
    scale measures one full day's refresh on top of such a history.

    ``event_share``: the share of the other events of a session kept besides its ``session_start`` and
    the ``push_open`` that led to it (each kept with this probability, drawn apart from the users'
    behaviour). The same users are active on the same days, in the same sessions, sending fewer events:
    the benchmarks simulate each scale at the event count the performance targets give it.
    """
    if isinstance(start, str):
        start = dt.date.fromisoformat(start)
    if isinstance(start, dt.datetime):
        start = start.date()
    if isinstance(thin_before, str):
        thin_before = dt.date.fromisoformat(thin_before)
    if not 0.0 < event_share <= 1.0:
        raise SimulationRefused(f"event_share must be in (0, 1], not {event_share!r}")
    if file_format not in FORMATS:
        raise SimulationRefused(f"file_format must be one of {', '.join(FORMATS)}, not {file_format!r}")
    if users < 1 or days < 1 or files_per_day < 1:
        raise SimulationRefused("users, days and files_per_day must be at least 1")
    if not dt.date(1971, 1, 1) <= start <= dt.date(2200, 1, 1):
        raise SimulationRefused(f"start {start} is out of the supported range 1971..2200")
    # As the platform reads CHURN_LANDING_URL: gs://... was written to a local folder named "gs:".
    try:
        out_url = resolve_url(str(out_url))
    except ValueError as exc:
        raise SimulationRefused(str(exc)) from exc
    if not out_url.startswith("s3://") and Path(out_url).is_file():
        raise SimulationRefused(f"the landing root {out_url} is a file: give a folder (it is created if missing)")

    t0 = time.perf_counter()
    # A fourth child leaves the first three (and so the users and the exports) as with three.
    model_seq, export_seq, key_seq, share_seq = np.random.SeedSequence(seed).spawn(4)
    rng = np.random.Generator(np.random.PCG64(model_seq))
    xrng = np.random.Generator(np.random.PCG64(export_seq))
    srng = np.random.Generator(np.random.PCG64(share_seq))
    id_key, device_key = (int(k) for k in key_seq.generate_state(2, np.uint64))

    pop = Population(users, days, _epoch_us(start), start.weekday(), rng, id_key)
    tables = build_tables(users, splitmix64(np.arange(users, dtype=np.uint64) + np.uint64(device_key)),
                          pop.platform, pop.country, pop.n_versions, start, days)
    renderer = JsonlRenderer(tables) if file_format.startswith("jsonl") else None
    dirty_ids = _DirtyIds(id_key)  # a different 24-bit prefix from the events' (see _DirtyIds)

    writer = BackgroundWriter(out_url)
    stats = {"events_written": 0, "events_simulated": 0, "unique_events": 0, "duplicates": 0, "late_events": 0,
             "dirty_rows": 0}
    day_list = [start + dt.timedelta(days=d) for d in range(days)]
    carry = DayEvents.empty()
    try:
        with tqdm(total=days, disable=not progress, file=sys.stderr, unit="day", desc="simulate",
                  dynamic_ncols=True) as bar:
            for d, day in enumerate(day_list):
                ev = pop.step(d)
                stats["events_simulated"] += len(ev)
                if event_share < 1.0 and len(ev):
                    always = (ev.event_type == ET["session_start"]) | (ev.event_type == ET["push_open"])
                    ev = ev.take(np.flatnonzero(always | (srng.random(len(ev)) < event_share)))
                if thin_before is not None and day < thin_before and len(ev):
                    ev = ev.take(np.sort(np.unique(ev.user, return_index=True)[1]))
                stats["unique_events"] += len(ev)
                if d < days - 1 and len(ev):
                    late = xrng.random(len(ev)) < LATE_RATE
                else:
                    late = np.zeros(len(ev), bool)
                today = ev.take(~late)
                export = DayEvents.concat([today, carry])
                keys = np.concatenate([np.arange(len(today), dtype=np.float64),
                                       xrng.uniform(0.0, max(len(today), 1), len(carry))])
                carry = ev.take(late)
                stats["late_events"] += int(late.sum())
                n = len(export)
                n_dup = int(xrng.binomial(n, DUPLICATE_RATE)) if n else 0
                src = xrng.choice(n, n_dup, replace=False) if n_dup else np.empty(0, np.int64)
                all_keys = np.concatenate([keys, keys[src] + xrng.uniform(1.0, DUPLICATE_MAX_DISTANCE, n_dup)])
                rows = np.concatenate([np.arange(n), src])[np.argsort(all_keys, kind="stable")]
                stats["duplicates"] += n_dup

                written = _write_day(writer, out_url, day, export, rows, tables, renderer, file_format,
                                     files_per_day, dirty, dirty_ids)
                stats["events_written"] += len(rows) + written
                stats["dirty_rows"] += written
                bar.update(1)
                bar.set_postfix(events=f"{stats['events_written']:,}", refresh=False)

        churn_index = pop.churn_date_index()
        churned_mask = churn_index >= 0
        churn_date = pl.Series(
            np.where(churned_mask, (start - _EPOCH).days + churn_index, 0).astype(np.int32)
        ).cast(pl.Date)
        churn_date = churn_date.zip_with(pl.Series(churned_mask), pl.Series([None] * users, dtype=pl.Date))
        truth = pl.DataFrame(
            {
                "user_id": tables.user_id_series,
                "install_time": pl.Series(pop.install_us).cast(pl.Datetime("us", "UTC")),
                "churn_date": churn_date,
                "engagement": pop.engagement,
                "friction": pop.friction,
                "platform": pl.Series(PLATFORMS).gather(pop.platform),
                "country": pl.Series(COUNTRY_CODES).gather(pop.country),
            }
        )
        buf = io.BytesIO()
        truth.write_parquet(buf, compression="zstd", statistics=True)
        writer.write_file(filesystems.join(out_url, "truth", "users.parquet"), [buf.getvalue()])
        churned = int(churned_mask.sum())
        meta = {
            "users": users,
            "days": days,
            "start": start.isoformat(),
            "end": day_list[-1].isoformat(),
            "seed": seed,
            "dirty": dirty,
            "file_format": file_format,
            "files_per_day": files_per_day,
            **({"thin_before": thin_before.isoformat()} if thin_before else {}),
            "event_share": event_share,
            "event_types": list(EVENT_TYPES),
            "late_rate": LATE_RATE,
            "duplicate_rate": DUPLICATE_RATE,
            "dirty_kinds": list(DIRTY_KINDS) if dirty else [],
            "dirty_per_kind_per_day": DIRTY_PER_KIND if dirty else 0,
            "churned_users": churned,
            "active_users_at_end": users - churned,
            **stats,
        }
        writer.write_file(filesystems.join(out_url, "truth", "simulation.json"),
                          [(json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()])
    finally:
        writer.close()

    return SimulationSummary(
        out_url=out_url,
        days=day_list,
        users=users,
        seconds=time.perf_counter() - t0,
        churned_users=churned,
        files=writer.files_written,
        bytes_written=writer.bytes_written,
        file_format=file_format,
        **stats,
    )


class _DirtyIds:
    """Event ids for dirty rows: the events' id layout with a different prefix, so never a real event's."""

    def __init__(self, id_prefix: int):
        self.base = (((id_prefix & 0xFFFFFF) ^ 0x800000) << 40)
        self.next = 0

    def __call__(self) -> str:
        value = self.base | self.next
        self.next += 1
        return format_id(value)


def _dirty_record(kind: str, variant: int, base: dict, day: dt.date, new_id: str) -> dict:
    """A malformed copy of ``base`` (a JSON-shaped event dict) with one recognisable defect."""
    rec = dict(base)
    rec["$insert_id"] = new_id
    time_of_day = rec["event_time"][11:]
    if kind == "missing_user_id":
        if variant % 3 == 0:
            del rec["user_id"]
        else:
            rec["user_id"] = None if variant % 3 == 1 else ""
    elif kind == "missing_event_id":
        if variant % 3 == 0:
            del rec["$insert_id"]
        else:
            rec["$insert_id"] = None if variant % 3 == 1 else ""
    elif kind == "unparsable_time":
        rec["event_time"] = "not-a-time"
    elif kind == "future_time":
        rec["event_time"] = f"{day + dt.timedelta(days=2)} {time_of_day}"
    elif kind == "stale_time":
        rec["event_time"] = f"{day - dt.timedelta(days=9)} {time_of_day}"
    elif kind == "negative_revenue":
        rec["event_type"] = "purchase"
        rec["revenue"] = -4.99
        rec["event_properties"] = {"product": "pro_monthly"}
    else:  # pragma: no cover
        raise ValueError(kind)
    return rec


def _canonical(rec: dict) -> dict:
    session_id = rec.get("session_id")
    return {
        "event_id": rec.get("$insert_id"),
        "user_id": rec.get("user_id"),
        "event_time": rec.get("event_time"),
        "event_type": rec.get("event_type"),
        "session_id": None if session_id is None or session_id < 0 else session_id,
        "platform": rec.get("platform"),
        "country": rec.get("country"),
        "app_version": rec.get("version_name"),
        "revenue": rec.get("revenue"),
    }


def _write_day(writer: BackgroundWriter, out_url: str, day: dt.date, export: DayEvents, rows: np.ndarray,
               tables: Tables, renderer: JsonlRenderer | None, file_format: str, files_per_day: int,
               dirty: bool, dirty_ids: _DirtyIds) -> int:
    """Queue one export day's files and then its ``_SUCCESS``; returns the number of dirty rows."""
    folder = filesystems.join(out_url, "events", f"date={day.isoformat()}")
    writer.clear_folder(folder)
    n = len(rows)

    # dirty rows: inserted before evenly spaced row positions, each a broken copy of the row there
    inserts: dict[int, list[dict]] = {}
    if dirty and n:
        total = len(DIRTY_KINDS) * DIRTY_PER_KIND
        for k in range(total):
            position = (k + 1) * n // (total + 1)
            base = event_record(export, int(rows[position]), tables)
            kind, variant = DIRTY_KINDS[k % len(DIRTY_KINDS)], k // len(DIRTY_KINDS)
            inserts.setdefault(position, []).append(_dirty_record(kind, variant, base, day, dirty_ids()))
    n_dirty = sum(len(v) for v in inserts.values())

    bounds = [n * i // files_per_day for i in range(files_per_day + 1)]
    for part in range(files_per_day):
        a, b = bounds[part], bounds[part + 1]
        cuts = sorted(p for p in inserts if a <= p < b)
        segments: list[tuple[int, int, list[dict]]] = []  # (row from, row to, dirty rows before them)
        prev = a
        pending: list[dict] = []
        for p in cuts:
            segments.append((prev, p, pending))
            pending, prev = inserts[p], p
        segments.append((prev, b, pending))
        path = filesystems.join(folder, f"part-{part:05d}.{file_format}")

        if renderer is not None:
            def pieces(segments):
                for lo, hi, before in segments:
                    if before:
                        yield b"".join(jsonl_line(r) for r in before)
                    yield from renderer.chunks(export, rows[lo:hi])

            if file_format == "jsonl.gz":
                stream = GzipStream(writer, level=1)
                for piece in pieces(segments):
                    if piece:
                        stream.add(piece)
                writer.write_file(path, stream.finish())
            else:
                writer.write_file(path, list(pieces(segments)))
        else:
            frames = []
            for lo, hi, before in segments:
                if before:
                    frames.append(canonical_records([_canonical(r) for r in before]))
                if hi > lo or not frames:
                    frames.append(canonical_frame(export, rows[lo:hi], tables))
            writer.write_file(path, [render_table(frames, file_format)])
    writer.write_file(filesystems.join(folder, "_SUCCESS"), [b""])
    return n_dirty


__all__ = ["simulate", "SimulationSummary", "DIRTY_KINDS", "EVENT_TYPES", "format_time"]
