"""Issue 6's yardstick: one DuckDB query over the same landing files, computing a subset of ``features``.

    python -m benchmarks.duckdb_baseline --scale small      # after python -m benchmarks.run --scale small

Users compare the chain with what they run today, one of which is "one SQL query in DuckDB over the same events
(about 10 s for a subset of our features)". This is that query, written as a DuckDB user would: the landing
zone's event files read with their hive ``date`` (the export day, as ``user_daily`` keys them), each event once
(by its id, Amplitude's ``$insert_id``), sessions without Amplitude's ``-1`` (no session), a row per user and
active day, each row spread over the 28 snapshot days it counts in, then grouped per user and snapshot day. It
computes 9 of the 57 feature columns, for every user active in D-27..D, for every day D of the landing zone, and
writes them as Parquet, a folder per day.

It does none of what the data chain does besides: no typed validation or quarantine of bad rows, no install
times, tenure, trends, per-type counts, minutes, purchases, last attributes, labels, checks, Dagster bookkeeping
or lineage. Its figures are printed beside the chain's lake (``--lake``: the scale's, when the benchmark ran the
chain on it), with the snapshots in both and the share of them on which each value agrees.
"""

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / ".data"

# Feature columns of docs/features.md this query computes, with the same names and meaning.
COLUMNS = (
    "active_days_1d", "active_days_7d", "active_days_28d",
    "n_events_7d", "n_events_28d", "n_sessions_7d", "n_sessions_28d", "revenue_28d",
    "days_since_last_active",
)


def landing_source(landing: Path) -> str:
    """A query of the landing zone's events (gzipped JSON lines, JSON lines or Parquet): ``event_id``, ``user_id``,
    ``session_id``, ``revenue`` and the hive ``date``."""
    events = landing / "events"
    if any(events.glob("date=*/*.parquet")):
        return (f"SELECT event_id, user_id, session_id, revenue, date "
                f"FROM read_parquet('{events}/date=*/*.parquet', hive_partitioning = true, union_by_name = true)")
    pattern = "*.jsonl.gz" if any(events.glob("date=*/*.jsonl.gz")) else "*.jsonl"
    return (
        f"SELECT \"$insert_id\" AS event_id, user_id, session_id, revenue, date "
        f"FROM read_json('{events}/date=*/{pattern}', format = 'newline_delimited', hive_partitioning = true, "
        "columns = {'$insert_id': 'VARCHAR', 'user_id': 'VARCHAR', 'session_id': 'BIGINT', 'revenue': 'DOUBLE'})"
    )


def query(landing: Path, out: Path) -> str:
    return f"""
COPY (
  WITH events AS (  -- an event re-sent in the day's export once (its $insert_id), with a user
    SELECT DISTINCT ON (date, event_id) * FROM ({landing_source(landing)}) WHERE user_id IS NOT NULL
  ), daily AS (  -- session_id -1: an event outside any session
    SELECT user_id, date AS day, count(*) AS n_events,
           count(DISTINCT session_id) FILTER (WHERE session_id <> -1) AS n_sessions,
           coalesce(sum(revenue), 0) AS revenue
    FROM events
    GROUP BY ALL
  ), spread AS (
    SELECT daily.*, day + CAST(i AS INTEGER) AS snapshot FROM daily, range(28) AS r(i)
  )
  SELECT snapshot AS date, user_id,
    count(*) FILTER (WHERE snapshot = day) AS active_days_1d,
    count(*) FILTER (WHERE snapshot - day < 7) AS active_days_7d,
    count(*) AS active_days_28d,
    coalesce(sum(n_events) FILTER (WHERE snapshot - day < 7), 0) AS n_events_7d,
    sum(n_events) AS n_events_28d,
    coalesce(sum(n_sessions) FILTER (WHERE snapshot - day < 7), 0) AS n_sessions_7d,
    sum(n_sessions) AS n_sessions_28d,
    sum(revenue) AS revenue_28d,
    min(snapshot - day) AS days_since_last_active
  FROM spread
  WHERE snapshot <= (SELECT max(day) FROM daily)
  GROUP BY ALL
  ORDER BY date, user_id
) TO '{out}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE true, COMPRESSION zstd)
"""


