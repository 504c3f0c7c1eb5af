"""How a month's challenger is trained: features from the training frame, a time-based split with
embargoes, XGBoost with early stopping, a threshold for a target recall, risk-band cut-offs, and the
logistic-regression baseline it has to beat.
"""

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

LABEL = "churned"
# Columns of a training or feature frame that are not model features.
NON_FEATURES = frozenset({"user_id", "snapshot_date", "label_date", LABEL, "date", "month"})

# Fast and deterministic on 2 cores: histogram trees, a fixed seed and thread count. Shallow trees keep
# per-feature contributions (the reasons of every prediction) cheap to compute.
XGB_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",  # what early stopping watches (nothing reads another metric's rounds)
    "tree_method": "hist",
    "max_depth": 5,
    "eta": 0.1,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "max_cat_to_onehot": 4,
    "nthread": 2,
}


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: a numeric column, or a categorical one with the categories seen in training."""

    name: str
    kind: str  # "numeric" | "categorical"
    categories: tuple[str, ...] = ()

    def to_card(self, definition: str | None = None) -> dict[str, Any]:
        card: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            card["categories"] = list(self.categories)
        if definition:
            card["definition"] = definition
        return card

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "FeatureSpec":
        return cls(card["name"], card["kind"], tuple(card.get("categories", ())))


def feature_specs(frame: pl.DataFrame) -> list[FeatureSpec]:
    """Every column but keys and label is a feature; String columns are categorical, with the sorted
    categories ``frame`` holds (values unseen here are treated as missing when scoring)."""
    specs = []
    for name, dtype in frame.schema.items():
        if name in NON_FEATURES:
            continue
        if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
            values = frame.get_column(name).cast(pl.String).drop_nulls().unique().sort().to_list()
            if values:  # a category column with no value in training carries nothing to learn
                specs.append(FeatureSpec(name, "categorical", tuple(values)))
        elif dtype.is_numeric() or dtype == pl.Boolean:
            specs.append(FeatureSpec(name, "numeric"))
        else:
            raise TypeError(f"feature column {name!r} has type {dtype}: expected a number or a string")
    if not specs:
        raise ValueError("the training frame has no feature columns")
    return specs


def design_frame(frame: pl.DataFrame, specs: list[FeatureSpec]) -> pl.DataFrame:
    """The columns the model sees, in the model's order: numbers as Float32, categories as an Enum of the
    training categories (XGBoost reads it natively; an unknown category becomes missing)."""
    missing = [s.name for s in specs if s.name not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks model features {missing}")
    exprs = []
    for spec in specs:
        column = pl.col(spec.name)
        if spec.kind == "categorical":
            categories = list(spec.categories)
            column = column.cast(pl.String)
            exprs.append(
                pl.when(column.is_in(categories)).then(column).otherwise(None).cast(pl.Enum(categories)).alias(spec.name)
            )
        else:
            exprs.append(column.cast(pl.Float32).alias(spec.name))
    return frame.select(exprs).rechunk()


def to_dmatrix(frame: pl.DataFrame, specs: list[FeatureSpec], with_label: bool = False) -> xgb.DMatrix:
    label = frame.get_column(LABEL).to_numpy() if with_label else None
    return xgb.DMatrix(design_frame(frame, specs), label=label, enable_categorical=True, nthread=2)


# -- the time-based split -------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeSplit:
    """Train, validation and holdout blocks of snapshot days, inclusive, each later block starting more
    than ``embargo_days`` after the one before ends: no label window (S+1..S+H) of a block reaches the
    next block's snapshots."""

    train: tuple[dt.date, dt.date]
    validation: tuple[dt.date, dt.date]
    holdout: tuple[dt.date, dt.date]
    embargo_days: int

    def rows(self, frame: pl.DataFrame, block: str) -> pl.DataFrame:
        start, end = getattr(self, block)
        return frame.filter(pl.col("snapshot_date").is_between(start, end))

    def to_card(self) -> dict[str, Any]:
        return {
            "train": [d.isoformat() for d in self.train],
            "validation": [d.isoformat() for d in self.validation],
            "holdout": [d.isoformat() for d in self.holdout],
            "embargo_days": self.embargo_days,
        }


