"""The local instance of dagster.yaml: Dagster's SQLite storage, with an event log that keeps its
connections open. Runs land where Dagster's stock storage reads them, and open files stay bounded."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.schema import AssetEventTagsTable, AssetKeyTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from sqlalchemy.exc import OperationalError

from churn_assets.assets import check_days
from churn_assets.instance import RUN_SHARDS_KEPT, PooledSqliteEventLogStorage
from churn_assets_tests.counted_asset import RANGE, check_rows, counted, counted_each_day, counted_is_positive
from churn_assets_tests.dagster_processes import instance_home


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = instance_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return path


def test_runs_are_readable_by_dagsters_stock_sqlite_storage(home: Path, tmp_path: Path):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        result = dg.materialize([counted], instance=instance, tags=RANGE)
        assert result.success
        events = len(instance.all_logs(result.run_id))
        # Commits do not fsync: WAL with synchronous=NORMAL (1) on the run's shard and the index.
        storage = instance.event_log_storage
        for connection in (storage.run_connection(result.run_id), storage.index_connection()):
            with connection as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1

    # The same folder opened with Dagster's defaults (no event_log_storage entry) sees the same history.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as stock:
        assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert len(stock.all_logs(result.run_id)) == events
        assert stock.get_materialized_partitions(dg.AssetKey("counted")) == {
            "2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05"
        }
        latest = stock.get_latest_materialization_event(dg.AssetKey("counted"))
        assert latest.asset_materialization.metadata["dagster/row_count"].value in range(1, 6)


def test_a_killed_process_keeps_the_history_of_its_runs(home: Path):
    """Without an fsync per commit, what a run committed still survives its process being killed."""
    script = (
        "import os, dagster as dg\n"
        "from churn_assets_tests.counted_asset import RANGE, counted\n"
        "result = dg.materialize([counted], instance=dg.DagsterInstance.get(), tags=RANGE)\n"
        "print(result.run_id, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert child.returncode == -9, child.stderr[-2000:]
    run_id = child.stdout.split()[-1]
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as stock:
        assert stock.get_run_by_id(run_id).is_success
        assert stock.get_materialized_partitions(dg.AssetKey("counted")) == {
            "2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05"
        }


def test_open_connections_stay_bounded_and_wipe_closes_them(home: Path):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        run_ids = [
            dg.materialize([counted], instance=instance, partition_key=f"2025-01-0{day}").run_id
            for day in range(1, 7)
        ]
        assert len(run_ids) > RUN_SHARDS_KEPT + 1
        shards = storage.open_shards()
        assert "index" in shards
        assert len(shards) <= RUN_SHARDS_KEPT + 1
        assert run_ids[-1] in shards  # the newest run is still open
        assert run_ids[0] not in shards

        # Every run is still readable, whether its connection was kept or closed.
        assert all(instance.get_run_by_id(run_id).is_success for run_id in run_ids)
        assert all(len(instance.all_logs(run_id)) > 0 for run_id in run_ids)

        instance.wipe()
        assert storage.open_shards() in ([], ["index"])
        assert not [p for p in (home / "history" / "runs").glob("*.db") if p.stem != "index"]
        # And the storage keeps working after the wipe.
        assert dg.materialize([counted], instance=instance, partition_key="2025-01-03").success
        assert instance.get_materialized_partitions(dg.AssetKey("counted")) == {"2025-01-03"}


def _schema(database: Path) -> list[tuple]:
    """A SQLite file's tables and indexes as its DDL, and its Alembic revision."""
    with sqlite3.connect(database) as conn:
        tables = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        return [*tables, *conn.execute("SELECT version_num FROM alembic_version").fetchall()]


def test_a_runs_shard_is_the_one_dagster_creates(home: Path, tmp_path: Path):
    """Each run's shard is a copy of an empty shard made once: the same tables, indexes and Alembic revision
    as Dagster's own storage gives a run, and kept out of Dagster's sight (no run of its name)."""
    with dg.DagsterInstance.get() as instance:
        first = dg.materialize([counted], instance=instance, partition_key="2025-01-01").run_id
        second = dg.materialize([counted], instance=instance, partition_key="2025-01-02").run_id
        assert sorted(instance.event_log_storage.get_all_run_ids()) == sorted([first, second])
        assert len(instance.all_logs(second)) > 0
    runs = home / "history" / "runs"
    [template] = runs.glob(".run-shard-*.template")
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    with stock.run_connection("a_run"):
        pass
    assert _schema(template) == _schema(tmp_path / "stock" / "a_run.db")
    with sqlite3.connect(runs / f"{second}.db") as conn:
        assert conn.execute("SELECT count(*) FROM event_logs").fetchone()[0] == len(
            dg.DagsterInstance.from_config(str(home)).all_logs(second)
        )
    assert not list(runs.glob("*.partial"))

    # Where no copy can be made (here the template is a folder; a file system without hard links is another
    # case), the run's shard is Dagster's own, as without the copy.
    for made in runs.glob(".run-shard-*.template"):
        made.unlink()
        made.mkdir()
    with dg.DagsterInstance.get() as instance:
        third = dg.materialize([counted], instance=instance, partition_key="2025-01-03").run_id
    assert _schema(runs / f"{third}.db") == _schema(tmp_path / "stock" / "a_run.db")
    assert not list(runs.glob("*.partial"))

    # A shard another process created first (here Dagster's stock storage, with a run's events in it) is
    # kept as it is, not replaced by the empty copy.
    with stock.run_connection("their_run") as conn:
        conn.exec_driver_sql("CREATE TABLE marker (x INTEGER)")
    (runs / "their_run.db").write_bytes((tmp_path / "stock" / "their_run.db").read_bytes())
    with dg.DagsterInstance.get() as instance:
        with instance.event_log_storage.run_connection("their_run") as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM marker").scalar() == 0


