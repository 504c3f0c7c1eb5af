"""Partitions of the asset graph: days (UTC) from CHURN_START_DATE, and the months that follow it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import dagster as dg
import polars as pl

from churn_assets.config import SETTINGS

DATE_FORMAT = "%Y-%m-%d"
MONTH_FORMAT = "%Y-%m"
# The tags of a run over a range of partitions (a single partition's is ``dagster/partition``).
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date.isoformat(), timezone="UTC", fmt=DATE_FORMAT
)

# A month's partition exists from its first day (end_offset=1): the model of month M is trained on the
# 1st of M from labels known before M, and is the one in production during M.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=SETTINGS.start_date.strftime(MONTH_FORMAT),
    timezone="UTC",
    fmt=MONTH_FORMAT,
    end_offset=1,
)


def partition_column(partitions_def: dg.PartitionsDefinition | None) -> str:
    """The hive column a partitions definition stores under: ``date`` for days, ``month`` for months."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition) and partitions_def.fmt == MONTH_FORMAT:
        return "month"
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition) and partitions_def.fmt == DATE_FORMAT:
        return "date"
    raise ValueError(f"unsupported partitions definition for the lake: {partitions_def!r}")


def days_in_range(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days a run of a daily asset covers, in order (one for a single partition, many for a range)."""
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    if end <= start:  # `--partition-range LAST...FIRST`: Dagster runs it, over no day, and records no partition
        keys = context.partition_key_range
        raise dg.Failure(
            description=f"partition range {keys.start}...{keys.end} ends before it starts: "
            f"give the first day first (--partition-range {keys.end}...{keys.start})",
            allow_retries=False,
        )
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def rows_per_day(daily: pl.LazyFrame) -> dict[dt.date, int]:
    """The rows of each stored day of a daily asset's scan (one count per day, before any day is read)."""
    return dict(daily.group_by("date").agg(pl.len()).collect().iter_rows())


def window_sizes(daily: pl.LazyFrame | None, days: Sequence[dt.date], length: int) -> dict[dt.date, int]:
    """The rows of each day's window: the stored rows of day-length+1..day."""
    per_day = rows_per_day(daily) if daily is not None and days else {}
    return {day: sum(per_day.get(day - dt.timedelta(days=i), 0) for i in range(length)) for day in days}


def largest_window(daily: pl.LazyFrame | None, days: Sequence[dt.date], length: int) -> int:
    """The rows of the largest of the days' windows."""
    return max(window_sizes(daily, days, length).values(), default=0)


def latest_materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: Sequence[str]) -> dict:
    """The latest materialization record (``EventLogRecord``: ``timestamp``, ``asset_materialization``) of
    each of ``keys`` the asset has one for: one query of the event log per 1,000 materializations."""
    latest: dict = {}
    cursor = None
    while keys and len(latest) < len(keys):
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(keys)), limit=1000, cursor=cursor
        )
        for record in page.records:  # newest first
            if record.partition_key is not None and record.partition_key not in latest:
                latest[record.partition_key] = record
        if not page.has_more:
            break
        cursor = page.cursor
    return latest
