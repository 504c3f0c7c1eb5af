"""Bad landing input: untrustworthy rows go to the quarantine with their reason, unreadable files fail the
partition by name, and neither the landing zone nor the lake's previous partitions are ever damaged."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import logging
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from churn_assets.assets.ingest.landing_files import CANONICAL_SCHEMA, MAX_JSON_NESTING
from churn_assets.config import ChurnSettings
from churn_assets.resources import LandingZone, build_resources
from churn_assets_tests.helpers import evaluations_by_partition, failure_text
from churn_assets_tests.landing_helpers import (
    GATES,
    Gate,
    gated,
    jsonl,
    materialize_ingest,
    partition_metadata,
    read_partition,
    tree_digest,
    write_landing_day,
)
from churn_assets_tests.landing_helpers import (
    amplitude_row as row,
)


@pytest.fixture
def instance():
    """An in-memory instance: these tests read their own run results, and it is ~10x faster than SQLite."""
    return dg.DagsterInstance.ephemeral()

FIRST_DAY = dt.date(2025, 1, 1)


def _valid_rows(day: dt.date, count: int = 3) -> list[dict]:
    """Good events of the day, which every bad-input day also carries."""
    return [
        row(f"{day}-ok-{i}", f"u{i}", f"{day} 1{i}:00:00.000000", "session_start", 1000 + i, revenue=None)
        for i in range(count)
    ]


def _without(key: str, **values) -> dict:
    event = row(**values)
    del event[key]
    return event


def _bad_rows(kind: str, day: dt.date) -> tuple[list[dict], list[dict]]:
    """(rows to quarantine as ``kind``, valid rows on the edge of that rule) for export day ``day``."""
    at = f"{day} 12:00:00.000000"
    next_day = day + dt.timedelta(days=1)
    week_before = day - dt.timedelta(days=7)
    if kind == "missing_user_id":
        return [
            row("b1", None, at),
            row("b2", "", at),
            _without("user_id", event_id="b3", user_id="x", event_time=at),
            row("b4", " \t ", at),  # whitespace only: no one to attribute the event to
        ], [row("edge-1", "0", at)]
    if kind == "missing_event_id":
        return [
            row(None, "u1", at),
            row("   ", "u1", at),
            _without("$insert_id", event_id="x", user_id="u1", event_time=at),
        ], []
    if kind == "unparsable_event_time":
        return [
            row("b1", "u1", "yesterday"),
            row("b2", "u1", f"{day.year}-02-30 10:00:00.000000"),
            row("b3", "u1", None),
        ], [row("edge-1", "u1", f"{day}T08:00:00")]
    if kind == "event_time_after_export_day":
        return [
            row("b1", "u1", f"{next_day} 00:00:00.000000"),
            row("b2", "u1", f"{next_day + dt.timedelta(days=30)} 12:00:00.000000"),
        ], [row("edge-1", "u1", f"{day} 23:59:59.999999")]
    if kind == "event_time_too_old":
        return [
            row("b1", "u1", f"{week_before - dt.timedelta(days=1)} 23:59:59.999999"),
            row("b2", "u1", "2024-06-01 12:00:00.000000"),
        ], [row("edge-1", "u1", f"{week_before} 00:00:00.000000")]
    if kind == "negative_revenue":
        return [
            row("b1", "u1", at, "purchase", revenue=-0.99),
            row("b2", "u1", at, "purchase", revenue=-100),
        ], [row("edge-1", "u1", at, "purchase", revenue=0.0)]
    if kind == "revenue_out_of_range":
        # Above a billion: such values overflowed user_daily's exact sums (in millionths, as int64).
        return [
            row("b1", "u1", at, "purchase", revenue=1e13),
            row("b2", "u1", at, "purchase", revenue=1_000_000_000.01),
        ], [row("edge-1", "u1", at, "purchase", revenue=1e9)]
    if kind == "missing_event_type":
        return [
            row("b1", "u1", at, None),
            row("b2", "u1", at, ""),
            row("b3", "u1", at, "  \t"),
            _without("event_type", event_id="b4", user_id="u1", event_time=at),
        ], []
    if kind == "unparsable_revenue":
        # Text that is no number, and numbers that are not finite (which float parsing accepts).
        return [
            row("b1", "u1", at, "purchase", revenue="free"),
            row("b2", "u1", at, "purchase", revenue="NaN"),
            row("b3", "u1", at, "purchase", revenue="inf"),
            row("b4", "u1", at, "purchase", revenue="1e400"),
        ], []
    if kind == "unparsable_session_id":
        return [row("b1", "u1", at, session_id="abc")], []
    raise AssertionError(kind)


ROW_KINDS = [
    "missing_user_id",
    "missing_event_id",
    "unparsable_event_time",
    "event_time_after_export_day",
    "event_time_too_old",
    "negative_revenue",
    "revenue_out_of_range",
    "missing_event_type",
    "unparsable_revenue",
    "unparsable_session_id",
]
# One export day per kind, plus one with a broken JSON line: one range run ingests them all.
KINDS = [*ROW_KINDS, "malformed_json"]
DAY_OF = {kind: FIRST_DAY + dt.timedelta(days=i) for i, kind in enumerate(KINDS)}
BROKEN_LINE = b'{"$insert_id": "b1", "user_id": "u1", "event_time": \n'


def _landing_day(kind: str) -> tuple[bytes, list[int], list[dict]]:
    """(file bytes, line numbers to quarantine, valid rows) of the kind's export day."""
    day = DAY_OF[kind]
    # Five good rows: a dirty day, not a broken one (the check stops a day quarantined more than half).
    if kind == "malformed_json":
        valid = _valid_rows(day, 5)
        data = jsonl(valid[:1]) + BROKEN_LINE + b"[1, 2]\n" + jsonl(valid[1:])
        return data, [2, 3], valid
    bad, edge = _bad_rows(kind, day)
    valid_head, valid_tail = _valid_rows(day, 5)[:2], _valid_rows(day, 5)[2:] + edge
    lines = valid_head + bad + valid_tail
    bad_lines = list(range(len(valid_head) + 1, len(valid_head) + len(bad) + 1))
    return jsonl(lines), bad_lines, valid_head + valid_tail


