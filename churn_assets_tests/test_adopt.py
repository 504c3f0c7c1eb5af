"""A new Dagster instance over a lake that already holds data (``churn-assets adopt``): a history materialized through
one instance, then a fresh instance adopting the lake through the real CLI. The partitions show materialized with the
old instance's content hashes and data versions, nothing shows Unsynced, the landing sensor requests only a day whose
delivery is newer than its stored partition, the daily schedule asks for what it asked on the old instance, a day run
again keeps what reads it in sync, the next month's model finds the adopted champion, and predictions and drift
reports show the scores (with their model's card) and the verdict their run recorded. Refused, before anything is
recorded: an instance that records the assets already, an empty lake, another app's lake. --only-missing over a
partial adoption records the rest under the versions of one adoption; what adopt cannot record (a file that is not
Parquet, a folder of no asset, a model that does not match its card) is named, the rest recorded."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from churn_assets.adoption.adopt import AdoptionRefused, adopt
from churn_assets.assets.ml.scoring import RISK_BANDS
from churn_assets.assets.monitoring.drift_report import OLD_REPORT_FILE, OLD_SUMMARY_FILE, REPORT_FILE, SUMMARY_FILE
from churn_assets.automation.sensors.drift_retraining_sensor import build_drift_retraining_sensor
from churn_assets.automation.sensors.landing_sensor import build_landing_sensor
from churn_assets.config import ChurnSettings
from churn_assets.definitions import all_assets, defs
from churn_assets.outside_runs import ADOPTED_TAG, record_outside_run
from churn_assets.resources import AlertWebhook, LandingZone, build_resources
from churn_assets.resources.lake import Lake
from churn_assets.resources.model_io_manager import ModelIOManager
from churn_assets.simulate import simulate
from churn_assets_tests.dagster_processes import executable, instance_home
from churn_assets_tests.helpers import data_versions, materialize_selected, stale_partitions
from churn_assets_tests.ml_frames import (
    APRIL,
    MARCH,
    features_stub,
    lake_with_models,
    synthetic_features,
    synthetic_training_set,
    training_set_stub,
)
from churn_assets_tests.postgres_server import SUPERUSER, postgres_available
from churn_assets_tests.s3_proxy import HoldingProxy

START = dt.date(2025, 1, 1)
DAYS = 18
DAY_KEYS = [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
CHAIN = ["raw_events", "install_times", "user_daily", "features", "labels"]
REPOSITORY = defs.get_repository_def()


# What adopt restores of a run's materialization beside the table's own (rows, content hash, size), from the stored
# scores and the card of the model that scored them, and from drift_report's summary (_summary.json).
PREDICTIONS_RESTORED = ("users", "highest_risk", "model_version", "horizon_days", "mean_churn_probability",
                        "flagged_share", *(f"band/{band}" for band in RISK_BANDS))
# What raw_events' run recorded that only the landing files tell, not the lake: adopt leaves it out.
RUN_ONLY = ("landing_files", "rows_read", "duplicates_dropped", "quarantine_example")
DRIFT_RESTORED = ("share_of_drifted_columns", "dataset_drift", "too_few_rows", "drifted_columns", "score_drift_score",
                  "score_drifted", "model_version", "compared_rows", "columns", "report", "summary")


def _latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict:
    """The metadata of the latest materialization ``instance`` records of partition ``key`` of ``asset``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return dict(records[0].asset_materialization.metadata)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """150 users over 18 days (with quarantined rows) through raw_events → labels in one run, recorded by the old
    instance (``old_home``): ``landing``, ``lake``, ``old_home`` under the returned folder."""
    root = tmp_path_factory.mktemp("adopt")
    simulate(str(root / "landing"), users=150, days=DAYS, start=START, seed=7, dirty=True, progress=False)
    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    with dg.DagsterInstance.from_config(str(instance_home(root / "old_home", create_storage=True))) as instance:
        result = materialize_selected(CHAIN, build_resources(settings), instance, DAY_KEYS[0], DAY_KEYS[-1])
        assert result.success
    return root


