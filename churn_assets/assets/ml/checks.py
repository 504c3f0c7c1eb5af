"""Blocking checks of the model and its predictions: a failure stops what reads them in the same run."""

import dagster as dg
import polars as pl

from churn_assets.assets.ml.model import SCORE_COLUMN, model
from churn_assets.assets.ml.predictions import predictions
from churn_assets.partitions import daily_partitions, monthly_partitions
from churn_assets.resources.model_io_manager import ChurnModel


@dg.asset_check(
    asset=model,
    blocking=True,
    partitions_def=monthly_partitions,
    description=(
        "The stored artifacts load back verified against their card (XGBoost format, sha256), the threshold "
        "lies in (0, 1), the risk-band cut-offs rise, and the reference sample holds every feature and the score."
    ),
)
def model_artifacts_are_sound(model: dict[str, ChurnModel]) -> dg.AssetCheckResult:
    problems: dict[str, list[str]] = {}
    for month, churn_model in sorted(model.items()):
        card = churn_model.card
        found = []
        if not 0.0 < card["threshold"] < 1.0:
            found.append(f"threshold {card['threshold']} outside (0, 1)")
        bands = card["risk_bands"]
        if not bands["Low"] <= bands["Medium"] <= bands["High"] <= bands["Critical"]:
            found.append(f"risk-band cut-offs do not rise: {bands}")
        wanted = {f["name"] for f in card["features"]} | {SCORE_COLUMN}
        lacking = sorted(wanted - set(churn_model.reference_sample.columns))
        if lacking:
            found.append(f"reference sample lacks {lacking}")
        if found:
            problems[month] = found
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "models": len(model),
            "versions": dg.MetadataValue.json({m: cm.version for m, cm in sorted(model.items())}),
            "problems": dg.MetadataValue.json(problems),
        },
    )


@dg.asset_check(
    asset=predictions,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Per day: exactly one prediction per user of the feature snapshot, probabilities in [0, 1], a risk band "
        "for everyone, ranks 1..n without gaps."
    ),
    additional_ins={"features": dg.AssetIn()},
)
def predictions_cover_every_user(predictions: pl.LazyFrame, features: pl.LazyFrame) -> dg.AssetCheckResult:
    keys = ["date", "user_id"]
    stats = predictions.select(
        (pl.len() - pl.struct(keys).n_unique()).alias("duplicate_users"),
        (~pl.col("churn_probability").is_between(0.0, 1.0)).sum().alias("probabilities_out_of_range"),
        pl.col("risk_band").is_null().sum().alias("users_without_band"),
        (pl.col("rank").max().over("date") != pl.len().over("date")).sum().alias("rows_with_rank_gaps"),
        (pl.len() - pl.struct("date", "rank").n_unique()).alias("duplicate_ranks"),
        pl.len().alias("rows"),
    ).collect().row(0, named=True)
    stats["users_not_scored"] = features.select(keys).join(predictions.select(keys), on=keys, how="anti").select(pl.len()).collect().item()
    stats["users_not_in_features"] = predictions.select(keys).join(features.select(keys), on=keys, how="anti").select(pl.len()).collect().item()
    rows = stats.pop("rows")
    return dg.AssetCheckResult(passed=not any(stats.values()), metadata={**{k: int(v) for k, v in stats.items()}, "rows": rows})
