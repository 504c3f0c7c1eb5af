"""``user_daily``: one row per user active on a day — the sparse base every feature is built from."""


import datetime as dt

import dagster as dg
import polars as pl

from churn_assets.apps import key_string
from churn_assets.assets.ingest.landing_files import ATTRIBUTES, MAX_REVENUE
from churn_assets.config import SETTINGS, event_type_column
from churn_assets.partitions import daily_partitions, days_in_range, largest_window
from churn_assets.resources import ChurnParameters
from churn_assets.resources.parquet_io_manager import ROW_GROUP_ROWS, PartitionStream, column_schema
from churn_assets.threads import engine_for, ordered_map, workers_for

# Totals every row has, whatever the tracked event types are.
TOTAL_COLUMNS: dict[str, pl.DataType] = {
    "n_events": pl.Int64(),
    "n_sessions": pl.Int64(),
    "session_minutes": pl.Float64(),
    "revenue": pl.Float64(),
    "n_purchases": pl.Int64(),
}
# One user's revenue in a day above this is no purchases but a load-test or bot user replaying a purchase, or prices
# in a minor unit: user_daily and features sum revenue exactly in whole millionths as 64-bit integers, and a day's
# sum of events each under MAX_REVENUE (~9,000 of them at 10^9) wrapped round to a wrong value, negative or not,
# which features summed into 28 days. 28 days of this much still fit those integers.
MAX_USER_DAY_REVENUE = 1e11
# The events' attributes, each the last seen that day (summarize_user_day), and days since install.
ATTRIBUTE_COLUMNS: dict[str, pl.DataType] = {
    **{column: pl.String() for column in ATTRIBUTES},
    "days_since_install": pl.Int32(),
}


def user_daily_schema(event_types: list[str]) -> dict[str, pl.DataType]:
    counts = {event_type_column(t): pl.Int64() for t in event_types}
    return {"user_id": pl.String(), **counts, **TOTAL_COLUMNS, **ATTRIBUTE_COLUMNS}


def user_daily_column_schema(event_types: list[str]) -> dg.TableSchema:
    """The column schema the UI shows: each column's meaning; the user and the counts are never null."""
    counts = {event_type_column(t): f"Events of type {t} exported on D." for t in event_types}
    totals = {
        "n_events": "Events exported on D, of every type.",
        "n_sessions": "Sessions with events on D.",
        "session_minutes": "Minutes from the first to the last event of each of those sessions, summed.",
        "revenue": "Revenue of the day's events, summed (to 1e-6).",
        "n_purchases": "Events with a positive revenue.",
    }
    attributes = {
        column: f"The {column} of the user's last event of the day that had one; null when none had."
        for column in ATTRIBUTES
    } | {"days_since_install": "D minus the day of install_times' install_time."}
    return column_schema(
        user_daily_schema(event_types),
        {"user_id": "A user with events exported on D.", **counts, **totals, **attributes},
        key="user_id",
        not_null=[*counts, *totals],
    )


@dg.asset(
    group_name="ingest",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    owners=["team:data-platform"],
    # features reads a large window in slices of user ids (sorted), ~40 k rows of each day per slice at
    # ~1 M daily users: row groups of 32 k rows let it skip the rest of the day (polars' default of up to
    # 100 k rows decoded ~25-30 % more of the window).
    metadata={ROW_GROUP_ROWS: 32_768, "dagster/column_schema": user_daily_column_schema(SETTINGS.event_types)},
)
def user_daily(
    context: dg.AssetExecutionContext,
    churn: ChurnParameters,
    raw_events: pl.LazyFrame,
    install_times: pl.LazyFrame,
) -> PartitionStream:
    """One row per user with events exported on day D: a count per tracked event type
    (``CHURN_EVENT_TYPES``), total events, sessions, session minutes (first to last event of each
    session), revenue, purchases, the last platform, country and app version seen that day, and days
    since install. Reads ``raw_events[D]`` and ``install_times[D]``; users without events on D have no row.
    """
    days = days_in_range(context)

    def of_day(day: dt.date) -> tuple[str, pl.DataFrame]:
        events = raw_events.filter(pl.col("date") == day).collect()
        installs = install_times.filter(pl.col("date") == day).drop("date").collect()
        summary = summarize_user_day(events, installs, day, churn.event_types)
        require_revenue_in_range(events, summary, day)
        return day.isoformat(), summary

    largest_day = largest_window(raw_events, days, 1)
    return PartitionStream(ordered_map(of_day, days, workers=workers_for(largest_day)))


