"""The daily drift report: Evidently drift of features and scores against the model's reference sample."""

import datetime as dt
import json
import re
import shutil
from dataclasses import replace

import dagster as dg
import polars as pl
import pytest

from churn_assets.assets.monitoring.checks import features_have_not_drifted
from churn_assets.assets.monitoring.drift_report import DRIFT_SCHEMA, REPORT_FILE, SUMMARY_FILE, drift_report
from churn_assets.automation.sensors.drift_retraining_sensor import build_drift_retraining_sensor
from churn_assets.config import SETTINGS
from churn_assets.definitions import defs
from churn_assets.resources.lake import Lake, parquet_bytes
from churn_assets.resources.model_io_manager import ModelIOManager
from churn_assets_tests.ml_frames import MARCH, features_stub, stored_model, synthetic_features

MONTH = MARCH
DAY = dt.date(2025, 3, 10)


@pytest.fixture
def settings(local_settings, models_lake):
    shutil.copytree(models_lake, local_settings.data_url)
    return local_settings


def report_day(resources, instance, features: pl.DataFrame) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [features_stub({DAY.isoformat(): features}), stored_model(), drift_report, features_have_not_drifted],
        resources=resources,
        instance=instance,
        partition_key=DAY.isoformat(),
    )


def outputs(lake_url: str) -> tuple[pl.DataFrame, dict, bytes]:
    lake = Lake(lake_url)
    folder = lake.partition_url("drift_report", "date", DAY.isoformat())
    table = pl.read_parquet(lake.read_bytes(lake.table_url("drift_report", "date", DAY.isoformat())))
    return table, json.loads(lake.read_bytes(f"{folder}/{SUMMARY_FILE}")), lake.read_bytes(f"{folder}/{REPORT_FILE}")


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node("drift_report")
    return {k: v.value for k, v in materialization.metadata.items()}


def test_identical_data_is_not_drifted(settings, local_resources, instance):
    churn_model = ModelIOManager(base_url=settings.data_url).read("model", MONTH)
    reference = churn_model.reference_sample
    # The day's features are the reference sample itself (users renamed): nothing moved.
    features = reference.drop("churn_probability").with_row_index("user_id").with_columns(
        pl.format("u{}", pl.col("user_id")).alias("user_id")
    )
    result = report_day(local_resources, instance, features)
    assert result.success

    table, summary, html = outputs(settings.data_url)
    names = [f["name"] for f in churn_model.card["features"]]
    assert table.schema == pl.Schema(DRIFT_SCHEMA)
    assert table.get_column("column").to_list() == [*names, "churn_probability"]
    assert table.filter(pl.col("drifted")).height == 0
    assert summary["share_of_drifted_columns"] == 0.0 and summary["dataset_drift"] is False
    assert summary["score_drift"]["drifted"] is False and summary["score_drift"]["drift_score"] < 1e-9
    assert summary["model_version"] == churn_model.version
    assert b"<html" in html[:2000].lower()
    # Evidently's drift table: its summary line and a row for every tested column, with the column's
    # distribution against the reference, and no plot over the rows' order (a snapshot has none).
    assert re.search(rf"Drift is detected for 0(\.0)?% of columns \(0 out of {len(names) + 1}\)".encode(), html)
    assert all(f'"{name}"'.encode() in html for name in names)
    assert html.count(b"DATA DISTRIBUTION") == len(names) + 1 and b"DATA DRIFT" not in html

    metadata = metadata_of(result)
    assert metadata["share_of_drifted_columns"] == 0.0 and metadata["dataset_drift"] is False
    assert metadata["report"].endswith(f"drift_report/date={DAY}/{REPORT_FILE}")
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


def test_shifted_features_are_reported_as_drifted(settings, local_resources, instance):
    # Counts and recency moved, and one feature stopped arriving (all null).
    shifted = synthetic_features(DAY, users=3000, seed=4, shift=0.35).with_columns(
        pl.lit(None, pl.Float64).alias("revenue_28d")
    )
    result = report_day(local_resources, instance, shifted)
    assert result.success  # drift warns, it does not fail the run

    table, summary, _ = outputs(settings.data_url)
    assert summary["dataset_drift"] is True
    assert summary["share_of_drifted_columns"] >= 0.5
    drifted = set(table.filter(pl.col("drifted")).get_column("column"))
    assert {"n_events_7d", "session_minutes_28d", "days_since_last_active"} <= drifted
    # Categories were drawn the same way as in training: they did not move.
    assert not drifted & {"platform", "country", "app_version"}
    assert summary["score_drift"]["drifted"] is True
    assert set(summary["drifted_columns"]) == drifted - {"churn_probability"}
    assert all(table.get_column("stattest").is_not_null())
    stopped = table.filter(pl.col("column") == "revenue_28d").row(0, named=True)
    assert stopped["drifted"] is True and stopped["stattest"] == "column empty on one side"

    assert metadata_of(result)["dataset_drift"] is True
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.partition == DAY.isoformat() and check.metadata["dataset_drift"].value is True
    assert check.metadata["share_of_drifted_columns"].value == pytest.approx(summary["share_of_drifted_columns"])
    assert set(check.metadata["drifted_columns"].value) == drifted - {"churn_probability"}
    share = summary["share_of_drifted_columns"]
    assert check.description.startswith(f"{share:.0%} of the feature columns drifted")


