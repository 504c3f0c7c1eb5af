"""What the local instance (dagster.yaml) keeps of the sensors' ticks: the daemon's own purge, run for real."""

from pathlib import Path

import dagster as dg

from churn_assets_tests.dagster_processes import instance_home
from churn_assets_tests.retention import EXPECTED, ticks_kept_after_a_daemon_tick


def test_the_daemon_purges_old_sensor_ticks_of_every_status(tmp_path: Path):
    """A sensor's successful ticks are kept 90 days, not forever: the landing sensor's carry its ~25 kB cursor."""
    home = instance_home(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert ticks_kept_after_a_daemon_tick(instance) == EXPECTED
