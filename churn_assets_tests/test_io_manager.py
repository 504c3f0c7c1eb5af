"""The partition-aware Parquet IO manager on a temp dir, and the atomicity of the lake's writes."""


import datetime as dt
import gzip
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
import pyarrow.dataset
import pyarrow.parquet
import pytest
from s3fs import S3FileSystem

from churn_assets.config import ChurnSettings
from churn_assets.resources import LandingZone, build_resources
from churn_assets.resources.filesystems import (
    BucketNotFoundError,
    StorageAccessDeniedError,
    StorageSettingsError,
    filesystem,
    join,
    polars_storage_options,
    s3_listing_pages,
)
from churn_assets.resources.lake import LOCAL_COPIES, Lake, remove_stale_copies
from churn_assets.resources.parquet_io_manager import (
    RECENT,
    ROW_GROUP_ROWS,
    MissingPartitionError,
    PartitionedParquetIOManager,
    PartitionStream,
    _split_by_partition,
    column_schema,
    each_partition_once,
)
from churn_assets_tests.helpers import data_versions, scan_tables, stale_partitions
from churn_assets_tests.landing_helpers import amplitude_row, jsonl, materialize_ingest, write_landing_day
from churn_assets_tests.s3_server import ACCESS_KEY, SECRET_KEY, _free_port, local_or_s3_url, s3_calls

days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", fmt="%Y-%m-%d")
months = dg.MonthlyPartitionsDefinition(start_date="2025-01", timezone="UTC", fmt="%Y-%m", end_offset=1)


@pytest.fixture
def instance():
    """An in-memory instance: these tests read their own run results, and it is ~10x faster than SQLite."""
    return dg.DagsterInstance.ephemeral()

D1, D2, D3 = dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(2025, 1, 3)


def _range(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def _days_of(context: dg.AssetExecutionContext) -> list[dt.date]:
    window = context.partition_time_window
    return [window.start.date() + dt.timedelta(days=i) for i in range((window.end - window.start).days)]


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def daily_numbers(context: dg.AssetExecutionContext) -> pl.DataFrame:
    """Rows ``day.day * 10 + i`` for i < day.day, one frame for the whole range, split by ``date``."""
    return pl.DataFrame(
        [{"date": day, "value": day.day * 10 + i} for day in _days_of(context) for i in range(day.day)],
        schema={"date": pl.Date, "value": pl.Int64},
    )


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def daily_total(context: dg.AssetExecutionContext, daily_numbers: pl.DataFrame) -> pl.DataFrame:
    """Sum of ``daily_numbers`` per day: its input arrives as one frame with the ``date`` column."""
    assert daily_numbers.schema["date"] == pl.Date
    return daily_numbers.group_by("date").agg(pl.col("value").sum()).sort("date")


def _lake(tmp_path: Path) -> dict:
    return {"io_manager": PartitionedParquetIOManager(base_url=str(tmp_path / "lake"))}


def _table(tmp_path: Path, asset: str, key: str, column: str = "date") -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "lake" / asset / f"{column}={key}" / "data.parquet")


def _stored_hash(tmp_path: Path, asset: str, key: str, column: str = "date") -> str:
    """The content hash a partition's stored file must carry: the first 32 hex digits of its bytes' sha256."""
    data = (tmp_path / "lake" / asset / f"{column}={key}" / "data.parquet").read_bytes()
    return hashlib.sha256(data).hexdigest()[:32]


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    return {
        e.materialization.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(asset)
    }


def test_range_output_is_split_into_partitions(tmp_path, instance):
    result = dg.materialize([daily_numbers, daily_total], resources=_lake(tmp_path), instance=instance,
                            tags=_range("2025-01-01", "2025-01-03"))
    assert result.success
    for day in (D1, D2, D3):
        stored = _table(tmp_path, "daily_numbers", day.isoformat())
        # The partition column is not stored: the folder name carries it.
        assert stored.columns == ["value"]
        assert stored.get_column("value").to_list() == [day.day * 10 + i for i in range(day.day)]
    assert _table(tmp_path, "daily_total", "2025-01-03").rows() == [(30 + 31 + 32,)]

    meta = _metadata(result, "daily_numbers")
    assert sorted(meta) == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert [meta[k]["dagster/row_count"] for k in sorted(meta)] == [1, 2, 3]
    # Each partition's hash is that of its own stored bytes: different days, different hashes.
    assert {k: m["content_hash"] for k, m in meta.items()} == {
        k: _stored_hash(tmp_path, "daily_numbers", k) for k in meta
    }
    assert len({m["content_hash"] for m in meta.values()}) == 3
    assert [c.name for c in meta["2025-01-02"]["dagster/column_schema"].columns] == ["value"]


def test_partition_schema_is_recorded_only_where_it_differs_from_the_declared_one(tmp_path, instance):
    declared = column_schema({"day": pl.Int64(), "value": pl.Float64()})

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(),
              metadata={"dagster/column_schema": declared})
    def declared_table(context: dg.AssetExecutionContext) -> PartitionStream:
        def frames():
            for day in _days_of(context):
                value = pl.lit(1.5) if day.day == 1 else pl.lit("drifted")  # day 2's column changed type
                yield day.isoformat(), pl.DataFrame({"day": [day.day]}).with_columns(value.alias("value"))
        return PartitionStream(frames())

    result = dg.materialize([declared_table], resources=_lake(tmp_path), instance=instance,
                            tags=_range("2025-01-01", "2025-01-02"))
    meta = _metadata(result, "declared_table")
    assert "dagster/column_schema" not in meta["2025-01-01"]
    assert meta["2025-01-01"]["dagster/row_count"] == 1
    assert [(c.name, c.type) for c in meta["2025-01-02"]["dagster/column_schema"].columns] == [
        ("day", "Int64"), ("value", "String")
    ]


def test_single_partition_records_content_hash_as_data_version(tmp_path, instance):
    first = dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance, partition_key="2025-01-02")
    second = dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance, partition_key="2025-01-02")
    hashes = [_metadata(r, "daily_numbers")["2025-01-02"]["content_hash"] for r in (first, second)]
    assert hashes[0] == hashes[1] == _stored_hash(tmp_path, "daily_numbers", "2025-01-02")
    record = instance.get_latest_materialization_event(dg.AssetKey("daily_numbers"))
    assert record.asset_materialization.tags["dagster/data_version"] == hashes[0]
    # Another day's different content is another data version: Dagster sees it changed.
    other = dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance, partition_key="2025-01-03")
    other_hash = _metadata(other, "daily_numbers")["2025-01-03"]["content_hash"]
    assert other_hash == _stored_hash(tmp_path, "daily_numbers", "2025-01-03") != hashes[0]
    record = instance.get_latest_materialization_event(dg.AssetKey("daily_numbers"))
    assert record.asset_materialization.tags["dagster/data_version"] == other_hash


class Offset(dg.Config):
    plus: int = 0


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def offset_numbers(context: dg.AssetExecutionContext, config: Offset) -> PartitionStream:
    """``day.day + plus`` for each day of the run, one partition at a time (as the data assets write a range)."""
    return PartitionStream(
        (day.isoformat(), pl.DataFrame({"value": [day.day + config.plus]})) for day in _days_of(context)
    )


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def offset_total(offset_numbers: pl.DataFrame) -> pl.DataFrame:
    return offset_numbers.group_by("date").agg(pl.col("value").sum())


def test_partitions_written_again_with_the_same_bytes_keep_their_data_versions(tmp_path, instance):
    """Dagster records one data version for all the partitions a range run writes. Days written again with
    the same bytes keep theirs, whether by the same range, a day of it alone or a part of it, so what read them
    is not shown as stale ("Unsynced" in the UI); changed days get new ones, and what read them is stale.
    Before, Dagster hashed the run's id into a range's data version: every range run made everything downstream
    of it look changed, and a day of a range run again alone got its content hash, another version."""
    keys = ["2025-01-01", "2025-01-02", "2025-01-03"]
    assets = [offset_numbers, offset_total]

    def run(selection: list, plus: int, first: str = keys[0], last: str = keys[-1]) -> None:
        config = dg.RunConfig(ops={"offset_numbers": Offset(plus=plus)})
        partition = {"partition_key": first} if first == last else {"tags": _range(first, last)}
        assert dg.materialize(selection, resources=_lake(tmp_path), instance=instance, run_config=config,
                              **partition).success

    run(assets, plus=0)
    first = data_versions(instance, "offset_numbers", keys)
    assert len(set(first.values())) == 1
    assert stale_partitions(instance, assets, "offset_total", keys) == []
    for again in ({}, {"first": keys[1], "last": keys[1]}, {"first": keys[1]}):
        run([offset_numbers], plus=0, **again)
        assert data_versions(instance, "offset_numbers", keys) == first, again
        assert stale_partitions(instance, assets, "offset_total", keys) == [], again
    run([offset_numbers], plus=1)
    changed = data_versions(instance, "offset_numbers", keys)
    assert all(changed[key] != first[key] for key in keys)
    assert stale_partitions(instance, assets, "offset_total", keys) == keys


