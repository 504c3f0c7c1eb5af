"""Holdout metrics of a churn score, overall and for the users a retention team can still reach."""

from typing import Any

import numpy as np
import polars as pl

from churn_assets.assets.ml.training import LABEL
from churn_assets.resources.parquet_io_manager import markdown_table

RECENT_DAYS = 7
METRIC_NAMES = (
    "rows", "churners", "churn_rate", "roc_auc", "pr_auc", "recall", "precision", "f1", "brier", "lift_top_decile",
)


def recently_active(frame: pl.DataFrame) -> np.ndarray:
    """Users active in the last 7 days of their snapshot (``days_since_last_active`` 0..6)."""
    if "days_since_last_active" not in frame.columns:
        raise ValueError("the frame has no days_since_last_active column: cannot find recently active users")
    return (frame.get_column("days_since_last_active").fill_null(RECENT_DAYS) < RECENT_DAYS).to_numpy()


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC-AUC, PR-AUC (average precision), recall/precision/F1 at ``threshold``, Brier score, and the
    churn rate of the top-scored decile over the overall rate. Rank metrics are None for one class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=np.int8)
    scores = np.asarray(scores, dtype=np.float64)
    n = labels.size
    churners = int(labels.sum())
    out: dict[str, Any] = {"rows": int(n), "churners": churners, "churn_rate": churners / n if n else None}
    both_classes = 0 < churners < n
    out["roc_auc"] = float(roc_auc_score(labels, scores)) if both_classes else None
    out["pr_auc"] = float(average_precision_score(labels, scores)) if both_classes else None
    flagged = scores >= threshold
    true_positives = int((flagged & (labels == 1)).sum())
    recall = true_positives / churners if churners else None
    precision = true_positives / int(flagged.sum()) if flagged.any() else None
    out["recall"] = recall
    out["precision"] = precision
    if recall is None or precision is None:
        out["f1"] = None
    else:
        out["f1"] = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    out["brier"] = float(np.mean((scores - labels) ** 2)) if n else None
    if churners:
        # Ties at the cut are broken by position, so the decile has exactly ceil(n / 10) users.
        top = np.argsort(-scores, kind="stable")[: max(1, -(-n // 10))]
        out["lift_top_decile"] = float(labels[top].mean() / (churners / n))
    else:
        out["lift_top_decile"] = None
    return out


def evaluate(frame: pl.DataFrame, scores: np.ndarray, threshold: float) -> dict[str, dict[str, Any]]:
    """Metrics over every row of ``frame`` and over its recently active users."""
    labels = frame.get_column(LABEL).to_numpy()
    recent = recently_active(frame)
    return {
        "all": classification_metrics(labels, scores, threshold),
        f"active_{RECENT_DAYS}d": classification_metrics(labels[recent], scores[recent], threshold),
    }


def metric_table(rows: dict[str, dict[str, dict[str, Any]] | None]) -> tuple[list[str], list[list[str]]]:
    """The scorers' metrics as a table: a header, then one row per scorer and population."""
    names = [m for m in METRIC_NAMES if m != "churners"]
    body = [
        [scorer, population, *(_fmt(metrics.get(m)) for m in names)]
        for scorer, evaluation in rows.items()
        if evaluation is not None
        for population, metrics in evaluation.items()
    ]
    return ["scorer", "users", *names], body


def metrics_markdown(rows: dict[str, dict[str, dict[str, Any]] | None]) -> str:
    """:func:`metric_table` in Markdown, for Dagster's metadata."""
    return markdown_table(*metric_table(rows))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
