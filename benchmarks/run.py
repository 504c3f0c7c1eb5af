"""The benchmark command: ``python -m benchmarks.run --scale tiny|small|medium|day [--reuse] [--profile]``.

For a named scale (``benchmarks/scales.py``) it simulates the landing zone with ``churn-assets simulate``
(or reuses it with ``--reuse`` when the simulator's arguments are unchanged), then runs each piece of
the scale in a fresh process (``benchmarks/child.py``): the code location's own definitions, IO managers
and single-run partition ranges, on a persistent SQLite instance. It prints per step and in total: wall
seconds, time in our code, peak RSS, events per second and Dagster's share of the time. Results are
also saved as JSON under ``benchmarks/.data/<scale>/results/``.

``--profile`` runs each piece under py-spy (``--py-spy PATH``, or ``py-spy`` on PATH or beside this Python;
installed by the ``dev`` extra) and prints where the samples fall (``benchmarks/profile.py``).

``--storage s3`` keeps the landing zone and the lake on S3, served by SeaweedFS on loopback
(``benchmarks/storage.py``), and reports the server's CPU beside each piece's.

``--repeat N`` measures the scale N times over, each time as the first (a new instance, and a new lake
unless it holds a day scale's history), and prints the fastest and the median of the N: a shared or
virtual machine's speed varies from one minute to the next (on the project's CI-class machine the same
run has used 30 s of CPU and then 45 s), and one run cannot tell the code's time from the machine's.
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.scales import SCALES, START, Piece, Scale
from benchmarks.storage import Storage, storage_for
from churn_assets.simulate.writer import FORMATS

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / ".data"
MB = 1024 * 1024

# The targets, on 2 cores and 24 GB: (wall seconds, peak RSS bytes) per scale and graph.
TARGETS = {
    ("small", "data chain"): (20.0, 2 * 1024 * MB),
    ("small", "full graph"): (60.0, 2 * 1024 * MB),
    ("day", "daily refresh of D"): (30.0, 4 * 1024 * MB),
}
DAGSTER_SHARE_TARGET = 0.10
SIMULATE_TARGET_EVENTS_PER_S = 500_000


@dataclass
class Measured:
    """One child process: what the parent saw (wall, rusage) and what the child reported."""

    name: str
    wall_s: float
    cpu_s: float
    max_rss: int
    report: dict
    setup: bool = False
    server_cpu_s: float = 0.0  # the S3 server's CPU while the piece ran (--storage s3)


def machine() -> dict:
    mem_total = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_total / 1024**3, 1),
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
        **code_version(),
    }


def code_version() -> dict:
    """What was measured: the repository's commit (``+changes`` when files differ from it) and the versions of the
    packages on the path, so that two results can be told apart."""
    from importlib.metadata import PackageNotFoundError, version

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        except OSError:  # no git (a machine given the sources only): no commit to record
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    packages = {}
    for name in ("dagster", "polars", "numpy", "pyarrow", "xgboost-cpu", "duckdb"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    return {"commit": commit or None, "packages": packages}


def run_child(command: list[str], env: dict[str, str], log=None) -> tuple[float, float, int, int]:
    """Runs ``command`` and returns (wall s, CPU s, peak RSS bytes, exit code) of that child alone; its
    output goes to ``log`` when given (Dagster's console log: written as for any run, kept out of sight)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT if log else None)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, process.returncode


def simulate(scale: Scale, landing: Path, reuse: bool) -> Measured | None:
    """The landing zone of the scale; simulated (and measured) unless reused."""
    stamp = landing / "truth" / "simulation.json"
    if reuse and stamp.exists():
        written = json.loads(stamp.read_text())
        if all(written.get(k) == v for k, v in scale.simulation().items()):
            print(f"landing: reusing {written['events_written']:,} events under {landing}")
            return None
    shutil.rmtree(landing, ignore_errors=True)
    args = scale.simulation()
    command = [sys.executable, "-m", "churn_assets.cli", "simulate", "--out", str(landing),
               "--users", str(args["users"]), "--days", str(args["days"]), "--start", args["start"],
               "--seed", str(args["seed"]), "--format", args["file_format"], "--no-progress",
               "--event-share", str(args["event_share"]),
               *(["--thin-before", args["thin_before"]] if "thin_before" in args else [])]
    wall, cpu, rss, code = run_child(command, dict(os.environ))
    if code:
        raise SystemExit(f"churn-assets simulate failed with exit code {code}")
    written = json.loads(stamp.read_text())
    events, simulated = written["events_written"], written["events_simulated"]
    measured = Measured("simulate", wall, cpu, rss, {"events": events, "events_simulated": simulated})
    # The target is for events written. A thin history (the day scale) simulates every event of its days and
    # writes one per active user and day: its rate of written events says nothing of the simulator's speed.
    target = (f"target ≥ {SIMULATE_TARGET_EVENTS_PER_S:,}" if "thin_before" not in written else
              f"a thin history: {simulated:,} events simulated, {simulated / wall:,.0f}/s; the target is measured "
              f"on full days, at small and medium")
    print(f"simulate: {events:,} events in {wall:.1f} s ({events / wall:,.0f} events/s, {target}), "
          f"CPU {cpu:.1f} s, peak RSS {rss / MB:,.0f} MB")
    return measured


def run_piece(piece: Piece, env: dict[str, str], work: Path, storage: Storage, profiler: str | None) -> Measured:
    spec = {"assets": list(piece.assets), "first": piece.first, "last": piece.last,
            "event_days": [d.isoformat() for d in piece.days]}
    slug = piece.name.replace(" ", "_").replace(":", "").replace("-", "")
    spec_path, result_path = work / f"{slug}.spec.json", work / f"{slug}.result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.child", str(spec_path), str(result_path)]
    profile_path = work / f"{slug}.pyspy.txt"
    if profiler:
        command = [profiler, "record", "--rate", "50", "--format", "raw", "--output",
                   str(profile_path), "--", *command]
    print(f"\n{piece.name}: {', '.join(piece.assets)} for {piece.first}..{piece.last}"
          + (" (setup, not in the totals)" if piece.setup else ""), flush=True)
    log_path = work / f"{slug}.log"
    launched, server_cpu = time.time(), storage.server_cpu_s()
    with open(log_path, "w") as log:
        wall, cpu, rss, code = run_child(command, env, log)
    server_cpu = storage.server_cpu_s() - server_cpu
    if not result_path.exists() or not json.loads(result_path.read_text())["success"]:
        sys.stderr.write(log_path.read_text()[-6000:])
        failure = json.loads(result_path.read_text())["failure"] if result_path.exists() else f"exit code {code}"
        raise SystemExit(f"{piece.name}: the run failed ({failure}); its log is {log_path}")
    report = json.loads(result_path.read_text())
    if profiler:
        # The process waited for is py-spy's: the run's CPU and peak RSS are the ones its process reported.
        cpu, rss = report["cpu_s"], report["peak_rss"]
    # What a user waits for: from launching the process to the end of its run. After the run the child
    # reads the run's events back and counts the events ingested, for these figures only.
    wall = report["run_end"] - launched
    measured = Measured(piece.name, wall, cpu, rss, report, setup=piece.setup, server_cpu_s=server_cpu)
    print_piece(measured)
    if profiler:
        from benchmarks.profile import summarize

        print(summarize(profile_path))
    return measured


