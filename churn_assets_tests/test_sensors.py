"""Sensors on real instances: the landing sensor on a local and an S3 landing zone, the drift sensor with
its cool-down, and the run-failure alert posted to an HTTP server started by the test."""

import contextlib
import datetime as dt
import gzip
import json
import os
import time
import uuid

import dagster as dg
import pytest

from churn_assets.automation.sensors.drift_retraining_sensor import build_drift_retraining_sensor
from churn_assets.automation.sensors.landing_sensor import (
    build_landing_sensor,
    cursor_days,
    deadline_of,
    landing_sensor,
    load_cursor,
    overdue_days,
    version_digest,
)
from churn_assets.automation.sensors.run_failure_alert import run_failure_alert, step_error
from churn_assets.config import ChurnSettings
from churn_assets.definitions import defs
from churn_assets.resources import AlertWebhook, LandingZone, build_resources
from churn_assets.resources.filesystems import filesystem, join
from churn_assets_tests.landing_helpers import INGEST, amplitude_row, jsonl, materialize_ingest, write_landing_day

REPOSITORY = defs.get_repository_def()


# -- landing sensor ---------------------------------------------------------------------------------
def _landing_day(landing_url: str, day: str, complete: bool = True) -> None:
    rows = [amplitude_row(f"{day}-e1", "u1", f"{day} 10:00:00.000000")]
    write_landing_day(landing_url, day, {"part-00000.jsonl": jsonl(rows)}, complete=complete)


def _redeliver(landing_url: str, day: str) -> None:
    """Writes the day's files and its marker again, as an exporter re-sending the day does."""
    if landing_url.startswith("s3://"):
        time.sleep(1.1)  # S3's LastModified has a resolution of one second
    _landing_day(landing_url, day)
    if not landing_url.startswith("s3://"):
        marker = join(landing_url, "events", f"date={day}", "_SUCCESS")
        later = os.stat(marker).st_mtime + 5
        os.utime(marker, (later, later))


def _landing_resources(landing_url: str, webhook_url: str | None = None) -> dict:
    return {"landing": LandingZone(url=landing_url), "alerts": AlertWebhook(url=webhook_url)}


