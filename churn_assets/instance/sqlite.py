"""The local instance's event log: Dagster's SQLite event log, with its connections kept open.

Dagster's ``SqliteEventLogStorage`` creates a SQLAlchemy engine, opens a SQLite connection, compiles
its statements and closes everything again for every event it stores, twice for an asset event (the
run's shard and the cross-run index). A backfill of 120 days over the five data assets stores
~1,300 such events, and that bookkeeping took 30 s of the run, more than half our own work
(docs/benchmarks.md). This subclass keeps one engine per shard, each holding one open connection, so
statements are compiled once and connections are reused (and the index's tables, which Dagster
looks up before every asset event, are looked up once). Each asset's row in ``asset_keys`` is updated
in place, where Dagster first tries an insert that fails on every event but the asset's first. And it
turns on Dagster's event batches (``DAGSTER_EVENT_BATCH_SIZE``, unless set): a range run's planned
events and each asset's materializations of its partitions are stored a batch at a time, one
transaction per shard instead of two per event, with each asset's row updated once per batch; a run's
check results are held back and stored the same way, before the run's next event (``shared.py``). The
files, tables and reads are Dagster's own: the same ``history/runs/`` folder of the instance that the
default uses, readable by it.

Engines are kept for the index shard and the few most recently used run shards; a long-lived
webserver or daemon that reads thousands of runs keeps a handful of files open, not thousands.

A run's new shard is a copy of an empty one: Dagster creates each run's file with ~20 statements of DDL,
each its own synced commit, and loads its ~90 Alembic migration scripts twice to stamp it, ~0.3 s of every
run's start (more on a busy disk). The empty shard is made once per Dagster and SQLAlchemy version, by
Dagster's own code, and kept beside the shards (``.run-shard-<versions>.template``; not a ``*.db`` file, so
Dagster never takes it for a run's).
"""

import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster
import dagster._check as check
import sqlalchemy
from alembic.runtime.migration import MigrationContext
from dagster._config import Field, StringSource
from dagster._core.storage.event_log.schema import AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from churn_assets.instance.shared import SharedEventLog, turn_on_event_batches

RUN_SHARDS_KEPT = 4


def _commit_without_fsync(conn: Connection) -> None:
    """Puts a shard in WAL mode with synchronous=NORMAL, once per SQLite connection.

    Dagster means its SQLite files to be in WAL mode (its ``_initdb`` asks for it), but the request is
    lost inside the transaction that creates a run's shard, so run shards stay in rollback-journal mode,
    which syncs the disk several times per commit. In WAL mode with synchronous=NORMAL a commit does not
    sync at all (checkpoints do): a killed process loses nothing, a power cut can lose the last events
    but never corrupts the file. This took ~2 s of fsync out of a 120-day backfill's 1,275 events. A
    shard another process holds open in rollback mode cannot switch; it keeps SQLite's full sync.
    """
    if conn.info.get("synchronous_set"):
        return
    conn.info["synchronous_set"] = True
    try:
        mode = str(conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()).lower()
        if mode == "wal":
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        conn.commit()
    except OperationalError:  # "database is locked": another process holds it; leave it as it is
        conn.rollback()


