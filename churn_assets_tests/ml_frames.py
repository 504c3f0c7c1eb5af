"""Test helpers for the model, predictions and drift report: training sets and feature snapshots of the
contract's shape (every feature of the catalog) with a known churn signal, and stand-in upstream assets
that write them through the real IO manager."""

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from churn_assets.assets.features.catalog import feature_catalog, features_schema
from churn_assets.assets.ml.training_set import add_months, training_set_schema
from churn_assets.config import DEFAULT_EVENT_TYPES
from churn_assets.partitions import daily_partitions, monthly_partitions

EVENT_TYPES = list(DEFAULT_EVENT_TYPES)
HORIZON = 14
PLATFORMS = ["iOS", "Android", "Web"]
COUNTRIES = ["US", "IN", "BR", "DE", "GB"]
VERSIONS = ["3.1.0", "3.1.1", "3.2.0"]


def _feature_columns(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[dict[str, object], np.ndarray]:
    """Feature values for ``n`` rows and the latent engagement behind them (high engagement, low churn).

    ``shift`` moves every numeric feature's distribution (engagement and counts) to simulate drift."""
    engagement = np.clip(rng.beta(2.0, 2.0, n) + shift, 0.0, 1.0)
    columns: dict[str, object] = {}
    for feature in feature_catalog(EVENT_TYPES):
        if feature.kind == "categorical":
            choices = {"platform": PLATFORMS, "country": COUNTRIES, "app_version": VERSIONS}[feature.name]
            columns[feature.name] = rng.choice(choices, n)
        elif feature.name == "days_since_last_active":
            columns[feature.name] = np.minimum(rng.geometric(0.15 + 0.8 * engagement) - 1, 27)
        elif feature.name == "history_days":
            columns[feature.name] = np.full(n, 28)
        else:
            values = rng.poisson(1.0 + 8.0 * engagement) * (1.0 + 3.0 * shift)
            if feature.name == "activity_slope_28d":
                values = np.where(rng.random(n) < 0.05, np.nan, rng.normal(engagement - 0.5, 0.3, n))
            columns[feature.name] = values
    return columns, engagement


def synthetic_training_set(month: str, users: int = 600, seed: int = 0, snapshot_days: int = 60) -> pl.DataFrame:
    """``training_set[month]``: snapshots of the ``snapshot_days`` days before the last labelled one
    (label days end the day before the month starts), churn drawn from engagement and recency."""
    rng = np.random.default_rng(seed)
    last_label = dt.date.fromisoformat(f"{month}-01") - dt.timedelta(days=1)
    last_snapshot = last_label - dt.timedelta(days=HORIZON)
    frames = []
    for offset in range(snapshot_days):
        snapshot = last_snapshot - dt.timedelta(days=snapshot_days - 1 - offset)
        n = int(users * 0.8)
        columns, engagement = _feature_columns(rng, n)
        # Non-linear on purpose, as real churn is: a step after a week of silence, and web users with
        # low engagement churning much more (an interaction a linear baseline cannot express).
        silent = np.asarray(columns["days_since_last_active"])
        web = np.asarray(columns["platform"]) == "Web"
        logit = -1.6 - 4.0 * (engagement - 0.5) + 1.8 * (silent >= 7) + 2.5 * (web & (engagement < 0.4))
        churned = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
        frames.append(
            pl.DataFrame(
                {
                    "user_id": [f"u{i:05d}" for i in rng.choice(users, n, replace=False)],
                    "snapshot_date": [snapshot] * n,
                    "label_date": [snapshot + dt.timedelta(days=HORIZON)] * n,
                    "churned": churned,
                    **columns,
                },
                strict=False,
            )
        )
    schema = training_set_schema(EVENT_TYPES)
    return pl.concat(frames).select(list(schema)).cast(schema).sort("snapshot_date", "user_id")


def synthetic_features(day: dt.date, users: int = 500, seed: int = 1, shift: float = 0.0) -> pl.DataFrame:
    """``features[day]`` for ``users`` users, from the same distribution as the training sets (or a
    shifted one)."""
    rng = np.random.default_rng(seed)
    columns, _ = _feature_columns(rng, users, shift)
    schema = features_schema(EVENT_TYPES)
    frame = pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(users)], **columns}, strict=False)
    return frame.select(list(schema)).cast(schema)


