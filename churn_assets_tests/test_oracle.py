"""The chain against an independent oracle: ``install_times``, ``user_daily``, every column of ``features`` and
``labels`` materialized in-process from a landing zone equal, value for value, what plain DuckDB SQL written from
the contract computes from the same files (``duckdb_oracle.py``), on a small simulated landing zone and on a
hand-made one of edge cases. Column names, order and types are checked against docs/features.md and the
contract's column descriptions."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import polars as pl

from churn_assets.config import DEFAULT_EVENT_TYPES, ChurnSettings
from churn_assets.resources import build_resources
from churn_assets.simulate import simulate
from churn_assets_tests import duckdb_oracle
from churn_assets_tests.helpers import START, day, materialize_selected, read_partition
from churn_assets_tests.landing_helpers import amplitude_row, jsonl, write_landing_day

DOCS = Path(__file__).resolve().parent.parent / "docs" / "features.md"
CHAIN = ("raw_events", "install_times", "user_daily", "features", "labels")
KEYS = {"raw_events": ["date", "event_id"], "install_times": ["date", "user_id"], "user_daily": ["date", "user_id"],
        "features": ["date", "user_id"], "labels": ["date", "user_id"]}


def contract_types(asset: str, event_types: tuple[str, ...]) -> dict[str, pl.DataType]:
    """The columns and types of one partition of ``asset`` as the docs give them: DESIGN.md and the column
    descriptions, docs/features.md for ``features`` (its per-type columns in the same place for ``event_types``)."""
    if asset == "features":
        documented = documented_features()
        per_type = [f"n_{t}_{w}" for w in ("7d", "28d") for t in DEFAULT_EVENT_TYPES]
        first = list(documented).index(per_type[0])
        names = list(documented)
        names[first:first + len(per_type)] = [f"n_{t}_{w}" for w in ("7d", "28d") for t in event_types]
        return {name: documented.get(name, pl.Int64) for name in names}
    return {
        "raw_events": {"event_id": pl.String, "user_id": pl.String, "event_time": pl.Datetime("us", "UTC"),
                       "event_type": pl.String, "session_id": pl.Int64, "platform": pl.String, "country": pl.String,
                       "app_version": pl.String, "revenue": pl.Float64},
        "install_times": {"user_id": pl.String, "install_time": pl.Datetime("us", "UTC"),
                          "first_active_date": pl.Date, "last_active_date": pl.Date},
        "user_daily": {"user_id": pl.String, **{f"n_{t}": pl.Int64 for t in event_types},
                       "n_events": pl.Int64, "n_sessions": pl.Int64, "session_minutes": pl.Float64,
                       "revenue": pl.Float64, "n_purchases": pl.Int64, "platform": pl.String, "country": pl.String,
                       "app_version": pl.String, "days_since_install": pl.Int32},
        "labels": {"user_id": pl.String, "snapshot_date": pl.Date, "churned": pl.Int8},
    }[asset]


# Minutes and revenue are given "to 1e-6": each day's, whose minutes on a tie (microseconds % 60 = 30) round
# either way with the floats' last bit, so a window's sum may be a millionth or two away.
TOLERANCE = 2.5e-6


def documented_features() -> dict[str, pl.DataType]:
    """The columns of docs/features.md's table, in order, with their type."""
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", DOCS.read_text(), flags=re.MULTILINE)
    return {name: getattr(pl, kind) for name, kind in rows}


def documented_nullable() -> set[str]:
    """The columns docs/features.md says may be null."""
    return set(re.findall(r"^\| `(\w+)` \| \w+ \| \w+ \| yes \|", DOCS.read_text(), flags=re.MULTILINE))


def chain_tables(settings: ChurnSettings, days: list[dt.date]) -> dict[str, pl.DataFrame]:
    """Each asset's partitions of ``days`` stacked, with their ``date``; column types checked on the way."""
    tables = {}
    for asset in KEYS:
        expected = contract_types(asset, settings.event_types)
        frames = []
        for d in days:
            frame = read_partition(settings.data_url, asset, d)
            assert dict(frame.schema) == expected, f"{asset}[{d}] columns/types differ from the docs"
            if asset in ("features", "labels"):
                assert frame["user_id"].is_sorted(), f"{asset}[{d}] is not sorted by user_id"
            if asset == "features":
                nulls = {c for c in frame.columns if frame[c].null_count() and c not in documented_nullable()}
                assert not nulls, f"features[{d}] has nulls in {nulls}, which docs/features.md says never are"
            frames.append(frame.with_columns(date=pl.lit(d)).select("date", *frame.columns))
        tables[asset] = pl.concat(frames)
    return tables


