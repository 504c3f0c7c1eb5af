"""S3 requests of one normal day of operation, by kind (LIST, HEAD, GET, range GET, PUT, multipart, COPY, DELETE)
and by step, on small simulated data: what a store billed by the request, and far away, charges for a day.

    python -m benchmarks.s3_requests                      # 3,000 users × 75 days, counts per step and per day
    python -m benchmarks.s3_requests --latency-ms 20      # also the daily refresh's wall time at 20 ms a request
    python -m benchmarks.s3_requests --latency-ms 20 --repeat 3   # ... its fastest and median of three runs

The tests' SeaweedFS on loopback (``churn_assets_tests/s3_server.py``) holds the lake and the landing zone; each
piece runs in a process of its own, as a run does in production (nothing kept in memory or in ``TMPDIR`` from the
piece before), through the tests' proxy, which records every request (``churn_assets_tests/s3_proxy.py``), and
with ``--latency-ms`` behind ``run.py``'s latency proxy. A request is counted against the step (Dagster's step
start to its end) it was made in; "(run)" is the run's own, outside any step. The day:

* ``daily_refresh`` of one day (raw_events → labels with their checks), as the schedule or the sensor runs it;
* ``landing_sensor``: 1,440 ticks a day, 24 of them (the first of each hour) listing every landing file;
* ``weekly_scoring`` (predictions, drift_report) and ``monthly_retraining`` (training_set, model), shown per day
  of the week or month they serve;
* a 30-day backfill of ``daily_refresh`` as one range run (not every day: shown on its own).

The other sensors (``drift_retraining_sensor``, ``run_failure_alert``) and the schedules read the Dagster
instance, not S3: a tick of each is counted to show it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from churn_assets_tests.s3_proxy import KINDS

START = dt.date(2025, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=int, default=75, help="landing days from 2025-01-01 (the last is refreshed)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="also time the daily refresh at MS a request")
    parser.add_argument("--repeat", type=int, default=1, help="time the daily refresh this many times")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--piece", help=argparse.SUPPRESS)  # run one piece in this process (the child's side)
    args = parser.parse_args()
    if args.piece:
        print("RESULT " + json.dumps(_run_piece(args.piece)), flush=True)
        return
    work = Path(args.keep or tempfile.mkdtemp(prefix="churn-s3-requests-"))
    try:
        _measure(work, args.users, args.days, args.latency_ms, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path, users: int, days: int, latency_ms: float, repeat: int) -> None:
    import churn_assets
    from churn_assets_tests.s3_server import SeaweedS3

    last = START + dt.timedelta(days=days - 1)
    server = SeaweedS3(work / "seaweedfs")
    server.start()
    try:
        env = {**os.environ, **server.env, "CHURN_DATA_URL": "s3://lake/day", "CHURN_LANDING_URL": "s3://landing/day",
               "CHURN_START_DATE": START.isoformat(), "DAGSTER_HOME": str(work / "dagster_home"),
               "CHURN_LANDING_DEADLINE_HOURS": "off", "TMPDIR": str(_tmp(work))}
        Path(env["DAGSTER_HOME"]).mkdir(exist_ok=True)
        (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        print(f"code: {Path(churn_assets.__file__).parent}")
        print(f"simulating {users:,} users × {days} days to {env['CHURN_LANDING_URL']}", flush=True)
        subprocess.run([str(Path(sys.executable).with_name("churn-assets")), "simulate", "--out",
                        env["CHURN_LANDING_URL"], "--users", str(users), "--days", str(days), "--no-progress"],
                       env=env, check=True)
        month = last.strftime("%Y-%m")
        pieces = [
            ("backfill of 30 days (one range run)", f"range:{START}:{START + dt.timedelta(days=29)}"),
            ("history (not counted)", f"range:{START + dt.timedelta(days=30)}:{last - dt.timedelta(days=1)}"),
            (f"monthly_retraining {month}", f"monthly:{month}"),
            (f"daily_refresh {last}", f"daily:{last}"),
            (f"weekly_scoring {last}", f"weekly:{last}"),
            ("landing_sensor: a tick listing every file (first of the hour)", "sensor:every"),
            ("landing_sensor: a tick", "sensor:recent"),
            ("drift_retraining_sensor: a tick", "drift_sensor"),
        ]
        counted: dict[str, dict] = {}
        for title, piece in pieces:
            counted[title] = _child(piece, env)
            if not title.endswith("(not counted)"):
                _print_piece(title, counted[title])
        _print_day(counted, month, last)
        if latency_ms:
            _time_daily_refresh(server, env, last, latency_ms, repeat)
    finally:
        server.stop()


def _tmp(work: Path) -> Path:
    path = work / "tmp"
    path.mkdir(exist_ok=True)
    return path


def _child(piece: str, env: dict[str, str]) -> dict:
    """Runs ``piece`` in a new process; its counts ``{step: {kind: n}}`` and its wall time."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.s3_requests", "--piece", piece], env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"piece {piece} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def _run_piece(piece: str) -> dict:
    """In the child: one piece, through a counting proxy set up before anything reads the AWS variables."""
    import time

    from churn_assets_tests.s3_proxy import HoldingProxy

    proxy = HoldingProxy(os.environ["AWS_ENDPOINT_URL"])
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
    import dagster as dg

    from churn_assets import definitions

    instance = dg.DagsterInstance.get()
    began = time.perf_counter()
    run_id = _execute(piece, definitions.defs, instance, proxy)
    wall = time.perf_counter() - began
    steps = _step_windows(instance, run_id) if run_id else []
    counts: dict[str, Counter] = defaultdict(Counter)
    for request in proxy.requests:
        step = next((key for key, start, end in steps if start <= request.at <= end), "(run)")
        counts[step][request.kind] += 1
    proxy.close()
    return {"steps": {step: dict(kinds) for step, kinds in counts.items()}, "wall_s": wall,
            "order": [key for key, _, _ in steps]}


