"""``model``: the model in production during a month — this month's challenger or last month's champion."""

import datetime as dt
import json
import math
import time
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from churn_assets.apps import asset_key, automation_name, key_string
from churn_assets.assets.features.catalog import feature_catalog
from churn_assets.assets.ml.training_set import MonthWindow
from churn_assets.partitions import daily_partitions, monthly_partitions
from churn_assets.resources import ChurnParameters
from churn_assets.resources.lake import parquet_bytes
from churn_assets.resources.model_io_manager import CARD_FORMAT, ChurnModel, model_version
from churn_assets.resources.parquet_io_manager import PartitionStream, markdown_table

SCORE_COLUMN = "churn_probability"
# The pool the model step holds (dagster.yaml and deploy/dagster.yaml give each pool one slot): each app's own.
MODEL_POOL = automation_name("model")


class ModelConfig(dg.Config):
    target_recall: float = Field(
        default=0.80,
        description=(
            "Recall the decision threshold reaches on validation: a missed churner costs more than a wasted nudge."
        ),
    )
    pr_auc_tolerance: float = Field(
        default=0.0, description="The challenger is promoted when its holdout PR-AUC ≥ the champion's minus this."
    )
    baseline_pr_auc_tolerance: float = Field(
        default=0.05,
        description=(
            "Gate: the challenger's holdout PR-AUC must reach the logistic baseline's minus this. A broken model (a "
            "leak, a bug, features gone wrong) loses by far more; a sound one at a few thousand users may lose by "
            "a few hundredths, about the spread of the gap over holdout users and seeds (docs/operations.md)."
        ),
    )
    roc_auc_floor: float = Field(default=0.65, description="Gate: the challenger's holdout ROC-AUC must reach this.")
    validation_share: float = Field(
        default=0.15, description="Share of snapshot days (after embargoes) for validation."
    )
    holdout_share: float = Field(default=0.15, description="Share of snapshot days (after embargoes) for the holdout.")
    max_boost_rounds: int = Field(
        default=500, description="Boosting rounds at most; early stopping usually ends sooner."
    )
    early_stopping_rounds: int = Field(default=30, description="Rounds without validation improvement before stopping.")
    seed: int = Field(default=7, description="Seed of XGBoost's row/column sampling and of every sample drawn.")
    reference_rows: int = Field(default=10_000, description="Rows of the reference sample kept for drift reports.")


@dg.asset(
    group_name="ml",
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"xgboost", "scikitlearn"},
    owners=["team:ml"],
    io_manager_key="model_io_manager",
    # One model step at a time, whichever run it is in (dagster.yaml gives the pool one slot): two runs writing
    # model[M] at once (the schedule's and a UI "Materialize" or a CLI run) interleaved their files, and the
    # month could be left unloadable. The monthly_retraining lane queues the schedule's runs; this also holds
    # the runs outside it.
    pool=MODEL_POOL,
    ins={
        "training_set": dg.AssetIn(),
        "champion": dg.AssetIn(
            key="model",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    },
)
def model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    churn: ChurnParameters,
    training_set: pl.LazyFrame,
    champion: dict[str, ChurnModel] | None,
) -> PartitionStream:
    """The model in production during month M, stored as XGBoost's own format with a JSON card, a
    reference sample for drift and a holdout report (HTML). A challenger is trained on
    ``training_set[M]`` (time-based train / validation / holdout blocks, H-day embargoes between them),
    and promoted only when it passes the gates (holdout PR-AUC within a tolerance of a logistic baseline's,
    ROC-AUC above a floor) and is at least as good on holdout PR-AUC as the champion ``model[M-1]`` scored
    on the same holdout; otherwise the champion's artifacts are carried forward unchanged. A champion that
    needs features ``training_set[M]`` lacks, or that was trained for another label horizon
    (``CHURN_HORIZON_DAYS``), is never carried forward: when the challenger fails too, the step fails and
    stores nothing. Reads ``training_set[M]`` and ``model[M-1]`` (none for the first model). A range run
    carries the champion from month to month.
    """
    warn_without_pool_limit(context)
    previous = None if not champion else champion[max(champion)]
    definitions = {f.name: f.definition for f in feature_catalog(churn.event_types)}

    def stream():
        nonlocal previous
        for month in context.partition_keys:
            frame = training_set.filter(pl.col("month") == month).drop("month").collect()
            require_labels_of_horizon(month, frame, churn.horizon_days, churn.lookback_months)
            chosen, metadata = train_and_select(
                month=month,
                frame=frame,
                champion=previous,
                config=config,
                horizon_days=churn.horizon_days,
                training_set_version=_data_version(context, "training_set", month),
                definitions=definitions,
            )
            context.add_asset_metadata(metadata, partition_key=month)
            context.log.info(f"model[{month}]: {metadata['decision']} ({metadata['reason']})")
            previous = chosen
            yield month, chosen

    return PartitionStream(stream())