class PooledSqliteEventLogStorage(SharedEventLog, SqliteEventLogStorage):
    """Dagster's SQLite event log, reusing its connections. Configured in ``dagster.yaml``::

        event_log_storage:
          module: churn_assets.instance
          class: PooledSqliteEventLogStorage

    Without ``config: {base_dir: ...}`` it lives where Dagster's default would: ``history/runs/`` under
    the instance's own folder (``$DAGSTER_HOME``, the folder given to ``DagsterInstance.from_config``,
    or the throwaway folder of ``dagster dev`` without ``DAGSTER_HOME``), known once the instance
    registers it.
    """

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        turn_on_event_batches()
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        self._pending_inst_data = inst_data
        self._asset_key_columns_present: set[str] = set()
        if base_dir is None:
            self._instance_weakref = None  # SqliteEventLogStorage.__init__ runs in register_instance
        else:
            super().__init__(base_dir, inst_data)

    def register_instance(self, instance: Any) -> None:
        if not hasattr(self, "_base_dir"):
            super().__init__(os.path.join(instance.root_directory, "history", "runs"), self._pending_inst_data)
        super().register_instance(instance)

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            check.str_param(shard, "shard")
            if shard not in self._initialized_dbs and shard != INDEX_SHARD_NAME:
                self._create_from_template(shard)
            engine = self._engine_for(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                _commit_without_fsync(conn)
                with conn.begin():
                    yield conn

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        # Dagster's _initdb creates the tables of a shard without an Alembic revision and leaves one that has
        # a revision as it is; it loads every migration script to learn the head revision first, which only
        # a new shard needs.
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision():
                return
        super()._initdb(engine, for_index_shard)

    def _create_from_template(self, shard: str) -> None:
        """Creates a run's shard as a copy of the empty one (:meth:`_template`), unless its file exists: the
        copy appears under the shard's name whole (a hard link to it), or not at all when another process made
        the file first or the file system has no hard links."""
        path = self.path_for_shard(shard)
        if os.path.exists(path):
            return
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            shutil.copyfile(self._template(), partial)
            os.link(partial, path)
        except OSError:
            # The file exists (another process's run, or its reader, made it first), or this file system has no
            # hard links: Dagster's _initdb makes the shard whole, as it does without the copy.
            pass
        finally:
            if os.path.exists(partial):
                os.unlink(partial)

    def _template(self) -> str:
        """The empty run shard of this Dagster and SQLAlchemy, made by Dagster's own ``_initdb`` the first
        time it is needed."""
        template = os.path.join(
            self._base_dir, f".run-shard-{dagster.__version__}-{sqlalchemy.__version__}.template"
        )
        if not os.path.exists(template):
            scratch = f"{template}.{uuid.uuid4().hex}.partial"
            engine = create_engine(f"sqlite:///{scratch}", poolclass=NullPool)
            try:
                SqliteEventLogStorage._initdb(self, engine)
                engine.dispose()
                os.replace(scratch, template)  # two processes making it at once write the same bytes
            finally:
                engine.dispose()
                if os.path.exists(scratch):
                    os.unlink(scratch)
        return template

    def _engine_for(self, shard: str) -> Engine:
        with self._engines_lock:
            if self._engines_pid != os.getpid():
                # A forked child must not share its parent's open SQLite connections: start afresh.
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._engines_pid = os.getpid()
            engine = self._engines.get(shard)
            if engine is None:
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    pool_size=1,
                    max_overflow=2,
                    # Connections are used under _db_lock, one thread at a time, but not always by the
                    # thread that opened them.
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
                )
                self._engines[shard] = engine
            self._engines.move_to_end(shard)
            run_shards = [name for name in self._engines if name != INDEX_SHARD_NAME]
            for name in run_shards[: max(0, len(run_shards) - RUN_SHARDS_KEPT)]:
                self._engines.pop(name).dispose()
            return engine

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        # Asked before storing each asset event, by reflecting the whole asset_keys table. Columns too
        # are only ever added (by migrations), so one that exists is remembered.
        if column_name not in self._asset_key_columns_present and super()._has_asset_key_col_on_connection(
            conn, column_name
        ):
            self._asset_key_columns_present.add(column_name)
        return column_name in self._asset_key_columns_present

    # A group of events: one transaction in the run's shard, one in the index (SharedEventLog._store_group).
    # Each event is serialized once, for both shards, and inserted with one compiled statement (Dagster's
    # helpers do both again per insert).
    def _insert_rows(self, rows: list[dict[str, Any]]) -> list[int | None]:
        with self.run_connection(rows[0]["run_id"]) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        return [None] * len(rows)  # the index's copies have ids of their own

    def _index_rows(self, conn: Connection, rows: list[dict[str, Any]], event_ids: list[int | None]) -> list[int]:
        insert = SqlEventLogStorageTable.insert()
        return [conn.execute(insert, row).inserted_primary_key[0] for row in rows]

    def _store_asset_event(self, conn: Connection, event: Any, event_id: int) -> None:
        # The asset's row in asset_keys, as Dagster writes it, but updated first: Dagster inserts first and
        # lets the insert fail on every event but an asset's first (~0.45 s of a 120-day backfill).
        if not (event.dagster_event and event.dagster_event.asset_key):
            return
        values = self._get_asset_entry_values(event, event_id, self._has_asset_key_index_cols_on_connection(conn))
        if not values:
            return
        asset_key = event.dagster_event.asset_key.to_string()
        update = AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == asset_key)
        if conn.execute(update).rowcount:
            return
        try:
            conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))
        except IntegrityError:  # another process inserted the row in between
            conn.execute(update)

    def open_shards(self) -> list[str]:
        """The shards whose connections are held open, least recently used first."""
        with self._engines_lock:
            return list(self._engines)

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        # The run shards' files are deleted: no connection may stay open on them.
        with self._db_lock:
            self._dispose_engines()
        super().wipe()

    def upgrade(self) -> None:
        super().upgrade()
        self._dispose_engines()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()
