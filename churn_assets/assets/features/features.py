"""``features``: the feature snapshot of every user at risk, as of the end of each day."""

import datetime as dt
import math
from collections.abc import Sequence

import dagster as dg
import numpy as np
import polars as pl

from churn_assets.apps import key_string
from churn_assets.assets.features.catalog import (
    CATEGORICAL_COLUMNS,
    LOOKBACK_DAYS,
    TREND_DAYS,
    TYPE_WINDOWS,
    WINDOW_SUMS,
    WINDOWS,
    features_schema,
    table_schema,
)
from churn_assets.assets.features.rolling import day_blocks, trailing_blocks, user_ranges
from churn_assets.assets.ingest.user_daily import event_type_column, user_daily_schema
from churn_assets.config import SETTINGS
from churn_assets.partitions import daily_partitions, days_in_range, window_sizes
from churn_assets.resources import ChurnParameters
from churn_assets.resources.parquet_io_manager import PartitionStream
from churn_assets.threads import ordered_map, workers_for

# features_of_days holds a window's rows and ~25 of their columns, sorted by user, before summing them.
# A window of more rows than MAX_WINDOW_ROWS (28 days of ~70k daily users) is computed in slices of
# ~SLICE_ROWS rows: contiguous user_id ranges, which the row-group statistics of the sorted user_daily files
# prune. Memory then follows the slice, not the population; slices of 0.5 M, 1 M and 2 M rows take about
# the same time.
MAX_WINDOW_ROWS = 2_000_000
SLICE_ROWS = 1_000_000
# A range run computes consecutive days together, in blocks whose windows hold this many rows in all: a
# block holds its pairs of (user, day) at risk and ~60 columns for each, and a day of a block costs a
# share of a few vectorized passes instead of a query of its own.
BLOCK_WINDOW_ROWS = 500_000

# Float values are summed in fixed point, as whole units of 1/scale: whole numbers add up exactly in any
# order, so a window gives the same features in slices or whole, whatever the order of its rows (a float
# sum's last digit follows the order of its terms). Revenue is exact to a millionth in user_daily; minutes
# are kept to a millionth (60 µs).
FIXED_POINT = {"session_minutes": 10**6, "revenue": 10**6, "_log_events": 10**9}
_EPOCH = dt.date(1970, 1, 1)


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
    # The days of user_daily the run reads: a partition written before CHURN_EVENT_TYPES gained a type lacks
    # its column, whichever of them it is (the scan's columns are its first file's, a later file's lacking
    # one fails as polars' ColumnNotFoundError).
    window = f"{max(first_day, days[0] - dt.timedelta(days=LOOKBACK_DAYS - 1))}...{days[-1]}"

    def without_columns(missing: str) -> dg.Failure:
        return dg.Failure(
            f"user_daily has no column {missing} for the tracked event types {list(churn.event_types)} in some of "
            f"the days {window} that features reads: CHURN_EVENT_TYPES changed since they were materialized; "
            f"rematerialize {key_string('user_daily')} for them first (--partition-range {window})",
            allow_retries=False,
        )

    missing = [c for c in map(event_type_column, churn.event_types) if c not in user_daily.collect_schema()]
    if missing:
        raise without_columns(", ".join(missing))
    # Only the columns of the tracked types: partitions written before a type was dropped from
    # CHURN_EVENT_TYPES still hold its column, later ones do not, and a scan of the window reads each file
    # with the first one's columns (a column one file lacks fails it, unless it is not read at all).
    user_daily = user_daily.select(*user_daily_schema(churn.event_types), "date")

    def installs_of(block: Sequence[dt.date]) -> pl.DataFrame:
        """install_times[D] of each of the block's (consecutive) days, with its ``date``."""
        consecutive = pl.col("date").is_between(block[0], block[-1])
        return install_times.filter(consecutive).select("user_id", "date", "install_time").collect()

    def stream():
        window_rows = window_sizes(user_daily, days, LOOKBACK_DAYS)
        largest = max(window_rows.values(), default=0)
        if largest <= MAX_WINDOW_ROWS:
            def of_block(item: tuple[list[dt.date], pl.DataFrame]) -> list[tuple[dt.date, pl.DataFrame]]:
                block, rows = item
                return features_of_days(rows, installs_of(block), block, first_day, churn.event_types)

            blocks = day_blocks(days, window_rows.get, BLOCK_WINDOW_ROWS)
            computed = trailing_blocks(user_daily, blocks, LOOKBACK_DAYS)
            for block in ordered_map(of_block, computed, workers=workers_for(largest)):
                yield from ((day.isoformat(), frame) for day, frame in block)
            return
        context.log.info(f"windows of up to {largest:,} user_daily rows: computed in slices of users")
        for day in days:
            installs = installs_of([day])
            slices = user_ranges(installs.get_column("user_id"), math.ceil(largest / SLICE_ROWS))
            first = day - dt.timedelta(days=LOOKBACK_DAYS - 1)

            # (of_slice reads this iteration's day, first and installs: ordered_map is done with it before the next)
            def of_slice(users: pl.Expr) -> pl.DataFrame:
                window = user_daily.filter(pl.col("date").is_between(first, day) & users).collect()  # noqa: B023
                return compute_features(window, installs.filter(users), day, first_day, churn.event_types)  # noqa: B023

            # Slices are small partitions of their own: two at a time, reading one's files while summing another.
            yield day.isoformat(), pl.concat(ordered_map(of_slice, slices, workers=workers_for(SLICE_ROWS)))

    def reading_window():
        try:
            yield from stream()
        except pl.exceptions.ColumnNotFoundError as exc:
            missing = tracked_column_missing(exc, churn.event_types)
            if missing is None:  # another column, or another frame: not what CHURN_EVENT_TYPES explains
                raise
            raise without_columns(missing) from exc

    return PartitionStream(reading_window())