def differences(asset: str, chain: pl.DataFrame, oracle: pl.DataFrame) -> list[str]:
    """Every disagreement: rows in one table only, then per column the rows whose values differ (floats beyond
    TOLERANCE, a null against a value), with a few examples each."""
    keys = KEYS[asset]
    oracle = oracle.with_columns(  # DuckDB's timestamps are naive UTC
        pl.col(c).dt.replace_time_zone("UTC") if isinstance(t, pl.Datetime) else pl.col(c).cast(t)
        for c, t in chain.schema.items()
    )
    found = [
        f"{asset}: {only.height} rows only in the {side}: {only.select(keys).head(5).rows()}"
        for side, only in (("chain", chain.join(oracle, on=keys, how="anti")),
                           ("oracle", oracle.join(chain, on=keys, how="anti")))
        if only.height
    ]
    both = chain.join(oracle, on=keys, how="inner", suffix="_oracle")
    for column in (c for c in chain.columns if c not in keys):
        ours, theirs = pl.col(column), pl.col(f"{column}_oracle")
        if chain.schema[column] == pl.Float64:
            same = ((ours - theirs).abs() <= TOLERANCE) | (ours.is_nan() & theirs.is_nan())
        else:
            same = ours == theirs
        same = same.fill_null(ours.is_null() & theirs.is_null())
        bad = both.filter(~same)
        if bad.height:
            found.append(f"{asset}.{column}: {bad.height} of {both.height} rows differ, e.g. "
                         f"{bad.select(*keys, column, f'{column}_oracle').head(5).rows()}")
    return found


def compare(landing: Path, settings: ChurnSettings, runs: list[tuple[dt.date, dt.date]]) -> list[str]:
    """Materializes the chain over ``runs`` (first, last), in order, then compares every day with the oracle."""
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources(settings)
    for first, last in runs:
        materialize_selected(CHAIN, resources, instance, first.isoformat(), last.isoformat())
    oracle = duckdb_oracle.compute(landing, START, list(settings.event_types), settings.horizon_days)
    days = [START + dt.timedelta(days=i) for i in range((runs[-1][1] - START).days + 1)]
    chain = chain_tables(settings, days)
    assert oracle["labels"].height and oracle["features"].height
    return [line for asset in KEYS for line in differences(asset, chain[asset], oracle[asset])]


def test_simulated_landing_zone_agrees_with_the_oracle(tmp_path: Path):
    """32 days (full 28-day windows, 18 days of labels), dirty rows, two files a day, one range run."""
    landing = tmp_path / "landing"
    simulate(str(landing), users=50, days=32, start=START, seed=11, dirty=True, files_per_day=2)
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(landing))
    found = compare(landing, settings, [(day(0), day(31))])
    assert found == [], "\n".join(found)


