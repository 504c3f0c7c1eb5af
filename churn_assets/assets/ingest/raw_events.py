"""``raw_events``: every valid event of one export day, typed and deduplicated."""


import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import polars as pl

from churn_assets.assets.ingest.landing_files import (
    CANONICAL_SCHEMA,
    LandingFileError,
    read_landing_file,
    vet_export_day,
)
from churn_assets.partitions import daily_partitions, days_in_range
from churn_assets.resources import LakeResource, LandingZone
from churn_assets.resources.parquet_io_manager import PartitionStream, column_schema

QUARANTINE_ASSET = "raw_events_quarantine"
_RAW_COLUMNS = [
    "source_file", "line", "event_id", "user_id", "event_time", "event_type",
    "session_id", "platform", "country", "app_version", "revenue", "parse_error",
]


@dg.asset(
    group_name="ingest",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    owners=["team:data-platform"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2),
    metadata={"dagster/column_schema": column_schema(CANONICAL_SCHEMA)},
)
def raw_events(context: dg.AssetExecutionContext, landing: LandingZone, lake: LakeResource) -> PartitionStream:
    """Every valid event exported on day D (UTC), whatever its ``event_time``: typed to the canonical
    columns, duplicate event ids dropped. Reads the landing files of ``events/date=D/`` (JSONL, JSONL.gz,
    Parquet or CSV) once the day's ``_SUCCESS`` exists. Untrustworthy rows go to
    ``raw_events_quarantine/date=D/`` with a reason each; their counts are materialization metadata.
    """
    return PartitionStream(_stream(context, days_in_range(context), landing, lake))


def _stream(
    context: dg.AssetExecutionContext, days: list[dt.date], landing: LandingZone, lake: LakeResource
) -> Iterator[tuple[str, pl.DataFrame]]:
    # Two stages on two cores: while one day is vetted and written, a worker thread reads and decodes the
    # next day's files (gzip and polars' JSON reader release the GIL), two files at a time when the day
    # has several (an hourly export, or one day's refresh with nothing to read ahead). Days still come
    # out in order, and at most two are in memory.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="landing-day") as reader,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="landing-file") as decoders,
    ):
        upcoming = reader.submit(_read_day, landing, days[0], decoders) if days else None
        for index, day in enumerate(days):
            files, raw = upcoming.result()
            if index + 1 < len(days):
                upcoming = reader.submit(_read_day, landing, days[index + 1], decoders)
            yield day.isoformat(), _vet_day(context, day, files, raw, lake)


def _read_day(
    landing: LandingZone, day: dt.date, decoders: ThreadPoolExecutor
) -> tuple[list[str], pl.DataFrame]:
    """The day's landing files and their rows as the raw frame (text or JSON numbers, with file and line)."""

    def read(url: str) -> pl.DataFrame:
        return read_landing_file(url, landing.read_bytes(url)).select(_RAW_COLUMNS)

    try:
        files = landing.data_files(day)
        frames = list(decoders.map(read, files))
    except (LandingFileError, FileNotFoundError) as exc:
        # Retrying cannot make a corrupt file readable or an incomplete day complete: fail at once.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    return files, pl.concat(frames, how="vertical_relaxed") if frames else _empty_raw()


def _vet_day(
    context: dg.AssetExecutionContext, day: dt.date, files: list[str], raw: pl.DataFrame, lake: LakeResource
) -> pl.DataFrame:
    vetted = vet_export_day(raw, day)

    store = lake.lake
    quarantine_url = store.table_url(QUARANTINE_ASSET, "date", day.isoformat())
    store.write_table(quarantine_url, vetted.quarantine)
    counts = vetted.quarantine_counts()
    context.add_asset_metadata(
        {
            "landing_files": len(files),
            "rows_read": vetted.rows_read,
            "duplicates_dropped": vetted.duplicates_dropped,
            "quarantined": vetted.quarantine.height,
            **{f"quarantined/{reason}": n for reason, n in counts.items() if n},
            "quarantine_uri": quarantine_url,
        },
        partition_key=day.isoformat(),
    )
    if vetted.quarantine.height:
        context.log.warning(f"{day}: {vetted.quarantine.height} rows quarantined at {quarantine_url}: {counts}")
    return vetted.events


def _empty_raw() -> pl.DataFrame:
    schema = {c: pl.String for c in _RAW_COLUMNS} | {"line": pl.UInt32}
    return pl.DataFrame(schema=schema)
