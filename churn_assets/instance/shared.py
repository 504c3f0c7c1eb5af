"""What both of our event logs change in Dagster's: ``SharedEventLog``, mixed in before Dagster's class.

- Dagster hands a range run's planned events, and the materializations of each asset's partitions, to
  the event log as batches, but only when ``DAGSTER_EVENT_BATCH_SIZE`` is set (it reads the switch from
  the environment and nowhere else). Its storages then still write most of them one by one; ours write a
  run of consecutive batchable events at once, and update each asset's row once, from its last event of
  each type.
- A run's check results (one per partition of a range run: 120 for each check of a 120-day backfill)
  are held back while batches are on, and stored together, in Dagster's order, before the next event of
  any kind (the check's output comes right after them), when a batch is full, or
  when the storage is closed: two transactions for the lot instead of three per result. Dagster sends
  them one by one, outside its batches, and holds back a range's materializations the same way.
- A check's plan for a range of partitions is stored with its event serialized once, not once per
  partition.
- The tables that exist are remembered: Dagster asks before storing each asset event's tags.
"""

import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as db
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._serdes import serialize_value

# Events stored a batch at a time; any other event is stored on its own, in Dagster's order.
BATCHED_EVENTS = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)
# A run's events of these types are held back and stored a batch at a time, before the run's next event.
HELD_EVENTS = frozenset({DagsterEventType.ASSET_CHECK_EVALUATION})
# Batches are sent at most this many events at a time.
EVENT_BATCH_SIZE = "1000"


