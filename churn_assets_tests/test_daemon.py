"""The daemon: ``dagster-daemon run`` on a temp instance with the landing sensor turned on; a landing day
dropped while it runs becomes a successful daily_refresh run, queued and launched like in production; a run
of the CLI that fails is posted to the alert webhook. And the daily_refresh schedule's first tick after an outage
(its ticks backdated) while a backfill is queued or under way; the weekly_scoring tick that finds the Sunday's refresh
queued in the serial lane, and whose run the daemon starts after it."""

import datetime as dt
import json
import subprocess
import time

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorStatus

from churn_assets.automation.sensors.landing_sensor import load_cursor, overdue_days
from churn_assets.partitions import daily_partitions
from churn_assets.resources.lake import Lake
from churn_assets_tests.dagster_processes import (
    ROOT,
    DagsterProcess,
    backdate_schedule,
    executable,
    instance_home,
    run_env,
    wait_until,
)
from churn_assets_tests.landing_helpers import amplitude_row, jsonl, write_landing_day

pytestmark = pytest.mark.slow

DAY = daily_partitions.start.strftime("%Y-%m-%d")
REFRESHED = ("raw_events", "install_times", "user_daily", "features", "labels")


def _landing_day(landing_url: str, day: str = DAY) -> None:
    rows = [
        amplitude_row(f"e{i}", f"u{i % 4}", f"{day} {i:02d}:00:00.000000",
                      event_type="session_start" if i % 2 else "screen_view", session_id=1735689600000 + i)
        for i in range(12)
    ]
    write_landing_day(landing_url, day, {"part-00000.jsonl": jsonl(rows)})


def _start_from_the_cli(kind: str, name: str, env: dict, tmp_path) -> None:
    """``dagster sensor|schedule start NAME``, as an operator turns one on."""
    started = DagsterProcess(
        [executable("dagster"), kind, "start", name, "-w", str(ROOT / "workspace.yaml")], env, tmp_path / "start.log"
    )
    try:
        started.process.wait(timeout=60)
        assert started.process.returncode == 0, started.log()
    finally:
        started.stop()  # (still running when it timed out)


def _sensor_state(instance: dg.DagsterInstance, name: str):
    return next((s for s in instance.all_instigator_state() if s.instigator_name == name), None)