class Pieces(dg.Config):
    pieces: int


@dg.asset(partitions_def=days)
def computed_in_pieces(config: Pieces) -> pl.DataFrame:
    """The same 150,000 rows however many pieces they were computed in (as features' slices of users are)."""
    rows = pl.DataFrame({"user": [f"u{i:06d}" for i in range(150_000)], "value": range(150_000)})
    size = -(-rows.height // config.pieces)
    return pl.concat([rows.slice(i, size) for i in range(0, rows.height, size)], rechunk=False)


def test_the_same_rows_computed_in_other_pieces_are_the_same_file_and_data_version(tmp_path, instance):
    """Row groups have a fixed size, not one per piece the frame was built from: a partition computed in more
    pieces (a features day sliced by a range run's larger windows) is stored byte for byte the same, so Dagster
    sees the same data version and nothing downstream looks changed."""
    hashes, row_groups = [], []
    for pieces in (1, 3):
        config = dg.RunConfig(ops={"computed_in_pieces": Pieces(pieces=pieces)})
        result = dg.materialize([computed_in_pieces], resources=_lake(tmp_path), instance=instance,
                                partition_key="2025-01-02", run_config=config)
        hashes.append(_metadata(result, "computed_in_pieces")["2025-01-02"]["content_hash"])
        stored = tmp_path / "lake" / "computed_in_pieces" / "date=2025-01-02" / "data.parquet"
        metadata = pyarrow.parquet.ParquetFile(stored).metadata
        row_groups.append([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
    assert hashes[0] == hashes[1]
    assert row_groups == [[131_072, 18_928]] * 2
    record = instance.get_latest_materialization_event(dg.AssetKey("computed_in_pieces"))
    assert record.asset_materialization.tags["dagster/data_version"] == hashes[0]


def test_input_across_partitions_is_one_frame_whatever_their_count(tmp_path, instance):
    dg.materialize(
        [daily_numbers], resources=_lake(tmp_path), instance=instance, tags=_range("2025-01-01", "2025-01-03")
    )

    @dg.asset(partitions_def=days, ins={"daily_numbers": dg.AssetIn(
        partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))})
    def three_days(daily_numbers: pl.DataFrame) -> pl.DataFrame:
        return daily_numbers.group_by(pl.col("date").alias("day")).len().sort("day")

    result = dg.materialize([daily_numbers, three_days], resources=_lake(tmp_path), instance=instance,
                            partition_key="2025-01-03", selection=[three_days])
    assert result.success
    assert _table(tmp_path, "three_days", "2025-01-03").rows() == [(D1, 1), (D2, 2), (D3, 3)]

    one = dg.materialize([daily_numbers, three_days], resources=_lake(tmp_path), instance=instance,
                         partition_key="2025-01-01", selection=[three_days])
    # D-2 and D-1 lie before the first partition: the one existing day arrives as a frame, not a bare object.
    assert one.success
    assert _table(tmp_path, "three_days", "2025-01-01").rows() == [(D1, 1)]


def test_stream_output_writes_each_partition_as_it_comes(tmp_path, instance):
    lake = tmp_path / "lake" / "streamed"

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def streamed(context: dg.AssetExecutionContext) -> PartitionStream:
        def frames():
            for day in _days_of(context):
                # The writer is at most two partitions behind (one being encoded, one being stored): the
                # day three before is on disk when the next one is produced, so a range run holds two days
                # and a day's encoded bytes, not the range.
                three_before = lake / f"date={day - dt.timedelta(days=3)}" / "data.parquet"
                yield day.isoformat(), pl.DataFrame({"day": [day.day], "three_before_written": [three_before.exists()]})
        return PartitionStream(frames())

    result = dg.materialize(
        [streamed], resources=_lake(tmp_path), instance=instance, tags=_range("2025-01-01", "2025-01-05")
    )
    assert result.success
    assert [_table(tmp_path, "streamed", f"2025-01-0{d}").row(0) for d in (1, 2, 3, 4, 5)] == [
        (1, False), (2, False), (3, False), (4, True), (5, True)
    ]
    assert sorted(_metadata(result, "streamed")) == [f"2025-01-0{d}" for d in (1, 2, 3, 4, 5)]
    assert [_metadata(result, "streamed")[f"2025-01-0{d}"]["dagster/row_count"] for d in (1, 5)] == [1, 1]


def test_a_stream_must_give_each_partition_of_the_run_once(tmp_path, instance):
    """A stream that skips a day, or gives one day twice and skips another, fails: Dagster would otherwise
    record the skipped day as materialized though nothing was stored for it. The days it did store are
    recorded, and only those."""
    def stream_of(name: str, keys: tuple[str, ...]) -> dg.AssetsDefinition:
        @dg.asset(name=name, partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
        def stream() -> PartitionStream:
            return PartitionStream((key, pl.DataFrame({"x": [i]})) for i, key in enumerate(keys))

        return stream

    short = stream_of("short_stream", ("2025-01-01", "2025-01-02"))
    with pytest.raises(Exception, match=r"short_stream produced no partition 2025-01-03 \(1 of the run's 3\)"):
        dg.materialize([short], resources=_lake(tmp_path), instance=instance, tags=_range("2025-01-01", "2025-01-03"))
    repeated = stream_of("repeated_stream", ("2025-01-01", "2025-01-01"))
    with pytest.raises(Exception, match="repeated_stream produced partition '2025-01-01' twice"):
        dg.materialize([repeated], resources=_lake(tmp_path), instance=instance,
                       tags=_range("2025-01-01", "2025-01-02"))
    assert instance.get_materialized_partitions(dg.AssetKey("short_stream")) == {"2025-01-01", "2025-01-02"}
    assert instance.get_materialized_partitions(dg.AssetKey("repeated_stream")) == {"2025-01-01"}
    assert _table(tmp_path, "repeated_stream", "2025-01-01").rows() == [(0,)], "the repeat was never written"


def test_partitions_are_checked_one_by_one_as_they_come():
    """The check of a stream, shared by the model IO manager: each key is let through as it comes, a repeat
    fails when it comes, and the keys that never came are named (some of them) at the end."""
    keys = [f"2025-01-{day:02d}" for day in range(1, 11)]
    passed = []
    with pytest.raises(ValueError, match="model produced partition '2025-01-02' twice"):
        for key, _ in each_partition_once("model", keys, [(keys[0], 1), (keys[1], 2), (keys[1], 3), (keys[2], 4)]):
            passed.append(key)
    assert passed == keys[:2]
    with pytest.raises(ValueError) as missing:
        list(each_partition_once("model", keys, [(keys[0], 1), (keys[3], 2)]))
    assert str(missing.value) == (
        "model produced no partition 2025-01-02, 2025-01-03, 2025-01-05, 2025-01-06, 2025-01-07 and 3 more "
        "(8 of the run's 10); nothing was stored for them"
    )
    with pytest.raises(ValueError, match=r"model produced partition '2025-02-01', outside the run's partitions "
                                         r"2025-01-01\.\.2025-01-10"):
        list(each_partition_once("model", keys, [("2025-02-01", 1)]))


def test_range_output_needs_its_partition_column(tmp_path, instance):
    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def no_date() -> pl.DataFrame:
        return pl.DataFrame({"x": [1, 2]})

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def outside() -> pl.DataFrame:
        return pl.DataFrame({"date": [D1, dt.date(2025, 2, 1)], "x": [1, 2]})

    with pytest.raises(Exception, match=r"no_date: an output covering 2 partitions \(2025-01-01\.\.2025-01-02\) "
                                        "needs a 'date' column"):
        dg.materialize([no_date], resources=_lake(tmp_path), instance=instance, tags=_range("2025-01-01", "2025-01-02"))
    with pytest.raises(Exception, match="outside produced rows for partitions 2025-02-01, outside the run's "
                                        r"partitions 2025-01-01\.\.2025-01-02"):
        dg.materialize([outside], resources=_lake(tmp_path), instance=instance, tags=_range("2025-01-01", "2025-01-02"))
    assert not (tmp_path / "lake" / "outside").exists()


def test_a_range_output_that_cannot_be_split_is_named_briefly():
    """The errors of a long range name the asset and its range, not each of its keys."""
    keys = [(D1 + dt.timedelta(days=i)).isoformat() for i in range(120)]
    before = [dt.date(2024, 12, 1) + dt.timedelta(days=i) for i in range(10)]
    with pytest.raises(ValueError) as outside:
        list(_split_by_partition(pl.DataFrame({"date": before, "x": range(10)}), "daily_total", "date", keys))
    assert str(outside.value) == (
        "daily_total produced rows for partitions 2024-12-01, 2024-12-02, 2024-12-03, 2024-12-04, 2024-12-05 "
        "and 5 more, outside the run's partitions 2025-01-01..2025-04-30"
    )
    with pytest.raises(ValueError) as no_column:
        list(_split_by_partition(pl.DataFrame({"x": [1]}), "daily_total", "date", keys))
    assert str(no_column.value) == (
        "daily_total: an output covering 120 partitions (2025-01-01..2025-04-30) needs a 'date' column to split on"
    )


def test_pandas_frames_in_and_out(tmp_path, instance):
    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def pandas_out(context: dg.AssetExecutionContext) -> pd.DataFrame:
        # pandas users write dates as datetime64: the split understands them too.
        return pd.DataFrame({
            "date": pd.to_datetime([d.isoformat() for d in _days_of(context)]),
            "amount": [float(d.day) for d in _days_of(context)],
            "label": [f"day {d.day}" for d in _days_of(context)],
        })

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def pandas_round_trip(pandas_out: pd.DataFrame) -> pd.DataFrame:
        assert isinstance(pandas_out, pd.DataFrame)
        assert list(pandas_out.columns) == ["amount", "label", "date"]
        assert pandas_out.sort_values("date")["label"].tolist() == ["day 1", "day 2", "day 3"]
        return pandas_out.assign(amount=pandas_out["amount"] * 2)

    result = dg.materialize([pandas_out, pandas_round_trip], resources=_lake(tmp_path), instance=instance,
                            tags=_range("2025-01-01", "2025-01-03"))
    assert result.success
    assert _table(tmp_path, "pandas_out", "2025-01-02").rows() == [(2.0, "day 2")]
    # The loaded frame's dates come back as pandas datetimes and split again on the way out.
    assert _table(tmp_path, "pandas_round_trip", "2025-01-03").rows() == [(6.0, "day 3")]


@pytest.mark.parametrize("root", ["lake", "env=prod/lake", "churn [copy]/lake"])
def test_lazy_input_prunes_to_the_filtered_partition(tmp_path, instance, root):
    """Pruned by the partition folder alone, whatever the folders above it: a ``key=value`` folder (a
    hive-style prefix) or glob brackets in the lake's root are neither columns nor patterns."""
    resources = {"io_manager": PartitionedParquetIOManager(base_url=str(tmp_path / root))}
    dg.materialize([daily_numbers], resources=resources, instance=instance, tags=_range("2025-01-01", "2025-01-03"))
    # Day 2's file is now unreadable: only a scan that prunes it by its partition folder can succeed.
    (tmp_path / root / "daily_numbers" / "date=2025-01-02" / "data.parquet").write_bytes(b"not parquet")

    @dg.asset(partitions_def=days, ins={"daily_numbers": dg.AssetIn(
        partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))})
    def first_and_last(daily_numbers: pl.LazyFrame) -> pl.DataFrame:
        assert isinstance(daily_numbers, pl.LazyFrame)
        return daily_numbers.filter(pl.col("date").is_in([D1, D3])).select("value").sort("value").collect()

    @dg.asset(partitions_def=days)
    def third_day(daily_numbers: pl.LazyFrame) -> pl.DataFrame:
        return daily_numbers.select("value", pl.col("date").dt.day().alias("day")).collect()

    @dg.asset
    def countries() -> pl.DataFrame:
        return pl.DataFrame({"country": ["DE", "FR"]})

    @dg.asset
    def country_count(countries: pl.DataFrame) -> pl.DataFrame:
        return countries.select(pl.len().alias("n"))

    everything = [daily_numbers, first_and_last, third_day]
    result = dg.materialize(everything, resources=resources, instance=instance, partition_key="2025-01-03",
                            selection=[first_and_last, third_day])
    assert result.success
    stored = Lake(str(tmp_path / root))
    first_and_last_stored = pl.read_parquet(stored.table_url("first_and_last", "date", "2025-01-03"), glob=False)
    assert first_and_last_stored.rows() == [(10,), (30,), (31,), (32,)]
    third = pl.read_parquet(stored.table_url("third_day", "date", "2025-01-03"), glob=False)
    assert third.rows() == [(30, 3), (31, 3), (32, 3)]
    assert dg.materialize([countries, country_count], resources=resources, instance=instance).success
    assert pl.read_parquet(stored.table_url("country_count"), glob=False).rows() == [(2,)]


def test_missing_upstream_partition_is_named(tmp_path, instance):
    dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance, partition_key="2025-01-01")
    dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance, partition_key="2025-01-03")
    with pytest.raises(
        MissingPartitionError, match=r"daily_numbers has no stored partition 2025-01-02 under"
    ) as raised:
        dg.materialize([daily_numbers, daily_total], resources=_lake(tmp_path), instance=instance,
                       tags=_range("2025-01-01", "2025-01-03"), selection=[daily_total])
    # daily_total reads another asset, not its own day before: no advice about the first partition or
    # CHURN_START_DATE, which would send the user after the wrong setting.
    assert "CHURN_START_DATE" not in str(raised.value) and "carries each day on" not in str(raised.value)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_url(request, tmp_path) -> str:
    return local_or_s3_url(request, tmp_path, "lake")


