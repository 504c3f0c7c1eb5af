"""``landing_sensor``: a landing day that becomes complete (its ``_SUCCESS`` appears) is refreshed once.

The cursor is a map ``{day: marker version requested}``, not a high-water mark, so a day that completes
after later days were refreshed is still picked up, and a day whose marker is written again (a
re-delivery) is requested again. A complete day that is not a partition yet (today, in UTC) is left out
of the cursor and requested once its partition exists; days before ``CHURN_START_DATE`` are ignored.

A day is requested only after the day before it: ``install_times[D]`` builds on ``install_times[D-1]``, so
a refresh of D before D-1 has one would fail, and the sensor would not ask again. A day whose previous day
is neither refreshed (``install_times[D-1]`` stored) nor requested (in this tick or an earlier one) is left
out of the cursor, waiting: a late day is requested with the days that waited for it, oldest first.

The cursor keeps at most ``max_tracked_days`` days; once it is full, days older than the oldest one it
tracks are no longer watched (backfill them). A tick requests at most ``max_requests_per_tick`` days,
oldest first; the rest stay pending for the next tick.
"""

import datetime as dt
import json
from collections.abc import Callable

import dagster as dg

from churn_assets.automation.jobs import daily_refresh
from churn_assets.automation.schedules import partition_exists
from churn_assets.config import SETTINGS
from churn_assets.partitions import daily_partitions
from churn_assets.resources import LandingZone

LANDING_VERSION_TAG = "churn/landing_version"


def pending_days(
    complete: dict[str, str],
    requested: dict[str, str],
    now: dt.datetime,
    max_tracked_days: int,
    refreshed: Callable[[], set[str]] = set,
) -> tuple[list[tuple[str, str]], list[str], dict[str, str]]:
    """The (day, version) pairs to request, oldest first; the complete days still waiting for their
    partition to exist; and the complete days waiting for the day before them (``{day: the day before}``),
    which is neither requested nor among ``refreshed()`` (the days ``install_times`` holds, asked for only
    when a day's predecessor is not requested)."""
    floor = min(requested) if len(requested) >= max_tracked_days else None
    first = daily_partitions.start.strftime("%Y-%m-%d")
    covered = set(requested)
    stored: set[str] | None = None
    to_request, waiting, held = [], [], {}
    for day, version in sorted(complete.items()):
        if requested.get(day) == version or (floor is not None and day < floor):
            continue
        if not partition_exists(daily_partitions, day, now):
            if day >= first:
                waiting.append(day)
            continue
        before = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        if day > first and before not in covered:
            stored = refreshed() if stored is None else stored
            if before not in stored:
                held[day] = before
                continue
        to_request.append((day, version))
        covered.add(day)
    return to_request, waiting, held


def load_cursor(cursor: str | None) -> dict[str, str]:
    return dict(json.loads(cursor)) if cursor else {}


def dump_cursor(requested: dict[str, str], max_tracked_days: int) -> str:
    kept = sorted(requested.items())[-max_tracked_days:]
    return json.dumps(dict(kept), separators=(",", ":"))


def _refreshed_days(instance: dg.DagsterInstance) -> set[str]:
    """The days ``install_times`` holds: a day refreshed before the sensor's cursor knew of it (a backfill, a
    new deployment, or a landing zone that no longer keeps its oldest days)."""
    return set(instance.get_materialized_partitions(dg.AssetKey("install_times")))


def _held_message(held: dict[str, str]) -> str:
    first = min(held)
    return (
        f"{len(held)} complete landing day(s) from {first} wait for {held[first]}: its landing day is not "
        f"complete and install_times[{held[first]}] is not stored; they are requested once it is"
    )


def build_landing_sensor(
    minimum_interval_seconds: int = SETTINGS.landing_sensor_interval_seconds,
    max_tracked_days: int = 1000,
    max_requests_per_tick: int = 100,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        job=daily_refresh,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Requests daily_refresh for each landing day whose _SUCCESS marker appears, once per day and "
            "marker version; a re-delivered day (new marker) is requested again, a late day is never skipped."
        ),
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
        requested = load_cursor(context.cursor)
        now = dt.datetime.now(dt.UTC)
        to_request, waiting, held = pending_days(
            landing.complete_days(), requested, now, max_tracked_days, lambda: _refreshed_days(context.instance)
        )
        to_request = to_request[:max_requests_per_tick]
        run_requests = []
        for day, version in to_request:
            run_requests.append(
                dg.RunRequest(run_key=f"{day}:{version}", partition_key=day, tags={LANDING_VERSION_TAG: version})
            )
            requested[day] = version
        if waiting:
            context.log.info(f"complete landing days waiting for their partition to exist: {', '.join(waiting)}")
        if held:
            context.log.info(_held_message(held))
        if run_requests:
            context.log.info(f"requesting daily_refresh for {', '.join(day for day, _ in to_request)}")
            return dg.SensorResult(run_requests=run_requests, cursor=dump_cursor(requested, max_tracked_days))
        if held:
            return dg.SensorResult(skip_reason=dg.SkipReason(_held_message(held)))
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new complete landing day under {landing.url}"))

    return landing_sensor


landing_sensor = build_landing_sensor()