def time_split(
    first: dt.date, last: dt.date, embargo_days: int, validation_share: float, holdout_share: float
) -> TimeSplit:
    """Blocks over the snapshot days ``first..last``: after taking out two embargoes, the last
    ``holdout_share`` of the days is the holdout, the ``validation_share`` before it validation, the rest
    training (each block at least one day)."""
    span = (last - first).days + 1
    usable = span - 2 * embargo_days
    if usable < 3:
        raise ValueError(
            f"snapshots {first}..{last} span {span} days: a train/validation/holdout split with two "
            f"embargoes of {embargo_days} days needs at least {2 * embargo_days + 3}"
        )
    holdout_days = max(1, round(usable * holdout_share))
    validation_days = max(1, round(usable * validation_share))
    train_days = usable - holdout_days - validation_days
    if train_days < 1:
        train_days, validation_days, holdout_days = usable - 2, 1, 1
    day = dt.timedelta(days=1)
    train_end = first + (train_days - 1) * day
    validation_start = train_end + (embargo_days + 1) * day
    validation_end = validation_start + (validation_days - 1) * day
    holdout_start = validation_end + (embargo_days + 1) * day
    return TimeSplit(
        train=(first, train_end),
        validation=(validation_start, validation_end),
        holdout=(holdout_start, last),
        embargo_days=embargo_days,
    )


# -- the model --------------------------------------------------------------------------------------
def train_booster(
    train: pl.DataFrame,
    validation: pl.DataFrame,
    specs: list[FeatureSpec],
    seed: int,
    max_rounds: int,
    early_stopping_rounds: int,
) -> xgb.Booster:
    """XGBoost on the training block, stopped early on the validation block and cut to its best round."""
    dtrain = to_dmatrix(train, specs, with_label=True)
    dvalid = to_dmatrix(validation, specs, with_label=True)
    booster = xgb.train(
        {**XGB_PARAMS, "seed": seed},
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    best = booster.best_iteration
    return booster[: best + 1]


def predict(booster: xgb.Booster, frame: pl.DataFrame, specs: list[FeatureSpec]) -> np.ndarray:
    if frame.height == 0:
        return np.empty(0, dtype=np.float64)
    return booster.predict(to_dmatrix(frame, specs)).astype(np.float64)


def threshold_for_recall(labels: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The highest score cut-off that flags at least ``target_recall`` of the churners."""
    positives = np.sort(scores[labels == 1])[::-1]
    if positives.size == 0:
        raise ValueError("the validation block has no churner: no threshold can reach a recall")
    k = max(1, math.ceil(target_recall * positives.size))
    return float(positives[k - 1])


def risk_cutoffs(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Lower bounds of the risk bands, from validation scores:

    * High from the decision threshold (the users the model flags);
    * Critical from the top decile of validation scores (and never below the threshold);
    * Medium from the score that reaches 95 % recall: almost every churner is at least Medium;
    * Low below it.
    """
    critical = max(threshold, float(np.quantile(scores, 0.9)))
    medium = min(threshold, threshold_for_recall(labels, scores, 0.95))
    return {"Low": 0.0, "Medium": medium, "High": threshold, "Critical": critical}


# -- the baseline ---------------------------------------------------------------------------------
def fit_baseline(train: pl.DataFrame, specs: list[FeatureSpec], seed: int, max_rows: int = 200_000) -> Any:
    """A logistic regression on the same features: signed-log numbers, standardised, missing values
    imputed with a flag; one-hot categories. Trained on at most ``max_rows`` training rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    if train.height > max_rows:
        train = train.sample(max_rows, seed=seed)
    numeric = [s.name for s in specs if s.kind == "numeric"]
    categorical = [s.name for s in specs if s.kind == "categorical"]
    transformer = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(
                    FunctionTransformer(_signed_log),
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    StandardScaler(),
                ),
                numeric,
            ),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="(missing)", keep_empty_features=True),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    # Newton-Cholesky reaches lbfgs's optimum (the same penalty) in ~6 iterations instead of ~130: for a
    # hundred columns it fits 200k rows in a quarter of the time.
    logistic = LogisticRegression(solver="newton-cholesky", max_iter=1000, random_state=seed)
    pipeline = make_pipeline(transformer, logistic)
    pipeline.fit(_sklearn_frame(train, specs), train.get_column(LABEL).to_numpy())
    return pipeline


def baseline_scores(pipeline: Any, frame: pl.DataFrame, specs: list[FeatureSpec]) -> np.ndarray:
    return pipeline.predict_proba(_sklearn_frame(frame, specs))[:, 1]


def _signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _sklearn_frame(frame: pl.DataFrame, specs: list[FeatureSpec]) -> Any:
    exprs = [
        pl.col(s.name).cast(pl.String) if s.kind == "categorical" else pl.col(s.name).cast(pl.Float64)
        for s in specs
    ]
    table = frame.select(exprs).to_pandas()
    for spec in specs:
        if spec.kind == "categorical":
            table[spec.name] = table[spec.name].astype(object).where(table[spec.name].notna(), np.nan)
    return table
