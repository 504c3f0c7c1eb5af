"""Blocking checks of ``features`` and ``labels``: a partition that fails one stops everything downstream."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from churn_assets.assets.check_days import (
    check_result,
    compare_keys,
    counts_per_day,
    each_checked_batch,
    each_partition,
    in_days,
    partition_check,
    without_rows,
)
from churn_assets.assets.features.catalog import LOOKBACK_DAYS, feature_catalog
from churn_assets.assets.features.features import features
from churn_assets.assets.features.labels import HORIZON_DAYS, labels
from churn_assets.partitions import daily_partitions
from churn_assets.resources import ChurnParameters, LakeResource
from churn_assets.resources.lake import LOCAL_COPIES, Lake, step_owner


@partition_check(
    "features_cover_users_at_risk",
    features,
    (
        "One row per user and day, no null where the catalog says none, and exactly the users at risk "
        "according to install_times (installed on or before D, last active in D-27..D)."
    ),
    additional_deps=["install_times"],
)
def features_cover_users_at_risk(
    context: dg.AssetCheckExecutionContext,
    features: pl.LazyFrame,
    install_times: pl.LazyFrame,
    churn: ChurnParameters,
) -> Iterator[dg.AssetCheckEvaluation]:
    required = [f.name for f in feature_catalog(churn.event_types) if not f.nullable]

    def compared(days: list[dt.date]) -> pl.LazyFrame:
        # install_times is computed from raw_events independently of user_daily: it says who is at risk.
        at_risk = install_times.filter(
            in_days(days)
            & (pl.col("install_time").dt.date() <= pl.col("date"))
            & (pl.col("last_active_date") >= pl.col("date") - pl.duration(days=LOOKBACK_DAYS - 1))
        ).select("date", "user_id")
        rows = features.filter(in_days(days)).select("date", "user_id")
        return compare_keys(rows, at_risk, "users_not_at_risk", "users_at_risk_missing")

    per_day = counts_per_day(
        each_checked_batch(context, features),
        features,
        (pl.len() - pl.struct("date", "user_id").n_unique()).alias("duplicate_user_days"),
        pl.sum_horizontal([pl.col(c).is_null().sum() for c in ["user_id", *required]])
        .alias("nulls_in_required_columns"),
        pl.len().alias("rows"),
        also=compared,
    )
    results = {day.isoformat(): check_result(without_rows(stats), rows=stats["rows"]) for day, stats in per_day.items()}
    yield from each_partition(context, results)


@partition_check(
    "labels_match_snapshots",
    labels,
    (
        "churned is 0 or 1, snapshot_date is the label day minus H, and the labelled population is "
        "exactly features[D-H] (no user added or lost)."
    ),
)
def labels_match_snapshots(
    context: dg.AssetCheckExecutionContext, labels: pl.LazyFrame, lake: LakeResource
) -> Iterator[dg.AssetCheckEvaluation]:
    step = step_owner(context.get_step_execution_context())

    def compared(days: list[dt.date]) -> pl.LazyFrame:
        snapshots, missing = _snapshots(days, lake.lake, owner=step)
        labelled = labels.filter(in_days(days)).select("date", "user_id", "snapshot_date")
        counts = compare_keys(labelled, snapshots, "users_not_in_snapshot", "snapshot_users_unlabelled")
        missing_per_day = pl.LazyFrame(
            {"date": days, "snapshot_partitions_missing": [int(day in missing) for day in days]},
            schema={"date": pl.Date(), "snapshot_partitions_missing": pl.Int64()},
        )
        return missing_per_day.join(counts, on="date", how="left")

    per_day = counts_per_day(
        each_checked_batch(context, labels),
        labels,
        (~pl.col("churned").is_in([0, 1]) | pl.col("churned").is_null()).sum().alias("non_binary_labels"),
        (pl.col("snapshot_date") != pl.col("date") - pl.duration(days=HORIZON_DAYS))
        .sum()
        .alias("wrong_snapshot_dates"),
        pl.col("snapshot_date").is_null().sum().alias("null_snapshot_dates"),
        (pl.len() - pl.struct("date", "user_id").n_unique()).alias("duplicate_user_days"),
        pl.len().alias("rows"),
        pl.col("churned").cast(pl.Int64).sum().alias("churned"),
        pl.col("churned").count().alias("labelled"),
        also=compared,
    )
    results = {}
    for day, stats in per_day.items():
        churned, labelled = stats.pop("churned"), stats.pop("labelled")
        churn_rate = churned / labelled if labelled else 0.0
        results[day.isoformat()] = check_result(without_rows(stats), rows=stats["rows"], churn_rate=churn_rate)
    yield from each_partition(context, results)


def _snapshots(label_days: list[dt.date], lake: Lake, owner: str) -> tuple[pl.LazyFrame, set[dt.date]]:
    """The (date, user_id, snapshot_date) rows of ``features[D-H]`` for these label days D (``date``), and
    the label days whose snapshot the lake lacks (a label day whose snapshot would fall before the first
    partition has none). Read as they are now, whatever another run rewrites while the check reads them
    (``LocalCopies.scan``, for the check step ``owner``).

    Read from the lake directly: Dagster ignores partition mappings on an asset check's inputs (its
    check nodes have none), so an ``additional_ins`` mapped by -H would load ``features[D]`` instead.
    """
    first_day = daily_partitions.start.date()
    snapshot_days = [d - dt.timedelta(days=HORIZON_DAYS) for d in label_days]
    keys = [d.isoformat() for d in snapshot_days if d >= first_day]
    present, missing = lake.stored_table_etags("features", "date", keys)
    lacking = {dt.date.fromisoformat(key) + dt.timedelta(days=HORIZON_DAYS) for key in missing}
    if not present:
        empty = pl.LazyFrame(schema={"date": pl.Date(), "user_id": pl.String(), "snapshot_date": pl.Date()})
        return empty, lacking
    # With their ETags: a range run's snapshots that it wrote itself are read from its local copies, not downloaded.
    scan = LOCAL_COPIES.scan(lake, list(present), {"date": pl.Date()}, owner=owner, etags=present)
    label_day = (pl.col("date") + pl.duration(days=HORIZON_DAYS)).cast(pl.Date)
    return scan.select(label_day, "user_id", pl.col("date").alias("snapshot_date")), lacking
