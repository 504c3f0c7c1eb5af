"""Dagster's event batches and check plans, as both of our event logs store them.

Dagster hands a range run's planned events, and the materializations of each asset's partitions, to the
event log as batches, but only when ``DAGSTER_EVENT_BATCH_SIZE`` is set (it reads the switch from the
environment and nowhere else). Its storages then still write most of them one by one; ours write a run
of consecutive batchable events in one statement and one index transaction, and update each asset's row
once, from its last event of each type. ``SerializedOncePerCheckPlan`` stores a check's plan for a range of
partitions with the event serialized once instead of once per partition.
"""

import itertools
import os
from collections.abc import Iterator, Sequence

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
# Batches are sent at most this many events at a time.
EVENT_BATCH_SIZE = "1000"


def turn_on_event_batches() -> None:
    """Sets ``DAGSTER_EVENT_BATCH_SIZE`` for this process, unless the user has set it (``0`` turns batches
    off). Called by our event logs when Dagster creates them, so it holds in every process that uses them."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


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


class SerializedOncePerCheckPlan:
    """Mixed into our event logs: a check planned for a range of partitions is stored as Dagster stores it
    (one ``asset_check_executions`` row per partition, each holding the planning event), with the event
    serialized once. Dagster serializes it again for every row: 120 times for each check of a 120-day
    range run, ~0.14 s per check."""

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
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
            conn.execute(AssetCheckExecutionsTable.insert().values([{**row, "partition": key} for key in partition_keys]))
