"""``landing_sensor``: a landing day that becomes complete (its ``_SUCCESS`` appears) is refreshed once.

The cursor is a map ``{day: marker version requested}``, not a high-water mark, so a day that completes
after later days were refreshed is still picked up, and a day whose marker is written again (a
re-delivery) is requested again. A complete day that is not a partition yet (today, in UTC) is left out
of the cursor and requested once its partition exists; days before ``CHURN_START_DATE`` are ignored.

A day refreshed after its marker was written (``install_times[D]`` materialized since: a history loaded
from the CLI before the sensor was turned on, a day re-run by hand) is not requested: it is recorded in
the cursor as it is.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from churn_assets.automation.jobs import daily_refresh
from churn_assets.automation.schedules import partition_exists
from churn_assets.config import SETTINGS
from churn_assets.partitions import daily_partitions, latest_materializations
from churn_assets.resources import LandingZone

LANDING_VERSION_TAG = "churn/landing_version"


@dataclass
class Pending:
    """What one tick finds among the complete landing days not requested at their marker's version."""

    to_request: list[tuple[str, str]] = field(default_factory=list)  # (day, version), oldest first
    waiting: list[str] = field(default_factory=list)  # days whose partition does not exist yet
    held: dict[str, str] = field(default_factory=dict)  # day -> the day before it, neither refreshed nor requested
    refreshed: dict[str, str] = field(default_factory=dict)  # day -> version: refreshed after its marker


def pending_days(
    complete: dict[str, str],
    requested: dict[str, str],
    now: dt.datetime,
    max_tracked_days: int,
    refreshed_at: Callable[[Sequence[str]], dict[str, float]] = lambda days: {},
) -> Pending:
    """Sorts the complete days (``{day: marker version}``) the cursor ``requested`` has not seen at their
    version. ``refreshed_at(days)`` gives the time (epoch seconds) each of ``days`` was last refreshed, for
    those refreshed at all: one query for the tick's new days and the days before them."""
    floor = min(requested) if len(requested) >= max_tracked_days else None
    first = daily_partitions.start.strftime("%Y-%m-%d")
    pending = Pending()
    new: list[tuple[str, str]] = []
    for day, version in sorted(complete.items()):
        if requested.get(day) == version or (floor is not None and day < floor):
            continue
        if partition_exists(daily_partitions, day, now):
            new.append((day, version))
        elif day >= first:
            pending.waiting.append(day)
    if not new:
        return pending
    refreshed = refreshed_at(sorted({d for day, _ in new for d in (day, _day_before(day))}))
    covered = set(requested)
    for day, version in new:
        if refreshed.get(day, float("-inf")) >= _marker_time(version):
            pending.refreshed[day] = version
        elif day > first and _day_before(day) not in covered and _day_before(day) not in refreshed:
            pending.held[day] = _day_before(day)
            continue
        else:
            pending.to_request.append((day, version))
        covered.add(day)
    return pending


def _day_before(day: str) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


def _marker_time(version: str) -> float:
    """When a marker version (``LandingZone.complete_days``: an mtime, or S3's LastModified with its ETag)
    was written, in epoch seconds; +inf when it cannot be read, so that the day is requested."""
    written = version.split("|")[0]
    try:
        return float(written)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(written).timestamp()
    except ValueError:
        return float("inf")


def load_cursor(cursor: str | None) -> dict[str, str]:
    return dict(json.loads(cursor)) if cursor else {}


def dump_cursor(requested: dict[str, str], max_tracked_days: int) -> str:
    kept = sorted(requested.items())[-max_tracked_days:]
    return json.dumps(dict(kept), separators=(",", ":"))


def _refreshed_at(instance: dg.DagsterInstance, days: Sequence[str]) -> dict[str, float]:
    """When each of ``days`` was last refreshed (``install_times[D]`` materialized), for those that were."""
    return {day: record.timestamp for day, record in latest_materializations(instance, _INSTALL_TIMES, days).items()}


_INSTALL_TIMES = dg.AssetKey("install_times")


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
            "marker version; a re-delivered day (new marker) is requested again, a late day is never skipped, "
            "a day refreshed since its marker is not."
        ),
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
        requested = load_cursor(context.cursor)
        now = dt.datetime.now(dt.UTC)
        refreshed_at = lambda days: _refreshed_at(context.instance, days)  # noqa: E731
        pending = pending_days(landing.complete_days(), requested, now, max_tracked_days, refreshed_at)
        to_request = pending.to_request[:max_requests_per_tick]
        run_requests = []
        for day, version in to_request:
            run_requests.append(
                dg.RunRequest(run_key=f"{day}:{version}", partition_key=day, tags={LANDING_VERSION_TAG: version})
            )
            requested[day] = version
        requested |= pending.refreshed
        if pending.waiting:
            context.log.info(
                f"complete landing days waiting for their partition to exist: {', '.join(pending.waiting)}"
            )
        if pending.refreshed:
            days = sorted(pending.refreshed)
            context.log.info(
                f"{len(days)} complete landing day(s) ({days[0]}..{days[-1]}) already refreshed after their marker "
                "was written: recorded, not requested"
            )
        if pending.held:
            context.log.info(_held_message(pending.held))
        cursor = dump_cursor(requested, max_tracked_days) if to_request or pending.refreshed else None
        if run_requests:
            context.log.info(f"requesting daily_refresh for {', '.join(day for day, _ in to_request)}")
            return dg.SensorResult(run_requests=run_requests, cursor=cursor)
        if pending.held:
            reason = _held_message(pending.held)
        elif pending.refreshed:
            reason = f"{len(pending.refreshed)} new complete landing day(s), already refreshed after their marker"
        else:
            reason = f"no new complete landing day under {landing.url}"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)

    return landing_sensor


landing_sensor = build_landing_sensor()