def _evaluate(sensor: dg.SensorDefinition, instance, landing_url: str, cursor: str | None):
    """One evaluation of ``sensor`` on the landing zone at ``landing_url``, from ``cursor``."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=_landing_resources(landing_url),
        repository_def=REPOSITORY,
    )
    return sensor.evaluate_tick(context)


def _tick(sensor: dg.SensorDefinition, instance, landing_url: str, cursor: str | None):
    """One evaluation: (partition keys requested in order, run keys, the cursor after it)."""
    data = _evaluate(sensor, instance, landing_url, cursor)
    for request in data.run_requests or []:
        assert request.job_name in (None, "daily_refresh")
    requests = data.run_requests or []
    return [r.partition_key for r in requests], [r.run_key for r in requests], data.cursor or cursor


def test_landing_sensor_requests_each_complete_day_once(instance, landing_url):
    _landing_day(landing_url, "2025-01-01")
    _landing_day(landing_url, "2025-01-02", complete=False)

    days, run_keys, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-01"]
    assert run_keys[0].startswith("2025-01-01:")
    assert list(load_cursor(cursor)) == ["2025-01-01"]

    days, _, cursor_again = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == []  # requested once; the incomplete day is not requested
    assert cursor_again == cursor
    # but it is named: an export that stopped before its marker is not invisible.
    skip = _evaluate(landing_sensor, instance, landing_url, cursor).skip_message
    assert skip.endswith("; 1 landing day(s) with files and no _SUCCESS yet: 2025-01-02")


def test_landing_sensor_picks_up_a_late_day_and_a_redelivered_day(instance, landing_url):
    _landing_day(landing_url, "2025-01-01")
    _landing_day(landing_url, "2025-01-03")
    days, first_keys, cursor = _tick(landing_sensor, instance, landing_url, None)
    # 2025-01-03 waits for 2025-01-02: install_times[01-03] builds on install_times[01-02], so its refresh
    # would fail, and a day already requested is not requested again.
    assert days == ["2025-01-01"]
    _finished(instance, "2025-01-01")

    # 2025-01-02 completes late: it is requested, and the day that waited for it after it, oldest first.
    _landing_day(landing_url, "2025-01-02")
    days, _, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == ["2025-01-02", "2025-01-03"]

    # A new _SUCCESS for 2025-01-01: the day is requested again, under a new run key.
    _redeliver(landing_url, "2025-01-01")
    days, run_keys, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == ["2025-01-01"]
    assert run_keys[0] != first_keys[0]
    assert _tick(landing_sensor, instance, landing_url, cursor)[0] == []


def _within_the_hour(instance, landing_url: str, cursor: str, every_file: bool = False):
    """A daemon's tick (requested days, cursor) after one earlier in the same hour (UTC), or, ``every_file``, after
    one in the hour before: the first tick of an hour, which lists every landing file."""
    now = dt.datetime.now(dt.UTC)
    if now.minute == 59 and now.second > 55:  # the tick must not be the next hour's first
        time.sleep(61 - now.second)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    last_tick = hour - dt.timedelta(seconds=1) if every_file else hour
    data = landing_sensor.evaluate_tick(_daemon_context(instance, landing_url, None, last_tick, cursor))
    return [r.partition_key for r in data.run_requests or []], data.cursor or cursor


def test_landing_sensor_lists_the_recent_days_files_and_the_rest_once_an_hour(instance, landing_url):
    """After two years, a tick listed every file of the landing zone, every minute: O(history) per tick (on S3,
    18 requests and 1.5 s for 730 days of hourly files). A tick lists the files of the last 31 days up to the
    newest folder, and of the days its cursor does not hold; the first tick of each hour lists every file, so
    that a re-delivery of an older day is still requested, within the hour."""
    old, recent = "2025-01-01", ["2025-03-01", "2025-03-02"]
    for day in (old, *recent):
        _landing_day(landing_url, day)
    _finished(instance, "2025-01-19", "2025-02-28")  # the days before 2025-01-20 (below) and 2025-03-01
    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == [old, *recent]
    _finished(instance, old, *recent)

    _redeliver(landing_url, old)
    _redeliver(landing_url, recent[0])
    _landing_day(landing_url, "2025-01-20")  # a day new to the cursor, older than the recent ones
    days, cursor = _within_the_hour(instance, landing_url, cursor)
    assert days == ["2025-01-20", recent[0]]  # 2025-01-01's files were not listed: its new marker is not seen yet
    assert _within_the_hour(instance, landing_url, cursor)[0] == []

    days, cursor = _within_the_hour(instance, landing_url, cursor, every_file=True)
    assert days == [old]
    assert _within_the_hour(instance, landing_url, cursor, every_file=True)[0] == []


def test_landing_sensor_holds_days_after_a_gap_and_says_why(instance, tmp_path):
    landing_url = str(tmp_path / "landing")
    for day in ("2025-01-01", "2025-01-03", "2025-01-04"):
        _landing_day(landing_url, day)
    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-01"]
    skip = _evaluate(landing_sensor, instance, landing_url, cursor).skip_message
    assert "2 complete landing day(s) from 2025-01-03 wait for 2025-01-02" in skip

    # A day refreshed without the sensor (a backfill, or a landing zone that no longer keeps it) is not
    # waited for: install_times[2025-01-02] stored lets the days after it go.
    instance.report_runless_asset_event(dg.AssetMaterialization("install_times", partition="2025-01-02"))
    days, _, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == ["2025-01-03", "2025-01-04"]


def _finished(instance, *days: str) -> None:
    """The refreshes of ``days`` succeeded: what the sensor looks at of them (install_times stored)."""
    for day in days:
        instance.report_runless_asset_event(dg.AssetMaterialization("install_times", partition=day))


def test_landing_sensor_holds_the_days_after_a_failed_refresh_until_it_succeeds(instance, tmp_path):
    """A day requested earlier is no cover for the next one: its refresh may have failed (a corrupt file), and
    the days after it would fail on its install_times and never be requested again."""
    landing_url = str(tmp_path / "landing")
    _landing_day(landing_url, "2025-01-01")
    _landing_day(landing_url, "2025-01-02")
    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-01", "2025-01-02"]  # one tick: the queue runs them oldest first
    _finished(instance, "2025-01-01")  # and 2025-01-02 failed

    _landing_day(landing_url, "2025-01-03")
    days, _, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == []
    # Re-delivered, 2025-01-02 is requested, and 2025-01-03 after it in the same tick.
    _redeliver(landing_url, "2025-01-02")
    days, _, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == ["2025-01-02", "2025-01-03"]


def test_landing_sensor_does_not_request_days_refreshed_from_their_delivery(instance, landing_url, tmp_path):
    """A history loaded from the CLI before the sensor is turned on is not refreshed a second time (each day a
    run): raw_events recorded the marker version it read. A day re-delivered since is requested."""
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        _landing_day(landing_url, day)
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing_url)
    history = materialize_ingest(  # what `dagster asset materialize` of the history records
        build_resources(settings), instance, "2025-01-01", "2025-01-02",
        selection=dg.AssetSelection.assets("raw_events", "install_times"),
    )
    assert history.success

    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-03"]
    assert sorted(load_cursor(cursor)) == ["2025-01-01", "2025-01-02", "2025-01-03"]

    _redeliver(landing_url, "2025-01-02")
    days, _, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == ["2025-01-02"]
    assert _tick(landing_sensor, instance, landing_url, cursor)[0] == []


def test_landing_sensor_requests_a_day_whose_install_times_did_not_follow_its_raw_events(
    instance, landing_url, tmp_path
):
    """raw_events having read the current delivery is not enough: a day is refreshed only when install_times
    was materialized after it. 2025-01-02's install_times is older than its raw_events (of the re-delivery);
    2025-01-03 has raw_events only. Both are requested; 2025-01-01 (raw_events, then install_times) is not."""
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        _landing_day(landing_url, day)
    resources = build_resources(ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing_url))
    both = dg.AssetSelection.assets("raw_events", "install_times")
    assert materialize_ingest(resources, instance, "2025-01-01", "2025-01-02", selection=both).success
    _redeliver(landing_url, "2025-01-02")
    raw_only = dg.AssetSelection.assets("raw_events")
    assert materialize_ingest(resources, instance, "2025-01-02", "2025-01-03", selection=raw_only).success

    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-02", "2025-01-03"]
    assert sorted(load_cursor(cursor)) == ["2025-01-01", "2025-01-02", "2025-01-03"]


def test_landing_sensor_cursor_survives_a_restart(landing_url):
    _landing_day(landing_url, "2025-01-01")
    _landing_day(landing_url, "2025-01-02")
    with dg.instance_for_test() as instance:
        days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
        assert days == ["2025-01-01", "2025-01-02"]

    # A new process and instance: the stored cursor string is all that is carried over.
    _landing_day(landing_url, "2025-01-03")
    with dg.instance_for_test() as instance:
        _finished(instance, "2025-01-01", "2025-01-02")
        days, _, cursor = _tick(build_landing_sensor(), instance, landing_url, cursor)
    assert days == ["2025-01-03"]
    assert sorted(load_cursor(cursor)) == ["2025-01-01", "2025-01-02", "2025-01-03"]


def _cursor_bytes_per_day(cursor: str) -> float:
    """The cursor's bytes per landing day it tracks: each day's entry and its comma (or brace), without the
    deadlines_checked entry."""
    days = cursor_days(cursor)
    return (len(json.dumps(days, separators=(",", ":"))) - 1) / len(days)


def test_landing_sensor_cursor_keeps_a_short_digest_of_each_version(instance, landing_url):
    """Dagster stores the whole cursor with each of the 1,440 ticks a day: with the marker versions themselves in
    it, 35 B per day tracked locally and 74 B on S3 (the ETag), ~25 kB (~54 kB) a tick after two years. It keeps
    an 8-character digest of each version: 24 B a day, and a re-delivery is still requested."""
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        _landing_day(landing_url, day)
    days, run_keys, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-01", "2025-01-02", "2025-01-03"]
    versions = {key.split(":", 1)[0]: key.split(":", 1)[1] for key in run_keys}  # the run keys keep the version
    assert cursor_days(cursor) == {day: version_digest(version) for day, version in versions.items()}
    assert _cursor_bytes_per_day(cursor) == 24  # "2025-01-01":"xOPM2i26",
    _finished(instance, *days)

    _redeliver(landing_url, "2025-01-02")
    days, _, cursor = _tick(landing_sensor, instance, landing_url, cursor)
    assert days == ["2025-01-02"]
    assert _tick(landing_sensor, instance, landing_url, cursor)[0] == []


def test_landing_sensor_reads_a_cursor_of_versions_stored_before_digests(instance, landing_url):
    """After an upgrade the stored cursor holds the marker versions themselves ({day: version}, as the code before
    digests stored it): its days are not requested again, a day re-delivered since is, and the tick stores the
    cursor digested."""
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        _landing_day(landing_url, day)
    _finished(instance, "2025-01-01", "2025-01-02", "2025-01-03")
    versions = LandingZone(url=landing_url).days()[0]
    checked = overdue_days(dt.datetime.now(dt.UTC), None, 6)[0]  # up to date: no deadline makes the tick store it
    sensor = build_landing_sensor(deadline_hours=6)
    before = json.dumps({**versions, "deadlines_checked": checked}, separators=(",", ":"))
    assert _cursor_bytes_per_day(before) > 24

    # Nothing new: nothing requested, and the cursor is stored digested at once.
    data = _evaluate(sensor, instance, landing_url, before)
    assert not data.run_requests
    assert cursor_days(data.cursor) == {day: version_digest(version) for day, version in versions.items()}
    assert json.loads(data.cursor)["deadlines_checked"] == checked

    # From the old cursor still: only the re-delivered day and the new one are requested.
    _redeliver(landing_url, "2025-01-02")
    _landing_day(landing_url, "2025-01-04")
    days, _, cursor = _tick(sensor, instance, landing_url, before)
    assert days == ["2025-01-02", "2025-01-04"]
    assert sorted(load_cursor(cursor)) == ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
    assert _cursor_bytes_per_day(cursor) == 24
    assert _tick(sensor, instance, landing_url, cursor)[0] == []


def test_landing_sensor_under_a_root_with_glob_characters(instance, tmp_path):
    """The sensor lists events/ instead of globbing a pattern: a root like ``churn [copy]`` held no day."""
    landing_url = str(tmp_path / "env=prod" / "churn [copy]" / "landing")
    _landing_day(landing_url, "2025-01-01")
    assert _tick(landing_sensor, instance, landing_url, None)[0] == ["2025-01-01"]


def test_landing_sensor_judges_a_day_by_its_marker_not_by_entries_that_are_no_files(instance, tmp_path):
    """A named pipe or a folder in a landing day is listed, never opened, by the sensor (a tick does not wait on a
    pipe): a complete day is requested as any other, and its refresh fails naming the entry (raw_events); a day
    with such an entry and no _SUCCESS is named as waiting for its marker."""
    landing_url = str(tmp_path / "landing")
    folder = write_landing_day(landing_url, "2025-01-01", {"part-00000.jsonl": b""})
    os.mkfifo(os.path.join(folder, "part-00001.jsonl"))
    os.makedirs(os.path.join(folder, "events.json.gz"))
    with open(os.path.join(folder, "events.json.gz", "part-0.json"), "wb"):
        pass
    os.makedirs(join(landing_url, "events", "date=2025-01-02"))
    os.mkfifo(join(landing_url, "events", "date=2025-01-02", "part-00000.jsonl"))

    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)

    assert days == ["2025-01-01"]
    skip = _evaluate(landing_sensor, instance, landing_url, cursor).skip_message
    assert skip.endswith("; 1 landing day(s) with files and no _SUCCESS yet: 2025-01-02")


def test_landing_sensor_leaves_days_without_a_partition_pending(instance, tmp_path):
    landing_url = str(tmp_path / "landing")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    _landing_day(landing_url, "2024-12-31")  # before CHURN_START_DATE: ignored
    _landing_day(landing_url, today)  # today's partition does not exist yet
    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == []
    assert load_cursor(cursor) == {}  # no day recorded: today is requested once its partition exists


@contextlib.contextmanager
def _local_time_zone(zone: str):
    """This process's local time zone is ``zone`` (``TZ`` and ``time.tzset()``: a host in that zone), then what it
    was."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_landing_sensor_judges_days_in_utc_on_a_host_in_another_time_zone(tmp_path):
    """Days are UTC's (DESIGN.md) whatever the host's TZ (a laptop in Tokyo, a pod in California). On hosts whose
    date is not UTC's (UTC+14 from 10:00 UTC, UTC-12 until 12:00 UTC: one of them at any time), a tick requests
    UTC's yesterday, leaves UTC's today waiting for its partition, and checks the deadlines up to the day UTC's
    clock has due."""
    if dt.datetime.now(dt.UTC).time() > dt.time(23, 59, 30):  # today stays today while the test runs
        time.sleep(31)
    now, due = _latest_day_past_a_1h_deadline()
    today = now.date()
    yesterday = today - dt.timedelta(days=1)
    sensor = build_landing_sensor(deadline_hours=1)
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        landing_url = str(tmp_path / zone.replace("/", "_"))
        for day in (yesterday, today):
            _landing_day(landing_url, day.isoformat())
        with dg.instance_for_test() as instance, _local_time_zone(zone):
            _finished(instance, (yesterday - dt.timedelta(days=1)).isoformat())  # yesterday's day before: refreshed
            days, _, cursor = _tick(sensor, instance, landing_url, None)
        assert (zone, days, list(load_cursor(cursor))) == (zone, [yesterday.isoformat()], [yesterday.isoformat()])
        assert (zone, json.loads(cursor)["deadlines_checked"]) == (zone, due.isoformat())