def shuffle_training_labels(frame: pl.DataFrame, last_train_day: dt.date, seed: int = 3) -> pl.DataFrame:
    """The frame with ``churned`` shuffled among the rows up to ``last_train_day``: a challenger trained on
    it learns nothing, while its validation and holdout keep the true labels."""
    rng = np.random.default_rng(seed)
    in_train = frame.get_column("snapshot_date") <= last_train_day
    labels = frame.get_column("churned").to_numpy().copy()
    index = np.flatnonzero(in_train.to_numpy())
    labels[index] = rng.permutation(labels[index])
    return frame.with_columns(pl.Series("churned", labels, dtype=pl.Int8))


def linear_churn(frame: pl.DataFrame, seed: int = 1) -> pl.DataFrame:
    """The frame with ``churned`` redrawn from a logit linear in ``days_since_last_active``: the logistic
    baseline is the true model, so on a holdout of a few thousand rows XGBoost scores about as well as it,
    a little under at this seed, as a sound challenger on a small app's data does."""
    rng = np.random.default_rng(seed)
    silent = frame.get_column("days_since_last_active").fill_null(30).cast(pl.Float64).to_numpy()
    churn_probability = 1.0 / (1.0 + np.exp(2.0 - 0.5 * silent))
    return frame.with_columns(pl.Series("churned", rng.random(frame.height) < churn_probability, dtype=pl.Int8))


PLANTED = "n_push_open_28d"


def planted_signal(frame: pl.DataFrame, seed: int = 2) -> pl.DataFrame:
    """The frame with ``PLANTED`` redrawn as noise that owes nothing to the other columns (Poisson, mean 4) and,
    when the frame has ``churned``, churn redrawn from it alone: the fewer pushes opened, the likelier the
    user churns (logit 2 - PLANTED). Every other feature then carries no signal; ``PLANTED`` lowers the risk of
    a user with many."""
    rng = np.random.default_rng(seed)
    planted = rng.poisson(4.0, frame.height)
    out = frame.with_columns(pl.Series(PLANTED, planted).cast(frame.schema[PLANTED]))
    if "churned" not in frame.columns:
        return out
    churned = rng.random(frame.height) < 1.0 / (1.0 + np.exp(-(2.0 - planted)))
    return out.with_columns(pl.Series("churned", churned, dtype=pl.Int8))


def training_set_stub(frames: dict[str, pl.DataFrame]) -> dg.AssetsDefinition:
    """A ``training_set`` asset that writes the given frames (by month) through the parquet IO manager."""

    @dg.asset(
        name="training_set",
        partitions_def=monthly_partitions,
        group_name="ml",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def training_set(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.concat([frames[m].with_columns(pl.lit(m).alias("month")) for m in context.partition_keys])

    return training_set


def features_stub(frames: dict[str, pl.DataFrame]) -> dg.AssetsDefinition:
    """A daily ``features`` asset that writes the given frames (by day) through the parquet IO manager."""

    @dg.asset(
        name="features",
        partitions_def=daily_partitions,
        group_name="features",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def features(context: dg.AssetExecutionContext) -> pl.DataFrame:
        days = [d.isoformat() for d in _days(context)]
        return pl.concat([frames[d].with_columns(pl.lit(dt.date.fromisoformat(d)).alias("date")) for d in days])

    return features


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def next_month(month: str) -> str:
    return add_months(dt.date.fromisoformat(f"{month}-01"), 1).strftime("%Y-%m")


def lake_with_models(root, frames: dict[str, pl.DataFrame]) -> str:
    """A lake under ``root`` holding ``model`` of each month of ``frames`` (trained in one range run through
    the real asset); returns its URL."""
    from churn_assets.assets.ml.model import model
    from churn_assets.config import ChurnSettings
    from churn_assets.resources import build_resources

    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    months = sorted(frames)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [training_set_stub(frames), model],
            resources=build_resources(settings),
            instance=instance,
            tags={"dagster/asset_partition_range_start": months[0], "dagster/asset_partition_range_end": months[-1]},
        )
        assert result.success
    return settings.data_url


def stored_model() -> dg.SourceAsset:
    """``model`` as it is in the lake (read through its own IO manager), for runs that do not train it."""
    from churn_assets.assets.ml.model import model

    return model.to_source_asset()


MARCH, APRIL = "2025-03", "2025-04"


def shared_models_lake(root: Path) -> str:
    """A lake under ``root`` with ``model[2025-03]`` and ``model[2025-04]``: the session's ``models_lake``
    (conftest.py), which the predictions and drift tests copy before writing."""
    frames = {MARCH: synthetic_training_set(MARCH, seed=21), APRIL: synthetic_training_set(APRIL, seed=22)}
    return lake_with_models(root, frames)
