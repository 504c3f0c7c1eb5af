"""``drift_report``: how far a day's features and scores have moved from what the model was trained on."""

import json
import re
from typing import Any

import dagster as dg
import polars as pl

from churn_assets.assets.ml.model import SCORE_COLUMN
from churn_assets.assets.ml.predictions import SCORED_DAY_INS, require_model_features
from churn_assets.config import SETTINGS
from churn_assets.partitions import MONTH_FORMAT, daily_partitions, days_in_range
from churn_assets.resources import LakeResource
from churn_assets.resources.model_io_manager import ChurnModel
from churn_assets.resources.parquet_io_manager import PartitionStream, column_schema, markdown_table

# Evidently's rule: the dataset drifted when at least this share of the feature columns did.
DATASET_DRIFT_SHARE = 0.5
# Days with more users are compared on a seeded sample of this many: drift statistics are stable well
# below it, and a 100k-user day stays within seconds.
MAX_CURRENT_ROWS = 20_000
SAMPLE_SEED = 7
# The report and the summary sit in the partition's folder beside its table under names that start with "_", which
# every reader of the lake as a hive-partitioned table skips (Spark, Athena and Trino, pyarrow and pandas): the folder
# reads as a table of its data.parquet alone.
REPORT_FILE = "_report.html"
SUMMARY_FILE = "_summary.json"
# Their names before 2026-12-01, which those readers took for table files (and refused): a partition written then
# holds these until renamed (docs/operations.md, "Upgrading"). What reads a partition back falls back to them.
OLD_REPORT_FILE = "report.html"
OLD_SUMMARY_FILE = "summary.json"

DRIFT_SCHEMA: dict[str, pl.DataType] = {
    "column": pl.String(),
    "kind": pl.String(),
    "stattest": pl.String(),
    "threshold": pl.Float64(),
    "drift_score": pl.Float64(),
    "drifted": pl.Boolean(),
}


@dg.asset(
    group_name="monitoring",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"evidently", "parquet"},
    owners=["team:ml"],
    ins=SCORED_DAY_INS,
    metadata={
        "dagster/column_schema": column_schema(
            DRIFT_SCHEMA,
            {
                "column": "A feature of the model, or the score (churn_probability).",
                "kind": "numeric or categorical (the feature's kind on the model card), or score.",
                "stattest": "The drift test Evidently chose for the column.",
                "threshold": "The test's threshold; null for a column empty on the day or in the reference.",
                "drift_score": "The test's statistic or p-value; null for a column empty on either side.",
                "drifted": "Whether the column drifted against the model's reference sample.",
            },
        )
    },
)
def drift_report(
    context: dg.AssetExecutionContext, lake: LakeResource, features: pl.LazyFrame, model: dict[str, ChurnModel]
) -> PartitionStream:
    """Data drift of ``features[D]`` against the reference sample of ``model[month of D]`` (Evidently's
    drift table: per-column tests chosen by type and size, each column's distribution against the
    reference), plus the drift of the score distribution (the day's users scored by that model against
    the sample's stored scores). One row per model
    feature and one for the score: ``column``, ``kind``, ``stattest``, ``threshold``, ``drift_score``,
    ``drifted``. The HTML report and a JSON summary (share of drifted feature columns, dataset drift
    yes/no, per-column scores) sit beside the partition's table: ``drift_report/date=D/_report.html`` and
    ``_summary.json``, names that readers of the folder as a table skip. Days above 20,000 users are compared on
    a seeded sample of 20,000. A day with fewer users than ``CHURN_DRIFT_MIN_ROWS`` gets its table and report all
    the same, but its summary and metadata say ``too_few_rows`` and never ``dataset_drift``: on a few users
    Evidently's tests find most columns drifted by chance. Reads ``features[D]`` and ``model[month of D]``.
    """
    store = lake.lake

    def stream():
        for day in days_in_range(context):
            churn_model = model[day.strftime(MONTH_FORMAT)]
            frame = features.filter(pl.col("date") == day).drop("date").collect()
            require_model_features("drift_report", day, churn_model, frame)
            table, summary, html = measure_drift(frame, churn_model)
            folder = store.partition_url("drift_report", "date", day.isoformat())
            report = store.write_bytes(f"{folder}/{REPORT_FILE}", html.encode())
            summary = {"date": day.isoformat(), **summary, "report": report.url}
            store.write_bytes(
                f"{folder}/{SUMMARY_FILE}", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
            )
            context.add_asset_metadata(drift_metadata(summary, folder), partition_key=day.isoformat())
            if summary["too_few_rows"]:
                context.log.info(
                    f"{day}: {summary['compared_rows']} user(s) compared, fewer than CHURN_DRIFT_MIN_ROWS="
                    f"{summary['min_compared_rows']}: too few to conclude on drift (at this size "
                    f"{summary['share_of_drifted_columns']:.0%} drifted columns is chance), no dataset drift asserted"
                )
            elif summary["dataset_drift"]:
                context.log.warning(
                    f"{day}: dataset drift — {summary['share_of_drifted_columns']:.0%} of the feature columns "
                    f"drifted ({', '.join(summary['drifted_columns'][:10])}); report at {report.url}"
                )
            yield day.isoformat(), table

    return PartitionStream(stream())