def test_daemon_refreshes_a_day_that_lands_while_it_runs(tmp_path, webhook):
    home = instance_home(tmp_path / "dagster_home", create_storage=True)
    lake_url, landing_url = str(tmp_path / "lake"), str(tmp_path / "landing")
    received, webhook_url = webhook
    env = run_env(
        home, CHURN_DATA_URL=lake_url, CHURN_LANDING_URL=landing_url, CHURN_LANDING_SENSOR_INTERVAL="2",
        CHURN_ALERT_WEBHOOK=webhook_url,
    )
    workspace = str(ROOT / "workspace.yaml")

    # Turned on the way an operator does it; the state lives in the instance, not in the code.
    _start_from_the_cli("sensor", "landing_sensor", env, tmp_path)
    # As if it had run before: its last tick checked the export deadlines up to the day before the latest one due,
    # so its first tick here posts that day (a sensor turned on for the first time posts nothing at once).
    first_late = overdue_days(dt.datetime.now(dt.UTC), None, 6)[0]
    checked = (dt.date.fromisoformat(first_late) - dt.timedelta(days=1)).isoformat()
    cursor = subprocess.run(
        [executable("dagster"), "sensor", "cursor", "landing_sensor", "--set",
         json.dumps({"deadlines_checked": checked}), "-w", str(ROOT / "workspace.yaml")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert cursor.returncode == 0, cursor.stdout + cursor.stderr

    daemon = DagsterProcess([executable("dagster-daemon"), "run", "-w", workspace], env, tmp_path / "daemon.log")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            state = _sensor_state(instance, "landing_sensor")
            assert state is not None and state.status == InstigatorStatus.RUNNING

            # The sensor ticks (and finds nothing) before the day lands.
            wait_until(lambda: instance.get_ticks(state.instigator_origin_id, state.selector_id),
                       45, "the first landing_sensor tick", daemon)
            assert not instance.get_runs()
            _landing_day(landing_url)

            def finished_run():
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": DAY}))
                done = [r for r in runs if r.is_finished]
                return done[0] if done else None

            run = wait_until(finished_run, 60, f"the daily_refresh run of {DAY}", daemon, interval=0.5)
            assert run.status == dg.DagsterRunStatus.SUCCESS, daemon.log()
            assert run.job_name == "daily_refresh"
            assert run.tags["dagster/sensor_name"] == "landing_sensor"
            assert run.tags["dagster/run_key"].startswith(f"{DAY}:")
            assert run.tags["churn/serial"] == "daily_refresh"

            lake = Lake(lake_url)
            for asset in REFRESHED:
                assert lake.exists(lake.table_url(asset, "date", DAY)), asset
                assert instance.get_latest_materialization_event(dg.AssetKey(asset)).run_id == run.run_id

            # The cursor is stored in the instance: a restarted daemon would not request the day again.
            cursor = load_cursor(_sensor_state(instance, "landing_sensor").instigator_data.cursor)
            assert list(cursor) == [DAY]
            assert len(instance.get_runs()) == 1

            # A backfill from the CLI belongs to no code location; run_failure_alert, running by default,
            # still posts its failure (a day that never landed).
            missing = "2025-01-05"
            cli = subprocess.run(
                [executable("dagster"), "asset", "materialize", "-m", "churn_assets.definitions",
                 "--select", "raw_events", "--partition", missing],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
            )
            assert cli.returncode != 0 and "no landing folder for 2025-01-05" in cli.stdout + cli.stderr

            def alerts(late: bool) -> list[dict]:
                return [a for _, a in received.received if (a["dagster_event"] == "LANDING_DAY_LATE") == late]

            wait_until(lambda: alerts(late=False), 90, "the failure alert of the CLI run", daemon, interval=0.5)
            (alert,) = alerts(late=False)
            assert alert["partition"] == missing and alert["failed_steps"] == ["raw_events"]
            assert "no landing folder for 2025-01-05" in alert["error"]
            # The landing zone holds no export of the days before today: the latest day past its deadline (6 h
            # after its end) was posted as late once, over the sensor's many ticks (one more if a deadline passed).
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
            assert len(ticks) >= 5
            late = [a["partition"] for a in alerts(late=True)]
            assert late in ([first_late], [first_late, overdue_days(dt.datetime.now(dt.UTC), None, 6)[0]])
    finally:
        daemon.stop()


def _daily_refresh_after_an_outage(tmp_path, prepare) -> tuple[dg.DagsterInstance, object, str]:
    """daily_refresh started from the CLI, ``prepare(instance, env, day)`` run (``day(1)`` is the tick's yesterday),
    the schedule backdated three ticks, and the daemon started until it evaluated the latest tick it missed."""
    home = instance_home(tmp_path / "dagster_home", create_storage=True)
    env = run_env(home, CHURN_DATA_URL=str(tmp_path / "lake"), CHURN_LANDING_URL=str(tmp_path / "landing"))
    workspace = str(ROOT / "workspace.yaml")
    _start_from_the_cli("schedule", "daily_refresh", env, tmp_path)

    now = dt.datetime.now(dt.UTC)
    tick = now.replace(hour=2, minute=0, second=0, microsecond=0) - dt.timedelta(days=0 if now.hour >= 2 else 1)
    day = lambda n: (tick.date() - dt.timedelta(days=n)).isoformat()  # noqa: E731 - day(1) is the tick's yesterday
    instance = dg.DagsterInstance.from_config(str(home))
    prepare(instance, env, day)
    backdate_schedule(instance, "daily_refresh", tick - dt.timedelta(days=3))
    state = _sensor_state(instance, "daily_refresh")

    def evaluated():
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        return next((t for t in ticks if t.timestamp == tick.timestamp() and t.is_completed), None)

    daemon = DagsterProcess([executable("dagster-daemon"), "run", "-w", workspace], env, tmp_path / "daemon.log")
    try:
        evaluated_tick = wait_until(evaluated, 45, "the daily_refresh tick after the outage", daemon)
    finally:
        daemon.stop()
    return instance, evaluated_tick, day(1)


def test_daemon_daily_refresh_waits_for_a_backfill_launched_from_the_ui(tmp_path):
    """A backfill of the daily assets launched from the UI refreshes the days before yesterday in runs of its own,
    outside daily_refresh's serial lane. The daemon's first tick after an outage asked for those days again in a
    range run; it now waits for them, and no daily_refresh run is queued."""
    from dagster._core.execution.backfill import PartitionBackfill

    from churn_assets.definitions import defs

    def prepare(instance, env, day):
        instance.report_runless_asset_event(dg.AssetMaterialization("install_times", partition=day(5)))
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id="fromtheui", asset_graph=defs.get_repository_def().asset_graph,
            partition_names=[day(4), day(3), day(2)], asset_selection=[dg.AssetKey(a) for a in REFRESHED],
            backfill_timestamp=dt.datetime.now(dt.UTC).timestamp(), dynamic_partitions_store=instance,
            all_partitions=False, tags={}, title=None, description=None, run_config=None,
        ))

    instance, tick, yesterday = _daily_refresh_after_an_outage(tmp_path, prepare)
    with instance:
        assert tick.status.value == "SKIPPED", tick.run_keys
        day_before = (dt.date.fromisoformat(yesterday) - dt.timedelta(days=1)).isoformat()
        assert f"install_times[{day_before}] is being refreshed by backfill fromtheui" in tick.skip_reason
        assert not instance.get_runs(dg.RunsFilter(job_name="daily_refresh"))


