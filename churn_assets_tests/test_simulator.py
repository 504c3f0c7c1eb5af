"""The landing-data simulator: layout, row contract, export quirks, dirty rows, truth, determinism, CLI."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest

from churn_assets.config import DEFAULT_EVENT_TYPES
from churn_assets.simulate import DIRTY_KINDS, EVENT_TYPES, SimulationSummary, simulate

START = dt.date(2025, 1, 1)
JSON_KEYS = {
    "$insert_id", "user_id", "event_time", "event_type", "session_id", "platform", "country", "version_name",
    "revenue", "event_properties", "device_id",
}
CANONICAL = {
    "event_id": pl.String,
    "user_id": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "event_type": pl.String,
    "session_id": pl.Int64,
    "platform": pl.String,
    "country": pl.String,
    "app_version": pl.String,
    "revenue": pl.Float64,
}
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _day_dirs(root: Path) -> list[Path]:
    return sorted((root / "events").glob("date=*"))


def _day(path: Path) -> dt.date:
    return dt.date.fromisoformat(path.name.removeprefix("date="))


def _lines(day_dir: Path) -> list[bytes]:
    out: list[bytes] = []
    for part in sorted(day_dir.glob("part-*.jsonl*")):
        data = part.read_bytes()
        if part.name.endswith(".gz"):
            data = gzip.decompress(data)
        out.extend(data.splitlines())
    return out


def _time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, SimulationSummary]:
    root = tmp_path_factory.mktemp("clean")
    return root, simulate(str(root), users=500, days=21, start=START, seed=7)


@pytest.fixture(scope="module")
def clean_rows(clean) -> dict[dt.date, list[tuple[bytes, dict]]]:
    root, _ = clean
    return {_day(d): [(line, json.loads(line)) for line in _lines(d)] for d in _day_dirs(root)}


def test_event_types_match_the_platform_default():
    assert tuple(EVENT_TYPES) == DEFAULT_EVENT_TYPES
    assert len(EVENT_TYPES) == 10


def test_summary(clean, clean_rows):
    root, summary = clean
    assert summary.out_url == str(root)
    assert summary.days == [START + dt.timedelta(days=i) for i in range(21)]
    assert summary.users == 500
    assert summary.seconds > 0
    assert summary.events_written == sum(len(rows) for rows in clean_rows.values())
    meta = json.loads((root / "truth" / "simulation.json").read_text())
    assert meta["seed"] == 7 and meta["users"] == 500 and meta["days"] == 21
    assert meta["events_written"] == summary.events_written
    # The truth's counts are those of the files: each event once, its re-sends, the events exported a day late.
    ids = [r["$insert_id"] for rows in clean_rows.values() for _, r in rows]
    late = {r["$insert_id"] for day, rows in clean_rows.items() for _, r in rows if _time(r["event_time"]).date() < day}
    counts = (len(set(ids)), len(ids) - len(set(ids)), len(late))
    assert (meta["unique_events"], meta["duplicates"], meta["late_events"]) == counts
    assert (summary.unique_events, summary.duplicates, summary.late_events) == counts


def test_layout_one_folder_per_day_with_success_written_last(clean):
    root, _ = clean
    days = _day_dirs(root)
    assert [_day(d) for d in days] == [START + dt.timedelta(days=i) for i in range(21)]
    for d in days:
        parts = sorted(d.glob("part-*.jsonl.gz"))
        assert [p.name for p in parts] == ["part-00000.jsonl.gz"]
        success = d / "_SUCCESS"
        assert success.exists() and success.stat().st_size == 0
        assert all(success.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in parts)
        assert sorted(p.name for p in d.iterdir()) == ["_SUCCESS", "part-00000.jsonl.gz"]
        assert parts[0].read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime 0


def test_rows_follow_the_amplitude_shape(clean_rows):
    seen_types = set()
    for day, rows in clean_rows.items():
        assert rows, day
        for _, r in rows:
            assert set(r) == JSON_KEYS
            assert r["event_type"] in EVENT_TYPES
            seen_types.add(r["event_type"])
            assert re.fullmatch(r"[0-9a-f]{16}", r["$insert_id"])
            assert re.fullmatch(r"u\d{6}", r["user_id"])
            assert TIME_RE.match(r["event_time"])
            assert r["platform"] in ("iOS", "Android", "Web")
            assert re.fullmatch(r"[A-Z]{2}", r["country"])
            assert re.fullmatch(r"\d+\.\d+\.\d+", r["version_name"])
            assert isinstance(r["event_properties"], dict) and len(r["event_properties"]) == 1
            assert isinstance(r["session_id"], int)
            if r["event_type"] == "purchase":
                assert isinstance(r["revenue"], float) and r["revenue"] > 0
            else:
                assert r["revenue"] is None
            if r["event_type"] == "push_open":
                assert r["session_id"] == -1
            else:
                # the session id is the session start in epoch milliseconds, at or before the event
                assert r["session_id"] > 0
                event_ms = (_time(r["event_time"]) - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
                assert r["session_id"] <= event_ms
    assert seen_types == set(EVENT_TYPES)


def test_event_times_lie_in_the_export_day_or_the_day_before(clean_rows):
    late_days = 0
    for day, rows in clean_rows.items():
        lo, hi = dt.datetime.combine(day - dt.timedelta(days=1), dt.time()), dt.datetime.combine(
            day + dt.timedelta(days=1), dt.time()
        )
        times = [_time(r["event_time"]) for _, r in rows]
        assert all(lo <= t < hi for t in times), day
        late = sum(t.date() < day for t in times)
        if day == START:
            assert late == 0
        else:
            late_days += late > 0
            assert late < 0.05 * len(rows)
    assert late_days >= 15


def test_duplicates_are_exact_resends_within_a_day(clean_rows):
    total_dups = 0
    first_seen: dict[str, dt.date] = {}
    for day, rows in clean_rows.items():
        by_id: dict[str, list[bytes]] = collections.defaultdict(list)
        for line, r in rows:
            by_id[r["$insert_id"]].append(line)
        for event_id, lines in by_id.items():
            assert len(set(lines)) == 1, "a re-sent event must be an exact copy"
            total_dups += len(lines) - 1
            assert event_id not in first_seen, "an event id appears in two export days"
            first_seen[event_id] = day
    n = sum(len(rows) for rows in clean_rows.values())
    assert 0.002 * n < total_dups < 0.01 * n


def test_behaviour_is_realistic(clean_rows, clean):
    root, _ = clean
    truth = pl.read_parquet(root / "truth" / "users.parquet")
    still_active = truth["churn_date"].is_null().mean()
    assert 0.3 <= still_active <= 0.6
    user_days = collections.Counter()
    for _, rows in clean_rows.items():
        for _, r in rows:
            user_days[(r["user_id"], r["event_time"][:10])] += 1
    per_user_day = sum(user_days.values()) / len(user_days)
    assert 20 <= per_user_day <= 60
    # installs arrive over time, not all on day one
    install_days = truth["install_time"].dt.date().n_unique()
    assert install_days >= 15
    # the latent traits show in the outcome: churned users are less engaged and meet more friction
    churned = truth.filter(pl.col("churn_date").is_not_null())
    kept = truth.filter(pl.col("churn_date").is_null())
    assert churned["engagement"].mean() < kept["engagement"].mean()
    assert churned["friction"].mean() > kept["friction"].mean()
    # errors rise with friction
    errors = collections.Counter(r["user_id"] for rows in clean_rows.values() for _, r in rows
                                 if r["event_type"] == "app_error")
    events = collections.Counter(r["user_id"] for rows in clean_rows.values() for _, r in rows)
    rate = truth.with_columns(
        pl.col("user_id").map_elements(lambda u: errors[u] / max(events[u], 1), return_dtype=pl.Float64).alias("r")
    )
    high = rate.filter(pl.col("friction") > rate["friction"].median())["r"].mean()
    low = rate.filter(pl.col("friction") <= rate["friction"].median())["r"].mean()
    assert high > 1.5 * low


def test_truth_agrees_with_the_events(clean_rows, clean):
    root, _ = clean
    truth = pl.read_parquet(root / "truth" / "users.parquet")
    assert truth.schema == pl.Schema(
        {
            "user_id": pl.String,
            "install_time": pl.Datetime("us", "UTC"),
            "churn_date": pl.Date,
            "engagement": pl.Float64,
            "friction": pl.Float64,
            "platform": pl.String,
            "country": pl.String,
        }
    )
    assert truth.height == 500 and truth["user_id"].n_unique() == 500
    first: dict[str, dt.datetime] = {}
    last: dict[str, dt.datetime] = {}
    attrs: dict[str, tuple[str, str]] = {}
    for _, rows in clean_rows.items():
        for _, r in rows:
            t = _time(r["event_time"])
            u = r["user_id"]
            first[u] = min(first.get(u, t), t)
            last[u] = max(last.get(u, t), t)
            attrs[u] = (r["platform"], r["country"])
    info = {row["user_id"]: row for row in truth.iter_rows(named=True)}
    assert set(first) <= set(info)
    for u, row in info.items():
        assert u in first, "every simulated user installs within the simulated days"
        assert row["install_time"].replace(tzinfo=None) == first[u]
        assert (row["platform"], row["country"]) == attrs[u]
        if row["churn_date"] is not None:
            # churn date: the day after the last activity; nothing happens on or after it
            assert row["churn_date"] == last[u].date() + dt.timedelta(days=1)
        else:
            assert last[u].date() <= START + dt.timedelta(days=20)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(users=150, days=6, dirty=True, files_per_day=2)
    a, b, c = (tmp_path / n for n in "abc")
    simulate(str(a), seed=3, **kwargs)
    simulate(str(b), seed=3, **kwargs)
    simulate(str(c), seed=4, **kwargs)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    assert set(files_a) == set(files_c)
    for name, data in files_a.items():
        if name.endswith(".jsonl.gz"):
            assert files_c[name] != data, name


def _events(root: Path) -> set[tuple[str, str, dt.date]]:
    """(event id, user, date of event_time) of every row of every export day."""
    return {
        (r["$insert_id"], r["user_id"], _time(r["event_time"]).date())
        for d in _day_dirs(root) for r in map(json.loads, _lines(d))
    }


def test_a_thin_history_keeps_who_was_active_when(tmp_path):
    """--thin-before D: the same users active on the same days, one event each before D, every event from D."""
    full_root, thin_root = tmp_path / "full", tmp_path / "thin"
    thin_from = START + dt.timedelta(days=6)
    full = simulate(str(full_root), users=300, days=8, seed=5)
    thin = simulate(str(thin_root), users=300, days=8, seed=5, thin_before=thin_from)
    full_events, thin_events = _events(full_root), _events(thin_root)

    assert {(u, d) for _, u, d in thin_events} == {(u, d) for _, u, d in full_events}
    per_user_day = collections.Counter((u, d) for _, u, d in thin_events if d < thin_from)
    assert set(per_user_day.values()) == {1}
    assert {e for e in thin_events if e[2] >= thin_from} == {e for e in full_events if e[2] >= thin_from}
    assert len(thin_events) < len(full_events) / 2
    assert thin.events_written < full.events_written
    # The work is the same: every event of every day is simulated, and the summary says how many were kept.
    assert thin.events_simulated == full.events_simulated == full.unique_events > thin.unique_events
    assert f"{thin.events_simulated:,} simulated" in thin.line() and " simulated," not in full.line()
    assert json.loads((thin_root / "truth" / "simulation.json").read_text())["thin_before"] == thin_from.isoformat()
    # The population behind the events is the same.
    assert (full_root / "truth" / "users.parquet").read_bytes() == (thin_root / "truth" / "users.parquet").read_bytes()


def test_an_event_share_keeps_the_users_days_and_sessions(tmp_path):
    """--event-share S: the same users active on the same days in the same sessions, each session's other
    events kept with probability S (the benchmarks' scales sized to the targets' event counts)."""
    full_root, light_root = tmp_path / "full", tmp_path / "light"
    full = simulate(str(full_root), users=300, days=8, seed=5)
    light = simulate(str(light_root), users=300, days=8, seed=5, event_share=0.3)
    rows = {root: {r["$insert_id"]: r for d in _day_dirs(root) for r in map(json.loads, _lines(d))}
            for root in (full_root, light_root)}
    full_rows, light_rows = rows[full_root], rows[light_root]

    assert set(light_rows) < set(full_rows)  # a subset of the same events, same ids
    assert all(full_rows[i] == r for i, r in light_rows.items())
    always = {"session_start", "push_open"}
    kept = {i for i, r in full_rows.items() if r["event_type"] in always}
    assert kept and kept <= set(light_rows)
    others = [i for i, r in full_rows.items() if r["event_type"] not in always]
    share = sum(i in light_rows for i in others) / len(others)
    assert 0.27 < share < 0.33, share
    assert {(r["user_id"], _time(r["event_time"]).date()) for r in light_rows.values()} == {
        (r["user_id"], _time(r["event_time"]).date()) for r in full_rows.values()
    }
    assert light.events_written < 0.5 * full.events_written
    assert light.events_simulated == full.events_simulated == full.unique_events
    assert json.loads((light_root / "truth" / "simulation.json").read_text())["event_share"] == 0.3
    # The population behind the events is the same.
    assert (full_root / "truth" / "users.parquet").read_bytes() == (light_root / "truth" / "users.parquet").read_bytes()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="event_share must be in"):
            simulate(str(tmp_path / "bad"), users=10, days=1, event_share=bad)


@pytest.mark.parametrize("file_format", ["parquet", "csv", "jsonl"])
def test_other_formats_are_deterministic(tmp_path, file_format):
    simulate(str(tmp_path / "a"), users=80, days=3, seed=5, dirty=True, file_format=file_format)
    simulate(str(tmp_path / "b"), users=80, days=3, seed=5, dirty=True, file_format=file_format)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_rerun_replaces_the_previous_files(tmp_path):
    simulate(str(tmp_path), users=50, days=2, files_per_day=3)
    simulate(str(tmp_path), users=50, days=2, files_per_day=1)
    for d in _day_dirs(tmp_path):
        assert sorted(p.name for p in d.iterdir()) == ["_SUCCESS", "part-00000.jsonl.gz"]


def _dirty_kind(r: dict, day: dt.date) -> str | None:
    if not r.get("user_id"):
        return "missing_user_id"
    if not r.get("$insert_id"):
        return "missing_event_id"
    try:
        t = _time(r["event_time"])
    except (ValueError, TypeError):
        return "unparsable_time"
    if t >= dt.datetime.combine(day + dt.timedelta(days=1), dt.time()):
        return "future_time"
    if t < dt.datetime.combine(day - dt.timedelta(days=7), dt.time()):
        return "stale_time"
    if r.get("revenue") is not None and r["revenue"] < 0:
        return "negative_revenue"
    return None


def test_dirty_rows_of_every_kind_each_day(tmp_path, clean_rows):
    root = tmp_path / "dirty"
    summary = simulate(str(root), users=500, days=21, start=START, seed=7, dirty=True)
    variants = collections.Counter()
    clean_lines = 0
    for d in _day_dirs(root):
        day = _day(d)
        kinds = collections.Counter()
        for line in _lines(d):
            r = json.loads(line)  # every line is valid JSON, even the malformed rows
            kind = _dirty_kind(r, day)
            if kind is None:
                clean_lines += 1
                continue
            kinds[kind] += 1
            if kind == "missing_user_id":
                variants["absent" if "user_id" not in r else repr(r["user_id"])] += 1
            if kind == "missing_event_id":
                variants["id absent" if "$insert_id" not in r else "id " + repr(r["$insert_id"])] += 1
        assert set(kinds) == set(DIRTY_KINDS), day
        assert all(1 <= k <= 5 for k in kinds.values())
    assert set(variants) == {"absent", "None", "''", "id absent", "id None", "id ''"}
    # the valid rows are exactly those of the clean run with the same seed
    assert clean_lines == sum(len(rows) for rows in clean_rows.values())
    assert summary.dirty_rows == summary.events_written - clean_lines


def test_several_files_per_day(tmp_path):
    simulate(str(tmp_path), users=300, days=4, files_per_day=3, file_format="jsonl")
    for d in _day_dirs(tmp_path):
        parts = sorted(p.name for p in d.glob("part-*"))
        assert parts == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
        sizes = [len((d / p).read_bytes().splitlines()) for p in parts]
        assert min(sizes) > 0.8 * max(sizes)
        assert (d / "_SUCCESS").exists()


def test_parquet_and_csv_write_the_canonical_columns(tmp_path):
    for fmt in ("parquet", "csv", "jsonl.gz"):
        simulate(str(tmp_path / fmt), users=120, days=4, seed=11, file_format=fmt)
    for d in _day_dirs(tmp_path / "parquet"):
        frame = pl.read_parquet(d / "part-00000.parquet")
        assert frame.schema == pl.Schema(CANONICAL)
        push = frame.filter(pl.col("event_type") == "push_open")
        assert push["session_id"].null_count() == push.height
        assert frame.filter(pl.col("event_type") != "push_open")["session_id"].null_count() == 0
        assert frame.filter(pl.col("event_type") != "purchase")["revenue"].null_count() == frame.filter(
            pl.col("event_type") != "purchase"
        ).height
        csv = pl.read_csv(tmp_path / "csv" / "events" / d.name / "part-00000.csv",
                          schema={**CANONICAL, "event_time": pl.String})
        assert csv.columns == list(CANONICAL)
        assert csv["event_time"].str.contains(TIME_RE.pattern).all()
        csv = csv.with_columns(pl.col("event_time").str.to_datetime("%Y-%m-%d %H:%M:%S%.6f", time_zone="UTC"))
        assert csv.equals(frame)
        # the same events as the JSON export
        rows = [json.loads(x) for x in _lines(tmp_path / "jsonl.gz" / "events" / d.name)]
        assert [r["$insert_id"] for r in rows] == frame["event_id"].to_list()
        assert [r["event_time"] for r in rows] == frame["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S%.6f").to_list()
        assert [r["revenue"] for r in rows] == frame["revenue"].to_list()


def test_dirty_parquet_and_csv(tmp_path):
    simulate(str(tmp_path / "p"), users=120, days=2, file_format="parquet", dirty=True)
    simulate(str(tmp_path / "c"), users=120, days=2, file_format="csv", dirty=True)
    frame = pl.read_parquet(tmp_path / "p" / "events" / "date=2025-01-02" / "part-00000.parquet")
    assert frame.schema == pl.Schema(CANONICAL)
    assert frame["user_id"].is_null().sum() >= 1 and (frame["user_id"] == "").sum() >= 1
    assert frame["event_id"].is_null().sum() >= 1
    assert frame["event_time"].is_null().sum() >= 1  # the unparsable time
    assert (frame["revenue"] < 0).sum() >= 1
    assert (frame["event_time"] >= dt.datetime(2025, 1, 3, tzinfo=dt.UTC)).sum() >= 1
    assert (frame["event_time"] < dt.datetime(2024, 12, 26, tzinfo=dt.UTC)).sum() >= 1
    csv = pl.read_csv(tmp_path / "c" / "events" / "date=2025-01-02" / "part-00000.csv", infer_schema=False)
    assert (csv["event_time"] == "not-a-time").sum() >= 1


def test_validation(tmp_path):
    with pytest.raises(ValueError, match="file_format"):
        simulate(str(tmp_path), file_format="xml")
    with pytest.raises(ValueError):
        simulate(str(tmp_path), users=0)


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    simulate(str(tmp_path), users=20, days=3, progress=True)
    captured = capsys.readouterr()
    assert "3/3" in captured.err and captured.out == ""


def test_cli(tmp_path, capsys):
    from churn_assets.cli import build_parser, main

    out = tmp_path / "landing"
    code = main(["simulate", "--out", str(out), "--users", "40", "--days", "3", "--start", "2025-03-01",
                 "--seed", "9", "--format", "jsonl", "--files-per-day", "2", "--dirty", "--no-progress",
                 "--event-share", "0.5", "--thin-before", "2025-03-02"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "events" in printed and str(out) in printed
    days = [d.name for d in _day_dirs(out)]
    assert days == ["date=2025-03-01", "date=2025-03-02", "date=2025-03-03"]
    assert (out / "events" / "date=2025-03-02" / "part-00001.jsonl").exists()
    meta = json.loads((out / "truth" / "simulation.json").read_text())
    assert meta["seed"] == 9 and meta["dirty"] is True and meta["files_per_day"] == 2
    assert meta["event_share"] == 0.5 and meta["thin_before"] == "2025-03-02"
    with pytest.raises(SystemExit):
        main(["simulate", "--format", "xml"])
    assert build_parser().parse_args(["simulate", "--event-share", "1"]).event_share == 1.0  # the bound is in


@pytest.mark.parametrize("args, says", [
    (["--users", "0"], "argument --users: 0 must be at least 1"),
    (["--days", "two"], "argument --days: 'two' is not a whole number"),
    (["--event-share", "0"], "argument --event-share: 0 is not a share in (0, 1]"),
    (["--event-share", "1.5"], "argument --event-share: 1.5 is not a share in (0, 1]"),
    (["--start", "2025-02-30"], "argument --start: '2025-02-30' is not a date in YYYY-MM-DD form"),
    (["--start", "1960-01-01"], "simulate: error: start 1960-01-01 is out of the supported range 1971..2200"),
    (["--out", "gs://bucket/landing"], "simulate: error: unsupported storage URL 'gs://bucket/landing'"),
])
def test_cli_refuses_bad_input_with_a_message_and_exit_code_2(tmp_path, monkeypatch, capsys, args, says):
    """Usage errors, not tracebacks (exit 1), and nothing written: gs://... once went to a local folder "gs:"."""
    from churn_assets.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--out", "landing", "--users", "5", "--days", "1", "--no-progress", *args])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_landing_root_that_is_a_file(tmp_path, capsys):
    from churn_assets.cli import main

    taken = tmp_path / "landing"
    taken.write_text("not a folder")
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--out", str(taken), "--users", "5", "--days", "1", "--no-progress"])
    assert exited.value.code == 2
    assert f"the landing root {taken} is a file" in capsys.readouterr().err
    assert taken.read_text() == "not a folder"


