"""Blocking checks of the training set, the model and its predictions: a failure stops what reads them in
the same run."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from churn_assets.apps import key_string
from churn_assets.assets.check_days import check_result, compare_keys, each_partition, partition_check, without_rows
from churn_assets.assets.features.labels import HORIZON_DAYS
from churn_assets.assets.ml.model import SCORE_COLUMN, model
from churn_assets.assets.ml.predictions import predictions
from churn_assets.assets.ml.training_set import training_set
from churn_assets.resources.model_io_manager import ChurnModel, card_problems

LABEL_RATE_BAND = (0.01, 0.9)
_CUTOFF_COUNTS = ["labels_after_cutoff", "snapshots_after_cutoff", "snapshots_not_h_days_before_label"]


@partition_check(
    "training_set_is_sound",
    training_set,
    (
        f"Per month: both classes present, label rate within [{LABEL_RATE_BAND[0]}, {LABEL_RATE_BAND[1]}], "
        "every label known before the month (label_date < its first day) and every snapshot H days before its "
        "label."
    ),
)
def training_set_is_sound(
    context: dg.AssetCheckExecutionContext, training_set: pl.LazyFrame
) -> Iterator[dg.AssetCheckEvaluation]:
    month_start = pl.concat_str(pl.col("month"), pl.lit("-01")).str.to_date()
    horizon = pl.duration(days=HORIZON_DAYS)
    per_month = (
        training_set.group_by("month")
        .agg(
            pl.len().alias("rows"),
            pl.col("churned").mean().alias("label_rate"),
            pl.col("churned").n_unique().alias("classes"),
            (pl.col("label_date") >= month_start).sum().alias("labels_after_cutoff"),
            (pl.col("snapshot_date") > month_start - horizon - pl.duration(days=1))
            .sum()
            .alias("snapshots_after_cutoff"),
            (pl.col("label_date") - pl.col("snapshot_date") != horizon).sum().alias(
                "snapshots_not_h_days_before_label"
            ),
        )
        .sort("month")
        .collect()
    )
    low, high = LABEL_RATE_BAND
    stats = {row["month"]: row for row in per_month.iter_rows(named=True)}
    results = {}
    for month in context.partition_keys:
        row = stats.get(month, {"rows": 0, "label_rate": None, "classes": 0})
        label_rate = row["label_rate"]
        failures = {
            "months_with_one_class": int(row["classes"] < 2),
            "months_with_label_rate_outside_band": int(label_rate is None or not low <= label_rate <= high),
            **{name: row.get(name, 0) for name in _CUTOFF_COUNTS},
        }
        rate = round(label_rate, 4) if label_rate is not None else 0.0
        hint = {}
        if failures["snapshots_not_h_days_before_label"]:  # labels made under another CHURN_HORIZON_DAYS
            hint["cause"] = (
                f"labels whose snapshot is not {HORIZON_DAYS} days (CHURN_HORIZON_DAYS) before them were made "
                f"with another horizon: materialize {key_string('labels')} again over the label days of "
                f"training_set[{month}], then {key_string('training_set')}"
            )
        results[month] = check_result(failures, label_rate=rate, rows=row["rows"], **hint)
    yield from each_partition(context, results)


@partition_check(
    "model_artifacts_are_sound",
    model,
    (
        "The stored artifacts load back verified against their card (XGBoost format, sha256), the "
        "threshold lies in (0, 1), the risk-band cut-offs rise, and the reference sample holds every "
        "feature and the score."
    ),
)
def model_artifacts_are_sound(
    context: dg.AssetCheckExecutionContext, model: dict[str, ChurnModel]
) -> Iterator[dg.AssetCheckEvaluation]:
    # A dict-typed input of one partition arrives as the bare model.
    models = model if isinstance(model, dict) else {context.partition_key: model}
    results = {}
    for month, churn_model in sorted(models.items()):
        card = churn_model.card
        found = card_problems(card)
        wanted = {f["name"] for f in card["features"]} | {SCORE_COLUMN}
        lacking = sorted(wanted - set(churn_model.reference_sample.columns))
        if lacking:
            found.append(f"reference sample lacks {lacking}")
        results[month] = check_result(
            {"problems": len(found)}, version=churn_model.version, found="; ".join(found)
        )
    yield from each_partition(context, results)


@partition_check(
    "predictions_cover_every_user",
    predictions,
    (
        "Per day: exactly one prediction per user of the feature snapshot, probabilities in [0, 1], a "
        "risk band for everyone, ranks 1..n without gaps."
    ),
    additional_deps=["features"],
)
def predictions_cover_every_user(
    context: dg.AssetCheckExecutionContext, predictions: pl.LazyFrame, features: pl.LazyFrame
) -> Iterator[dg.AssetCheckEvaluation]:
    keys = ["date", "user_id"]
    per_day = predictions.group_by("date").agg(
        (pl.len() - pl.struct(keys).n_unique()).alias("duplicate_users"),
        (~pl.col("churn_probability").is_between(0.0, 1.0)).sum().alias("probabilities_out_of_range"),
        pl.col("risk_band").is_null().sum().alias("users_without_band"),
        (pl.col("rank").max().over("date") != pl.len().over("date")).sum().alias("rows_with_rank_gaps"),
        (pl.len() - pl.struct("date", "rank").n_unique()).alias("duplicate_ranks"),
        pl.len().alias("rows"),
    )
    unmatched = compare_keys(
        features.select(keys), predictions.select(keys), "users_not_scored", "users_not_in_features"
    )
    checked = [dt.date.fromisoformat(key) for key in context.partition_keys]
    days = pl.LazyFrame({"date": checked}, schema={"date": pl.Date()})
    counts = (
        days.join(per_day, on="date", how="left")
        .join(unmatched, on="date", how="left")
        .fill_null(0)
        .collect()
    )
    results = {}
    for stats in counts.iter_rows(named=True):
        day = stats.pop("date")
        results[day.isoformat()] = check_result(without_rows(stats), rows=stats["rows"])
    yield from each_partition(context, results)
