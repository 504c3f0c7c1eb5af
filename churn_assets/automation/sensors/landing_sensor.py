"""``landing_sensor``: a landing day that becomes complete (its ``_SUCCESS`` appears) is refreshed once.

The cursor is a map ``{day: digest of the marker version requested}``, not a high-water mark, so a day that
completes after later days were refreshed is still picked up, and a day whose marker is written again (a
re-delivery) is requested again. It is JSON, ``{"2025-01-05":"xOPM2i26",…,"deadlines_checked":"2025-01-06"}``:
the sensor only asks whether a day's version changed since it requested it, so the cursor keeps an 8-character
digest of the version (:func:`version_digest`), not the version (~20 characters locally, ~60 on S3 with the ETag),
and Dagster stores the whole cursor with every tick, 1,440 a day. A cursor stored with the versions themselves (by
the code before digests) is read by digesting them: none of its days is requested again, none missed, and the
tick stores it digested. A complete day that is not a partition yet (today, in UTC) is left out
of the cursor and requested once its partition exists; days before ``CHURN_START_DATE`` are ignored.

A day already refreshed from its current delivery (``raw_events[D]`` recorded this marker version as its
``landing_version``, and ``install_times[D]`` followed it: a history loaded from the CLI before the sensor
was turned on, a day re-run by hand) is not requested: it is recorded in the cursor as it is.

A day is requested only after the day before it: ``install_times[D]`` builds on ``install_times[D-1]``, so
a refresh of D before D-1 has one would fail, and the sensor would not ask again. A day whose previous day
has no ``install_times`` yet and is not requested in the same tick is left out of the cursor, waiting: a
late day is requested with the days that waited for it, oldest first, and the days after a failed refresh
wait for it to succeed.

A day whose ``_SUCCESS`` is not there ``CHURN_LANDING_DEADLINE_HOURS`` after the day's end (UTC) is late: a
missing export fails no run for ``run_failure_alert`` to report, so the first tick after that deadline logs it and
posts it to ``CHURN_ALERT_WEBHOOK`` (``late_landing_alerts``), once. The cursor keeps the newest day whose deadline
a tick checked (``DEADLINES_CHECKED``), and a tick looks at the days after it; a tick that fails (the landing zone
unreachable) stores no cursor, so the next one checks those days. A first evaluation (no cursor yet: the sensor just
turned on) logs the latest day due and posts nothing, and so does one outside the daemon (a preview or the UI's "Test
sensor": no tick before it, no start of the sensor), even given the stored cursor.

The cursor keeps at most ``max_tracked_days`` days; once it is full, days older than the oldest one it
tracks are no longer watched (backfill them). A tick requests at most ``max_requests_per_tick`` days,
oldest first; the rest stay pending for the next tick.

A tick lists the day folders of ``events/`` (their names, not their files), then the files of the days that can
need it: the ``recent_days`` up to the newest folder, and every day the cursor does not hold (new, waiting,
unfinished). The first tick of each hour (UTC: the tick before it was in another hour), and one without a tick
before it (the first, a preview), lists every file instead, for the re-deliveries of older days; the cursor keeps
nothing of it. Listing every file on every tick cost O(history): on S3, 18 requests and 1.5 s a minute for two
years of hourly files.
"""

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from churn_assets.apps import APP, asset_key, automation_name, key_string
from churn_assets.automation.jobs import daily_refresh
from churn_assets.automation.schedules import partition_exists
from churn_assets.config import SETTINGS
from churn_assets.partitions import DATE_FORMAT, daily_partitions, latest_materializations
from churn_assets.resources import AlertWebhook, LandingZone
from churn_assets.resources.alerts import AlertDeliveryError
from churn_assets.resources.lake import some_keys

LANDING_VERSION_TAG = "churn/landing_version"
DEADLINES_CHECKED = "deadlines_checked"  # in the cursor, not a day: the newest day whose export deadline was checked
DIGEST_BYTES = 6  # a version's digest in the cursor: 48 bits (version_digest)
DIGEST_CHARS = 8  # its base64url, without padding