def _rate(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}" if events and seconds > 0 else "-"


def print_piece(m: Measured) -> None:
    report = m.report
    events = report["events"]
    no_sys_faults = f"{'':>6} {'':>7}"  # the run and process rows have no system CPU or faults of their own
    print(f"  {'step':<44} {'wall s':>8} {'ours s':>8} {'CPU s':>8} {'sys s':>6} {'faults':>7} {'peak RSS MB':>12} "
          f"{'events/s':>12}")
    for step in report["steps"]:
        print(f"  {step['step']:<44} {step['wall_s']:>8.2f} {step['ours_s']:>8.2f} {step.get('cpu_s', 0):>8.2f} "
              f"{step.get('sys_s', 0):>6.2f} {step.get('minor_faults', 0) / 1e3:>6,.0f}k "
              f"{step['peak_rss'] / MB:>12,.0f} {_rate(events, step['wall_s']):>12}")
    ours = sum(s["ours_s"] for s in report["steps"])
    run_wall = report["run_wall_s"]
    print(f"  {'run (dg.materialize)':<44} {run_wall:>8.2f} {ours:>8.2f} {'':>8} {no_sys_faults} {'':>12} "
          f"{_rate(events, run_wall):>12}   Dagster {100 * (run_wall - ours) / run_wall:.1f} % of the run")
    print(f"  {'process (start, imports, run)':<44} {m.wall_s:>8.2f} {'':>8} {m.cpu_s:>8.1f} {no_sys_faults} "
          f"{m.max_rss / MB:>12,.0f} {_rate(events, m.wall_s):>12}   imports {report['imports_s']:.1f} s "
          f"(Dagster {report.get('dagster_import_s', 0):.1f} s), instance {report.get('instance_s', 0):.1f} s, "
          f"CPU {m.cpu_s:.1f} s"
          + (f", {events:,} events" if events else ""))
    if m.server_cpu_s:
        print(f"  {'S3 server (SeaweedFS on loopback)':<44} {'':>8} {'':>8} {m.server_cpu_s:>8.1f}")