class EdgeCases:
    """A hand-made landing zone: ``add`` puts an event (Amplitude shape) in a file of an export day."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, str], list[dict]] = {}
        self.next_id = 0

    def add(self, export_day: int, user: str | None, time: str, event_type: str = "screen_view", file: str = "a.jsonl",
            event_id: str | None = "auto", **values: object) -> dict:
        """``time``: "D HH:MM:SS.ffffff" with D a day number relative to the start (may be negative)."""
        offset, clock = time.split(" ", 1)
        when = f"{day(int(offset)).isoformat()} {clock}"
        if event_id == "auto":
            self.next_id += 1
            event_id = f"e{self.next_id:05d}"
        row = amplitude_row(event_id, user, when, event_type, **values)
        self.files.setdefault((export_day, file), []).append(row)
        return row

    def write(self, landing: Path, days: int) -> None:
        """Every day 0..days-1 complete (``_SUCCESS``), with its files (none for a day without events)."""
        for n in range(days):
            files = {name: jsonl(rows, gz=name.endswith(".gz")) for (d, name), rows in self.files.items() if d == n}
            write_landing_day(str(landing), day(n).isoformat(), files)


EDGE_DAYS = 31
EDGE_EVENT_TYPES = ("screen_view", "purchase", "share")


def edge_case_landing(landing: Path) -> None:
    """The edge cases, a user each (the name says which), over EDGE_DAYS export days."""
    z = EdgeCases()
    # Exported a day late; exactly 7 days before the export day's start (kept) and a microsecond earlier
    # (quarantined); the last microsecond of the export day (kept) and the next day's first (quarantined).
    z.add(3, "late", "2 23:50:00.000000", session_id=5)
    z.add(10, "late", "3 00:00:00.000000")
    z.add(10, "late", "2 23:59:59.999999")
    z.add(10, "late", "10 23:59:59.999999")
    z.add(10, "late", "11 00:00:00.000000")
    # Events from before the first partition, exported on it: an install before CHURN_START_DATE.
    z.add(0, "before_start", "-4 09:00:00.000000")
    z.add(0, "before_start", "0 09:00:00.000000")
    # One event id in two files of one day (once) and in two days (once in each); a .jsonl.gz file.
    twice = z.add(4, "dup", "4 10:00:00.000000", session_id=7)
    z.files.setdefault((4, "b.jsonl.gz"), []).append(dict(twice))
    z.files.setdefault((5, "a.jsonl"), []).append(dict(twice))
    z.add(4, "dup", "4 10:05:00.000000", session_id=7)
    # Copies that differ: the first trusted one, by file name and then line, stays.
    z.add(4, "dup_later_file", "4 09:00:00.000000", "purchase", file="b.jsonl.gz", event_id="dup_diff", revenue=2.0)
    z.add(4, "dup_first_file", "4 11:00:00.000000", "share", event_id="dup_diff")
    z.add(4, "dup_first_line", "4 12:00:00.000000", file="b.jsonl.gz", event_id="dup_line")
    z.add(4, "dup_second_line", "4 08:00:00.000000", file="b.jsonl.gz", event_id="dup_line")
    # Session -1 (none), a session spanning midnight exported on both days, one whose first event came a day
    # late (exported with its last), two users with the same session id, a day with no session at all.
    z.add(6, "sess", "6 08:00:00.000000", session_id=-1)
    z.add(6, "sess", "6 23:50:00.000000", session_id=100)
    z.add(7, "sess", "7 00:10:00.250000", session_id=100)
    z.add(8, "sess", "7 23:40:00.000000", session_id=200)
    z.add(8, "sess", "8 00:20:00.000030", session_id=200)
    z.add(8, "sess_twin", "8 00:00:00.000000", session_id=200)
    z.add(8, "sess_twin", "8 00:01:00.000000", session_id=200)
    z.add(9, "sess", "9 12:00:00.000000", session_id=-1)
    # Revenue null, 0, positive, negative (quarantined).
    z.add(5, "rev", "5 10:00:00.000000", "purchase", revenue=None)
    z.add(5, "rev", "5 10:01:00.000000", "purchase", revenue=0)
    z.add(5, "rev", "5 10:02:00.000000", "purchase", revenue=4.99)
    z.add(6, "rev", "6 10:02:00.000000", "purchase", revenue=0.1)
    z.add(6, "rev", "6 10:03:00.000000", "purchase", revenue=-4.99)
    # An install seen late: first seen on day 8, then an earlier event exported on day 9; a user whose very
    # first event is exported 3 days late.
    z.add(8, "late_install", "8 10:00:00.000000")
    z.add(9, "late_install", "5 12:00:00.000000")
    z.add(12, "late_first", "9 12:00:00.000000")
    # Labels: active on S = day 3, back on S+H (day 17), on S+H+1 (day 18), or with an event of S+H exported
    # on S+H+1.
    for user in ("back_on_s_h", "back_on_s_h_1", "back_late_export"):
        z.add(3, user, "3 12:00:00.000000")
    z.add(17, "back_on_s_h", "17 12:00:00.000000")
    z.add(18, "back_on_s_h_1", "18 12:00:00.000000")
    z.add(18, "back_late_export", "17 23:00:00.000000")
    # Active only on day 1: at risk up to day 28 (D-27), not on day 29.
    z.add(1, "d27", "1 12:00:00.000000")
    # Types outside CHURN_EVENT_TYPES (and one spelled in another case) count in the totals only.
    for event_type in ("share", "Share", "login", "purchase"):
        z.add(11, "types", "11 12:00:00.000000", event_type)
    # Platform, country and version change within a day; a tie on the time (the greater id wins); a last event
    # without them; the next day without any (features keep the last non-null).
    z.add(12, "attrs", "12 08:00:00.000000", platform="iOS", country="FR", version_name="1.0")
    z.add(12, "attrs", "12 09:00:00.000000", platform="Android", country="DE", version_name="1.1")
    z.add(12, "attrs", "12 09:00:00.000000", event_id="zz_tie", platform="Web", country="IT", version_name="1.2")
    z.add(12, "attrs", "12 09:00:00.000000", event_id="aa_tie", platform="iOS", country="ES", version_name="0.9")
    z.add(12, "attrs", "12 10:00:00.000000", platform=None, country=None, version_name=None)
    z.add(13, "attrs", "13 10:00:00.000000", platform=None, country=None, version_name=None)
    # Streaks: days 10-12 and 14-15; rows that cannot be trusted.
    for n in (10, 11, 12, 14, 15):
        z.add(n, "streak", f"{n} 12:00:00.000000", session_id=1000 + n)
    z.add(14, None, "14 12:00:00.000000")
    z.add(14, "no_event_id", "14 12:00:00.000000", event_id=None)
    z.add(14, "bad_time", "14 12:00:00.000000")["event_time"] = "2025-13-01 00:00:00.000000"
    # One id twice in a day, its first copy untrustworthy (negative revenue): the trusted copy stays.
    z.add(15, "dup_bad", "15 10:00:00.000000", "purchase", event_id="dup_bad", revenue=-1.0)
    z.add(15, "dup_bad", "15 10:00:00.000000", "purchase", file="b.jsonl.gz", event_id="dup_bad", revenue=1.0)
    # No event type (quarantined, docs/operations.md), a null session id, revenues below a millionth and summing
    # to 0.30000000000000004; times without a fraction or with a short one, in ISO form with Z, with an offset,
    # after blanks (all kept), and a bare date (quarantined).
    z.add(16, "odd", "16 10:00:00.000000", None, session_id=None)
    z.add(16, "odd", "16 10:01:00.000000", "purchase", revenue=1e-7)
    z.add(16, "odd", "16 10:02:00.000000", "purchase", revenue=0.1)
    z.add(16, "odd", "16 10:03:00.000000", "purchase", revenue=0.2)
    z.add(16, "odd", "16 10:04:00.000000")["event_time"] = day(16).isoformat() + " 10:04:00"
    z.add(16, "odd", "16 10:05:00.000000")["event_time"] = day(16).isoformat() + " 10:05:00.5"
    z.add(16, "odd", "16 10:06:00.000000")["event_time"] = day(16).isoformat() + "T10:06:00.000000Z"
    z.add(16, "odd", "16 10:07:00.000000")["event_time"] = day(16).isoformat() + " 10:07:00.000000+02:00"
    z.add(16, "odd", "16 10:08:00.000000")["event_time"] = day(16).isoformat()
    z.add(16, "odd", "16 10:08:00.000000")["event_time"] = "  " + day(16).isoformat() + " 10:09:00.000000"
    # Numbers as strings and ids as numbers; session 0 is a session.
    z.add(16, 12345, "16 11:00:00.000000", "purchase", revenue="4.99", session_id="1736935200000")
    z.add(16, "odd", "16 11:01:00.000000", session_id=0)
    z.add(16, "odd", "16 11:02:00.000000", event_id=777)
    # Revenue at 10^9 (kept) and above (quarantined), not a finite number; session ids not whole (quarantined)
    # and a whole one written as a float.
    z.add(16, "odd", "16 12:00:00.000000", "purchase", revenue=1e9)
    z.add(16, "odd", "16 12:01:00.000000", "purchase", revenue=1e9 + 1)
    z.add(16, "odd", "16 12:02:00.000000", "purchase", revenue="NaN")
    z.add(16, "odd", "16 12:03:00.000000", "purchase", revenue="inf")
    z.add(16, "odd", "16 12:04:00.000000", session_id="1.5")
    z.add(16, "odd", "16 12:05:00.000000", session_id="abc")
    z.add(16, "odd", "16 12:06:00.000000", session_id=1738108860000.0)
    z.add(16, "odd", "16 12:07:00.000000", session_id="1738108860000.0")
    # A user who never sends a platform, country or version.
    z.add(16, "no_attrs", "16 10:00:00.000000", platform=None, country=None, version_name=None)
    # A first event older than 7 days (quarantined) does not make an install.
    z.add(15, "old_first", "5 10:00:00.000000")
    z.add(15, "old_first", "15 10:00:00.000000")
    # Days without events, delivered as empty files (a day of _SUCCESS alone is refused: docs/coming_from.md);
    # a user active on every other day.
    z.files[(20, "a.jsonl.gz")] = []
    z.files[(21, "a.jsonl")] = []
    for n in range(EDGE_DAYS):
        if n not in (20, 21):
            z.add(n, "daily", f"{n} 06:00:00.000000", "share", session_id=n, revenue=0.01 * n)
    z.write(landing, EDGE_DAYS)
    with open(landing / "events" / f"date={day(16)}" / "a.jsonl", "ab") as file:  # quarantined as malformed_json
        file.write(b'{"$insert_id": "broken", "user_id": "odd", "event_time": \n')


def test_edge_cases_agree_with_the_oracle(tmp_path: Path):
    """The edge cases, in three runs (a range, a day, a range): install_times carried from run to run."""
    landing = tmp_path / "landing"
    edge_case_landing(landing)
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(landing), event_types=EDGE_EVENT_TYPES)
    found = compare(landing, settings, [(day(0), day(12)), (day(13), day(13)), (day(14), day(EDGE_DAYS - 1))])
    assert found == [], "\n".join(found)
