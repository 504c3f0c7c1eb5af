"""A trivial partitioned asset for the instance tests: what they measure is Dagster's storage, not our work."""

import dagster as dg
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._serdes import deserialize_value

from churn_assets.assets import check_days

DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-08")
# A range run of five partitions: one planned event and one materialization per partition, in batches.
RANGE = {"dagster/asset_partition_range_start": "2025-01-01", "dagster/asset_partition_range_end": "2025-01-05"}


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def counted(context: dg.AssetExecutionContext) -> None:
    """Each partition's row count is its day of the month."""
    for key in context.partition_keys:
        context.add_asset_metadata({"dagster/row_count": int(key[-2:])}, partition_key=key)


@dg.asset_check(asset=counted, partitions_def=DAYS)
def counted_is_positive(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Planned for a range run's partitions together: one planning event, one row per partition."""
    return dg.AssetCheckResult(passed=True)


@check_days.partition_check("counted_each_day", counted, "Each partition evaluated on its own; the 3rd fails.",
                            blocking=False)
def counted_each_day(context: dg.AssetCheckExecutionContext):
    """One evaluation per partition of the run (as the project's checks yield them), all sent by Dagster
    one by one: the 3rd of the month fails."""
    results = {key: dg.AssetCheckResult(passed=not key.endswith("-03"), metadata={"day": int(key[-2:])})
               for key in context.partition_keys}
    yield from check_days.each_partition(context, results)


def check_rows(instance: dg.DagsterInstance, run_id: str) -> list[tuple]:
    """The run's rows of Dagster's check executions table, sorted: partition, check, status, the type of the
    event the row holds and, for a result, whether the row's ids name that result's stored event and the
    materialization of its partition in the run (None for a plan, or a result without a partition)."""
    materializations = {
        r.partition_key: r.storage_id
        for r in instance.fetch_materializations(dg.AssetKey("counted"), limit=100).records
        if r.run_id == run_id
    }
    storage = instance.event_log_storage
    with storage.index_connection() as conn:
        rows = conn.execute(AssetCheckExecutionsTable.select().where(AssetCheckExecutionsTable.c.run_id == run_id))
        rows = rows.fetchall()
        stored = {
            row.id: deserialize_value(row.event)
            for row in conn.execute(SqlEventLogStorageTable.select().where(SqlEventLogStorageTable.c.id.in_(
                [row.evaluation_event_storage_id for row in rows]
            )))
        }
    table = []
    for row in rows:
        event = deserialize_value(row.evaluation_event)
        is_result = event.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        own_event = stored.get(row.evaluation_event_storage_id)
        table.append((
            row.partition,
            row.check_name,
            row.execution_status,
            event.dagster_event_type.value,
            (row.materialization_event_storage_id == materializations[row.partition]) if is_result and row.partition
            else None,
            (own_event is not None and own_event.get_dagster_event().asset_check_evaluation_data.partition
             == row.partition and own_event.timestamp == event.timestamp) if is_result else None,
        ))
    return sorted(table, key=str)