def print_totals(scale: Scale, pieces: list[Measured]) -> dict:
    measured = [m for m in pieces if not m.setup]
    wall = sum(m.wall_s for m in measured)
    run_wall = sum(m.report["run_wall_s"] for m in measured)
    ours = sum(s["ours_s"] for m in measured for s in m.report["steps"])
    rss = max(m.max_rss for m in measured)
    events = max(m.report["events"] for m in measured)
    dagster_startup = sum(m.report.get("dagster_import_s", 0) + m.report.get("instance_s", 0) for m in measured)
    totals = {
        "wall_s": wall, "run_wall_s": run_wall, "ours_s": ours, "peak_rss": rss, "events": events,
        "cpu_s": sum(m.cpu_s for m in measured),
        "server_cpu_s": sum(m.server_cpu_s for m in measured),
        "dagster_share_of_runs": (run_wall - ours) / run_wall,
        # The processes' wall adds the interpreter, the code location's imports and the instance: of these,
        # importing Dagster and opening its instance are Dagster's; everything else outside our code is not.
        "dagster_startup_s": dagster_startup,
        "dagster_share_of_processes": (run_wall - ours + dagster_startup) / wall,
        "outside_our_code_share_of_processes": (wall - ours) / wall,
    }
    graph = "full graph" if len(measured) > 1 else measured[0].name
    totals["graph"] = graph
    print(f"\n{scale.name} ({scale.description}), {graph}: {wall:.1f} s wall in {len(measured)} process(es) "
          f"({run_wall:.1f} s in runs, {ours:.1f} s in our code), peak RSS {rss / MB:,.0f} MB, "
          f"{_rate(events, wall)} events/s, CPU {totals['cpu_s']:.1f} s"
          + (f" (and the S3 server's {totals['server_cpu_s']:.1f} s)" if totals["server_cpu_s"] else ""))
    print(f"  Dagster's share: {100 * totals['dagster_share_of_runs']:.1f} % of the runs' wall; "
          f"{100 * totals['dagster_share_of_processes']:.1f} % of the processes' wall with its import and "
          f"instance start ({dagster_startup:.1f} s) (target ≤ {100 * DAGSTER_SHARE_TARGET:.0f} %); "
          f"{100 * totals['outside_our_code_share_of_processes']:.1f} % of it outside our code")
    keys = [(scale.name, graph)] + ([(scale.name, m.name) for m in measured] if len(measured) > 1 else [])
    for key in keys:
        if key in TARGETS:
            target_wall, target_rss = TARGETS[key]
            m_wall = wall if key[1] == graph else next(m.wall_s for m in measured if m.name == key[1])
            m_rss = rss if key[1] == graph else next(m.max_rss for m in measured if m.name == key[1])
            verdict = "met" if m_wall <= target_wall and m_rss <= target_rss else "MISSED"
            print(f"  target {key[1]}: ≤ {target_wall:.0f} s, ≤ {target_rss / MB / 1024:.0f} GB → "
                  f"{m_wall:.1f} s, {m_rss / MB / 1024:.2f} GB: {verdict}")
    return totals


