"""``install_times``: everyone seen so far, carried forward one day at a time."""


import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from churn_assets.partitions import daily_partitions, days_in_range
from churn_assets.resources.parquet_io_manager import PartitionStream, column_schema
from churn_assets.threads import ordered_map

INSTALL_TIMES_SCHEMA = {
    "user_id": pl.String(),
    "install_time": pl.Datetime("us", "UTC"),
    "first_active_date": pl.Date(),
    "last_active_date": pl.Date(),
}


@dg.asset(
    group_name="ingest",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    owners=["team:data-platform"],
    metadata={
        "dagster/column_schema": column_schema(
            INSTALL_TIMES_SCHEMA,
            {
                "user_id": "The user: every user seen up to D.",
                "install_time": "The time of the user's first event seen (UTC): the install time.",
                "first_active_date": "The first export day with an event of the user.",
                "last_active_date": "The last export day up to D with an event of the user.",
            },
            key="user_id",
            not_null=INSTALL_TIMES_SCHEMA,
        )
    },
    ins={
        "raw_events": dg.AssetIn(),
        "previous": dg.AssetIn(
            key="install_times",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    },
)
def install_times(
    context: dg.AssetExecutionContext, raw_events: pl.LazyFrame, previous: pl.LazyFrame | None
) -> PartitionStream:
    """One row per user ever seen up to the end of day D: ``install_time`` (the earliest event time seen,
    moved earlier when a late event reveals an earlier one) and the first and last export day with
    activity. Incremental: ``install_times[D-1]`` plus ``raw_events[D]``; a range run carries the state
    from day to day in memory.
    """
    days = days_in_range(context)
    state = None if previous is None else previous.drop("date").collect()
    return PartitionStream(_stream(days, raw_events, state))


def _stream(
    days: list[dt.date], raw_events: pl.LazyFrame, state: pl.DataFrame | None
) -> Iterator[tuple[str, pl.DataFrame]]:
    def earliest_of(day: dt.date) -> tuple[dt.date, pl.DataFrame]:
        # Each user's earliest event of the day, on a worker thread while the previous day is merged into
        # the state. Aggregated as it is read: polars' streaming engine takes 1.2 s for a day of 27.7 M
        # events, where reading them all and then grouping takes 3.6 s.
        events = raw_events.filter(pl.col("date") == day).select("user_id", "event_time")
        return day, events.group_by("user_id").agg(pl.col("event_time").min()).collect()

    for day, earliest in ordered_map(earliest_of, days, workers=1):
        state = advance_install_times(state, earliest, day)
        yield day.isoformat(), state


def advance_install_times(previous: pl.DataFrame | None, earliest: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """``install_times[D]`` from ``install_times[D-1]`` (None before the first day) and each user's earliest
    ``event_time`` in ``raw_events[D]`` (one row per user)."""
    today = earliest.select("user_id", pl.col("event_time").alias("first_time_today"))
    if previous is None:
        previous = pl.DataFrame(schema=INSTALL_TIMES_SCHEMA)
    merged = previous.join(today, on="user_id", how="full", coalesce=True)
    return (
        merged.select(
            "user_id",
            pl.min_horizontal("install_time", "first_time_today").alias("install_time"),
            pl.col("first_active_date").fill_null(day),
            pl.when(pl.col("first_time_today").is_not_null())
            .then(pl.lit(day))
            .otherwise(pl.col("last_active_date"))
            .alias("last_active_date"),
        )
        .sort("user_id")
        .cast(INSTALL_TIMES_SCHEMA)
    )
