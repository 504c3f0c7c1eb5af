"""Blocking checks of the ingest assets: a partition that fails one stops everything downstream of it."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from churn_assets.assets.check_days import (
    check_result,
    counts_per_day,
    each_checked_batch,
    each_partition,
    in_days,
    partition_check,
    without_rows,
)
from churn_assets.assets.ingest.landing_files import CANONICAL_SCHEMA, MAX_LATENESS, first_of_each_id
from churn_assets.assets.ingest.raw_events import raw_events
from churn_assets.assets.ingest.user_daily import TOTAL_COLUMNS, user_daily
from churn_assets.partitions import latest_materializations
from churn_assets.resources import LandingZone


@partition_check(
    "raw_events_are_valid",
    raw_events,
    (
        "Unique event ids, no null users, event times inside the export day's bounds, canonical schema, "
        "and no day with more of its rows quarantined than CHURN_MAX_QUARANTINED_SHARE (half by default)."
    ),
)
def raw_events_are_valid(
    context: dg.AssetCheckExecutionContext, raw_events: pl.LazyFrame, landing: LandingZone
) -> Iterator[dg.AssetCheckEvaluation]:
    schema = raw_events.collect_schema()
    wrong_schema = [c for c, t in CANONICAL_SCHEMA.items() if schema.get(c) != t]
    day_start = pl.col("date").cast(pl.Datetime("us", "UTC"))
    each_batch = each_checked_batch(context, raw_events)
    per_day = counts_per_day(
        each_batch,
        raw_events,
        pl.col("user_id").is_null().sum().alias("null_user_ids"),
        (
            (pl.col("event_time") >= day_start + pl.duration(days=1))
            | (pl.col("event_time") < day_start - pl.duration(days=MAX_LATENESS.days))
        ).sum().alias("event_times_out_of_bounds"),
        pl.len().alias("rows"),
    )

    def duplicates(days: list[dt.date], engine: str) -> dict[dt.date, int]:
        # Ids are unique within an export day (a late event may be re-exported on a later day).
        ids = raw_events.filter(in_days(days)).select("date", "event_id").collect(engine=engine)
        found = dict.fromkeys(days, 0)
        for (day,), of_day in ids.partition_by("date", as_dict=True).items():
            found[day] = int((~first_of_each_id(of_day.get_column("event_id"))).sum())
        return found

    duplicate_ids = {day: count for batch in each_batch(duplicates) for day, count in batch.items()}
    # A day that sends most of its rows to the quarantine is a broken export (a changed time format,
    # renamed keys), not a dirty one: its partition stays stored with its quarantine, for a look, but
    # nothing downstream reads it.
    quarantines = quarantines_of(context.instance, list(context.partition_keys))
    results = {}
    for key in context.partition_keys:
        day, (share, example) = dt.date.fromisoformat(key), quarantines.get(key, (0.0, ""))
        mostly_quarantined = share > landing.max_quarantined_share
        results[key] = check_result(
            {
                "duplicate_event_ids": duplicate_ids[day],
                "null_user_ids": per_day[day]["null_user_ids"],
                "event_times_out_of_bounds": per_day[day]["event_times_out_of_bounds"],
                "columns_with_wrong_type": len(wrong_schema),
                "days_mostly_quarantined": int(mostly_quarantined),
            },
            rows=per_day[day]["rows"],
            wrong_columns=str(wrong_schema),
            mostly_quarantined=(
                f"{share:.0%} of the rows read quarantined, more than CHURN_MAX_QUARANTINED_SHARE = "
                f"{landing.max_quarantined_share:g}: {example}. An export whose format changed: fix the export "
                "(or its files) and re-deliver the day; docs/operations.md, 'The quarantine'"
                if mostly_quarantined
                else ""
            ),
            quarantined_share=share,
        )
    yield from each_partition(context, results)


def quarantines_of(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, tuple[float, str]]:
    """Each partition's share of rows read that went to the quarantine, and its example row (what the commonest
    reason saw, where), from its latest materialization's metadata (``rows_read``, ``quarantined``,
    ``quarantine_example``)."""
    found: dict[str, tuple[float, str]] = {}
    for key, record in latest_materializations(instance, raw_events.key, keys).items():
        metadata = record.asset_materialization.metadata
        read, quarantined = metadata.get("rows_read"), metadata.get("quarantined")
        known = read is not None and quarantined is not None and read.value
        example = metadata.get("quarantine_example")
        found[key] = (quarantined.value / read.value if known else 0.0, example.value if example else "")
    return found


@partition_check(
    "user_daily_is_consistent",
    user_daily,
    "One row per user and day, no negative count, every user known to install_times.",
    additional_deps=["install_times"],
)
def user_daily_is_consistent(
    context: dg.AssetCheckExecutionContext, user_daily: pl.LazyFrame, install_times: pl.LazyFrame
) -> Iterator[dg.AssetCheckEvaluation]:
    counts = [c for c in user_daily.collect_schema() if c.startswith("n_") or c in TOTAL_COLUMNS]

    def unknown_users(days: list[dt.date]) -> pl.LazyFrame:
        known = install_times.filter(in_days(days))
        today = user_daily.filter(in_days(days))
        return today.join(known, on=["date", "user_id"], how="anti").group_by("date").agg(
            pl.len().alias("users_missing_from_install_times")
        )

    per_day = counts_per_day(
        each_checked_batch(context, user_daily),
        user_daily,
        (pl.len() - pl.struct("date", "user_id").n_unique()).alias("duplicate_user_days"),
        pl.sum_horizontal([(pl.col(c) < 0).sum() for c in counts]).alias("negative_counts"),
        pl.len().alias("rows"),
        also=unknown_users,
    )
    results = {day.isoformat(): check_result(without_rows(stats), rows=stats["rows"]) for day, stats in per_day.items()}
    yield from each_partition(context, results)