@pytest.fixture(scope="module")
def quarantined(tmp_path_factory):
    """Every kind's day ingested by one range run of raw_events (and its blocking check)."""
    root = tmp_path_factory.mktemp("bad_input")
    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    expected = {}
    for kind in KINDS:
        data, bad_lines, valid = _landing_day(kind)
        write_landing_day(settings.landing_url, DAY_OF[kind].isoformat(), {"events.jsonl": data})
        expected[kind] = (bad_lines, valid)
    before = tree_digest(settings.landing_url)
    result = materialize_ingest(
        build_resources(settings), dg.DagsterInstance.ephemeral(), DAY_OF[KINDS[0]].isoformat(),
        DAY_OF[KINDS[-1]].isoformat(), selection=dg.AssetSelection.assets("raw_events"),
    )
    return settings, result, expected, before


@pytest.mark.parametrize("kind", KINDS)
def test_bad_rows_are_quarantined_with_their_reason(quarantined, kind):
    settings, result, expected, _ = quarantined
    bad_lines, valid = expected[kind]
    day = DAY_OF[kind]

    quarantine = read_partition(settings.data_url, "raw_events_quarantine", day)
    assert quarantine.get_column("reason").to_list() == [kind] * len(bad_lines)
    assert quarantine.get_column("line").to_list() == bad_lines
    assert all(name.endswith(f"date={day}/events.jsonl") for name in quarantine.get_column("source_file"))
    if kind == "malformed_json":
        assert quarantine.get_column("detail").is_not_null().all()

    # Every valid row kept, with nothing else.
    events = read_partition(settings.data_url, "raw_events", day)
    assert events.schema == pl.Schema(CANONICAL_SCHEMA)
    assert sorted(events.get_column("event_id")) == sorted(r["$insert_id"] for r in valid)

    meta = partition_metadata(result, "raw_events")[day.isoformat()]
    assert meta["quarantined"] == len(bad_lines)
    assert meta[f"quarantined/{kind}"] == len(bad_lines)
    assert not [k for k in meta if k.startswith("quarantined/") and k != f"quarantined/{kind}"]
    assert meta["rows_read"] == len(bad_lines) + len(valid)
    assert meta["dagster/row_count"] == len(valid)


def test_the_quarantine_warning_names_only_the_reasons_found(tmp_path):
    """The run's log warns of a day's quarantined rows with their counts by reason: the reasons found, not the
    eleven with zeros beside them (which read as if those checks had something to say), and an example row."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    kind = "negative_revenue"
    data, bad_lines, _ = _landing_day(kind)
    write_landing_day(settings.landing_url, DAY_OF[kind].isoformat(), {"events.jsonl": data})
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_ingest(
        build_resources(settings), instance, DAY_OF[kind].isoformat(), DAY_OF[kind].isoformat(),
        selection=dg.AssetSelection.assets("raw_events"),
    )
    (warning,) = [e.user_message for e in instance.all_logs(result.run_id) if "rows quarantined at" in e.user_message]
    # Then the commonest reason's first row, where it is and what it holds.
    counts, example = warning.split("; ", 1)
    assert counts.endswith(f"{{'{kind}': {len(bad_lines)}}}")
    assert example.startswith(f"{kind} in {len(bad_lines)} rows, the first in ") and "revenue = '-" in example


def test_range_run_checks_pass_and_landing_is_unchanged(quarantined):
    settings, result, _, before = quarantined
    assert result.success
    # One evaluation per day of the range, each with its day and status.
    evaluations = evaluations_by_partition(result, "raw_events_are_valid")
    assert sorted(evaluations) == sorted(day.isoformat() for day in DAY_OF.values())
    assert all(evaluation.passed for evaluation in evaluations.values())
    assert tree_digest(settings.landing_url) == before


def test_quarantine_boundaries_keep_edge_values(quarantined):
    settings, *_ = quarantined
    day = DAY_OF["event_time_after_export_day"]
    edge = read_partition(settings.data_url, "raw_events", day).filter(pl.col("event_id") == "edge-1")
    assert edge.get_column("event_time").to_list() == [dt.datetime(2025, 1, 4, 23, 59, 59, 999999, tzinfo=dt.UTC)]
    old = read_partition(settings.data_url, "raw_events", DAY_OF["event_time_too_old"]).filter(
        pl.col("event_id") == "edge-1"
    )
    assert old.get_column("event_time").to_list() == [dt.datetime(2024, 12, 29, tzinfo=dt.UTC)]
    free = read_partition(settings.data_url, "raw_events", DAY_OF["negative_revenue"]).filter(
        pl.col("event_id") == "edge-1"
    )
    assert free.get_column("revenue").to_list() == [0.0]
    largest = read_partition(settings.data_url, "raw_events", DAY_OF["revenue_out_of_range"]).filter(
        pl.col("event_id") == "edge-1"
    )
    assert largest.get_column("revenue").to_list() == [1e9]


# -- files that cannot be read at all ------------------------------------------------------------------


def _lake_files(lake: str) -> dict[str, str]:
    return tree_digest(lake) if Path(lake).exists() else {}


GOOD_FILE = jsonl(_valid_rows(FIRST_DAY))
UNREADABLE = {
    "corrupt.jsonl.gz": gzip.compress(GOOD_FILE, mtime=0)[:-12],  # truncated gzip stream
    "garbage.parquet": b"PAR1 this is not a parquet file at all",
    "no_columns.csv": b"id,who\n1,u1\n",
    "binary.jsonl": b"\xff\xfe\x00garbage\n",
    # Not a landing file type: ignoring it would drop its events without a word.
    "events.csv.zst": b"event_id,user_id\n",
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_file_fails_the_run_by_name(local_settings, local_resources, instance, name):
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE, name: UNREADABLE[name]})
    landing_before = tree_digest(local_settings.landing_url)

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    assert name in failure_text(result)
    assert tree_digest(local_settings.landing_url) == landing_before
    # Nothing written for the day: no partial raw_events, no downstream partition.
    assert _lake_files(local_settings.data_url) == {}


@pytest.mark.parametrize("name", ["one-line.jsonl.gz", "one-line.jsonl"])
def test_a_line_too_long_to_be_an_event_fails_the_file_by_name(local_settings, local_resources, instance, name):
    """A JSON line of more than 64 MB is no event: a file without line ends, or a gzip bomb of one line (4 MB
    that inflate to a 1 GB event took 5.4 GB and 12 s to read, 20 MB would have run the run out of memory without
    a word of why). It now fails the file, naming it, before anything is stored."""
    day = FIRST_DAY.isoformat()
    event = jsonl([row("huge", "u1", f"{day} 10:00:00.000000")])
    line = event.replace(b"}\n", b', "event_properties": {"blob": "' + b"x" * (65 << 20) + b'"}}\n')
    data = gzip.compress(line, compresslevel=1, mtime=0) if name.endswith(".gz") else line
    write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE, name: data})
    del line, data

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    assert (
        f"cannot read landing file {Path(local_settings.landing_url, 'events', f'date={day}', name)}: "
        "a line of more than 6" in failure_text(result)
    )
    assert "(the limit is 64 MB)" in failure_text(result)
    assert _lake_files(local_settings.data_url) == {}


def test_a_landing_file_linked_to_a_file_outside_the_landing_zone_is_not_read(
    tmp_path, local_settings, local_resources, instance
):
    """Whoever writes the landing zone could link a landing file to any file the run may read (rsync -a keeps
    links): a CSV file linked to /proc/self/environ failed naming its header, the run's AWS keys, in the UI and
    the alert; one linked to JSON lines elsewhere was ingested. Links inside the landing zone are read."""
    day = FIRST_DAY.isoformat()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "environ").write_bytes(b"AWS_SECRET_ACCESS_KEY=SECRET-KEY,DAGSTER_PG_PASSWORD=SECRET-PW\n")
    folder = Path(write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE}))
    (folder / "b.csv").symlink_to(outside / "environ")
    landing_before = tree_digest(local_settings.landing_url)

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    failure = failure_text(result)
    assert f"landing file {folder / 'b.csv'} links to {outside / 'environ'}, outside the landing zone" in failure
    assert "SECRET" not in failure
    assert _lake_files(local_settings.data_url) == {}
    assert tree_digest(local_settings.landing_url) == landing_before

    # A link that stays inside the landing zone (a re-delivery tool's, say) is read as its file.
    (folder / "b.csv").unlink()
    (Path(local_settings.landing_url) / "kept.jsonl").write_bytes(jsonl(_valid_rows(FIRST_DAY, 5)[3:]))
    (folder / "b.jsonl").symlink_to(Path(local_settings.landing_url) / "kept.jsonl")
    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)
    assert result.success, failure_text(result)
    assert read_partition(local_settings.data_url, "raw_events", day).height == 5


def test_a_link_into_a_sibling_folder_named_like_the_landing_zone_is_outside_it(tmp_path, local_settings):
    """``landing-old/`` beside ``landing/`` begins with the landing zone's path but is not inside it: a file
    linked there is refused like any other outside, when the day is listed and when the file is opened."""
    day = FIRST_DAY.isoformat()
    sibling = Path(f"{local_settings.landing_url}-old")
    sibling.mkdir()
    (sibling / "environ").write_bytes(b"AWS_SECRET_ACCESS_KEY=SECRET-KEY\n")
    folder = Path(write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE}))
    (folder / "b.jsonl").symlink_to(sibling / "environ")
    landing = LandingZone(url=local_settings.landing_url)
    outside = f"landing file {folder / 'b.jsonl'} links to {sibling / 'environ'}, outside the landing zone"
    with pytest.raises(PermissionError, match=re.escape(outside)):
        landing.data_files(FIRST_DAY)
    with pytest.raises(PermissionError, match=re.escape(outside)):
        list(landing.read_blocks(str(folder / "b.jsonl")))


def _make_entry(path: Path, kind: str) -> None:
    """A landing day's entry of ``kind`` at ``path``: no regular file."""
    if kind == "a named pipe (FIFO)":
        os.mkfifo(path)
    elif kind == "a socket":
        listening = socket.socket(socket.AF_UNIX)
        here = os.getcwd()
        os.chdir(path.parent)  # a socket's path holds 108 bytes at most: a test's temporary path may be longer
        try:
            listening.bind(path.name)
        finally:
            os.chdir(here)
        listening.close()  # the socket file stays
    elif kind == "a character device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's: never-ending zeros
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD")
    else:  # a folder named like a data file, as Spark writes its output
        path.mkdir()
        (path / "part-00000.json.gz").write_bytes(gzip.compress(GOOD_FILE))


