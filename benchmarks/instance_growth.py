"""What a Dagster instance and the lake store per day of normal operation, measured on the real machinery.

    python -m benchmarks.instance_growth                        # 2,000 users x 62 days in a temporary folder
    python -m benchmarks.instance_growth --report DAGSTER_HOME [--lake LAKE]   # only measure an existing instance

In a temporary folder: ``churn-assets simulate`` writes the landing days; ``dagster asset materialize`` loads
the history up to the day before the last ``--daemon-days`` as one range run (a history load) and trains the
first model (``monthly_retraining``'s assets); then ``dagster-daemon`` runs the landing sensor (every
``--sensor-interval`` s instead of 60), ``drift_retraining_sensor`` and ``run_failure_alert`` for
``--daemon-minutes``, which refresh the last days one run each, as every day in production; last, the CLI scores
one Sunday (``weekly_scoring``'s assets). After each phase it prints what the instance holds: rows and bytes per
table, each run's events, sensor ticks by sensor and status, compute-log files, the lake's hidden and staging
files. It ends with a day of operation (one refresh run, a seventh of a scoring run, a thirtieth of a retraining
run, 1,440 landing-sensor ticks, the drift sensor's and the failure sensor's ticks and the schedules') and its
growth over six months and two years under the retention of the instance file. Bytes are the rows' own bytes
(the sum of their columns), not the file's pages: SQLite and PostgreSQL add their indexes and free pages on top.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Ticks a day at the intervals of churn_assets/automation (landing_sensor: CHURN_LANDING_SENSOR_INTERVAL's default).
SENSOR_INTERVALS = {"landing_sensor": 60, "drift_retraining_sensor": 300}
SCHEDULE_TICKS_PER_DAY = {"daily_refresh": 0.0, "weekly_scoring": 21 / 7, "monthly_retraining": 20 / 30.4}
RUNS_PER_DAY = {"daily_refresh": 1.0, "weekly_scoring": 1 / 7, "monthly_retraining": 1 / 30.4}


def _tables(db: Path) -> dict[str, tuple[int, int]]:
    """``{table: (rows, bytes)}`` of one SQLite file: bytes are the sum of every column's length."""
    found = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        for name in names:
            columns = [r[1] for r in conn.execute(f"pragma table_info('{name}')")]
            size = " + ".join(f"coalesce(length(cast(\"{c}\" as blob)), 0)" for c in columns) or "0"
            rows, nbytes = conn.execute(f"select count(*), coalesce(sum({size}), 0) from \"{name}\"").fetchone()
            found[name] = (rows, nbytes)
    return found


def _files(folder: Path) -> tuple[int, int, int]:
    """(files, folders, bytes) under ``folder``."""
    files = folders = nbytes = 0
    for _, dirs, names in os.walk(folder):
        folders += len(dirs)
        for name in names:
            files += 1
            nbytes += os.path.getsize(os.path.join(_, name))
    return files, folders, nbytes


def measure(home: Path, lake: Path | None) -> dict:
    """What the instance at ``home`` (local SQLite layout) and the lake hold."""
    runs_dir = home / "history" / "runs"
    # A shard per run; ".db" holds the events of no run (the daemon's freshness state changes).
    shards = sorted(p for p in runs_dir.glob("*.db") if p.stem not in ("index", ""))
    found = {
        "files": {p.name: p.stat().st_size for p in sorted(home.rglob("*")) if p.is_file()},
        "index": _tables(runs_dir / "index.db"),
        "runs_db": _tables(home / "history" / "runs.db"),
        "schedules": _tables(home / "schedules" / "schedules.db"),
        "shards": {p.stem: _tables(p)["event_logs"] for p in shards},
        "shard_files": {p.stem: sum(f.stat().st_size for f in runs_dir.glob(p.name + "*")) for p in shards},
        "compute_logs": _files(home / "storage") if (home / "storage").exists() else (0, 0, 0),
    }
    with sqlite3.connect(f"file:{home / 'history' / 'runs.db'}?mode=ro", uri=True) as conn:
        found["jobs"] = dict(conn.execute("select run_id, pipeline_name from runs").fetchall())
    with sqlite3.connect(f"file:{home / 'schedules' / 'schedules.db'}?mode=ro", uri=True) as conn:
        ticks = conn.execute("select tick_body, status from job_ticks").fetchall()
    by = Counter()
    for body, status in ticks:
        data = json.loads(body)
        name = data.get("job_name", "?")
        by[(name, status, "ticks")] += 1
        by[(name, status, "bytes")] += len(body)
        by[(name, status, "cursor_bytes")] += len(data.get("cursor") or "")
        by[(name, status, "with_log")] += 1 if data.get("log_key") else 0
    found["ticks"] = by
    if lake is not None and lake.exists():
        hidden = [p for p in lake.rglob("*") if p.name.startswith(".") or "_staging" in p.parts]
        found["lake"] = {
            "all": _files(lake),
            "quarantine": _files(lake / "raw_events_quarantine"),
            "hidden_or_staging": len(hidden),
        }
    return found


