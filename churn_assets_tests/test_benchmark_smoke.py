"""The benchmark command stays runnable: ``python -m benchmarks.run --scale tiny --repeat 2`` end to end
(simulate, then twice the data chain, training and scoring), in a subprocess, on a temp folder, and its
data chain on S3 (``--storage s3``) and under py-spy (``--profile``). Figures are printed, never asserted against a
time."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from benchmarks.child import RssSampler

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_tiny_benchmark_runs_the_whole_graph_and_saves_its_figures(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--scale", "tiny", "--data", str(tmp_path), "--repeat", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert "Dagster's share" in done.stdout
    assert "tiny, full graph, 2 runs: wall " in done.stdout

    (saved,) = (tmp_path / "tiny" / "results").glob("tiny-*.json")
    result = json.loads(saved.read_text())
    pieces = {piece["name"]: piece for piece in result["pieces"]}
    assert list(pieces) == ["data chain", "training", "scoring"]
    chain_steps = {step["step"] for step in pieces["data chain"]["report"]["steps"]}
    assert {"raw_events", "install_times", "user_daily", "features", "labels"} <= chain_steps
    assert {"model", "training_set"} <= {step["step"] for step in pieces["training"]["report"]["steps"]}
    assert {"predictions", "drift_report"} <= {step["step"] for step in pieces["scoring"]["report"]["steps"]}
    # raw_events kept the simulated events but for the re-sent duplicates (a small share).
    simulated, kept = result["simulate"]["report"]["events"], pieces["data chain"]["report"]["events"]
    assert 0.95 * simulated < kept < simulated
    # Each run was measured whole; the saved pieces and totals are the median run's (the faster of two).
    repeats = result["repeats"]
    assert len(repeats) == 2 and all(run["wall_s"] > 0 and run["graph"] == "full graph" for run in repeats)
    totals = result["totals"]
    assert totals == min(repeats, key=lambda run: run["wall_s"])
    assert totals["wall_s"] > 0 and 0 <= totals["dagster_share_of_runs"] < 1 and totals["peak_rss"] > 0
    # Importing Dagster and opening its instance happen before the runs, inside the processes' wall, which
    # also holds the interpreter and the code location's imports: Dagster's part is less than all of that.
    assert totals["dagster_startup_s"] > 0
    assert 0 < totals["dagster_share_of_processes"] < totals["outside_our_code_share_of_processes"] < 1
    # What was measured, to tell two results apart: the commit (none outside a git checkout) and the versions.
    assert result["machine"]["packages"]["dagster"] == version("dagster")
    assert result["machine"]["packages"]["polars"] == version("polars")
    commit = result["machine"]["commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{7,40}(\+changes)?", commit), commit
    # The lake holds what the runs wrote: one partition folder per simulated day, models of the month.
    lake = tmp_path / "tiny" / "lake"
    assert len(list((lake / "raw_events").glob("date=*/data.parquet"))) == 75
    assert (lake / "model" / "month=2025-03").is_dir()


@pytest.mark.s3
def test_tiny_benchmark_runs_on_s3(tmp_path):
    """``--storage s3``: the landing zone uploaded to a SeaweedFS server the command starts, the lake
    written there, the server's CPU reported beside the run's."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--scale", "tiny", "--graph", "chain", "--storage", "s3",
         "--data", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert "landing: uploading " in done.stdout and "S3 server (SeaweedFS on loopback)" in done.stdout

    (saved,) = (tmp_path / "tiny-s3" / "results").glob("tiny-*.json")
    result = json.loads(saved.read_text())
    assert result["options"]["storage"] == "s3"
    (chain,) = result["pieces"]
    simulated, kept = result["simulate"]["report"]["events"], chain["report"]["events"]
    assert 0.95 * simulated < kept < simulated  # counted from the lake on S3
    assert result["totals"]["server_cpu_s"] > 0
    # The landing zone was simulated on disk; nothing of the lake was.
    assert (tmp_path / "tiny" / "landing" / "truth" / "simulation.json").exists()
    assert not (tmp_path / "tiny" / "lake").exists() and not (tmp_path / "tiny-s3" / "lake").exists()


@pytest.mark.skipif(not Path(sys.executable).with_name("py-spy").exists(), reason="py-spy is not beside this Python")
def test_tiny_chain_profiled_reports_the_runs_cpu_and_memory_not_py_spys(tmp_path):
    """``--profile`` without ``--py-spy`` and without py-spy on PATH (a virtualenv not activated) finds it beside
    the interpreter, and the piece's CPU and peak RSS are the run's process's, not the profiler's."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--scale", "tiny", "--graph", "chain", "--profile",
         "--data", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PATH": os.defpath},
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert "ours, by innermost churn_assets function" in done.stdout
    assert "full graph" not in done.stdout  # the scale's description says what ran: its data chain

    (saved,) = (tmp_path / "tiny" / "results").glob("tiny-*.json")
    (chain,) = json.loads(saved.read_text())["pieces"]
    # The process the benchmark waits for is py-spy: its rusage is the profiler's own CPU, with the run's added only
    # when py-spy happened to reap it (2.4 s of CPU and 126 MB for a `small` chain of 25 s of CPU and 0.9 GB).
    assert chain["cpu_s"] == chain["report"]["cpu_s"] >= sum(step["cpu_s"] for step in chain["report"]["steps"])
    assert chain["max_rss"] == chain["report"]["peak_rss"] > 100 * 1024 * 1024


def test_a_step_shorter_than_the_sampling_interval_gets_the_memory_around_it_not_zero():
    """A check of 10 ms between two samples 20 ms apart printed a peak RSS of 0 MB."""
    sampler = RssSampler()
    mb = 1024 * 1024
    sampler.samples = [(100.00 + 0.02 * i, rss * mb, 1.0, 0.1, 10) for i, rss in enumerate((300, 320, 310))]
    assert sampler.peak_between(100.005, 100.015) == 320 * mb
    assert sampler.peak_between(100.01, 100.05) == 320 * mb  # samples inside: the largest of them
    assert sampler.peak_between(100.05, 100.06) == 310 * mb  # after the last sample: the last one


def test_results_record_no_commit_without_git_rather_than_failing(tmp_path, monkeypatch):
    """On a machine without git (the sources copied, not cloned) the benchmark failed before measuring anything:
    FileNotFoundError: 'git', from what the results JSON records of the commit."""
    from benchmarks.run import code_version

    monkeypatch.setenv("PATH", str(tmp_path))  # a folder without git
    recorded = code_version()
    assert recorded["commit"] is None
    assert recorded["packages"]["polars"] == version("polars")