def warn_without_pool_limit(context: dg.AssetExecutionContext) -> None:
    """Warns when the instance holds the pool ``model`` to no limit: its dagster.yaml predates the pool (an instance
    file kept through an upgrade) or leaves it out. Dagster then runs every model step at once, and two runs writing
    model[M] together can leave the month unloadable, with nothing else saying so. An ephemeral instance (a CLI
    run without DAGSTER_HOME, a test) shares no run with another process: nothing to say."""
    instance = context.instance
    if instance.is_ephemeral or not instance.event_log_storage.supports_global_concurrency_limits:
        return
    if instance.event_log_storage.get_concurrency_info(MODEL_POOL).limit is None:
        context.log.warning(
            f"the Dagster instance sets no limit on the pool '{MODEL_POOL}', so another run's model step may write "
            "the same month at the same time and leave it unloadable: add `pools: default_limit: 1` under "
            "`concurrency:` in $DAGSTER_HOME/dagster.yaml, as the repository's dagster.yaml has it "
            "(docs/operations.md, Upgrading)"
        )


def require_labels_of_horizon(month: str, frame: pl.DataFrame, horizon_days: int, lookback_months: int) -> None:
    """Fails model[month] when ``training_set[month]`` holds labels of another horizon than ``horizon_days``
    (stored before CHURN_HORIZON_DAYS changed): trained on them, the model's card would name a horizon its
    scores are not of, and its embargoes would be another horizon's."""
    gaps = frame.select((pl.col("label_date") - pl.col("snapshot_date")).dt.total_days().unique().sort())
    gaps = gaps.to_series().to_list()
    if gaps and gaps != [horizon_days]:
        resolved = " and ".join(map(str, gaps))
        window = MonthWindow.of(month, lookback_months)
        first = max(window.first_label_day, daily_partitions.start.date())  # no label day before the first
        raise dg.Failure(
            f"model[{month}]: training_set[{month}] holds labels resolved {resolved} days after their snapshot, "
            f"but CHURN_HORIZON_DAYS is {horizon_days}: they were made with another horizon. Nothing is stored: "
            f"materialize {key_string('labels')} again over the label days of training_set[{month}] "
            f"(--select {key_string('labels')} --partition-range {first}...{window.last_label_day}), then "
            f"{key_string('training_set')},{key_string('model')} for {month}.",
            metadata={"label_horizons_days": dg.MetadataValue.json(gaps), "horizon_days": horizon_days},
            allow_retries=False,
        )