def summarize_user_day(
    events: pl.DataFrame, installs: pl.DataFrame, day: dt.date, event_types: list[str]
) -> pl.DataFrame:
    """``user_daily[D]`` from the day's events and ``install_times[D]``.

    Without sorting the day's events: the last platform, country and app version (of the events that have
    one) are taken per user in (event time, event id) order, from the events at each user's latest time
    only (usually one). On a day of 28 M events this is ~5 x faster and holds half the memory of a sort of
    the whole day, and ~2 x faster than sorting each user's events. A column some events lack (a backend's
    purchases without a platform, say) is taken the same way from the events that have it.
    """
    sessions = (
        events.lazy()
        .filter(pl.col("session_id").is_not_null())
        .group_by("user_id", "session_id")
        .agg((pl.col("event_time").max() - pl.col("event_time").min()).dt.total_microseconds().alias("us"))
        .group_by("user_id")
        # Whole microseconds add up exactly in any order, so the result (and its hash) is reproducible.
        .agg(pl.len().alias("n_sessions"), (pl.col("us").sum() / 60e6).alias("session_minutes"))
    )
    per_user = events.lazy().group_by("user_id").agg(
        *[(pl.col("event_type") == t).sum().alias(event_type_column(t)) for t in event_types],
        pl.len().alias("n_events"),
        # Summed in whole millionths: integers add up exactly in any order. A float sum did not, and on a
        # large day polars' threads add a user's revenue in a different order from run to run.
        ((pl.col("revenue") * 1e6).round().cast(pl.Int64).sum() / 1e6).alias("revenue"),
        (pl.col("revenue").fill_null(0) > 0).sum().alias("n_purchases"),
        pl.col("event_time").max().alias("_latest"),
    )
    # The attributes of each user's last event, its latest time known from per_user. A column with nulls
    # (null_count is free) is taken from the events that have a value: its last value seen, not a null of a
    # later event without it.
    with_nulls = [c for c in ATTRIBUTES if events.get_column(c).null_count()]
    latest = per_user.select("user_id", pl.col("_latest").alias("event_time"))
    attributes = [
        _last_seen(events.lazy(), [c for c in ATTRIBUTES if c not in with_nulls], latest),
        *[_last_seen(events.lazy().filter(pl.col(c).is_not_null()), [c]) for c in with_nulls],
    ]
    joined = per_user
    for frame in attributes:
        joined = joined.join(frame, on="user_id", how="left")
    return (
        joined.join(sessions, on="user_id", how="left")
        .join(installs.lazy().select("user_id", "install_time"), on="user_id", how="left")
        .with_columns(
            pl.col("n_sessions").fill_null(0),
            pl.col("session_minutes").fill_null(0.0),
            (pl.lit(day) - pl.col("install_time").dt.date()).dt.total_days().alias("days_since_install"),
        )
        .select(list(user_daily_schema(event_types)))
        .cast(user_daily_schema(event_types))
        .sort("user_id")
        .collect(engine=engine_for(events.height))
    )


def require_revenue_in_range(events: pl.DataFrame, summary: pl.DataFrame, day: dt.date) -> None:
    """Fails ``user_daily[day]`` naming the users whose revenue of the day (``events``: ``raw_events[day]``) is above
    ``MAX_USER_DAY_REVENUE``, whose sums in ``summary`` may have wrapped round. Each event's revenue is at most
    ``MAX_REVENUE`` (raw_events quarantines the rest), so only users with that many purchases in ``summary`` can
    reach it: their events alone are summed again, as floats (usually nobody's: nothing is read again)."""
    can_exceed = summary.filter(pl.col("n_purchases") > MAX_USER_DAY_REVENUE / MAX_REVENUE).select("user_id")
    if can_exceed.is_empty():
        return
    over = (
        events.join(can_exceed, on="user_id", how="semi")
        .group_by("user_id")
        .agg(pl.col("revenue").sum(), (pl.col("revenue") > 0).sum().alias("purchases"))
        .filter(pl.col("revenue") > MAX_USER_DAY_REVENUE)
        .sort("user_id")
    )
    if over.is_empty():
        return
    users = "; ".join(f"{u!r}: {r:,.0f} over {n:,} purchases" for u, r, n in over.head(5).iter_rows())
    raise dg.Failure(
        f"{key_string('user_daily')}[{day}]: {over.height} user(s) with more revenue on {day} than "
        f"{MAX_USER_DAY_REVENUE:,.0f} for one user in a day ({users}): no real purchases add up to that (a load-test "
        "or bot user replaying a purchase, or prices in a minor unit), and features could not sum it exactly. Remove "
        "those events from the landing day and deliver it again, or keep a test user out for good with "
        "`churn-assets erase --user-id ID`; then materialize raw_events and what follows for the day again "
        "(docs/operations.md, 'The quarantine').",
        metadata={"users_over_revenue_limit": over.height},
        allow_retries=False,
    )


def _last_seen(events: pl.LazyFrame, columns: list[str], latest: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Each user's ``columns`` on their last event of ``events`` by (event time, event id): among the events at
    the user's latest time (``latest``: ``user_id``, ``event_time``; taken from ``events`` when not given), the
    greatest id (ids are unique within a day)."""
    if latest is None:
        latest = events.group_by("user_id").agg(pl.col("event_time").max())
    at_latest = events.join(latest, on=["user_id", "event_time"], how="semi")
    return at_latest.group_by("user_id").agg(*[pl.col(c).sort_by("event_id").last() for c in columns])