@dataclass(frozen=True)
class Refreshed:
    """What the instance holds of one day's refresh."""

    landing_version: str | None  # the marker version raw_events[D] last read (its latest materialization's)
    chained: bool  # install_times[D] materialized after that raw_events[D]: the day's chain went on from it
    installs: bool  # install_times[D] stored at all: the day after may build on it


@dataclass
class Pending:
    """What one tick finds among the complete landing days not requested at their marker's version."""

    to_request: list[tuple[str, str]] = field(default_factory=list)  # (day, marker version), oldest first
    waiting: list[str] = field(default_factory=list)  # days whose partition does not exist yet
    held: dict[str, str] = field(default_factory=dict)  # day -> the day before it, whose install_times is missing
    refreshed: dict[str, str] = field(default_factory=dict)  # day -> marker version: refreshed from it already


def pending_days(
    complete: dict[str, str],
    requested: dict[str, str],
    now: dt.datetime,
    max_tracked_days: int,
    refreshed_of: Callable[[Sequence[str]], dict[str, Refreshed]] = lambda days: {},
) -> Pending:
    """Sorts the complete days (``{day: marker version}``) the cursor ``requested`` (``{day: version digest}``)
    has not seen at their version. ``refreshed_of(days)`` says what the instance holds of each of ``days``: one
    query for the tick's new days and the days before them.

    A day whose ``raw_events`` read this very version, and whose ``install_times`` followed, is refreshed: it
    is recorded, not requested. A day after the first waits (held) until the day before it has its
    ``install_times``, or is requested in the same tick (the queue runs a tick's days oldest first): a day
    requested in an earlier tick may have failed, and the day after it would fail on it too."""
    floor = min(requested) if len(requested) >= max_tracked_days else None
    first = daily_partitions.start.strftime(DATE_FORMAT)
    pending = Pending()
    new: list[tuple[str, str]] = []
    for day, version in sorted(complete.items()):
        seen = requested.get(day)
        if (seen is not None and seen == version_digest(version)) or (floor is not None and day < floor):
            continue
        if partition_exists(daily_partitions, day, now):
            new.append((day, version))
        elif day >= first:
            pending.waiting.append(day)
    if not new:
        return pending
    refreshed = refreshed_of(sorted({d for day, _ in new for d in (day, _day_before(day))}))
    nothing = Refreshed(landing_version=None, chained=False, installs=False)
    this_tick: set[str] = set()
    for day, version in new:
        before = _day_before(day)
        if refreshed.get(day, nothing).landing_version == version and refreshed[day].chained:
            pending.refreshed[day] = version
        elif day > first and before not in this_tick and not refreshed.get(before, nothing).installs:
            pending.held[day] = before
            continue
        else:
            pending.to_request.append((day, version))
        this_tick.add(day)
    return pending


def is_day(name: str) -> bool:
    """Whether a landing folder's ``date=`` names a day as the contract writes it (``YYYY-MM-DD``)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", name):
        return False
    try:  # a real date (not 2025-02-30); fromisoformat, ~10 x faster than strptime: a tick judges every folder
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def _misnamed_message(names: list[str]) -> str:
    folders = some_keys([f"date={name}" for name in names])
    return (
        f"landing folder(s) {folders} under events/ name no day as YYYY-MM-DD (e.g. date=2025-01-05): "
        "never refreshed; rename them"
    )


def _day_before(day: str) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


def version_digest(version: str) -> str:
    """What the cursor keeps of a marker version: 48 bits of its BLAKE2b, in 8 characters of base64url.

    A day's re-delivery is missed only if its new version has the digest of the one requested before: a chance of
    2**-48 (3.6e-15) per re-delivery, ~4e-9 for a million of them; the versions are times and ETags, not chosen
    to collide."""
    return base64.urlsafe_b64encode(hashlib.blake2b(version.encode(), digest_size=DIGEST_BYTES).digest()).decode()


def cursor_days(cursor: str | None) -> dict[str, str]:
    """The cursor's days as stored: ``{day: version digest}``, or the version itself in a cursor stored before the
    cursor kept digests."""
    return {day: seen for day, seen in json.loads(cursor).items() if day != DEADLINES_CHECKED} if cursor else {}


def load_cursor(cursor: str | None) -> dict[str, str]:
    """The days requested, ``{day: digest of the marker version}``. A version stored by the code before digests
    (never 8 characters: a modification time, with the ETag on S3) is digested, so that it matches the same
    marker's version and the day is not requested again."""
    return digested(cursor_days(cursor))