def train_and_select(
    month: str,
    frame: pl.DataFrame,
    champion: ChurnModel | None,
    config: ModelConfig,
    horizon_days: int,
    training_set_version: dict[str, Any] | None = None,
    definitions: dict[str, str] | None = None,
) -> tuple[ChurnModel, dict[str, Any]]:
    """Trains month ``month``'s challenger on ``frame`` and returns the model to put in production (the
    challenger or ``champion`` carried forward) with the materialization's metadata."""
    # Imported where used: XGBoost and scikit-learn take seconds to import.
    import xgboost as xgb

    from churn_assets.assets.ml import metrics, scoring, training
    from churn_assets.assets.ml.holdout_report import holdout_report_html

    started = time.perf_counter()
    if frame.height == 0:
        raise dg.Failure(f"training_set[{month}] is empty: nothing to train model[{month}] on", allow_retries=False)
    try:
        split = training.time_split(
            frame.get_column("snapshot_date").min(),
            frame.get_column("snapshot_date").max(),
            horizon_days,
            config.validation_share,
            config.holdout_share,
        )
    except ValueError as error:
        raise dg.Failure(
            f"model[{month}]: training_set[{month}] is too short for a model: {error}. Its labels start "
            "late in the lookback (the first months after CHURN_START_DATE): train a later month.",
            allow_retries=False,
        ) from error
    blocks = {name: split.rows(frame, name) for name in ("train", "validation", "holdout")}
    for name, rows in blocks.items():
        churners = int(rows.get_column(training.LABEL).sum())
        if not 0 < churners < rows.height:
            first, last = getattr(split, name)
            horizon = dt.timedelta(days=horizon_days)
            raise dg.Failure(
                f"model[{month}]: the {name} block {first}..{last} of training_set[{month}] has {rows.height} rows, "
                f"{churners} churned and {rows.height - churners} retained: both are needed to train and judge a "
                "model. Nothing is stored, and no champion is carried forward on a block that cannot judge it. Days "
                "of snapshots without a churner, or without a retained user, are more likely labels gone wrong than "
                f"a quiet week: materialize {key_string('labels')} again for their label days (--partition-range "
                f"{first + horizon}...{last + horizon}), then {key_string('training_set')},{key_string('model')} for "
                f"{month}.",
                metadata={"block": name, "rows": rows.height, "churned_rows": churners},
                allow_retries=False,
            )
    train, validation, holdout = blocks["train"], blocks["validation"], blocks["holdout"]
    specs = training.feature_specs(train)
    booster = training.train_booster(
        train, validation, specs, config.seed, config.max_boost_rounds, config.early_stopping_rounds
    )
    validation_scores = training.predict(booster, validation, specs)
    validation_labels = validation.get_column(training.LABEL).to_numpy()
    threshold = training.threshold_for_recall(validation_labels, validation_scores, config.target_recall)
    cutoffs = training.risk_cutoffs(validation_labels, validation_scores, threshold)
    holdout_scores = training.predict(booster, holdout, specs)
    challenger_eval = metrics.evaluate(holdout, holdout_scores, threshold)

    baseline = training.fit_baseline(train, specs, config.seed)
    baseline_threshold = training.threshold_for_recall(
        validation_labels, baseline.scores(validation), config.target_recall
    )
    holdout_scored = {"challenger": holdout_scores, "logistic baseline": baseline.scores(holdout)}
    baseline_eval = metrics.evaluate(holdout, holdout_scored["logistic baseline"], baseline_threshold)

    # A champion that cannot be carried forward: why, what to do, and the failure's metadata.
    champion_eval, champion_note, unusable = None, None, None
    if champion is not None:
        missing = champion.features_missing_from(holdout.columns)
        champion_horizon = champion.card.get("label", {}).get("horizon_days", horizon_days)
        if missing:
            champion_note = f"the champion {champion.version} needs features this training set lacks: {missing}"
            # Carried forward, the champion would fail every predictions day of the month: the features[D] it
            # would score lack the same columns.
            unusable = (
                f"needs features {missing} that training_set[{month}] lacks, so it cannot score month {month} "
                "either",
                # labels hold no feature (they stay valid); user_daily lost the type's column when it was
                # refreshed without it, and features cannot count the type again before it has it back.
                "Bring the features back (CHURN_EVENT_TYPES as when the champion was trained, then user_daily "
                f"and features over training_set[{month}]'s snapshot days in one run, then training_set[{month}])",
                {"missing_features": dg.MetadataValue.json(missing)},
            )
        elif champion_horizon != horizon_days:
            # Its scores are probabilities of another event (no activity in champion_horizon days): compared
            # with these labels, or carried forward into a month whose labels mean H days, it would mislead.
            champion_note = (
                f"the champion {champion.version} predicts churn over {champion_horizon} days, "
                f"not the {horizon_days} days of these labels"
            )
            unusable = (
                f"was trained for a {champion_horizon}-day horizon, but CHURN_HORIZON_DAYS is {horizon_days}: "
                f"carried forward, it would score month {month} for another horizon than its labels",
                f"Set CHURN_HORIZON_DAYS back to {champion_horizon}",
                {"champion_horizon_days": champion_horizon, "horizon_days": horizon_days},
            )
        else:
            champion_scores = holdout_scored[f"champion {champion.version}"] = scoring.score(champion, holdout)
            champion_eval = metrics.evaluate(holdout, champion_scores, champion.card["threshold"])
    promote, reason = decide(challenger_eval, baseline_eval, champion_eval, config, champion_note)
    if not promote and unusable is not None:
        why, remedy, metadata = unusable
        raise dg.Failure(
            f"model[{month}]: {reason}; the champion model[{champion.card['month']}] ({champion.version}) {why}. "
            f"Nothing is stored. {remedy}{_gate_advice(challenger_eval, baseline_eval, config)}.",
            metadata={
                **metadata,
                "metrics": dg.MetadataValue.md(
                    metrics.metrics_markdown({"challenger": challenger_eval, "baseline": baseline_eval})
                ),
            },
            allow_retries=False,
        )
    training_seconds = round(time.perf_counter() - started, 2)

    selection = {
        "decision": "promoted" if promote else "carried_forward",
        "reason": reason,
        "evaluated_on": {"training_set": month, "holdout": split.to_card()["holdout"]},
        "challenger": challenger_eval,
        "champion": champion_eval,
        "champion_version": None if champion is None else champion.version,
        "baseline": baseline_eval,
        "beats_baseline": _beats_baseline(challenger_eval, baseline_eval),
        "gates": {
            "roc_auc_floor": config.roc_auc_floor,
            "baseline_pr_auc_tolerance": config.baseline_pr_auc_tolerance,
            "pr_auc_tolerance": config.pr_auc_tolerance,
        },
    }
    if promote:
        model_bytes = bytes(booster.save_raw(raw_format="ubj"))
        reference = holdout.select([s.name for s in specs]).with_columns(pl.Series(SCORE_COLUMN, holdout_scores))
        if reference.height > config.reference_rows:
            reference = reference.sample(config.reference_rows, seed=config.seed)
        importance = booster.get_score(importance_type="gain")
        features = [s.to_card((definitions or {}).get(s.name)) for s in specs]
        card = {
            "format": CARD_FORMAT,
            "month": month,
            "trained_for_month": month,
            "model_version": model_version(month, model_bytes, threshold, cutoffs, features),
            "carried_forward_from": None,
            "xgboost": {
                "version": xgb.__version__,
                "params": {**training.XGB_PARAMS, "seed": config.seed},
                "rounds": booster.num_boosted_rounds(),
                "early_stopping_rounds": config.early_stopping_rounds,
            },
            "features": features,
            "label": {
                "column": training.LABEL,
                "horizon_days": horizon_days,
                "definition": f"1 when the user had no activity in the {horizon_days} days after the snapshot day",
            },
            "threshold": threshold,
            "target_recall": config.target_recall,
            "risk_bands": cutoffs,
            "training_window": {
                **split.to_card(),
                "rows": {name: rows.height for name, rows in blocks.items()},
                "churn_rate": {
                    name: float(rows.get_column(training.LABEL).mean()) for name, rows in blocks.items()
                },
            },
            "data_versions": {"training_set": training_set_version or {"partition": month}},
            "metrics": {"holdout": challenger_eval, "baseline": baseline_eval},
            "feature_importance": {
                name: round(gain, 6) for name, gain in sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))
            },
            "reference_sample": {"rows": reference.height, "drawn_from": "holdout", "score_column": SCORE_COLUMN},
            "selection": selection,
        }
        chosen = ChurnModel(
            model_bytes=model_bytes,
            card=card,
            reference_parquet=parquet_bytes(reference),
            holdout_report_html=holdout_report_html(
                f"model[{month}]: holdout report of {card['model_version']}",
                {
                    "decision": reason,
                    "holdout snapshots": " .. ".join(split.to_card()["holdout"]),
                    "rows (churn rate)": f"{holdout.height:,} ({card['training_window']['churn_rate']['holdout']:.1%})",
                    "training rows": f"{train.height:,}, validation rows {validation.height:,}",
                    "boosting rounds": card["xgboost"]["rounds"],
                    "threshold": f"{threshold:.4f}, the score that reaches recall {config.target_recall} on validation",
                },
                holdout.get_column(training.LABEL).to_numpy(),
                holdout_scored,
                threshold,
                cutoffs,
                {"challenger": challenger_eval, "champion": champion_eval, "logistic baseline": baseline_eval},
            ).encode(),
            _booster=booster,
        )
    elif champion is not None:
        card = {k: v for k, v in champion.card.items() if k != "artifacts"}
        chosen = champion.with_card(
            {**card, "month": month, "carried_forward_from": champion.card["month"], "selection": selection}
        )
    else:
        raise dg.Failure(
            f"model[{month}]: no champion to fall back on and the challenger fails: {reason}. Nothing is stored"
            f"{_gate_advice(challenger_eval, baseline_eval, config)}.",
            metadata={
                "metrics": dg.MetadataValue.md(
                    metrics.metrics_markdown({"challenger": challenger_eval, "baseline": baseline_eval})
                )
            },
            allow_retries=False,
        )

    metadata = {  # what the chosen model's card keeps (its selection is this run's), then the run's own counts
        **card_metadata(chosen.card),
        "training_window": dg.MetadataValue.json(split.to_card()),
        "training_rows": frame.height,
        "training_seconds": training_seconds,
    }
    return chosen, metadata


