"""The production instance's event log: Dagster's PostgreSQL event log, with a connection kept open.

``dagster-postgres`` opens a new database connection for every statement outside the webserver (its
engine has no pool), and a stored asset event takes three: the insert, the question whether the tags
table exists, and the index transaction. A run's process stores ~1,300 events for a 120-day backfill of
the data chain, and the connections alone took more than half of that run (docs/benchmarks.md). This
subclass keeps one connection open per process (and opens up to ``MAX_OVERFLOW`` more while several
threads use it at once), checks it before each use so a dropped connection is replaced rather than
failing a run, and remembers which tables exist. It also stores Dagster's event batches a batch at a
time (``shared.py``; it turns them on unless ``DAGSTER_EVENT_BATCH_SIZE`` is set): a run's planned
events, each asset's materializations, and a run's check results (held back until its next event) in
one insert and one index transaction. Tables, rows and reads are Dagster's own: a stock
``PostgresEventLogStorage`` reads the same database.

Configured as the ``event_log_storage`` of ``deploy/dagster.yaml`` (runs and schedules stay Dagster's
classes). Imported only there: ``dagster-postgres`` takes ~1.3 s to import, which the local instance
does not pay.
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import (
    create_pg_connection,
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.engine import Connection

from churn_assets.instance.shared import SharedEventLog, turn_on_event_batches

# More connections than the one kept open, opened only while several threads use the storage at once (the
# daemon's), and closed when they are done; the webserver's defaults (dagster-webserver --db-pool-*).
MAX_OVERFLOW = 20
# A kept connection older than this is replaced (servers and proxies close idle connections).
POOL_RECYCLE_SECONDS = 3600


class PooledPostgresEventLogStorage(SharedEventLog, PostgresEventLogStorage):
    """Dagster's PostgreSQL event log, keeping a connection open. Configured like Dagster's
    (``postgres_db`` or ``postgres_url``) in ``dagster.yaml``::

        event_log_storage:
          module: churn_assets.instance.postgres
          class: PooledPostgresEventLogStorage
          config:
            postgres_db: ...
    """

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ):
        turn_on_event_batches()
        self._engine_pid = os.getpid()
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        kwargs: dict[str, Any] = {}
        if options := self._engine.url.query.get("options"):
            kwargs["connect_args"] = {"options": options}
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=MAX_OVERFLOW,
            pool_pre_ping=True,
            pool_recycle=POOL_RECYCLE_SECONDS,
            **kwargs,
        )

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledPostgresEventLogStorage":
        # Dagster's classmethod builds its own class, not the subclass.
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        if self._engine_pid != os.getpid():
            # A forked child must not use its parent's open connection: its pool starts afresh.
            self._engine.dispose(close=False)
            self._engine_pid = os.getpid()
        with create_pg_connection(self._engine) as conn:
            yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # PostgreSQL storage keeps no "failed to materialize" events: Dagster drops them before storing
        # single events (instance.should_store_event) and in its own batches alike.
        super().store_event_batch([e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize])

    # A group of events: one insert (its ids returned), then the index transaction, as Dagster's batches do
    # (SharedEventLog._store_group).
    def _insert_rows(self, rows: list[dict[str, Any]]) -> list[int | None]:
        insert = SqlEventLogStorageTable.insert().values(rows).returning(SqlEventLogStorageTable.c.id)
        with self._connect() as conn:
            return [int(row[0]) for row in conn.execute(insert).fetchall()]

    def _index_rows(self, conn: Connection, rows: list[dict[str, Any]], event_ids: list[int | None]) -> list[int]:
        return event_ids  # type: ignore[return-value]  # one table: the insert's ids

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        self._engine.dispose()
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()