def _adopt(home: Path, lake: str, landing: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``churn-assets adopt`` as a user runs it, on the instance at ``home`` (a new process, the real CLI)."""
    return subprocess.run([executable("churn-assets"), "adopt", *args], env=_adopt_env(home, lake, landing, env),
                          capture_output=True, text=True, timeout=300)


def _adopt_env(home: Path, lake: str, landing: str, env: dict[str, str]) -> dict[str, str]:
    """The environment :func:`_adopt` runs the command in: this one without CHURN_APP, with ``env``."""
    environment = {key: value for key, value in os.environ.items() if key != "CHURN_APP"}
    return environment | {"DAGSTER_HOME": str(home), "CHURN_DATA_URL": lake, "CHURN_LANDING_URL": landing,
                          "CHURN_START_DATE": START.isoformat(), **env}


def _landing_sensor(instance: dg.DagsterInstance, landing: str) -> list[str]:
    """The days the landing sensor's first evaluation on ``instance`` requests."""
    context = dg.build_sensor_context(
        instance=instance, resources={"landing": LandingZone(url=landing), "alerts": AlertWebhook(url=None)},
        repository_def=REPOSITORY,
    )
    return [request.partition_key for request in build_landing_sensor().evaluate_tick(context).run_requests or []]


def _schedule(instance: dg.DagsterInstance, name: str, tick: dt.datetime) -> tuple:
    """What the schedule's tick at ``tick`` asks for on ``instance``: (partition, range tags) or its skip reason."""
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=REPOSITORY) as ctx:
        data = REPOSITORY.get_schedule_def(name).evaluate_tick(ctx)
    if data.skip_message:
        return ("skipped", data.skip_message)
    return tuple((r.partition_key, {k: v for k, v in r.tags.items() if "range" in k}) for r in data.run_requests)


def _redeliver(landing: Path, day: str, later: float) -> None:
    """The day's ``_SUCCESS`` written again ``later`` seconds after now, as an exporter re-sending the day does."""
    marker = landing / "events" / f"date={day}" / "_SUCCESS"
    stamp = dt.datetime.now().timestamp() + later
    os.utime(marker, (stamp, stamp))


def test_a_new_instance_adopts_the_lake_as_the_old_one_recorded_it(history, tmp_path):
    lake = str(history / "lake")
    landing = tmp_path / "landing"
    shutil.copytree(history / "landing", landing)  # (copy2: the markers keep their times, hence their versions)
    _redeliver(landing, DAY_KEYS[4], later=5)  # re-delivered before the move: its stored partition is older
    home = instance_home(tmp_path / "new_home", create_storage=True)

    adopted = _adopt(home, lake, str(landing))

    assert adopted.returncode == 0, adopted.stderr
    for asset in CHAIN:
        assert f"  {asset}: {DAYS} partition(s): {DAY_KEYS[0]} .. {DAY_KEYS[-1]}" in adopted.stdout
    assert f"left for the landing sensor to refresh: 1 day(s) of raw_events stored before their landing day's " \
           f"current _SUCCESS, or not surely after it: {DAY_KEYS[4]}" in adopted.stdout
    with (dg.DagsterInstance.from_config(str(history / "old_home")) as old,
          dg.DagsterInstance.from_config(str(home)) as new):
        for asset in CHAIN:
            assert new.get_materialized_partitions(dg.AssetKey(asset)) == set(DAY_KEYS)
            assert data_versions(new, asset, DAY_KEYS) == data_versions(old, asset, DAY_KEYS)
            assert stale_partitions(new, all_assets, asset, DAY_KEYS) == []
            # Each day shows what its run recorded (raw_events: its quarantine counts per reason, its events
            # without each attribute, its landing version), but what only the landing files told the run.
            for day in DAY_KEYS:
                ran, kept = (_latest_metadata(instance, asset, day) for instance in (old, new))
                told = {name: value for name, value in ran.items() if name not in RUN_ONLY}
                if day == DAY_KEYS[4]:  # stored before its re-delivery: left for the landing sensor
                    assert "landing_version" not in kept
                    told.pop("landing_version", None)
                assert kept == told, (asset, day)

        # Only the day delivered again since its partition was stored; then a day re-delivered after the move.
        assert _landing_sensor(old, str(landing)) == [DAY_KEYS[4]]
        assert _landing_sensor(new, str(landing)) == [DAY_KEYS[4]]
        _redeliver(landing, DAY_KEYS[11], later=10)
        assert _landing_sensor(new, str(landing)) == [DAY_KEYS[4], DAY_KEYS[11]]

        # The schedules ask for what they asked on the old instance: yesterday, the days missed, a skip too early.
        for name, tick in (
            ("daily_refresh", dt.datetime(2025, 1, 19, 2, tzinfo=dt.UTC)),
            ("daily_refresh", dt.datetime(2025, 1, 21, 2, tzinfo=dt.UTC)),
            ("weekly_scoring", dt.datetime(2025, 1, 13, 3, tzinfo=dt.UTC)),
        ):
            assert _schedule(new, name, tick) == _schedule(old, name, tick), (name, tick)

        # A day run again from the same delivery: the same bytes, the same data versions, nothing Unsynced.
        settings = ChurnSettings(data_url=lake, landing_url=str(history / "landing"))
        versions = {asset: data_versions(new, asset, DAY_KEYS) for asset in CHAIN}
        result = materialize_selected(CHAIN, build_resources(settings), new, DAY_KEYS[9])
        assert result.success
        for asset in CHAIN:
            assert data_versions(new, asset, DAY_KEYS) == versions[asset], asset
            assert stale_partitions(new, all_assets, asset, DAY_KEYS) == [], asset