def test_cli_shows_a_bug_as_a_traceback_not_as_a_usage_error(tmp_path, monkeypatch):
    """Only the arguments simulate() refuses are usage errors: a ValueError from anywhere else is a bug, and
    its traceback must reach the user (it was once printed as one line of usage, its cause hidden)."""
    from churn_assets.cli import main
    from churn_assets.simulate import simulator

    def broken(*args, **kwargs):
        raise ValueError("a bug deep in the writer")

    monkeypatch.setattr(simulator, "Population", broken)
    with pytest.raises(ValueError, match="a bug deep in the writer"):
        main(["simulate", "--out", str(tmp_path / "landing"), "--users", "5", "--days", "1", "--no-progress"])


def test_cli_module_runs(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "landing"
    proc = subprocess.run(
        [sys.executable, "-m", "churn_assets.cli", "simulate", "--out", str(out), "--users", "20", "--days", "2",
         "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "events" in proc.stdout
    assert (out / "events" / "date=2025-01-02" / "_SUCCESS").exists()


@pytest.mark.s3
def test_writes_to_s3(s3_server, tmp_path):
    import fsspec

    simulate(str(tmp_path), users=60, days=2, seed=1)
    summary = simulate("s3://landing/sim", users=60, days=2, seed=1)
    assert summary.out_url == "s3://landing/sim"
    keys = s3_server.keys("landing", "sim/")
    expected = sorted("sim/" + name for name in _files(tmp_path))
    assert sorted(keys) == expected
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    for name, data in _files(tmp_path).items():
        assert fs.cat_file(f"landing/sim/{name}") == data


@pytest.mark.s3
def test_a_write_refused_part_way_leaves_no_day_marked_complete_without_its_files(s3_server, tmp_path):
    """S3 refused the write of the third day's file: the writer went on with the day's _SUCCESS (and the days after),
    so the landing sensor took a day without its events as complete. Now nothing more is written once a write
    failed: the days before stand complete, that day and the later ones have no _SUCCESS, the command says so
    (naming the file, no traceback), and a run again completes them."""
    import os
    import subprocess

    from churn_assets.resources import LandingZone
    from churn_assets_tests.s3_proxy import HoldingProxy

    out = f"s3://landing/{tmp_path.name}"
    command = _five_days_command(out)
    proxy = HoldingProxy(s3_server.endpoint)
    try:
        proxy.refuse(f"{tmp_path.name}/events/date=2025-01-03/part-00000.jsonl.gz")
        refused = subprocess.run(command, env={**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint,
                                               "AWS_MAX_ATTEMPTS": "1"}, capture_output=True, text=True, timeout=300)
    finally:
        proxy.close()
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr and "not done" not in refused.stderr, refused.stderr
    assert (f"could not write {out}/events/date=2025-01-03/part-00000.jsonl.gz (Access Denied)" in refused.stderr
            and "run the same command again" in refused.stderr), refused.stderr
    keys = s3_server.keys("landing", tmp_path.name)
    markers = sorted(key.split("/")[-2] for key in keys if key.endswith("/_SUCCESS"))
    assert markers == ["date=2025-01-01", "date=2025-01-02"], markers
    complete, _ = LandingZone(url=out).days()
    assert sorted(complete) == ["2025-01-01", "2025-01-02"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    complete, _ = LandingZone(url=out).days()
    assert sorted(complete) == [f"2025-01-0{n}" for n in range(1, 6)]


@pytest.mark.s3
def test_simulate_stopped_by_sigterm_says_what_stands_and_marks_no_day_without_its_files(s3_server, tmp_path):
    """SIGTERM (a CronJob or a container stopped) ended simulate at once, exit -15 and no word, whatever it was
    writing. It now stops as Ctrl-C does: the files queued are written, every day marked complete holds all its
    files, the command says so with exit 130 (no traceback), and a run again completes every day."""
    import os
    import signal
    import subprocess

    from churn_assets.resources import LandingZone
    from churn_assets_tests.s3_proxy import HoldingProxy

    out = f"s3://landing/{tmp_path.name}"
    command = _five_days_command(out)
    proxy = HoldingProxy(s3_server.endpoint)
    try:
        proxy.hold_writes(f"{tmp_path.name}/events/date=2025-01-03/part-00000.jsonl.gz")
        process = subprocess.Popen(command, env={**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proxy.held.wait(120), "the third day's write never came"
            process.send_signal(signal.SIGTERM)
            proxy.release()
            _, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
    finally:
        proxy.close()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert ("stopped: interrupted (Ctrl-C or SIGTERM)" in stderr
            and "run the same command again" in stderr), stderr
    keys = s3_server.keys("landing", tmp_path.name)
    markers = [key for key in keys if key.endswith("/_SUCCESS")]
    assert {"date=2025-01-01", "date=2025-01-02"} <= {marker.split("/")[-2] for marker in markers}, markers
    for marker in markers:
        assert f"{marker.removesuffix('_SUCCESS')}part-00000.jsonl.gz" in keys, (marker, keys)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    complete, _ = LandingZone(url=out).days()
    assert sorted(complete) == [f"2025-01-0{n}" for n in range(1, 6)]


def _five_days_command(out: str) -> list[str]:
    """``churn-assets simulate`` of 50 users over 5 days into ``out``, as a user runs it."""
    import sys

    return [str(Path(sys.executable).parent / "churn-assets"), "simulate", "--out", out, "--users", "50", "--days",
            "5", "--no-progress"]