def _execute(piece: str, defs, instance, proxy) -> str | None:
    import dagster as dg

    kind, _, rest = piece.partition(":")
    if kind == "range":
        first, last = rest.split(":")
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        result = defs.get_job_def("daily_refresh").execute_in_process(instance=instance, tags=tags)
    elif kind in ("daily", "weekly", "monthly"):
        job = {"daily": "daily_refresh", "weekly": "weekly_scoring", "monthly": "monthly_retraining"}[kind]
        result = defs.get_job_def(job).execute_in_process(instance=instance, partition_key=rest)
    elif kind == "sensor":
        _landing_ticks(defs, instance, proxy, every=rest == "every")
        return None
    elif kind == "drift_sensor":
        sensor = defs.get_sensor_def("drift_retraining_sensor")
        sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        return None
    else:
        raise ValueError(piece)
    if not result.success:
        raise RuntimeError(f"{piece}: the run failed")
    return result.run_id


def _landing_ticks(defs, instance, proxy, every: bool) -> None:
    """A tick of the landing sensor with the cursor a running sensor has by now (every day requested): the first
    of an hour (``every``) or another, one minute after the tick before."""
    import dagster as dg

    sensor = defs.get_sensor_def("landing_sensor")
    resources = defs.resources

    def tick(cursor: str | None, last_tick: float | None):
        context = dg.SensorEvaluationContext(
            instance_ref=None, instance=instance, resources=resources, cursor=cursor,
            repository_def=defs.get_repository_def(), last_tick_completion_time=last_tick)
        return sensor.evaluate_tick(context)

    cursor = _SENSOR_CURSOR.read_text() if _SENSOR_CURSOR.exists() else None
    if cursor is None:  # the cursor of a sensor that has requested every landing day so far (not counted)
        first = tick(None, None)
        versions = {request.partition_key: request.run_key.split(":", 1)[1] for request in first.run_requests}
        cursor = first.cursor if not versions else json.dumps({**json.loads(first.cursor or "{}"), **versions})
        _SENSOR_CURSOR.write_text(cursor)
    proxy.requests.clear()
    now = dt.datetime.now(dt.UTC).timestamp()
    tick(cursor, None if every else now - 60)