def _write_nothing_to(pipe: Path, ended: threading.Event) -> None:
    """Opens ``pipe`` to write and closes it, every second from 30 s until ``ended``: a reader waiting for a
    writer then reads the pipe's end."""
    ended.wait(30)
    while not ended.wait(1):
        try:
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waiting
            pass


@pytest.mark.parametrize("kind", ["a named pipe (FIFO)", "a socket", "a character device", "a folder"])
@pytest.mark.parametrize("linked", [False, True], ids=["entry", "linked"])
def test_a_landing_entry_that_is_no_regular_file_fails_the_day_naming_it(
    tmp_path, local_settings, local_resources, instance, kind, linked
):
    """A named pipe in a landing day held raw_events[D] forever (its read waited for a writer, and SIGTERM did not
    end the run); a socket, or a folder named like a data file, failed the day three times (retried) as an OSError
    that said only "No such device or address" or "Is a directory"; a device like /dev/zero would be read without
    end. Each now fails the day at once (no retry), naming the entry and what it is; the same behind a link that
    stays inside the landing zone."""
    day = FIRST_DAY.isoformat()
    folder = Path(write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE}))
    entry = folder / "events.json.gz"
    if linked:
        _make_entry(Path(local_settings.landing_url) / "elsewhere.json.gz", kind)
        entry.symlink_to(Path(local_settings.landing_url) / "elsewhere.json.gz")
    else:
        _make_entry(entry, kind)
    landing_before = tree_digest(local_settings.landing_url)
    ended = threading.Event()
    if kind == "a named pipe (FIFO)":  # without the fix, the pipe's reads wait for a writer: one every second from 30 s
        threading.Thread(target=_write_nothing_to, args=(entry, ended), daemon=True).start()

    started = time.monotonic()
    try:
        result = materialize_ingest(local_resources, instance, day, raise_on_error=False)
    finally:
        ended.set()

    assert not result.success
    assert time.monotonic() - started < 20
    assert f"landing file {entry} is {kind}, not a regular file: a landing day holds regular files only" in (
        failure_text(result)
    )
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert _lake_files(local_settings.data_url) == {}
    assert tree_digest(local_settings.landing_url) == landing_before