def run(landing: Path, out: Path, threads: int) -> dict:
    """Runs the query in this process and returns its figures: wall and CPU seconds, peak RSS, rows written.
    ``out`` is emptied first: DuckDB replaces the day folders it writes, not an earlier run's other days."""
    import duckdb

    shutil.rmtree(out, ignore_errors=True)
    connection = duckdb.connect()
    connection.execute(f"SET threads = {threads}")
    connection.execute("SET enable_progress_bar = false")
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    connection.execute(query(landing, out))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    (rows,) = connection.execute(f"SELECT count(*) FROM read_parquet('{out}/*/*.parquet')").fetchone()
    return {
        "wall_s": wall,
        "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "peak_rss": after.ru_maxrss * 1024,
        "rows": rows,
    }


def agreement(out: Path, lake: Path) -> dict:
    """How the query's rows compare with the chain's ``features`` on the same days: rows in both, rows in one
    only, and per column the share of shared rows with the same value (revenue to a millionth; a null on either
    side is a difference: none of the columns has one)."""
    import polars as pl

    ours = pl.scan_parquet(f"{lake}/features/*/*.parquet", hive_partitioning=True).select("date", "user_id", *COLUMNS)
    theirs = pl.scan_parquet(f"{out}/*/*.parquet", hive_partitioning=True).select("date", "user_id", *COLUMNS)
    joined = ours.join(theirs, on=["date", "user_id"], how="full", suffix="_duckdb", coalesce=True)
    both = pl.col("active_days_28d").is_not_null() & pl.col("active_days_28d_duckdb").is_not_null()

    def equal(c: str) -> pl.Expr:
        ours_value, their_value = pl.col(c), pl.col(f"{c}_duckdb")
        return (ours_value - their_value).abs() < 1e-6 if c == "revenue_28d" else ours_value == their_value

    same = {c: equal(c).fill_null(False) for c in COLUMNS}
    figures = joined.select(
        both.sum().alias("rows_in_both"),
        (pl.col("active_days_28d_duckdb").is_null()).sum().alias("rows_only_in_features"),
        (pl.col("active_days_28d").is_null()).sum().alias("rows_only_in_duckdb"),
        *[same[c].filter(both).mean().alias(c) for c in COLUMNS],
    ).collect()
    return figures.row(0, named=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duckdb_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="small", help="the scale whose landing zone to read (default: small)")
    parser.add_argument("--data", default=str(DATA),
                        help="where benchmarks.run keeps the scales (default: %(default)s)")
    parser.add_argument("--landing", help="a landing zone folder instead of the scale's")
    parser.add_argument("--lake", help="the lake to compare with (default: the scale's, when it holds features)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB's threads (default: 2, the targets' cores)")
    args = parser.parse_args(argv)
    try:
        import duckdb
    except ImportError:
        sys.exit("duckdb is not installed: it comes with the dev extra (pip install -e '.[dev]')")
    scale_dir = Path(args.data) / args.scale
    landing = Path(args.landing) if args.landing else scale_dir / "landing"
    if not any((landing / "events").glob("date=*")):
        sys.exit(f"no landing days under {landing / 'events'}: run python -m benchmarks.run --scale {args.scale} first")
    out = landing.parent / "duckdb_features"
    figures = run(landing, out, args.threads)
    print(f"DuckDB {duckdb.__version__}, {args.threads} threads, landing {landing}:")
    print(f"  {len(COLUMNS)} feature columns for {figures['rows']:,} (user, day) snapshots: "
          f"{figures['wall_s']:.1f} s wall, {figures['cpu_s']:.1f} s CPU, "
          f"peak RSS {figures['peak_rss'] / 2**20:,.0f} MB; written to {out}")
    lake = Path(args.lake) if args.lake else scale_dir / "lake"
    if any((lake / "features").glob("date=*")):
        same = agreement(out, lake)
        print(f"  against {lake / 'features'}: {same['rows_in_both']:,} snapshots in both, "
              f"{same['rows_only_in_features']:,} only in features, {same['rows_only_in_duckdb']:,} only in DuckDB's")
        print("  same value: " + ", ".join(f"{c} {100 * same[c]:.2f} %" for c in COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