def test_stored_partitions_are_found_and_missing_ones_named(lake_url):
    """Which of a range's partitions are stored: on S3 one listing answers for the range, and it must
    agree with asking for each file (a neighbouring asset, a folder without a table and a day outside
    the range do not count)."""
    lake = Lake(lake_url)
    frame = pl.DataFrame({"value": [1]})
    for key in ("2025-01-01", "2025-01-03", "2025-01-10", "2025-02-01"):
        lake.write_table(lake.table_url("daily", "date", key), frame)
    lake.write_table(lake.table_url("daily_extra", "date", "2025-01-02"), frame)  # another asset, same prefix
    lake.write_bytes(lake.partition_url("daily", "date", "2025-01-04") + "/report.html", b"<html/>")  # no table
    keys = [f"2025-01-{day:02d}" for day in (1, 2, 3, 4, 10, 11)]

    stored, missing = lake.stored_tables("daily", "date", keys)

    assert stored == [lake.table_url("daily", "date", key) for key in ("2025-01-01", "2025-01-03", "2025-01-10")]
    assert missing == ["2025-01-02", "2025-01-04", "2025-01-11"]
    assert lake.stored_tables("daily", "date", ["2025-01-03"]) == ([lake.table_url("daily", "date", "2025-01-03")], [])
    assert lake.stored_tables("daily", "date", ["2025-01-05"]) == ([], ["2025-01-05"])
    assert lake.stored_tables("nothing_yet", "date", keys) == ([], keys)


@pytest.fixture(params=["env=prod", "churn [copy]", pytest.param("s3", marks=pytest.mark.s3)])
def odd_root(request, tmp_path) -> str:
    """A lake root a hive reader or a glob would misread: under a ``key=value`` folder or with glob brackets,
    or on S3 under an ``env=prod/`` prefix."""
    if request.param == "s3":
        request.getfixturevalue("s3_server")
        return f"s3://lake/{tmp_path.name}/env=prod/churn"
    return str(tmp_path / request.param / "lake")


