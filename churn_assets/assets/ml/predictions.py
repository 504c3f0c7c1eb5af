"""``predictions``: churn scores of every user at risk, with their risk band, rank and top reasons."""

import datetime as dt
from typing import Any

import dagster as dg
import polars as pl

from churn_assets.apps import key_string
from churn_assets.partitions import MONTH_FORMAT, daily_partitions, days_in_range
from churn_assets.resources.model_io_manager import CARD_FILE, ChurnModel, card_problems
from churn_assets.resources.parquet_io_manager import PartitionStream, column_schema, preview_markdown

# The inputs of an asset about day D and its model: features[D] and model[month of D]. A day maps to
# the month it belongs to; a range run spanning months gets each of them.
SCORED_DAY_INS = {
    "features": dg.AssetIn(),
    "model": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping()),
}

PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "churn_probability": pl.Float64(),
    "risk_band": pl.String(),
    "rank": pl.UInt32(),
    "top_reason_1": pl.String(),
    "top_reason_2": pl.String(),
    "top_reason_3": pl.String(),
    "recommended_action": pl.String(),
    "model_version": pl.String(),
}


@dg.asset(
    group_name="ml",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"xgboost", "parquet"},
    owners=["team:ml"],
    ins=SCORED_DAY_INS,
    metadata={
        "dagster/column_schema": column_schema(
            PREDICTIONS_SCHEMA,
            {
                "user_id": "A user at risk on D (a row of features[D]).",
                "churn_probability": "The model's probability that the user churns within H days after D.",
                "risk_band": "Low, Medium, High or Critical: the model card's cut-offs of churn_probability.",
                "rank": "1 for the highest churn_probability of the day (ties by user_id), without gaps.",
                "top_reason_1": "The feature that raised the user's score most (XGBoost contributions).",
                "top_reason_2": "The feature that raised it second most; null when fewer raised it.",
                "top_reason_3": "The feature that raised it third most; null when fewer raised it.",
                "recommended_action": (
                    "What the retention team does: the risk band's action, or a win-back campaign for a High or "
                    "Critical user silent for the last 7 days or more."
                ),
                "model_version": "The version of the model that scored the day (its model card's).",
            },
            key="user_id",
            not_null=["churn_probability", "risk_band", "rank", "recommended_action", "model_version"],
        )
    },
)
def predictions(
    context: dg.AssetExecutionContext, features: pl.LazyFrame, model: dict[str, ChurnModel]
) -> PartitionStream:
    """Every user of ``features[D]`` scored by ``model[month of D]``, one row each, highest risk first:
    ``churn_probability``, ``risk_band`` (Low / Medium / High / Critical, cut-offs from the model card),
    ``rank`` (1 = highest probability; ties by user_id), ``top_reason_1..3`` (the features that raised this
    user's score the most, by XGBoost's per-feature contributions; null when fewer did), the
    ``recommended_action`` (the band's, or a win-back campaign for a High or Critical user silent for 7 days or
    more) and the ``model_version``. Reads ``features[D]`` and ``model[month of D]``.
    """

    require_sound_cards(model)

    def stream():
        for day in days_in_range(context):
            churn_model = model[day.strftime(MONTH_FORMAT)]
            frame = features.filter(pl.col("date") == day).drop("date").collect()
            require_model_features("predictions", day, churn_model, frame)
            scored = predict_day(churn_model, frame)
            unseen = unseen_categories(churn_model, frame)
            warn_of_unseen_categories(context, day, churn_model, unseen)
            context.add_asset_metadata(
                {
                    **scored_metadata(scored, churn_model.card),
                    **{f"unseen_share/{name}": share for name, (share, _) in unseen.items()},
                    "highest_risk": highest_risk(scored),
                },
                partition_key=day.isoformat(),
            )
            yield day.isoformat(), scored

    return PartitionStream(stream())


# A categorical feature's value that the model was not trained on (a new release's app_version, a platform a
# release now spells "ios") is scored as missing, without a word. For more than this share of a day's users
# the day's log warns: the export changed, or the app did and the model has yet to learn it.
UNSEEN_WARNING_SHARE = 0.5


def unseen_categories(churn_model: ChurnModel, features: pl.DataFrame) -> dict[str, tuple[float, list[str]]]:
    """Each categorical feature of the model: the share of ``features``' rows whose value (null aside) is none of
    the model's categories, and the commonest such values (three at most)."""
    from churn_assets.assets.ml.scoring import model_specs

    found = {}
    for spec in model_specs(churn_model):
        if spec.kind != "categorical":
            continue
        values = features.get_column(spec.name).cast(pl.String)
        unseen = values.filter(values.is_not_null() & ~values.is_in(list(spec.categories)))
        commonest = unseen.value_counts(sort=True).get_column(spec.name).head(3).to_list()
        found[spec.name] = (unseen.len() / features.height if features.height else 0.0, commonest)
    return found


