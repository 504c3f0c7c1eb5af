"""Erasing a user (``churn-assets erase``): simulated landing data through raw_events → labels (with a predictions
and a training_set partition written as their assets would), on the local disk and on a real S3 server. The user
is gone from every table, the other users' rows are unchanged row for row, the instance records each rewritten
partition with its new content hash as data version, a re-run of old days from the landing files keeps the user
out (the same bytes as the erasure left), and bad input is refused before anything is written."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from dagster._core.storage.runs.schema import RunsTable
from s3fs import S3FileSystem

from churn_assets.assets.ml.predictions import highest_risk
from churn_assets.config import ChurnSettings
from churn_assets.definitions import all_assets
from churn_assets.erasure.erase import (
    NOT_ASSETS,
    USER_TABLES,
    ErasureRefused,
    erase,
    highest_risk_cell,
    read_user_ids_file,
)
from churn_assets.resources import build_resources
from churn_assets.resources.erased_users import read_erased_users
from churn_assets.resources.lake import Lake, parquet_bytes
from churn_assets.resources.parquet_io_manager import preview_markdown
from churn_assets.simulate import simulate
from churn_assets_tests.dagster_processes import instance_home
from churn_assets_tests.helpers import data_versions, materialize_selected
from churn_assets_tests.landing_helpers import partition_metadata, tree_digest
from churn_assets_tests.postgres_server import SUPERUSER, PostgresServer, postgres_available
from churn_assets_tests.s3_proxy import HoldingProxy

START = dt.date(2025, 1, 1)
DAYS = 18
DAY_KEYS = [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
CHAIN = ["raw_events", "install_times", "user_daily", "features", "labels"]


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> str:
    """150 users over 18 days, with dirty rows (quarantined, some with a user id)."""
    url = str(tmp_path_factory.mktemp("erasure") / "landing")
    simulate(url, users=150, days=DAYS, start=START, seed=7, dirty=True, progress=False)
    return url


def _build_lake(settings: ChurnSettings, instance: dg.DagsterInstance) -> None:
    """The chain over every day in one run; then predictions of the last day and training_set of 2025-01 as their
    assets would store them (a user a row; predictions ranked 1..n, highest risk first)."""
    result = materialize_selected(CHAIN, build_resources(settings), instance, DAY_KEYS[0], DAY_KEYS[-1])
    assert result.success
    assert not any("erased_users" in meta for meta in partition_metadata(result, "raw_events").values())
    lake = Lake(settings.data_url)
    features = _read(lake, lake.table_url("features", "date", DAY_KEYS[-1]))
    predictions = (
        features.select("user_id", churn_probability=(pl.col("n_events_28d").rank("ordinal") / features.height))
        .sort(["churn_probability", "user_id"], descending=[True, False])
        .with_columns(pl.int_range(1, features.height + 1, dtype=pl.UInt32).alias("rank"))
    )
    lake.write_table(lake.table_url("predictions", "date", DAY_KEYS[-1]), predictions)
    labels = pl.concat([_read(lake, lake.table_url("labels", "date", day)) for day in DAY_KEYS[14:]])
    lake.write_table(lake.table_url("training_set", "month", "2025-01"), labels)


def _read(lake: Lake, url: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(lake.read_bytes(url)))


def _tables(lake: Lake) -> dict[tuple[str, str], pl.DataFrame]:
    """Every stored partition table that holds users: (table, key) -> its rows."""
    found = {}
    for table, column in USER_TABLES.items():
        for path in lake.fs.glob(f"{lake.root_url}/{table}/{column}=*/data.parquet"):
            url = lake.fs.unstrip_protocol(path) if lake.root_url.startswith("s3://") else path
            found[table, url.rsplit("/", 2)[1].split("=")[1]] = _read(lake, url)
    return found


def _days_holding(tables: dict[tuple[str, str], pl.DataFrame], table: str, user_id: str) -> list[str]:
    """The partition keys of ``table`` (among ``tables``, as ``_tables`` reads them) that hold ``user_id``, in order."""
    return sorted(key for (name, key), frame in tables.items()
                  if name == table and user_id in frame.get_column("user_id").to_list())


def _victim(tables: dict[tuple[str, str], pl.DataFrame]) -> str:
    """The user with events on the most days among those with a quarantined row, in predictions and training_set."""
    quarantined = pl.concat([f for (t, _), f in tables.items() if t == "raw_events_quarantine"]).get_column("user_id")
    candidates = set(quarantined.drop_nulls().to_list())
    for table in ("predictions", "training_set"):
        candidates &= set(next(f for (t, _), f in tables.items() if t == table).get_column("user_id").to_list())
    days = (
        pl.concat([f.select("user_id") for (t, _), f in tables.items() if t == "raw_events"]).group_by("user_id").len()
    )
    return days.filter(pl.col("user_id").is_in(sorted(candidates))).sort(["len", "user_id"]).get_column("user_id")[-1]


@pytest.mark.parametrize("storage", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_erasing_a_user_takes_them_out_of_every_table_and_keeps_them_out(landing, tmp_path, request, storage):
    if storage == "s3":
        request.getfixturevalue("s3_server")
    lake_url = f"s3://lake/{tmp_path.name}" if storage == "s3" else str(tmp_path / "lake")
    settings = ChurnSettings(data_url=lake_url, landing_url=landing)
    instance = dg.DagsterInstance.ephemeral()
    _build_lake(settings, instance)
    lake = Lake(lake_url)
    before = _tables(lake)
    victim = _victim(before)
    holding = {key for key, frame in before.items() if victim in frame.get_column("user_id").to_list()}
    assert {table for table, _ in holding} == set(USER_TABLES)  # the user is in every kind of table

    report = erase(lake, [victim], instance, all_assets, now=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))

    after = _tables(lake)
    assert after.keys() == before.keys()
    for key, frame in before.items():
        kept = frame.filter(pl.col("user_id").is_null() | (pl.col("user_id") != victim))
        if key[0] == "predictions":  # ranked again without gaps, in the same order
            assert after[key].get_column("rank").to_list() == list(range(1, kept.height + 1))
            kept, after[key] = kept.drop("rank"), after[key].drop("rank")
        assert after[key].equals(kept), f"{key}: other rows changed"
    for table in USER_TABLES:
        changed = sorted(key for t, key in holding if t == table)
        assert report.partitions[table] == changed
        assert report.rows[table] == sum(before[table, key].get_column("user_id").eq(victim).sum() for key in changed)
    assert report.model_months == ["2025-01"]
    listed = read_erased_users(lake)
    assert listed.rows() == [(victim, dt.datetime(2026, 1, 2, tzinfo=dt.UTC))]

    # The instance records each rewritten partition of an asset, its data version the new file's content hash, with
    # the run's metadata kept (the landing sensor compares raw_events' landing_version).
    day = max(key for table, key in holding if table == "raw_events")
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_events"), asset_partitions=[day]), limit=1
    ).records[0].asset_materialization
    assert record.metadata["erased_rows"].value == before["raw_events", day].get_column("user_id").eq(victim).sum() > 0
    assert "landing_version" in record.metadata
    assert record.metadata["dagster/row_count"].value == after["raw_events", day].height
    erased_versions = {table: data_versions(instance, table, DAY_KEYS) for table in CHAIN}
    assert len(set(erased_versions["raw_events"].values())) == 2  # the erasure's, and the first run's of the others
    # The quarantine is no asset: nothing is recorded of it (the UI would list a raw_events_quarantine asset).
    assert all(instance.get_latest_materialization_event(dg.AssetKey(table)) is None for table in NOT_ASSETS)

    # A re-run of old days from the landing files, which still hold the user, keeps them out: the same bytes, under
    # the data versions the erasure recorded, so nothing downstream shows Unsynced because of it.
    rerun = DAY_KEYS[:3]
    result = materialize_selected(CHAIN, build_resources(settings), instance, rerun[0], rerun[-1])
    assert result.success
    assert {table: data_versions(instance, table, DAY_KEYS) for table in CHAIN} == erased_versions
    for table in ("raw_events", "raw_events_quarantine", "install_times", "user_daily", "features", "labels"):
        for key in rerun:
            assert _read(lake, lake.table_url(table, "date", key)).equals(after[table, key]), (table, key)
    metadata = partition_metadata(result, "raw_events")
    assert all(meta["erased_users"] == 1 for meta in metadata.values())
    assert sum(meta["erased_rows"] for meta in metadata.values()) == sum(
        before[table, key].get_column("user_id").eq(victim).sum()
        for table in ("raw_events", "raw_events_quarantine") for key in rerun
    ) > 0

    # Erasing again: nothing to erase, nothing written.
    digest = _digest(lake)
    again = erase(lake, [victim], instance, all_assets)
    assert not any(again.rows.values()) and again.lines()[0].startswith("nothing to erase")
    assert _digest(lake) == digest


def _digest(lake: Lake) -> dict[str, str]:
    return {
        path: str(info.get("ETag") or info.get("mtime"))
        for path, info in lake.fs.find(lake.root_url, detail=True).items()
    }


@pytest.fixture
def erased_lake(landing, tmp_path) -> Iterator[tuple[Lake, dg.DagsterInstance, str]]:
    """A local lake of the chain, its instance (DAGSTER_HOME ``tmp_path/home``), and a user it holds."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        _build_lake(settings, instance)
        lake = Lake(settings.data_url)
        yield lake, instance, _victim(_tables(lake))