def test_ingest_runs_on_a_lake_under_a_key_value_or_glob_folder(odd_root, tmp_path, instance):
    """raw_events, install_times and user_daily over three days, then one day again: every input is read
    back, a range of partitions and a single one, whatever the folders above the lake's own."""
    landing = str(tmp_path / "landing")
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        events = [amplitude_row(f"{day}-{i}", f"u{i % 3}", f"{day} 0{i}:00:00.000000") for i in range(6)]
        write_landing_day(landing, day, {"part-00000.jsonl": jsonl(events)})
    resources = build_resources(ChurnSettings(data_url=odd_root, landing_url=landing))

    assert materialize_ingest(resources, instance, "2025-01-01", "2025-01-03").success
    RECENT.forget("raw_events")  # as a new process, which reads the day back from storage
    RECENT.forget("install_times")
    again = materialize_ingest(resources, instance, "2025-01-03", selection=["install_times", "user_daily"])

    assert again.success
    lake = Lake(odd_root)
    users = scan_tables(lake, [lake.table_url("user_daily", "date", "2025-01-03")], {"date": pl.Date})
    assert users.select("user_id", "date").sort("user_id").collect().rows() == [(f"u{i}", D3) for i in range(3)]


@pytest.mark.parametrize("name", ["data.parquet", "model.ubj"])
def test_a_write_returns_the_version_a_look_up_then_finds(lake_url, name):
    """The version of the file a write left comes from the write itself (another writer may replace the
    file right after it), in the form a later look-up gives, and changes with each write."""
    lake = Lake(lake_url)
    url = f"{lake.partition_url('daily', 'date', '2025-01-01')}/{name}"
    first = lake.write_bytes(url, b"first")
    assert first.version == lake.checksum(url)
    second = lake.write_bytes(url, b"second")
    assert second.version == lake.checksum(url) != first.version


