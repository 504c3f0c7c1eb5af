"""The holdout report stored with each trained model (``holdout_report.html``): one self-contained page
(no script, no network) a reviewer opens to see why the model was promoted.

It holds the scorers' metrics (challenger, champion, logistic baseline; every user and the recently
active ones), the confusion matrix at the decision threshold, what each risk band holds, and four charts
drawn as inline SVG: ROC and precision-recall curves of every scorer, the score distribution of
churners and retained users, and calibration by decile. It is built from the holdout's labels and scores
in milliseconds, and the same inputs give the same bytes.
"""

import html
from typing import Any

import numpy as np

from churn_assets.assets.ml.metrics import metric_table
from churn_assets.assets.ml.scoring import RISK_BANDS, risk_bands

COLOURS = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c")
CURVE_POINTS = 300  # points kept per curve: enough for a smooth line, small enough for a light page
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 420, 350, 52, 14, 28, 62

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; }
svg text { font-size: 11px; fill: #333; }
"""


def holdout_report_html(
    title: str,
    facts: dict[str, Any],
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    threshold: float,
    cutoffs: dict[str, float],
    evaluations: dict[str, dict[str, dict[str, Any]] | None],
) -> str:
    """The page for one model: ``scores`` maps each scorer to its holdout scores, the model itself
    first; ``threshold`` and ``cutoffs`` are the model's; ``evaluations`` the scorers' metrics
    (``metrics.evaluate``); ``facts`` a few lines of context (window, rows, version)."""
    labels = np.asarray(labels, dtype=np.int8)
    name, model_scores = next(iter(scores.items()))
    churned, retained = model_scores[labels == 1], model_scores[labels == 0]
    parts = [
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _table(["", ""], [[k, v] for k, v in facts.items()]),
        "<h2>Metrics on the holdout</h2>",
        _table(*metric_table(evaluations)),
        f"<h2>At the decision threshold {threshold:.4f} ({_e(name)})</h2>",
        _table(
            ["", "flagged", "not flagged"],
            [
                ["churned", int((churned >= threshold).sum()), int((churned < threshold).sum())],
                ["retained", int((retained >= threshold).sum()), int((retained < threshold).sum())],
            ],
        ),
        "<h2>Risk bands</h2>",
        _table(*_band_rows(labels, model_scores, cutoffs)),
        "<div class='charts'>",
        _roc_chart(labels, scores),
        _pr_chart(labels, scores),
        _distribution_chart(churned, retained, threshold),
        _calibration_chart(labels, model_scores),
        "</div></body></html>\n",
    ]
    return "\n".join(parts)


def _band_rows(labels: np.ndarray, scores: np.ndarray, cutoffs: dict[str, float]) -> tuple[list[str], list[list]]:
    bands = risk_bands(scores, cutoffs).to_numpy()
    churners = max(int(labels.sum()), 1)
    rows = []
    for band in reversed(RISK_BANDS):
        inside = bands == band
        users, caught = int(inside.sum()), int(labels[inside].sum())
        rows.append([band, f"{cutoffs[band]:.4f}", users, f"{users / labels.size:.1%}",
                     f"{caught / users:.1%}" if users else "–", f"{caught / churners:.1%}"])
    return ["band", "score from", "users", "share of users", "churn rate", "share of churners"], rows


# -- the charts -------------------------------------------------------------------------------------
def _roc_chart(labels: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    from sklearn.metrics import roc_curve

    curves = [(name, *roc_curve(labels, s)[:2]) for name, s in scores.items()]
    return _chart("ROC curve", "false positive rate", "true positive rate", curves, diagonal=True)


def _pr_chart(labels: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    from sklearn.metrics import precision_recall_curve

    curves = []
    for name, s in scores.items():
        precision, recall, _ = precision_recall_curve(labels, s)
        curves.append((name, recall, precision))
    return _chart("Precision-recall curve", "recall", "precision", curves)


def _distribution_chart(churned: np.ndarray, retained: np.ndarray, threshold: float) -> str:
    edges = np.linspace(0.0, 1.0, 21)
    centres = (edges[:-1] + edges[1:]) / 2
    curves = [
        (label, centres, np.histogram(values, edges)[0] / max(values.size, 1))
        for label, values in (("churned", churned), ("retained", retained))
    ]
    top = max(float(c[2].max()) for c in curves) or 1.0
    return _chart("Score distribution", "churn probability", "share of the group", curves, y_max=top, marker=threshold)


def _calibration_chart(labels: np.ndarray, scores: np.ndarray) -> str:
    order = np.argsort(scores, kind="stable")
    deciles = [d for d in np.array_split(order, 10) if d.size]
    predicted = np.array([scores[d].mean() for d in deciles])
    observed = np.array([labels[d].mean() for d in deciles])
    return _chart("Calibration by decile", "mean churn probability", "observed churn rate",
                  [("deciles", predicted, observed)], diagonal=True, dots=True)


def _chart(
    title: str,
    x_label: str,
    y_label: str,
    curves: list[tuple[str, np.ndarray, np.ndarray]],
    y_max: float = 1.0,
    diagonal: bool = False,
    marker: float | None = None,
    dots: bool = False,
) -> str:
    """An SVG line chart over x in 0..1 and y in 0..``y_max``, with a legend."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + float(np.clip(x, 0, 1)) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - float(np.clip(y / y_max, 0, 1)) * plot_h

    out = [f"<svg width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' role='img' "
           f"aria-label='{_e(title)}'>",
           f"<text x='{LEFT}' y='16' style='font-weight:bold;font-size:13px'>{_e(title)}</text>"]
    for tick in np.linspace(0, 1, 5):
        x, y = px(tick), py(tick * y_max)
        out.append(f"<line x1='{x:.1f}' y1='{TOP}' x2='{x:.1f}' y2='{TOP + plot_h}' stroke='#eee'/>")
        out.append(f"<line x1='{LEFT}' y1='{y:.1f}' x2='{LEFT + plot_w}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(f"<text x='{x:.1f}' y='{TOP + plot_h + 14}' text-anchor='middle'>{tick:.2f}</text>")
        out.append(f"<text x='{LEFT - 4}' y='{y + 4:.1f}' text-anchor='end'>{tick * y_max:.2f}</text>")
    out.append(f"<rect x='{LEFT}' y='{TOP}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#999'/>")
    out.append(f"<text x='{LEFT + plot_w / 2}' y='{TOP + plot_h + 30}' text-anchor='middle'>{_e(x_label)}</text>")
    out.append(f"<text transform='translate(12 {TOP + plot_h / 2}) rotate(-90)' "
               f"text-anchor='middle'>{_e(y_label)}</text>")
    if diagonal:
        out.append(f"<line x1='{px(0)}' y1='{py(0)}' x2='{px(1)}' y2='{py(y_max)}' "
                   "stroke='#bbb' stroke-dasharray='4 3'/>")
    if marker is not None:
        out.append(f"<line x1='{px(marker):.1f}' y1='{TOP}' x2='{px(marker):.1f}' y2='{TOP + plot_h}' "
                   "stroke='#000' stroke-dasharray='2 2'/>")
    for i, (name, xs, ys) in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        keep = np.unique(np.linspace(0, xs.size - 1, min(xs.size, CURVE_POINTS)).round().astype(int))
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs[keep], ys[keep]))
        out.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='1.8'/>")
        if dots:
            out += [f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3' fill='{colour}'/>" for x, y in zip(xs, ys)]
        legend_x = LEFT + 125 * i  # the legend: one row under the x axis
        out.append(f"<line x1='{legend_x}' y1='{HEIGHT - 10}' x2='{legend_x + 16}' y2='{HEIGHT - 10}' "
                   f"stroke='{colour}' stroke-width='2'/><text x='{legend_x + 20}' y='{HEIGHT - 6}'>{_e(name)}</text>")
    out.append("</svg>")
    return "\n".join(out)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