def decide(
    challenger: dict[str, Any],
    baseline: dict[str, Any],
    champion: dict[str, Any] | None,
    config: ModelConfig,
    champion_note: str | None = None,
) -> tuple[bool, str]:
    """Whether the challenger goes to production, and why: it must pass the absolute gates (ROC-AUC floor,
    holdout PR-AUC within ``baseline_pr_auc_tolerance`` of the logistic baseline's), then be at least as good
    on holdout PR-AUC as the champion (within ``pr_auc_tolerance``)."""
    ours, theirs = challenger["all"], baseline["all"]
    failures = []
    if _below_floor(challenger, config):
        failures.append(f"holdout ROC-AUC {_f(ours['roc_auc'])} is below the floor {config.roc_auc_floor}")
    if _loses_to_baseline(challenger, baseline, config):
        failures.append(
            f"holdout PR-AUC {_f(ours['pr_auc'])} is below the logistic baseline's {_f(theirs['pr_auc'])} − "
            f"baseline_pr_auc_tolerance {config.baseline_pr_auc_tolerance}"
        )
    if failures:
        return False, "the challenger fails the gates: " + "; ".join(failures)
    gates = (
        f"passes the gates (ROC-AUC {_f(ours['roc_auc'])} ≥ {config.roc_auc_floor}, "
        f"PR-AUC {_versus_baseline(challenger, baseline, config)})"
    )
    if champion is None:
        return True, f"no champion to compare with ({champion_note or 'first model'}); the challenger {gates}"
    best = champion["all"]["pr_auc"]
    mine, theirs = _apart(ours["pr_auc"], best)
    if best is None or ours["pr_auc"] >= best - config.pr_auc_tolerance:
        return True, (
            f"challenger holdout PR-AUC {mine} ≥ champion's {theirs} − tolerance {config.pr_auc_tolerance}, "
            f"and it {gates}"
        )
    return False, f"challenger holdout PR-AUC {mine} < champion's {theirs} − tolerance {config.pr_auc_tolerance}"