def test_an_unknown_user_id_is_refused_and_nothing_is_written(erased_lake):
    lake, instance, victim = erased_lake
    before = tree_digest(lake.root_url)
    with pytest.raises(ErasureRefused, match="no stored partition holds user id 'u999999'.*Nothing was changed"):
        erase(lake, [victim, "u999999"], instance, all_assets)
    assert tree_digest(lake.root_url) == before  # not even the list
    report = erase(lake, ["u999999"], instance, all_assets, allow_unseen=True)  # not ingested yet: listed
    assert report.lines()[0].startswith("nothing to erase") and report.unseen == ["u999999"]
    assert read_erased_users(lake).get_column("user_id").to_list() == ["u999999"]


def test_an_empty_user_id_is_refused_saying_what_to_give(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for user_ids, message in (
        ([], "no user id given: give the ids of the users"),
        (["u000001", " "], "empty or blank user id was given .*: give each user id as raw_events stores it"),
    ):
        with pytest.raises(ErasureRefused, match=f"{message}.* Nothing was changed"):
            erase(lake, user_ids, dg.DagsterInstance.ephemeral(), all_assets)
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no user id"),
        (b"\n  \n", "holds no user id"),
        (b"u000001\nu000002,2025-01-01\n", r"line 2: 'u000002,2025-01-01' is not one user id"),
        (b"u000001\n\xff\xfe\n", "is not UTF-8 text"),
        (b"u000001\nu000002;u000003\n", r"line 2: 'u000002;u000003' is not one user id"),
        (b"u000001\tu000002\n", r"line 1: 'u000001\\tu000002' is not one user id"),
    ],
)
def test_a_bad_user_ids_file_is_refused(tmp_path, content, message):
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    with pytest.raises(ErasureRefused, match=message):
        read_user_ids_file(str(path))


