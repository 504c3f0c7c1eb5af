"""The lake as its readers see it: docs/operations.md's "Reading the lake" snippets, run as written on a lake the
real assets wrote, give what the project's own reads of each partition give; every table's partitions share one
Parquet schema of types that hive readers (Spark, Athena, Trino) take; a day with no user at risk is a file."""

import datetime as dt
import json
import re
import shutil
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import s3fs

from churn_assets.assets.ml.checks import predictions_cover_every_user
from churn_assets.assets.ml.predictions import PREDICTIONS_SCHEMA, predictions
from churn_assets.assets.monitoring.drift_report import REPORT_FILE, SUMMARY_FILE, drift_report
from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets.resources.lake import Lake
from churn_assets.simulate.simulator import simulate
from churn_assets_tests.helpers import INGEST_AND_FEATURES, materialize_selected, read_partition
from churn_assets_tests.ml_frames import features_stub, stored_model, synthetic_features

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
FIRST, LAST, SCORED_FROM = dt.date(2025, 1, 1), dt.date(2025, 3, 16), dt.date(2025, 3, 1)
TABLES = [
    "raw_events",
    "raw_events_quarantine",
    "install_times",
    "user_daily",
    "features",
    "labels",
    "predictions",
    "drift_report",
]


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, models_lake: str) -> str:
    """300 simulated users from 2025-01-01 to 2025-03-16 through the data chain, scored and drift-checked from
    2025-03-01 by the session's model of 2025-03 (so that the first two scored days have their labels)."""
    root = tmp_path_factory.mktemp("readers")
    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    shutil.copytree(models_lake, settings.data_url)
    simulate(settings.landing_url, users=300, days=len(days(FIRST, LAST)), seed=5, file_format="parquet")
    resources = build_resources(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        chain = ["raw_events", "install_times", "user_daily", "features", "labels"]
        assert materialize_selected(chain, resources, instance, FIRST.isoformat(), LAST.isoformat()).success
        scoring = [*INGEST_AND_FEATURES, stored_model(), predictions, drift_report]
        assert materialize_selected(
            ["predictions", "drift_report"], resources, instance, SCORED_FROM.isoformat(), LAST.isoformat(), scoring
        ).success
    return settings.data_url


def reading_the_lake_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of docs/operations.md's section "Reading the lake", in order."""
    section = DOCS.read_text().split("\n## Reading the lake\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def stored(lake: str, asset: str, first: dt.date, last: dt.date) -> pl.DataFrame:
    """The partitions first..last of ``asset`` as the project reads each, with their day."""
    return pl.concat([read_partition(lake, asset, d).with_columns(pl.lit(d).alias("date")) for d in days(first, last)])


def test_the_docs_snippets_read_what_the_project_stored(lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    python = reading_the_lake_blocks("python")
    assert len(python) >= 4, "docs/operations.md, 'Reading the lake', lost its Python examples"
    (tmp_path / "data").mkdir()  # the docs' lake is "data/lake", relative: run them beside a lake of that name
    (tmp_path / "data" / "lake").symlink_to(lake)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in python:
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - the documented code, as a reader runs it

    scores = stored(lake, "predictions", SCORED_FROM, LAST)
    critical = namespace["critical"]
    assert critical.height == scores.filter(pl.col("risk_band") == "Critical").height > 0
    assert critical.schema["date"] == pl.Date
    assert len(namespace["predictions"]) == scores.height  # pandas, every day
    assert len(namespace["drift"]) == stored(lake, "drift_report", SCORED_FROM, LAST).height  # its table alone

    labels = stored(lake, "labels", SCORED_FROM, LAST)  # every label of March has its snapshot's features row
    assert int(namespace["by_country"]["labels"].sum()) == labels.height > 0

    # pyarrow: what became of the scores, one row per prediction whose label is known (those of 03-01 and 03-02).
    outcomes = namespace["outcomes"]
    labelled = scores.filter(pl.col("date") <= LAST - dt.timedelta(days=14))
    assert outcomes.num_rows == labelled.height > 0
    got = pl.from_arrow(outcomes.select(["date", "user_id", "churned"])).sort("date", "user_id")
    want = (
        labels.filter(pl.col("snapshot_date") >= SCORED_FROM)
        .select(pl.col("snapshot_date").alias("date"), "user_id", "churned")
        .sort("date", "user_id")
    )
    assert got.equals(want)

    # The model outside Dagster gives the day's stored scores and bands.
    day_scores = read_partition(lake, "predictions", LAST)
    features = read_partition(lake, "features", LAST)
    by_user = dict(zip(day_scores["user_id"], day_scores["churn_probability"], strict=True))
    probability = namespace["probability"]
    assert [by_user[u] for u in features["user_id"]] == pytest.approx(list(probability), abs=1e-6)
    bands = dict(zip(day_scores["user_id"], day_scores["risk_band"], strict=True))
    assert [bands[u] for u in features["user_id"]] == [str(b) for b in namespace["risk_band"]]


@pytest.mark.s3
def test_the_docs_snippets_read_the_lake_on_s3(lake: str, s3_server, tmp_path: Path):
    """The same snippets on a copy of the lake in S3 (the AWS variables set, as the docs say), but the model's,
    which opens local files; DuckDB through s3fs, registered as the docs say."""
    remote = f"s3://lake/{tmp_path.name}"
    Lake(remote).fs.put(f"{lake}/", f"{remote}/", recursive=True)
    namespace: dict = {}
    for block in reading_the_lake_blocks("python"):
        if "xgboost" not in block:
            exec(compile(block.replace('"data/lake"', repr(remote)), str(DOCS), "exec"), namespace)  # noqa: S102
    scores = stored(lake, "predictions", SCORED_FROM, LAST)
    assert namespace["lake"] == remote
    assert namespace["critical"].height == scores.filter(pl.col("risk_band") == "Critical").height > 0
    assert len(namespace["predictions"]) == scores.height
    assert len(namespace["drift"]) == stored(lake, "drift_report", SCORED_FROM, LAST).height
    assert int(namespace["by_country"]["labels"].sum()) == stored(lake, "labels", SCORED_FROM, LAST).height
    assert namespace["outcomes"].num_rows == scores.filter(pl.col("date") <= LAST - dt.timedelta(days=14)).height

    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem())
    query = reading_the_lake_blocks("sql")[0].split(";")[0].replace("data/lake/", f"{remote}/")
    assert sum(users for _, _, users, _ in con.sql(query).fetchall()) == scores.height


def test_the_docs_duckdb_queries_count_what_the_project_stored(lake: str):
    queries = [q for block in reading_the_lake_blocks("sql") for q in block.split(";") if q.strip()]
    scores_by_band, quarantine = (duckdb.sql(query.replace("data/lake/", f"{lake}/")).fetchall() for query in queries)
    assert sum(users for _, _, users, _ in scores_by_band) == stored(lake, "predictions", SCORED_FROM, LAST).height
    assert sum(rows for _, _, rows in quarantine) == stored(lake, "raw_events_quarantine", FIRST, LAST).height


def parquet_columns(path: Path) -> list[tuple[str, str, str]]:
    schema = pq.ParquetFile(path).schema
    return [(c.name, c.physical_type, str(c.logical_type)) for c in schema]


def test_each_tables_partitions_share_one_schema_of_types_hive_readers_take(lake: str):
    for table in TABLES:
        folders = sorted(Path(lake, table).glob("date=*"))
        assert folders, table
        schemas = {}
        for folder in folders:
            names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
            # One table file per partition, and nothing else a hive reader reads: drift_report's HTML report and
            # summary beside it have names readers skip.
            hidden = sorted([REPORT_FILE, SUMMARY_FILE]) if table == "drift_report" else []
            assert names == sorted(["data.parquet", *hidden]), (folder, names)
            assert all(name.startswith("_") for name in hidden)
            schemas.setdefault(tuple(parquet_columns(folder / "data.parquet")), []).append(folder.name)
        assert len(schemas) == 1, f"{table}: partitions of different schemas {list(schemas.values())}"
        for name, physical, logical in next(iter(schemas)):
            assert name == name.lower(), (table, name)
            assert physical != "INT96" and "nanoseconds" not in logical, (table, name, logical)
            assert "isSigned=false" not in logical or (table, name) == ("predictions", "rank"), (table, name, logical)
    # The first days' empty labels and quarantines are among the partitions compared above.
    assert read_partition(lake, "labels", FIRST).height == 0


def test_the_drift_reports_folder_reads_as_a_table_of_its_rows_alone(lake: str):
    """Each drift_report/date=D/ holds the day's HTML report and summary beside its table, under names that readers
    of the folder as a hive-partitioned table skip (as Spark, Athena and Trino do): pyarrow's dataset and pandas read
    the folder, and DuckDB and polars its Parquet glob, as the table's rows alone, each with its day."""
    want = stored(lake, "drift_report", SCORED_FROM, LAST).sort("date", "column")
    folder = f"{lake}/drift_report"
    by_day = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    read = {
        "pyarrow": pl.from_arrow(ds.dataset(f"{folder}/", format="parquet", partitioning=by_day).to_table()),
        "pandas": pl.from_pandas(pd.read_parquet(f"{folder}/")).with_columns(
            pl.col("date").cast(pl.String).str.to_date()  # the partition as a category of text
        ),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true)").pl(),
        "polars": pl.read_parquet(f"{folder}/**/*.parquet", hive_partitioning=True),
    }
    for reader, frame in read.items():
        got = frame.select(want.columns).sort("date", "column")
        assert got.equals(want), reader
    for day in days(SCORED_FROM, LAST):
        beside = Path(folder, f"date={day}")
        assert json.loads((beside / SUMMARY_FILE).read_text())["date"] == day.isoformat()
        assert b"<html" in (beside / REPORT_FILE).read_bytes()[:2000].lower()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def old_drift_reports(request, lake: str, tmp_path: Path) -> tuple[str, str]:
    """A lake whose drift reports were written before 2026-12-01 (``report.html`` and ``summary.json`` beside the
    table, the summary naming the report), on disk or on S3, and the lake of the same days as written now."""
    old = tmp_path / "old"
    shutil.copytree(Path(lake, "drift_report"), old / "drift_report")
    for folder in (old / "drift_report").glob("date=*"):
        (folder / REPORT_FILE).rename(folder / "report.html")
        summary = (folder / SUMMARY_FILE).read_text().replace(f"/{REPORT_FILE}", "/report.html")
        (folder / "summary.json").write_text(summary)
        (folder / SUMMARY_FILE).unlink()
    if request.param == "local":
        return str(old), lake
    request.getfixturevalue("s3_server")
    Lake(f"s3://lake/{tmp_path.name}").fs.put(f"{old}/", f"s3://lake/{tmp_path.name}/", recursive=True)
    return f"s3://lake/{tmp_path.name}", lake


def test_the_upgrade_renames_old_drift_reports_as_written_now(old_drift_reports: tuple[str, str]):
    """docs/operations.md, "Upgrading": its rename, run as written, leaves each old day's folder as this version
    writes it: the table, _report.html and _summary.json (naming it), with nothing a hive reader would take."""
    old, now = old_drift_reports
    section = DOCS.read_text().split("\n## Upgrading\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(textwrap.dedent(block).replace('"data/lake"', repr(old)), str(DOCS), "exec"), {})  # noqa: S102
    lake = Lake(old)
    for folder in sorted(Path(now, "drift_report").glob("date=*")):
        renamed = f"{old}/drift_report/{folder.name}"
        assert sorted(p.rpartition("/")[2] for p in lake.fs.ls(renamed, detail=False)) == sorted(
            ["data.parquet", REPORT_FILE, SUMMARY_FILE]
        ), renamed
        for name in (REPORT_FILE, SUMMARY_FILE):  # (the copies' summaries name the report where it was written)
            assert lake.read_bytes(f"{renamed}/{name}") == (folder / name).read_bytes(), (renamed, name)


def test_a_day_with_no_user_at_risk_is_a_predictions_file_of_no_rows(local_settings, models_lake, instance):
    shutil.copytree(models_lake, local_settings.data_url)
    day = dt.date(2025, 3, 10)
    empty = synthetic_features(day, users=10).clear()
    result = dg.materialize(
        [features_stub({day.isoformat(): empty}), stored_model(), predictions, predictions_cover_every_user],
        resources=build_resources(local_settings),
        instance=instance,
        partition_key=day.isoformat(),
    )
    assert result.success
    scored = read_partition(local_settings.data_url, "predictions", day)
    assert scored.height == 0 and scored.schema == pl.Schema(PREDICTIONS_SCHEMA)
