"""The real command lines in subprocesses: ``churn-assets simulate`` and ``dagster asset materialize
--partition-range`` over the ingest assets, on a temp landing zone, lake and Dagster home."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets.simulate import simulate
from churn_assets_tests.landing_helpers import materialize_ingest, read_partition, tree_digest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
DAYS = [(dt.date(2025, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(5)]
SIMULATION = {"users": 200, "days": len(DAYS), "start": dt.date(2025, 1, 1), "seed": 3}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "DAGSTER_"))}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def simulated_landing(tmp_path_factory) -> Path:
    """The landing zone written by ``churn-assets simulate`` as a subprocess."""
    work = tmp_path_factory.mktemp("cli")
    landing = work / "landing"
    _run(
        [str(BIN / "churn-assets"), "simulate", "--out", str(landing), "--users", "200", "--days", str(len(DAYS)),
         "--start", "2025-01-01", "--seed", "3", "--no-progress"],
        cwd=work, env=_env(),
    )
    return landing


def test_simulate_command_writes_the_landing_zone(simulated_landing, tmp_path):
    for day in DAYS:
        folder = simulated_landing / "events" / f"date={day}"
        assert (folder / "_SUCCESS").exists()
        assert list(folder.glob("*.jsonl.gz"))
    assert (simulated_landing / "truth" / "users.parquet").exists()
    assert not (simulated_landing / "events" / "date=2025-01-06").exists()
    # The command passes its options through: the same bytes as the Python API with the same arguments.
    simulate(str(tmp_path / "api"), **SIMULATION)
    assert tree_digest(tmp_path / "api" / "events").keys() == tree_digest(simulated_landing / "events").keys()
    for path in (simulated_landing / "events").rglob("*.jsonl.gz"):
        assert path.read_bytes() == (tmp_path / "api" / path.relative_to(simulated_landing)).read_bytes()


def test_dagster_asset_materialize_partition_range(simulated_landing, tmp_path):
    lake, home = tmp_path / "lake", tmp_path / "dagster_home"
    home.mkdir()
    env = _env(CHURN_DATA_URL=str(lake), CHURN_LANDING_URL=str(simulated_landing), DAGSTER_HOME=str(home))
    landing_before = tree_digest(simulated_landing)

    done = _run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "churn_assets.definitions",
         "--select", "raw_events,install_times,user_daily", "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"],
        cwd=tmp_path, env=env,
    )
    # Without any run config, the steps run in the CLI's process (the code location's executor), not one
    # process per step.
    assert "Executing steps in process" in done.stdout + done.stderr
    assert "Executing steps using multiprocess executor" not in done.stdout + done.stderr

    for asset in ("raw_events", "install_times", "user_daily", "raw_events_quarantine"):
        stored = sorted(p.name for p in (lake / asset).iterdir())
        assert stored == [f"date={day}" for day in DAYS], asset
    assert tree_digest(simulated_landing) == landing_before

    # One run did it all, recorded in the temp Dagster home, with the blocking checks passed.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert runs[0].tags["dagster/asset_partition_range_start"] == DAYS[0]
        assert runs[0].tags["dagster/asset_partition_range_end"] == DAYS[-1]
        for asset in ("raw_events", "install_times", "user_daily"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS)
        evaluations = [
            r.event_log_entry.dagster_event.event_specific_data
            for r in instance.get_records_for_run(
                runs[0].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
        ]
        assert {e.check_name for e in evaluations} == {"raw_events_are_valid", "user_daily_is_consistent"}
        assert all(e.passed for e in evaluations)

    # The CLI's lake equals an in-process range run over the same landing zone.
    reference = ChurnSettings(data_url=str(tmp_path / "reference"), landing_url=str(simulated_landing))
    materialize_ingest(build_resources(reference), dg.DagsterInstance.ephemeral(), DAYS[0], DAYS[-1])
    for asset in ("raw_events", "install_times", "user_daily"):
        for day in DAYS:
            assert read_partition(str(lake), asset, day).equals(read_partition(reference.data_url, asset, day))
    assert not (tmp_path / "data").exists(), "nothing written to the default ./data"


def test_a_job_backfill_of_daily_refresh_queues_serial_runs(tmp_path):
    """``dagster job backfill -j daily_refresh``: one queued run per day, each tagged so the instance's
    concurrency rule (dagster.yaml) runs daily refreshes one at a time, oldest first."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = _env(CHURN_DATA_URL=str(tmp_path / "lake"), CHURN_LANDING_URL=str(tmp_path / "landing"),
               DAGSTER_HOME=str(home))
    _run(
        [str(BIN / "dagster"), "job", "backfill", "-j", "daily_refresh", "--partitions", ",".join(DAYS[:3]),
         "--noprompt", "-w", str(ROOT / "workspace.yaml")],
        cwd=tmp_path, env=env,
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == DAYS[:3]
        assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}  # no daemon here to launch them
        assert {r.tags.get("churn/serial") for r in runs} == {"daily_refresh"}
        assert all("dagster/backfill" in r.tags for r in runs)
    serial = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    # One run at a time per value of the tag: daily_refresh's lane, monthly_retraining's, each app's own.
    assert {"key": "churn/serial", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in serial
    # The monthly job has a lane of its own: model[M] reads model[M-1].
    from churn_assets.definitions import defs

    assert defs.resolve_job_def("monthly_retraining").tags["churn/serial"] == "monthly_retraining"


def test_the_documented_dagster_dev_loads_the_location_the_cli_commands_address():
    """Every ``dagster dev`` the docs and the demo print loads the code location ``workspace.yaml`` names:
    the schedule, sensor and ``job backfill`` commands of the docs go through ``-w workspace.yaml`` (location
    ``churn_assets``). ``dagster dev -m churn_assets.definitions`` names its location after the module: a
    sensor started from the CLI stayed stopped in its UI, and the runs ``dagster job backfill`` queued failed
    with "Location churn_assets does not exist in workspace"."""
    import re
    import shlex

    [entry] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    addressed = entry["python_module"]["location_name"]
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "scripts" / "demo.sh"]
    commands = [
        (path.name, match.group(0))
        for path in files
        for match in re.finditer(r"dagster dev\b[^`\n#]*", path.read_text())
    ]
    assert any(name == "README.md" for name, _ in commands)
    for name, command in commands:
        args = shlex.split(command)
        if "-m" in args:
            loaded = args[args.index("-m") + 1]
        elif "-w" in args:
            workspace = Path(args[args.index("-w") + 1].replace("$PWD", str(ROOT)))
            workspace = workspace if workspace.is_absolute() else ROOT / workspace
            [loaded_entry] = yaml.safe_load(workspace.read_text())["load_from"]
            loaded = loaded_entry["python_module"]["location_name"]
        else:
            continue  # prose ("`dagster dev`, or …"), not a command line
        assert loaded == addressed, f"{name}: `{command.strip()}` loads location {loaded!r}, not {addressed!r}"