def test_daemon_daily_refresh_does_not_queue_a_yesterday_already_queued(tmp_path):
    """`dagster job backfill -j daily_refresh … --to YESTERDAY` run while the daemon was down queues its days in the
    serial lane; the daemon's first tick queued yesterday again, behind them, and it was refreshed twice."""

    def prepare(instance, env, day):
        instance.report_runless_asset_event(dg.AssetMaterialization("install_times", partition=day(3)))
        backfill = subprocess.run(
            [executable("dagster"), "job", "backfill", "-j", "daily_refresh", "--from", day(2), "--to", day(1),
             "-w", str(ROOT / "workspace.yaml"), "--noprompt"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        queued = instance.get_runs(dg.RunsFilter(job_name="daily_refresh", statuses=[dg.DagsterRunStatus.QUEUED]))
        assert {run.tags["dagster/partition"] for run in queued} == {day(2), day(1)}

    instance, tick, yesterday = _daily_refresh_after_an_outage(tmp_path, prepare)
    with instance:
        assert tick.status.value == "SKIPPED", tick.run_keys
        assert tick.skip_reason.startswith(f"{yesterday} is already queued or running")
        assert len(instance.get_runs(dg.RunsFilter(job_name="daily_refresh"))) == 2


def test_daemon_starts_weekly_scoring_after_the_sundays_refresh_queued_in_its_lane(tmp_path):
    """The Monday tick finds the Sunday's daily_refresh run queued in the serial lane (behind a run of the day before,
    still running): it asks for the Sunday at once, tagged into the lane, and the daemon's queue (first in, first out,
    one run of the lane at a time) starts the scoring run only once the refresh has finished, features[Sunday] stored.
    The instance starts on the Sunday and holds no model file (a model of the month is only recorded), so the
    scoring run then fails on loading it: the order is what is checked here, not the scores."""
    tick = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    while tick.weekday() != 0 or tick.hour < 3:  # the latest tick of weekly_scoring (Mondays, 03:00-23:00)
        tick -= dt.timedelta(hours=1)
    sunday = (tick.date() - dt.timedelta(days=1)).isoformat()

    home = instance_home(tmp_path / "dagster_home", create_storage=True)
    lake_url, landing_url = str(tmp_path / "lake"), str(tmp_path / "landing")
    env = run_env(home, CHURN_DATA_URL=lake_url, CHURN_LANDING_URL=landing_url, CHURN_START_DATE=sunday)
    workspace = str(ROOT / "workspace.yaml")
    _landing_day(landing_url, sunday)
    _start_from_the_cli("schedule", "weekly_scoring", env, tmp_path)

    instance = dg.DagsterInstance.from_config(str(home))
    with instance:
        # The lane is busy (a run record standing for a refresh of the day before, with no process): the Sunday's
        # refresh, queued by `dagster job backfill`, waits behind it.
        before = dg.DagsterRun(job_name="daily_refresh", status=dg.DagsterRunStatus.STARTED,
                               tags={"churn/serial": "daily_refresh"})
        instance.add_run(before)
        queued = subprocess.run(
            [executable("dagster"), "job", "backfill", "-j", "daily_refresh", "--partitions", sunday,
             "-w", workspace, "--noprompt"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert queued.returncode == 0, queued.stdout + queued.stderr
        (refresh,) = instance.get_runs(dg.RunsFilter(job_name="daily_refresh", statuses=[dg.DagsterRunStatus.QUEUED]))
        month = sunday[:7]
        instance.report_runless_asset_event(dg.AssetMaterialization("model", partition=month))
        backdate_schedule(instance, "weekly_scoring", tick - dt.timedelta(hours=1))

        daemon = DagsterProcess([executable("dagster-daemon"), "run", "-w", workspace], env, tmp_path / "daemon.log")
        try:
            submitted = dg.RunsFilter(job_name="weekly_scoring", statuses=[dg.DagsterRunStatus.QUEUED])
            (scoring,) = wait_until(lambda: instance.get_runs(submitted), 45, "the weekly_scoring run", daemon)
            assert scoring.tags["dagster/partition"] == sunday
            assert scoring.tags["churn/serial"] == "daily_refresh"
            time.sleep(3)  # a few iterations of the run queue: both wait in the lane
            assert instance.get_run_by_id(refresh.run_id).status == dg.DagsterRunStatus.QUEUED
            assert instance.get_run_by_id(scoring.run_id).status == dg.DagsterRunStatus.QUEUED

            instance.report_run_canceled(before)  # the day before is done: the lane opens
            finished = lambda run_id: (r := instance.get_run_by_id(run_id)).is_finished and r  # noqa: E731
            refreshed = wait_until(lambda: finished(refresh.run_id), 60, "the Sunday's refresh", daemon, interval=0.5)
            assert refreshed.status == dg.DagsterRunStatus.SUCCESS, daemon.log()
            scored = wait_until(lambda: finished(scoring.run_id), 60, "the scoring run", daemon, interval=0.5)
        finally:
            daemon.stop()

        refresh_record, scoring_record = (
            instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))[0] for run_id in (refresh.run_id, scored.run_id)
        )
        assert scoring_record.start_time >= refresh_record.end_time
        assert instance.get_latest_materialization_event(dg.AssetKey("features")).run_id == refresh.run_id
        lake = Lake(lake_url)
        assert lake.exists(lake.table_url("features", "date", sunday))
        # It found the Sunday's features; what it lacks is the model file.
        assert scored.status == dg.DagsterRunStatus.FAILURE
        failures = [e.dagster_event.step_failure_data.error for e in instance.all_logs(
            scored.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
        assert failures and all(f"model has no stored partition {month}" in e.cause.message for e in failures)


def test_a_backfill_run_terminated_while_raw_events_writes_is_canceled_not_retried(tmp_path):
    """Terminating a UI backfill's run (the backfill's *Cancel*, the run's *Terminate*) while raw_events wrote its
    range interrupted the step, which its retry policy (meant for an unreachable store) turned into a retry: the
    run wrote the whole range again and ended a success. It now ends canceled, the days it stored recorded."""
    from dagster._core.execution.backfill import PartitionBackfill

    from churn_assets.definitions import defs
    from churn_assets.simulate import simulate

    home = instance_home(tmp_path / "dagster_home", create_storage=True)
    lake_url, landing_url = str(tmp_path / "lake"), str(tmp_path / "landing")
    simulate(landing_url, users=3000, days=40, seed=7)
    days = daily_partitions.get_partition_keys()[:40]
    env = run_env(home, CHURN_DATA_URL=lake_url, CHURN_LANDING_URL=landing_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        daemon = DagsterProcess([executable("dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], env,
                                tmp_path / "daemon.log")
        try:
            instance.add_backfill(PartitionBackfill.from_asset_partitions(
                backfill_id="terminated", asset_graph=defs.get_repository_def().asset_graph, partition_names=days,
                asset_selection=[dg.AssetKey("raw_events")], backfill_timestamp=time.time(),
                dynamic_partitions_store=instance, all_partitions=False, tags={}, title=None, description=None,
                run_config=None,
            ))
            lake = Lake(lake_url)
            # The run is writing its range: its first day is in the lake, its last is not.
            wait_until(lambda: lake.exists(lake.table_url("raw_events", "date", days[0])), 90,
                       "raw_events to store its first day", daemon, interval=0.05)
            (run,) = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": "terminated"}))
            assert instance.run_coordinator.cancel_run(run.run_id)
            finished = wait_until(lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, 60,
                                  "the terminated run to end", daemon, interval=0.5)
        finally:
            daemon.stop()

        assert finished.status == dg.DagsterRunStatus.CANCELED, daemon.log()
        assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_RESTARTED)
        # What it stored before it stopped is recorded, file by file; the rest is neither stored nor recorded.
        recorded = instance.get_materialized_partitions(dg.AssetKey("raw_events"))
        stored = {day for day in days if lake.exists(lake.table_url("raw_events", "date", day))}
        assert recorded == stored and days[0] in stored and days[-1] not in stored