@pytest.mark.s3
def test_a_file_of_hundreds_of_megabytes_on_s3_has_its_version_too(s3_server, tmp_path):
    """A day's raw_events or features file is 100-150 MB at a million users a day. It is stored with one PUT,
    which answers with its ETag (s3fs uploads such a file in parts by default, and returns nothing), so the
    run keeps it for the steps that read it next instead of downloading it again."""
    lake = Lake(f"s3://lake/{tmp_path.name}")
    url = lake.table_url("raw_events", "date", "2025-01-29")
    data = bytes(range(256)) * (101 * 2**20 // 256)  # above s3fs's 100 MiB threshold for parts
    written = lake.write_bytes(url, data)
    assert written.version is not None and written.version == lake.checksum(url)
    assert "-" not in written.version  # a single PUT's ETag, not an upload in parts ("<md5>-<parts>")
    assert lake.read_bytes(url) == data


@pytest.mark.s3
def test_a_missing_bucket_or_refused_credentials_are_named(s3_server, tmp_path, instance, monkeypatch):
    """A misspelt bucket in CHURN_DATA_URL, or wrong credentials: the error names the URL and says which,
    rather than "The specified bucket does not exist", "Forbidden", or nothing stored yet."""
    missing = f"s3://no-such-bucket/{tmp_path.name}"
    resources = {"io_manager": PartitionedParquetIOManager(base_url=missing)}
    said = r"S3 bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:\d+: could not {} " + missing
    with pytest.raises(BucketNotFoundError, match=said.format("write") + "/daily_numbers/date=2025-01-01/"):
        dg.materialize([daily_numbers], resources=resources, instance=instance, tags=_range("2025-01-01", "2025-01-02"))
    for keys in (["2025-01-01"], ["2025-01-01", "2025-01-02"]):  # a look-up, a listing
        with pytest.raises(BucketNotFoundError, match=said.format("(?:look up|list)") + "/daily_numbers/"):
            Lake(missing).stored_tables("daily_numbers", "date", keys)

    lake = Lake(f"s3://lake/{tmp_path.name}")
    lake.write_table(lake.table_url("daily", "date", "2025-01-01"), pl.DataFrame({"value": [1]}))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    S3FileSystem.clear_instance_cache()  # s3fs clients keep the credentials they were made with
    try:
        with pytest.raises(StorageAccessDeniedError, match=rf"denied access: could not list {lake.root_url}/daily/"):
            Lake(lake.root_url).stored_tables("daily", "date", ["2025-01-01", "2025-01-02"])
        with pytest.raises(StorageAccessDeniedError, match="check the AWS credentials .* on bucket 'lake'"):
            Lake(lake.root_url).write_table(lake.table_url("daily", "date", "2025-01-02"), pl.DataFrame({"v": [1]}))
    finally:
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()

    # No credentials at all (a deployment without its AWS variables): said so, naming them.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(StorageAccessDeniedError, match=rf"no AWS credentials to write {lake.root_url}/daily/.*"
                           "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
            Lake(lake.root_url).write_table(lake.table_url("daily", "date", "2025-01-02"), pl.DataFrame({"v": [1]}))
    finally:
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()


@pytest.mark.s3
@pytest.mark.parametrize("endpoint_in", ["variable", "profile"])
def test_a_partition_is_read_back_with_the_credentials_of_a_profile(s3_server, tmp_path, monkeypatch, endpoint_in):
    """Credentials from a profile (``AWS_PROFILE`` and the shared credentials file, as ``aws configure`` writes
    them) instead of the variables: s3fs writes with them, and polars reads the partition back with them too
    (a daily run reads install_times[D-1] so), not from the instance metadata service. Likewise with the
    endpoint in the profile's config (``endpoint_url``) instead of AWS_ENDPOINT_URL (polars finds that one)."""
    lake = Lake(f"s3://lake/{tmp_path.name}")
    url = lake.table_url("daily", "date", "2025-01-01")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[churn]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    config = tmp_path / "config"
    config.write_text(f"[profile churn]\nendpoint_url = {os.environ['AWS_ENDPOINT_URL']}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if endpoint_in == "profile":
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config if endpoint_in == "profile" else tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "churn")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    S3FileSystem.clear_instance_cache()  # s3fs clients keep the credentials they were made with
    try:
        lake.write_table(url, pl.DataFrame({"value": [1, 2]}))
        assert scan_tables(lake, [url], {"date": pl.Date}).collect()["value"].to_list() == [1, 2]
    finally:
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()


def test_a_profile_s_session_token_reaches_polars_with_its_keys(tmp_path, monkeypatch):
    """A role's or SSO's credentials found through a profile are temporary: their session token goes to polars
    with the keys, or every partition read back is refused while s3fs, which has it, writes."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[role]\naws_access_key_id = AKIATEMP\naws_secret_access_key = secret\n"
                           "aws_session_token = the-session-token\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "role")
    options = polars_storage_options("s3://lake/churn")
    assert {k: options[k] for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")} == {
        "aws_access_key_id": "AKIATEMP", "aws_secret_access_key": "secret", "aws_session_token": "the-session-token"
    }


@pytest.mark.s3
def test_aws_endpoint_url_s3_is_the_endpoint_of_writes_and_reads_alike(s3_server, tmp_path, monkeypatch):
    """botocore, and so s3fs, which writes, takes AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL (the endpoint of
    every other service): polars, which reads a partition back, takes the same, and one without its scheme is
    refused naming that variable."""
    lake_url = f"s3://lake/{tmp_path.name}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    S3FileSystem.clear_instance_cache()
    try:
        assert polars_storage_options(lake_url)["aws_endpoint_url"] == s3_server.endpoint
        lake = Lake(lake_url)
        url = lake.table_url("daily", "date", "2025-01-01")
        lake.write_table(url, pl.DataFrame({"value": [1, 2]}))
        assert scan_tables(lake, [url], {"date": pl.Date}).collect()["value"].to_list() == [1, 2]
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint.removeprefix("http://"))
        with pytest.raises(StorageSettingsError, match=r"AWS_ENDPOINT_URL_S3='127\.0\.0\.1:\d+' has no scheme"):
            Lake(lake_url)
    finally:
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()


@pytest.mark.s3
def test_raw_events_fails_at_once_on_a_misspelt_lake_bucket(s3_server, tmp_path, instance):
    """Its first write to the lake (the day's quarantine) names the bucket, and retrying cannot create it:
    the step is not retried (it was, twice, and the alert then said 'Exceeded max_retries of 2')."""
    settings = ChurnSettings(data_url=f"s3://no-such-lake/{tmp_path.name}", landing_url=str(tmp_path / "landing"))
    day = jsonl([amplitude_row("e1", "u1", "2025-01-01 10:00:00")])
    write_landing_day(settings.landing_url, "2025-01-01", {"a.jsonl": day})
    result = materialize_ingest(
        build_resources(settings), instance, "2025-01-01", selection=dg.AssetSelection.assets("raw_events"),
        raise_on_error=False,
    )
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "S3 bucket 'no-such-lake' does not exist" in failure.step_failure_data.error.message


@pytest.mark.parametrize("cause", [
    "an incomplete day", "a day never delivered", "a corrupt file", "an endpoint without its scheme",
    pytest.param("wrong credentials", marks=pytest.mark.s3),
])
def test_raw_events_does_not_retry_what_retrying_cannot_fix(cause, tmp_path, instance, request, monkeypatch):
    """A corrupt landing file, a day not (completely) delivered, credentials S3 refuses: the step fails at once,
    saying why, instead of retrying twice (~4 s) and alerting with the same error."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    day = jsonl([amplitude_row("e1", "u1", "2025-01-01 10:00:00")])
    if cause == "an incomplete day":
        write_landing_day(settings.landing_url, "2025-01-01", {"a.jsonl": day}, complete=False)
    elif cause == "a corrupt file":
        write_landing_day(settings.landing_url, "2025-01-01", {"a.jsonl.gz": gzip.compress(day)[:-12]})
    elif cause == "wrong credentials":
        request.getfixturevalue("s3_server")
        settings = ChurnSettings(data_url=f"s3://lake/{tmp_path.name}", landing_url=settings.landing_url)
        write_landing_day(settings.landing_url, "2025-01-01", {"a.jsonl": day})
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        S3FileSystem.clear_instance_cache()
        request.addfinalizer(S3FileSystem.clear_instance_cache)
    elif cause == "an endpoint without its scheme":  # MinIO's host:port as its console shows it
        settings = ChurnSettings(data_url=settings.data_url, landing_url="s3://landing/exports")
        monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    said = {"an incomplete day": "landing day 2025-01-01 is not complete", "a day never delivered": "no landing folder",
            "a corrupt file": "cannot read landing file", "wrong credentials": "denied access",
            "an endpoint without its scheme": "AWS_ENDPOINT_URL='minio:9000' has no scheme: write it as "
            "http://minio:9000"}[cause]
    result = materialize_ingest(
        build_resources(settings), instance, "2025-01-01", selection=dg.AssetSelection.assets("raw_events"),
        raise_on_error=False,
    )
    assert [e.event_type_value for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert said in failure.step_failure_data.error.message


@pytest.mark.s3
def test_a_missing_landing_bucket_and_a_missing_day_are_told_apart(s3_server, tmp_path):
    """A misspelt landing bucket is not "no landing folder for D" (a day not delivered yet), nor the reverse:
    a day or a lake file missing from a bucket that exists is missing, not a missing bucket."""
    landing = LandingZone(url=f"s3://no-such-landing/{tmp_path.name}")
    with pytest.raises(BucketNotFoundError, match="S3 bucket 'no-such-landing' does not exist"):
        landing.data_files(dt.date(2025, 1, 1))
    with pytest.raises(FileNotFoundError, match="no landing folder for 2025-01-01"):
        LandingZone(url=f"s3://landing/{tmp_path.name}").data_files(dt.date(2025, 1, 1))
    lake = Lake(f"s3://lake/{tmp_path.name}")
    with pytest.raises(FileNotFoundError):
        lake.read_bytes(lake.table_url("raw_events", "date", "2025-01-01"))


@pytest.mark.s3
def test_an_input_of_several_partitions_is_read_from_local_copies_on_s3(s3_server, tmp_path, instance):
    """On S3 an input spanning partitions is downloaded once, concurrently, and scanned on local disk
    (a scan of S3 files costs round trips per file on every collect); the next step of the run reads the same
    copies."""
    base = f"s3://lake/{tmp_path.name}"
    resources = {"io_manager": PartitionedParquetIOManager(base_url=base)}
    # Written by another process's run: nothing of it is kept here, so each step downloads it.
    for day in (D1, D2, D3):
        rows = pl.DataFrame({"value": [day.day * 10 + i for i in range(day.day)]})
        Lake(base).write_table(Lake(base).table_url("daily_numbers", "date", day.isoformat()), rows)
    plans = {}

    def reading_three_days(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name, partitions_def=days, ins={"daily_numbers": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))})
        def read(daily_numbers: pl.LazyFrame) -> pl.DataFrame:
            plans[name] = daily_numbers.explain()
            odd = pl.col("value") % 2 == 1
            both = pl.concat([daily_numbers.filter(odd).collect(), daily_numbers.filter(~odd).collect()])
            return both.select(pl.col("date").alias("day"), "value").sort("value")

        return read

    first, second = reading_three_days("first"), reading_three_days("second")
    result = dg.materialize([daily_numbers, first, second], resources=resources, instance=instance,
                            partition_key="2025-01-03", selection=[first, second])

    assert result.success
    assert all("s3://" not in plan and "churn-s3-copies-" in plan for plan in plans.values())
    expected = [(D1, 10), (D2, 20), (D2, 21), (D3, 30), (D3, 31), (D3, 32)]
    for name in ("first", "second"):  # each day's rows, its date from its copy's path
        written = scan_tables(Lake(base), [f"{base}/{name}/date=2025-01-03/data.parquet"], {"date": pl.Date})
        assert written.collect().select("day", "value").rows() == expected
    # (the links a step's scan reads its inputs through are not copies)
    links = [c for c in Path(LOCAL_COPIES.root).rglob("links-*")]
    copies = [c for c in Path(LOCAL_COPIES.root).rglob("*.parquet") if not any(c.is_relative_to(f) for f in links)]
    downloaded = [c for c in copies if "written" not in c.parts]
    assert len(downloaded) == 3, "the second step downloaded the first step's inputs again"
    assert all(f"{tmp_path.name}/daily_numbers/date=2025-01-0" in str(c) for c in downloaded)


@pytest.mark.s3
def test_a_range_written_on_s3_is_read_back_from_its_copies_while_the_store_holds_them(s3_server, tmp_path, instance):
    """The partitions of a range run on S3 are also kept locally, for the steps of the run that read them next (its
    checks, the next assets); a partition another writer has replaced since is downloaded, and the copies of a
    table no step of the run has read or written in the last three tables used are removed. Another run uses none."""
    base = f"s3://lake/{tmp_path.name}"
    lake = Lake(base)
    resources = {"io_manager": PartitionedParquetIOManager(base_url=base)}
    keys = ["2025-01-01", "2025-01-02", "2025-01-03"]
    urls = [lake.table_url("daily_numbers", "date", key) for key in keys]

    run = dg.materialize([daily_numbers], resources=resources, instance=instance, tags=_range(keys[0], keys[-1])).run_id
    kept = LOCAL_COPIES.of(lake, urls, owner=f"{run}/reader", etags=lake.etags(urls))
    assert all(Path(path).parts[-6:-4] == ("written", "lake") for path in kept), kept
    assert [pl.read_parquet(path).get_column("value").to_list() for path in kept] == [[10], [20, 21], [30, 31, 32]]

    lake.write_table(urls[1], pl.DataFrame({"value": [99]}))  # another run rewrites one day
    again = LOCAL_COPIES.of(lake, urls, owner=f"{run}/reader", etags=lake.etags(urls))
    assert again[0] == kept[0] and again[2] == kept[2] and "written" not in Path(again[1]).parts
    assert pl.read_parquet(again[1]).get_column("value").to_list() == [99]
    elsewhere = LOCAL_COPIES.of(lake, urls, owner="another run/reader", etags=lake.etags(urls))
    assert not set(elsewhere) & set(again), "a copy was used past its run"

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def daily_copy(daily_total: pl.DataFrame) -> pl.DataFrame:
        return daily_total

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def daily_last(daily_copy: pl.DataFrame) -> pl.DataFrame:
        return daily_copy

    chain = [daily_numbers, daily_total, daily_copy, daily_last]
    run = dg.materialize(chain, resources=resources, instance=instance, tags=_range(keys[0], keys[-1]),
                         selection=chain[1:]).run_id  # the fourth table used since daily_numbers: daily_last
    stored = scan_tables(lake, lake.stored_tables("daily_total", "date", keys)[0], {"date": pl.Date})
    assert stored.select("date", "value").collect().rows() == [(D1, 10), (D2, 99), (D3, 93)]
    fresh = LOCAL_COPIES.of(lake, urls, owner=f"{run}/another reader", etags=lake.etags(urls))
    assert not any("written" in Path(path).parts for path in fresh)
    left = {p.parts[-3] for p in Path(LOCAL_COPIES.root, "written").rglob("*.parquet") if tmp_path.name in p.parts}
    assert left == {"daily_total", "daily_copy", "daily_last"}, "daily_numbers' copies went once another step began"


@pytest.mark.s3
def test_the_steps_of_a_run_read_the_inputs_a_step_before_downloaded_while_the_store_holds_them(
    s3_server, tmp_path, instance
):
    """features and labels read the same user_daily days in a daily run, weekly scoring's steps the same
    features[D]: each step downloaded them again (~15 of a daily refresh's 46 GETs), as a step's downloads went
    when the next step began. They are kept for the run's next steps, and used while S3 holds the same object:
    a day another writer replaced in between is downloaded; another run downloads them all."""
    base = f"s3://lake/{tmp_path.name}"
    lake = Lake(base)
    resources = {"io_manager": PartitionedParquetIOManager(base_url=base)}
    urls = [lake.table_url("daily_numbers", "date", day.isoformat()) for day in (D1, D2, D3)]
    for day, url in zip((D1, D2, D3), urls, strict=True):  # written by another process's run: downloaded
        lake.write_table(url, pl.DataFrame({"value": [day.day * 10 + i for i in range(day.day)]}))
    window = {"daily_numbers": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))}

    @dg.asset(partitions_def=days, ins=window)
    def first(daily_numbers: pl.DataFrame) -> pl.DataFrame:
        return daily_numbers.select(pl.col("value").sum())

    @dg.asset(partitions_def=days, deps=[first])
    def rewrite() -> None:
        lake.write_table(urls[1], pl.DataFrame({"value": [99]}))  # another writer's version of one day

    @dg.asset(partitions_def=days, ins=window, deps=[rewrite])
    def second(daily_numbers: pl.DataFrame) -> pl.DataFrame:
        return daily_numbers.select(pl.col("value").sum())

    lake.fs.connect()
    gets: list[str] = []
    lake.fs.s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    key = urls[0].removeprefix("s3://lake/").rsplit("/", 2)[0]
    everything = [daily_numbers, first, rewrite, second]

    assert dg.materialize(everything, resources=resources, instance=instance, partition_key="2025-01-03",
                          selection=everything[1:]).success
    downloaded = [name for name in gets if name.startswith(key)]
    assert sorted(downloaded) == sorted(url.removeprefix("s3://lake/") for url in [*urls, urls[1]]), downloaded
    sums = {name: pl.read_parquet(lake.table_url(name, "date", "2025-01-03")).item() for name in ("first", "second")}
    assert sums == {"first": 10 + 20 + 21 + 30 + 31 + 32, "second": 10 + 99 + 30 + 31 + 32}

    gets.clear()
    assert dg.materialize(everything, resources=resources, instance=instance, partition_key="2025-01-03",
                          selection=[second]).success
    assert len([name for name in gets if name.startswith(key)]) == 3, "another run used the copies of one before"