def test_a_link_changed_to_lead_out_of_the_landing_zone_after_the_day_is_listed_is_not_read(
    tmp_path, local_settings, local_resources, instance
):
    """Links out of the landing zone were refused when the day was listed, and the file was opened later by its
    path: a link that led inside then, and outside when opened, was read (the race of a check before an open).
    The opened file itself is now placed: this one fails the day, naming where it led."""
    day = FIRST_DAY.isoformat()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_bytes(jsonl([row("SECRET-1", "SECRET-USER", f"{day} 10:00:00.000000")]))
    (Path(local_settings.landing_url) / "kept.jsonl").parent.mkdir(parents=True)
    (Path(local_settings.landing_url) / "kept.jsonl").write_bytes(GOOD_FILE)
    folder = Path(write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE}))
    link = folder / "b.jsonl"
    link.symlink_to(Path(local_settings.landing_url) / "kept.jsonl")
    gate = GATES[str(link)] = Gate()

    def swap_the_link_once_listed():
        try:
            assert gate.reached.wait(timeout=60), "the run never reached the linked file"
            link.unlink()
            link.symlink_to(outside / "secret.jsonl")
        finally:
            gate.opened.set()

    swapper = threading.Thread(target=swap_the_link_once_listed)
    swapper.start()
    try:
        result = materialize_ingest(gated(local_resources), instance, day, raise_on_error=False)
        swapper.join(timeout=60)
    finally:
        del GATES[str(link)]

    assert not result.success
    failure = failure_text(result)
    assert f"landing file {link} links to {outside / 'secret.jsonl'}, outside the landing zone" in failure
    assert _lake_files(local_settings.data_url) == {}


@pytest.mark.parametrize("header", [b"id,who," + b"x" * (10 << 20), b"\0" * (10 << 20)], ids=["long", "nul"])
def test_an_error_quotes_a_landing_file_s_header_only_so_far(local_settings, local_resources, instance, header):
    """A CSV file without the required columns fails naming the columns it has: a header line of 10 MB (a file
    without line ends, or none of CSV) made an error of 10 MB, twice (the error and its cause), in the run's log,
    the UI and the alert; 10 MB of NUL bytes one of 40 MB each, written out as \\x00. Now a few hundred
    characters of it, and how many more there were."""
    day = FIRST_DAY.isoformat()
    folder = write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE, "b.csv": header + b"\n"})

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    failure = failure_text(result)
    assert f"cannot read landing file {folder}/b.csv: missing required columns [" in failure
    assert "more characters)" in failure
    assert len(failure) < 5_000, len(failure)


def test_a_csv_file_not_in_utf8_fails_naming_its_first_line_that_is_not(local_settings, local_resources, instance):
    """An export in Windows-1252: the error names the file, its first line that is not UTF-8 and the fix,
    not polars' "invalid utf-8 sequence" without a line."""
    day = FIRST_DAY.isoformat()
    header = "event_id,user_id,event_time,event_type,session_id,platform,country,app_version,revenue\n"
    lines = [f"e{i},u{i},{day} 10:00:00,session_start,1,iOS,{country},1.0,\n" for i, country in
             enumerate(["US", "DE", "Québec", "Zürich"])]
    write_landing_day(local_settings.landing_url, day, {"export.csv": (header + "".join(lines)).encode("cp1252")})

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    text = failure_text(result)
    assert "export.csv" in text and "line 4 is not UTF-8 text (byte 0xe9)" in text and "iconv" in text
    assert _lake_files(local_settings.data_url) == {}


def test_a_csv_record_with_more_fields_than_its_header_fails_naming_its_line(
    local_settings, local_resources, instance
):
    """A revenue written with a decimal comma and not quoted: polars said only "found more fields than defined in
    'Schema'" and suggested its own option 'truncate_ragged_lines=True', with no line in a file of millions."""
    day = FIRST_DAY.isoformat()
    header = "event_id,user_id,event_time,event_type,session_id,platform,country,app_version,revenue\n"
    lines = [f"e{i},u{i},{day} 10:00:00,session_start,1,iOS,US,1.0,\n" for i in range(3)]
    lines.insert(1, f'e9,u9,{day} 10:00:00,purchase,1,iOS,"Paris\nFR",1.0,4,99\n')  # its record ends on line 4
    write_landing_day(local_settings.landing_url, day, {"export.csv": (header + "".join(lines)).encode()})

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    text = failure_text(result)
    assert "export.csv: line 4 has 10 fields, the header 9" in text and "truncate_ragged_lines" not in text
    assert _lake_files(local_settings.data_url) == {}


GZIPPED = gzip.compress(GOOD_FILE, mtime=0)


@pytest.mark.parametrize("data, says", [
    (GOOD_FILE, "not gzip data: the file starts with b'{\"$insert_id\""),  # a plain file named .gz
    (GZIPPED + b"<html>502 Bad Gateway</html>", f"data after the end of the gzip stream, from byte {len(GZIPPED)}"),
    (GZIPPED[:-12], "truncated gzip stream: the file ends at byte"),
])
def test_a_gz_file_that_is_not_whole_gzip_fails_saying_what_it_holds(local_settings, local_resources, instance,
                                                                     data, says):
    """The decoder's "Error -5 Gzip/zlib wrapper specifies unsupported compress method" said nothing of the
    file: the error says it is not gzip, or where its gzip stream ended and what follows it."""
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE, "b.jsonl.gz": data})

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    text = failure_text(result)
    assert "b.jsonl.gz" in text and says in text
    assert "IsalError" not in text and "Error -" not in text
    assert _lake_files(local_settings.data_url) == {}


def test_a_gz_file_padded_with_zeros_is_read_as_gzip_reads_it(local_settings, local_resources, instance):
    """Zeros after the last gzip member (a writer padding to a block size) are skipped by gzip(1) and Python's
    gzip module; the day reads the file's events instead of failing on them."""
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {"a.jsonl.gz": GZIPPED + b"\0" * 4096})
    assert gzip.decompress(GZIPPED + b"\0" * 4096) == GOOD_FILE

    result = materialize_ingest(local_resources, instance, day, selection=dg.AssetSelection.assets("raw_events"),
                                raise_on_error=False)

    assert result.success, failure_text(result)
    assert read_partition(local_settings.data_url, "raw_events", day).height == 3


