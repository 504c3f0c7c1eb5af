"""Simulated landing data (300 users, 3 weeks) through raw_events → install_times → user_daily: a range
run equals day-by-day runs value for value, re-runs are reproducible, every landing format and the dirty
rows give the same events, and the same flow on a real S3 server equals the local one."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets.simulate import simulate
from churn_assets_tests.landing_helpers import (
    materialize_ingest,
    partition_metadata,
    read_partition,
    tree_digest,
)

START = dt.date(2025, 1, 1)
DAYS = 21
USERS = 300
ALL_DAYS = [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
TABLES = ("raw_events", "install_times", "user_daily", "raw_events_quarantine")
ASSETS = ("raw_events", "install_times", "user_daily")


def _lake_tables(lake_url: str, days: list[str] = ALL_DAYS) -> dict[tuple[str, str], pl.DataFrame]:
    return {(table, day): read_partition(lake_url, table, day) for table in TABLES for day in days}


def _hashes(results: list[dg.ExecuteInProcessResult]) -> dict[tuple[str, str], str]:
    return {
        (asset, day): meta["content_hash"]
        for result in results
        for asset in ASSETS
        for day, meta in partition_metadata(result, asset).items()
    }


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("simulated") / "landing")
    simulate(url, users=USERS, days=DAYS, start=START, seed=7)
    return url


@pytest.fixture(scope="module")
def range_run(landing, tmp_path_factory):
    """One run over all 21 days, on its own lake."""
    settings = ChurnSettings(data_url=str(tmp_path_factory.mktemp("range") / "lake"), landing_url=landing)
    before = tree_digest(landing)
    result = materialize_ingest(build_resources(settings), dg.DagsterInstance.ephemeral(), ALL_DAYS[0], ALL_DAYS[-1])
    assert tree_digest(landing) == before, "the landing zone changed"
    return settings, result


@pytest.fixture(scope="module")
def daily_runs(landing, tmp_path_factory):
    """One run per day, in order, on another lake."""
    settings = ChurnSettings(data_url=str(tmp_path_factory.mktemp("daily") / "lake"), landing_url=landing)
    instance = dg.DagsterInstance.ephemeral()
    results = [materialize_ingest(build_resources(settings), instance, day) for day in ALL_DAYS]
    return settings, results, instance


def test_range_run_equals_day_by_day(range_run, daily_runs):
    (range_settings, range_result), (daily_settings, daily_results, _) = range_run, daily_runs
    by_range, by_day = _lake_tables(range_settings.data_url), _lake_tables(daily_settings.data_url)
    for key, frame in by_range.items():
        assert frame.equals(by_day[key]), f"{key} differs between the range run and the daily runs"
    # Same bytes too: the content hashes (the data versions) agree partition by partition.
    range_hashes, daily_hashes = _hashes([range_result]), _hashes(daily_results)
    assert len(range_hashes) == len(ASSETS) * DAYS
    assert range_hashes == daily_hashes


def test_simulated_outputs_are_plausible(range_run):
    settings, result = range_run
    tables = _lake_tables(settings.data_url)
    events = pl.concat([tables["raw_events", day] for day in ALL_DAYS])
    meta = partition_metadata(result, "raw_events")
    assert events.height == sum(m["dagster/row_count"] for m in meta.values()) > 10_000
    assert sum(m["duplicates_dropped"] for m in meta.values()) > 0, "the simulator re-sends some events"
    assert sum(m["quarantined"] for m in meta.values()) == 0, "clean data has nothing to quarantine"

    # install_times on the last day knows every user who ever had an event, each at their earliest event.
    last = tables["install_times", ALL_DAYS[-1]]
    earliest = events.group_by("user_id").agg(pl.col("event_time").min().alias("install_time")).sort("user_id")
    assert last.select("user_id", "install_time").equals(earliest)
    assert USERS * 0.5 < last.height <= USERS * 3

    # user_daily counts add up to raw_events, day by day.
    for day in ALL_DAYS:
        daily, raw = tables["user_daily", day], tables["raw_events", day]
        assert daily.get_column("n_events").sum() == raw.height
        assert daily.height == raw.get_column("user_id").n_unique()
        assert daily.get_column("n_purchase").sum() == raw.filter(pl.col("event_type") == "purchase").height
        assert daily.get_column("days_since_install").min() >= 0


def test_blocking_checks_pass(range_run, daily_runs):
    _, range_result = range_run
    _, daily_results, _ = daily_runs
    for result in [range_result, *daily_results]:
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {"raw_events_are_valid", "user_daily_is_consistent"}
        assert all(e.passed for e in evaluations), [e for e in evaluations if not e.passed]


def test_rematerializing_a_partition_gives_the_same_content_hash(daily_runs):
    settings, results, instance = daily_runs
    day = ALL_DAYS[9]
    again = materialize_ingest(build_resources(settings), instance, day)
    first = {k: v for k, v in _hashes(results).items() if k[1] == day}
    assert _hashes([again]) == first
    # Each hash is that of the partition's stored bytes, and another day's content has another hash.
    for (asset, _), recorded in first.items():
        stored = Path(settings.data_url, asset, f"date={day}", "data.parquet").read_bytes()
        assert recorded == hashlib.sha256(stored).hexdigest()[:32], asset
        assert recorded != _hashes(results)[asset, ALL_DAYS[8]], asset
    record = instance.get_latest_materialization_event(dg.AssetKey("install_times"))
    assert record.asset_materialization.tags["dagster/data_version"] == first["install_times", day]


SHORT_DAYS = ALL_DAYS[:4]


def _short_run(tmp_path, **simulate_options) -> tuple[str, dg.ExecuteInProcessResult]:
    """A 4-day simulation ingested to raw_events by one range run; returns the lake URL and the result."""
    landing = str(tmp_path / "landing")
    simulate(landing, users=USERS, days=len(SHORT_DAYS), start=START, seed=7, **simulate_options)
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing)
    result = materialize_ingest(build_resources(settings), dg.DagsterInstance.ephemeral(), SHORT_DAYS[0],
                                SHORT_DAYS[-1], selection=dg.AssetSelection.assets("raw_events"))
    return settings.data_url, result


@pytest.fixture(scope="module")
def short_baseline(tmp_path_factory) -> str:
    lake, _ = _short_run(tmp_path_factory.mktemp("short_baseline"))
    return lake


@pytest.mark.parametrize("file_format", ["jsonl", "parquet", "csv"])
def test_every_landing_format_gives_the_same_events(short_baseline, tmp_path, file_format):
    """The same simulation written as another format, three files a day, is ingested to the same events."""
    lake, _ = _short_run(tmp_path, file_format=file_format, files_per_day=3)
    for day in SHORT_DAYS:
        expected = read_partition(short_baseline, "raw_events", day).sort("event_id")
        assert read_partition(lake, "raw_events", day).sort("event_id").equals(expected)


def test_dirty_simulation_quarantines_exactly_the_dirty_rows(short_baseline, tmp_path):
    lake, result = _short_run(tmp_path, dirty=True)
    reasons = ["missing_user_id", "missing_event_id", "unparsable_event_time", "event_time_after_export_day",
               "event_time_too_old", "negative_revenue"]
    metadata = partition_metadata(result, "raw_events")
    assert sorted(metadata) == SHORT_DAYS
    for day, meta in metadata.items():
        assert {r: meta.get(f"quarantined/{r}", 0) for r in reasons} == dict.fromkeys(reasons, 3), day
        assert meta["quarantined"] == 3 * len(reasons)
        # Every valid event kept: the same events as the clean simulation of the same seed.
        clean = read_partition(short_baseline, "raw_events", day).sort("event_id")
        assert read_partition(lake, "raw_events", day).sort("event_id").equals(clean)


@pytest.mark.s3
def test_the_same_flow_on_s3(s3_server, range_run, request):
    """Landing and lake both on a real S3 server: a range run, then one more day on its own, equal to local."""
    local, _ = range_run
    prefix = request.node.name
    settings = ChurnSettings(data_url=f"s3://lake/{prefix}", landing_url=f"s3://landing/{prefix}")
    simulate(settings.landing_url, users=USERS, days=DAYS, start=START, seed=7)
    client = s3_server.client()
    landing_before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket="landing", Prefix=prefix)["Contents"]}

    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources(settings)
    materialize_ingest(resources, instance, ALL_DAYS[0], ALL_DAYS[-2])
    # The last day alone: install_times reads its previous day back from S3.
    result = materialize_ingest(resources, instance, ALL_DAYS[-1])
    assert all(e.passed for e in result.get_asset_check_evaluations())

    on_s3, on_disk = _lake_tables(settings.data_url), _lake_tables(local.data_url)
    for key, frame in on_disk.items():
        assert on_s3[key].equals(frame), f"{key} differs between S3 and the local disk"
    keys = s3_server.keys("lake", prefix)
    assert f"{prefix}/raw_events/date=2025-01-21/data.parquet" in keys
    assert f"{prefix}/user_daily/date=2025-01-01/data.parquet" in keys
    assert all(k.endswith("/data.parquet") for k in keys), "no temporaries or stray objects on S3"
    landing_after = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket="landing", Prefix=prefix)["Contents"]}
    assert landing_after == landing_before