def test_adopt_refuses_what_it_cannot_adopt_and_follows_churn_app(history, tmp_path):
    lake, landing = str(history / "lake"), str(history / "landing")
    home = instance_home(tmp_path / "home", create_storage=True)
    assert _adopt(home, lake, landing).returncode == 0

    again = _adopt(home, lake, landing)
    assert again.returncode == 2
    assert "already records materialized partitions of this code location's assets: raw_events (18)" in again.stderr
    assert "--only-missing" in again.stderr and "Nothing was recorded" in again.stderr
    missing_only = _adopt(home, lake, landing, "--only-missing")
    assert missing_only.returncode == 0, missing_only.stderr
    assert "  raw_events: 0 partition(s) (18 recorded before, left as they were)" in missing_only.stdout

    empty = _adopt(instance_home(tmp_path / "empty_home"), str(tmp_path / "no_lake"), landing)
    assert empty.returncode == 2
    assert f"{tmp_path / 'no_lake'} stores no partition of any asset" in empty.stderr

    other_app = _adopt(home, lake, landing, "--only-missing", CHURN_APP="puzzle")
    assert other_app.returncode == 2
    assert f"the instance records raw_events stored under {lake}" in other_app.stderr
    assert "CHURN_APP unset, not CHURN_APP=puzzle" in other_app.stderr
    assert "pass --new-app-keys" in other_app.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey(["puzzle", "raw_events"])) == set()
    # The lake's own app, given CHURN_APP from now on: its history recorded under the new keys, as told.
    renamed = _adopt(home, lake, landing, "--new-app-keys", CHURN_APP="puzzle")
    assert renamed.returncode == 0, renamed.stderr
    assert f"  puzzle/raw_events: {DAYS} partition(s)" in renamed.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey(["puzzle", "labels"])) == set(DAY_KEYS)

    # A wrong CHURN_LANDING_URL: recorded without landing versions, every day would be requested again once it is
    # set right. Refused, unless the user says the zone no longer holds the days.
    wrong = str(tmp_path / "no_landing")
    new_home = instance_home(tmp_path / "new_home", create_storage=True)
    no_landing = _adopt(new_home, lake, wrong)
    assert no_landing.returncode == 2
    assert (f"none of the {DAYS} stored day(s) of raw_events ({DAY_KEYS[0]} .. {DAY_KEYS[-1]}) has a complete "
            f"landing day (a _SUCCESS) under CHURN_LANDING_URL ({wrong})") in no_landing.stderr
    assert "--without-landing" in no_landing.stderr and "Nothing was recorded" in no_landing.stderr
    with dg.DagsterInstance.from_config(str(new_home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("raw_events")) == set()
    without = _adopt(new_home, lake, wrong, "--without-landing")
    assert without.returncode == 0, without.stderr
    assert f"raw_events days whose landing day has no _SUCCESS under CHURN_LANDING_URL: {DAYS}" in without.stdout
    with dg.DagsterInstance.from_config(str(new_home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("raw_events")) == set(DAY_KEYS)

    # Under CHURN_APP, over a landing zone that no longer holds the last day and delivered another again since it was
    # stored, and a CHURN_START_DATE after the first day: not refused (some days have their landing day), and what is
    # left out or left for the sensor is named by the app's keys and job, the names a user selects them by.
    pruned = tmp_path / "pruned_landing"
    shutil.copytree(history / "landing", pruned)
    shutil.rmtree(pruned / "events" / f"date={DAY_KEYS[-1]}")
    _redeliver(pruned, DAY_KEYS[4], later=5)
    puzzle_home = instance_home(tmp_path / "puzzle_home", create_storage=True)
    puzzle = _adopt(puzzle_home, lake, str(pruned), CHURN_APP="puzzle", CHURN_START_DATE=DAY_KEYS[1])
    assert puzzle.returncode == 0, puzzle.stderr
    assert f"  puzzle/raw_events: {DAYS - 1} partition(s)" in puzzle.stdout
    assert f"  not recorded: puzzle/raw_events[{DAY_KEYS[0]}]: not partitions of the asset" in puzzle.stdout
    assert (f"left for the landing sensor to refresh: 1 day(s) of puzzle/raw_events stored before their landing "
            f"day's current _SUCCESS, or not surely after it: {DAY_KEYS[4]} (recorded without landing_version: once "
            "turned on, the sensor requests their puzzle_daily_refresh)") in puzzle.stdout
    assert (f"puzzle/raw_events days whose landing day has no _SUCCESS under CHURN_LANDING_URL: 1 ({DAY_KEYS[-1]})"
            in puzzle.stdout)
    with dg.DagsterInstance.from_config(str(puzzle_home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey(["puzzle", "labels"])) == set(DAY_KEYS[1:])
        assert instance.get_materialized_partitions(dg.AssetKey("labels")) == set()


def test_adopt_leaves_out_and_names_the_stored_days_before_churn_start_date(history, tmp_path):
    """A lake kept from before CHURN_START_DATE moved later: its first days are no partition of the assets now, and
    Dagster recorded them all the same, under keys the UI and the schedules never show."""
    home = instance_home(tmp_path / "home", create_storage=True)
    adopted = _adopt(home, str(history / "lake"), str(history / "landing"), CHURN_START_DATE=DAY_KEYS[2])
    assert adopted.returncode == 0, adopted.stderr
    assert f"  raw_events: {DAYS - 2} partition(s): {DAY_KEYS[2]} .. {DAY_KEYS[-1]}" in adopted.stdout
    assert f"not recorded: raw_events[{DAY_KEYS[0]}, {DAY_KEYS[1]}]: not partitions of the asset" in adopted.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in CHAIN:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAY_KEYS[2:]), asset


def test_only_missing_after_a_partial_adoption_gives_the_versions_of_one_adoption(history, tmp_path):
    # An instance that records part of labels (an adoption stopped part-way), then --only-missing records the rest
    # under the data version one clean adoption gives them, as the old instance's range run did.
    lake = tmp_path / "lake"
    shutil.copytree(history / "lake", lake)
    clean = lake / "raw_events_quarantine" / f"date={DAY_KEYS[6]}" / "data.parquet"  # as a day with no bad row
    pl.read_parquet(clean).clear().write_parquet(clean)
    later = tmp_path / "later"
    later.mkdir()
    for day in DAY_KEYS[10:]:
        shutil.move(lake / "labels" / f"date={day}", later / f"date={day}")
    landing = tmp_path / "landing"
    shutil.copytree(history / "landing", landing)
    _redeliver(landing, DAY_KEYS[4], later=5)
    home = instance_home(tmp_path / "home", create_storage=True)
    first = _adopt(home, str(lake), str(landing))
    assert first.returncode == 0 and "left for the landing sensor to refresh: 1 day(s)" in first.stdout, first.stdout
    for day in DAY_KEYS[10:]:
        shutil.move(later / f"date={day}", lake / "labels" / f"date={day}")

    rest = _adopt(home, str(lake), str(landing), "--only-missing")

    assert rest.returncode == 0, rest.stderr
    # The day left for the sensor was recorded by the first adoption: this one left nothing more for it.
    assert "left for the landing sensor to refresh: none" in rest.stdout
    assert f"  labels: 8 partition(s): {DAY_KEYS[10]} .. {DAY_KEYS[-1]} (10 recorded before" in rest.stdout
    with (dg.DagsterInstance.from_config(str(history / "old_home")) as old,
          dg.DagsterInstance.from_config(str(home)) as new):
        assert data_versions(new, "labels", DAY_KEYS[10:]) == data_versions(old, "labels", DAY_KEYS[10:])
        assert stale_partitions(new, all_assets, "labels", DAY_KEYS) == []
        # The day whose quarantine is empty shows 0 quarantined rows, as its run records it, not no count at all.
        kept = _latest_metadata(new, "raw_events", DAY_KEYS[6])
        assert kept["quarantined"].value == 0 and not any(name.startswith("quarantined/") for name in kept), kept


def test_what_adopt_cannot_record_is_named_and_the_rest_recorded(history, tmp_path):
    # A partition file that is not Parquet; the folder of an asset an older release wrote and this one dropped.
    lake = tmp_path / "lake"
    shutil.copytree(history / "lake", lake)
    broken = lake / "features" / f"date={DAY_KEYS[3]}" / "data.parquet"
    broken.write_bytes(b"not parquet")
    shutil.copytree(lake / "labels", lake / "sessions")
    quarantine = sorted((lake / "raw_events_quarantine").glob("date=*/data.parquet"))[0]
    quarantine.write_bytes(b"not parquet either")
    clean = lake / "raw_events_quarantine" / f"date={DAY_KEYS[6]}" / "data.parquet"  # as a day with no bad row
    pl.read_parquet(clean).clear().write_parquet(clean)
    for folder in (clean.parent, lake / "features" / f"date={DAY_KEYS[7]}"):  # beside a table: no table, no partition
        (folder / "data.parquet.tmp").write_bytes(b"a write that stopped")
    home = instance_home(tmp_path / "home", create_storage=True)

    adopted = _adopt(home, str(lake), str(history / "landing"))

    assert adopted.returncode == 0, adopted.stderr
    assert f"  not recorded: features[{DAY_KEYS[3]}]: {broken} is not a Parquet table" in adopted.stdout
    assert f"  not recorded: raw_events_quarantine[{quarantine.parent.name[5:]}]: {quarantine} is not a Parquet table" \
        in adopted.stdout
    assert "  not recorded: sessions: folders of the lake that are no asset of this code location" in adopted.stdout
    assert adopted.stdout.count("not recorded") == 3, adopted.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("features")) == set(DAY_KEYS) - {DAY_KEYS[3]}
        assert instance.get_materialized_partitions(dg.AssetKey("labels")) == set(DAY_KEYS)
        assert instance.get_materialized_partitions(dg.AssetKey("raw_events")) == set(DAY_KEYS)
        # The day whose quarantine is empty shows 0 quarantined rows, as its run records it, not no count at all.
        kept = _latest_metadata(instance, "raw_events", DAY_KEYS[6])
        assert kept["quarantined"].value == 0 and not any(name.startswith("quarantined/") for name in kept), kept


def test_another_apps_lake_is_one_under_this_lake_not_one_whose_path_starts_alike(instance, tmp_path):
    """The instance records fitness/labels stored in ``lake_old``, a sibling whose path starts with this lake's: that
    is no sign this lake is fitness's, so it is adopted; a fitness/labels stored under this lake is, and is refused."""
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table(lake.table_url("labels", "date", "2025-01-05"), pl.DataFrame({"user_id": ["u1"]}))
    sibling = f"{tmp_path / 'lake_old'}/labels/date=2025-01-05/data.parquet"

    def fitness_stored(uri: str) -> None:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=dg.AssetKey(["fitness", "labels"]), partition="2025-01-05", metadata={"dagster/uri": uri}))

    fitness_stored(sibling)
    report = adopt(lake, instance, all_assets, {}, without_landing=True)
    assert report.recorded["labels"] == ["2025-01-05"]
    fitness_stored(lake.table_url("labels", "date", "2025-01-05"))
    with pytest.raises(AdoptionRefused, match=f"the instance records fitness/labels stored under {lake.root_url}"):
        adopt(lake, instance, all_assets, {}, only_missing=True, without_landing=True)