@pytest.mark.s3
def test_an_s3_window_across_a_year_end_lists_the_window_not_the_history(s3_server, tmp_path):
    """A day's input window is found by one listing of S3. Listed by the URLs' common prefix, a window across a
    year's end (date=2025-12-20..date=2026-01-05: prefix date=202) listed every partition ever stored, on every
    refresh of such a day: O(history) per day. It lists the window's objects, and finds them all."""
    lake = Lake(f"s3://lake/{tmp_path.name}")
    history = [dt.date(2025, 11, 1) + dt.timedelta(days=n) for n in range(120)]  # 2025-11-01..2026-02-28
    stored = [day for day in history if day != dt.date(2025, 12, 25)]
    lake.fs.pipe({lake.table_url("user_daily", "date", day.isoformat()): b"x" for day in stored})
    window = [dt.date(2025, 12, 20) + dt.timedelta(days=n) for n in range(17)]
    keys = [day.isoformat() for day in window]
    listed: list[str] = []
    lake.fs.connect()
    lake.fs.s3.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda parsed, **_: listed.extend(c["Key"] for c in parsed.get("Contents", []))
    )

    found, missing = lake.stored_table_etags("user_daily", "date", keys)

    assert sorted(found) == [lake.table_url("user_daily", "date", key) for key in keys if key != "2025-12-25"]
    assert all(found.values()) and missing == ["2025-12-25"]
    assert len(listed) <= 2 * len(keys) + 8, f"listed {len(listed)} objects for a window of {len(keys)} days"


@pytest.mark.s3
def test_s3_listing_pages_go_on_past_a_full_page_from_after_the_key_given(s3_server, tmp_path):
    """The one pager of S3 listings (the lake's input windows, the landing days): every key after ``start_after``, in
    order, page after page, each page saying whether more follow."""
    lake = Lake(f"s3://lake/{tmp_path.name}")
    keys = [f"{tmp_path.name}/t/k{n:02d}" for n in range(10)]
    lake.fs.pipe({f"lake/{key}": b"x" for key in keys})

    pages = list(s3_listing_pages(lake.fs, "lake", f"{tmp_path.name}/t/", start_after=keys[2], page_size=3))

    assert [[entry["Key"] for entry in entries] for entries, _ in pages] == [keys[3:6], keys[6:9], keys[9:]]
    assert [more for _, more in pages] == [True, True, False]


