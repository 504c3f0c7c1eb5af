"""Tick retention as Dagster's sensor daemon applies it: after each tick of a sensor, the daemon deletes that
sensor's ticks older than the instance file's ``retention`` says, status by status
(``dagster._daemon.sensor.SensorLaunchContext.__exit__``). Run here by one real iteration of that daemon over the
repository's workspace, against whatever instance the test opened (local SQLite, production PostgreSQL)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._utils.error import SerializableErrorInfo

ROOT = Path(__file__).resolve().parents[1]
DAY = 24 * 3600
FAILED = SerializableErrorInfo("an old failure", [], "Exception")
# Ticks of drift_retraining_sensor made before the daemon's tick: (status, age in days).
OLD_TICKS = {
    "started 100 days ago": (TickStatus.STARTED, 100),  # a daemon killed in a tick
    "success 100 days ago": (TickStatus.SUCCESS, 100),
    "success 80 days ago": (TickStatus.SUCCESS, 80),
    "failure 40 days ago": (TickStatus.FAILURE, 40),
    "failure 20 days ago": (TickStatus.FAILURE, 20),
    "skipped 8 days ago": (TickStatus.SKIPPED, 8),
    "skipped 1 day ago": (TickStatus.SKIPPED, 1),
}


def ticks_kept_after_a_daemon_tick(instance: dg.DagsterInstance, sensor_name: str = "drift_retraining_sensor") -> dict:
    """Starts ``sensor_name``, stores :data:`OLD_TICKS` for it, runs one iteration of Dagster's sensor daemon
    (which evaluates the sensor: its last tick is a day old) and returns ``{tick: kept}`` for the old ticks, with
    ``"evaluated"``: whether the daemon stored a new tick (so its purge ran)."""
    target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
    with create_test_daemon_workspace_context(target, instance) as context:
        entry = next(iter(context.create_request_context().get_code_location_entries().values()))
        assert entry.code_location, entry.load_error
        sensor = entry.code_location.get_repository("__repository__").get_sensor(sensor_name)
        instance.start_sensor(sensor)
        origin_id, selector_id = sensor.get_remote_origin_id(), sensor.selector_id
        now = time.time()
        made = {}
        for name, (status, days) in OLD_TICKS.items():
            tick = instance.create_tick(TickData(
                instigator_origin_id=origin_id, instigator_name=sensor_name, instigator_type=InstigatorType.SENSOR,
                status=status, timestamp=now - days * DAY, selector_id=selector_id, run_ids=[], run_keys=[],
                error=FAILED if status == TickStatus.FAILURE else None,
            ))
            made[name] = tick.tick_id
        list(execute_sensor_iteration(context, logging.getLogger("churn_assets_tests"), None, None))
        ticks = instance.get_ticks(origin_id, selector_id)
    kept = {tick.tick_id for tick in ticks}
    return {
        **{name: tick_id in kept for name, tick_id in made.items()},
        "evaluated": any(tick.timestamp >= now for tick in ticks),
    }


# What the instance files promise (docs/operations.md, "What the instance keeps").
EXPECTED = {
    "started 100 days ago": False,
    "success 100 days ago": False,
    "success 80 days ago": True,
    "failure 40 days ago": False,
    "failure 20 days ago": True,
    "skipped 8 days ago": False,
    "skipped 1 day ago": True,
    "evaluated": True,
}