def turn_on_event_batches() -> None:
    """Sets ``DAGSTER_EVENT_BATCH_SIZE`` for this process, unless the user has set it (``0`` turns batches
    off). Called by our event logs when Dagster creates them, so it holds in every process that uses them."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


def event_batch_size() -> int:
    """The largest batch, as Dagster reads it; 0 when batches are off."""
    return int(os.getenv("DAGSTER_EVENT_BATCH_SIZE", "0"))


def batch_groups(events: Sequence[EventLogEntry]) -> Iterator[tuple[bool, list[EventLogEntry]]]:
    """Runs of consecutive events, in Dagster's order: ``(True, run)`` for two or more batchable events
    stored together, ``(False, run)`` for events to store one by one."""
    def batchable(event: EventLogEntry) -> bool:
        return event.is_dagster_event and event.dagster_event_type in BATCHED_EVENTS

    for together, group in itertools.groupby(events, key=batchable):
        group = list(group)
        yield together and len(group) > 1, group


def last_of_each_asset(events: Sequence[EventLogEntry], event_ids: Sequence[int]) -> list[tuple[EventLogEntry, int]]:
    """Each asset's last event of each type with its id, in the order of those last events: the ones whose
    row update would have been written last had the events been stored one by one."""
    last: dict[tuple[str, DagsterEventType], tuple[EventLogEntry, int]] = {}
    for event, event_id in zip(events, event_ids, strict=True):
        key = (event.get_dagster_event().asset_key.to_string(), event.dagster_event_type)
        last.pop(key, None)  # re-inserted: the dict keeps the order of each key's last event
        last[key] = (event, event_id)
    return list(last.values())


class SharedEventLog:
    """Mixed into both event logs, before Dagster's class. Each says how it inserts a group of events
    (``_insert_rows``) and which ids the index knows them by (``_index_rows``); ``_store_group`` does the
    rest, the same for both."""

    def store_event(self, event: EventLogEntry) -> None:
        if self._hold(event):
            return
        self.store_held_events()
        super().store_event(event)  # type: ignore[misc]

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # What store_event does for each event, a group of consecutive batchable events at a time, in
        # Dagster's order; any other event goes through store_event.
        self.store_held_events()
        for together, group in batch_groups(events):
            if together:
                self._store_group(group)
            else:
                for event in group:
                    self.store_event(event)

    def _held(self) -> tuple[threading.Lock, list[EventLogEntry]]:
        return vars(self).setdefault("_held_events", (threading.Lock(), []))

    def _hold(self, event: EventLogEntry) -> bool:
        """Holds back a run's event of ``HELD_EVENTS`` while batches are on (True), storing what is held
        once a batch is full."""
        size = event_batch_size()
        if not (size > 0 and event.run_id and event.is_dagster_event and event.dagster_event_type in HELD_EVENTS):
            return False
        lock, held = self._held()
        with lock:
            held.append(event)
            full = len(held) >= size
        if full:
            self.store_held_events()
        return True

    def store_held_events(self) -> None:
        """Stores the events held back, in the order they came, a group per run. A group that fails is held
        again with those after it, ahead of any held since, and the error raised: the next event (or closing
        the storage) tries again. Dropped, they would be lost for good, and silently when the event that
        stored them was a log line (Dagster does not fail a step for a log line it could not store)."""
        lock, held = self._held()
        with lock:
            events = held[:]
            held.clear()
        groups = [list(group) for _, group in itertools.groupby(events, key=lambda event: event.run_id)]
        for i, group in enumerate(groups):
            try:
                self._store_group(group)
            except Exception:
                with lock:
                    held[:0] = [event for rest in groups[i:] for event in rest]
                raise

    def _store_group(self, group: list[EventLogEntry]) -> None:
        """Inserts the group's events (``_insert_rows``), then, in one index transaction, indexes them. Held
        events inserted by a try whose index transaction failed are not inserted again by the next try."""
        inserted: dict[int, tuple[dict[str, Any], int | None]] = vars(self).setdefault("_inserted_not_indexed", {})
        fresh = [event for event in group if id(event) not in inserted]
        if fresh:
            rows = [self._event_to_row(event) for event in fresh]  # type: ignore[attr-defined]
            for event, row, event_id in zip(fresh, rows, self._insert_rows(rows), strict=True):
                inserted[id(event)] = (row, event_id)
        rows, event_ids = map(list, zip(*(inserted[id(event)] for event in group), strict=True))
        indexed = False
        try:
            with self.index_transaction() as conn:  # type: ignore[attr-defined]
                self._index_group(conn, group, self._index_rows(conn, rows, event_ids), rows)
            indexed = True
        finally:
            if indexed or group[0].dagster_event_type not in HELD_EVENTS:  # Dagster's batches are not retried
                for event in group:
                    inserted.pop(id(event), None)

    def _insert_rows(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """Inserts the event rows of one run; their ids where the insert gives the ones the index uses."""
        raise NotImplementedError

    def _index_rows(self, conn: Any, rows: list[dict[str, Any]], event_ids: list[int | None]) -> list[int]:
        """In the index transaction, before the group is indexed: the ids the index knows the events by."""
        raise NotImplementedError

    def _index_group(
        self, conn: Any, group: list[EventLogEntry], event_ids: list[int], rows: list[dict[str, Any]]
    ) -> None:
        """In the index transaction, once the group's events are inserted (``rows``: as inserted): the asset
        events' tags and each asset's row from its last event of each type; the check results' rows."""
        assets = [(event, event_id) for event, event_id in zip(group, event_ids, strict=True)
                  if event.dagster_event_type not in HELD_EVENTS]
        if assets:
            self._store_asset_event_tags(conn, *zip(*assets, strict=True))  # type: ignore[attr-defined]
            for event, event_id in last_of_each_asset(*zip(*assets, strict=True)):
                self._store_asset_event(conn, event, event_id)  # type: ignore[attr-defined]
        results = [(event, event_id, row) for event, event_id, row in zip(group, event_ids, rows, strict=True)
                   if event.dagster_event_type in HELD_EVENTS]
        if results:
            self._store_check_results(conn, results)

    def _store_check_results(self, conn: Any, results: list[tuple[EventLogEntry, int, dict[str, Any]]]) -> None:
        """Each result's row in ``asset_check_executions``, as Dagster's update of a planned row writes it, with
        one statement for the lot and the event as inserted (Dagster builds a statement and serializes the
        event again for each: ~1 ms a result). A result without a planned row of its run (Dagster then
        inserts one), or without a partition, or a second one for a row, is stored by Dagster's own method."""
        table = AssetCheckExecutionsTable
        planned = {
            (row.asset_key, row.check_name, row.partition)
            for row in conn.execute(
                db.select(table.c.asset_key, table.c.check_name, table.c.partition).where(
                    table.c.run_id.in_({event.run_id for event, _, _ in results})
                )
            )
        }
        updates, others = [], []
        for event, event_id, row in results:
            evaluation: AssetCheckEvaluation = event.get_dagster_event().asset_check_evaluation_data
            key = (evaluation.asset_key.to_string(), evaluation.check_name, evaluation.partition)
            if evaluation.partition is None or key not in planned:
                others.append((event, event_id))
                continue
            planned.discard(key)
            target = evaluation.target_materialization_data
            updates.append({
                "key_asset": key[0], "key_check": key[1], "key_run": event.run_id, "key_partition": key[2],
                "execution_status": (
                    AssetCheckExecutionRecordStatus.SUCCEEDED if evaluation.passed
                    else AssetCheckExecutionRecordStatus.FAILED
                ).value,
                "evaluation_event": row["event"],
                "evaluation_event_timestamp": row["timestamp"],
                "evaluation_event_storage_id": event_id,
                "materialization_event_storage_id": target.storage_id if target else None,
            })
        if updates:
            conn.execute(
                table.update().where(
                    table.c.asset_key == db.bindparam("key_asset"),
                    table.c.check_name == db.bindparam("key_check"),
                    table.c.run_id == db.bindparam("key_run"),
                    table.c.partition == db.bindparam("key_partition"),
                ),
                updates,
            )
        with self._index_connection_is(conn):
            for event, event_id in others:
                self.store_asset_check_event(event, event_id)  # type: ignore[attr-defined]

    @contextmanager
    def _index_connection_is(self, conn: Any) -> Iterator[None]:
        # Dagster's store_asset_check_event opens an index connection of its own, a transaction per result.
        local = vars(self).setdefault("_index_local", threading.local())
        local.conn = conn
        try:
            yield
        finally:
            local.conn = None

    def index_connection(self) -> Any:
        conn = getattr(vars(self).get("_index_local"), "conn", None)
        return nullcontext(conn) if conn is not None else super().index_connection()  # type: ignore[misc]

    def dispose(self) -> None:
        self.store_held_events()
        super().dispose()  # type: ignore[misc]

    def has_table(self, table_name: str) -> bool:
        # Asked before storing each asset event's tags (by the SQLite log through a new engine each time).
        # Tables are only ever added (by migrations), so one that exists is remembered.
        present = vars(self).setdefault("_tables_present", set())
        if table_name not in present and super().has_table(table_name):  # type: ignore[misc]
            present.add(table_name)
        return table_name in present

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        # As Dagster stores it (one asset_check_executions row per partition, each holding the planning
        # event), with the event serialized once: Dagster serializes it again for every row, 120 times for
        # each check of a 120-day range run (~0.14 s per check).
        planned = event.get_dagster_event().event_specific_data
        partition_keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),  # type: ignore[attr-defined]
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            rows = [{**row, "partition": key} for key in partition_keys]
            conn.execute(AssetCheckExecutionsTable.insert().values(rows))
