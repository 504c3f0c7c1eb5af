"""Two apps in one Dagster instance (docs/operations.md, "More than one app"): a code server per app, each with its
own CHURN_APP, lake and landing zone, one webserver over both, one DAGSTER_HOME. What the UI shows of one app's
``raw_events`` is that app's alone."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from churn_assets.simulate import simulate
from churn_assets_tests.dagster_processes import (
    ROOT,
    DagsterProcess,
    executable,
    free_port,
    graphql,
    instance_home,
    run_env,
    wait_until,
)

pytestmark = pytest.mark.slow

APPS = ("puzzle", "fitness")
DAY = "2025-01-01"

REPOSITORY = """query($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) { __typename ... on PythonError { message } ... on Repository {
    assetNodes { assetKey { path } partitionStats { numMaterialized } }
    jobs { name } schedules { name } sensors { name }
  } }
}"""
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename }
} } } }"""


def _workspace(ports: dict[str, int]) -> str:
    """The workspace.yaml docs/operations.md gives, with each app's code server on a loopback port."""
    entries = "".join(
        f"  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: {app}\n"
        for app, port in ports.items()
    )
    return f"load_from:\n{entries}"


@pytest.fixture
def two_apps(tmp_path):
    """The webserver's port, each app's environment (for its CLI runs) and lake, over one instance."""
    home = instance_home(tmp_path / "dagster_home", create_storage=True)
    envs, ports, processes = {}, {}, []
    for app in APPS:
        simulate(str(tmp_path / app / "landing"), users=40, days=1, start=dt.date.fromisoformat(DAY), seed=3)
        envs[app] = run_env(
            home, CHURN_APP=app, CHURN_DATA_URL=str(tmp_path / app / "lake"),
            CHURN_LANDING_URL=str(tmp_path / app / "landing"), CHURN_LANDING_SENSOR_INTERVAL="2",
        )
        ports[app] = free_port()
        processes.append(DagsterProcess(
            [executable("dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(ports[app]),
             "-m", "churn_assets.definitions", "--location-name", app],
            envs[app], tmp_path / f"{app}_code_server.log",
        ))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(_workspace(ports))
    web_port = free_port()
    web = DagsterProcess(
        [executable("dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)],
        run_env(home), tmp_path / "webserver.log",
    )
    processes.append(web)
    try:
        def loaded():
            entries = graphql(web_port, LOCATIONS)["workspaceOrError"]["locationEntries"]
            # LOADED with its repository, not with the error of a code server not listening yet (the webserver
            # loads it again once it is: a test that went on at the first LOADED found no repository)
            return len(entries) == 2 and all(
                e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries
            )

        wait_until(loaded, 90, "both code locations to load in the webserver", *processes)
        yield web_port, envs, web, workspace
    finally:
        for process in processes:
            process.stop()


def _repository(port: int, app: str) -> dict:
    selector = {"repositoryLocationName": app, "repositoryName": "__repository__"}
    return graphql(port, REPOSITORY, {"selector": selector})["repositoryOrError"]


def test_two_apps_in_one_instance_keep_their_assets_and_automation_apart(two_apps, tmp_path):
    port, envs, web, workspace = two_apps
    # puzzle's day loaded from the CLI as a user runs it (the keys under the app's prefix), with its blocking checks,
    # user_daily's reading install_times.
    _dagster(envs["puzzle"], tmp_path, "asset", "materialize", "-m", "churn_assets.definitions",
             "--select", "puzzle/raw_events,puzzle/install_times,puzzle/user_daily", "--partition", DAY)

    materialized = {}
    for app in APPS:
        repository = _repository(port, app)
        assert "assetNodes" in repository, repository
        nodes = {"/".join(n["assetKey"]["path"]): n for n in repository["assetNodes"]}
        # Every key under the app's own prefix: nothing the two locations share, so Dagster keeps each asset's
        # partitions, history, data versions and checks apart.
        assert nodes and all(key.startswith(f"{app}/") for key in nodes), sorted(nodes)
        materialized[app] = nodes[f"{app}/raw_events"]["partitionStats"]["numMaterialized"]
        # Jobs, schedules and sensors named per app: the runs they look up (by job and schedule name), the
        # serial lanes (churn/serial=<job>) and the alerts say which app.
        names = [j["name"] for j in repository["jobs"] if not j["name"].startswith("__")]
        names += [s["name"] for s in (*repository["schedules"], *repository["sensors"])]
        assert sorted(names) == sorted(f"{app}_{name}" for name in (
            "daily_refresh", "weekly_scoring", "monthly_retraining",
            "daily_refresh", "weekly_scoring", "monthly_retraining",
            "landing_sensor", "drift_retraining_sensor", "run_failure_alert",
        ))
    # The UI shows puzzle's day stored, and fitness's raw_events with nothing: not one asset for both.
    assert materialized == {"puzzle": 1, "fitness": 0}
    # Each app's lake keeps DESIGN.md's layout, under its own CHURN_DATA_URL.
    lake = Path(envs["puzzle"]["CHURN_DATA_URL"])
    assert (lake / "raw_events" / f"date={DAY}").is_dir()
    assert not Path(envs["fitness"]["CHURN_DATA_URL"]).exists()
    assert "in multiple code locations" not in web.log()

    # churn-assets erase in puzzle's environment records its rewrite under puzzle's keys: the UI's history of
    # puzzle/raw_events shows it, and nothing is recorded for a bare raw_events no location defines.
    table = lake / "raw_events" / f"date={DAY}" / "data.parquet"
    user = pl.read_parquet(table).get_column("user_id")[0]
    erased = subprocess.run([executable("churn-assets"), "erase", "--user-id", user], env=envs["puzzle"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert user not in pl.read_parquet(table).get_column("user_id").to_list()
    # The retraining it advises selects puzzle's assets (bare training_set,model is no asset of this location).
    assert "materialize puzzle/training_set,puzzle/model of the current month" in erased.stdout, erased.stdout
    with dg.DagsterInstance.from_config(envs["puzzle"]["DAGSTER_HOME"]) as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey(["puzzle", "raw_events"]))
        assert latest.asset_materialization.metadata["erased_rows"].value > 0
        assert instance.get_latest_materialization_event(dg.AssetKey("raw_events")) is None

    # Each app's landing sensor reads its own app's raw_events: puzzle's day is refreshed from its delivery, fitness's
    # (never loaded) is asked for.
    for app, requested in (("puzzle", False), ("fitness", True)):
        preview = _dagster(envs[app], tmp_path, "sensor", "preview", f"{app}_landing_sensor",
                           "-m", "churn_assets.definitions")
        assert (f"requesting {app}_daily_refresh for {DAY}" in preview) == requested, preview

    # The daemon over both: fitness's sensor, turned on, runs fitness's refresh through fitness's code server, with
    # fitness's settings (its lake) and in its own serial lane.
    _dagster(envs["fitness"], tmp_path, "sensor", "start", "fitness_landing_sensor", "-w", str(workspace),
            "--location", "fitness")
    daemon = DagsterProcess([executable("dagster-daemon"), "run", "-w", str(workspace)],
                            run_env(Path(envs["fitness"]["DAGSTER_HOME"])), tmp_path / "daemon.log")
    try:
        with dg.DagsterInstance.from_config(envs["fitness"]["DAGSTER_HOME"]) as instance:
            def refreshed():
                runs = instance.get_runs(dg.RunsFilter(job_name="fitness_daily_refresh"))
                return runs[0] if runs and runs[0].is_finished else None

            run = wait_until(refreshed, 120, "fitness's daily refresh", daemon, web, interval=0.5)
            assert run.status == dg.DagsterRunStatus.SUCCESS, daemon.log()
            assert run.tags["churn/serial"] == "fitness_daily_refresh"
            assert instance.get_materialized_partitions(dg.AssetKey(["fitness", "raw_events"])) == {DAY}
            assert instance.get_materialized_partitions(dg.AssetKey(["puzzle", "raw_events"])) == {DAY}
            assert not instance.get_materialized_partitions(dg.AssetKey("raw_events"))
    finally:
        daemon.stop()
    assert (Path(envs["fitness"]["CHURN_DATA_URL"]) / "features" / f"date={DAY}").is_dir()
    assert not (lake / "features").exists()  # puzzle's lake holds what puzzle ran, nothing of fitness's


def _dagster(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run([executable("dagster"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_an_apps_failure_alert_is_about_its_own_runs():
    """Each app's run_failure_alert watches every run of the instance (a CLI run belongs to no code location): with
    CHURN_APP it alerts about its own app's runs, by their job or asset keys, so a failed run of puzzle is posted
    once, to puzzle's webhook, not to fitness's too."""
    from churn_assets.apps import is_this_apps_run

    def run(job_name: str, keys: tuple[str, ...] = (), checks: tuple[str, ...] = ()) -> dg.DagsterRun:
        selection = {dg.AssetKey.from_user_string(k) for k in keys} or None
        check_selection = {dg.AssetCheckKey(dg.AssetKey.from_user_string(k), "a_check") for k in checks} or None
        return dg.DagsterRun(job_name=job_name, asset_selection=selection, asset_check_selection=check_selection)

    puzzle_runs = [run("puzzle_daily_refresh"), run("__ASSET_JOB", ("puzzle/raw_events", "puzzle/install_times")),
                   run("__ASSET_JOB", checks=("puzzle/raw_events",))]  # a check run again alone, from the UI
    fitness_runs = [run("fitness_daily_refresh"), run("__ASSET_JOB", ("fitness/model",)),
                    run("__ASSET_JOB", checks=("fitness/raw_events",))]
    assert all(is_this_apps_run(r, "puzzle") for r in puzzle_runs)
    assert not any(is_this_apps_run(r, "puzzle") for r in fitness_runs)
    # An app whose name begins another's ("fit", "fitness") is not alerted about the other's runs, nor it about its.
    assert [is_this_apps_run(r, "fit") for r in fitness_runs] == [False] * 3
    fit_runs = [run("fit_daily_refresh"), run("__ASSET_JOB", ("fit/model",)), run("__ASSET_JOB", checks=("fit/model",))]
    assert all(is_this_apps_run(r, "fit") for r in fit_runs)
    assert not any(is_this_apps_run(r, "fitness") for r in fit_runs)
    # Without CHURN_APP, every run of the instance, as before.
    assert all(is_this_apps_run(r, None) for r in puzzle_runs + fitness_runs + fit_runs)


# puzzle's run_failure_alert ticked through Dagster's own API (as test_sensors.py does) in a process with puzzle's
# settings, over failed runs of puzzle, of fitness and of fit: the run ids it posted are what the webhook received.
FAILURE_TICKS = """
import dagster as dg
from churn_assets.automation.sensors.run_failure_alert import run_failure_alert
from churn_assets.config import SETTINGS
from churn_assets.definitions import defs
from churn_assets.resources import build_resources

resources = {"alerts": build_resources(SETTINGS)["alerts"]}
with dg.instance_for_test() as instance:
    def tick(cursor):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, repository_def=defs.get_repository_def())
        return run_failure_alert.evaluate_tick(context).cursor or cursor

    cursor = tick(None)  # the first tick starts watching from now
    for job, keys in (("puzzle_daily_refresh", None), ("__ASSET_JOB", {dg.AssetKey(["puzzle", "model"])}),
                      ("fitness_daily_refresh", None), ("__ASSET_JOB", {dg.AssetKey(["fitness", "model"])}),
                      ("fit_daily_refresh", None)):
        run = instance.add_run(dg.DagsterRun(job_name=job, asset_selection=keys, status=dg.DagsterRunStatus.STARTED))
        instance.report_run_failed(run)
        print(job, run.run_id)
    tick(cursor)
"""


def test_an_apps_failure_alert_posts_its_own_apps_failed_runs_alone(tmp_path, webhook):
    """One instance, every app's run_failure_alert watching all its runs: puzzle's webhook is posted puzzle's failed
    runs (by job name, or by asset keys for a run of selected assets), not fitness's nor fit's."""
    handler, url = webhook
    env = run_env(instance_home(tmp_path / "dagster_home"), CHURN_APP="puzzle", CHURN_ALERT_WEBHOOK=url,
                  CHURN_DATA_URL=str(tmp_path / "lake"), CHURN_LANDING_URL=str(tmp_path / "landing"))
    done = subprocess.run([sys.executable, "-c", FAILURE_TICKS], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [line.split() for line in done.stdout.splitlines() if line.count(" ") == 1]
    assert len(runs) == 5, done.stdout
    assert sorted(alert["run_id"] for _, alert in handler.received) == sorted(run_id for _, run_id in runs[:2])


def test_an_apps_model_step_holds_its_own_pool(tmp_path):
    """Each app's model step holds the pool <app>_model (README, CHURN_APP), one slot each: in a pool shared by all
    apps, puzzle's monthly retraining waited for fitness's to end."""
    script = ("import dagster as dg; from churn_assets.definitions import defs; "
              "print(defs.resolve_assets_def(dg.AssetKey(['puzzle', 'model'])).op.pool)")
    env = run_env(tmp_path, CHURN_APP="puzzle", CHURN_DATA_URL=str(tmp_path / "lake"),
                  CHURN_LANDING_URL=str(tmp_path / "landing"))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["puzzle_model"]


# The schedules and the drift sensor evaluated through Dagster's own API (as test_schedules.py and test_sensors.py
# do) on the instance the demo filled, in a process with the app's settings: what each asks for, as JSON.
EVALUATE_AUTOMATION = """
import datetime as dt, json
import dagster as dg
from churn_assets.definitions import defs

def said(data):
    return data.skip_message or [
        {"job": data_job, "run_key": r.run_key, "partition": r.partition_key, "tags": dict(r.tags)}
        for r in data.run_requests
    ]

repository, found = defs.get_repository_def(), {}
with dg.DagsterInstance.get() as instance:
    for name, tick in (
        ("puzzle_daily_refresh", "2025-05-11T02:00"), ("puzzle_daily_refresh", "2025-05-14T02:00"),
        ("puzzle_weekly_scoring", "2025-05-05T03:00"), ("puzzle_monthly_retraining", "2025-05-01T04:00"),
    ):
        schedule = repository.get_schedule_def(name)
        data_job = schedule.job_name
        at = dt.datetime.fromisoformat(tick).replace(tzinfo=dt.UTC)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=repository) as c:
            found[f"{name} {tick}"] = said(schedule.evaluate_tick(c))
    sensor = repository.get_sensor_def("puzzle_drift_retraining_sensor")
    data_job = sensor.job_name
    with dg.build_sensor_context(instance=instance, repository_def=repository) as c:
        found["drift"] = said(sensor.evaluate_tick(c))
    # A report over the threshold, recorded under puzzle's key: the sensor asks for puzzle's retraining of its month.
    instance.report_runless_asset_event(dg.AssetMaterialization(
        dg.AssetKey(["puzzle", "drift_report"]), partition="2025-05-09", metadata={"share_of_drifted_columns": 0.9}))
    with dg.build_sensor_context(instance=instance, repository_def=repository) as c:
        found["drift over"] = said(sensor.evaluate_tick(c))
print(json.dumps(found))
"""


def test_an_apps_whole_graph_runs_as_the_demo_runs_it(tmp_path):
    """scripts/demo.sh under CHURN_APP: the data chain, training_set and model of two months (model[M-1] the
    champion), predictions and drift_report, with every check, under puzzle's keys in puzzle's lake; then model[M]
    alone (its champion loaded from the lake) and under another horizon (the command it gives), what the schedules and
    the drift sensor ask for, and the benchmark's run of a piece."""
    home = instance_home(tmp_path / "dagster_home")
    lake = tmp_path / "lake"
    env = run_env(home, CHURN_APP="puzzle", CHURN_DATA_URL=str(lake), CHURN_LANDING_URL=str(tmp_path / "landing"),
                  USERS="2000", DAYS="130", VENV=str(_this_venv(tmp_path)))
    demo = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-6000:]
    assert "model[2025-05]: " in demo.stdout and "predictions for 2025-05-10: " in demo.stdout, demo.stdout
    assert "CHURN_APP=puzzle DAGSTER_HOME=" in demo.stdout  # the UI command it prints opens puzzle's location

    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name in ("raw_events", "install_times", "user_daily", "features", "labels", "training_set", "model",
                     "predictions", "drift_report"):
            key = dg.AssetKey(["puzzle", name])
            assert instance.get_materialized_partitions(key), name
            assert instance.get_latest_materialization_event(dg.AssetKey(name)) is None, name
            # The lake keeps DESIGN.md's layout under puzzle's own CHURN_DATA_URL, and the UI links there.
            metadata = instance.get_latest_materialization_event(key).asset_materialization.metadata
            assert metadata["dagster/uri"].value.startswith(f"{lake}/{name}/"), (name, metadata["dagster/uri"])
        checks = [dg.AssetCheckKey(dg.AssetKey(["puzzle", asset]), check) for asset, check in (
            ("raw_events", "raw_events_are_valid"), ("user_daily", "user_daily_is_consistent"),
            ("features", "features_cover_users_at_risk"), ("labels", "labels_match_snapshots"),
            ("training_set", "training_set_is_sound"), ("model", "model_artifacts_are_sound"),
            ("predictions", "predictions_cover_every_user"), ("drift_report", "features_have_not_drifted"),
        )]
        for check in checks:
            (latest,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
            assert latest.event.asset_check_evaluation.passed, check
    # model[2025-05] alone reads its champion model[2025-04] from the lake, and its card the training set's hash.
    alone = _dagster(env, tmp_path, "asset", "materialize", "-m", "churn_assets.definitions", "--select",
                     "puzzle/model", "--partition", "2025-05")
    assert 'Loaded input "champion"' in alone and "no stored model" not in alone, alone[-3000:]
    card = json.loads((lake / "model" / "month=2025-04" / "model_card.json").read_text())
    assert card["data_versions"]["training_set"]["content_hash"]
    # Under another horizon it refuses the month's labels, and the command it gives selects puzzle's labels.
    refused = subprocess.run(
        [executable("dagster"), "asset", "materialize", "-m", "churn_assets.definitions", "--select", "puzzle/model",
         "--partition", "2025-05"], env={**env, "CHURN_HORIZON_DAYS": "7"}, cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )
    assert refused.returncode != 0
    command = "(--select puzzle/labels --partition-range 2025-02-01...2025-04-30)"
    assert command in refused.stderr, refused.stderr[-3000:]

    evaluate = subprocess.run([sys.executable, "-c", EVALUATE_AUTOMATION], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    asked = json.loads(evaluate.stdout.splitlines()[-1])
    refresh = asked["puzzle_daily_refresh 2025-05-11T02:00"]
    assert [(r["job"], r["run_key"], r["partition"]) for r in refresh] == [("puzzle_daily_refresh", "2025-05-10",
                                                                            "2025-05-10")]
    assert refresh[0]["tags"]["dagster/schedule_name"] == "puzzle_daily_refresh"
    (catch_up,) = asked["puzzle_daily_refresh 2025-05-14T02:00"]  # the days missed with yesterday, in one run
    assert catch_up["run_key"] == "2025-05-11...2025-05-13"
    assert catch_up["tags"]["dagster/asset_partition_range_start"] == "2025-05-11"
    (scoring,) = asked["puzzle_weekly_scoring 2025-05-05T03:00"]
    assert (scoring["job"], scoring["partition"]) == ("puzzle_weekly_scoring", "2025-05-04")
    (retraining,) = asked["puzzle_monthly_retraining 2025-05-01T04:00"]
    assert (retraining["job"], retraining["partition"]) == ("puzzle_monthly_retraining", "2025-05")
    assert "1 new drift report(s), none at or over" in asked["drift"]  # puzzle's report, read under its key
    (drift,) = asked["drift over"]
    assert (drift["job"], drift["partition"], drift["tags"]["churn/drift_day"]) == (
        "puzzle_monthly_retraining", "2025-05", "2025-05-09")
    assert drift["run_key"].startswith("drift:2025-05-09:")

    # The benchmark's piece (benchmarks/child.py) names DESIGN.md's assets: it runs puzzle's.
    spec, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"assets": ["predictions", "drift_report"], "first": "2025-05-10",
                                "last": "2025-05-10"}))
    piece = subprocess.run([sys.executable, "-m", "benchmarks.child", str(spec), str(result)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert piece.returncode == 0, piece.stdout[-3000:] + piece.stderr[-3000:]
    assert {"predictions", "drift_report"} <= {step["step"] for step in json.loads(result.read_text())["steps"]}


def _this_venv(tmp_path: Path) -> Path:
    """A VENV for scripts/demo.sh whose commands are this Python environment's, marked installed, so that its
    scripts/setup.sh installs nothing."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    for name in ("dagster", "churn-assets"):
        (venv / "bin" / name).symlink_to(executable(name))
    (venv / ".churn-installed").touch()
    return venv


# What a user under an app reads, one message of each kind, from a process with the app's settings: a step's failure
# (the parquet IO manager's, the model IO manager's), a check's description, a schedule's skip reason and a sensor's
# description, each naming the asset or job as the user types it.
MESSAGES_UNDER_AN_APP = """
import datetime as dt, json
import dagster as dg, polars as pl
from churn_assets.config import SETTINGS
from churn_assets.definitions import all_asset_checks, all_assets, defs
from churn_assets.resources import build_resources
from churn_assets.resources.lake import Lake
from churn_assets.automation.sensors.run_failure_alert import step_error
from churn_assets.resources.model_io_manager import ModelIOManager

def key(name):
    return dg.AssetKey(["puzzle", name])

found, resources, repository = {}, build_resources(SETTINGS), defs.get_repository_def()
with dg.DagsterInstance.get() as instance:
    result = dg.materialize(all_assets, selection=[key("user_daily")], partition_key="2025-01-05",
                            resources=resources, instance=instance, raise_on_error=False)
    found["parquet"] = [step_error(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    try:
        ModelIOManager(base_url=SETTINGS.data_url).read("model", "2030-01")
    except Exception as exc:
        found["model"] = str(exc)
    # A training set whose one label was made under another horizon (7 days, not 28).
    Lake(SETTINGS.data_url).write_table(
        Lake(SETTINGS.data_url).table_url("training_set", "month", "2025-03"),
        pl.DataFrame({
            "user_id": ["u1", "u2"], "churned": [0, 1], "snapshot_date": [dt.date(2025, 1, 1), dt.date(2025, 2, 3)],
            "label_date": [dt.date(2025, 1, 29), dt.date(2025, 2, 10)]}),
    )
    check = dg.AssetCheckKey(key("training_set"), "training_set_is_sound")
    result = dg.materialize([*all_assets, *all_asset_checks], selection=dg.AssetSelection.checks(check),
                            resources=resources,
                            instance=instance, tags={"dagster/partition": "2025-03"}, raise_on_error=False)
    found["check"] = [e.description for e in result.get_asset_check_evaluations()]
    with dg.build_schedule_context(instance=instance, repository_def=repository,
                                   scheduled_execution_time=dt.datetime(2025, 3, 10, 3, tzinfo=dt.UTC)) as context:
        found["skip"] = repository.get_schedule_def("puzzle_weekly_scoring").evaluate_tick(context).skip_message
found["sensor"] = repository.get_sensor_def("puzzle_drift_retraining_sensor").description
print(json.dumps(found))
"""


def test_what_a_message_tells_a_user_under_an_app_to_select_is_the_apps(tmp_path):
    """Under CHURN_APP every asset is puzzle/NAME and every job puzzle_NAME: a message that told the user to
    materialize user_daily, model or labels, or named weekly scoring's inputs, the drift sensor's job, gave a
    selection no asset of the location answers to (`dagster asset materialize --select user_daily`: no such asset)."""
    env = run_env(instance_home(tmp_path / "home"), CHURN_APP="puzzle", CHURN_DATA_URL=str(tmp_path / "lake"),
                  CHURN_LANDING_URL=str(tmp_path / "landing"))
    done = subprocess.run([sys.executable, "-c", MESSAGES_UNDER_AN_APP], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    (failure,) = found["parquet"]
    assert "install_times has no stored partition 2025-01-05" in failure, failure
    assert "materialize puzzle/install_times for those partitions first" in failure, failure
    assert "materialize puzzle/training_set,puzzle/model for 2030-01 first (" in found["model"], found["model"]
    (check,) = found["check"]
    assert "materialize puzzle/labels again over the label days of training_set[2025-03], then " \
           "puzzle/training_set" in check, check
    assert found["skip"].startswith("2025-03-09 waits for puzzle/features[2025-03-09], not stored yet"), found["skip"]
    assert found["sensor"].startswith("Requests puzzle_monthly_retraining for the month of a puzzle/drift_report")


# puzzle's run_failure_alert over a run of puzzle's that failed, posting to the test's webhook (CHURN_ALERT_WEBHOOK),
# and the alert puzzle's landing sensor makes of a late day, as JSON.
ALERTS_UNDER_AN_APP = """
import datetime as dt, json, subprocess
import dagster as dg
from churn_assets.automation.sensors.landing_sensor import late_landing_alerts
from churn_assets.config import SETTINGS
from churn_assets.definitions import defs
from churn_assets.resources import build_resources

resources, repository = build_resources(SETTINGS), defs.get_repository_def()
sensor = repository.get_sensor_def("puzzle_run_failure_alert")
with dg.DagsterInstance.get() as instance:
    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": resources["alerts"]},
                                     repository_def=repository) as context:
            return sensor.evaluate_tick(context).cursor or cursor

    cursor = tick(None)  # the first tick watches from now
    # Run as a user runs it (a CLI run names no job of the app: its asset keys do), failing: nothing is stored.
    subprocess.run(["dagster", "asset", "materialize", "-m", "churn_assets.definitions", "--select",
                    "puzzle/user_daily", "--partition", "2025-01-05"], capture_output=True, check=False)
    tick(cursor)
print(json.dumps(late_landing_alerts(["2025-01-05"], {}, [], dt.datetime(2025, 1, 7, tzinfo=dt.UTC), 6)))
"""


def test_an_apps_alerts_say_which_app(tmp_path, webhook):
    """Two apps posting to one webhook: the JSON said the job (puzzle_daily_refresh, or __ASSET_JOB for a CLI run,
    which names no app) and not the app, so a team told them apart by parsing names. It carries CHURN_APP now."""
    handler, url = webhook
    env = run_env(instance_home(tmp_path / "home"), CHURN_APP="puzzle", CHURN_DATA_URL=str(tmp_path / "lake"),
                  CHURN_LANDING_URL=str(tmp_path / "landing"), CHURN_ALERT_WEBHOOK=url)
    done = subprocess.run([sys.executable, "-c", ALERTS_UNDER_AN_APP], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ((content_type, alert),) = handler.received
    assert (alert["app"], alert["partition"], alert["failed_steps"]) == ("puzzle", "2025-01-05", ["user_daily"]), alert
    (late,) = json.loads(done.stdout.splitlines()[-1])
    assert (late["app"], late["job"], late["dagster_event"]) == ("puzzle", "puzzle_daily_refresh", "LANDING_DAY_LATE")