def test_a_user_ids_file_gives_its_ids_without_the_spaces_and_line_ends_around_them(tmp_path):
    """A file saved on Windows, or with an id indented or followed by spaces: the ids as raw_events stores them
    (with the spaces, " u000002" was no stored user, refused as a typo, or listed as given with --allow-unseen)."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"u000001\r\n  u000002  \r\n\r\n jos\xc3\xa9\n")
    assert read_user_ids_file(str(path)) == ["u000001", "u000002", "jos\u00e9"]


def test_the_erase_command(erased_lake, tmp_path):
    lake, _, victim = erased_lake
    home = tmp_path / "home"
    env = {**os.environ, "CHURN_DATA_URL": lake.root_url, "DAGSTER_HOME": str(home)}
    env.pop("CHURN_APP", None)
    command = [str(Path(sys.executable).parent / "churn-assets"), "erase"]
    before = tree_digest(lake.root_url)
    (tmp_path / "empty.txt").write_text("")
    refused = subprocess.run([*command, "--user-ids-file", str(tmp_path / "empty.txt")], env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "holds no user id" in refused.stderr
    assert tree_digest(lake.root_url) == before
    # Another instance than the lake's, or another app's keys (CHURN_APP, unset for puzzle's lake): the rewrites were
    # recorded under keys that describe none of the lake's partitions, and the lake's own records kept describing the
    # old files. Refused before any write.
    (tmp_path / "other_home").mkdir()
    for wrong in ({"DAGSTER_HOME": str(tmp_path / "other_home")}, {"CHURN_APP": "fitness"}):
        refused = subprocess.run([*command, "--user-id", victim], env={**env, **wrong}, capture_output=True, text=True)
        assert refused.returncode == 2 and "records no materialization of the" in refused.stderr, refused.stderr
        assert "CHURN_APP" in refused.stderr and "Nothing was changed" in refused.stderr
        assert tree_digest(lake.root_url) == before
    (tmp_path / "ids.txt").write_text(f"{victim}\n")
    done = subprocess.run([*command, "--user-ids-file", str(tmp_path / "ids.txt")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("raw_events: ") and "landing zone:" in done.stdout
    # Recorded in DAGSTER_HOME's instance: the latest materialization of each rewritten table is the erasure's (the
    # lake's build recorded one of every day already, so finding one proves nothing).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for table in CHAIN:
            latest = instance.get_latest_materialization_event(dg.AssetKey(table)).asset_materialization
            assert latest.metadata["erased_rows"].value > 0, table


@pytest.mark.s3
def test_an_erasure_refused_part_way_records_what_it_rewrote_and_running_it_again_finishes(
    landing, tmp_path, s3_server, monkeypatch
):
    """S3 denies the write of the user's second features partition: the first one was rewritten without them. It no
    longer holds them, so the erasure run again does not find it: the instance described the old file (its row count,
    content hash and data version) for good. Now the erasure records it before failing, and the one run again
    finishes the rest, every partition recorded as stored."""
    settings = ChurnSettings(data_url=f"s3://lake/{tmp_path.name}", landing_url=landing)
    instance = dg.DagsterInstance.ephemeral()
    _build_lake(settings, instance)
    lake = Lake(settings.data_url)
    before = _tables(lake)
    victim = _victim(before)
    features_days = _days_holding(before, "features", victim)
    refused = lake.table_url("features", "date", features_days[1]).removeprefix("s3://")
    proxy = HoldingProxy(s3_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    S3FileSystem.clear_instance_cache()
    try:
        proxy.refuse(refused)
        with pytest.raises(Exception, match=features_days[1]):
            erase(Lake(settings.data_url), [victim], instance, all_assets)
    finally:
        proxy.close()
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()
    after = _tables(lake)
    assert victim not in after["features", features_days[0]].get_column("user_id").to_list()
    assert victim in after["features", features_days[1]].get_column("user_id").to_list()
    assert _recorded_rows_differ(instance, after) == []

    report = erase(lake, [victim], instance, all_assets)  # the rest: features from its second day, labels, ...
    assert report.partitions["features"] == features_days[1:] and not report.partitions["raw_events"]
    after = _tables(lake)
    assert all(victim not in frame.get_column("user_id").to_list() for frame in after.values())
    assert _recorded_rows_differ(instance, after) == []


@pytest.mark.s3
def test_the_erase_command_stopped_part_way_says_what_it_did_and_what_to_do(landing, tmp_path, s3_server):
    """Through the command: SIGTERM in the middle of a write (a container stopped) killed it, recording nothing of the
    table it was rewriting, and a write S3 refused printed a traceback. Now SIGTERM stops it as Ctrl-C does, and both
    print where it stopped and why, what it rewrote (recorded), and to run it again with the same ids."""
    with _erase_signalled_while_s3_stores_features_second_day(landing, tmp_path, s3_server) as held:
        held.proxy.refuse(held.key)  # (the write it waits for is refused: it stops interrupted, that day as it was)
        _, stopped = held.erasing.communicate(timeout=60)
        assert held.erasing.returncode == 130, stopped
        assert f"stopped part-way, at features[{held.features_days[1]}]: interrupted (Ctrl-C or SIGTERM)" in stopped
        assert "features: 1 partition(s)" in stopped and "run churn-assets erase again with the same ids" in stopped
        assert "Traceback" not in stopped
        # Run again, with the write of that day refused by S3.
        refused = subprocess.run(held.command, env=held.env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1, refused.stderr
    assert f"stopped part-way, at features[{held.features_days[1]}]: StorageAccessDeniedError: " in refused.stderr
    assert "no partition was rewritten before it" in refused.stderr, refused.stderr
    assert "run churn-assets erase again with the same ids" in refused.stderr and "Traceback" not in refused.stderr
    after = _tables(held.lake)
    assert held.victim not in after["features", held.features_days[0]].get_column("user_id").to_list()
    assert held.victim in after["features", held.features_days[1]].get_column("user_id").to_list()
    with dg.DagsterInstance.from_config(str(held.home)) as instance:
        assert _recorded_rows_differ(instance, after) == []
    done = subprocess.run(held.command, env={**held.env, "AWS_ENDPOINT_URL": s3_server.endpoint}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(held.victim not in frame.get_column("user_id").to_list() for frame in _tables(held.lake).values())



@pytest.mark.s3
def test_the_erase_command_stopped_while_s3_stores_a_partition_records_that_partition(landing, tmp_path, s3_server):
    """SIGTERM while S3 stored features' second day (the PUT's body sent, its answer not back yet) stopped the command
    at once: S3 stored the day without the user all the same, and the command recorded only the first day, so the
    instance went on describing the second's old file, which the erasure run again no longer finds. Now the write's
    answer is waited for: the day is rewritten, recorded and named among those rewritten."""
    with _erase_signalled_while_s3_stores_features_second_day(landing, tmp_path, s3_server) as held:
        held.proxy.release()  # S3 stores it
        _, stopped = held.erasing.communicate(timeout=60)
        assert held.proxy.held_write_done.wait(60)  # (S3 answered it, whether or not anyone waits)
    assert held.erasing.returncode == 130, stopped
    assert f"stopped part-way, after features[{held.features_days[1]}]: interrupted (Ctrl-C or SIGTERM)" in stopped
    assert "features: 2 partition(s)" in stopped and "Traceback" not in stopped
    after = _tables(held.lake)
    assert held.victim not in after["features", held.features_days[1]].get_column("user_id").to_list()
    with dg.DagsterInstance.from_config(str(held.home)) as instance:
        assert _recorded_rows_differ(instance, after) == []


@dataclass
class _HeldErasure:
    """An erase command (``erasing``) over an S3 lake reached through ``proxy``, stopped by SIGTERM while S3 holds its
    write of ``key``: features' second day holding ``victim``."""

    home: Path
    lake: Lake
    victim: str
    features_days: list[str]
    key: str
    proxy: HoldingProxy
    env: dict[str, str]
    command: list[str]
    erasing: subprocess.Popen