def test_the_event_log_lives_in_the_instance_folder_it_is_opened_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``DagsterInstance.from_config(folder)`` (and dagster dev's throwaway folder) need no DAGSTER_HOME,
    and a DAGSTER_HOME pointing elsewhere does not pull the event log away from the runs."""
    monkeypatch.setenv("DAGSTER_HOME", str(instance_home(tmp_path / "other")))
    home = instance_home(tmp_path / "elsewhere")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize([counted], instance=instance, partition_key="2025-01-02")
        assert result.success
    assert (home / "history" / "runs" / f"{result.run_id}.db").exists()
    assert not (tmp_path / "other" / "history" / "runs" / f"{result.run_id}.db").exists()


def test_the_asset_row_follows_the_latest_materialization(home: Path):
    """Each asset's row in asset_keys is updated in place (inserted on its first event only), and holds
    the latest materialization and run, as Dagster's own storage would have it."""
    with dg.DagsterInstance.get() as instance:
        first = dg.materialize([counted], instance=instance, tags=RANGE)
        second = dg.materialize([counted], instance=instance, partition_key="2025-01-07")
        assert first.success and second.success
        with instance.event_log_storage.index_connection() as conn:
            rows = conn.execute(AssetKeyTable.select().where(AssetKeyTable.c.asset_key == '["counted"]')).fetchall()
        assert len(rows) == 1

    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as stock:
        (record,) = stock.get_asset_records([dg.AssetKey("counted")])
        assert record.asset_entry.last_run_id == second.run_id
        latest = stock.get_latest_materialization_event(dg.AssetKey("counted"))
        assert latest.run_id == second.run_id
        assert latest.asset_materialization.partition == "2025-01-07"
        assert latest.asset_materialization.metadata["dagster/row_count"].value == 7


def _stored(home: Path, run_id: str) -> dict:
    """What Dagster's stock SQLite storage reads back of a run of ``counted``."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    key = dg.AssetKey("counted")
    with dg.DagsterInstance.from_config(str(home)) as stock:
        assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"

        (asset,) = stock.get_asset_records([key])
        with stock.event_log_storage.index_connection() as conn:
            tag_rows = conn.execute(AssetEventTagsTable.select()).fetchall()
        return {
            "events": [e.dagster_event_type for e in stock.all_logs(run_id)],
            "materialized": stock.get_materialized_partitions(key),
            "materializations": sorted(
                (r.partition_key, r.asset_materialization.metadata["dagster/row_count"].value)
                for r in stock.fetch_materializations(key, limit=100).records
            ),
            "planned": sorted(
                r.partition_key
                for r in stock.get_records_for_run(
                    run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=100
                ).records
            ),
            "last_run_id": asset.asset_entry.last_run_id == run_id,
            "latest": asset.asset_entry.last_materialization_record.partition_key,
            # A data version without a code version derives from the run: keys and counts compare.
            "tags": sorted((row.asset_key, row.key) for row in tag_rows),
        }


def test_batched_events_are_stored_as_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The local instance stores Dagster's event batches (a range run's planned events, the materializations
    of its partitions) a batch at a time; Dagster's own storage reads back exactly what storing them one
    by one gives."""
    stored = {}
    for batch_size in ("0", "1000"):
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
        path = instance_home(tmp_path / f"batch_{batch_size}")
        with dg.DagsterInstance.from_config(str(path)) as instance:
            assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
            result = dg.materialize([counted], instance=instance, tags=RANGE)
            assert result.success
        stored[batch_size] = _stored(path, result.run_id)
    assert stored["1000"] == stored["0"]
    assert stored["0"]["materialized"] == {"2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05"}
    assert stored["0"]["materializations"] == [(f"2025-01-0{d}", d) for d in range(1, 6)]
    assert stored["0"]["planned"] == sorted(stored["0"]["materialized"]) and stored["0"]["last_run_id"]
    assert stored["0"]["latest"] == "2025-01-05" and stored["0"]["tags"]


def test_the_local_instance_turns_on_dagsters_event_batches(home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")  # what a user sets is kept
        PooledSqliteEventLogStorage()
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"


def test_a_checks_plan_for_a_range_is_stored_as_dagster_stores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A check planned for five partitions at once: one row per partition, each holding the planning
    event (serialized once by our storage, five times by Dagster's), exactly as Dagster's storage has it.
    A check that evaluates each partition: its five results, held back and stored together by ours, one by
    one by Dagster's, give the same rows, events and order (also in batches of two)."""
    stored, events = {}, {}
    for name, batch_size, dagster_yaml in (
        ("ours", "1000", None), ("ours_by_two", "2", None), ("stock", "1000", "telemetry:\n  enabled: false\n")
    ):
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
        home = instance_home(tmp_path / name)
        if dagster_yaml:
            (home / "dagster.yaml").write_text(dagster_yaml)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert (type(instance.event_log_storage) is PooledSqliteEventLogStorage) == (name != "stock")
            result = dg.materialize([counted, counted_is_positive, counted_each_day], instance=instance, tags=RANGE)
            assert result.success
            stored[name] = check_rows(instance, result.run_id)
            events[name] = [(e.dagster_event_type, e.step_key) for e in instance.all_logs(result.run_id)]
    assert stored["ours"] == stored["ours_by_two"] == stored["stock"]
    assert events["ours"] == events["ours_by_two"] == events["stock"]
    planned = [row for row in stored["ours"] if row[1] == "counted_is_positive" and row[0] is not None]
    assert [row[0] for row in planned] == [f"2025-01-0{d}" for d in range(1, 6)]
    assert {row[1:] for row in planned} == {
        ("counted_is_positive", "PLANNED", "ASSET_CHECK_EVALUATION_PLANNED", None, None)
    }
    # One result for the whole range (as an AssetCheckResult of a range run is) is stored without a partition.
    assert [row[1:] for row in stored["ours"] if row[0] is None] == [
        ("counted_is_positive", "SUCCEEDED", "ASSET_CHECK_EVALUATION", None, True)
    ]
    # One result per partition, each naming its partition's materialization and its own stored event.
    assert [row for row in stored["ours"] if row[1] == "counted_each_day"] == [
        (f"2025-01-0{d}", "counted_each_day", "FAILED" if d == 3 else "SUCCEEDED", "ASSET_CHECK_EVALUATION", True,
         True)
        for d in range(1, 6)
    ]
    # The results come before the check step's output and success, as when stored one by one.
    step = [kind for kind, key in events["ours"] if key == "counted_each_day" and kind]
    assert step[-7:] == [dg.DagsterEventType.ASSET_CHECK_EVALUATION] * 5 + [
        dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_SUCCESS
    ]


def test_check_results_that_could_not_be_stored_are_stored_by_the_next_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Another process holds the index while a check's held results are stored (by the log line after them,
    then by the engine event Dagster reports for that line; the second failure reaches the check's code, as
    any failure to store would). The results stay held, and the check's output stores them, once each:
    dropped, they would be lost without a trace, Dagster not failing a step for a log line."""
    monkeypatch.setattr("churn_assets.instance.sqlite.SQLITE_BUSY_TIMEOUT_SECONDS", 0.1)
    home = instance_home(tmp_path / "home")
    held_after_failures = []

    @check_days.partition_check("each_day_while_locked", counted, "Results held while the index is locked.")
    def each_day_while_locked(context: dg.AssetCheckExecutionContext):
        index = context.instance.event_log_storage.path_for_shard("index")
        other_writer = sqlite3.connect(index, timeout=0, isolation_level=None)
        other_writer.execute("BEGIN IMMEDIATE")
        results = {key: dg.AssetCheckResult(passed=True) for key in context.partition_keys}
        *evaluations, output = check_days.each_partition(context, results)
        yield from evaluations
        with pytest.raises(OperationalError, match="database is locked"):
            context.log.info("all results sent")
        held_after_failures.append(len(context.instance.event_log_storage._held()[1]))  # noqa: SLF001
        other_writer.execute("ROLLBACK")
        other_writer.close()
        yield output

    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize([counted, each_day_while_locked], instance=instance, tags=RANGE)
        assert result.success and held_after_failures == [5]
        rows = [row for row in check_rows(instance, result.run_id) if row[1] == "each_day_while_locked"]
        assert [row[:3] for row in rows] == [
            (f"2025-01-0{d}", "each_day_while_locked", "SUCCEEDED") for d in range(1, 6)
        ]
        assert all(row[4:] == (True, True) for row in rows)
        step = [e.dagster_event_type for e in instance.all_logs(result.run_id)
                if e.step_key == "each_day_while_locked" and e.is_dagster_event]
        assert step[-7:] == [dg.DagsterEventType.ASSET_CHECK_EVALUATION] * 5 + [
            dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_SUCCESS
        ]
        assert step.count(dg.DagsterEventType.ASSET_CHECK_EVALUATION) == 5