def tracked_column_missing(error: pl.exceptions.ColumnNotFoundError, event_types: Sequence[str]) -> str | None:
    """The column of a tracked event type that a scanned file lacks, when that is what ``error`` is (polars'
    "did not find column C, ..."); None for any other missing column, whose error is left as it is."""
    text = str(error)
    prefix = "did not find column "
    if not text.startswith(prefix):
        return None
    column = text.removeprefix(prefix).split(",")[0].strip()
    return column if column in {event_type_column(t) for t in event_types} else None


def compute_features(
    window: pl.DataFrame,
    installs: pl.DataFrame,
    day: dt.date,
    first_day: dt.date,
    event_types: Sequence[str],
) -> pl.DataFrame:
    """``features[D]`` from the ``user_daily`` rows of D-27..D (with their ``date``) and ``install_times[D]``
    (``user_id``, ``install_time``): :func:`features_of_days` for one day."""
    dated = installs.select("user_id", pl.lit(day).alias("date"), "install_time")
    [(_, frame)] = features_of_days(window, dated, [day], first_day, event_types)
    return frame


def features_of_days(
    rows: pl.DataFrame,
    installs: pl.DataFrame,
    days: Sequence[dt.date],
    first_day: dt.date,
    event_types: Sequence[str],
) -> list[tuple[dt.date, pl.DataFrame]]:
    """``features[D]`` for each of ``days`` (consecutive, ascending) from the ``user_daily`` rows of
    ``days[0]``-27..``days[-1]`` (with their ``date``) and ``install_times[D]`` of each of the days
    (``installs``: ``user_id``, ``date`` = D, ``install_time``).

    Sparse: it aggregates the rows that exist (one per active user and day); an inactive day is simply
    absent, so cost follows activity, not users × days. The rows are sorted by user, oldest first, so the
    rows of a user inside any window ending on any of the days are a contiguous run, found by a binary
    search on (user, day): each window sum is the difference of two running totals of the column (exact
    integers, fixed point). All days of a block are computed at once, in a few vectorized passes: a
    range run's day costs a share of one query, not a query of its own.
    """
    schema = features_schema(event_types)
    sums = [column for column, _, _ in WINDOW_SUMS]
    type_columns = [event_type_column(t) for t in event_types]
    base = days[0] - dt.timedelta(days=LOOKBACK_DAYS - 1)  # day number 0: the first day any window reaches
    span = (days[-1] - base).days + 1
    first_out = LOOKBACK_DAYS - 1  # the day number of days[0]

    if not rows.get_column("date").is_sorted():  # a user's rows must come oldest first
        rows = rows.sort("date", maintain_order=True)
    rows = (
        rows.lazy()
        .filter(pl.col("date").is_between(base, days[-1]))
        .with_columns(
            (pl.col("date") - pl.lit(base)).dt.total_days().alias("_day"),
            pl.col("n_events").fill_null(0).log1p().alias("_log_events"),
            *[pl.col(c).fill_null(0) for c in [*sums, *type_columns]],
        )
        .with_columns(*[(pl.col(c) * scale).round().cast(pl.Int64) for c, scale in FIXED_POINT.items()])
        # The slope's sum of x·y, with x counted from day number 0 (moved to each window's x below).
        .with_columns((pl.col("_day") * pl.col("_log_events")).alias("_day_log_events"))
        .select("user_id", "_day", *sums, *type_columns, "_log_events", "_day_log_events", *CATEGORICAL_COLUMNS)
        .sort("user_id", maintain_order=True)
        .collect(engine="in-memory")
    )
    ids = rows.get_column("user_id")
    starts = np.flatnonzero(ids.ne_missing(ids.shift(1)).to_numpy())  # each user's first row
    ends = np.append(starts[1:], rows.height) if len(starts) else starts
    user = np.repeat(np.arange(len(starts), dtype=np.int64), ends - starts)
    row_day = rows.get_column("_day").to_numpy().astype(np.int64)
    key = user * span + row_day  # ascending: users in id order, each user's days oldest first

    # The (user, day) pairs at risk: a row on day d puts its user at risk on d..d+27. Each row adds the days
    # its predecessor (the same user's previous active day) did not already cover, within the block.
    positions = np.arange(rows.height, dtype=np.int64)
    new_user = np.zeros(rows.height, dtype=bool)
    new_user[starts] = True
    previous = np.where(new_user, np.iinfo(np.int64).min // 2, np.roll(row_day, 1))
    low = np.maximum(np.maximum(row_day, previous + LOOKBACK_DAYS), first_out)
    high = np.minimum(row_day + LOOKBACK_DAYS - 1, span - 1)
    counts = np.maximum(high - low + 1, 0)
    pair_user = np.repeat(user, counts)
    pair_day = np.repeat(low - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum(), dtype=np.int64)

    # Each pair's window of rows: rows[first_of[n]:last] are the user's rows in the n days ending on the day.
    # The pairs come in (user, day) order, as the rows do, so the binary searches walk both in step.
    pair_key = pair_user * span + pair_day
    last = np.searchsorted(key, pair_key, side="right")
    first_of = {n: np.searchsorted(key, pair_key - (n - 1)) for n in {*WINDOWS, *TYPE_WINDOWS, 2 * TREND_DAYS}}

    def window_sums(column: str, windows: Sequence[int]) -> dict[int, np.ndarray]:
        running = running_totals(rows.get_column(column).to_numpy())
        at_last = running[last]
        return {n: at_last - running[first_of[n]] for n in windows}

    totals: dict[str, np.ndarray] = {}
    for c in sums:
        summed = window_sums(c, {*WINDOWS, TREND_DAYS, 2 * TREND_DAYS})
        totals |= {f"{c}_{n}d": summed[n] for n in WINDOWS}
        if c in ("n_events", "session_minutes"):
            name = "events" if c == "n_events" else "minutes"
            totals[f"_recent_{name}"] = summed[TREND_DAYS]
            totals[f"_before_{name}"] = summed[2 * TREND_DAYS] - summed[TREND_DAYS]
    for c in type_columns:
        totals |= {f"{c}_{n}d": summed for n, summed in window_sums(c, TYPE_WINDOWS).items()}
    for n in WINDOWS:
        totals[f"active_days_{n}d"] = (last - first_of[n]).astype(np.int32)
    totals["active_days_trend_7d"] = (
        (last - first_of[TREND_DAYS]) - (first_of[TREND_DAYS] - first_of[2 * TREND_DAYS])
    ).astype(np.int32)
    latest = last - 1  # the user's last active day in the window (each pair has one)
    totals["days_since_last_active"] = (pair_day - row_day[latest]).astype(np.int32)
    # The run of consecutive active days ending on each row, cut at the window's first day.
    run_start = np.maximum.accumulate(np.where(new_user | (row_day != previous + 1), positions, 0))
    streak = positions - run_start + 1
    totals["active_streak_days"] = np.minimum(
        streak[latest], row_day[latest] - (pair_day - (LOOKBACK_DAYS - 1)) + 1
    ).astype(np.int32)
    # Least squares against x = 0 (the oldest day of history) .. history-1 (D); absent days have y = 0, so
    # only the active rows enter the sums: Σxy = (history - 1 - D) Σy + Σ(day·y), with days numbered from 0.
    history = np.minimum(LOOKBACK_DAYS, (base - first_day).days + 1 + pair_day)
    totals["history_days"] = history.astype(np.int32)
    # The fixed-point sums are scaled back once summed, by numpy: a true division, where polars multiplies by
    # the reciprocal in some kernels and not in others, so the last bit of a value would depend on how many
    # rows a frame has (on the block's size).
    y_scale = FIXED_POINT["_log_events"]
    sum_y = window_sums("_log_events", [LOOKBACK_DAYS])[LOOKBACK_DAYS]
    sum_xy = (history - 1 - pair_day) * sum_y + window_sums("_day_log_events", [LOOKBACK_DAYS])[LOOKBACK_DAYS]
    with np.errstate(divide="ignore", invalid="ignore"):  # history < 2 has no slope (null below)
        totals["activity_slope_28d"] = (sum_xy / y_scale - (history - 1) / 2 * (sum_y / y_scale)) / (
            history * (history * history - 1) / 12
        )
    scales = {f"{c}_{n}d": FIXED_POINT[c] for c in ("session_minutes", "revenue") for n in WINDOWS}
    scales |= dict.fromkeys(("_recent_minutes", "_before_minutes"), FIXED_POINT["session_minutes"])
    for name, scale in scales.items():
        totals[name] = totals[name] / scale

    # The last platform/country/app version each user had in the window: per column, the latest of the
    # user's rows up to the day that holds a value, when it lies inside the window.
    categorical = {}
    for c in CATEGORICAL_COLUMNS:
        seen = rows.get_column(c)
        held = np.maximum.accumulate(np.where(seen.is_null().to_numpy(), -1, positions))[latest]
        categorical[c] = seen.gather(np.maximum(held, 0)).scatter(
            np.flatnonzero(held < first_of[LOOKBACK_DAYS]), None
        )

    # One row per pair, by day (then user, as generated): a block of one day is in that order already.
    per_pair = pl.DataFrame(
        {
            "user_id": ids.gather(starts[pair_user]),
            "_date": pl.Series(pair_day - first_out, dtype=pl.Int32),
            **totals,
            **categorical,
        }
    )
    if len(days) > 1:
        per_pair = per_pair.sort("_date", maintain_order=True)

    history_days = pl.col("history_days")
    tenure = (pl.col("_snapshot") - pl.col("install_time").dt.date()).dt.total_days()
    snapshot = (pl.col("_date") + (days[0] - _EPOCH).days).cast(pl.Date)
    snapshot_installs = installs.lazy().select("user_id", pl.col("date").alias("_snapshot"), "install_time")
    features = (
        per_pair.lazy()
        .with_columns(snapshot.alias("_snapshot"))
        # install_times[D] is the state as of D: each pair takes its user's install time of its own day.
        .join(snapshot_installs, on=["user_id", "_snapshot"], how="left", maintain_order="left")
        .with_columns(
            tenure.alias("tenure_days"),
            pl.when(history_days >= 2).then(pl.col("activity_slope_28d")).alias("activity_slope_28d"),
            ((1 + pl.col("_recent_events")).log() - (1 + pl.col("_before_events")).log()).alias("n_events_trend_7d"),
            ((1 + pl.col("_recent_minutes")).log() - (1 + pl.col("_before_minutes")).log()).alias(
                "session_minutes_trend_7d"
            ),
        )
        # Installed on or before D (always true for consistent install_times; a user unknown to
        # install_times is kept with a null tenure, which the blocking check reports).
        .filter(pl.col("tenure_days").is_null() | (pl.col("tenure_days") >= 0))
        .with_columns(
            (pl.col("active_days_28d") / pl.min_horizontal(history_days, pl.col("tenure_days") + 1)).alias(
                "active_share_28d"
            )
        )
        .select("_date", *schema)
        .cast(schema)
        # A block or a slice of users is at most ~1 M rows: the in-memory engine beats the streaming default.
        .collect(engine="in-memory")
    )
    cuts = np.searchsorted(features.get_column("_date").to_numpy(), np.arange(len(days) + 1))
    return [
        (day, features.slice(cuts[i], cuts[i + 1] - cuts[i]).drop("_date")) for i, day in enumerate(days)
    ]


def running_totals(values: np.ndarray) -> np.ndarray:
    """0, then the running totals of ``values`` (whole numbers, int64): the sum of rows i..j-1 is
    ``running[j] - running[i]``. int64 arithmetic wraps around, so a difference is exact whenever the sum
    itself fits in 64 bits, whatever the running totals reach."""
    running = np.zeros(len(values) + 1, np.int64)
    np.cumsum(values, out=running[1:])
    return running
