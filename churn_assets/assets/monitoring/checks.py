"""Checks of the monitoring assets: they warn, they never block (a drifted day still gets its scores)."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from churn_assets.assets.check_days import each_partition, partition_check
from churn_assets.assets.monitoring.drift_report import DATASET_DRIFT_SHARE, drift_report, had_too_few_rows
from churn_assets.partitions import latest_materializations


@partition_check(
    "features_have_not_drifted",
    drift_report,
    (
        f"Warns when a day's features drifted from the model's reference sample: at least "
        f"{DATASET_DRIFT_SHARE:.0%} of the feature columns drifted (Evidently's dataset drift), on a day with "
        "at least CHURN_DRIFT_MIN_ROWS users compared (fewer conclude nothing)."
    ),
    blocking=False,
)
def features_have_not_drifted(
    context: dg.AssetCheckExecutionContext, drift_report: pl.DataFrame
) -> Iterator[dg.AssetCheckEvaluation]:
    results = {}
    # Whether each day had too few users to conclude: drift_report's metadata, as the table does not say.
    latest = latest_materializations(context.instance, context.check_specs[0].asset_key, context.partition_keys)
    for key in context.partition_keys:
        of_day = drift_report.filter(pl.col("date") == dt.date.fromisoformat(key))
        columns = of_day.filter(pl.col("kind") != "score")
        share = float(columns.get_column("drifted").mean() or 0.0) if columns.height else 0.0
        drifted = columns.filter(pl.col("drifted")).get_column("column").to_list()
        record = latest.get(key)
        metadata = record.asset_materialization.metadata if record and record.asset_materialization else {}
        too_few = had_too_few_rows(metadata)
        dataset_drift = share >= DATASET_DRIFT_SHARE and not too_few
        results[key] = dg.AssetCheckResult(
            passed=not dataset_drift,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "dataset_drift": dataset_drift,
                "too_few_rows": too_few,
                "share_of_drifted_columns": share,
                "score_drifted": bool(of_day.filter(pl.col("kind") == "score").get_column("drifted").any()),
                "drifted_columns": dg.MetadataValue.json(drifted),
            },
            description=(
                f"{share:.0%} of the feature columns drifted ({len(drifted)} of {columns.height})"
                if dataset_drift else None
            ),
        )
    yield from each_partition(context, results)