def _below_floor(challenger: dict[str, Any], config: ModelConfig) -> bool:
    """Whether the challenger's holdout ROC-AUC misses ``roc_auc_floor`` (or has none)."""
    roc_auc = challenger["all"]["roc_auc"]
    return roc_auc is None or roc_auc < config.roc_auc_floor


def _loses_to_baseline(challenger: dict[str, Any], baseline: dict[str, Any], config: ModelConfig) -> bool:
    """Whether the challenger's holdout PR-AUC is more than ``baseline_pr_auc_tolerance`` under the logistic
    baseline's (or it has none): the margin a broken model loses by, not the noise of a small holdout."""
    ours, theirs = challenger["all"]["pr_auc"], baseline["all"]["pr_auc"]
    return ours is None or (theirs is not None and ours < theirs - config.baseline_pr_auc_tolerance)


def _beats_baseline(challenger: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """Whether the challenger's holdout PR-AUC is above the logistic baseline's: a challenger can pass the
    gate without it (within ``baseline_pr_auc_tolerance``), and the card and metadata say which."""
    ours, theirs = challenger["all"]["pr_auc"], baseline["all"]["pr_auc"]
    return ours is not None and (theirs is None or ours > theirs)


def _versus_baseline(challenger: dict[str, Any], baseline: dict[str, Any], config: ModelConfig) -> str:
    """A gate-passing challenger's holdout PR-AUC and how it stands against the baseline's, for the reason: above
    it, or under it within the tolerance (said, so that a reader sees the challenger did not beat it)."""
    ours, theirs = _apart(challenger["all"]["pr_auc"], baseline["all"]["pr_auc"])
    if _beats_baseline(challenger, baseline):
        return f"{ours} > baseline {theirs}"
    return (
        f"{ours} ≤ baseline {theirs}, within baseline_pr_auc_tolerance {config.baseline_pr_auc_tolerance}: "
        "the logistic baseline scores as well on this holdout"
    )


def _gate_advice(challenger: dict[str, Any], baseline: dict[str, Any], config: "ModelConfig") -> str:
    """The way out the failed gates leave, as the setting that would pass them: a lower ROC-AUC floor, a
    wider baseline tolerance, or both. A challenger far under the baseline is more often broken than
    unlucky, so that setting comes after what to look at first."""
    below_floor = _below_floor(challenger, config)
    loses = _loses_to_baseline(challenger, baseline, config)
    roc_auc, pr_auc = challenger["all"]["roc_auc"], challenger["all"]["pr_auc"]
    baseline_pr_auc = baseline["all"]["pr_auc"]
    if (below_floor and roc_auc is None) or (loses and pr_auc is None):
        return ""
    settings: dict[str, float] = {}
    if below_floor:
        settings["roc_auc_floor"] = math.floor((roc_auc - 0.005) * 100) / 100
    if loses:
        settings["baseline_pr_auc_tolerance"] = math.ceil((baseline_pr_auc - pr_auc) * 100 + 0.5) / 100
    if not settings:
        return ""
    command = json.dumps({"ops": {"model": {"config": settings}}})
    if loses:
        return (
            f" (the challenger's holdout PR-AUC is {baseline_pr_auc - pr_auc:.4f} under the logistic baseline's, "
            f"more than baseline_pr_auc_tolerance {config.baseline_pr_auc_tolerance}: a gap that wide is what a "
            "leak, a bug or a feature pipeline gone wrong shows, so read the holdout report and the features "
            f"first; to accept it anyway, run again with --config-json '{command}')"
        )
    return f" (to accept a challenger under the ROC-AUC floor, lower it: --config-json '{command}')"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _apart(a: float | None, b: float | None) -> tuple[str, str]:
    """``a`` and ``b`` as ``_f`` writes them, with as many more decimals (10 at most) as it takes to write two
    different values differently: a reason that compares them never reads "0.9544 < champion's 0.9544"."""
    digits = 4
    while a is not None and b is not None and a != b and digits < 10 and f"{a:.{digits}f}" == f"{b:.{digits}f}":
        digits += 1
    return tuple("n/a" if v is None else f"{v:.{digits}f}" for v in (a, b))


def card_metadata(card: dict[str, Any]) -> dict[str, Any]:
    """What a run of ``model`` records of the model it chose that the model's card keeps (the run builds its
    metadata from it, and ``churn-assets adopt`` from the stored card): the decision and why, the holdout metrics it
    was chosen on (``None`` where the run had no evaluation: no champion), threshold, risk bands, the feature
    importance. Not the run's own counts (training window, rows and seconds). A field an older card lacks is left
    out."""
    from churn_assets.assets.ml import metrics  # where used, as train_and_select does (it imports scikit-learn)

    selection = card.get("selection") or {}
    challenger, champion, baseline = (selection.get(who) for who in ("challenger", "champion", "baseline"))
    evaluated = {
        "challenger/roc_auc": _metric(challenger, "roc_auc"),
        "challenger/pr_auc": _metric(challenger, "pr_auc"),
        "champion/pr_auc": _metric(champion, "pr_auc"),
        "baseline/pr_auc": _metric(baseline, "pr_auc"),
    }
    found = {
        "decision": selection.get("decision"),
        "reason": selection.get("reason"),
        "model_version": card.get("model_version"),
        "trained_for_month": card.get("trained_for_month"),
        "threshold": float(card["threshold"]) if "threshold" in card else None,
        "risk_bands": dg.MetadataValue.json(card["risk_bands"]) if "risk_bands" in card else None,
        "metrics": dg.MetadataValue.md(
            metrics.metrics_markdown({"challenger": challenger, "champion": champion, "logistic baseline": baseline})
        ) if challenger and baseline else None,
        **(evaluated if challenger and baseline else {}),
        "beats_baseline": selection.get("beats_baseline"),
        "feature_importance": dg.MetadataValue.md(_importance_markdown(card["feature_importance"]))
        if "feature_importance" in card else None,
    }
    return {name: value for name, value in found.items() if value is not None or name in evaluated}


def _metric(evaluation: dict[str, Any] | None, name: str) -> float | None:
    if evaluation is None or evaluation["all"][name] is None:
        return None
    return float(evaluation["all"][name])


def _importance_markdown(importance: dict[str, float], top: int = 15) -> str:
    total = sum(importance.values()) or 1.0
    rows = [[name, f"{gain:.3f}", f"{gain / total:.1%}"] for name, gain in list(importance.items())[:top]]
    return markdown_table(["feature", "gain", "share"], rows)


def _data_version(context: dg.AssetExecutionContext, asset: str, partition: str) -> dict[str, Any]:
    """The version of an input partition's stored bytes, its content hash, from its latest materialization.
    Not Dagster's data version: a range run gives all its months one (parquet_io_manager.set_data_version),
    so the card, whose hash is the model's data version, would change with how the training set was run,
    and every prediction would look stale after a model trained on the same bytes."""
    found: dict[str, Any] = {"partition": partition}
    record = context.instance.get_latest_data_version_record(asset_key(asset), partition_key=partition)
    if record is None:
        return found
    materialization = record.event_log_entry.asset_materialization
    if materialization is not None and "content_hash" in materialization.metadata:
        found["content_hash"] = materialization.metadata["content_hash"].value
    return found