def test_previous_partition_survives_a_failed_rerun(local_settings, local_resources, instance):
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {"a-good.jsonl": GOOD_FILE})
    assert materialize_ingest(local_resources, instance, day).success
    lake_before = _lake_files(local_settings.data_url)
    assert any(path.startswith("raw_events/date=2025-01-01/") for path in lake_before)

    # The export is re-delivered with a corrupt extra file: the re-run fails and changes nothing.
    write_landing_day(local_settings.landing_url, day, {"b-bad.jsonl.gz": UNREADABLE["corrupt.jsonl.gz"]})
    landing_before = tree_digest(local_settings.landing_url)
    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    assert "b-bad.jsonl.gz" in failure_text(result)
    assert _lake_files(local_settings.data_url) == lake_before
    assert read_partition(local_settings.data_url, "raw_events", day).height == 3
    assert tree_digest(local_settings.landing_url) == landing_before


def test_day_without_success_marker_fails_clearly(local_settings, local_resources, instance):
    write_landing_day(local_settings.landing_url, "2025-01-01", {"a-good.jsonl": GOOD_FILE}, complete=False)
    result = materialize_ingest(local_resources, instance, "2025-01-01", raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "2025-01-01 is not complete" in text and "_SUCCESS" in text
    assert _lake_files(local_settings.data_url) == {}


def test_missing_landing_day_fails_clearly(local_settings, local_resources, instance):
    result = materialize_ingest(local_resources, instance, "2025-01-02", raise_on_error=False)
    assert not result.success
    assert "no landing folder for 2025-01-02" in failure_text(result)


def test_a_landing_url_that_is_a_file_fails_clearly_without_retrying(tmp_path, instance):
    """CHURN_LANDING_URL pointing at a file: a missing day that says why, not NotADirectoryError retried."""
    landing = tmp_path / "landing.jsonl"
    landing.write_bytes(GOOD_FILE)
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(landing))

    result = materialize_ingest(build_resources(settings), instance, "2025-01-02", raise_on_error=False)

    assert not result.success
    text = failure_text(result)
    assert "no landing folder for 2025-01-02" in text and "is CHURN_LANDING_URL a file?" in text
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


# A time written month first (a new release's locale): 01/02 is January 2nd or February 1st, never guessed.
def why_mostly_quarantined(settings: ChurnSettings) -> str:
    """What the check says of ``_write_mostly_quarantined_day``'s day: the share, the limit, what the commonest
    reason saw where (the file, its line, the field and its value) and what to do."""
    file = f"{settings.landing_url}/events/date={FIRST_DAY}/events.jsonl"
    return (
        "57% of the rows read quarantined, more than CHURN_MAX_QUARANTINED_SHARE = 0.5: unparsable_event_time in "
        f"4 rows, the first in {file} line 4: event_time = '01/01/2025 10:00'. An export whose format changed: "
        "fix the export (or its files) and re-deliver the day; docs/operations.md, 'The quarantine'"
    )


def _write_mostly_quarantined_day(settings: ChurnSettings) -> str:
    """The first day: 3 good rows, and 4 whose times are written month first (4/7 quarantined); its key."""
    broken = [row(f"us-{i}", f"u{i}", "01/01/2025 10:00", "session_start", 1000) for i in range(4)]
    day = FIRST_DAY.isoformat()
    write_landing_day(settings.landing_url, day, {"events.jsonl": jsonl(_valid_rows(FIRST_DAY) + broken)})
    return day


def test_a_day_mostly_quarantined_stops_what_reads_it(local_settings, local_resources, instance):
    """An export whose times changed format (month first) sends most of its rows to the quarantine: that is a
    broken export, not a dirty one. The day's raw_events is stored with its quarantine, for a look, but its
    blocking check fails, naming the day, the file, the line, the field and the value seen, and nothing
    downstream is computed from it."""
    day = _write_mostly_quarantined_day(local_settings)

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    [check] = evaluations_by_partition(result, "raw_events_are_valid").values()
    assert not check.passed and check.partition == day
    metadata = {key: value.value for key, value in check.metadata.items()}
    assert (
        metadata["days_mostly_quarantined"] == 1
        and metadata["mostly_quarantined"] == why_mostly_quarantined(local_settings)
    )
    assert metadata["quarantined_share"] == pytest.approx(4 / 7)
    # What the CLI prints and the UI shows beside the day says why, not only which check failed: the share
    # quarantined and the limit it passed (the day itself is the evaluation's partition), and what changed where.
    assert check.description == (
        f"failed: days_mostly_quarantined = 1 (mostly_quarantined: {why_mostly_quarantined(local_settings)})"
    )
    errors = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.ERROR]
    assert check.description in errors
    assert read_partition(local_settings.data_url, "raw_events", day).height == 3
    reasons = read_partition(local_settings.data_url, "raw_events_quarantine", day).get_column("reason")
    assert reasons.to_list() == ["unparsable_event_time"] * 4
    assert {path.split("/")[0] for path in _lake_files(local_settings.data_url)} == {
        "raw_events", "raw_events_quarantine"
    }


def test_a_range_with_a_mostly_quarantined_day_fails_that_day_only(local_settings, local_resources, instance):
    """In a range run the check evaluates each day on its own: the broken day fails (its own counts, its
    description naming it), the good day passes, and the failed blocking evaluation still stops what reads
    raw_events in the run."""
    day = _write_mostly_quarantined_day(local_settings)
    next_day = FIRST_DAY + dt.timedelta(days=1)
    write_landing_day(local_settings.landing_url, next_day.isoformat(), {"events.jsonl": jsonl(_valid_rows(next_day))})

    result = materialize_ingest(local_resources, instance, day, next_day.isoformat(), raise_on_error=False)

    assert not result.success
    evaluations = evaluations_by_partition(result, "raw_events_are_valid")
    assert sorted(evaluations) == [day, next_day.isoformat()]
    broken, good = evaluations[day], evaluations[next_day.isoformat()]
    assert not broken.passed and broken.metadata["rows"].value == 3
    assert broken.description == (
        f"failed: days_mostly_quarantined = 1 (mostly_quarantined: {why_mostly_quarantined(local_settings)})"
    )
    assert good.passed and good.metadata["rows"].value == 3 and good.description is None
    assert good.metadata["days_mostly_quarantined"].value == 0
    # A passing day's metadata holds its counts, not empty texts (no reason, no wrong column) the UI lists blank.
    assert "mostly_quarantined" not in good.metadata and "wrong_columns" not in good.metadata
    # The status each day keeps, as the UI shows it.
    key = dg.AssetCheckKey(dg.AssetKey("raw_events"), "raw_events_are_valid")
    statuses = {r.partition: r.status.value for r in instance.event_log_storage.get_asset_check_execution_history(
        key, limit=10)}
    assert statuses == {day: "FAILED", next_day.isoformat(): "SUCCEEDED"}
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    assert {info.partition_key for info in infos if info.is_current} == {day, next_day.isoformat()}
    assert {path.split("/")[0] for path in _lake_files(local_settings.data_url)} == {
        "raw_events", "raw_events_quarantine"
    }