def test_the_next_months_model_finds_the_adopted_champion(tmp_path):
    lake = lake_with_models(tmp_path / "models", {MARCH: synthetic_training_set(MARCH, seed=21)})
    home = instance_home(tmp_path / "home", create_storage=True)
    adopted = _adopt(home, lake, str(tmp_path / "no_landing"))
    assert adopted.returncode == 0, adopted.stderr
    assert f"  model: 1 partition(s): {MARCH} .. {MARCH}" in adopted.stdout
    champion = ModelIOManager(base_url=lake).read("model", MARCH).card
    from churn_assets.assets.ml.model import model

    settings = ChurnSettings(data_url=lake, landing_url=str(tmp_path / "no_landing"))
    assets = [training_set_stub({APRIL: synthetic_training_set(APRIL, seed=22)}), model]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        recorded = instance.fetch_materializations(dg.AssetKey("model"), limit=1).records[0].asset_materialization
        assert recorded.metadata["model_version"].value == champion["model_version"]
        assert recorded.metadata["decision"].value == champion["selection"]["decision"]
        result = dg.materialize(assets, resources=build_resources(settings), instance=instance, partition_key=APRIL)
        assert result.success
        april = ModelIOManager(base_url=lake).read("model", APRIL).card
        assert april["selection"]["champion_version"] == champion["model_version"]
        assert stale_partitions(instance, assets, "model", [MARCH, APRIL]) == []

    # A model whose file no longer matches its card: named and left out by a new instance's adoption; not named by
    # --only-missing over the instance that records it already (it is not left out there).
    (Path(lake) / "model" / f"month={MARCH}" / "model.ubj").write_bytes(b"not the model its card describes")
    fresh = instance_home(tmp_path / "fresh_home", create_storage=True)
    broken = _adopt(fresh, lake, str(tmp_path / "no_landing"))
    assert broken.returncode == 0, broken.stderr
    assert f"  not recorded: model[{MARCH}]: " in broken.stdout
    with dg.DagsterInstance.from_config(str(fresh)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("model")) == {APRIL}
    again = _adopt(home, lake, str(tmp_path / "no_landing"), "--only-missing")
    assert again.returncode == 0, again.stderr
    assert "not recorded" not in again.stdout