def test_half_the_columns_drifted_is_dataset_drift_and_a_column_empty_on_both_sides_is_not(
    settings, local_resources, instance
):
    """Dataset drift starts at exactly half of the feature columns drifted (Evidently's rule), in the
    summary and in the check; a column with no value in the reference nor the day has not drifted."""
    manager = ModelIOManager(base_url=settings.data_url)
    churn_model = manager.read("model", MONTH)
    names = [f["name"] for f in churn_model.card["features"]]
    assert len(names) % 2 == 0
    never_recorded, stopped = names[-1], names[: len(names) // 2]
    reference = churn_model.reference_sample.with_columns(pl.lit(None).cast(pl.Float64).alias(never_recorded))
    manager.write("model", MONTH, replace(churn_model, reference_parquet=parquet_bytes(reference)))
    features = reference.drop("churn_probability").with_row_index("user_id").with_columns(
        pl.format("u{}", pl.col("user_id")).alias("user_id"), *[pl.lit(None).alias(name) for name in stopped]
    )
    result = report_day(local_resources, instance, features)
    assert result.success

    table, summary, _ = outputs(settings.data_url)
    assert summary["drifted_columns"] == stopped and summary["share_of_drifted_columns"] == 0.5
    assert summary["dataset_drift"] is True
    empty = table.filter(pl.col("column") == never_recorded).row(0, named=True)
    assert empty["drifted"] is False and empty["stattest"] == "empty column"
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["dataset_drift"].value is True


def test_a_category_value_cannot_run_as_script_in_the_report(settings, local_resources, instance):
    """The categories in the report are what the app's users sent (their country, platform, app version):
    Evidently writes them into a <script> element as JSON, where "</script><script>…" ended the element and
    ran when the report was opened. The report shows the value as it is, as text."""
    churn_model = ModelIOManager(base_url=settings.data_url).read("model", MONTH)
    hostile = "</script><script>alert(document.cookie)</script><!--"
    features = churn_model.reference_sample.drop("churn_probability").with_row_index("user_id").with_columns(
        pl.format("u{}", pl.col("user_id")).alias("user_id"),
        pl.when(pl.col("user_id") % 2 == 0).then(pl.lit(hostile)).otherwise(pl.col("country")).alias("country"),
    )
    assert report_day(local_resources, instance, features).success

    _, _, html = outputs(settings.data_url)
    page = html.decode()
    assert "<script>alert" not in page and "<!--\"" not in page
    # The data (two lines of JavaScript) holds no "<" to end its element or open a comment, and still holds the
    # value: its JSON decodes to it.
    data = [line for line in page.splitlines() if line.lstrip().startswith("var ") and "evidently_dashboard_" in line]
    assert len(data) == 2 and not any("<" in line for line in data)
    assert any(hostile in json.dumps(json.loads(line.split(" = ", 1)[1].rstrip(";"))) for line in data)


def test_a_range_across_months_reports_each_day_against_its_months_model(settings, local_resources, instance):
    """A backfill of drift_report is one run over its days: each day's report holds that day's users alone,
    against the model of that day's month (not the range's users, nor the first month's model). The
    metadata's table lists the drifted columns first, each group by name."""
    days = [dt.date(2025, 3, 31), dt.date(2025, 4, 1)]
    manager = ModelIOManager(base_url=settings.data_url)
    models = {d: manager.read("model", d.strftime("%Y-%m")) for d in days}
    assert models[days[0]].version != models[days[1]].version
    unchanged = models[days[0]].reference_sample.drop("churn_probability").with_row_index("user_id").with_columns(
        pl.format("u{}", pl.col("user_id")).alias("user_id")
    )
    frames = {days[0].isoformat(): unchanged, days[1].isoformat(): synthetic_features(days[1], users=700, shift=0.35)}
    result = dg.materialize(
        [features_stub(frames), stored_model(), drift_report],
        resources=local_resources,
        instance=instance,
        tags={"dagster/asset_partition_range_start": days[0].isoformat(),
              "dagster/asset_partition_range_end": days[-1].isoformat()},
    )
    assert result.success
    lake = Lake(settings.data_url)
    summaries = {
        d: json.loads(lake.read_bytes(f"{lake.partition_url('drift_report', 'date', d.isoformat())}/{SUMMARY_FILE}"))
        for d in days
    }
    for d, frame in zip(days, (unchanged, frames[days[1].isoformat()]), strict=True):
        assert summaries[d]["date"] == d.isoformat() and summaries[d]["model_version"] == models[d].version
        assert summaries[d]["current_rows"] == summaries[d]["compared_rows"] == frame.height
    assert summaries[days[0]]["dataset_drift"] is False and summaries[days[1]]["dataset_drift"] is True

    by_day = {m.partition: {k: v.value for k, v in m.metadata.items()}
              for m in result.asset_materializations_for_node("drift_report")}
    assert by_day[days[0].isoformat()]["compared_rows"] == unchanged.height
    rows = [line.strip("|").split("|") for line in by_day[days[1].isoformat()]["columns"].splitlines()[2:]]
    listed = [(cells[3].strip(), cells[0].strip()) for cells in rows]
    scored = {c: r for c, r in summaries[days[1]]["columns"].items() if r["kind"] != "score"}
    expected = sorted((not r["drifted"], c) for c, r in scored.items())[:15]
    assert listed == [("no" if not_drifted else "yes", c) for not_drifted, c in expected]
    assert listed[0][0] == "yes" and listed == sorted(listed, key=lambda row: (row[0] != "yes", row[1]))


def _retraining_requests(instance) -> tuple[list[str], str | None]:
    """What drift_retraining_sensor's first tick over the instance's drift reports asks for, and its skip message."""
    sensor = build_drift_retraining_sensor(threshold=0.5, cooldown=dt.timedelta(days=7))
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    data = sensor.evaluate_tick(context)
    return [r.partition_key for r in data.run_requests or []], data.skip_message


def test_a_day_of_too_few_users_concludes_no_drift_and_asks_for_no_retraining(settings, local_resources, instance):
    """Twenty users drawn from the reference sample itself: nothing moved, yet Evidently's distance tests call
    most columns drifted on so few rows (measured: 90-98 % of the columns of 1-50 users). The day keeps its table
    and report, but concludes nothing: no dataset drift, the check passes, the sensor passes it over, saying so."""
    churn_model = ModelIOManager(base_url=settings.data_url).read("model", MONTH)
    features = churn_model.reference_sample.drop("churn_probability").sample(20, seed=0).with_row_index(
        "user_id"
    ).with_columns(pl.format("u{}", pl.col("user_id")).alias("user_id"))
    assert features.height < SETTINGS.drift_min_rows
    result = report_day(local_resources, instance, features)
    assert result.success

    table, summary, html = outputs(settings.data_url)
    assert table.schema == pl.Schema(DRIFT_SCHEMA) and table.height == len(churn_model.card["features"]) + 1
    assert summary["share_of_drifted_columns"] >= 0.5  # chance, at this size
    assert summary["too_few_rows"] is True and summary["min_compared_rows"] == SETTINGS.drift_min_rows
    assert summary["dataset_drift"] is False and summary["compared_rows"] == 20
    assert b"<html" in html[:2000].lower()
    metadata = metadata_of(result)
    assert metadata["too_few_rows"] is True and metadata["dataset_drift"] is False
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["too_few_rows"].value is True

    months, skip = _retraining_requests(instance)
    assert months == []
    assert skip == (
        "1 new drift report(s), none at or over 0.5 (1 of too few users to conclude, under CHURN_DRIFT_MIN_ROWS, "
        "passed over whatever their share)"
    )


def test_a_drifted_day_of_the_minimum_of_users_still_asks_for_a_retraining(settings, local_resources, instance):
    """A day of exactly CHURN_DRIFT_MIN_ROWS users whose features moved is dataset drift, and the sensor asks
    for the retraining of its month: the minimum is "at least", as the threshold is."""
    shifted = synthetic_features(DAY, users=SETTINGS.drift_min_rows, seed=4, shift=0.35)
    result = report_day(local_resources, instance, shifted)
    assert result.success

    _, summary, _ = outputs(settings.data_url)
    assert summary["compared_rows"] == SETTINGS.drift_min_rows and summary["too_few_rows"] is False
    assert summary["dataset_drift"] is True
    assert metadata_of(result)["too_few_rows"] is False
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert _retraining_requests(instance)[0] == [MONTH]