@contextlib.contextmanager
def _erase_signalled_while_s3_stores_features_second_day(
    landing: str, tmp_path: Path, s3_server
) -> Iterator[_HeldErasure]:
    """The erase command of a victim over an S3 lake, sent SIGTERM while the write of features' second day holding
    the victim is under way (held by the proxy); the block says what S3 does with that write. The proxy is closed
    after the block."""
    home, lake, before, victim = _s3_lake_and_victim(landing, tmp_path)
    features_days = _days_holding(before, "features", victim)
    key = lake.table_url("features", "date", features_days[1]).removeprefix("s3://")
    proxy = HoldingProxy(s3_server.endpoint)
    env, command = _erase_command(lake, home, victim, AWS_ENDPOINT_URL=proxy.endpoint, AWS_MAX_ATTEMPTS="1")
    try:
        proxy.hold_writes(key)
        erasing = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.held.wait(120), erasing.communicate(timeout=60)
        erasing.terminate()  # SIGTERM, while the write of features' second day is under way
        yield _HeldErasure(home, lake, victim, features_days, key, proxy, env, command, erasing)
    finally:
        proxy.close()


def _s3_lake_and_victim(landing: str, tmp_path: Path) -> tuple[Path, Lake, dict, str]:
    """An instance's home, the lake built in it on S3 (``s3://lake/<test folder>``), its tables and a user to erase."""
    home = instance_home(tmp_path / "home")
    settings = ChurnSettings(data_url=f"s3://lake/{tmp_path.name}", landing_url=landing)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _build_lake(settings, instance)
    lake = Lake(settings.data_url)
    before = _tables(lake)
    return home, lake, before, _victim(before)


