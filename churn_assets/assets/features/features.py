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


# compute_features holds a window's rows and ~20 of their columns as numbers before summing them per user.
# A window of more rows than MAX_WINDOW_ROWS (28 days of ~70k daily users) is computed in slices of
# ~SLICE_ROWS rows: contiguous user_id ranges, which the row-group statistics of the sorted user_daily files
# prune. Memory then follows the slice, not the population; since the sums are numpy's, slices of 0.5 M,
# 1 M and 2 M rows take about the same time (21-23 s for 28 days of 1 M daily users).
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
    absent, so cost follows activity, not users × days. Each row is numbered by its user's rank among the
    window's users and its age band, and each column is summed per user and band by one ``np.bincount``
    (no hashing of user ids per column); a window's sums are then cumulative sums over the bands. The
    active days are one bit mask per user (bit k = active on D-k), from which recency, streak and
    active-day counts are bit counts.
    """
    schema = features_schema(event_types)
    history = min(LOOKBACK_DAYS, (day - first_day).days + 1)
    sums = [column for column, _, _ in WINDOW_SUMS]
    type_columns = [event_type_column(t) for t in event_types]

    # Every windowed value is a sum over the user's rows of the age bands between the windows' edges
    # (D, D-1..D-6, D-7..D-13, D-14..D-27): each column is summed per user and band at once, and a window's
    # sum is the sum of the bands inside it.
    edges = sorted({*WINDOWS, *TYPE_WINDOWS, TREND_DAYS, 2 * TREND_DAYS})
    band_of = {days: edges.index(days) for days in edges}  # window "age < days" = bands 0..band_of[days]
    age = pl.col("_age")
    if not window.get_column("date").is_sorted():  # windows come oldest day first; "last" must mean latest
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
            # Each user's position among the window's users in user_id order: the row of the result.
            (pl.col("user_id").rank("dense") - 1).alias("_user"),
            "user_id",
            pl.sum_horizontal([(age >= edge).cast(pl.Int64) for edge in edges[:-1]]).alias("_band"),
            *sums,
            *type_columns,
            pl.lit(2, pl.Int64).pow(age).alias("_active_mask"),
            # Least squares against x = 0 (oldest day of history) .. history-1 (D); absent days have y = 0,
            # so only the active rows enter the sums.
            ((history - 1 - age) * pl.col("_log_events")).alias("_sxy"),
            pl.col("_log_events").alias("_sy"),
            *CATEGORICAL_COLUMNS,
        )
        .collect(engine="in-memory")
    )
    user = rows.get_column("_user").to_numpy().astype(np.int64)
    users = int(user.max()) + 1 if rows.height else 0
    cell = user * len(edges) + rows.get_column("_band").to_numpy()
    banded_columns = [*sums, *type_columns]
    whole_window = ["_active_mask", "_sxy", "_sy"]
    values = rows.select(*banded_columns, *whole_window).to_numpy()  # whole numbers (fixed point), int64
    # cumulative[i, u, b]: user u's sum of banded column i over bands 0..b
    cumulative = np.stack(
        [_sums_by(cell, values[:, i], users * len(edges)) for i in range(len(banded_columns))]
    ).reshape(len(banded_columns), users, len(edges)).cumsum(axis=2)
    index = {c: i for i, c in enumerate(banded_columns)}

    # Each summed column, its sums per user, and the value it sums (the slope's sums are of log-events):
    # the fixed-point ones are scaled back once summed.
    source_of = {"_active_mask": "_active_mask", "_sxy": "_log_events", "_sy": "_log_events"}
    totals = {c: _sums_by(user, values[:, len(banded_columns) + i], users) for i, c in enumerate(whole_window)}
    for columns, windows in ((sums, WINDOWS), (type_columns, TYPE_WINDOWS)):
        for c in columns:
            for days in windows:
                totals[f"{c}_{days}d"] = cumulative[index[c], :, band_of[days]]
                source_of[f"{c}_{days}d"] = c
    for c, name in (("n_events", "events"), ("session_minutes", "minutes")):
        recent = cumulative[index[c], :, band_of[TREND_DAYS]]
        totals[f"_recent_{name}"] = recent
        totals[f"_before_{name}"] = cumulative[index[c], :, band_of[2 * TREND_DAYS]] - recent
        source_of[f"_recent_{name}"] = source_of[f"_before_{name}"] = c
    scaled = {name: FIXED_POINT[source] for name, source in source_of.items() if source in FIXED_POINT}
    summed = pl.DataFrame(totals)

    # The last platform/country/app version each user had in the window: per column, the latest of the
    # user's rows (the window is in date order) that holds a value.
    positions = np.arange(rows.height, dtype=np.int64)
    latest = {}
    for c in CATEGORICAL_COLUMNS:
        seen = rows.get_column(c)
        held = ~seen.is_null().to_numpy()
        last = np.full(users, -1, np.int64)
        np.maximum.at(last, user[held], positions[held])
        latest[c] = seen.gather(np.maximum(last, 0)).scatter(np.flatnonzero(last < 0), None)
    first_row = np.zeros(users, np.int64)
    first_row[user] = positions  # any of a user's rows: they all hold the same user_id
    per_user = summed.with_columns(user_id=rows.get_column("user_id").gather(first_row), **latest).lazy()
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
        .sort("user_id")
        # One day's window is small: the in-memory engine beats the streaming default here (~30%).
        .collect(engine="in-memory")
    )


def _sums_by(keys: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    """The exact int64 sum of ``values`` (whole numbers) per key in ``0..length-1``.

    ``np.bincount`` adds in float64, which holds every whole number below 2**53 exactly: when the values'
    absolute total stays below that (2**52 here, a margin for the total's own rounding), so does every
    partial sum, and the result is exact. Larger totals (it would take hundreds of millions in revenue
    within one window) are added as integers, more slowly.
    """
    if np.abs(values).sum(dtype=np.float64) < 2.0**52:
        return np.rint(np.bincount(keys, weights=values, minlength=length)).astype(np.int64)
    sums = np.zeros(length, np.int64)
    np.add.at(sums, keys, values)
    return sums