def test_loading_the_code_location_imports_no_library_a_local_run_does_not_use():
    """Every run's process, the webserver and the daemon load the code location first: XGBoost, Evidently
    and pandas are imported by the steps that use them, botocore (~0.09 s) by the first S3 call."""
    probe = "import sys, churn_assets.definitions; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    loaded = set(_run([sys.executable, "-c", probe], cwd=ROOT, env=_env()).stdout.split())
    assert "dagster" in loaded and "polars" in loaded
    assert not loaded & {"botocore", "boto3", "s3fs", "xgboost", "evidently", "pandas", "sklearn", "scipy"}


@pytest.mark.parametrize(
    ("variable", "value"), [("CHURN_HORIZON_DAYS", "abc"), ("CHURN_EVENT_TYPES", " , "), ("CHURN_APP", "Puzzle-2")]
)
def test_a_bad_setting_stops_churn_assets_with_one_line_naming_it(tmp_path, variable, value):
    """Every subcommand imports the package, which reads the CHURN_* settings: a bad one printed a traceback
    of the settings' parsing; it is now one line naming the variable, and the exit status of a usage error."""
    done = subprocess.run([str(BIN / "churn-assets"), "features-doc"], cwd=tmp_path, env=_env(**{variable: value}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"churn-assets: {variable}") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_readme_gives_each_setting_the_default_the_code_has():
    """README's table of CHURN_* variables: setting each to the default it shows changes nothing, and every
    variable the settings read is in the table."""
    import re

    rows = re.findall(r"^\| `(CHURN_[A-Z_]+)` \| ([^|]+) \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    documented = {name: shown.strip() for name, shown in rows}
    read = set(re.findall(r'"(CHURN_[A-Z_]+)"', (ROOT / "churn_assets" / "config.py").read_text()))
    assert read <= set(documented), sorted(read - set(documented))
    unset = ChurnSettings.from_env({})
    for name, shown in documented.items():
        if shown.startswith("`") and shown.endswith("`"):
            assert ChurnSettings.from_env({name: shown.strip("`")}) == unset, (name, shown)