def test_landing_sensor_names_landing_folders_that_name_no_day(instance, tmp_path):
    """An exporter writing date=2025-1-5 (no zero padding): that folder is no partition, so it was listed on every
    tick as "waiting for its partition to exist", forever. The days that are days still go."""
    landing_url = str(tmp_path / "landing")
    for day in ("2025-01-01", "2025-1-2", "2025-02-30", "latest"):
        _landing_day(landing_url, day)
    _landing_day(landing_url, "2025-1-3", complete=False)
    days, _, cursor = _tick(landing_sensor, instance, landing_url, None)
    assert days == ["2025-01-01"]
    skip = _evaluate(landing_sensor, instance, landing_url, cursor).skip_message
    assert "date=2025-02-30, date=2025-1-2, date=2025-1-3, date=latest under events/ name no day" in skip
    assert "rename them" in skip and "waiting" not in skip


def test_landing_sensor_bounds_its_cursor_and_its_requests_per_tick(instance, tmp_path):
    landing_url = str(tmp_path / "landing")
    for n in range(1, 6):
        _landing_day(landing_url, f"2025-01-0{n}")
    sensor = build_landing_sensor(max_tracked_days=3, max_requests_per_tick=2)

    days, _, cursor = _tick(sensor, instance, landing_url, None)
    assert days == ["2025-01-01", "2025-01-02"]
    assert _tick(sensor, instance, landing_url, cursor)[0] == []  # 2025-01-03 waits for 2025-01-02's refresh
    _finished(instance, *days)
    days, _, cursor = _tick(sensor, instance, landing_url, cursor)
    assert days == ["2025-01-03", "2025-01-04"]
    _finished(instance, *days)
    days, _, cursor = _tick(sensor, instance, landing_url, cursor)
    assert days == ["2025-01-05"]
    assert sorted(load_cursor(cursor)) == ["2025-01-03", "2025-01-04", "2025-01-05"]
    # Days older than the oldest tracked one are no longer watched once the cursor is full.
    assert _tick(sensor, instance, landing_url, cursor)[0] == []


