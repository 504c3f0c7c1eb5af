"""``features``: the feature snapshot of every user at risk, as of the end of each day."""

import datetime as dt
import math
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
from churn_assets.assets.features.rolling import trailing_windows, user_ranges
from churn_assets.assets.ingest.user_daily import event_type_column
from churn_assets.config import SETTINGS
from churn_assets.partitions import daily_partitions, days_in_range, largest_window
from churn_assets.resources import ChurnParameters
from churn_assets.resources.parquet_io_manager import PartitionStream
from churn_assets.threads import engine_for, ordered_map, workers_for


# compute_features builds ~60 windowed columns per user_daily row before summing them per user. A window
# of more rows than MAX_WINDOW_ROWS (28 days of ~70k daily users) is computed in slices of ~SLICE_ROWS rows:
# contiguous user_id ranges, which the row-group statistics of the sorted user_daily files prune. Memory
# then follows the slice, not the population, and slices of 1M rows are also faster than larger ones
# (the per-user hash tables stay in cache): 28 days of 1M daily users take ~41 s in slices of 1M rows,
# ~55 s in slices of 2M.
MAX_WINDOW_ROWS = 2_000_000
SLICE_ROWS = 1_000_000

# Float values are summed in fixed point, as whole units of 1/scale: integer sums are exact in any order,
# so a window gives the same features on either polars engine, in slices or whole, run after run (the
# streaming engine adds a user's values in a varying order, and a float sum's last digit follows it).
# Revenue is exact to a millionth in user_daily; minutes are kept to a millionth (60 µs).
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
    absent, so cost follows activity, not users × days. Shaped for polars' fast paths: each windowed
    value is first a row-wise column (the day's value inside the window, else 0) so the per-user step
    is plain sums keyed by the user id; the active days are one bit mask per user (bit k = active on
    D-k), from which recency, streak and active-day counts are bit counts.
    """
    schema = features_schema(event_types)
    history = min(LOOKBACK_DAYS, (day - first_day).days + 1)
    sums = [column for column, _, _ in WINDOW_SUMS]
    type_columns = [event_type_column(t) for t in event_types]

    # Two stages, so that the ~45 windowed sums are not built row by row over the whole window. First
    # each user's rows are summed per age band: the bands between the windows' edges (D, D-1..D-6,
    # D-7..D-13, D-14..D-27). Then a window's sum is the sum of the bands inside it, over at most four
    # rows per user: ~2 x faster than masking every row of the window for every windowed column.
    edges = sorted({*WINDOWS, *TYPE_WINDOWS, TREND_DAYS, 2 * TREND_DAYS})
    band_of = {days: edges.index(days) for days in edges}  # window "age < days" = bands 0..band_of[days]
    age = pl.col("_age")
    in_window = window.lazy().filter(pl.col("date").is_between(day - dt.timedelta(days=LOOKBACK_DAYS - 1), day))
    rows = (
        in_window
        .with_columns(
            (pl.lit(day) - pl.col("date")).dt.total_days().alias("_age"),
            pl.col("n_events").fill_null(0).log1p().alias("_log_events"),
            *[pl.col(c).fill_null(0) for c in [*sums, *type_columns]],
        )
        .with_columns(*[(pl.col(c) * scale).round().cast(pl.Int64) for c, scale in FIXED_POINT.items()])
        .with_columns(
            pl.sum_horizontal([(age >= edge).cast(pl.Int8) for edge in edges[:-1]]).alias("_band"),
            pl.lit(2, pl.Int64).pow(age).alias("_active_mask"),
            # Least squares against x = 0 (oldest day of history) .. history-1 (D); absent days have y = 0,
            # so only the active rows enter the sums.
            ((history - 1 - age) * pl.col("_log_events")).alias("_sxy"),
            pl.col("_log_events").alias("_sy"),
        )
    )
    whole_window = ["_active_mask", "_sxy", "_sy"]
    bands = rows.group_by("user_id", "_band").agg(*[pl.col(c).sum() for c in [*sums, *type_columns, *whole_window]])
    band = pl.col("_band")

    # Each summed column and the value it sums (the slope's sums are of log-events): the fixed-point ones
    # are scaled back once summed.
    source_of = {"_active_mask": "_active_mask", "_sxy": "_log_events", "_sy": "_log_events"}

    def within(bands_in: pl.Expr, column: str, name: str) -> pl.Expr:
        source_of[name] = column
        return pl.when(bands_in).then(pl.col(column)).otherwise(0).alias(name)

    windowed = [pl.col(c) for c in whole_window]
    for days in WINDOWS:
        windowed += [within(band <= band_of[days], c, f"{c}_{days}d") for c in sums]
    for days in TYPE_WINDOWS:
        windowed += [within(band <= band_of[days], c, f"{c}_{days}d") for c in type_columns]
    recent = band <= band_of[TREND_DAYS]
    before = (band > band_of[TREND_DAYS]) & (band <= band_of[2 * TREND_DAYS])
    windowed += [
        within(recent, "n_events", "_recent_events"),
        within(before, "n_events", "_before_events"),
        within(recent, "session_minutes", "_recent_minutes"),
        within(before, "session_minutes", "_before_minutes"),
    ]
    summed = [e.meta.output_name() for e in windowed]
    scaled = {name: FIXED_POINT[source] for name, source in source_of.items() if source in FIXED_POINT}
    # Only sums: polars' streaming engine sums ~60 columns per user ~5 x faster than its in-memory engine
    # on a window of 1 M rows (0.3 s against 1.6 s); a small window is faster in memory (engine_for).
    totals = bands.select("user_id", *windowed).group_by("user_id").agg(*[pl.col(c).sum() for c in summed])
    if engine_for(window.height) == "streaming":
        totals = totals.collect(engine="streaming").lazy()
    # The last platform/country/app version each user had in the window: an order-dependent "last", kept
    # apart from the sums (with them, polars computes every sum on its slower in-memory path).
    latest = in_window.select("user_id", "date", *CATEGORICAL_COLUMNS)
    if not window.get_column("date").is_sorted():  # windows come oldest day first; "last" must mean latest
        latest = latest.sort("date", maintain_order=True)
    latest = latest.group_by("user_id").agg(*[pl.col(c).drop_nulls().last() for c in CATEGORICAL_COLUMNS])
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
        totals.join(latest, on="user_id", how="left")
        .join(installs.lazy(), on="user_id", how="left")
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