def test_a_range_run_says_nothing_of_checks_without_results(local_settings, local_resources, instance, caplog):
    """A check records one evaluation per partition, and also hands Dagster its (empty) output, as a check
    result would: a run does not print, for each check, that it 'did not yield or return expected outputs'
    and that the blocking check 'emitted no result' and the next step 'will proceed without gating on it',
    which read as if the gate were off. (It is on: a failed day stops what reads raw_events, as the tests
    above show.)"""
    days = [FIRST_DAY + dt.timedelta(days=offset) for offset in range(2)]
    for day in days:
        write_landing_day(local_settings.landing_url, day.isoformat(), {"events.jsonl": jsonl(_valid_rows(day))})

    with caplog.at_level(logging.WARNING):
        result = materialize_ingest(local_resources, instance, days[0].isoformat(), days[-1].isoformat())

    assert sorted(evaluations_by_partition(result, "raw_events_are_valid")) == [d.isoformat() for d in days]
    said = [entry.user_message for entry in instance.all_logs(result.run_id)] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "did not yield or return expected outputs" in m or "emitted no result" in m]


def test_a_day_quarantined_exactly_at_the_share_passes(local_settings, local_resources, instance):
    """CHURN_MAX_QUARANTINED_SHARE is the most a day may quarantine: half its rows (the default) is dirty, not
    broken."""
    broken = [row(f"us-{i}", f"u{i}", "01/01/2025 10:00", "session_start", 1000) for i in range(2)]
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {"events.jsonl": jsonl(_valid_rows(FIRST_DAY, 2) + broken)})

    result = materialize_ingest(local_resources, instance, day)

    [check] = evaluations_by_partition(result, "raw_events_are_valid").values()
    assert check.passed and check.metadata["quarantined_share"].value == 0.5


def test_a_day_rematerialized_clean_is_judged_by_its_latest_quarantine(local_settings, local_resources, instance):
    """The quarantined share is read from the day's latest materialization, not an earlier broken one."""
    day = _write_mostly_quarantined_day(local_settings)
    assert not materialize_ingest(local_resources, instance, day, raise_on_error=False).success
    write_landing_day(local_settings.landing_url, day, {"events.jsonl": jsonl(_valid_rows(FIRST_DAY))})

    result = materialize_ingest(local_resources, instance, day)

    [check] = evaluations_by_partition(result, "raw_events_are_valid").values()
    assert check.passed and check.metadata["quarantined_share"].value == 0.0


def test_a_source_known_to_be_dirty_can_allow_a_larger_quarantined_share(local_settings, instance):
    """CHURN_MAX_QUARANTINED_SHARE raises the bar (say, for an app whose events are mostly anonymous)."""
    day = _write_mostly_quarantined_day(local_settings)
    settings = ChurnSettings.from_env({
        "CHURN_DATA_URL": local_settings.data_url, "CHURN_LANDING_URL": local_settings.landing_url,
        "CHURN_MAX_QUARANTINED_SHARE": "0.6",
    })

    result = materialize_ingest(build_resources(settings), instance, day)

    assert result.success and all(check.passed for check in result.get_asset_check_evaluations())
    assert read_partition(local_settings.data_url, "user_daily", day).height == 3


def test_a_complete_day_without_a_file_fails_clearly_and_an_empty_file_is_a_day_without_events(
    local_settings, local_resources, instance
):
    """A marker without a data file is an export that went wrong, not a day without events: ingesting nothing
    would hide it. A day without events is delivered as an empty file."""
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {})

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    assert f"landing day {day} is complete but holds no data file" in failure_text(result)
    assert _lake_files(local_settings.data_url) == {}

    write_landing_day(local_settings.landing_url, day, {"part-0.jsonl": b""})
    assert materialize_ingest(local_resources, instance, day).success
    assert read_partition(local_settings.data_url, "raw_events", day).height == 0


@pytest.mark.parametrize("broken_line", [False, True])
def test_a_key_given_twice_keeps_its_first_value_whatever_the_other_lines(
    local_settings, local_resources, instance, broken_line
):
    """An event whose user_id is given twice was the first user's in a clean file (polars) and the second's when
    another line of the file was broken (read line by line, by Python's json): a re-delivery that fixed an
    unrelated line moved the event to another user."""
    day = FIRST_DAY.isoformat()
    twice = jsonl([row("e1", "first", f"{day} 10:00:00.000000")]).replace(b"null}", b'null, "user_id": "second"}')
    assert twice.count(b'"user_id"') == 2
    text = twice + jsonl(_valid_rows(FIRST_DAY, 1)) + (b"not json\n" if broken_line else b"")
    write_landing_day(local_settings.landing_url, day, {"a.jsonl": text})

    result = materialize_ingest(local_resources, instance, day, selection=dg.AssetSelection.assets("raw_events"),
                                raise_on_error=False)

    assert result.success, failure_text(result)
    events = read_partition(local_settings.data_url, "raw_events", day)
    assert events.filter(pl.col("event_id") == "e1")["user_id"].to_list() == ["first"]
    assert partition_metadata(result, "raw_events")[day]["quarantined"] == int(broken_line)


def _file_with_a_deep_event(landing_url: str, day: str, depth: int) -> list[dict]:
    """Writes day's landing file: a valid event, one (``deep``) whose ``event_properties`` are ``depth`` arrays
    one in another (``depth`` + 1 levels with the event's object), a broken line (so the file is read line by
    line, as polars refuses one too deep) and another valid event. Returns the two valid events."""
    ok = _valid_rows(FIRST_DAY, 2)
    deep = jsonl([row("deep", "u9", f"{day} 10:00:00.000000")]).replace(
        b"}\n", b', "event_properties": ' + b"[" * depth + b"]" * depth + b"}\n"
    )
    write_landing_day(landing_url, day, {"a.jsonl": jsonl([ok[0]]) + deep + b"{not json\n" + jsonl([ok[1]])})
    return ok