def measure_drift(
    features: pl.DataFrame, churn_model: ChurnModel, min_rows: int = SETTINGS.drift_min_rows
) -> tuple[pl.DataFrame, dict[str, Any], str]:
    """The drift table, the JSON summary and the Evidently HTML of one day's features against a model. With
    fewer than ``min_rows`` rows compared the summary says ``too_few_rows`` and no ``dataset_drift``, whatever
    the share of drifted columns (which it still gives)."""
    # Imported where used: Evidently takes seconds to import.
    import warnings

    import numpy as np
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    from churn_assets.assets.ml.scoring import score
    from churn_assets.assets.monitoring.snapshot_drift import SnapshotDriftTable

    if features.height == 0:
        raise ValueError("the feature snapshot has no rows: no user at risk to compare with the reference sample")
    specs = churn_model.card["features"]
    missing = churn_model.features_missing_from(features.columns)
    if missing:
        raise ValueError(f"features lack columns the model {churn_model.version} was trained on: {missing}")
    current = features.sample(MAX_CURRENT_ROWS, seed=SAMPLE_SEED) if features.height > MAX_CURRENT_ROWS else features
    current = current.select([f["name"] for f in specs]).with_columns(
        pl.Series(SCORE_COLUMN, score(churn_model, current))
    )
    reference = churn_model.reference_sample.select(current.columns)

    kinds = {f["name"]: f["kind"] for f in specs} | {SCORE_COLUMN: "score"}
    # Evidently refuses a column with no values; such a column is reported without a test: drifted when
    # only one side is empty (a feature that stopped arriving, or started), not drifted when both are.
    empty = {
        c: (
            current.get_column(c).null_count() == current.height,
            reference.get_column(c).null_count() == reference.height,
        )
        for c in current.columns
    }
    tested = [c for c, (now, then) in empty.items() if not now and not then]
    mapping = ColumnMapping(
        target=None,
        prediction=None,
        numerical_features=[c for c in tested if kinds[c] != "categorical"],
        categorical_features=[c for c in tested if kinds[c] == "categorical"],
    )
    # Evidently's drift table (the test per column chosen by type and size, a distribution plot for each):
    # the widgets and statistics of its DataDriftPreset, computed once. The preset of Evidently's newer API
    # computes every column's drift three times and draws its plots twice, for the same verdicts. The
    # table is drawn without its plot over the rows' order, which a snapshot of users does not have; with
    # raw_data, Evidently keeps the column as that plot's data instead of binning it (~0.4 s for 57 columns).
    report = Report(metrics=[SnapshotDriftTable(columns=tested)], options={"render": {"raw_data": True}})
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        report.run(
            reference_data=_pandas(reference, kinds), current_data=_pandas(current, kinds), column_mapping=mapping
        )
        results = _column_results(report.as_dict(), tested)
        html = script_safe(report.get_html())

    rows = []
    for column in current.columns:
        now_empty, then_empty = empty[column]
        if column in results:
            rows.append({"column": column, "kind": kinds[column], **results[column]})
        else:
            rows.append(
                {
                    "column": column,
                    "kind": kinds[column],
                    "stattest": "empty column" if now_empty and then_empty else "column empty on one side",
                    "threshold": None,
                    "drift_score": None,
                    "drifted": now_empty != then_empty,
                }
            )
    table = pl.DataFrame(rows, schema=DRIFT_SCHEMA, orient="row")
    feature_rows = table.filter(pl.col("kind") != "score")
    drifted = feature_rows.filter(pl.col("drifted")).get_column("column").to_list()
    share = len(drifted) / feature_rows.height
    score_row = table.filter(pl.col("kind") == "score").row(0, named=True)
    too_few = current.height < min_rows
    summary = {
        "model_version": churn_model.version,
        "current_rows": features.height,
        "compared_rows": current.height,
        "reference_rows": reference.height,
        "min_compared_rows": min_rows,
        "too_few_rows": too_few,
        "share_of_drifted_columns": share,
        "drifted_columns": drifted,
        "dataset_drift": share >= DATASET_DRIFT_SHARE and not too_few,
        "dataset_drift_share": DATASET_DRIFT_SHARE,
        "score_drift": score_row,
        "columns": {r["column"]: {k: v for k, v in r.items() if k != "column"} for r in table.iter_rows(named=True)},
    }
    return table, summary, html