def digested(days: dict[str, str]) -> dict[str, str]:
    """``days`` (:func:`cursor_days`) with each version stored before digests digested."""
    return {day: seen if len(seen) == DIGEST_CHARS else version_digest(seen) for day, seen in days.items()}


def lists_every_file(now: dt.datetime, last_tick: float | None) -> bool:
    """Whether a tick at ``now`` lists every landing file: the first of each hour (UTC), or one without a tick
    before it (``last_tick``, epoch seconds)."""
    if last_tick is None:
        return True
    hour = now.replace(minute=0, second=0, microsecond=0)
    return dt.datetime.fromtimestamp(last_tick, dt.UTC) < hour


def days_to_list(
    days: Sequence[str], requested: dict[str, str], max_tracked_days: int, recent_days: int
) -> list[str]:
    """The day folders (``days``, sorted) whose files a tick lists: the ``recent_days`` up to the newest one
    (re-deliveries), and the days the cursor ``requested`` does not hold; not the days :func:`pending_days` passes
    over (before the first partition, or older than a full cursor's oldest day)."""
    if not days:
        return []
    recent = (dt.date.fromisoformat(days[-1]) - dt.timedelta(days=recent_days - 1)).isoformat()
    first = daily_partitions.start.strftime(DATE_FORMAT)
    floor = min(requested) if len(requested) >= max_tracked_days else first
    return [day for day in days if day >= max(first, floor) and (day >= recent or day not in requested)]


def deadlines_checked(cursor: str | None) -> str | None:
    """The newest day whose export deadline a tick checked, if the cursor holds one."""
    return json.loads(cursor).get(DEADLINES_CHECKED) if cursor else None


def dump_cursor(requested: dict[str, str], max_tracked_days: int, checked: str | None = None) -> str:
    kept = dict(sorted(requested.items())[-max_tracked_days:])
    if checked:
        kept[DEADLINES_CHECKED] = checked
    return json.dumps(kept, separators=(",", ":"))


def _refreshed_of(instance: dg.DagsterInstance, days: Sequence[str]) -> dict[str, Refreshed]:
    """What the instance holds of each of ``days``' refresh (see :class:`Refreshed`)."""
    ingested = latest_materializations(instance, asset_key("raw_events"), days)
    installed = latest_materializations(instance, asset_key("install_times"), days)
    found = {}
    for day in set(ingested) | set(installed):
        ingest, installs = ingested.get(day), installed.get(day)
        version = ingest.asset_materialization.metadata.get("landing_version") if ingest else None
        found[day] = Refreshed(
            landing_version=getattr(version, "value", None),
            chained=ingest is not None and installs is not None and installs.storage_id > ingest.storage_id,
            installs=installs is not None,
        )
    return found


def _unfinished_message(days: list[str]) -> str:
    return f"{len(days)} landing day(s) with files and no _SUCCESS yet: {some_keys(days)}"


def _held_message(held: dict[str, str]) -> str:
    first = min(held)
    return (
        f"{len(held)} complete landing day(s) from {first} wait for {held[first]}: "
        f"{key_string('install_times')}[{held[first]}] is not stored (its landing day is not complete, or its refresh "
        "has not finished or failed); they are requested once it is"
    )


def overdue_days(now: dt.datetime, since: dt.datetime | None, deadline_hours: int, most: int = 7) -> list[str]:
    """The days whose export deadline (``deadline_hours`` after the day's end, UTC) passed in (``since``, ``now``],
    newest first, at most ``most``; without ``since`` (a sensor's first tick), the latest day past its deadline."""
    newest = newest_overdue(now, deadline_hours)
    count = 1 if since is None else min(most, (newest - newest_overdue(since, deadline_hours)).days)
    return [(newest - dt.timedelta(days=n)).isoformat() for n in range(count)]