_SENSOR_CURSOR = Path(os.environ.get("DAGSTER_HOME", "."), "landing_sensor_cursor.json")


def _step_windows(instance, run_id: str) -> list[tuple[str, float, float]]:
    """Each step of the run with the time it started and ended (epoch seconds), in order."""
    import dagster as dg

    starts, windows = {}, []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            windows.append((event.step_key, starts[event.step_key], entry.timestamp))
    return windows


def _total(counted: dict) -> Counter:
    total: Counter = Counter()
    for kinds in counted["steps"].values():
        total.update(kinds)
    return total


def _row(label: str, kinds: dict | Counter, width: int = 44) -> str:
    cells = "".join(f"{kinds.get(kind, 0):>10,.0f}" for kind in KINDS)
    return f"{label:<{width}}{cells}{sum(kinds.values()):>10,.0f}"


def _header(title: str, width: int = 44) -> str:
    return f"\n{title:<{width}}" + "".join(f"{kind:>10}" for kind in KINDS) + f"{'all':>10}"


def _print_piece(title: str, counted: dict) -> None:
    print(_header(title))
    steps = counted["steps"]
    for step in [*counted["order"], "(run)"]:
        if step in steps:
            print(_row(f"  {step}", steps[step]))
    print(_row("  total", _total(counted)) + f"   ({counted['wall_s']:.1f} s)", flush=True)


def _print_day(counted: dict, month: str, last: dt.date) -> None:
    """A normal day: one refresh, 1,440 sensor ticks (24 listing every file), the week's scoring and the month's
    retraining shared over their days, and the other sensors' ticks."""
    every, recent = (_total(counted[f"landing_sensor: {t}"]) for t in
                     ("a tick listing every file (first of the hour)", "a tick"))
    sensor = Counter({kind: 24 * every[kind] + 1416 * recent[kind] for kind in {*every, *recent}})
    drift = Counter({kind: 288 * n for kind, n in _total(counted["drift_retraining_sensor: a tick"]).items()})
    parts = [
        ("daily_refresh (1 run)", _total(counted[f"daily_refresh {last}"])),
        ("landing_sensor (1,440 ticks)", sensor),
        ("drift_retraining_sensor (288 ticks)", drift),
        ("weekly_scoring (1 run a week) / 7", _scaled(_total(counted[f"weekly_scoring {last}"]), 1 / 7)),
        ("monthly_retraining (1 run a month) / 30", _scaled(_total(counted[f"monthly_retraining {month}"]), 1 / 30)),
    ]
    print(_header("one day"))
    day: Counter = Counter()
    for label, kinds in parts:
        print(_row(f"  {label}", kinds))
        day.update(kinds)
    print(_row("  a day", day))
    print(_row("  a 30-day backfill (one range run)", _total(counted["backfill of 30 days (one range run)"])))


def _scaled(kinds: Counter, factor: float) -> Counter:
    return Counter({kind: n * factor for kind, n in kinds.items()})


def _time_daily_refresh(server, env: dict[str, str], last: dt.date, latency_ms: float, repeat: int) -> None:
    """The daily refresh of ``last`` again, ``repeat`` times, each request held back ``latency_ms`` (run.py's latency
    proxy): the fastest and the median (of an even count, the lower middle) wall time of the run in its process."""
    from benchmarks.storage import LatencyProxy

    proxy = LatencyProxy(server.ports["s3"], latency_ms / 1000)
    proxy.start()
    runs = [_child(f"daily:{last}", {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"})
            for _ in range(repeat)]
    walls = sorted(run["wall_s"] for run in runs)
    print(f"\ndaily_refresh {last} at {latency_ms:g} ms a request: {sum(_total(runs[0]).values())} requests, "
          f"{walls[0]:.1f} s fastest, {walls[(len(walls) - 1) // 2]:.1f} s median of {len(walls)} "
          f"({', '.join(f'{wall:.1f}' for wall in walls)})", flush=True)


if __name__ == "__main__":
    main()