def _erase_command(lake: Lake, home: Path, victim: str, **env: str) -> tuple[dict[str, str], list[str]]:
    """The environment (``lake``, the instance at ``home``, no CHURN_APP, and ``env``) and the command line of
    ``churn-assets erase --user-id victim``."""
    environment = {**os.environ, "CHURN_DATA_URL": lake.root_url, "DAGSTER_HOME": str(home), **env}
    environment.pop("CHURN_APP", None)
    return environment, [str(Path(sys.executable).parent / "churn-assets"), "erase", "--user-id", victim]


def _recorded_rows_differ(instance: dg.DagsterInstance, tables: dict[tuple[str, str], pl.DataFrame]) -> list:
    """The stored asset partitions whose latest materialization describes other rows than the file holds (its row
    count); a partition never materialized (predictions and training_set, written by _build_lake) is left out."""
    differ = []
    for (table, key), frame in sorted(tables.items()):
        if table in NOT_ASSETS:
            continue
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(table), asset_partitions=[key]), limit=1
        ).records
        if records and records[0].asset_materialization.metadata["dagster/row_count"].value != frame.height:
            differ.append((table, key))
    return differ


def test_a_rewritten_partition_is_stored_in_its_assets_row_groups(tmp_path):
    """user_daily writes row groups of 32,768 rows (its ROW_GROUP_ROWS): the erasure's rewrite of a day of more users
    is the bytes user_daily's run writes of the same rows, so a run of that day again stores the same file under the
    same data version (in the default's 131,072 rows it was other bytes, and everything downstream Unsynced)."""
    lake = Lake(str(tmp_path / "lake"))
    day = DAY_KEYS[0]
    frame = pl.DataFrame({"user_id": [f"u{n:06d}" for n in range(40_000)], "n_events": list(range(40_000))})
    url = lake.table_url("user_daily", "date", day)
    lake.write_table(url, frame, 32_768)
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="user_daily", partition=day))

    erase(lake, ["u000007"], instance, all_assets)

    kept = frame.filter(pl.col("user_id") != "u000007")
    assert lake.read_bytes(url) == parquet_bytes(kept, 32_768) != parquet_bytes(kept)