@pytest.mark.s3
def test_a_full_temporary_directory_is_named_as_what_refused_an_s3_input(s3_server, tmp_path):
    """A run on S3 copies its inputs to TMPDIR: when that disk takes no more (here: over the process's file size
    limit, as a full disk would), the error says it was the temporary directory, not the bucket."""
    lake = Lake(f"s3://lake/{tmp_path.name}")
    urls = [lake.table_url("big", "date", f"2025-01-0{day}") for day in (1, 2)]
    for url in urls:
        lake.write_bytes(url, os.urandom(2**20))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**16, limits[1]))
    try:
        with pytest.raises(OSError, match=f"could not copy {re.escape(urls[0])} and 1 more to the temporary directory"):
            LOCAL_COPIES.of(lake, urls, owner="full disk", etags=lake.etags(urls))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def test_copies_left_by_a_killed_process_are_removed_and_live_ones_kept(tmp_path):
    """A run killed mid-step cannot remove its S3 copies: the next process removes them once their process
    is gone and they are an hour old. A live process's copies, or fresh ones, stay."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    hour_ago = time.time() - 3700
    folders = {
        "killed": tmp_path / f"churn-s3-copies-{dead_pid}-abc",
        "killed just now": tmp_path / f"churn-s3-copies-{dead_pid}-def",
        "alive": tmp_path / f"churn-s3-copies-{os.getpid()}-ghi",
        "not ours": tmp_path / "something-else",
    }
    for name, folder in folders.items():
        (folder / "lake" / "t" / "date=2025-01-01").mkdir(parents=True)
        (folder / "lake" / "t" / "date=2025-01-01" / "data.parquet").write_bytes(b"x")
        if name != "killed just now":
            os.utime(folder, (hour_ago, hour_ago))

    removed = remove_stale_copies(str(tmp_path))

    assert removed == [str(folders["killed"])]
    assert [name for name, folder in folders.items() if folder.exists()] == ["killed just now", "alive", "not ours"]


def _loads(asset: str, seen: dict) -> dg.AssetsDefinition:
    """A daily asset reading ``asset`` lazily, which notes in ``seen`` what it got: the frame, its schema and
    whether polars reads it from a Parquet file or from memory."""

    @dg.asset(name=f"{asset}_read", partitions_def=days, ins={"upstream": dg.AssetIn(asset)})
    def read(upstream: pl.LazyFrame) -> pl.DataFrame:
        seen.update(frame=upstream.collect(), schema=upstream.collect_schema(),
                    from_file="parquet" in upstream.explain().lower())
        return pl.DataFrame({"rows": [seen["frame"].height]})

    return read


def test_the_partition_a_run_just_wrote_is_read_from_memory_while_its_file_is_unchanged(tmp_path, instance):
    seen: dict = {}
    reader = _loads("daily_numbers", seen)
    result = dg.materialize([daily_numbers, reader], resources=_lake(tmp_path), instance=instance,
                            partition_key="2025-01-02")
    assert result.success
    assert not seen["from_file"]
    handed = seen["frame"]
    # The same frame, columns and types as a scan of the stored file gives (the partition column last).
    stored = scan_tables(
        Lake(str(tmp_path / "lake")),
        [str(tmp_path / "lake" / "daily_numbers" / "date=2025-01-02" / "data.parquet")],
        {"date": pl.Date()},
    )
    assert seen["schema"] == stored.collect_schema() == {"value": pl.Int64(), "date": pl.Date()}
    assert handed.equals(stored.collect())

    # Another writer replaces the file: the next run reads the file, not the frame kept in memory.
    Lake(str(tmp_path / "lake")).write_table(
        str(tmp_path / "lake" / "daily_numbers" / "date=2025-01-02" / "data.parquet"), pl.DataFrame({"value": [7]})
    )
    assert dg.materialize([daily_numbers, reader], resources=_lake(tmp_path), instance=instance,
                          partition_key="2025-01-02", selection=[reader]).success
    assert seen["from_file"]
    assert seen["frame"].rows() == [(7, D2)]


@pytest.mark.s3
def test_the_partition_a_run_just_wrote_on_s3_is_handed_on_after_one_look_up(s3_server, tmp_path, instance):
    """A step reading the one partition the step before wrote looked the object up twice: a HEAD to see that it is
    stored, another for its ETag, to see that it is the one kept in memory. One HEAD gives both: a daily refresh
    made ten such HEADs too many, each a billed round trip. Another writer's file is still read from S3."""
    base = f"s3://lake/{tmp_path.name}"
    resources = {"io_manager": PartitionedParquetIOManager(base_url=base)}
    seen: dict = {}
    reader = _loads("daily_numbers", seen)
    lake = Lake(base)
    with s3_calls(lake.fs) as calls:
        def reads_of(result: dg.ExecuteInProcessResult) -> list[str]:
            """The S3 calls the reader's step made before it wrote its output (its input's)."""
            assert result.success
            return calls[calls.index("PutObject") + 1 : calls.index("PutObject", calls.index("PutObject") + 1)]

        assert reads_of(dg.materialize([daily_numbers, reader], resources=resources, instance=instance,
                                       partition_key="2025-01-02")) == ["HeadObject"]
        assert not seen["from_file"] and seen["frame"].rows() == [(20, D2), (21, D2)]

        lake.write_table(lake.table_url("daily_numbers", "date", "2025-01-02"), pl.DataFrame({"value": [7]}))
        calls.clear()
        result = dg.materialize([daily_numbers, reader], resources=resources, instance=instance,
                                partition_key="2025-01-02", selection=[reader])
        assert result.success and calls[:2] == ["HeadObject", "GetObject"], calls
        assert seen["frame"].rows() == [(7, D2)]


def test_a_range_run_keeps_no_partition_in_memory(tmp_path, instance):
    seen: dict = {}
    reader = _loads("daily_numbers", seen)
    dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance, partition_key="2025-01-03")
    # Writing the asset again over a range forgets the partition kept from the single-partition run.
    dg.materialize([daily_numbers], resources=_lake(tmp_path), instance=instance,
                   tags=_range("2025-01-01", "2025-01-03"))
    assert dg.materialize([daily_numbers, reader], resources=_lake(tmp_path), instance=instance,
                          partition_key="2025-01-03", selection=[reader]).success
    assert seen["from_file"]
    assert seen["frame"].get_column("value").to_list() == [30, 31, 32]


def test_memory_holds_the_partitions_of_the_last_two_assets_written(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    urls = {}
    for asset in ("a", "b", "c"):
        urls[asset] = lake.table_url(asset, "date", "2025-01-01")
        frame = pl.DataFrame({"x": [1]})
        lake.write_table(urls[asset], frame)
        RECENT.keep(asset, urls[asset], lake.checksum(urls[asset]), frame)
    assert RECENT.get("a", urls["a"], lake) is None
    assert RECENT.get("b", urls["b"], lake) is not None and RECENT.get("c", urls["c"], lake) is not None
    assert RECENT.get("c", urls["b"], lake) is None  # another partition of the asset is not the kept one
    RECENT.forget("b")
    RECENT.forget("c")


def test_an_asset_can_size_its_row_groups(tmp_path, instance):
    @dg.asset(partitions_def=days, metadata={ROW_GROUP_ROWS: 4})
    def sorted_ids(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"user_id": [f"u{i:02d}" for i in range(10)]})

    assert dg.materialize([sorted_ids], resources=_lake(tmp_path), instance=instance,
                          partition_key="2025-01-01").success
    stored = pyarrow.parquet.ParquetFile(tmp_path / "lake" / "sorted_ids" / "date=2025-01-01" / "data.parquet")
    groups = [stored.metadata.row_group(i) for i in range(stored.metadata.num_row_groups)]
    assert [g.num_rows for g in groups] == [4, 4, 2]
    # Each group's statistics bound its ids, so a reader of a range of ids skips the other groups.
    assert [(g.column(0).statistics.min, g.column(0).statistics.max) for g in groups] == [
        ("u00", "u03"), ("u04", "u07"), ("u08", "u09")
    ]


def test_unpartitioned_asset(tmp_path, instance):
    @dg.asset
    def countries() -> pl.DataFrame:
        return pl.DataFrame({"country": ["DE", "FR"], "users": [3, 4]})

    @dg.asset
    def country_count(countries: pl.LazyFrame) -> pd.DataFrame:
        return countries.select(pl.len().alias("n")).collect().to_pandas()

    result = dg.materialize([countries, country_count], resources=_lake(tmp_path), instance=instance)
    assert result.success
    assert pl.read_parquet(tmp_path / "lake" / "countries" / "data.parquet").rows() == [("DE", 3), ("FR", 4)]
    assert pl.read_parquet(tmp_path / "lake" / "country_count" / "data.parquet").rows() == [(2,)]
    assert _metadata(result, "countries")[None]["dagster/row_count"] == 2


def test_monthly_partitions(tmp_path, instance):
    @dg.asset(partitions_def=months, backfill_policy=dg.BackfillPolicy.single_run())
    def per_month(context: dg.AssetExecutionContext) -> pl.DataFrame:
        keys = context.partition_keys
        return pl.DataFrame({"month": keys, "n": list(range(len(keys)))})

    @dg.asset(partitions_def=months)
    def month_echo(per_month: pl.DataFrame) -> pl.DataFrame:
        return per_month

    dg.materialize([per_month], resources=_lake(tmp_path), instance=instance, tags=_range("2025-01", "2025-03"))
    assert _table(tmp_path, "per_month", "2025-02", column="month").rows() == [(1,)]
    dg.materialize([per_month, month_echo], resources=_lake(tmp_path), instance=instance, partition_key="2025-03",
                   selection=[month_echo])
    assert _table(tmp_path, "month_echo", "2025-03", column="month").rows() == [(2,)]