def test_landing_sensor_run_request_launches_the_daily_refresh_of_that_day(instance, tmp_path):
    landing_url = str(tmp_path / "landing")
    _landing_day(landing_url, "2025-01-01")
    context = dg.build_sensor_context(
        instance=instance, resources=_landing_resources(landing_url), repository_def=REPOSITORY
    )
    (request,) = landing_sensor.evaluate_tick(context).run_requests
    assert request.partition_key == "2025-01-01"
    assert request.tags["churn/landing_version"] == request.run_key.split(":", 1)[1]
    assert landing_sensor.job_name == "daily_refresh"
    assert landing_sensor.minimum_interval_seconds == 60


def test_landing_sensor_on_s3_lists_through_the_configured_endpoint(s3_server):
    # LandingZone reads S3 through s3fs, which takes AWS_ENDPOINT_URL from the environment.
    landing_url = f"s3://landing/endpoint-{uuid.uuid4().hex[:8]}"
    _landing_day(landing_url, "2025-01-05")
    versions = LandingZone(url=landing_url).days()[0]
    assert list(versions) == ["2025-01-05"]
    assert any(key.endswith("date=2025-01-05/_SUCCESS") for key in s3_server.keys("landing", landing_url.removeprefix("s3://landing/")))
    assert filesystem(landing_url).exists(join(landing_url, "events", "date=2025-01-05", "_SUCCESS"))


def test_landing_sensor_names_a_landing_bucket_that_does_not_exist(instance, s3_server):
    """A misspelt bucket in CHURN_LANDING_URL fails the tick naming it, instead of skipping every tick with
    "no new complete landing day" (operations.md: "The landing zone's errors say the same")."""
    landing_url = f"s3://no-such-landing-{uuid.uuid4().hex[:8]}/landing"
    with pytest.raises(Exception, match="bucket 'no-such-landing-.*' does not exist"):
        _tick(landing_sensor, instance, landing_url, None)


# -- drift sensor ---------------------------------------------------------------------------------
def test_overdue_days_are_those_whose_deadline_passed_since_the_last_tick():
    at = lambda day, hour, minute=0: dt.datetime.fromisoformat(f"{day}T{hour:02}:{minute:02}+00:00")  # noqa: E731
    # 6 h after its end: 2025-03-09 is due at 2025-03-10 06:00.
    assert overdue_days(at("2025-03-10", 6), at("2025-03-10", 5, 59), 6) == ["2025-03-09"]
    assert overdue_days(at("2025-03-10", 6, 1), at("2025-03-10", 6), 6) == []  # alerted once, by the tick before
    assert overdue_days(at("2025-03-10", 5, 59), at("2025-03-10", 5, 58), 6) == []
    assert overdue_days(at("2025-03-10", 7), None, 6) == ["2025-03-09"]  # a first tick: the latest day due
    # A daemon down three days: every deadline passed meanwhile, newest first, at most 7.
    assert overdue_days(at("2025-03-10", 7), at("2025-03-07", 7), 6) == ["2025-03-09", "2025-03-08", "2025-03-07"]
    assert len(overdue_days(at("2025-03-30", 7), at("2025-03-07", 7), 6)) == 7
    assert overdue_days(at("2025-03-11", 0), at("2025-03-10", 23), 24) == ["2025-03-09"]


def _latest_day_past_a_1h_deadline() -> tuple[dt.datetime, dt.date]:
    """Now, and the latest day 1 h past its end (due for ``build_landing_sensor(deadline_hours=1)``); first waiting
    out the half minute before the next day's deadline, which would pass while the test runs."""
    if (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).time() > dt.time(23, 59, 30):
        time.sleep(31)
    now = dt.datetime.now(dt.UTC)
    return now, (now - dt.timedelta(hours=1)).date() - dt.timedelta(days=1)


def _daemon_context(
    instance, landing_url: str, webhook_url: str, last_tick: dt.datetime | None, cursor: str | None = None
) -> dg.SensorEvaluationContext:
    """The context the daemon builds: with the time of the sensor's previous tick, which build_sensor_context lacks."""
    return dg.SensorEvaluationContext(
        instance_ref=None, instance=instance, resources=_landing_resources(landing_url, webhook_url), cursor=cursor,
        repository_def=REPOSITORY, last_tick_completion_time=last_tick.timestamp() if last_tick else None,
    )