# Ids as apps send them, each in a form highest_risk (a Markdown code span in a table cell) and the event log (JSON
# text) each escape: the command counted the events naming them, and the documented scrub found them, as `id`
# in plain text, which neither holds for the last five.
ODD_IDS = ["u000957", "josé", "a'b", 'q"x', "x`y", "back\\slash", "a|b"]


def _name_in_highest_risk(instance: dg.DagsterInstance, user_ids: list[str]) -> None:
    """One predictions materialization per id, its highest_risk naming it (and another user), as predictions does."""
    for n, user_id in enumerate(user_ids):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key="predictions", partition=DAY_KEYS[-1],
            metadata={"highest_risk": preview_markdown(pl.DataFrame({"rank": [1, 2], "user_id": [user_id, f"v{n}"]}))},
        ))


def _highest_risk_rows(instance: dg.DagsterInstance) -> list[str]:
    records = instance.fetch_materializations(dg.AssetKey("predictions"), limit=100).records
    return sorted(r.asset_materialization.metadata["highest_risk"].value.splitlines()[2] for r in records)


def test_the_events_naming_an_erased_user_are_counted_whatever_their_id(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    _name_in_highest_risk(instance, ODD_IDS)
    lake = Lake(str(tmp_path / "lake"))
    for user_id in ODD_IDS:
        assert erase(lake, [user_id], instance, all_assets, allow_unseen=True).metadata_events == 1, user_id


def _documented_scrub(storage: str) -> str:
    """The scrub of docs/operations.md, "Erasing a user", as the operator copies it: SQLite's, or PostgreSQL's (after
    the ID= and TEXT= lines of SQLite's)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    section = text[text.index("Scrub the id in place"):]
    blocks = [textwrap.dedent(block) for block in re.findall(r"```bash\n(.*?)```", section, re.S)]
    if storage == "sqlite":
        return blocks[0]
    first = "\n".join(line for line in blocks[0].splitlines() if line.startswith(("ID=", "TEXT=")))
    return f"{first}\n{blocks[1]}"


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not postgres_available() or not shutil.which("psql"), reason="PostgreSQL 15 binaries are not installed"))])
def test_the_documented_event_log_scrub_leaves_no_event_naming_the_user(tmp_path, monkeypatch, storage):
    """The scrub of docs/operations.md run as written, id by id, on a local instance and on deploy/dagster.yaml's
    PostgreSQL storage: it searched `id` in plain text, which the event log's JSON holds for none of josé,
    q"x, back\\slash, a|b (and `` x`y ``'s span is no `x`y`), and put a'b into the SQL, which failed."""
    home = tmp_path / "home"
    home.mkdir()
    server = None
    if storage == "postgres":
        server = PostgresServer()
        server.start()
        for name, value in {**server.env, "PGHOST": server.host, "PGPORT": str(server.port), "PGUSER": SUPERUSER,
                            "PGDATABASE": server.db_name}.items():
            monkeypatch.setenv(name, value)
        config = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml").read_text())
        (home / "dagster.yaml").write_text(yaml.safe_dump(
            {key: config[key] for key in ("run_storage", "event_log_storage", "schedule_storage")}))
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _name_in_highest_risk(instance, ODD_IDS)
        script = _documented_scrub(storage)
        env = {**os.environ, "DAGSTER_HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for user_id in ODD_IDS:
            done = subprocess.run(["bash", "-e", "-c", script.replace("ID=u000957", f"ID={shlex.quote(user_id)}", 1)],
                                  env=env, capture_output=True, text=True)
            assert done.returncode == 0, (user_id, done.stderr)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert _highest_risk_rows(instance) == ["| 1 | `(erased)` |"] * len(ODD_IDS)
            assert erase(Lake(str(tmp_path / "lake")), ODD_IDS, instance, all_assets,
                         allow_unseen=True).metadata_events == 0
        if storage == "sqlite":
            assert not subprocess.run(["grep", "-rlF", "u000957", str(home)], capture_output=True).stdout
    finally:
        if server is not None:
            server.stop()


def test_the_erasures_predictions_record_names_the_rewritten_days_riskiest_users(erased_lake):
    """The predictions day the erasure rewrites shows, in the UI, the highest_risk of its rewritten table: the
    erased user, ranked first by the day's run, is no longer named, and users counts the rows left."""
    lake, instance, victim = erased_lake
    day = DAY_KEYS[-1]
    url = lake.table_url("predictions", "date", day)
    stored = _read(lake, url)
    scored = (
        stored.with_columns(pl.when(pl.col("user_id") == victim).then(1.0).otherwise(pl.col("churn_probability"))
                            .alias("churn_probability"))
        .sort(["churn_probability", "user_id"], descending=[True, False])
        .with_columns(pl.int_range(1, stored.height + 1, dtype=pl.UInt32).alias("rank"), risk_band=pl.lit("high"),
                      top_reason_1=pl.lit("days_since_last_event"), top_reason_2=pl.lit(None, pl.String),
                      top_reason_3=pl.lit(None, pl.String))
    )
    lake.write_table(url, scored)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="predictions", partition=day, metadata={"users": scored.height, "highest_risk": highest_risk(scored)},
    ))
    assert highest_risk_cell(victim) in highest_risk(scored).value

    erase(lake, [victim], instance, all_assets)

    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("predictions"), asset_partitions=[day]), limit=1
    ).records[0].asset_materialization
    after = _read(lake, url)
    assert after.height == scored.height - 1 and after.get_column("rank").to_list()[:2] == [1, 2]
    assert record.metadata["highest_risk"].value == highest_risk(after).value
    assert highest_risk_cell(victim) not in record.metadata["highest_risk"].value
    assert record.metadata["users"].value == after.height


