"""``features``: the feature snapshot of every user at risk, as of the end of each day."""

import datetime as dt
from collections.abc import Sequence

import dagster as dg
import polars as pl

from churn_assets.assets.features.catalog import (
    CATEGORICAL_COLUMNS,
    LOOKBACK_DAYS,
    TREND_DAYS,
    TYPE_WINDOWS,
    WINDOWS,
    WINDOW_SUMS,
    features_schema,
    table_schema,
)
from churn_assets.assets.features.rolling import trailing_windows
from churn_assets.assets.ingest.user_daily import event_type_column
from churn_assets.config import SETTINGS
from churn_assets.partitions import daily_partitions, days_in_range
from churn_assets.resources import ChurnParameters
from churn_assets.resources.parquet_io_manager import PartitionStream


@dg.asset(
    group_name="features",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    owners=["team:data-platform"],
    ins={
        "user_daily": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(LOOKBACK_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
            )
        ),
        "install_times": dg.AssetIn(),
    },
    metadata={"dagster/column_schema": table_schema(SETTINGS.event_types)},
)
def features(
    context: dg.AssetExecutionContext,
    churn: ChurnParameters,
    user_daily: pl.LazyFrame,
    install_times: pl.LazyFrame,
) -> PartitionStream:
    """The feature snapshot as of the end of day D: one row per user at risk on D (installed on or before
    D, active at least once in D-27..D), sorted by ``user_id``, with the columns of the feature catalog
    (``catalog.py``, ``docs/features.md``): activity, events, sessions, minutes, revenue and purchases
    over 1/7/14/28 days, per-type counts over 7 and 28 days, trends, recency, streak, tenure, the last
    platform/country/app version, and how many days of history the window had. Reads
    ``user_daily[D-27..D]`` and ``install_times[D]`` only: nothing after D.
    """
    first_day = daily_partitions.start.date()
    days = days_in_range(context)

    def stream():
        for day, window in trailing_windows(user_daily, days, LOOKBACK_DAYS):
            installs = install_times.filter(pl.col("date") == day).select("user_id", "install_time").collect()
            yield day.isoformat(), compute_features(window, installs, day, first_day, churn.event_types)

    return PartitionStream(stream())


def compute_features(
    window: pl.DataFrame,
    installs: pl.DataFrame,
    day: dt.date,
    first_day: dt.date,
    event_types: Sequence[str],
) -> pl.DataFrame:
    """``features[D]`` from the ``user_daily`` rows of D-27..D (with their ``date``) and ``install_times[D]``.

    Sparse: it aggregates the rows that exist (one per active user and day); an inactive day is simply
    absent, so cost follows activity, not users × days.
    """
    schema = features_schema(event_types)
    history = min(LOOKBACK_DAYS, (day - first_day).days + 1)
    age = pl.col("_age")
    rows = (
        window.filter(pl.col("date").is_between(day - dt.timedelta(days=LOOKBACK_DAYS - 1), day))
        .sort("user_id", "date")
        .with_columns(
            (pl.lit(day) - pl.col("date")).dt.total_days().alias("_age"),
            pl.col("n_events").fill_null(0).log1p().alias("_log_events"),
        )
    )

    def window_sum(column: str, days: int) -> pl.Expr:
        return pl.col(column).filter(age < days).fill_null(0).sum()

    def trend_parts(column: str) -> tuple[pl.Expr, pl.Expr]:
        recent = pl.col(column).filter(age < TREND_DAYS).fill_null(0).sum()
        before = pl.col(column).filter(age.is_between(TREND_DAYS, 2 * TREND_DAYS - 1)).fill_null(0).sum()
        return recent, before

    aggregations = [
        age.min().alias("days_since_last_active"),
        # Ages of the trailing run are 0, 1, 2, ... above the minimum: the k-th youngest row is in it
        # exactly when its age is min + k.
        ((age - age.min()) == (age.rank("ordinal") - 1)).sum().alias("active_streak_days"),
    ]
    for days in WINDOWS:
        aggregations.append((age < days).sum().alias(f"active_days_{days}d"))
        for column, _, _ in WINDOW_SUMS:
            aggregations.append(window_sum(column, days).alias(f"{column}_{days}d"))
    for days in TYPE_WINDOWS:
        for event_type in event_types:
            column = event_type_column(event_type)
            aggregations.append(window_sum(column, days).alias(f"{column}_{days}d"))
    recent_events, before_events = trend_parts("n_events")
    recent_minutes, before_minutes = trend_parts("session_minutes")
    aggregations += [
        ((age < TREND_DAYS).sum().cast(pl.Int32) - age.is_between(TREND_DAYS, 2 * TREND_DAYS - 1).sum().cast(pl.Int32))
        .alias("active_days_trend_7d"),
        ((1 + recent_events).log() - (1 + before_events).log()).alias("n_events_trend_7d"),
        ((1 + recent_minutes).log() - (1 + before_minutes).log()).alias("session_minutes_trend_7d"),
        # Least squares against x = 0 (oldest day of history) .. history-1 (D); absent days have y = 0, so
        # only the active rows enter the sums.
        ((history - 1 - age) * pl.col("_log_events")).sum().alias("_sxy"),
        pl.col("_log_events").sum().alias("_sy"),
        *[pl.col(c).drop_nulls().last().alias(c) for c in CATEGORICAL_COLUMNS],
    ]
    x_mean = (history - 1) / 2
    x_var_sum = history * (history * history - 1) / 12
    slope = (
        ((pl.col("_sxy") - x_mean * pl.col("_sy")) / x_var_sum) if history >= 2 else pl.lit(None, pl.Float64)
    )
    tenure = (pl.lit(day) - pl.col("install_time").dt.date()).dt.total_days()
    return (
        rows.group_by("user_id")
        .agg(aggregations)
        .join(installs, on="user_id", how="left")
        .with_columns(
            pl.lit(history).alias("history_days"),
            tenure.alias("tenure_days"),
            slope.alias("activity_slope_28d"),
        )
        # Installed on or before D (always true for consistent install_times; a user unknown to
        # install_times is kept with a null tenure, which the blocking check reports).
        .filter(pl.col("tenure_days").is_null() | (pl.col("tenure_days") >= 0))
        .with_columns(
            (
                pl.col("active_days_28d")
                / pl.min_horizontal(pl.lit(history), pl.col("tenure_days") + 1)
            ).alias("active_share_28d")
        )
        .select(list(schema))
        .cast(schema)
        .sort("user_id")
    )