def warn_of_unseen_categories(
    context: dg.AssetExecutionContext, day: dt.date, churn_model: ChurnModel, unseen: dict[str, tuple[float, list]]
) -> None:
    """A warning in the run's log for each feature whose unseen share is above ``UNSEEN_WARNING_SHARE``, naming
    the values and what to do."""
    month = day.strftime(MONTH_FORMAT)
    for name, (share, values) in unseen.items():
        if share > UNSEEN_WARNING_SHARE:
            context.log.warning(
                f"predictions[{day}]: {share:.0%} of the users have a {name} that model[{month}] "
                f"({churn_model.version}) was not trained on ({', '.join(map(repr, values))}), scored as missing. "
                f"If a release changed how the export writes it (renamed, respelt), fix the export and re-deliver "
                f"its days; if the app has a new {name}, the next monthly model learns it (or materialize "
                f"{key_string('training_set')},{key_string('model')} for {month} again). drift_report[{day}] shows "
                "the column."
            )


def require_model_features(asset: str, day: dt.date, churn_model: ChurnModel, features: pl.DataFrame) -> None:
    """Fails ``asset[day]`` by name when ``features[day]`` lacks columns the model of its month needs (the
    event types, or the feature catalog, differ between the two), saying which and what to do."""
    missing = churn_model.features_missing_from(features.columns)
    if missing:
        month = day.strftime(MONTH_FORMAT)
        raise dg.Failure(
            f"{asset}[{day}]: features[{day}] lacks columns {missing} that model[{month}] "
            f"({churn_model.version}, trained for {churn_model.card['trained_for_month']}) needs: features[{day}] "
            "and the model were made with other event types (CHURN_EVENT_TYPES) or another feature catalog. "
            f"Materialize {key_string('features')}[{day}] again with the model's (a new event type needs "
            f"user_daily of its window first), or train model[{month}] on the current features "
            f"({key_string('training_set')},{key_string('model')} for {month}).",
            metadata={"missing_features": dg.MetadataValue.json(missing)},
            allow_retries=False,
        )


def require_sound_cards(models: dict[str, ChurnModel]) -> None:
    """Fails ``predictions``, before any day is scored or stored, when the card of a model it would score with
    is unfit (:func:`card_problems`), naming the card and what is wrong with it: bands from cut-offs that do not
    rise, or a missing threshold, would be stored as the day's predictions. A card edited by hand is refused as
    it loads, but only one whose ``model_version`` hashes its threshold and cut-offs: a card stored before (the
    model file's hash alone, kept through an upgrade) loads as it is, and this is what stops it."""
    for month, churn_model in sorted(models.items()):
        if found := card_problems(churn_model.card):
            raise dg.Failure(
                f"predictions: the card of model[{month}] ({CARD_FILE} of {churn_model.card.get('model_version')}) "
                f"cannot be scored with: {'; '.join(found)}. Nothing is stored. Restore the card, or materialize "
                f"{key_string('model')}[{month}] again.",
                metadata={"problems": dg.MetadataValue.json(found)},
                allow_retries=False,
            )


def predict_day(churn_model: ChurnModel, features: pl.DataFrame) -> pl.DataFrame:
    """``predictions[D]`` from ``features[D]``: one row per feature row, in rank order."""
    from churn_assets.assets.ml.metrics import recently_active
    from churn_assets.assets.ml.scoring import LAPSED_ACTION, RECOMMENDED_ACTIONS, risk_bands, score_with_reasons

    probabilities, reasons = score_with_reasons(churn_model, features)
    band = pl.col("risk_band")
    return (
        pl.DataFrame(
            {
                "user_id": features.get_column("user_id"),
                "churn_probability": probabilities,
                "risk_band": risk_bands(probabilities, churn_model.card["risk_bands"]),
                **{f"top_reason_{i + 1}": reason for i, reason in enumerate(reasons)},
                "recent": recently_active(features),
            }
        )
        .sort(["churn_probability", "user_id"], descending=[True, False])
        .with_row_index("rank", offset=1)
        .with_columns(
            pl.when(~pl.col("recent") & band.is_in(["High", "Critical"]))
            .then(pl.lit(LAPSED_ACTION))
            .otherwise(band.replace_strict(RECOMMENDED_ACTIONS, return_dtype=pl.String))
            .alias("recommended_action"),
            pl.lit(churn_model.version, dtype=pl.String).alias("model_version"),
        )
        .select(list(PREDICTIONS_SCHEMA))
        .cast(PREDICTIONS_SCHEMA)
    )


def scored_metadata(scored: pl.DataFrame, card: dict[str, Any]) -> dict[str, Any]:
    """What a day's materialization records of its scores (``scored``, the partition as stored) under the model whose
    ``card`` scored them: its version, horizon, users, mean probability, share over the threshold, users per band."""
    bands = dict(scored.get_column("risk_band").value_counts().iter_rows())
    probability = scored.get_column("churn_probability")
    return {
        "model_version": card["model_version"],
        # What a probability is of: no activity in this many days after D (the model's labels).
        "horizon_days": int(card["label"]["horizon_days"]),
        "users": scored.height,
        "mean_churn_probability": float(probability.mean() or 0.0),
        "flagged_share": float((probability >= card["threshold"]).mean() or 0.0),
        **{f"band/{band}": int(bands.get(band, 0)) for band in card["risk_bands"]},
    }


def highest_risk(scored: pl.DataFrame) -> dg.MetadataValue:
    """The metadata ``highest_risk``: the first rows of a day's scores (ranked, riskiest first) as a Markdown
    table of rank, user, probability, band and top reasons. ``churn-assets erase`` rebuilds it the same way."""
    return preview_markdown(
        scored.select(
            "rank", "user_id", "churn_probability", "risk_band", "top_reason_1", "top_reason_2", "top_reason_3"
        )
    )