def print_report(found: dict, title: str) -> None:
    print(f"\n== {title}")
    print(f"files under DAGSTER_HOME: {len(found['files'])}, {sum(found['files'].values()):,} B")
    for db in ("index", "runs_db", "schedules"):
        for table, (rows, nbytes) in sorted(found[db].items()):
            if rows:
                print(f"  {db:<10} {table:<32} {rows:>8,} rows {nbytes:>12,} B")
    jobs = Counter(found["jobs"].values())
    print(f"runs: {dict(jobs)}")
    for run_id, (rows, nbytes) in found["shards"].items():
        print(f"  run {run_id[:8]} {found['jobs'].get(run_id, '?'):<22} {rows:>6,} events {nbytes:>10,} B"
              f" (file {found['shard_files'][run_id]:,} B)")
    files, folders, nbytes = found["compute_logs"]
    print(f"compute logs (storage/): {files} files in {folders} folders, {nbytes:,} B")
    for (name, status, what), value in sorted(found["ticks"].items()):
        if what == "ticks":
            t = found["ticks"]
            print(f"  ticks {name:<26} {status:<8} {value:>6,} ticks {t[(name, status, 'bytes')]:>10,} B"
                  f" (cursors {t[(name, status, 'cursor_bytes')]:,} B, {t[(name, status, 'with_log')]} with a log)")
    if "lake" in found:
        lake = found["lake"]
        print(f"lake: {lake['all'][0]:,} files {lake['all'][2]:,} B; quarantine {lake['quarantine'][0]} files "
              f"{lake['quarantine'][2]:,} B; hidden or _staging: {lake['hidden_or_staging']}")