def test_the_drift_sensor_passes_over_adopted_reports(instance):
    verdict = {"share_of_drifted_columns": 0.9, "dataset_drift": True}
    record_outside_run(instance, "drift_report", "2025-03-09", {"share_of_drifted_columns": 0.1}, "v0", "a run's")
    record_outside_run(instance, "drift_report", "2025-03-10", verdict, "v1", "adopted", {ADOPTED_TAG: "true"})
    sensor = build_drift_retraining_sensor()
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=REPOSITORY))
    assert not first.run_requests
    # The skip says why a report over the threshold asked for nothing (it said "none at or over 0.5"), and how many
    # of the new reports were adopted ones.
    assert first.skip_message == ("2 new drift report(s), none at or over 0.5 "
                                  "(1 recorded by churn-assets adopt, passed over whatever their share)")
    record_outside_run(instance, "drift_report", "2025-03-11", verdict, "v2", "a run's")
    second = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=first.cursor, repository_def=REPOSITORY)
    )
    assert [r.partition_key for r in second.run_requests] == ["2025-03"]


def test_adopted_predictions_and_drift_reports_keep_what_their_run_recorded(tmp_path):
    """model[M] trained, then predictions and drift_report of two days of M scored in one run through the old
    instance; adopted into a new one, each day shows the run's scores (users, highest_risk, the model's version and
    card: horizon, bands) and drift verdict, its data version, and nothing Unsynced."""
    from churn_assets.assets.ml.model import model
    from churn_assets.assets.ml.predictions import predictions
    from churn_assets.assets.monitoring.drift_report import drift_report

    days = ["2025-03-10", "2025-03-11"]
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "no_landing"))
    features = {day: synthetic_features(dt.date.fromisoformat(day), users=300, seed=n) for n, day in enumerate(days)}
    assets = [training_set_stub({MARCH: synthetic_training_set(MARCH, seed=21)}), model, features_stub(features),
              predictions, drift_report]
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "old_home", create_storage=True))) as old:
        assert materialize_selected(["training_set", "model"], build_resources(settings), old, MARCH,
                                    assets=assets).success
        assert materialize_selected(["features", "predictions", "drift_report"], build_resources(settings), old,
                                    days[0], days[-1], assets=assets).success
    home = instance_home(tmp_path / "new_home", create_storage=True)

    adopted = _adopt(home, settings.data_url, settings.landing_url)

    assert adopted.returncode == 0, adopted.stderr
    assert "not recorded" not in adopted.stdout  # (a drift report's summary beside its table is no partition)
    with (dg.DagsterInstance.from_config(str(tmp_path / "old_home")) as old,
          dg.DagsterInstance.from_config(str(home)) as new):
        assert data_versions(new, "model", [MARCH]) == data_versions(old, "model", [MARCH])
        assert stale_partitions(new, assets, "model", [MARCH]) == []
        # The drift sensor, turned on over the new instance, passes over the adopted reports: the instance before
        # acted upon them (else a report over the threshold requested a retraining again).
        tick = build_drift_retraining_sensor().evaluate_tick(
            dg.build_sensor_context(instance=new, repository_def=REPOSITORY)
        )
        assert not tick.run_requests
        assert tick.skip_message.endswith("(2 recorded by churn-assets adopt, passed over whatever their share)")
        for asset, restored in (("predictions", PREDICTIONS_RESTORED), ("drift_report", DRIFT_RESTORED)):
            assert new.get_materialized_partitions(dg.AssetKey(asset)) == set(days), asset
            versions = data_versions(old, asset, days)
            assert None not in versions.values() and data_versions(new, asset, days) == versions, asset
            assert stale_partitions(new, assets, asset, days) == [], asset
            for day in days:
                ran, kept = (_latest_metadata(instance, asset, day) for instance in (old, new))
                for name in restored:
                    assert name in ran, f"{asset}[{day}]: its run recorded no {name}"
                    assert kept.get(name) == ran[name], \
                        f"{asset}[{day}] {name}: adopted {kept.get(name)}, its run recorded {ran[name]}"

    # model[M] trained again after those days were scored (its card names another version): the days keep the
    # version that scored them, and nothing of the new card (its horizon, threshold and bands are not theirs).
    card = tmp_path / "lake" / "model" / f"month={MARCH}" / "model_card.json"
    card.write_text(json.dumps(json.loads(card.read_text()) | {"model_version": "trained-again"}))
    # And a drift report written before 2026-12-01, with report.html and summary.json beside its table: its verdict
    # is read from the old summary, its links name the files it has.
    folder = tmp_path / "lake" / "drift_report" / f"date={days[1]}"
    (folder / REPORT_FILE).rename(folder / OLD_REPORT_FILE)
    (folder / SUMMARY_FILE).rename(folder / OLD_SUMMARY_FILE)
    later = instance_home(tmp_path / "later_home", create_storage=True)
    again = _adopt(later, settings.data_url, settings.landing_url)
    assert again.returncode == 0 and "not recorded" not in again.stdout, again.stdout + again.stderr
    with (dg.DagsterInstance.from_config(str(tmp_path / "old_home")) as old,
          dg.DagsterInstance.from_config(str(later)) as instance):
        kept = _latest_metadata(instance, "predictions", days[0])
        ran, drift = (_latest_metadata(each, "drift_report", days[1]) for each in (old, instance))
    assert kept["model_version"] != "trained-again" and "horizon_days" not in kept, kept
    assert {name: drift.get(name) for name in DRIFT_RESTORED if name not in ("report", "summary")} == {
        name: ran[name] for name in DRIFT_RESTORED if name not in ("report", "summary")}
    assert (drift["report"].value, drift["summary"].value) == (
        str(folder / OLD_REPORT_FILE), str(folder / OLD_SUMMARY_FILE))