@pytest.mark.parametrize("depth", [MAX_JSON_NESTING, 1_000, 100_000])
def test_an_event_nested_too_deeply_is_quarantined_by_its_line(local_settings, local_resources, instance, depth):
    """One app user's event whose properties nest thousands of levels deep (``event_properties``, which the
    platform ignores, is whatever the app sends) failed the whole landing file, and so the day, with
    "RecursionError: maximum recursion depth exceeded": Python's json reads a file line by line once any of its
    lines is broken, and polars refuses such a file. It is now its line's ``malformed_json``, from one level over
    MAX_JSON_NESTING on, on every Python: json's own limit kept an event 1,000 levels deep on 3.12 and 3.13."""
    day = FIRST_DAY.isoformat()
    ok = _file_with_a_deep_event(local_settings.landing_url, day, depth)

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert result.success, failure_text(result)
    events = read_partition(local_settings.data_url, "raw_events", day)
    assert sorted(events["event_id"]) == sorted([ok[0]["$insert_id"], ok[1]["$insert_id"]])
    quarantine = read_partition(local_settings.data_url, "raw_events_quarantine", day).sort("line")
    assert quarantine.select("line", "reason").rows() == [(2, "malformed_json"), (3, "malformed_json")]
    assert f"nested too deeply: {depth + 1} levels" in quarantine["detail"][0]


def test_an_event_nested_as_deep_as_allowed_is_read(local_settings, local_resources, instance):
    """An event MAX_JSON_NESTING levels deep, in a file read line by line, is an event on every Python."""
    day = FIRST_DAY.isoformat()
    ok = _file_with_a_deep_event(local_settings.landing_url, day, MAX_JSON_NESTING - 1)

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert result.success, failure_text(result)
    events = read_partition(local_settings.data_url, "raw_events", day)
    assert sorted(events["event_id"]) == sorted([ok[0]["$insert_id"], "deep", ok[1]["$insert_id"]])
    quarantine = read_partition(local_settings.data_url, "raw_events_quarantine", day)
    assert quarantine.select("line", "reason").rows() == [(3, "malformed_json")]


def test_a_value_with_half_a_surrogate_pair_is_quarantined_by_its_line(local_settings, local_resources, instance):
    """JavaScript clients cut emoji in two, and JSON escapes the half left (``"\\udc00"``): valid JSON, no text.
    It failed the whole file with "UnicodeEncodeError ... surrogates not allowed", no line; it is now its line's
    ``malformed_json``, and a whole pair (an escaped emoji) and the file's other lines are read as they are.
    (A lone first half, ``"\\ud83d"``, in a file polars reads whole, polars reads as U+0000: looking for one
    in every file would cost a refresh of 10 M events seconds; docs/coming_from.md says so.)"""
    day = FIRST_DAY.isoformat()
    ok = _valid_rows(FIRST_DAY, 2)
    emoji = row("emoji", "u9", f"{day} 10:00:00.000000", country="FR\U0001F600")
    high = row("high", "u8", f"{day} 10:00:00.000000", country="FR\ud83d")
    low = row("low", "\udc00u7", f"{day} 10:00:00.000000")
    write_landing_day(local_settings.landing_url, day, {"a.jsonl": jsonl([ok[0], low, emoji]),
                                                        "b.jsonl.gz": jsonl([high, "{not json", ok[1]], gz=True)})

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert result.success, failure_text(result)
    events = read_partition(local_settings.data_url, "raw_events", day)
    assert sorted(events["event_id"]) == sorted([ok[0]["$insert_id"], ok[1]["$insert_id"], "emoji"])
    assert events.filter(pl.col("event_id") == "emoji")["country"].item() == "FR\U0001F600"
    quarantine = read_partition(local_settings.data_url, "raw_events_quarantine", day).sort("source_file", "line")
    where = quarantine.select(pl.col("source_file").str.split("/").list.last(), "line", "reason").rows()
    assert where == [("a.jsonl", 2, "malformed_json"), ("b.jsonl.gz", 1, "malformed_json"),
                     ("b.jsonl.gz", 2, "malformed_json")]
    assert quarantine["detail"].to_list()[:2] == [
        "user_id: \\udc00 is half of a UTF-16 surrogate pair, not text",
        "country: \\ud83d is half of a UTF-16 surrogate pair, not text",
    ]


def test_hidden_files_and_markers_beside_the_data_are_not_read(local_settings, local_resources, instance):
    """Exporters (Spark, Hadoop) leave checksums (``.NAME.crc``) and commit markers (``_committed_*``) beside
    their files: those are not data, so they neither fail the day nor add rows to it."""
    day = FIRST_DAY.isoformat()
    write_landing_day(local_settings.landing_url, day, {
        "a.jsonl": GOOD_FILE, ".a.jsonl.crc": b"\x00\xffcrc garbage\x01", "_committed_1": b"",
    })
    landing_before = tree_digest(local_settings.landing_url)

    result = materialize_ingest(local_resources, instance, day, selection=dg.AssetSelection.assets("raw_events"),
                                raise_on_error=False)

    assert result.success, failure_text(result)
    assert read_partition(local_settings.data_url, "raw_events", day).height == 3
    meta = partition_metadata(result, "raw_events")[day]
    assert meta["rows_read"] == 3 and meta["quarantined"] == 0
    assert tree_digest(local_settings.landing_url) == landing_before


@pytest.mark.s3
def test_an_s3_folder_marker_object_is_not_a_landing_file(s3_server, tmp_path, instance):
    """The AWS console's "Create folder", Hadoop's S3A and other tools store a folder as an empty object named
    ``events/date=D/``; S3 lists it inside the folder. It is the folder, not a file of the day."""
    day = FIRST_DAY.isoformat()
    settings = ChurnSettings(data_url=f"s3://lake/{tmp_path.name}", landing_url=f"s3://landing/{tmp_path.name}")
    s3_server.client().put_object(Bucket="landing", Key=f"{tmp_path.name}/events/date={day}/", Body=b"")
    write_landing_day(settings.landing_url, day, {"a.jsonl": GOOD_FILE})

    result = materialize_ingest(build_resources(settings), instance, day,
                                selection=dg.AssetSelection.assets("raw_events"), raise_on_error=False)

    assert result.success, failure_text(result)
    assert partition_metadata(result, "raw_events")[day]["landing_files"] == 1
    assert read_partition(settings.data_url, "raw_events", day).height == 3