def newest_overdue(at: dt.datetime, deadline_hours: int) -> dt.date:
    """The newest day whose export deadline passed at ``at``."""
    return (at - dt.timedelta(hours=deadline_hours)).date() - dt.timedelta(days=1)


def deadline_of(day: str, deadline_hours: int) -> dt.datetime:
    """When ``day``'s export is due: ``deadline_hours`` after its end, UTC."""
    end = dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=1), dt.time(), dt.UTC)
    return end + dt.timedelta(hours=deadline_hours)


def late_landing_alerts(
    days: list[str], complete: dict[str, str], unfinished: list[str], now: dt.datetime, deadline_hours: int
) -> list[dict]:
    """An alert for each of ``days`` that is a partition and has no ``_SUCCESS``, shaped as run_failure_alert's
    (``dagster_event`` ``LANDING_DAY_LATE``, no run)."""
    alerts = []
    for day in days:
        if day in complete or not partition_exists(daily_partitions, day, now):
            continue
        why = "it has files: an export that stopped before its marker?" if day in unfinished else "it has no files"
        alerts.append({
            "app": APP,
            "run_id": None,
            "job": daily_refresh.name,
            "partition": day,
            "failed_steps": [],
            "error": (
                f"landing day {day} has no _SUCCESS {deadline_hours} h after its end "
                f"(CHURN_LANDING_DEADLINE_HOURS), at {now:%Y-%m-%d %H:%M} UTC: its export is late ({why})"
            ),
            "dagster_event": "LANDING_DAY_LATE",
        })
    return alerts


# What a tick that must not page anyone logs: the daemon's first tick after the sensor is turned on (no cursor yet),
# and every `dagster sensor preview` or "Test sensor" in the UI (outside the daemon, whatever cursor it is given).
_NOT_POSTED = (
    "a first evaluation (the sensor just turned on) or a preview posts nothing; the daemon's later ticks post days due"
)


def _post_late(
    context: dg.SensorEvaluationContext, alerts: AlertWebhook, late: list[dict], post: bool
) -> list[str]:
    """Logs each late day and, when ``post``, posts it. Returns the days the webhook refused: logged, and posted
    again by the next tick, while the tick's refresh requests go on."""
    refused = []
    for alert in late:
        if not post:
            context.log.warning(f"{alert['error']}; not posted: {_NOT_POSTED}")
            continue
        context.log.warning(alert["error"])
        if not alerts.enabled:
            continue
        try:
            status = alerts.post(alert)
        except AlertDeliveryError as exc:
            refused.append(alert["partition"])
            context.log.error(f"late landing day {alert['partition']} not posted (the next tick tries again): {exc}")
        else:
            context.log.info(f"late landing day {alert['partition']} posted to the webhook (HTTP {status})")
    return refused