def test_landing_sensor_posts_a_late_landing_day_once_and_goes_on_requesting(instance, tmp_path, webhook):
    """A day whose export has no _SUCCESS CHURN_LANDING_DEADLINE_HOURS after its end: the sensor kept skipping and
    nothing failed, so nobody heard of it. The tick after its deadline logs it and posts it, once; a complete day is
    requested the same tick, and a webhook that refuses the alert does not stop the requests."""
    handler, url = webhook
    landing_url = str(tmp_path / "landing")
    now, late = _latest_day_past_a_1h_deadline()
    _landing_day(landing_url, (late - dt.timedelta(days=1)).isoformat())
    _landing_day(landing_url, late.isoformat(), complete=False)  # files, no marker
    _finished(instance, (late - dt.timedelta(days=2)).isoformat())  # the day before the complete one: refreshed
    sensor = build_landing_sensor(deadline_hours=1)

    def tick(last_tick: dt.datetime | None, status: int = 200):
        handler.status = status
        return sensor.evaluate_tick(_daemon_context(instance, landing_url, url, last_tick))

    # A first evaluation (no tick before it: the sensor just turned on, `dagster sensor preview`, the UI's "Test
    # sensor") logs the day and posts nothing: a preview must not page anyone.
    preview = dg.build_sensor_context(
        instance=instance, resources=_landing_resources(landing_url, url), repository_def=REPOSITORY
    )
    data = sensor.evaluate_tick(preview)
    assert handler.received == [] and len(data.run_requests) == 1
    assert json.loads(data.cursor)["deadlines_checked"] == late.isoformat()

    data = tick(now - dt.timedelta(days=1))
    assert [r.partition_key for r in data.run_requests] == [(late - dt.timedelta(days=1)).isoformat()]
    ((content_type, alert),) = handler.received
    assert (alert["dagster_event"], alert["partition"], alert["job"], alert["run_id"], alert["app"]) == (
        "LANDING_DAY_LATE", late.isoformat(), "daily_refresh", None, None  # no CHURN_APP: test_apps.py sets one
    )
    assert f"landing day {late} has no _SUCCESS 1 h after its end (CHURN_LANDING_DEADLINE_HOURS)" in alert["error"]
    assert alert["error"].endswith("(it has files: an export that stopped before its marker?)")

    tick(now - dt.timedelta(minutes=1))  # the deadline passed before the previous tick: alerted already
    assert len(handler.received) == 1
    data = tick(now - dt.timedelta(days=1), status=500)  # refused: logged, the requests go on
    assert len(handler.received) == 2 and len(data.run_requests) == 1
    # ... and the day is not checked yet: the next tick, from that cursor, posts it again.
    assert json.loads(data.cursor)["deadlines_checked"] == (late - dt.timedelta(days=1)).isoformat()
    retried = _daemon_context(instance, landing_url, url, now - dt.timedelta(minutes=1), data.cursor)
    handler.status = 200
    assert json.loads(sensor.evaluate_tick(retried).cursor)["deadlines_checked"] == late.isoformat()
    assert [alert["partition"] for _, alert in handler.received] == [late.isoformat()] * 3

    _landing_day(landing_url, late.isoformat())  # delivered: no longer late
    tick(now - dt.timedelta(days=1))
    assert len(handler.received) == 3
    # CHURN_LANDING_DEADLINE_HOURS=off: no alert, where the sensor with a deadline posts one.
    other = str(tmp_path / "other_landing")
    _landing_day(other, late.isoformat(), complete=False)
    checked_before = json.dumps({"deadlines_checked": (late - dt.timedelta(days=1)).isoformat()})
    for deadline, posted in ((None, 3), (1, 4)):
        context = _daemon_context(instance, other, url, now - dt.timedelta(days=1), checked_before)
        build_landing_sensor(deadline_hours=deadline).evaluate_tick(context)
        assert len(handler.received) == posted


def test_a_preview_given_the_stored_cursor_posts_no_late_day(instance, tmp_path, webhook):
    """`dagster sensor preview landing_sensor --cursor …` (what operations.md has you run after a re-delivery) and
    the UI's "Test sensor" (its cursor filled in) evaluate with the stored cursor but no tick before them: they log
    the days past their deadline since the cursor's and post none of them. Posted, they paged someone for a trial
    that stores nothing, and the daemon's next tick posted the same days again."""
    handler, url = webhook
    landing_url = str(tmp_path / "landing")
    now, late = _latest_day_past_a_1h_deadline()
    _landing_day(landing_url, late.isoformat(), complete=False)
    stored = json.dumps({"deadlines_checked": (late - dt.timedelta(days=3)).isoformat()})
    sensor = build_landing_sensor(deadline_hours=1)
    preview = dg.build_sensor_context(
        instance=instance, cursor=stored, resources=_landing_resources(landing_url, url), repository_def=REPOSITORY
    )
    sensor.evaluate_tick(preview)
    assert handler.received == []
    # The daemon's tick from the same cursor (a tick before it) posts the three days.
    sensor.evaluate_tick(_daemon_context(instance, landing_url, url, now - dt.timedelta(minutes=1), stored))
    assert [alert["partition"] for _, alert in handler.received] == [
        (late - dt.timedelta(days=n)).isoformat() for n in range(3)
    ]


def test_landing_sensor_posts_a_late_day_once_across_a_failed_tick_and_a_tick_astride_its_deadline(
    instance, tmp_path, webhook, s3_server
):
    """Dagster gives a tick the start of the tick before it, also of one that failed. A deadline passing while the
    landing zone was unreachable was never posted (the tick after the outage looked from the failed tick on), and
    one passing between a tick's start and its evaluation was posted by that tick and again by the next."""
    handler, url = webhook
    landing_url = str(tmp_path / "landing")
    now, late = _latest_day_past_a_1h_deadline()
    deadline = deadline_of(late.isoformat(), 1)
    sensor = build_landing_sensor(deadline_hours=1)
    # The cursor of a tick before the deadline: the day before is checked.
    before = json.dumps({"deadlines_checked": (late - dt.timedelta(days=1)).isoformat()})

    def tick(cursor: str | None, last_tick: dt.datetime, landing: str = landing_url):
        return sensor.evaluate_tick(_daemon_context(instance, landing, url, last_tick, cursor))

    # The landing zone unreachable across the deadline: the tick fails, and stores no cursor.
    with pytest.raises(Exception, match="does not exist"):
        tick(before, deadline - dt.timedelta(minutes=1), f"s3://no-such-landing-{uuid.uuid4().hex[:8]}/landing")
    data = tick(before, deadline + dt.timedelta(seconds=30))  # Dagster's time: the failed tick's start
    assert [alert["partition"] for _, alert in handler.received] == [late.isoformat()]

    # A tick started a second before the deadline and evaluated after it posted the day; the next one, given
    # that start, does not post it again.
    tick(data.cursor, deadline - dt.timedelta(seconds=1))
    assert len(handler.received) == 1


def test_the_landing_deadline_setting():
    assert ChurnSettings.from_env({}).landing_deadline_hours == 6
    assert ChurnSettings.from_env({"CHURN_LANDING_DEADLINE_HOURS": "off"}).landing_deadline_hours is None
    assert ChurnSettings.from_env({"CHURN_LANDING_DEADLINE_HOURS": "30"}).landing_deadline_hours == 30
    for bad, says in (("0", "must be at least 1"), ("49", "must be at most 48"), ("6h", "is not a whole number")):
        with pytest.raises(ValueError, match=f"CHURN_LANDING_DEADLINE_HOURS.*{says}"):
            ChurnSettings.from_env({"CHURN_LANDING_DEADLINE_HOURS": bad})