def py_spy_binary() -> str | None:
    """py-spy on PATH, or installed beside this interpreter (a virtualenv's ``bin`` that is not activated)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), required=True)
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the simulated landing zone (and a day scale's ingested history) when present")
    parser.add_argument("--graph", choices=("full", "chain"), default="full",
                        help="the whole graph of the scale, or its data chain (raw_events → labels) only")
    parser.add_argument("--dagster-home", help="where the runs' SQLite instance lives (default: under --data); "
                        "e.g. a tmpfs folder to see Dagster's cost without fsync")
    parser.add_argument("--instance-yaml", default=str(REPO / "dagster.yaml"),
                        help="the dagster.yaml of the runs' instance (default: the repository's, the local "
                        "default users run; benchmarks/postgres.yaml for PostgreSQL; /dev/null for Dagster's "
                        "stock SQLite storage)")
    parser.add_argument("--planned-events", choices=("per-partition", "per-asset"), default="per-partition",
                        help="per-asset sets DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS for the runs: one "
                        "'materialization planned' event per asset of a range run instead of one per partition")
    parser.add_argument("--landing-format", choices=FORMATS,
                        help="the landing files' format (default: the scale's, gzipped JSON lines); another "
                        "format is simulated and measured under --data/<scale>-<format>")
    parser.add_argument("--storage", choices=("local", "s3"), default="local",
                        help="where the landing zone and the lake are: the local disk (default), or S3 on a "
                        "SeaweedFS server on loopback that the benchmark starts (benchmarks/storage.py)")
    parser.add_argument("--s3-latency-ms", type=float, default=0.0, metavar="MS",
                        help="with --storage s3: add MS to each S3 request (a proxy on loopback), as a round "
                        "trip to a distant object store does (default: 0)")
    parser.add_argument("--profile", action="store_true", help="sample each piece with py-spy")
    parser.add_argument("--py-spy", default=py_spy_binary(),
                        help="the py-spy binary (default: on PATH, or beside this Python)")
    parser.add_argument("--data", default=str(DATA), help="where data and results go (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measure the scale N times and print the fastest and the median run (default: 1)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be 1 or more, not {args.repeat}")
    if args.s3_latency_ms and args.storage != "s3":
        parser.error("--s3-latency-ms needs --storage s3")
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy: pip install py-spy somewhere and pass --py-spy PATH")

    scale = SCALES[args.scale] if args.graph == "full" else SCALES[args.scale].chain_only()
    name = scale.name
    if args.landing_format and args.landing_format != scale.file_format:
        scale = replace(scale, file_format=args.landing_format)
        name = f"{scale.name}-{scale.file_format}"
    landing = Path(args.data) / name / "landing"  # simulated on disk whatever the storage, uploaded to S3
    # S3 has a folder of its own (the server's data, the instance, the results): figures never mix.
    root = Path(args.data) / (name if args.storage == "local" else f"{name}-{args.storage}")
    work = root / "results"
    home = Path(args.dagster_home) if args.dagster_home else root / "dagster_home"
    info = machine()
    print(f"benchmark {scale.name}: {scale.description}; {info['date']}, {info['cores']} cores "
          f"({info['cpu']}), {info['memory_gb']} GB, load average {info['load_average']:.2f}")

    simulated = simulate(scale, landing, args.reuse)
    with storage_for(args.storage, root, landing, args.s3_latency_ms) as storage:
        return measure(scale, storage, simulated, home, work, info, args)


def measure(
    scale: Scale, storage: Storage, simulated: "Measured | None", home: Path, work: Path, info: dict,
    args: argparse.Namespace,
) -> int:
    """The scale's pieces on its storage, ``--repeat`` times, printed and saved."""
    history_key = {**scale.simulation(), "pieces": [p.name for p in scale.pieces if p.setup]}
    reuse_history = args.reuse and simulated is None and storage.history() == history_key
    instance_yaml = Path(args.instance_yaml).read_text()
    if "telemetry:" not in instance_yaml:
        instance_yaml += "\ntelemetry:\n  enabled: false\n"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **storage.env,
        "CHURN_DATA_URL": storage.lake_url,
        "CHURN_LANDING_URL": storage.landing_url,
        "CHURN_START_DATE": START.isoformat(),
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    if args.planned_events == "per-asset":
        env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "true"

    repeats: list[tuple[list[Measured], dict]] = []
    for repeat in range(args.repeat):
        if args.repeat > 1:
            print(f"\n=== run {repeat + 1} of {args.repeat} ===")
        if not reuse_history:
            storage.clear_lake()
        pieces = run_scale(scale, env, home, instance_yaml, work, storage, history_key, reuse_history, args)
        reuse_history = reuse_history or any(p.setup for p in scale.pieces)
        repeats.append((pieces, print_totals(scale, pieces)))
    # The median run (the lower of the two middle ones for an even count), which is every figure below.
    pieces, totals = sorted(repeats, key=lambda r: r[1]["wall_s"])[(len(repeats) - 1) // 2]
    if len(repeats) > 1:
        print_repeats(scale, [t for _, t in repeats])

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    saved = work / f"{scale.name}-{stamp}.json"
    saved.write_text(json.dumps({
        "scale": scale.name, "machine": info | {"load_average_end": os.getloadavg()[0]},
        "options": {"graph": args.graph, "landing_format": scale.file_format, "storage": args.storage,
                    "s3_latency_ms": args.s3_latency_ms,
                    "dagster_home": str(home),
                    "instance_yaml": args.instance_yaml, "planned_events": args.planned_events,
                    "repeat": args.repeat},
        "simulate": None if simulated is None else simulated.__dict__,
        # The median run's pieces and totals (the only run's, without --repeat), then every run's totals.
        "pieces": [m.__dict__ for m in pieces], "totals": totals,
        "repeats": [t for _, t in repeats],
    }, indent=1))
    print(f"\nresults saved to {saved}")
    return 0


def run_scale(
    scale: Scale, env: dict[str, str], home: Path, instance_yaml: str, work: Path, storage: Storage,
    history_key: dict, reuse_history: bool, args: argparse.Namespace,
) -> list[Measured]:
    """One measurement of the scale's pieces on a new instance (the history's setup pieces only when the
    lake does not hold it already)."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(instance_yaml)
    instance = f"{args.instance_yaml} in {home}"
    # The instance's storage is created as a user's is, once, before any timed piece (docs/operations.md:
    # `dagster instance migrate`); otherwise the first piece's process would also create it (~1 s).
    with open(work / "instance_migrate.log", "w") as log:
        if run_child([sys.executable, "-m", "dagster", "instance", "migrate"], env, log)[3]:
            raise SystemExit(f"dagster instance migrate failed; its log is {work / 'instance_migrate.log'}")
    print(f"instance: {instance}, created by `dagster instance migrate`, planned events {args.planned_events}")

    pieces: list[Measured] = []
    for piece in scale.pieces:
        if piece.setup and reuse_history:
            print(f"\n{piece.name}: reusing the history in {storage.lake_url}")
            continue
        pieces.append(run_piece(piece, env, work, storage, args.py_spy if args.profile else None))
        if piece.setup and piece is [p for p in scale.pieces if p.setup][-1]:
            storage.write_history(history_key)
    return pieces


def print_repeats(scale: Scale, runs: list[dict]) -> None:
    """The fastest and the median of repeated measurements (the lower middle one of an even count: a run
    that happened), and each target against both."""
    walls = sorted(t["wall_s"] for t in runs)
    cpus = sorted(t["cpu_s"] for t in runs)
    graph, median = runs[0]["graph"], statistics.median_low(walls)
    print(f"\n{scale.name}, {graph}, {len(runs)} runs: wall {', '.join(f'{w:.1f}' for w in walls)} s "
          f"(fastest {walls[0]:.1f} s, median {median:.1f} s); CPU {cpus[0]:.1f}–{cpus[-1]:.1f} s; "
          f"peak RSS up to {max(t['peak_rss'] for t in runs) / MB:,.0f} MB")
    if (scale.name, graph) in TARGETS:
        target_wall, target_rss = TARGETS[(scale.name, graph)]
        rss_ok = max(t["peak_rss"] for t in runs) <= target_rss
        for label, wall in (("fastest", walls[0]), ("median", median)):
            verdict = "met" if wall <= target_wall and rss_ok else "MISSED"
            print(f"  target {graph}: ≤ {target_wall:.0f} s, ≤ {target_rss / MB / 1024:.0f} GB → {label} "
                  f"{wall:.1f} s: {verdict}")


if __name__ == "__main__":
    sys.exit(main())