# -- atomic writes, proven by killing the writer -------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import polars as pl
    from churn_assets.resources.lake import LOCAL_COPIES, Lake, remove_stale_copies

    rng = np.random.default_rng(0)
    # Incompressible values, so the file is large (~50 MB) and its write takes a while.
    frame = pl.DataFrame({f"c{i}": rng.random(1_500_000) for i in range(4)})
    print("ready", flush=True)
    sys.stdin.readline()
    Lake(sys.argv[1]).write_table(sys.argv[2], frame)
    print("done", flush=True)
    """
)
KILL_DELAYS = (0.0, 0.001, 0.005, 0.02)


def test_killed_writer_leaves_the_previous_partition_readable(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    url = lake.table_url("big", "date", "2025-01-01")
    folder = Path(url).parent
    previous = pl.DataFrame({"version": [1, 2, 3]})

    # Start every writer at once (their start-up is the slow part), then release and kill them one by one.
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, lake.root_url, url],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in KILL_DELAYS
    ]
    caught_mid_write = 0
    try:
        for writer, delay in zip(writers, KILL_DELAYS, strict=True):
            lake.write_table(url, previous)
            assert writer.stdout.readline().strip() == "ready"
            earlier = {p.name for p in folder.iterdir()}
            writer.stdin.write("go\n")
            writer.stdin.flush()
            deadline = time.monotonic() + 30
            # Wait for the writer's temporary file to appear, then kill it a little later.
            while not any(
                p.name.endswith(".tmp") and p.name not in earlier and p.stat().st_size > 0 for p in folder.iterdir()
            ):
                assert writer.poll() is None, "the writer finished before it was killed"
                assert time.monotonic() < deadline
                time.sleep(0.0002)
            time.sleep(delay)
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
            assert writer.returncode == -signal.SIGKILL

            temporaries = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
            stored = pl.read_parquet(url)
            if any(p.name not in earlier for p in temporaries):
                # Killed mid-write: the previous version is what a reader finds, whole.
                caught_mid_write += 1
                assert stored.equals(previous)
            else:
                # Killed after the rename: the new version, whole.
                assert stored.shape == (1_500_000, 4)
            # No stray file a reader would pick up: only hidden temporaries beside data.parquet.
            assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == ["data.parquet"]
            assert all(p.name.startswith(".") and not p.name.endswith(".parquet") for p in temporaries)
            assert pl.scan_parquet(str(tmp_path / "lake" / "big" / "**" / "*.parquet")).collect().equals(stored)
            # A hive reader of the whole asset folder (as DuckDB, Spark or Athena would read it) agrees.
            hive = pyarrow.dataset.dataset(str(tmp_path / "lake" / "big"), format="parquet", partitioning="hive")
            assert hive.count_rows() == stored.height
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()

    assert caught_mid_write >= 2, "too few kills landed during a write for the test to prove anything"

    # A later successful write replaces the partition whole.
    lake.write_table(url, pl.DataFrame({"version": [4]}))
    assert pl.read_parquet(url).rows() == [(4,)]


def test_a_write_that_fails_leaves_the_previous_file_whole_and_no_temporary(tmp_path):
    """A write the disk refuses part-way (here: over the process's file size limit, as a full disk or quota
    would): the error surfaces, readers still find the previous file, and its partial copy is not left behind."""
    lake = Lake(str(tmp_path / "lake"))
    url = lake.table_url("big", "date", "2025-01-01")
    lake.write_bytes(url, b"previous")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, limits[1]))
    try:
        # The error says which file: a full disk says "No space left on device" and nothing else.
        with pytest.raises(OSError, match=f"could not write {re.escape(url)}: File too large"):
            lake.write_bytes(url, b"x" * 2**21)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert lake.read_bytes(url) == b"previous"
    assert sorted(p.name for p in Path(url).parent.iterdir()) == ["data.parquet"]


def test_a_write_removes_a_killed_writers_old_temporary_but_not_a_concurrent_writers(tmp_path):
    """A temporary over an hour old was left by a killed writer: the next write of the folder removes it. A fresh
    one may be another run's write of the same partition under way: removed, its rename would fail."""
    lake = Lake(str(tmp_path / "lake"))
    url = lake.table_url("big", "date", "2025-01-01")
    folder = Path(url).parent
    folder.mkdir(parents=True)
    stale, fresh = folder / ".data.parquet.killed.tmp", folder / ".data.parquet.running.tmp"
    stale.write_bytes(b"half a file")
    fresh.write_bytes(b"half of another")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    lake.write_bytes(url, b"whole")

    assert sorted(p.name for p in folder.iterdir()) == [fresh.name, "data.parquet"]
    assert lake.read_bytes(url) == b"whole"


def test_storage_urls_follow_the_contract(tmp_path, monkeypatch):
    """CHURN_DATA_URL / CHURN_LANDING_URL: local paths made absolute when read, s3:// kept, others refused."""
    monkeypatch.chdir(tmp_path)
    defaults = ChurnSettings.from_env({})
    assert defaults.data_url == str(tmp_path / "data" / "lake")
    assert defaults.landing_url == str(tmp_path / "data" / "landing")
    assert ChurnSettings.from_env({"CHURN_DATA_URL": "s3://bucket/prefix/"}).data_url == "s3://bucket/prefix"
    assert ChurnSettings.from_env({"CHURN_LANDING_URL": "rel/landing"}).landing_url == str(tmp_path / "rel" / "landing")
    with pytest.raises(ValueError, match="CHURN_DATA_URL: unsupported storage URL"):
        ChurnSettings.from_env({"CHURN_DATA_URL": "gs://bucket/lake"})
    # An env file's stray spaces are dropped, not kept in every key.
    assert ChurnSettings.from_env({"CHURN_DATA_URL": "s3://bucket/lake \n"}).data_url == "s3://bucket/lake"
    for no_bucket in ("s3://", "s3:///lake"):
        with pytest.raises(ValueError, match=f"CHURN_LANDING_URL: storage URL '{no_bucket}' names no bucket"):
            ChurnSettings.from_env({"CHURN_LANDING_URL": no_bucket})
    # No partition asked for (a label day whose snapshot is before the first day): nothing, and no look-up.
    assert Lake(str(tmp_path / "lake")).stored_tables("features", "date", []) == ([], [])
    lake = Lake("s3://bucket/prefix")
    assert lake.table_url("raw_events", "date", "2025-01-02") == "s3://bucket/prefix/raw_events/date=2025-01-02/data.parquet"
    assert lake.partition_url("model", "month", "2025-03") == "s3://bucket/prefix/model/month=2025-03"


@pytest.mark.s3
def test_a_bucket_the_credentials_may_not_look_at_is_not_reported_missing(s3_server, tmp_path, monkeypatch):
    """S3 answers HeadBucket with 403 for credentials it refuses: the bucket exists, so require_bucket says
    nothing, and the listing that needed it reports the access denied, not a misspelt bucket."""
    from churn_assets.resources.filesystems import require_bucket

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    S3FileSystem.clear_instance_cache()
    try:
        require_bucket(f"s3://landing/{tmp_path.name}", "list")  # no BucketNotFoundError
        with pytest.raises(StorageAccessDeniedError, match="denied access"):
            LandingZone(url=f"s3://landing/{tmp_path.name}").data_files(dt.date(2025, 1, 1))
    finally:
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()


def test_polars_reads_with_the_region_and_the_plain_http_the_aws_variables_give(monkeypatch):
    """polars reads partitions back with options of its own: an http:// endpoint (MinIO in a cluster) needs
    ``aws_allow_http``, which an https:// one must not get, and the region is AWS_REGION's, else
    AWS_DEFAULT_REGION's (a bucket read in another region than its own is refused)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert polars_storage_options("/a/local/lake") is None
    assert polars_storage_options("s3://lake/churn")["aws_region"] == "us-east-1"
    assert "aws_endpoint_url" not in polars_storage_options("s3://lake/churn")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert polars_storage_options("s3://lake/churn")["aws_region"] == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    options = polars_storage_options("s3://lake/churn")
    assert (options["aws_region"], options["aws_endpoint_url"], options["aws_allow_http"]) == (
        "eu-west-3", "http://minio:9000", "true"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
    assert "aws_allow_http" not in polars_storage_options("s3://lake/churn")


def test_a_landing_day_lists_its_files_in_name_order_and_versions_its_marker(landing_url):
    """raw_events reads a day's files in name order (the first of two copies of an event is kept), whatever
    order the folder lists them in; the day's version (what the landing sensor compares) is the marker's time
    and, on S3, its ETag, which tells apart two deliveries within one second (S3's times have no finer unit)."""
    names = [f"part-{i}.jsonl" for i in (7, 12, 3, 25, 0, 18, 9, 1, 30, 14, 22, 5)]
    folder = write_landing_day(landing_url, "2025-01-01", dict.fromkeys(names, b""), complete=False)
    fs = filesystem(landing_url)
    fs.pipe_file(join(folder, "_SUCCESS"), b"export 1\n")
    landing = LandingZone(url=landing_url)
    day = landing.data_files(dt.date(2025, 1, 1))
    assert day.files == [join(folder, name) for name in sorted(names)]
    assert landing.days() == ({"2025-01-01": day.version}, [])
    if landing_url.startswith("s3://"):
        etag = fs.info(join(folder, "_SUCCESS"))["ETag"].strip('"')
        assert day.version.endswith(f"|{etag}")
        fs.pipe_file(join(folder, "_SUCCESS"), b"export 2\n")
        assert landing.data_files(dt.date(2025, 1, 1)).version != day.version
