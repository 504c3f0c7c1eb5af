"""The production instance: deploy/dagster.yaml pointed at a private PostgreSQL server and at compute logs
on the loopback S3 server; a partition materialized through it leaves its run and events in PostgreSQL."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from churn_assets_tests.landing_helpers import INGEST, amplitude_row, jsonl, write_landing_day
from churn_assets_tests.postgres_server import PostgresServer, postgres_available

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_YAML = ROOT / "deploy" / "dagster.yaml"

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 binaries are not installed"),
]


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def production_home(tmp_path, postgres, s3_server, monkeypatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, minus the ECS run launcher (no ECS on loopback)."""
    for name, value in postgres.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", "lake")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_PREFIX", f"compute-logs/{tmp_path.name}")
    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    del config["run_launcher"]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def test_production_yaml_has_the_promised_shape():
    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    assert config["run_retries"] == {"enabled": True, "max_retries": 1}
    # Settings come from the environment: no literal host, password or bucket in the file.
    db = config["storage"]["postgres"]["postgres_db"]
    assert all(isinstance(db[k], dict) and "env" in db[k] for k in ("hostname", "port", "db_name", "username", "password"))
    assert "env" in config["compute_logs"]["config"]["bucket"]


def test_ecs_run_launcher_config_is_valid(monkeypatch):
    monkeypatch.setenv("DAGSTER_ECS_CLUSTER", "churn")
    launcher_config = yaml.safe_load(PRODUCTION_YAML.read_text())["run_launcher"]["config"]
    result = process_config(EcsRunLauncher.config_type(), launcher_config)
    assert result.success, result.errors
    assert result.value["run_task_kwargs"]["cluster"] == "churn"
    assert "CHURN_DATA_URL" in result.value["env_vars"]


def test_materialize_through_the_production_instance(production_home, postgres, s3_server, local_resources, local_settings):
    day = "2025-01-01"
    rows = [amplitude_row(f"e{i}", f"u{i % 3}", f"{day} 0{i}:00:00.000000") for i in range(6)]
    write_landing_day(local_settings.landing_url, day, {"part-00000.jsonl": jsonl(rows)})

    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        result = dg.materialize(INGEST, resources=local_resources, instance=instance, partition_key=day)
        assert result.success
        run_id = result.run_id

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

    # A second instance (another process in production) sees the same run and its materializations.
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        record = instance.get_latest_materialization_event(dg.AssetKey("user_daily"))
        assert record.run_id == run_id
        assert record.asset_materialization.metadata["dagster/row_count"].value == 3


def test_compute_logs_go_to_s3(production_home, s3_server):
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        manager = instance.compute_log_manager
        log_key = ["churn", "test", "step"]
        with manager.capture_logs(log_key):
            print("hello from a step")
        data = manager.get_log_data(log_key)
        assert b"hello from a step" in (data.stdout or b"")
        prefix = instance.compute_log_manager._s3_prefix  # noqa: SLF001 - where this instance writes
    keys = s3_server.keys("lake", prefix)
    assert any(key.endswith(".out") for key in keys), keys