@pytest.mark.s3
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 binaries are not installed")
def test_adopt_into_the_production_instance(history, production_home):
    adopted = _adopt(production_home, str(history / "lake"), str(history / "landing"))
    assert adopted.returncode == 0, adopted.stderr
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        for asset in CHAIN:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAY_KEYS)
            assert stale_partitions(instance, all_assets, asset, DAY_KEYS) == []
        assert _landing_sensor(instance, str(history / "landing")) == []


@pytest.mark.s3
def test_adopt_a_lake_on_s3(history, s3_server, tmp_path):
    lake = f"s3://lake/{tmp_path.name}"
    settings = ChurnSettings(data_url=lake, landing_url=str(history / "landing"))
    keys = DAY_KEYS[:8]
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "old_home", create_storage=True))) as old:
        assert materialize_selected(CHAIN, build_resources(settings), old, keys[0], keys[-1]).success
        home = instance_home(tmp_path / "new_home", create_storage=True)
        adopted = _adopt(home, lake, str(history / "landing"))
        assert adopted.returncode == 0, adopted.stderr
        assert "left for the landing sensor to refresh: none" in adopted.stdout
        with dg.DagsterInstance.from_config(str(home)) as new:
            for asset in CHAIN:
                assert new.get_materialized_partitions(dg.AssetKey(asset)) == set(keys)
                assert data_versions(new, asset, keys) == data_versions(old, asset, keys)
                assert stale_partitions(new, all_assets, asset, keys) == []
            assert _landing_sensor(new, str(history / "landing")) == DAY_KEYS[8:]  # the days never stored


