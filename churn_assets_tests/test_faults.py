"""Faults: S3 going away in the middle of a run, and two runs of the same partitions at once."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from s3fs import S3FileSystem

from churn_assets.assets.ingest.raw_events import raw_events
from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets_tests.landing_helpers import (
    GATES,
    INGEST,
    Gate,
    amplitude_row,
    gated,
    jsonl,
    read_partition,
    write_landing_day,
)
from churn_assets_tests.s3_server import SeaweedS3

DAYS = ["2025-01-01", "2025-01-02", "2025-01-03"]
RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}


def _rows(day: str, users: int = 5) -> bytes:
    return jsonl([
        amplitude_row(f"{day}-{i}", f"u{i % users}", f"{day} {i % 24:02d}:{i % 60:02d}:00.000000",
                      event_type=("session_start", "screen_view", "purchase")[i % 3],
                      session_id=1735689600000 + i, revenue=1.5 if i % 3 == 2 else None)
        for i in range(40)
    ])


@pytest.fixture
def private_s3(tmp_path, monkeypatch):
    """An S3 server of this test alone (the shared one must survive being stopped)."""
    server = SeaweedS3(tmp_path / "seaweedfs", buckets=("lake",))
    server.start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    # One connection attempt per call: the asset's retry policy is what retries here, not botocore.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    S3FileSystem.clear_instance_cache()  # s3fs clients remember the endpoint they were created for
    try:
        yield server
    finally:
        server.stop()
        S3FileSystem.clear_instance_cache()


@pytest.mark.s3
def test_s3_stopped_mid_run_fails_clearly_leaves_nothing_torn_and_recovers(tmp_path, private_s3, instance):
    landing = str(tmp_path / "landing")
    lake = "s3://lake/faults"
    resources = build_resources(ChurnSettings(data_url=lake, landing_url=landing))
    for day in DAYS:
        write_landing_day(landing, day, {"part-00000.jsonl": _rows(day)})
    # Day 2's file is gated: the run cannot get past day 2 before the test opens the gate, which it does once
    # day 1 is in the bucket and S3 is stopped. The gate stays open, so the retries read day 2 like any other day.
    day2 = os.path.join(landing, "events", f"date={DAYS[1]}", "part-00000.jsonl")
    gate = GATES[day2] = Gate()
    resources = gated(resources)

    def stop_s3_after_day_one():
        try:
            deadline = time.monotonic() + 60
            while f"faults/raw_events/date={DAYS[0]}/data.parquet" not in private_s3.keys("lake", "faults/"):
                assert time.monotonic() < deadline, "day 1 was never written"
                time.sleep(0.05)
            assert gate.reached.wait(timeout=60), "the run never reached day 2's file"
            private_s3.process.kill()
            private_s3.process.wait()
        finally:
            gate.opened.set()

    stopper = threading.Thread(target=stop_s3_after_day_one)
    stopper.start()
    started = time.monotonic()
    try:
        result = dg.materialize(
            [raw_events], resources=resources, instance=instance, tags=RANGE, raise_on_error=False
        )
        stopper.join(timeout=60)
    finally:
        del GATES[day2]
    elapsed = time.monotonic() - started

    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 2  # raw_events' RetryPolicy(max_retries=2)
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error.to_string()
    assert "S3 unreachable at http://127.0.0.1:" in error, error
    assert "StorageUnreachableError" in error
    assert elapsed < 45

    # Back up: only whole objects of day 1, nothing of the day that was being written, no half upload.
    private_s3.start()
    S3FileSystem.clear_instance_cache()
    keys = private_s3.keys("lake", "faults/")
    assert keys == [
        f"faults/raw_events/date={DAYS[0]}/data.parquet",
        f"faults/raw_events_quarantine/date={DAYS[0]}/data.parquet",
    ]
    assert private_s3.client().list_multipart_uploads(Bucket="lake").get("Uploads", []) == []
    first_day = read_partition(lake, "raw_events", DAYS[0])
    assert first_day.height == 40

    # The same request succeeds once S3 is back.
    again = dg.materialize([raw_events], resources=resources, instance=instance, tags=RANGE)
    assert again.success
    for day in DAYS:
        assert read_partition(lake, "raw_events", day).height == 40
    assert read_partition(lake, "raw_events", DAYS[0]).equals(first_day)


def _materialize_command(data_url: str, landing: str, home: Path, log: Path) -> subprocess.Popen:
    """``dagster asset materialize`` of the ingest range in its own process, as a user or the daemon runs it."""
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "DAGSTER_"))}
    env.update(CHURN_DATA_URL=data_url, CHURN_LANDING_URL=landing, DAGSTER_HOME=str(home))
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "churn_assets.definitions",
         "--select", "raw_events,install_times,user_daily",
         "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"],
        env=env, cwd=home, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )


def _lake_content(lake: str) -> dict[tuple[str, str], pl.DataFrame]:
    assets = ("raw_events", "raw_events_quarantine", "install_times", "user_daily")
    return {
        (asset, day): read_partition(lake, asset, day).sort(pl.all())
        for asset in assets for day in DAYS
    }


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_overlapping_runs_end_with_the_content_of_one(tmp_path, storage, request):
    landing = str(tmp_path / "landing")
    for day in DAYS:
        write_landing_day(landing, day, {"part-00000.jsonl": _rows(day), "part-00001.jsonl": _rows(day, users=7)})
    if storage == "s3":
        request.getfixturevalue("s3_server")
        base = f"s3://lake/overlap-{tmp_path.name}"
        shared, reference = f"{base}/shared", f"{base}/reference"
    else:
        shared, reference = str(tmp_path / "shared"), str(tmp_path / "reference")

    with dg.instance_for_test() as instance:
        resources = build_resources(ChurnSettings(data_url=reference, landing_url=landing))
        assert dg.materialize(INGEST, resources=resources, instance=instance, tags=RANGE).success

    # Two runs of the same partitions, started together in two processes, writing the same lake.
    runs = [
        _materialize_command(shared, landing, tmp_path / f"home{i}", tmp_path / f"run{i}.log") for i in range(2)
    ]
    try:
        for i, run in enumerate(runs):
            assert run.wait(timeout=240) == 0, (tmp_path / f"run{i}.log").read_text()[-5000:]
    finally:
        for run in runs:  # the other run, when one failed or hung
            run.kill()
            run.wait()

    expected, got = _lake_content(reference), _lake_content(shared)
    assert got.keys() == expected.keys()
    for key, frame in expected.items():
        assert got[key].equals(frame), key
    if storage == "local":
        leftovers = [p for p in (tmp_path / "shared").rglob("*") if p.is_file() and p.name != "data.parquet"]
        assert leftovers == []  # no temporary file of either writer is left behind


# A run of raw_events in a process of its own whose read of the day's file never returns (a gate the test never
# opens stands for a hung mount or a file without end), as `dagster asset materialize` runs it: in-process.
_BLOCKED_RUN = """
import sys, threading
import dagster as dg
from churn_assets.assets.ingest.raw_events import raw_events
from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets_tests.landing_helpers import GATES, Gate, amplitude_row, gated, jsonl, write_landing_day

root = sys.argv[1]
folder = write_landing_day(
    root + "/landing", "2025-01-01", {"a.jsonl": jsonl([amplitude_row("e1", "u1", "2025-01-01 10:00:00.000000")])}
)
gate = GATES[folder + "/a.jsonl"] = Gate()
threading.Thread(target=lambda: (gate.reached.wait(), print("reading", flush=True)), daemon=True).start()
resources = gated(build_resources(ChurnSettings(data_url=root + "/lake", landing_url=root + "/landing")))
with dg.instance_for_test() as instance:
    result = dg.materialize([raw_events], resources=resources, instance=instance, partition_key="2025-01-01",
                            raise_on_error=False)
print("run ended, success:", result.success, flush=True)
"""


def test_sigterm_ends_a_run_whose_landing_read_never_returns(tmp_path):
    """SIGTERM did not end a run blocked in reading a landing file (a named pipe did that): Dagster raised the
    interrupt in the run's thread, which then waited for the reader thread, for ever. It now gives up on it."""
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_RUN, str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert child.stdout.readline() == b"reading\n"
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, _ = child.communicate(timeout=30)
        assert b"run ended, success: False" in out
        assert time.monotonic() - started < 15
    finally:
        child.kill()
        child.wait()