def test_a_run_in_progress_during_the_erasure_is_named_with_what_to_do(erased_lake):
    """A run that read the erased-users list, or a partition, before the erasure stores the users again once it
    writes: the erasure said nothing of it (the docs asked for no run in progress). It now names the runs of the app
    in progress, and says to erase again once they end; a run not started yet, which reads everything after, is not
    named."""
    lake, instance, victim = erased_lake
    running = dg.DagsterRun(job_name="daily_refresh", status=dg.DagsterRunStatus.STARTED)
    queued = dg.DagsterRun(job_name="daily_refresh", status=dg.DagsterRunStatus.NOT_STARTED)
    instance.add_run(running)
    instance.add_run(queued)
    # Submitted while the erasure runs: its record is updated after the erasure began (an hour on, here), yet it
    # reads everything once it starts, after the erasure. (Added before, it was left out by the time alone.)
    with instance.run_storage.connect() as conn:
        conn.execute(RunsTable.update().where(RunsTable.c.run_id == queued.run_id).values(
            update_timestamp=dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)))
    report = erase(lake, [victim], instance, all_assets)
    assert report.running == [running.run_id]
    assert report.lines()[-1].startswith(f"runs in progress during the erasure: {running.run_id}: ")
    instance.report_run_canceled(running)
    again = erase(lake, [victim], instance, all_assets)  # it ended since: nothing came back here
    assert again.lines()[0].startswith("nothing to erase") and again.running == []