def _run(args: list[str], env: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    print(f"   {time.monotonic() - started:5.1f} s  {' '.join(args[1:6])} ...")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def simulate_operation(work: Path, users: int, days: int, daemon_days: int, daemon_minutes: float,
                       sensor_interval: int) -> tuple[Path, Path, dict[str, dict]]:
    """Runs the phases above in ``work``; returns the instance folder, the lake and a measure after each phase."""
    home, lake, landing = work / "dagster_home", work / "lake", work / "landing"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    start = dt.date(2025, 1, 1)
    last = start + dt.timedelta(days=days - 1)
    loaded = last - dt.timedelta(days=daemon_days)
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHURN_DATA_URL": str(lake), "CHURN_LANDING_URL": str(landing),
           "CHURN_START_DATE": start.isoformat(), "CHURN_LANDING_SENSOR_INTERVAL": str(sensor_interval),
           "PYTHONWARNINGS": "ignore"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    phases = {}
    _run([_bin("churn-assets"), "simulate", "--out", str(landing), "--users", str(users), "--days", str(days),
          "--start", start.isoformat(), "--no-progress"], env)
    _run([_bin("dagster"), "instance", "migrate"], env)
    materialize = [_bin("dagster"), "asset", "materialize", "-m", "churn_assets.definitions"]
    _run([*materialize, "--select", "raw_events,install_times,user_daily,features,labels",
          "--partition-range", f"{start}...{loaded}"], env)
    phases["history"] = measure(home, lake)
    month = (loaded + dt.timedelta(days=1)).strftime("%Y-%m")  # the month the next day is in: its labels are stored
    _run([*materialize, "--select", "training_set,model", "--partition", month], env)
    phases["retraining"] = measure(home, lake)
    workspace = str(ROOT / "workspace.yaml")
    for sensor in ("landing_sensor", "drift_retraining_sensor"):
        _run([_bin("dagster"), "sensor", "start", sensor, "-w", workspace], env)
    with open(work / "daemon.log", "wb") as log:
        daemon = subprocess.Popen([_bin("dagster-daemon"), "run", "-w", workspace], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        began = time.monotonic()
        try:
            time.sleep(daemon_minutes * 60)
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(60)
    phases["daemon"] = measure(home, lake)
    phases["daemon"]["seconds"] = time.monotonic() - began
    sunday = last - dt.timedelta(days=(last.weekday() + 1) % 7)
    _run([*materialize, "--select", "predictions,drift_report", "--partition", sunday.isoformat()], env)
    phases["scoring"] = measure(home, lake)
    return home, lake, phases


def _run_costs(found: dict) -> dict[str, tuple[float, float, float]]:
    """Per job: (runs, events, event bytes) of its runs: the mean over the runs of the phase."""
    per = {}
    for job in set(found["jobs"].values()):
        ids = [r for r, j in found["jobs"].items() if j == job]
        rows = [found["shards"][r] for r in ids if r in found["shards"]]
        per[job] = (len(ids), sum(r[0] for r in rows) / max(len(rows), 1), sum(r[1] for r in rows) / max(len(rows), 1))
    return per


def _tick_figures(before: dict, after: dict) -> dict[str, tuple[int, float, float]]:
    """Per sensor, from the ticks the daemon phase stored: (ticks, bytes a tick without its cursor, cursor bytes)."""
    figures = {}
    for name in {key[0] for key in after["ticks"]}:
        count = nbytes = cursor = 0
        for status in ("SKIPPED", "SUCCESS", "FAILURE", "STARTED"):
            added = [after["ticks"].get((name, status, what), 0) - before["ticks"].get((name, status, what), 0)
                     for what in ("ticks", "bytes", "cursor_bytes")]
            count, nbytes, cursor = count + added[0], nbytes + added[1], cursor + added[2]
        if count:
            figures[name] = (count, (nbytes - cursor) / count, cursor / count)
    return figures


def per_day(phases: dict[str, dict], tracked_days: int) -> None:
    """Prints a day of operation, from the daemon phase's refresh runs and ticks and the CLI's other runs, and what
    it adds up to over six months and two years under the instance file's retention."""
    before, after = phases["retraining"], phases["daemon"]
    refreshes = [r for r, job in after["jobs"].items() if job == "daily_refresh" and r not in before["jobs"]]
    n = max(len(refreshes), 1)
    index = lambda found: sum(v[1] for v in found["index"].values())  # noqa: E731
    index_rows = lambda found: sum(v[0] for v in found["index"].values())  # noqa: E731
    runs_db = lambda found: sum(v[1] for v in found["runs_db"].values())  # noqa: E731
    refresh = {
        "events": sum(after["shards"][r][0] for r in refreshes) / n,
        "shard file": sum(after["shard_files"][r] for r in refreshes) / n,
        "index rows": (index_rows(after) - index_rows(before)) / n,
        "index bytes": (index(after) - index(before)) / n,
        "runs.db bytes": (runs_db(after) - runs_db(before)) / n,
    }
    other = {job: [r for r in phases[then]["jobs"] if r not in phases[since]["jobs"]]
             for job, since, then in (("scoring", "daemon", "scoring"), ("retraining", "history", "retraining"))}
    shard = lambda runs: sum(phases["scoring"]["shard_files"][r] for r in runs) / max(len(runs), 1)  # noqa: E731
    logs = [a - b for a, b in zip(after["compute_logs"], before["compute_logs"], strict=True)]  # with the ticks' logs
    runs_total = n
    print("\n== one day of operation (measured)")
    print(f"daily_refresh run (mean of {len(refreshes)} launched by the daemon): {refresh['events']:,.0f} events,"
          f" run shard file {refresh['shard file']:,.0f} B; index.db +{refresh['index rows']:,.0f} rows"
          f" +{refresh['index bytes']:,.0f} B; runs.db +{refresh['runs.db bytes']:,.0f} B")
    print(f"scoring run shard file {shard(other['scoring']):,.0f} B; "
          f"retraining run shard file {shard(other['retraining']):,.0f} B")
    print(f"compute logs in the daemon phase: {logs[0] / n:.1f} files, {logs[2] / n:,.0f} B a refresh run"
          " (and its ticks' logs)")
    ticks = _tick_figures(before, after)
    minutes = after["seconds"] / 60
    cursor_per_day = ticks.get("landing_sensor", (0, 0, 0))[2] / max(tracked_days, 1)
    for name, (count, nbytes, cursor) in sorted(ticks.items()):
        print(f"{name:<24} {count / minutes:5.1f} ticks/min in the daemon phase, {nbytes:,.0f} B a tick"
              f" + cursor {cursor:,.0f} B")
    print(f"landing_sensor's cursor: {cursor_per_day:.0f} B per landing day tracked (a digest of its marker's "
          "version: the same on S3), at most 1,000 days")

    # A day of production: one refresh, a seventh of a scoring run, a thirtieth of a retraining run.
    runs_a_day = refresh["shard file"] + refresh["index bytes"] + refresh["runs.db bytes"] + (
        shard(other["scoring"]) / 7 + shard(other["retraining"]) / 30.4)
    ticks_a_day = {name: 86400 / interval for name, interval in
                   (("landing_sensor", 60), ("drift_retraining_sensor", 300), ("run_failure_alert", 30))}
    print("\n== extrapolated (bytes are the rows' and files' own; SQLite and PostgreSQL add indexes and free pages)")
    print(f"runs and their events: {runs_a_day / 1e6:.2f} MB a day, kept forever (partition status and history)")
    for days in (182, 730):
        cursor = cursor_per_day * min(days, 1000)
        tick_day = sum(per * (ticks[name][1] + (cursor if name == "landing_sensor" else ticks[name][2]))
                       for name, per in ticks_a_day.items() if name in ticks)
        skipped_kept = 7 * tick_day
        success_kept = min(days, 90) * (cursor + ticks.get("landing_sensor", (0, 0, 0))[1])
        success_forever = days * (cursor + ticks.get("landing_sensor", (0, 0, 0))[1])
        print(f"after {days} days: runs/events {days * runs_a_day / 1e6:,.0f} MB, compute logs"
              f" {days * (1 + 1 / 7 + 1 / 30.4) * logs[2] / runs_total / 1e6:,.1f} MB;"
              f" sensor ticks written {tick_day / 1e6:,.1f} MB a day (landing cursor {cursor / 1e3:,.1f} kB),"
              f" skipped ticks kept (7 days) {skipped_kept / 1e6:,.0f} MB,"
              f" successful ticks kept {success_kept / 1e6:,.1f} MB"
              f" (forever: {success_forever / 1e6:,.1f} MB)")


def postgres_runs(work: Path, days: int) -> None:
    """The production instance file (deploy/dagster.yaml, with its runs in this process instead of ECS and its
    compute logs on disk instead of S3) on the tests' private PostgreSQL: the daily refresh of the first ``days``
    days, one ``dagster asset materialize`` each, and what each run adds to each table (rows, and bytes with
    indexes and TOAST as PostgreSQL counts them)."""
    import yaml

    from churn_assets_tests.postgres_server import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        home = work / "pg_home"
        home.mkdir()
        config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
        del config["run_launcher"]
        config["compute_logs"] = {"module": "dagster._core.storage.local_compute_log_manager",
                                  "class": "LocalComputeLogManager", "config": {"base_dir": str(work / "pg_logs")}}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, **server.env, "DAGSTER_HOME": str(home), "CHURN_DATA_URL": str(work / "pg_lake"),
               "CHURN_LANDING_URL": str(work / "landing"), "CHURN_START_DATE": "2025-01-01", "PYTHONWARNINGS": "ignore"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        _run([_bin("dagster"), "instance", "migrate"], env)
        sizes = ("select relname, n_live_tup, pg_total_relation_size(relid) from pg_stat_user_tables"
                 " where schemaname = 'public'")

        def snapshot() -> dict[str, tuple[int, int]]:
            server.query("analyze; select 1")
            return {name: (rows, nbytes) for name, rows, nbytes in server.query(sizes)}

        first = snapshot()
        for n in range(days):
            day = (dt.date(2025, 1, 1) + dt.timedelta(days=n)).isoformat()
            _run([_bin("dagster"), "asset", "materialize", "-m", "churn_assets.definitions", "--select",
                  "raw_events,install_times,user_daily,features,labels", "--partition", day], env)
        last = snapshot()
        print(f"\n== PostgreSQL (deploy/dagster.yaml): what one daily refresh run adds, mean of {days}")
        for name in sorted(last):
            rows = (last[name][0] - first.get(name, (0, 0))[0]) / days
            nbytes = (last[name][1] - first.get(name, (0, 0))[1]) / days
            if rows or nbytes:
                print(f"  {name:<32} {rows:>8,.1f} rows {nbytes:>12,.0f} B")
        total = sum(v[1] for v in last.values()) - sum(v[1] for v in first.values())
        print(f"  all tables                       {total / days:>21,.0f} B a run")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="only measure this DAGSTER_HOME (local SQLite layout)")
    parser.add_argument("--lake", type=Path, help="with --report: the local lake to measure too")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=62)
    parser.add_argument("--daemon-days", type=int, default=3, help="days the landing sensor refreshes, one run each")
    parser.add_argument("--daemon-minutes", type=float, default=3.0)
    parser.add_argument("--sensor-interval", type=int, default=5, help="landing_sensor's interval in the daemon, s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--postgres-days", type=int, default=5,
                        help="daily refresh runs through deploy/dagster.yaml on a private PostgreSQL (0: none)")
    args = parser.parse_args()
    if args.report:
        print_report(measure(args.report, args.lake), str(args.report))
        return
    work = Path(tempfile.mkdtemp(prefix="churn-growth-"))
    try:
        home, lake, phases = simulate_operation(work, args.users, args.days, args.daemon_days, args.daemon_minutes,
                                                args.sensor_interval)
        for name, found in phases.items():
            print_report(found, f"after {name}")
        per_day(phases, args.days - 1)
        if args.postgres_days:
            postgres_runs(work, args.postgres_days)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
