"""A trivial partitioned asset for the instance tests: what they measure is Dagster's storage, not our work."""

import dagster as dg

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