def _adopting(home: Path, lake: str, landing: str, *args: str, **env: str) -> subprocess.Popen:
    """``churn-assets adopt`` started as :func:`_adopt` runs it, left running."""
    return subprocess.Popen([executable("churn-assets"), "adopt", *args], env=_adopt_env(home, lake, landing, env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.s3
def test_adopt_stopped_while_it_reads_the_lake_says_nothing_was_recorded(history, s3_server, tmp_path):
    """SIGTERM while adopt read the lake's files (a Kubernetes Job evicted) ended it at once (exit 143, no word of what
    stood); S3 unreachable for the landing zone printed a traceback. Now each says that nothing was recorded and to
    run it again, and exits 130 or 1; the instance records nothing."""
    lake = f"s3://lake/{tmp_path.name}"
    settings = ChurnSettings(data_url=lake, landing_url=str(history / "landing"))
    keys = DAY_KEYS[:4]
    home = instance_home(tmp_path / "new_home", create_storage=True)
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "old_home", create_storage=True))) as old:
        assert materialize_selected(CHAIN, build_resources(settings), old, keys[0], keys[-1]).success
    proxy = HoldingProxy(s3_server.endpoint)
    try:
        proxy.hold_reads(f"{tmp_path.name}/features/date={keys[1]}/data.parquet")
        adopting = _adopting(home, lake, str(history / "landing"), AWS_ENDPOINT_URL=proxy.endpoint,
                             AWS_MAX_ATTEMPTS="1")
        assert proxy.held.wait(120), adopting.communicate(timeout=60)
        adopting.terminate()  # SIGTERM, while a features day is read
        proxy.release()
        _, stopped = adopting.communicate(timeout=120)
    finally:
        proxy.close()
    assert adopting.returncode == 130, stopped
    assert "churn-assets adopt: stopped before recording anything, while reading the lake: interrupted (Ctrl-C or " \
           "SIGTERM)" in stopped, stopped
    assert "nothing was recorded (the instance is as it was): run churn-assets adopt again" in stopped
    assert "Traceback" not in stopped
    landing = "s3://landing/nowhere"  # the landing zone on an S3 that does not answer
    refused = _adopt(home, lake, landing, AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    assert refused.returncode == 1, refused.stderr
    assert "stopped before recording anything, while reading the landing zone: StorageUnreachableError" in \
        refused.stderr, refused.stderr
    assert "nothing was recorded" in refused.stderr and "Traceback" not in refused.stderr
    with dg.DagsterInstance.from_config(str(home)) as new:
        assert all(not new.get_materialized_partitions(dg.AssetKey(asset)) for asset in CHAIN)
    adopted = _adopt(home, lake, str(history / "landing"), AWS_ENDPOINT_URL=s3_server.endpoint)
    assert adopted.returncode == 0, adopted.stderr


@pytest.mark.s3
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 binaries are not installed")
def test_adopt_stopped_while_it_records_says_what_it_recorded_and_only_missing_finishes(
    history, production_home, postgres, monkeypatch
):
    """SIGTERM while adopt recorded the lake (its first write waiting on a lock the test holds on the event log)
    ended it at once, exit 143, with no word of what it had recorded. Now the record under way is finished, it says
    what it recorded and to run it again with --only-missing, and exits 130; --only-missing then records the rest as
    one whole adoption would have."""
    import psycopg2

    created = psycopg2.connect(host=postgres.host, port=postgres.port, user=SUPERUSER, dbname=postgres.db_name)
    created.autocommit = True
    with created.cursor() as cursor:  # a database of its own: the module's server holds other tests' adoptions
        cursor.execute("CREATE DATABASE adopt_stopped")
    created.close()
    monkeypatch.setenv("DAGSTER_PG_DB", "adopt_stopped")
    with dg.DagsterInstance.from_config(str(production_home)):
        pass  # the instance's tables created
    lock = psycopg2.connect(host=postgres.host, port=postgres.port, user=SUPERUSER, dbname="adopt_stopped")
    try:
        with lock.cursor() as cursor:
            cursor.execute("LOCK TABLE event_logs IN SHARE MODE")  # reads go on, writes wait
        adopting = _adopting(production_home, str(history / "lake"), str(history / "landing"))
        deadline = time.monotonic() + 120
        while not postgres.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND query ILIKE 'INSERT INTO event_logs%%'")[0][0]:
            assert adopting.poll() is None and time.monotonic() < deadline, adopting.communicate(timeout=60)
            time.sleep(0.05)  # (a wait for the state, not a guess of how long it takes)
        adopting.send_signal(signal.SIGTERM)  # while its first record waits
    finally:
        lock.rollback()
        lock.close()
    _, stopped = adopting.communicate(timeout=120)
    assert adopting.returncode == 130, stopped
    first = f"raw_events[{DAY_KEYS[0]}]"
    assert f"stopped part-way, after recording {first} in the Dagster instance: interrupted" in stopped, stopped
    assert f"raw_events: 1 partition(s): {DAY_KEYS[0]} .. {DAY_KEYS[0]}" in stopped
    assert "run churn-assets adopt again with --only-missing" in stopped and "Traceback" not in stopped
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("raw_events")) == {DAY_KEYS[0]}
        assert all(not instance.get_materialized_partitions(dg.AssetKey(asset)) for asset in CHAIN[1:])
        assert data_versions(instance, "raw_events", DAY_KEYS[:1])[DAY_KEYS[0]] is not None  # recorded whole
    rest = _adopt(production_home, str(history / "lake"), str(history / "landing"), "--only-missing")
    assert rest.returncode == 0, rest.stderr
    with dg.DagsterInstance.from_config(str(history / "old_home")) as old, \
            dg.DagsterInstance.from_config(str(production_home)) as instance:
        for asset in CHAIN:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAY_KEYS)
            assert data_versions(instance, asset, DAY_KEYS) == data_versions(old, asset, DAY_KEYS)
            assert stale_partitions(instance, all_assets, asset, DAY_KEYS) == []