def _drift_report(instance, day: str, share: float, too_few_rows: bool = False) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "drift_report",
            partition=day,
            metadata={
                "share_of_drifted_columns": share,
                "dataset_drift": share >= 0.5 and not too_few_rows,
                "too_few_rows": too_few_rows,
            },
        )
    )


def _drift_tick(sensor, instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=REPOSITORY)
    data = sensor.evaluate_tick(context)
    return [r.partition_key for r in data.run_requests or []], data.cursor or cursor, data.skip_message


def test_drift_sensor_requests_retraining_once_per_cooldown(instance):
    sensor = build_drift_retraining_sensor(threshold=0.5, cooldown=dt.timedelta(days=7))
    assert sensor.job_name == "monthly_retraining"

    _drift_report(instance, "2025-03-02", 0.2)
    months, cursor, skip = _drift_tick(sensor, instance, None)
    assert months == [] and "none at or over 0.5" in skip

    _drift_report(instance, "2025-03-09", 0.6)
    months, cursor, _ = _drift_tick(sensor, instance, cursor)
    assert months == ["2025-03"]

    _drift_report(instance, "2025-04-06", 0.9)
    months, cursor, skip = _drift_tick(sensor, instance, cursor)
    assert months == [] and skip.endswith("within the cool-down of 7 days")  # as people say it, not "7 days, 0:00:00"
    assert _drift_tick(sensor, instance, cursor)[0] == []  # the suppressed report is not retried later

    # Eight days later (the cursor holds the time of the last request).
    state = json.loads(cursor)
    state["last_request"] -= dt.timedelta(days=8).total_seconds()
    _drift_report(instance, "2025-04-13", 0.7)
    months, cursor, _ = _drift_tick(sensor, instance, json.dumps(state))
    assert months == ["2025-04"]


def test_drift_sensor_takes_the_latest_day_of_a_batch_and_honours_the_threshold(instance):
    sensor = build_drift_retraining_sensor(threshold=0.75, cooldown=dt.timedelta(days=7))
    _drift_report(instance, "2025-02-23", 0.8)
    _drift_report(instance, "2025-03-02", 0.7)  # under this sensor's threshold
    _drift_report(instance, "2025-03-01", 0.9)
    months, cursor, _ = _drift_tick(sensor, instance, None)
    assert months == ["2025-03"]
    context = dg.build_sensor_context(instance=instance, repository_def=REPOSITORY)
    (request,) = sensor.evaluate_tick(context).run_requests
    assert request.tags["churn/drift_day"] == "2025-03-01"


def test_drift_sensor_passes_over_reports_of_too_few_users(instance):
    """A day of a few users (under CHURN_DRIFT_MIN_ROWS) has most columns drifted by chance: its report is not
    counted, whatever its share, and the skip says so; a later day of enough users that drifted is."""
    sensor = build_drift_retraining_sensor(threshold=0.5, cooldown=dt.timedelta(days=7))
    _drift_report(instance, "2025-03-09", 0.96, too_few_rows=True)
    _drift_report(instance, "2025-03-02", 0.1)
    months, cursor, skip = _drift_tick(sensor, instance, None)
    assert months == []
    assert skip == (
        "2 new drift report(s), none at or over 0.5 (1 of too few users to conclude, under CHURN_DRIFT_MIN_ROWS, "
        "passed over whatever their share)"
    )
    _drift_report(instance, "2025-03-16", 0.6)
    assert _drift_tick(sensor, instance, cursor)[0] == ["2025-03"]


def _latest_drift_report_id(instance) -> int:
    records = instance.fetch_materializations(dg.AssetKey("drift_report"), limit=1, ascending=False).records
    return records[0].storage_id


def test_drift_sensor_retrains_at_the_threshold_under_a_run_key_per_report(instance):
    """A share equal to the threshold reaches it ("at least"). The run key names the report's storage id: a
    second report of the same day, after the cool-down, is a new run, not one Dagster drops as a duplicate."""
    sensor = build_drift_retraining_sensor(threshold=0.5, cooldown=dt.timedelta(days=7))
    _drift_report(instance, "2025-03-09", 0.5)
    first_id = _latest_drift_report_id(instance)
    context = dg.build_sensor_context(instance=instance, repository_def=REPOSITORY)
    data = sensor.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests] == ["2025-03"], data.skip_message
    assert data.run_requests[0].run_key == f"drift:2025-03-09:{first_id}"

    # The same day reported again, eight days later: requested again, under another run key.
    state = json.loads(data.cursor)
    state["last_request"] -= dt.timedelta(days=8).total_seconds()
    _drift_report(instance, "2025-03-09", 0.6)
    second_id = _latest_drift_report_id(instance)
    context = dg.build_sensor_context(instance=instance, cursor=json.dumps(state), repository_def=REPOSITORY)
    (again,) = sensor.evaluate_tick(context).run_requests
    assert second_id != first_id
    assert again.partition_key == "2025-03" and again.run_key == f"drift:2025-03-09:{second_id}"


def test_drift_sensor_over_a_backlog_retrains_the_current_month_and_reads_past_it(instance):
    sensor = build_drift_retraining_sensor(threshold=0.5, cooldown=dt.timedelta(days=7), reports_per_tick=5)
    # Twelve weekly reports already in the event log when the sensor is turned on, more than it reads per
    # tick: one old month drifted, and the last two weeks drift now.
    days = [dt.date(2025, 1, 5) + dt.timedelta(weeks=i) for i in range(12)]
    for day in days:
        drifted = day == dt.date(2025, 1, 12) or day >= dt.date(2025, 3, 16)
        _drift_report(instance, day.isoformat(), 0.8 if drifted else 0.1)

    context = dg.build_sensor_context(instance=instance, repository_def=REPOSITORY)
    data = sensor.evaluate_tick(context)
    (request,) = data.run_requests
    assert request.partition_key == "2025-03" and request.tags["churn/drift_day"] == "2025-03-23"

    # The cursor is past every report, the passed-over backlog included: nothing of January comes back.
    months, cursor, skip = _drift_tick(sensor, instance, data.cursor)
    assert months == [] and skip == "no new drift report"
    _drift_report(instance, "2025-03-30", 0.1)
    months, cursor, skip = _drift_tick(sensor, instance, cursor)
    assert months == [] and skip == "1 new drift report(s), none at or over 0.5"


