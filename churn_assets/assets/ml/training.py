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

# A categorical feature keeps its most frequent values, this many at most; rarer ones are read as values never
# seen (missing for the model, no category for the baseline). The values are what the app's users send (a
# country, an app version): one client posting a new country for each of thousands of made-up users made the
# card list every one, and the baseline's one-hot matrix (rows × values) and its solve (values³) ran the
# training out of memory or time (200k rows × 100 values is 160 MB of float64 per feature). A real app's
# countries beyond its hundred most frequent are a sliver of its users.
MAX_CATEGORIES = 100


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


def most_frequent(values: pl.Series, limit: int = MAX_CATEGORIES) -> list[str]:
    """The ``limit`` most frequent values of ``values`` but null (the more frequent first, then by value),
    sorted: a categorical feature's categories."""
    counts = values.drop_nulls().value_counts(name="__count")
    top = counts.sort(["__count", values.name], descending=[True, False]).head(limit)
    return sorted(top.get_column(values.name).to_list())


def feature_specs(frame: pl.DataFrame) -> list[FeatureSpec]:
    """Every column but keys and label is a feature; String columns are categorical, with the sorted
    categories ``frame`` holds, the ``MAX_CATEGORIES`` most frequent at most (values unseen here are
    treated as missing when scoring)."""
    specs = []
    for name, dtype in frame.schema.items():
        if name in NON_FEATURES:
            continue
        if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
            values = most_frequent(frame.get_column(name).cast(pl.String))
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
MISSING_CATEGORY = "(missing)"


@dataclass(frozen=True)
class LogisticBaseline:
    """A logistic regression on the model's features, with its preprocessing fitted on training rows:
    numbers signed-log transformed, missing values imputed with the training median (0 for a column
    with no value) plus a 0/1 "was missing" column for each number that had missing values, all of these
    standardised; categories one-hot, a missing one as its own category, an unseen one as all zeros.
    (scikit-learn's SimpleImputer, StandardScaler and OneHotEncoder in a pipeline, computed by polars:
    the same matrix in a fraction of the time.)"""

    numeric: tuple[str, ...]
    medians: tuple[float, ...]
    flagged: tuple[str, ...]
    means: np.ndarray
    scales: np.ndarray
    categories: tuple[tuple[str, tuple[str, ...]], ...]
    logistic: Any

    def design(self, frame: pl.DataFrame) -> np.ndarray:
        """The rows of ``frame`` as the regression's input matrix (float64, one row per row)."""
        columns = [_signed_log(name).fill_null(median) for name, median in zip(self.numeric, self.medians)]
        columns += [_signed_log(name).is_null().cast(pl.Float64) for name in self.flagged]
        scaled = [
            ((column - mean) / scale).alias(f"x{i}")
            for i, (column, mean, scale) in enumerate(zip(columns, self.means, self.scales))
        ]
        one_hot = [
            (_category(name) == value).cast(pl.Float64).alias(f"c{i}_{j}")
            for i, (name, values) in enumerate(self.categories)
            for j, value in enumerate(values)
        ]
        return frame.select(scaled + one_hot).to_numpy(order="c")

    def scores(self, frame: pl.DataFrame) -> np.ndarray:
        """Churn probabilities of the rows of ``frame``."""
        if frame.height == 0:
            return np.empty(0, dtype=np.float64)
        return self.logistic.predict_proba(self.design(frame))[:, 1]


def fit_baseline(
    train: pl.DataFrame, specs: list[FeatureSpec], seed: int, max_rows: int = 200_000
) -> LogisticBaseline:
    """The logistic baseline the challenger has to beat, trained on at most ``max_rows`` training rows."""
    from sklearn.linear_model import LogisticRegression

    train = train.select([s.name for s in specs] + [LABEL])
    if train.height > max_rows:
        train = train.sample(max_rows, seed=seed)
    numeric = tuple(s.name for s in specs if s.kind == "numeric")
    categorical = tuple(s.name for s in specs if s.kind == "categorical")
    stats = train.select(
        *[_signed_log(n).median().alias(f"median{i}") for i, n in enumerate(numeric)],
        *[_signed_log(n).null_count().alias(f"missing{i}") for i, n in enumerate(numeric)],
    ).row(0)
    medians = tuple(0.0 if m is None else float(m) for m in stats[: len(numeric)])
    flagged = tuple(n for n, missing in zip(numeric, stats[len(numeric) : 2 * len(numeric)]) if missing)
    categories = tuple((n, tuple(most_frequent(train.select(_category(n)).to_series()))) for n in categorical)
    width = len(numeric) + len(flagged)
    unscaled = LogisticBaseline(numeric, medians, flagged, np.zeros(width), np.ones(width), categories, None)
    matrix = unscaled.design(train)
    numbers = matrix[:, :width]  # a view: scaled in place below, one-hot columns left as they are
    means, scales = numbers.mean(axis=0), numbers.std(axis=0)
    # A constant column is centred and left unscaled, as StandardScaler does (its std is rounding noise).
    scales[numbers.min(axis=0) == numbers.max(axis=0)] = 1.0
    numbers -= means
    numbers /= scales
    # Newton-Cholesky reaches lbfgs's optimum (the same penalty) in ~6 iterations instead of ~130: for a
    # hundred columns it fits 200k rows in a quarter of the time.
    logistic = LogisticRegression(solver="newton-cholesky", max_iter=1000, random_state=seed)
    logistic.fit(matrix, train.get_column(LABEL).to_numpy())
    return LogisticBaseline(numeric, medians, flagged, means, scales, categories, logistic)


def _signed_log(name: str) -> pl.Expr:
    """sign(x) · log(1 + |x|) of a numeric column as Float64, NaN counted as missing."""
    value = pl.col(name).cast(pl.Float64).fill_nan(None)
    return value.sign() * value.abs().log1p()


def _category(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String).fill_null(MISSING_CATEGORY)
