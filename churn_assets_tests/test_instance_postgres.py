"""The production instance: deploy/dagster.yaml pointed at a private PostgreSQL server and at compute logs
on the loopback S3 server. A partition materialized through it leaves its run and events in PostgreSQL,
where Dagster's stock PostgreSQL storage reads them; its event log keeps one connection, and survives
losing it."""

import json
import os
import tempfile
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy import event

from churn_assets.instance.postgres import PooledPostgresEventLogStorage
from churn_assets_tests.counted_asset import RANGE, check_rows, counted, counted_each_day
from churn_assets_tests.landing_helpers import INGEST, amplitude_row, jsonl, write_landing_day
from churn_assets_tests.postgres_server import PRODUCTION_YAML, PostgresServer, postgres_available
from churn_assets_tests.retention import EXPECTED, ticks_kept_after_a_daemon_tick

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 binaries are not installed"),
]


@pytest.fixture
def stock_home(tmp_path, production_home) -> Path:
    """A DAGSTER_HOME on the same database with Dagster's stock PostgreSQL storage (``storage: postgres``)."""
    config = yaml.safe_load((production_home / "dagster.yaml").read_text())
    home = tmp_path / "stock_home"
    home.mkdir()
    stock = {"storage": {"postgres": config["event_log_storage"]["config"]}, "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(stock))
    return home


def test_production_yaml_has_the_promised_shape():
    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    storages = ("run_storage", "event_log_storage", "schedule_storage")
    assert [config[s]["class"] for s in storages] == [
        "PostgresRunStorage", "PooledPostgresEventLogStorage", "PostgresScheduleStorage"
    ]
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    assert config["run_retries"] == {"enabled": True, "max_retries": 1}
    for storage in storages:
        # One database for all three, its settings from the environment: no literal host or password.
        db = config[storage]["config"]["postgres_db"]
        assert db == {
            "hostname": {"env": "DAGSTER_PG_HOST"},
            "port": {"env": "DAGSTER_PG_PORT"},
            "db_name": {"env": "DAGSTER_PG_DB"},
            "username": {"env": "DAGSTER_PG_USERNAME"},
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "scheme": "postgresql+psycopg2",
        }
    assert "env" in config["compute_logs"]["config"]["bucket"]


def test_ecs_run_launcher_config_is_valid(monkeypatch):
    monkeypatch.setenv("DAGSTER_ECS_CLUSTER", "churn")
    launcher_config = yaml.safe_load(PRODUCTION_YAML.read_text())["run_launcher"]["config"]
    result = process_config(EcsRunLauncher.config_type(), launcher_config)
    assert result.success, result.errors
    assert result.value["run_task_kwargs"]["cluster"] == "churn"
    assert "CHURN_DATA_URL" in result.value["env_vars"]


def test_materialize_through_the_production_instance(
    production_home, postgres, s3_server, local_resources, local_settings
):
    day = "2025-01-01"
    rows = [amplitude_row(f"e{i}", f"u{i % 3}", f"{day} 0{i}:00:00.000000") for i in range(6)]
    write_landing_day(local_settings.landing_url, day, {"part-00000.jsonl": jsonl(rows)})

    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        result = dg.materialize(INGEST, resources=local_resources, instance=instance, partition_key=day)
        assert result.success
        run_id = result.run_id
    assert not Path("/tmp", run_id).exists()  # the run's compute logs were staged in the test's folder

    # Straight from PostgreSQL, not through Dagster's API.
    ((status, job),) = postgres.query("select status, pipeline_name from runs where run_id = %s", run_id)
    assert status == "SUCCESS"
    materialized = postgres.query(
        "select asset_key, partition from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'"
        " order by id", run_id,
    )
    assert {(json.loads(key)[0], partition) for key, partition in materialized} == {
        ("raw_events", day), ("install_times", day), ("user_daily", day),
    }
    (event_count,) = postgres.query("select count(*) from event_logs where run_id = %s", run_id)[0]
    assert event_count > 10

    # A second instance (another process in production, here the webserver's, which replaces the event
    # log's pool with its own) sees the same run and its materializations.
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        instance.optimize_for_webserver(statement_timeout=5000, pool_recycle=3600, max_overflow=10)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        record = instance.get_latest_materialization_event(dg.AssetKey("user_daily"))
        assert record.run_id == run_id
        assert record.asset_materialization.metadata["dagster/row_count"].value == 3


def test_compute_logs_go_to_s3(production_home, s3_server):
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        manager = instance.compute_log_manager
        log_key = ["churn", production_home.parent.name, "step"]
        with manager.capture_logs(log_key):
            print("hello from a step")
        data = manager.get_log_data(log_key)
        assert b"hello from a step" in (data.stdout or b"")
        prefix = instance.compute_log_manager._s3_prefix  # noqa: SLF001 - where this instance writes
    keys = s3_server.keys("lake", prefix)
    assert any(key.endswith(".out") for key in keys), keys
    assert not Path("/tmp", *log_key[:-1]).exists()  # staged in the test's folder, not in /tmp


def test_compute_logs_are_staged_and_kept_in_a_folder_of_their_own(production_home, s3_server):
    """A step's log is deleted from the process's disk once uploaded (empty folders stay); a process that shows it (the
    webserver) downloads it and keeps it forever. Both happen under ``local_dir``: deploy/dagster.yaml names a folder
    of its own for it, which can be emptied by age, instead of the top of /tmp (Dagster's default)."""
    configured = yaml.safe_load(PRODUCTION_YAML.read_text())["compute_logs"]["config"].get("local_dir")
    assert configured and Path(configured).is_absolute() and Path(configured) != Path(tempfile.gettempdir())
    local_dir = Path(yaml.safe_load((production_home / "dagster.yaml").read_text())["compute_logs"]["config"]
                     ["local_dir"])
    log_key = ["churn", production_home.parent.name, "step"]
    with dg.DagsterInstance.from_config(str(production_home)) as run_task:
        with run_task.compute_log_manager.capture_logs(log_key):
            print("hello from a step")
    assert [p for p in local_dir.rglob("*") if p.is_file()] == []
    with dg.DagsterInstance.from_config(str(production_home)) as webserver:
        assert b"hello from a step" in (webserver.compute_log_manager.get_log_data(log_key).stdout or b"")
    kept = [p.relative_to(local_dir) for p in local_dir.rglob("*") if p.is_file()]
    assert Path("churn", production_home.parent.name, "step.out") in kept


def test_the_daemon_purges_old_sensor_ticks_in_postgresql(production_home):
    """deploy/dagster.yaml's retention, applied by the daemon's own purge to PostgreSQL's ticks: none kept forever."""
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert ticks_kept_after_a_daemon_tick(instance) == EXPECTED


def test_event_batches_are_stored_as_one_by_one(production_home, stock_home, postgres, monkeypatch):
    """A range run's planned events and materializations, stored a batch at a time (the production
    instance turns batches on), and a check's result for each partition, held back and stored together,
    read back by Dagster's stock storage exactly as when stored one by one."""
    stored = {}
    for batch_size in ("0", "1000"):
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
        with dg.DagsterInstance.from_config(str(production_home)) as instance:
            result = dg.materialize([counted, counted_each_day], instance=instance, tags=RANGE)
            assert result.success
        stored[batch_size] = _stored(stock_home, postgres, result.run_id)
    assert stored["1000"] == stored["0"]
    assert [row[:3] for row in stored["0"]["checks"]] == [
        (f"2025-01-0{d}", "counted_each_day", "FAILED" if d == 3 else "SUCCEEDED") for d in range(1, 6)
    ]
    assert all(row[4:] == (True, True) for row in stored["0"]["checks"])
    assert stored["0"]["materializations"] == [(f"2025-01-0{d}", d) for d in range(1, 6)]
    assert stored["0"]["planned"] == [f"2025-01-0{d}" for d in range(1, 6)]
    assert stored["0"]["latest"] == ("2025-01-05", True) and stored["0"]["tags"]


def test_the_production_instance_turns_on_event_batches(production_home, monkeypatch):
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    with dg.DagsterInstance.from_config(str(production_home)):
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "1000"


def test_a_run_keeps_one_connection_and_survives_losing_it(production_home, postgres):
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        # The first run also looks up, once per process, which of Dagster's tables and indexes exist.
        assert dg.materialize([counted], instance=instance, tags=RANGE).success
        connections = []
        event.listen(instance.event_log_storage._engine, "connect", lambda *_: connections.append(1))  # noqa: SLF001
        result = dg.materialize([counted], instance=instance, tags=RANGE)
        assert result.success
        # Every event of the run on the connection kept open (dagster-postgres opens ~3 per asset event).
        assert len(instance.all_logs(result.run_id)) >= 20 and connections == []

        # The server drops it (a restart, a failover, an idle timeout): the next run connects again.
        postgres.query(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
            postgres.db_name,
        )
        again = dg.materialize([counted], instance=instance, partition_key="2025-01-07")
        assert again.success and len(connections) == 1
        assert instance.get_latest_materialization_event(dg.AssetKey("counted")).run_id == again.run_id


def _stored(stock_home: Path, postgres: PostgresServer, run_id: str) -> dict:
    """What Dagster's stock PostgreSQL storage reads back of a run of ``counted``."""
    key = dg.AssetKey("counted")
    with dg.DagsterInstance.from_config(str(stock_home)) as stock:
        assert type(stock.event_log_storage).__name__ == "PostgresEventLogStorage"
        (asset,) = stock.get_asset_records([key])
        records = stock.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100)
        planned = stock.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=100
        )
        latest = asset.asset_entry.last_materialization_record
        return {
            "events": [(e.dagster_event_type, e.step_key) for e in stock.all_logs(run_id)],
            "checks": check_rows(stock, run_id),
            "materializations": sorted(
                (r.partition_key, r.asset_materialization.metadata["dagster/row_count"].value)
                for r in records.records
            ),
            "planned": sorted(r.partition_key for r in planned.records),
            "latest": (latest.partition_key, asset.asset_entry.last_run_id == run_id),
            "tags": postgres.query(
                "select t.asset_key, t.key from asset_event_tags t join event_logs e on e.id = t.event_id"
                " where e.run_id = %s order by 1, 2",
                run_id,
            ),
        }
