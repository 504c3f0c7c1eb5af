"""Runs that overlap: a step reading a partition while another run rewrites it."""

import threading

import dagster as dg
import polars as pl
import pytest
from s3fs import S3FileSystem

from churn_assets.resources.lake import Lake
from churn_assets.resources.parquet_io_manager import RECENT, PartitionedParquetIOManager
from churn_assets_tests.helpers import scan_tables
from churn_assets_tests.s3_proxy import HoldingProxy
from churn_assets_tests.s3_server import local_or_s3_url

days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", fmt="%Y-%m-%d")
DAY = "2025-01-02"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_url(request, tmp_path) -> str:
    return local_or_s3_url(request, tmp_path, "lake")


class Version(dg.Config):
    version: int


@dg.asset(partitions_def=days)
def counts(config: Version) -> pl.DataFrame:
    """20,000 rows of users, each with ``version`` as its value: which run wrote a partition shows in every row."""
    return pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(20_000)], "value": [config.version] * 20_000})


def _reader(window: int, reading: threading.Event, rewritten: threading.Event, seen: list) -> dg.AssetsDefinition:
    """A daily asset that reads ``counts`` over ``window`` days in two slices of users, as features reads its
    window, and waits between them for another run to rewrite ``counts``."""

    @dg.asset(partitions_def=days, ins={"counts": dg.AssetIn(
        partition_mapping=dg.TimeWindowPartitionMapping(start_offset=1 - window))})
    def reader(counts: pl.LazyFrame) -> pl.DataFrame:
        first = counts.filter(pl.col("user_id") < "u10000").collect()
        reading.set()
        assert rewritten.wait(60), "the other run never rewrote counts"
        second = counts.filter(pl.col("user_id") >= "u10000").collect()
        seen.append(pl.concat([first, second]))
        return seen[-1].drop("date")  # one partition: its date is its folder's

    return reader


@pytest.mark.parametrize("window", [1, 2])
def test_a_step_reads_one_version_of_its_input_while_another_run_rewrites_it(lake_url, window):
    """A run rewriting a partition while another run's step reads it (a day re-run while its downstream runs)
    leaves that step the version it began with: not half of each (features' slices of users each read the
    lake again), nor a polars panic on S3 (its ranged reads of an object replaced between them)."""
    resources = {"io_manager": PartitionedParquetIOManager(base_url=lake_url)}
    first_days = [k for k in days.get_partition_keys() if k <= DAY][-window:]
    for key in first_days:
        assert dg.materialize([counts], resources=resources, partition_key=key,
                              run_config={"ops": {"counts": {"config": {"version": 1}}}}).success
    RECENT.forget("counts")  # the reader is another run's process: it reads counts from the lake
    reading, rewritten, seen = threading.Event(), threading.Event(), []
    reader = _reader(window, reading, rewritten, seen)
    results = []
    run = threading.Thread(target=lambda: results.append(dg.materialize(
        [counts, reader], selection=[reader], resources=resources, partition_key=DAY, raise_on_error=False)))
    run.start()
    try:
        assert reading.wait(60), "the reader never read its first slice"
        rewrite = dg.materialize([counts], resources=resources, partition_key=DAY,
                                 run_config={"ops": {"counts": {"config": {"version": 2}}}})
        assert rewrite.success
    finally:
        rewritten.set()
        run.join(timeout=60)

    assert results and results[0].success
    (read,) = seen
    assert read.height == 20_000 * window
    assert read.get_column("value").unique().to_list() == [1], "the step read two versions of counts"
    assert scan_tables(Lake(lake_url), [Lake(lake_url).table_url("counts", "date", DAY)], {"date": pl.Date()}) \
        .select(pl.col("value").unique()).collect().item() == 2  # the rewrite is stored


@dg.asset(partitions_def=days)
def scored(counts: pl.DataFrame) -> pl.DataFrame:
    """Reads ``counts[D]`` whole, once, as predictions reads features[D]."""
    return counts.drop("date")


def _counts(version: int, rows: int) -> pl.DataFrame:
    """``rows`` rows whose ``value`` is ``version``, with a column that does not compress: a file of a few MB,
    which polars reads in ranges after its footer, not in one request. Files of two versions are laid out alike."""
    return pl.DataFrame({"value": [version] * rows, "noise": pl.Series(range(rows)).hash(seed=7)})


@pytest.mark.s3
def test_an_s3_partition_replaced_between_two_reads_of_a_scan_is_read_whole_from_one_file(
    s3_server, tmp_path, monkeypatch
):
    """A run rewrites counts[D] on S3 between the reads of another run's step: polars read the old object's footer
    (with the file's last row groups) and the new one's other row groups, and the step succeeded with rows of both
    (a new file of another size failed it with "416 Range Not Satisfiable", or panicked polars). The step now
    downloads the object in one GET, which the proxy never holds: no rewrite can come between two reads."""
    proxy = HoldingProxy(s3_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    S3FileSystem.clear_instance_cache()
    try:
        lake = Lake(f"s3://lake/{tmp_path.name}")
        url = lake.table_url("counts", "date", DAY)
        lake.write_table(url, _counts(1, 300_000))
        proxy.hold(url.removeprefix("s3://"))
        resources = {"io_manager": PartitionedParquetIOManager(base_url=lake.root_url)}
        results = []
        run = threading.Thread(target=lambda: results.append(dg.materialize(
            [counts, scored], selection=[scored], resources=resources, partition_key=DAY, raise_on_error=False)))
        run.start()
        while run.is_alive() and not proxy.held.wait(0.05):
            pass
        if proxy.held.is_set():  # the step reads counts[D] in ranges: the other run rewrites it meanwhile
            lake.write_table(url, _counts(2, 300_000))
        proxy.release()
        run.join(timeout=60)

        assert results and results[0].success, [
            e.step_failure_data.error.to_string()[:600] for e in results[0].all_events if e.is_step_failure
        ]
        stored = scan_tables(lake, [lake.table_url("scored", "date", DAY)], {"date": pl.Date()})
        assert stored.select(pl.len(), pl.col("value").unique()).collect().rows() == [(300_000, 1)]
    finally:
        proxy.close()
        S3FileSystem.clear_instance_cache()