# -- run failure alert ------------------------------------------------------------------------------
def _failed_user_daily_run(instance, local_resources) -> dg.ExecuteInProcessResult:
    """user_daily of a day whose raw_events were never materialized: a real failure, no retries."""
    result = dg.materialize(
        INGEST, resources=local_resources, instance=instance, partition_key="2025-01-03",
        selection="user_daily", raise_on_error=False,
    )
    assert not result.success
    return result


def _failure_tick(instance, resources, cursor):
    """One tick; returns its cursor and the errors the sensor reported back to the failed runs."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, repository_def=REPOSITORY
    )
    data = run_failure_alert.evaluate_tick(context)
    errors = [r.error.to_string() for r in data.dagster_run_reactions or [] if r.error is not None]
    return data.cursor or cursor, errors


def test_run_failure_alert_posts_to_the_webhook(instance, local_resources, webhook):
    handler, url = webhook
    resources = {"alerts": AlertWebhook(url=url)}
    cursor, _ = _failure_tick(instance, resources, None)  # the first tick starts watching from now

    result = _failed_user_daily_run(instance, local_resources)
    _, errors = _failure_tick(instance, resources, cursor)
    assert errors == []

    ((content_type, alert),) = handler.received
    assert content_type == "application/json"
    assert alert["app"] is None  # no CHURN_APP (test_apps.py sets one)
    assert alert["run_id"] == result.run_id
    assert alert["job"] == result.job_def.name
    assert alert["partition"] == "2025-01-03"
    assert alert["failed_steps"] == ["user_daily"]
    assert "MissingPartitionError" in alert["error"] and "install_times has no stored partition" in alert["error"]


def test_run_failure_alert_posts_to_the_webhook_of_the_environment(instance, local_resources, webhook, monkeypatch):
    """CHURN_ALERT_WEBHOOK reaches the alerts resource as a dg.EnvVar (what the UI shows is the variable's name,
    test_webserver.py), with the spaces an env file may leave around it, and alerts are posted to it."""
    handler, url = webhook
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK", f" {url} ")
    settings = ChurnSettings.from_env()
    assert settings.alert_webhook == url and settings.alert_webhook_from_env
    resources = {"alerts": build_resources(settings)["alerts"]}
    assert resources["alerts"].url == dg.EnvVar("CHURN_ALERT_WEBHOOK")
    cursor, _ = _failure_tick(instance, resources, None)
    result = _failed_user_daily_run(instance, local_resources)
    _, errors = _failure_tick(instance, resources, cursor)
    assert errors == []
    ((_, alert),) = handler.received
    assert alert["run_id"] == result.run_id


def test_a_webhook_given_in_code_is_posted_to_as_it_is():
    """Settings built from a mapping (a test's, or another deployment tool's) are not the process's variables:
    the alerts resource gets the URL itself, not a dg.EnvVar the process may not have, which lost every alert."""
    settings = ChurnSettings.from_env({"CHURN_ALERT_WEBHOOK": " http://hooks.example.com/T0/B0/SECRET "})
    assert settings.alert_webhook == "http://hooks.example.com/T0/B0/SECRET" and not settings.alert_webhook_from_env
    alerts = build_resources(settings)["alerts"]
    assert alerts.url == "http://hooks.example.com/T0/B0/SECRET" and alerts.enabled


def test_run_failure_alert_without_webhook_only_logs(instance, local_resources, webhook):
    handler, _ = webhook
    resources = {"alerts": AlertWebhook(url=None)}
    cursor, _ = _failure_tick(instance, resources, None)
    _failed_user_daily_run(instance, local_resources)
    _, errors = _failure_tick(instance, resources, cursor)
    assert errors == [] and handler.received == []


def test_run_failure_alert_fails_its_tick_when_the_webhook_refuses(instance, local_resources, webhook):
    handler, url = webhook
    handler.status = 500
    resources = {"alerts": AlertWebhook(url=f"{url}/T0123/B0123/SECRET-TOKEN")}
    cursor, _ = _failure_tick(instance, resources, None)
    _failed_user_daily_run(instance, local_resources)
    # The error is reported back to the failed run (and shown on the sensor's tick by the daemon), naming the
    # webhook's host, not its path: the path is the token anyone reading the tick could post with.
    _, (error,) = _failure_tick(instance, resources, cursor)
    assert "posting the alert to http://127.0.0.1:" in error and "HTTP Error 500" in error
    assert "SECRET-TOKEN" not in error
    assert len(handler.received) == 1


def test_a_webhook_url_urllib_refuses_is_not_quoted(instance, local_resources, webhook):
    """http.client refuses a URL with a space in it, quoting the URL (token and all) in its message."""
    _, url = webhook
    resources = {"alerts": AlertWebhook(url=f"{url}/SECRET TOKEN")}
    cursor, _ = _failure_tick(instance, resources, None)
    _failed_user_daily_run(instance, local_resources)
    _, (error,) = _failure_tick(instance, resources, cursor)
    assert "urllib cannot post to that URL (InvalidURL); check CHURN_ALERT_WEBHOOK" in error
    assert "SECRET" not in error


def test_the_code_location_reads_the_webhook_from_its_variable(instance, local_settings, local_resources, webhook,
                                                               monkeypatch):
    """The URL reaches the resource through dg.EnvVar: what the UI's resource page shows (the repository's
    snapshot) names the variable, not the URL, and the sensor still posts to it."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    handler, url = webhook
    secret_url = f"{url}/T0123/B0123/SECRET-TOKEN"
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK", secret_url)
    monkeypatch.setenv("CHURN_DATA_URL", local_settings.data_url)
    settings = ChurnSettings.from_env()  # the process's variables, as the code location reads them
    resources = build_resources(settings)
    snapshot = RepositorySnap.from_def(dg.Definitions(resources=resources).get_repository_def())
    assert "SECRET-TOKEN" not in repr(snapshot)
    (alerts,) = [r for r in snapshot.resources if r.name == "alerts"]
    assert "CHURN_ALERT_WEBHOOK" in repr(alerts.configured_values["url"])

    cursor, _ = _failure_tick(instance, resources, None)
    _failed_user_daily_run(instance, local_resources)
    _, errors = _failure_tick(instance, resources, cursor)
    assert errors == [] and len(handler.received) == 1


