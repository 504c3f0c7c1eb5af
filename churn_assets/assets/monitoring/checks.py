"""Checks of the monitoring assets: they warn, they never block (a drifted day still gets its scores)."""

import dagster as dg
import polars as pl

from churn_assets.assets.monitoring.drift_report import DATASET_DRIFT_SHARE, drift_report
from churn_assets.partitions import daily_partitions


@dg.asset_check(
    asset=drift_report,
    blocking=False,
    # Partitioned like the asset, so a run checks (and loads) only the days it wrote.
    partitions_def=daily_partitions,
    description=(
        f"Warns when a day's features drifted from the model's reference sample: at least "
        f"{DATASET_DRIFT_SHARE:.0%} of the feature columns drifted (Evidently's dataset drift)."
    ),
)
def features_have_not_drifted(drift_report: pl.DataFrame) -> dg.AssetCheckResult:
    per_day = (
        drift_report.filter(pl.col("kind") != "score")
        .group_by("date")
        .agg(pl.col("drifted").mean().alias("share"), pl.col("column").filter(pl.col("drifted")).alias("drifted"))
        .sort("date")
    )
    drifted_days = per_day.filter(pl.col("share") >= DATASET_DRIFT_SHARE)
    score = drift_report.filter(pl.col("kind") == "score")
    return dg.AssetCheckResult(
        passed=drifted_days.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "days": per_day.height,
            "days_with_dataset_drift": drifted_days.height,
            "max_share_of_drifted_columns": float(per_day.get_column("share").max() or 0.0),
            "days_with_score_drift": int(score.get_column("drifted").sum()),
            "drifted_columns": dg.MetadataValue.json(
                {str(d): cols for d, cols in drifted_days.select("date", "drifted").iter_rows()}
            ),
        },
    )
