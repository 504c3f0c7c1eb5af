"""Blocking checks of ``features`` and ``labels``: a partition that fails one stops everything downstream."""

import datetime as dt
from collections.abc import Sequence

import dagster as dg
import polars as pl

from churn_assets.assets.features.catalog import LOOKBACK_DAYS, feature_catalog
from churn_assets.assets.features.features import features
from churn_assets.assets.features.labels import HORIZON_DAYS, labels
from churn_assets.partitions import daily_partitions
from churn_assets.resources import ChurnParameters, LakeResource
from churn_assets.resources.lake import Lake


def _result(failures: dict[str, int], **metadata: object) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not any(failures.values()),
        metadata={**{k: int(v) for k, v in failures.items()}, **metadata},
    )


@dg.asset_check(
    asset=features,
    blocking=True,
    # Partitioned like the asset, so a run checks (and loads) only the partitions it wrote.
    partitions_def=daily_partitions,
    description=(
        "One row per user and day, no null where the catalog says none, and exactly the users at risk "
        "according to install_times (installed on or before D, last active in D-27..D)."
    ),
    additional_ins={"install_times": dg.AssetIn()},
)
def features_cover_users_at_risk(
    features: pl.LazyFrame, install_times: pl.LazyFrame, churn: ChurnParameters
) -> dg.AssetCheckResult:
    required = [f.name for f in feature_catalog(churn.event_types) if not f.nullable]
    stats = features.select(
        (pl.len() - pl.struct("date", "user_id").n_unique()).alias("duplicate_user_days"),
        pl.sum_horizontal([pl.col(c).is_null().sum() for c in ["user_id", *required]]).alias("nulls_in_required_columns"),
        pl.len().alias("rows"),
    ).collect().row(0, named=True)
    # install_times is computed from raw_events independently of user_daily: it says who is at risk.
    at_risk = install_times.filter(
        (pl.col("install_time").dt.date() <= pl.col("date"))
        & (pl.col("last_active_date") >= pl.col("date") - pl.duration(days=LOOKBACK_DAYS - 1))
    ).select("date", "user_id")
    not_at_risk, missing = _compare_keys(features.select("date", "user_id"), at_risk)
    rows = stats.pop("rows")
    return _result(
        {**stats, "users_not_at_risk": not_at_risk, "users_at_risk_missing": missing}, rows=rows
    )


def _compare_keys(rows: pl.LazyFrame, expected: pl.LazyFrame) -> tuple[int, int]:
    """How many of ``rows`` have no match in ``expected``, and how many of ``expected`` have none in
    ``rows``, on their common columns: one full join counted on both sides, not two anti-joins (~30 %
    faster over a range of days). Collected apart from the checks' other statistics: together, polars held
    both at once (1.7 GB against 1.3 GB for medium's 120 days of features)."""
    on = rows.collect_schema().names()
    counts = (
        rows.with_columns(pl.lit(True).alias("_row"))
        .join(expected.with_columns(pl.lit(True).alias("_expected")), on=on, how="full", coalesce=True)
        .select(pl.col("_expected").is_null().sum(), pl.col("_row").is_null().sum())
        .collect()
    )
    unmatched_rows, unmatched_expected = counts.row(0)
    return unmatched_rows, unmatched_expected


@dg.asset_check(
    asset=labels,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "churned is 0 or 1, snapshot_date is the label day minus H, and the labelled population is "
        "exactly features[D-H] (no user added or lost)."
    ),
)
def labels_match_snapshots(
    context: dg.AssetCheckExecutionContext, labels: pl.LazyFrame, lake: LakeResource
) -> dg.AssetCheckResult:
    stats = labels.select(
        (~pl.col("churned").is_in([0, 1]) | pl.col("churned").is_null()).sum().alias("non_binary_labels"),
        (pl.col("snapshot_date") != pl.col("date") - pl.duration(days=HORIZON_DAYS)).sum().alias("wrong_snapshot_dates"),
        pl.col("snapshot_date").is_null().sum().alias("null_snapshot_dates"),
        (pl.len() - pl.struct("date", "user_id").n_unique()).alias("duplicate_user_days"),
        pl.len().alias("rows"),
        pl.col("churned").mean().alias("churn_rate"),
    ).collect().row(0, named=True)
    snapshots, missing_snapshots = _snapshots(context.partition_keys, lake.lake)
    added, lost = _compare_keys(labels.select("user_id", "snapshot_date"), snapshots)
    rows, churn_rate = stats.pop("rows"), stats.pop("churn_rate")
    return _result(
        {
            **stats,
            "users_not_in_snapshot": added,
            "snapshot_users_unlabelled": lost,
            "snapshot_partitions_missing": len(missing_snapshots),
        },
        rows=rows,
        churn_rate=float(churn_rate) if churn_rate is not None else 0.0,
    )


def _snapshots(label_days: Sequence[str], lake: Lake) -> tuple[pl.LazyFrame, list[str]]:
    """The (user_id, snapshot_date) pairs of ``features[D-H]`` for the checked label days.

    Read from the lake directly: Dagster ignores partition mappings on an asset check's inputs (its
    check nodes have none), so an ``additional_ins`` mapped by -H would load ``features[D]`` instead.
    """
    first_day = daily_partitions.start.date()
    snapshot_keys = [
        key
        for key in ((dt.date.fromisoformat(d) - dt.timedelta(days=HORIZON_DAYS)) for d in label_days)
        if key >= first_day
    ]
    urls = {key.isoformat(): lake.table_url("features", "date", key.isoformat()) for key in snapshot_keys}
    missing = [key for key, url in urls.items() if not lake.exists(url)]
    present = [url for key, url in urls.items() if key not in missing]
    if not present:
        return pl.LazyFrame(schema={"user_id": pl.String(), "snapshot_date": pl.Date()}), missing
    scan = lake.scan_tables(present, {"date": pl.Date()})
    return scan.select("user_id", pl.col("date").alias("snapshot_date")), missing