@pytest.mark.s3
def test_the_erase_command_stopped_before_its_rewrites_says_what_stands(landing, tmp_path, s3_server):
    """Through the command, stops before the first partition is rewritten ended in a traceback: S3 refusing the write
    of the erased-users list (exit 1), SIGTERM while that list was written (the process killed by the signal between
    the list and the rewrites), SIGTERM during the scan of the lake. Now each says what stands (nothing changed, or
    the users listed and no partition rewritten), to run it again with the same ids, and exits 1 or 130."""
    home, lake, before, victim = _s3_lake_and_victim(landing, tmp_path)
    listed = lake.table_url("erased_users").removeprefix("s3://")
    proxy = HoldingProxy(s3_server.endpoint)
    env, command = _erase_command(lake, home, victim, AWS_ENDPOINT_URL=proxy.endpoint, AWS_MAX_ATTEMPTS="1")

    def digest() -> dict[str, str]:  # every partition of the lake, by its ETag (the erased-users list aside)
        lake.fs.invalidate_cache()
        return {path: tag for path, tag in _digest(lake).items() if "/erased_users/" not in path}

    untouched = digest()
    try:
        proxy.refuse(listed)
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1, refused.stderr
        assert ("stopped before changing anything, while writing the erased-users list: StorageAccessDeniedError: "
                in refused.stderr), refused.stderr
        assert "nothing was changed" in refused.stderr and "run churn-assets erase again with the same ids" in (
            refused.stderr)
        assert "Traceback" not in refused.stderr and digest() == untouched
        assert read_erased_users(lake) is None
        proxy.refuse(None)
        proxy.hold_writes(listed)
        erasing = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.held.wait(120), erasing.communicate(timeout=60)
        erasing.terminate()  # SIGTERM, while the erased-users list is written: the write goes through
        proxy.release()
        _, stopped = erasing.communicate(timeout=60)
    finally:
        proxy.close()
    assert erasing.returncode == 130, stopped
    assert ("stopped part-way, after listing the users, before rewriting any partition: interrupted (Ctrl-C or "
            "SIGTERM)" in stopped), stopped
    assert "no partition was rewritten before it" in stopped and "Traceback" not in stopped
    assert "run churn-assets erase again with the same ids" in stopped
    assert read_erased_users(lake).get_column("user_id").to_list() == [victim]
    assert digest() == untouched  # no partition rewritten

    held = lake.table_url("raw_events", "date", DAY_KEYS[0]).removeprefix("s3://")
    proxy = HoldingProxy(s3_server.endpoint)
    try:
        proxy.hold_reads(held)  # the scan of raw_events for the users
        erasing = subprocess.Popen(command, env={**env, "AWS_ENDPOINT_URL": proxy.endpoint}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert proxy.held.wait(120), erasing.communicate(timeout=60)
        erasing.terminate()
        proxy.release()
        _, stopped = erasing.communicate(timeout=60)
    finally:
        proxy.close()
    assert erasing.returncode == 130, stopped
    assert ("stopped before changing anything, while looking for the users in the lake and the instance: "
            "interrupted (Ctrl-C or SIGTERM)" in stopped), stopped
    assert "nothing was changed" in stopped and "Traceback" not in stopped
    assert digest() == untouched
    done = subprocess.run(command, env={**env, "AWS_ENDPOINT_URL": s3_server.endpoint}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(victim not in frame.get_column("user_id").to_list() for frame in _tables(lake).values())


@pytest.mark.s3
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 binaries are not installed")
def test_the_erase_command_stopped_while_it_records_a_table_records_all_of_it(
    landing, tmp_path, production_home, postgres
):
    """SIGTERM while erase recorded raw_events' rewritten days (its first record waiting on a lock the test holds on
    the event log) printed a traceback after the first record: the other rewritten days, which no longer hold the
    user, stayed described as their old files, and the erasure run again does not find them. Now the table's records
    are finished first; it says what it rewrote and to run it again, exits 130, and the run again finishes."""
    import psycopg2

    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing)
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        _build_lake(settings, instance)
    lake = Lake(settings.data_url)
    before = _tables(lake)
    victim = _victim(before)
    env, command = _erase_command(lake, production_home, victim)
    lock = psycopg2.connect(host=postgres.host, port=postgres.port, user=SUPERUSER, dbname=postgres.db_name)
    try:
        with lock.cursor() as cursor:
            cursor.execute("LOCK TABLE event_logs IN SHARE MODE")  # reads go on, writes wait
        erasing = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not postgres.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND query ILIKE 'INSERT INTO event_logs%%'")[0][0]:
            assert erasing.poll() is None and time.monotonic() < deadline, erasing.communicate(timeout=60)
            time.sleep(0.05)  # (a wait for the state, not a guess of how long it takes)
        erasing.send_signal(signal.SIGTERM)  # while raw_events' first record waits
    finally:
        lock.rollback()
        lock.close()
    _, stopped = erasing.communicate(timeout=120)
    assert erasing.returncode == 130, stopped
    raw_days = _days_holding(before, "raw_events", victim)
    assert "stopped part-way, after raw_events: interrupted (Ctrl-C or SIGTERM)" in stopped, stopped
    assert f"raw_events: {len(raw_days)} partition(s)" in stopped and "Traceback" not in stopped
    assert "run churn-assets erase again with the same ids" in stopped
    after = _tables(lake)
    assert _days_holding(after, "raw_events", victim) == [] and _days_holding(after, "features", victim)
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert _recorded_rows_differ(instance, after) == []  # every rewritten day recorded as stored
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = _tables(lake)
    assert all(victim not in frame.get_column("user_id").to_list() for frame in after.values())
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert _recorded_rows_differ(instance, after) == []