def build_landing_sensor(
    minimum_interval_seconds: int = SETTINGS.landing_sensor_interval_seconds,
    deadline_hours: int | None = SETTINGS.landing_deadline_hours,
    max_tracked_days: int = 1000,
    max_requests_per_tick: int = 100,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    recent_days: int = 31,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=automation_name("landing_sensor"),
        job=daily_refresh,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Requests daily_refresh for each landing day whose _SUCCESS marker appears, once per day and "
            "marker version; a re-delivered day (new marker) is requested again, a late day is never skipped, "
            "a day refreshed since its marker is not. A day without _SUCCESS CHURN_LANDING_DEADLINE_HOURS after "
            "its end is alerted as late (log, CHURN_ALERT_WEBHOOK)."
        ),
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZone, alerts: AlertWebhook
    ) -> dg.SensorResult:
        stored, checked = cursor_days(context.cursor), deadlines_checked(context.cursor)
        requested = digested(stored)
        now = dt.datetime.now(dt.UTC)
        refreshed_of = lambda days: _refreshed_of(context.instance, days)  # noqa: E731
        if lists_every_file(now, context.last_tick_completion_time):  # a re-delivery of an older day shows
            complete, unfinished = landing.days()
            misnamed = [day for day in sorted({*complete, *unfinished}) if not is_day(day)]
        else:  # the recent days' files and the days not in the cursor, the other folders by name only
            folders = landing.day_folders()
            days = [name for name in folders if is_day(name)]
            misnamed = sorted(set(folders) - set(days))
            complete, unfinished = landing.days(days_to_list(days, requested, max_tracked_days, recent_days))
        if misnamed:  # never a partition, so never refreshed: said on every tick, not waited for in silence
            context.log.warning(_misnamed_message(misnamed))
            complete = {day: version for day, version in complete.items() if is_day(day)}
            unfinished = [day for day in unfinished if is_day(day)]
        checked_before = checked
        if deadline_hours is not None:
            # After the newest day checked, from the cursor, which a failed tick does not store. Dagster's time of
            # the previous tick (its start, failed or not) only for a cursor from before the deadlines were kept.
            last = context.last_tick_completion_time
            since = (
                deadline_of(checked, deadline_hours) if checked
                else dt.datetime.fromtimestamp(last, dt.UTC) if last else None
            )
            due = overdue_days(now, since, deadline_hours)
            late = late_landing_alerts(due, complete, unfinished, now, deadline_hours)
            # Only the daemon's ticks post. A preview or the UI's "Test sensor" has neither a tick before it nor a
            # start of the sensor, even when given the stored cursor, and stores nothing: posted, its days paged
            # someone for a trial, and the next tick posted them again.
            ticking = last is not None or context.last_sensor_start_time is not None
            refused = _post_late(context, alerts, late, post=since is not None and ticking)
            # Checked up to the day before the oldest one refused: the next tick posts it again (and the days
            # after it, which a flaky webhook may then receive twice: better than never).
            newest = newest_overdue(now, deadline_hours)
            if refused:
                newest = dt.date.fromisoformat(min(refused)) - dt.timedelta(days=1)
            checked = max(filter(None, (checked, newest.isoformat())))
        pending = pending_days(complete, requested, now, max_tracked_days, refreshed_of)
        to_request = pending.to_request[:max_requests_per_tick]
        run_requests = []
        for day, version in to_request:
            run_requests.append(
                dg.RunRequest(run_key=f"{day}:{version}", partition_key=day, tags={LANDING_VERSION_TAG: version})
            )
            requested[day] = version_digest(version)
        requested |= {day: version_digest(version) for day, version in pending.refreshed.items()}
        if pending.waiting:
            context.log.info(
                f"complete landing days waiting for their partition to exist: {', '.join(pending.waiting)}"
            )
        if pending.refreshed:
            days = sorted(pending.refreshed)
            context.log.info(
                f"{len(days)} complete landing day(s) ({days[0]}..{days[-1]}) already refreshed from this "
                "delivery: recorded, not requested"
            )
        if pending.held:
            context.log.info(_held_message(pending.held))
        # A cursor stored with versions (before digests) is stored digested at once.
        changed = to_request or pending.refreshed or checked != checked_before or requested != stored
        cursor = dump_cursor(requested, max_tracked_days, checked) if changed else None
        if run_requests:
            context.log.info(f"requesting {daily_refresh.name} for {', '.join(day for day, _ in to_request)}")
            return dg.SensorResult(run_requests=run_requests, cursor=cursor)
        if unfinished:  # an export still writing, or one that stopped: visible, never requested
            context.log.info(_unfinished_message(unfinished))
        if pending.held:
            reason = _held_message(pending.held)
        elif pending.refreshed:
            reason = f"{len(pending.refreshed)} new complete landing day(s), already refreshed from this delivery"
        else:
            reason = f"no new complete landing day under {landing.url}"
        if unfinished:
            reason += f"; {_unfinished_message(unfinished)}"
        if misnamed:
            reason += f"; {_misnamed_message(misnamed)}"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)

    return landing_sensor


landing_sensor = build_landing_sensor()
