"""``features``: the feature snapshot of every user at risk, as of the end of each day."""

import datetime as dt
import math
from collections.abc import Sequence

import dagster as dg
import numpy as np
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
from churn_assets.assets.features.rolling import trailing_windows, user_ranges
from churn_assets.assets.ingest.user_daily import event_type_column
from churn_assets.config import SETTINGS
from churn_assets.partitions import daily_partitions, days_in_range, largest_window
from churn_assets.resources import ChurnParameters
from churn_assets.resources.parquet_io_manager import PartitionStream
from churn_assets.threads import ordered_map, workers_for


# compute_features holds a window's rows and ~25 of their columns, sorted by user, before summing them.
# A window of more rows than MAX_WINDOW_ROWS (28 days of ~70k daily users) is computed in slices of
# ~SLICE_ROWS rows: contiguous user_id ranges, which the row-group statistics of the sorted user_daily files
# prune. Memory then follows the slice, not the population; slices of 0.5 M, 1 M and 2 M rows take about
# the same time.
MAX_WINDOW_ROWS = 2_000_000
SLICE_ROWS = 1_000_000

# Float values are summed in fixed point, as whole units of 1/scale: whole numbers add up exactly in any
# order, so a window gives the same features in slices or whole, whatever the order of its rows (a float
# sum's last digit follows the order of its terms). Revenue is exact to a millionth in user_daily; minutes
# are kept to a millionth (60 µs).
FIXED_POINT = {"session_minutes": 10**6, "revenue": 10**6, "_log_events": 10**9}


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
    missing = [c for c in map(event_type_column, churn.event_types) if c not in user_daily.collect_schema()]
    if missing:
        raise dg.Failure(
            f"user_daily has no column {', '.join(missing)} for the tracked event types {churn.event_types}: "
            "CHURN_EVENT_TYPES changed since user_daily was materialized; rematerialize user_daily first",
            allow_retries=False,
        )

    def installs_of(day: dt.date) -> pl.DataFrame:
        return install_times.filter(pl.col("date") == day).select("user_id", "install_time").collect()

    def stream():
        largest = largest_window(user_daily, days, LOOKBACK_DAYS)
        if largest <= MAX_WINDOW_ROWS:
            def of_window(item: tuple[dt.date, pl.DataFrame]) -> tuple[str, pl.DataFrame]:
                day, window = item
                return day.isoformat(), compute_features(window, installs_of(day), day, first_day, churn.event_types)

            windows = trailing_windows(user_daily, days, LOOKBACK_DAYS)
            yield from ordered_map(of_window, windows, workers=workers_for(largest))
            return
        context.log.info(f"windows of up to {largest:,} user_daily rows: computed in slices of users")
        for day in days:
            installs = installs_of(day)
            slices = user_ranges(installs.get_column("user_id"), math.ceil(largest / SLICE_ROWS))
            first = day - dt.timedelta(days=LOOKBACK_DAYS - 1)

            def of_slice(users: pl.Expr) -> pl.DataFrame:
                window = user_daily.filter(pl.col("date").is_between(first, day) & users).collect()
                return compute_features(window, installs.filter(users), day, first_day, churn.event_types)

            # Slices are small partitions of their own: two at a time, reading one's files while summing another.
            yield day.isoformat(), pl.concat(ordered_map(of_slice, slices, workers=workers_for(SLICE_ROWS)))

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
    absent, so cost follows activity, not users × days. The rows are sorted by user, oldest first, so a
    user's rows inside any window are the tail of the user's run of rows: each window sum is the difference
    of two running totals of the column (no hashing of user ids per column or per window). The active days
    are one bit mask per user (bit k = active on D-k), from which recency, streak and active-day counts
    are bit counts.
    """
    schema = features_schema(event_types)
    history = min(LOOKBACK_DAYS, (day - first_day).days + 1)
    sums = [column for column, _, _ in WINDOW_SUMS]
    type_columns = [event_type_column(t) for t in event_types]

    # Every windowed value is a sum over the user's rows younger than the window's length. The rows are
    # sorted by user, oldest first: a user's rows inside a window are then the tail of the user's run of
    # rows, and each window sum is a difference of two running totals (exact integers, fixed point).
    if not window.get_column("date").is_sorted():  # a user's rows must come oldest first
        window = window.sort("date", maintain_order=True)
    rows = (
        window.lazy()
        .filter(pl.col("date").is_between(day - dt.timedelta(days=LOOKBACK_DAYS - 1), day))
        .with_columns(
            (pl.lit(day) - pl.col("date")).dt.total_days().alias("_age"),
            pl.col("n_events").fill_null(0).log1p().alias("_log_events"),
            *[pl.col(c).fill_null(0) for c in [*sums, *type_columns]],
        )
        .with_columns(*[(pl.col(c) * scale).round().cast(pl.Int64) for c, scale in FIXED_POINT.items()])
        .select(
            "user_id",
            "_age",
            *sums,
            *type_columns,
            pl.lit(2, pl.Int64).pow(pl.col("_age")).alias("_active_mask"),
            # Least squares against x = 0 (oldest day of history) .. history-1 (D); absent days have y = 0,
            # so only the active rows enter the sums.
            ((history - 1 - pl.col("_age")) * pl.col("_log_events")).alias("_sxy"),
            pl.col("_log_events").alias("_sy"),
            *CATEGORICAL_COLUMNS,
        )
        .sort("user_id", maintain_order=True)
        .collect(engine="in-memory")
    )
    ids = rows.get_column("user_id")
    starts = np.flatnonzero(ids.ne_missing(ids.shift(1)).to_numpy())  # each user's first row
    users = len(starts)
    ends = np.append(starts[1:], rows.height) if users else starts
    # Each row's key: its user's number, then its age from the window's oldest day. The first of user u's
    # rows younger than n days is the first key >= u * LOOKBACK_DAYS + LOOKBACK_DAYS - n.
    user = np.repeat(np.arange(users, dtype=np.int64), ends - starts)
    key = user * LOOKBACK_DAYS + (LOOKBACK_DAYS - 1) - rows.get_column("_age").to_numpy()
    windows_of = {  # each summed column: the name of each of its sums, and the days that sum covers
        **{c: {f"{c}_{days}d": days for days in WINDOWS} for c in sums},
        **{c: {f"{c}_{days}d": days for days in TYPE_WINDOWS} for c in type_columns},
        **{c: {c: LOOKBACK_DAYS} for c in ("_active_mask", "_sxy", "_sy")},
    }
    for c, name in (("n_events", "events"), ("session_minutes", "minutes")):
        windows_of[c] |= {f"_recent_{name}": TREND_DAYS, f"_two_weeks_{name}": 2 * TREND_DAYS}
    first_younger = {
        days: np.searchsorted(key, np.arange(users, dtype=np.int64) * LOOKBACK_DAYS + LOOKBACK_DAYS - days)
        for days in {days for named in windows_of.values() for days in named.values()}
    }
    totals, source_of = {}, {}
    for c, named in windows_of.items():
        running = running_totals(rows.get_column(c).to_numpy())
        for name, days in named.items():
            totals[name] = running[ends] - running[first_younger[days]]
            source_of[name] = "_log_events" if c in ("_sxy", "_sy") else c  # the slope's sums are of log-events
    for name in ("events", "minutes"):
        totals[f"_before_{name}"] = totals.pop(f"_two_weeks_{name}") - totals[f"_recent_{name}"]
        source_of[f"_before_{name}"] = source_of.pop(f"_two_weeks_{name}")
    # The fixed-point sums are scaled back once summed.
    scaled = {name: FIXED_POINT[source] for name, source in source_of.items() if source in FIXED_POINT}
    summed = pl.DataFrame(totals)

    # The last platform/country/app version each user had in the window: per column, the latest of the
    # user's rows (oldest first) that holds a value.
    positions = np.arange(rows.height, dtype=np.int64)
    latest = {}
    for c in CATEGORICAL_COLUMNS:
        seen = rows.get_column(c)
        last = np.maximum.reduceat(np.where(seen.is_null().to_numpy(), -1, positions), starts) if users else starts
        latest[c] = seen.gather(np.maximum(last, 0)).scatter(np.flatnonzero(last < 0), None)
    per_user = summed.with_columns(user_id=ids.gather(starts), **latest).lazy()
    mask = pl.col("_active_mask")

    def active_days(first_age: int, last_age: int) -> pl.Expr:
        bits = (1 << (last_age + 1)) - (1 << first_age)
        return (mask & bits).bitwise_count_ones().cast(pl.Int32)

    x_mean = (history - 1) / 2
    x_var_sum = history * (history * history - 1) / 12
    slope = ((pl.col("_sxy") - x_mean * pl.col("_sy")) / x_var_sum) if history >= 2 else pl.lit(None, pl.Float64)
    tenure = (pl.lit(day) - pl.col("install_time").dt.date()).dt.total_days()
    last_active = mask.bitwise_trailing_zeros()
    return (
        per_user.join(installs.lazy(), on="user_id", how="left", maintain_order="left")
        .with_columns(*[pl.col(c) / scale for c, scale in scaled.items()])
        .with_columns(
            pl.lit(history).alias("history_days"),
            tenure.alias("tenure_days"),
            last_active.alias("days_since_last_active"),
            # The run of active days ending on the last one: trailing ones once the gap is shifted out.
            (mask // pl.lit(2, pl.Int64).pow(last_active)).bitwise_trailing_ones().alias("active_streak_days"),
            *[active_days(0, days - 1).alias(f"active_days_{days}d") for days in WINDOWS],
            (active_days(0, TREND_DAYS - 1) - active_days(TREND_DAYS, 2 * TREND_DAYS - 1)).alias(
                "active_days_trend_7d"
            ),
            slope.alias("activity_slope_28d"),
            ((1 + pl.col("_recent_events")).log() - (1 + pl.col("_before_events")).log()).alias("n_events_trend_7d"),
            ((1 + pl.col("_recent_minutes")).log() - (1 + pl.col("_before_minutes")).log()).alias(
                "session_minutes_trend_7d"
            ),
        )
        # Installed on or before D (always true for consistent install_times; a user unknown to
        # install_times is kept with a null tenure, which the blocking check reports).
        .filter(pl.col("tenure_days").is_null() | (pl.col("tenure_days") >= 0))
        .with_columns(
            (pl.col("active_days_28d") / pl.min_horizontal(pl.lit(history), pl.col("tenure_days") + 1)).alias(
                "active_share_28d"
            )
        )
        .select(list(schema))
        .cast(schema)
        # One day's window is small: the in-memory engine beats the streaming default here (~30%).
        .collect(engine="in-memory")
    )


def running_totals(values: np.ndarray) -> np.ndarray:
    """0, then the running totals of ``values`` (whole numbers, int64): the sum of rows i..j-1 is
    ``running[j] - running[i]``. int64 arithmetic wraps around, so a difference is exact whenever the sum
    itself fits in 64 bits, whatever the running totals reach."""
    running = np.zeros(len(values) + 1, np.int64)
    np.cumsum(values, out=running[1:])
    return running