def test_an_s3_folder_named_like_a_data_file_fails_the_day_naming_it(s3_server, tmp_path, instance):
    """Spark writes its output as a folder of parts: on S3, ``events/date=D/events.json.gz/part-00000.json.gz``.
    The day read ``events.json.gz`` as an empty file, and the parts' events were lost without a word; it now fails
    at once, naming the folder and saying it is one."""
    day = FIRST_DAY.isoformat()
    settings = ChurnSettings(data_url=f"s3://lake/{tmp_path.name}", landing_url=f"s3://landing/{tmp_path.name}")
    folder = write_landing_day(settings.landing_url, day, {
        "a.jsonl": GOOD_FILE, "events.json.gz/part-00000.json.gz": gzip.compress(jsonl(_valid_rows(FIRST_DAY, 5)[3:]))
    })

    result = materialize_ingest(build_resources(settings), instance, day,
                                selection=dg.AssetSelection.assets("raw_events"), raise_on_error=False)

    assert not result.success
    assert f"landing file {folder}/events.json.gz is a folder, not a regular file" in failure_text(result)
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


def test_a_range_that_fails_part_way_records_the_days_it_stored(local_settings, local_resources, instance):
    """A range run writes each day as it goes: when day 3's file is corrupt, days 1 and 2 are already in the
    lake, rewritten from their new landing files. They are recorded as materialized by that run (their row
    counts, quarantine counts and landing versions, so that the landing sensor and the UI describe what the
    lake holds); the day that failed is not, and its files are left as they were."""
    days = [(FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(3)]
    for day in days[:2]:
        write_landing_day(local_settings.landing_url, day, {"a.jsonl": jsonl(_valid_rows(dt.date.fromisoformat(day)))})
    assert materialize_ingest(local_resources, instance, days[0], days[1], selection=["raw_events"]).success

    # Day 1 is re-delivered with two more events and a quarantined one; day 3 arrives with a corrupt file.
    more = [row(f"more-{i}", "u9", f"{days[0]} 20:0{i}:00.000000", "purchase", 7, revenue=1.5) for i in range(2)]
    write_landing_day(local_settings.landing_url, days[0], {"b.jsonl": jsonl([*more, row("bad", None, "x")])})
    write_landing_day(local_settings.landing_url, days[2], {"corrupt.jsonl.gz": UNREADABLE["corrupt.jsonl.gz"]})
    result = materialize_ingest(local_resources, instance, days[0], days[2], selection=["raw_events"],
                                raise_on_error=False)

    assert not result.success and "corrupt.jsonl.gz" in failure_text(result)
    assert read_partition(local_settings.data_url, "raw_events", days[0]).height == 5
    assert instance.get_materialized_partitions(dg.AssetKey("raw_events")) == set(days[:2])
    latest = {}
    for day in days:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_events"), asset_partitions=[day]), limit=1
        ).records
        latest[day] = records[0].event_log_entry if records else None
    assert latest[days[2]] is None
    # Day 2 too, though the stream failed as soon as the day after it was asked for, while day 2 was handed to
    # the writer: it was dropped, recorded failed with its previous file left, before the day that failed.
    assert [latest[day].run_id for day in days[:2]] == [result.run_id] * 2
    day_one = {k: v.value for k, v in latest[days[0]].asset_materialization.metadata.items()}
    assert day_one["dagster/row_count"] == 5 and day_one["rows_read"] == 6 and day_one["quarantined"] == 1
    assert day_one["landing_files"] == 2
    # The instance describes exactly the file each day holds.
    for day in days[:2]:
        stored = Path(local_settings.data_url) / "raw_events" / f"date={day}" / "data.parquet"
        recorded = latest[day].asset_materialization.metadata["content_hash"].value
        assert recorded == hashlib.sha256(stored.read_bytes()).hexdigest()[:32]
        # Its data version too, as a single day's run records it.
        version = instance.get_latest_data_version_record(dg.AssetKey("raw_events"), partition_key=day)
        assert version.event_log_entry.tags["dagster/data_version"] == recorded
    assert not (Path(local_settings.data_url) / "raw_events" / f"date={days[2]}").exists()


def test_a_first_run_after_the_first_partition_says_where_install_times_starts(
    local_settings, local_resources, instance
):
    """Landing data that starts after CHURN_START_DATE (a team that forgot to set it): install_times[D] needs
    install_times[D-1], and the error says where the chain starts and which setting moves it."""
    day = (FIRST_DAY + dt.timedelta(days=2)).isoformat()
    write_landing_day(
        local_settings.landing_url, day, {"a.jsonl": jsonl(_valid_rows(FIRST_DAY + dt.timedelta(days=2)))}
    )

    result = materialize_ingest(local_resources, instance, day, raise_on_error=False)

    assert not result.success
    text = failure_text(result)
    assert "install_times has no stored partition 2025-01-02" in text
    assert "from the first partition, 2025-01-01" in text and "set CHURN_START_DATE" in text
    assert "run the days from 2025-01-01 on as one range, --partition-range 2025-01-01...<the day>" in text


def test_a_day_after_a_gap_says_which_range_to_run(local_settings, local_resources, instance):
    """A cron host that missed days: install_times[D] lacks D-1 and the days before it back to the last one
    stored, and the error names the range that fills the gap (after the last day stored, not the first), not
    only the day before."""
    days = [FIRST_DAY + dt.timedelta(days=i) for i in (0, 1, 4)]
    for day in days:
        write_landing_day(local_settings.landing_url, day.isoformat(), {"a.jsonl": jsonl(_valid_rows(day))})
    for day in days[:2]:
        assert materialize_ingest(local_resources, instance, day.isoformat()).success

    result = materialize_ingest(local_resources, instance, days[2].isoformat(), raise_on_error=False)

    assert not result.success
    text = failure_text(result)
    assert "install_times has no stored partition 2025-01-04" in text
    assert "run the days from 2025-01-03 on as one range, --partition-range 2025-01-03...<the day>" in text