# The two lines of Evidently's page that hold its data, as JavaScript: `var evidently_dashboard_ID = {JSON};` and
# `var additional_graphs_evidently_dashboard_ID = {JSON};`. json.dumps writes no line break inside its JSON.
_DATA_LINE = re.compile(r"^(\s*var (?:additional_graphs_)?evidently_dashboard_\w+ = )(.*)$", re.MULTILINE)
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_safe(html: str) -> str:
    """Evidently's page with its data unable to end the ``<script>`` element that holds it. Evidently writes
    the data with json.dumps, which leaves ``<`` as it is, and the data holds the categories of the day's
    users (their country, platform, app version: values the app's users send): a country
    ``</script><script>…`` ended the element and ran as script in the browser of whoever opened the report.
    In JSON ``<``, ``>`` and ``&`` occur only inside strings, where ``\u003c``… is the same text."""
    safe, found = _DATA_LINE.subn(lambda m: m.group(1) + m.group(2).translate(_SCRIPT_SAFE), html)
    if found != 2:
        raise RuntimeError(
            f"Evidently's report holds {found} data lines where 2 were expected (another Evidently version?): "
            "its data cannot be made safe to open, so the report is not written"
        )
    return safe


def _pandas(frame: pl.DataFrame, kinds: dict[str, str]) -> Any:
    exprs = [
        pl.col(c).cast(pl.String) if kinds[c] == "categorical" else pl.col(c).cast(pl.Float64) for c in frame.columns
    ]
    return frame.select(exprs).to_pandas()


def _column_results(report: dict[str, Any], tested: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: the drift test Evidently chose, its threshold, the score and the verdict."""
    by_column = report["metrics"][0]["result"]["drift_by_columns"]
    unresolved = [c for c in tested if c not in by_column]
    if unresolved:
        raise RuntimeError(f"Evidently returned no drift verdict for {unresolved}")
    return {
        column: {
            "stattest": result["stattest_name"],
            "threshold": float(result["stattest_threshold"]),
            "drift_score": float(result["drift_score"]),
            "drifted": bool(result["drift_detected"]),
        }
        for column, result in by_column.items()
    }


def had_too_few_rows(metadata: Any) -> bool:
    """Whether a day's materialization ``metadata`` (as :func:`drift_metadata` records it) says the day had too few
    rows to conclude; one recorded before that key: False."""
    entry = metadata.get("too_few_rows")
    return bool(getattr(entry, "value", entry))


def drift_metadata(summary: dict[str, Any], folder: str, old_names: bool = False) -> dict[str, Any]:
    """What a day's materialization records of its drift: the verdict and whether the day had too few rows to
    conclude (which drift_retraining_sensor reads; a summary written before that key: not too few), the most
    drifted columns, where the report and the summary (``summary``, as the summary file holds it) are in ``folder``:
    ``old_names``, under the names of a partition written before 2026-12-01 (``report.html``, ``summary.json``)."""
    score = summary["score_drift"]
    top = sorted(
        ((c, r) for c, r in summary["columns"].items() if r["drift_score"] is not None and r["kind"] != "score"),
        key=lambda item: (not item[1]["drifted"], item[0]),
    )[:15]
    rows = [[c, r["stattest"], f"{r['drift_score']:.4f}", "yes" if r["drifted"] else "no"] for c, r in top]
    return {
        "share_of_drifted_columns": float(summary["share_of_drifted_columns"]),
        "dataset_drift": bool(summary["dataset_drift"]),
        "too_few_rows": bool(summary.get("too_few_rows", False)),
        "drifted_columns": len(summary["drifted_columns"]),
        "score_drift_score": score["drift_score"],
        "score_drifted": bool(score["drifted"]),
        "model_version": summary["model_version"],
        "compared_rows": summary["compared_rows"],
        "columns": dg.MetadataValue.md(markdown_table(["column", "test", "score", "drifted"], rows)),
        "report": dg.MetadataValue.path(f"{folder}/{OLD_REPORT_FILE if old_names else REPORT_FILE}"),
        "summary": dg.MetadataValue.path(f"{folder}/{OLD_SUMMARY_FILE if old_names else SUMMARY_FILE}"),
    }