def test_run_failure_alert_names_the_unreadable_landing_file(instance, local_settings, local_resources, webhook):
    handler, url = webhook
    resources = {"alerts": AlertWebhook(url=url)}
    cursor, _ = _failure_tick(instance, resources, None)
    truncated = gzip.compress(jsonl([amplitude_row("e1", "u1", "2025-01-01 10:00:00.000000")]), mtime=0)[:-12]
    write_landing_day(local_settings.landing_url, "2025-01-01", {"part-1.jsonl.gz": truncated})
    result = dg.materialize(
        INGEST, resources=local_resources, instance=instance, partition_key="2025-01-01",
        selection="raw_events", raise_on_error=False,
    )
    assert not result.success
    _failure_tick(instance, resources, cursor)

    ((_, alert),) = handler.received
    assert alert["failed_steps"] == ["raw_events"]
    assert "cannot read landing file" in alert["error"] and "part-1.jsonl.gz" in alert["error"]
    assert "truncated gzip stream" in alert["error"]
    assert "caused by" not in alert["error"]  # the message already says what gzip said


def test_run_failure_alert_says_which_partition_failed_a_blocking_check_and_why(
    instance, local_settings, local_resources, webhook
):
    """A blocking check failed for one day of a range: Dagster's error names only the check ("1 blocking
    asset check failed … raw_events: raw_events_are_valid"); the alert adds the failed day and why."""
    handler, url = webhook
    resources = {"alerts": AlertWebhook(url=url)}
    cursor, _ = _failure_tick(instance, resources, None)
    good = [amplitude_row(f"g{i}", f"u{i}", "2025-01-01 10:00:00.000000") for i in range(3)]
    write_landing_day(local_settings.landing_url, "2025-01-01", {"part-0.jsonl": jsonl(good)})
    broken = [amplitude_row(f"b{i}", f"u{i}", "01/02/2025 10:00") for i in range(4)]  # month first: quarantined
    write_landing_day(local_settings.landing_url, "2025-01-02", {"part-0.jsonl": jsonl(good[:1] + broken)})
    result = materialize_ingest(local_resources, instance, "2025-01-01", "2025-01-02", raise_on_error=False)
    assert not result.success
    _failure_tick(instance, resources, cursor)

    ((_, alert),) = handler.received
    assert alert["partition"] == "2025-01-01...2025-01-02"
    assert alert["failed_steps"] == ["raw_events_are_valid"]
    assert "blocking asset check failed" in alert["error"]
    assert "raw_events_are_valid[2025-01-02]: failed: days_mostly_quarantined = 1" in alert["error"]
    assert "2025-01-01]" not in alert["error"]  # the day that passed is not named


@pytest.mark.parametrize("failed", [3, 4])
def test_run_failure_alert_names_only_the_failed_checks_of_the_failed_step_and_counts_the_rest(
    instance, webhook, failed
):
    """The failed step's blocking checks failed four times: the alert names the first three and says how many
    more (three times: it names them all, and says no more); a non-blocking check that failed in another step
    of the run is not this failure, and is not named."""
    handler, url = webhook
    resources = {"alerts": AlertWebhook(url=url)}
    cursor, _ = _failure_tick(instance, resources, None)

    @dg.asset
    def orders() -> int:
        return 1

    @dg.asset
    def refunds() -> int:
        return 1

    names = ["orders_a", "orders_b", "orders_c", "orders_d"][:failed]

    @dg.multi_asset_check(specs=[dg.AssetCheckSpec(n, asset=orders, blocking=True) for n in names])
    def orders_checks():
        for n in names:
            yield dg.AssetCheckResult(asset_key=orders.key, check_name=n, passed=False, description=f"{n} is off")

    @dg.asset_check(asset=refunds, blocking=False)
    def refunds_unrelated() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, description="refunds_unrelated is off")

    result = dg.materialize([orders, refunds, orders_checks, refunds_unrelated], instance=instance,
                            raise_on_error=False)
    assert not result.success
    _failure_tick(instance, resources, cursor)

    ((_, alert),) = handler.received
    assert alert["failed_steps"] == ["orders_checks"]
    more = "; and 1 more" if failed == 4 else ""
    assert f"orders_a: orders_a is off; orders_b: orders_b is off; orders_c: orders_c is off{more})" in alert["error"]
    assert "orders_d is off" not in alert["error"]
    assert "refunds_unrelated" not in alert["error"]


def test_run_failure_alert_names_the_first_failed_step_or_the_runs_own_failure(instance, webhook):
    """Two steps failed: the alert's error is the first one's, the step it lists first. A run that failed
    with no step failing (its worker crashed): the run's own failure message, not a generic one."""
    handler, url = webhook
    resources = {"alerts": AlertWebhook(url=url)}
    cursor, _ = _failure_tick(instance, resources, None)

    def failing(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def fails() -> None:
            raise ValueError(f"{name} broke")

        return fails

    dg.materialize([failing("first"), failing("second")], instance=instance, raise_on_error=False)
    cursor, _ = _failure_tick(instance, resources, cursor)
    ((_, alert),) = handler.received
    assert sorted(alert["failed_steps"]) == ["first", "second"]
    assert alert["error"] == f"ValueError: {alert['failed_steps'][0]} broke"

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def crashed() -> None:
        noop()

    run = instance.create_run_for_job(crashed, status=dg.DagsterRunStatus.STARTED)
    instance.report_run_failed(run, "run worker exited unexpectedly (OOM killed)")
    _failure_tick(instance, resources, cursor)
    alert = handler.received[-1][1]
    assert (alert["run_id"], alert["failed_steps"]) == (run.run_id, [])
    assert "run worker exited unexpectedly (OOM killed)" in alert["error"]


def test_step_error_adds_the_innermost_cause_only_when_it_says_more(instance):
    @dg.asset
    def unreadable() -> None:
        try:
            raise ValueError("bad magic number")
        except ValueError as exc:
            raise dg.Failure("model[2025-03] cannot be loaded", allow_retries=False) from exc

    @dg.asset
    def wrapped() -> None:
        raise KeyError("platform")

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
    def retried() -> None:
        raise ConnectionError("S3 unreachable at http://127.0.0.1:1")

    result = dg.materialize([unreadable, wrapped, retried], instance=instance, raise_on_error=False)
    errors = {
        event.step_key: step_error(event.step_failure_data.error)
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    }
    assert errors["unreadable"] == (
        "Failure: model[2025-03] cannot be loaded "
        "(caused by ValueError: bad magic number)"
    )
    assert errors["wrapped"] == "KeyError: 'platform'"  # not Dagster's "Error occurred while executing op"
    # After its retries, the step's own error, not Dagster's "Exceeded max_retries of 1".
    assert errors["retried"] == "ConnectionError: S3 unreachable at http://127.0.0.1:1"
