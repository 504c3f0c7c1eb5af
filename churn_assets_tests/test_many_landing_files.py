"""A landing day in many small files, as Kinesis Data Firehose delivers one (a file every 5 minutes or few MB:
288-1,500 gzipped JSON-lines files a day, some of a few KB, some empty): it costs what its events cost, not a
request, a thread or a vetting per file, and reads as the same day in one file does."""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import re
import threading

import dagster as dg
import polars as pl
import pytest

from churn_assets.assets.ingest import landing_files
from churn_assets.config import ChurnSettings
from churn_assets.resources import LandingZone, build_resources
from churn_assets.resources import landing as landing_module
from churn_assets.resources.filesystems import filesystem
from churn_assets_tests.helpers import failure_text
from churn_assets_tests.landing_helpers import (
    amplitude_row as row,
)
from churn_assets_tests.landing_helpers import (
    jsonl,
    materialize_ingest,
    partition_metadata,
    read_partition,
    write_landing_day,
)
from churn_assets_tests.s3_server import s3_calls

DAY = dt.date(2025, 1, 1)
RAW_EVENTS = dg.AssetSelection.assets("raw_events")


def _events(count: int) -> list[dict]:
    """``count`` good events of DAY, one of them (the last) sent twice, and one with no user (quarantined)."""
    events = [row(f"e{i}", f"u{i % 7}", f"{DAY} {i % 24:02d}:00:00.000000", session_id=1000 + i) for i in range(count)]
    return [*events, events[-1], row("e-bad", None, f"{DAY} 10:00:00.000000")]


def _firehose_day(events: list[dict], files: int) -> dict[str, bytes]:
    """``events`` in ``files`` gzipped files of consecutive events, named as Firehose names them, with an empty file,
    a file of blank lines only and one of two names differing only in case among them."""
    per_file = -(-len(events) // files)
    day = {f"stream-1-{n:04d}.jsonl.gz": gzip.compress(jsonl(events[n * per_file:(n + 1) * per_file]), mtime=0)
           for n in range(files)}
    day["stream-1-0000a.jsonl.gz"] = b""
    day["stream-1-0000b.jsonl.gz"] = gzip.compress(b"\n\n\n", mtime=0)
    day["STREAM-1-0000.jsonl.gz"] = day["stream-1-0000.jsonl.gz"]  # re-sent under another case: duplicates dropped
    return day


@pytest.mark.s3
def test_a_day_of_many_small_s3_files_is_fetched_a_get_each_and_many_at_once(s3_server, tmp_path, instance):
    """Each small S3 file was opened (a HEAD for its size) and read (a GET), one file after another: 1,500 files
    were 3,000 round trips in a row. The day's listing gives each size, so each file is one GET, and the small
    ones are fetched many at a time."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=f"s3://landing/{tmp_path.name}")
    write_landing_day(settings.landing_url, DAY.isoformat(), _firehose_day(_events(600), 60))
    fs = filesystem(settings.landing_url)
    fs.connect()
    calls: dict[str, int] = {}
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def before(model, **_):
        with lock:
            calls[model.name] = calls.get(model.name, 0) + 1
            if model.name == "GetObject":
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])

    def after(model, **_):
        if model.name == "GetObject":
            with lock:
                in_flight[0] -= 1

    fs.s3.meta.events.register("before-call.s3", before)
    fs.s3.meta.events.register("after-call.s3", after)
    try:
        result = materialize_ingest(build_resources(settings), instance, DAY.isoformat(), selection=RAW_EVENTS)
    finally:
        fs.s3.meta.events.unregister("before-call.s3", before)
        fs.s3.meta.events.unregister("after-call.s3", after)

    assert partition_metadata(result, "raw_events")[DAY.isoformat()]["landing_files"] == 63
    assert calls.get("HeadObject", 0) == 0 and calls["GetObject"] == 63, calls
    assert most[0] > 1, "the small files were fetched one after another"
    assert read_partition(settings.data_url, "raw_events", DAY).height == 600


def test_a_day_of_many_small_files_is_vetted_in_few_chunks_as_the_same_day_in_one_file(
    tmp_path, instance, monkeypatch
):
    """Each file's rows were typed and vetted on their own: a day of 1,500 files of a few hundred events ran the
    vetting's dozen polars queries 1,500 times. Small files' rows are vetted together; the day holds the same
    events, quarantine, counts and lines as the day in one file."""
    events = _events(2998)  # 3,000 lines: 10 in each of 300 files
    vetted: list[int] = []
    vet_chunk = landing_files._vet_chunk

    def counted(raw: pl.DataFrame, day: dt.date):
        vetted.append(raw.height)
        return vet_chunk(raw, day)

    monkeypatch.setattr(landing_files, "_vet_chunk", counted)
    results = {}
    for files in (1, 300):
        settings = ChurnSettings(data_url=str(tmp_path / f"lake{files}"), landing_url=str(tmp_path / f"landing{files}"))
        day = _firehose_day(events, files) if files > 1 else {"stream-1-0000.jsonl.gz": gzip.compress(jsonl(events))}
        write_landing_day(settings.landing_url, DAY.isoformat(), day)
        vetted.clear()
        result = materialize_ingest(build_resources(settings), instance, DAY.isoformat(), selection=RAW_EVENTS)
        meta = partition_metadata(result, "raw_events")[DAY.isoformat()]
        quarantine = read_partition(settings.data_url, "raw_events_quarantine", DAY)
        results[files] = (read_partition(settings.data_url, "raw_events", DAY).sort("event_id"), meta, quarantine,
                          len(vetted))

    (one, one_meta, one_quarantine, _), (many, many_meta, many_quarantine, chunks) = results[1], results[300]
    assert chunks <= 2, f"a day of 303 small files was vetted in {chunks} chunks"
    assert many.equals(one)
    assert {k: many_meta[k] for k in ("rows_read", "duplicates_dropped", "quarantined")} == {
        "rows_read": 3000 + 10, "duplicates_dropped": 1 + 10, "quarantined": 1,  # the case twin's 10 events again
    }
    assert one_meta["duplicates_dropped"] == 1 and one_quarantine.height == 1
    assert one_quarantine.select("line", "reason").rows() == [(3000, "missing_user_id")]
    assert many_quarantine.select("line", "reason").rows() == [(10, "missing_user_id")]
    assert many_quarantine["source_file"][0].endswith("/stream-1-0299.jsonl.gz")


@pytest.mark.parametrize("storage", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_one_bad_file_among_many_fails_the_whole_day_naming_it(storage, tmp_path, instance, request):
    """A Firehose day with one corrupt file among its hundreds fails as a day in one file does: the error names
    that file, and none of the day's events is stored (the docs: an unreadable file fails the day by name)."""
    landing = str(tmp_path / "landing") if storage == "local" else f"s3://landing/{tmp_path.name}"
    if storage == "s3":
        request.getfixturevalue("s3_server")
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing)
    day = _firehose_day(_events(400), 40)
    day["stream-1-0017.jsonl.gz"] = day["stream-1-0017.jsonl.gz"][:-20]  # cut short: an upload that stopped
    folder = write_landing_day(landing, DAY.isoformat(), day)

    result = materialize_ingest(build_resources(settings), instance, DAY.isoformat(), selection=RAW_EVENTS,
                                raise_on_error=False)

    assert not result.success
    assert f"cannot read landing file {folder}/stream-1-0017.jsonl.gz: BadGzipFile: truncated gzip stream" in (
        failure_text(result)
    )
    assert not (tmp_path / "lake" / "raw_events").exists()


@pytest.mark.s3
def test_a_small_s3_file_gone_after_the_listing_fails_the_day_naming_it(s3_server, tmp_path):
    """A file removed between the day's listing and its fetch (a re-delivery under way) fails as read_blocks
    fails: a FileNotFoundError naming it, which the step's retry policy retries."""
    landing = LandingZone(url=f"s3://landing/{tmp_path.name}")
    write_landing_day(landing.url, DAY.isoformat(), _firehose_day(_events(40), 4))
    listed = landing.data_files(DAY)
    gone = listed.files[4]
    assert gone.endswith("/stream-1-0001.jsonl.gz")  # after STREAM-1-0000, stream-1-0000, its twins a and b
    filesystem(landing.url).rm(gone)

    (batch,) = list(listed.batches())
    blocks = landing.read_batch(batch)

    assert [b"".join(blocks[i]) for i in (2, 3, 5)][0] == b""  # the empty file, read as it is
    assert gzip.decompress(b"".join(blocks[0])) == gzip.decompress(b"".join(blocks[1]))  # the case twins
    with pytest.raises(FileNotFoundError, match=f"landing file {re.escape(gone)} is gone since its day was listed"):
        b"".join(blocks[4])


@pytest.mark.s3
def test_a_day_of_one_s3_file_is_read_in_blocks_without_a_look_up(s3_server, tmp_path, instance):
    """A day delivered as one file (or a file over the whole-fetch size) was looked up (a HEAD, for its size and ETag)
    and then read in ranged GETs: its size and ETag are in the day's listing. Each block is still read of the
    listed ETag: a file replaced since the listing fails as one replaced while it is read does (s3fs' FileExpired)."""
    from s3fs.utils import FileExpired

    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=f"s3://landing/{tmp_path.name}")
    write_landing_day(settings.landing_url, DAY.isoformat(), {"export.jsonl.gz": gzip.compress(jsonl(_events(300)))})
    fs = filesystem(settings.landing_url)
    fs.connect()
    calls: list[tuple[str, str | None]] = []

    def before(model, params, **_):
        calls.append((model.name, params.get("Range")))

    fs.s3.meta.events.register("before-parameter-build.s3", before)
    try:
        result = materialize_ingest(build_resources(settings), instance, DAY.isoformat(), selection=RAW_EVENTS)
    finally:
        fs.s3.meta.events.unregister("before-parameter-build.s3", before)

    assert result.success
    assert [(name, bool(ranged)) for name, ranged in calls if name != "ListObjectsV2"] == [("GetObject", True)], calls
    assert read_partition(settings.data_url, "raw_events", DAY).height == 300
    landing = LandingZone(url=settings.landing_url)
    listed = landing.data_files(DAY)
    (url,) = listed.files
    fs.pipe_file(url, gzip.compress(jsonl(_events(5)), mtime=0))  # re-delivered since the listing
    with pytest.raises(FileExpired):
        b"".join(landing.read_blocks(url, listed=listed.listed(url)))


@pytest.mark.s3
def test_the_sensor_s_listing_of_s3_days_of_many_files_looks_up_their_markers_not_every_file(s3_server, tmp_path):
    """The landing sensor lists the recent days' files every tick and every file at the first tick of each hour:
    for days of 1,500 files, a request per 1,000 of them one after another (two years: ~1,100 requests an hour).
    Once a page shows days of many files, the days after it are looked up by their marker alone; what is found
    is what listing every file found: each complete day with the version raw_events records, and the day still
    being written."""
    landing = LandingZone(url=f"s3://landing/{tmp_path.name}")
    days = [(DAY + dt.timedelta(days=n)).isoformat() for n in range(4)]
    fs = filesystem(landing.url)
    fs.pipe({f"{landing.url}/events/date={day}/stream-1-{n:04d}.jsonl.gz": b"" for day in days for n in range(500)})
    for day in days[:3]:
        fs.pipe_file(f"{landing.url}/events/date={day}/_SUCCESS", b"")
    versions = {day: landing.data_files(dt.date.fromisoformat(day)).version for day in days[:3]}
    fs.connect()
    listed: list[str] = []

    def count(parsed, model, **_):
        if model.name == "ListObjectsV2":
            listed.extend(c["Key"] for c in parsed.get("Contents", []))

    fs.s3.meta.events.register("after-call.s3", count)
    try:
        for only in (None, days, days[1:]):
            listed.clear()
            complete = {day: versions[day] for day in days[:3] if not only or day in only}
            assert landing.days(only) == (complete, [days[3]])
            assert len(listed) <= 1000 + len(days), f"listed {len(listed)} objects to find {len(days)} days' markers"
    finally:
        fs.s3.meta.events.unregister("after-call.s3", count)


def _small_files_day(files: int, events_per_file: int) -> dict[str, dict[int, bytes]]:
    """``files`` files of ``events_per_file`` good events of DAY each, as {name: {line: JSON line}}: a test edits
    lines, then ``_gzipped`` makes the files."""
    return {
        f"stream-1-{n:04d}.jsonl.gz": {
            line: jsonl([row(f"e{n}-{line}", f"u{line}", f"{DAY} {n % 24:02d}:00:00.000000")])
            for line in range(1, events_per_file + 1)
        }
        for n in range(files)
    }


def _gzipped(day: dict[str, dict[int, bytes]]) -> dict[str, bytes]:
    return {name: gzip.compress(b"".join(lines[n] for n in sorted(lines)), mtime=0) for name, lines in day.items()}


def test_rows_of_small_files_parsed_together_keep_their_own_file_and_line(tmp_path, instance, monkeypatch):
    """A batch of small files is parsed in one polars call (one per file cost ~0.4 ms each, more than their events);
    each row still names its own file and line in the quarantine, whatever the file's text: a byte order mark, no
    line end after its last line, a blank line, quoted numbers, a broken line (the last three read file by file)."""
    monkeypatch.setattr(landing_module, "FILES_AT_ONCE", 8)  # batches of 8 files: that of files 16-23 has the odd ones
    day = _small_files_day(40, 10)
    bad = {  # (file, line) → an event without a user, quarantined by its file and line
        (3, 4): jsonl([row("x3", None, f"{DAY} 10:00:00.000000")]),
        (11, 10): jsonl([row("x11", None, f"{DAY} 10:00:00.000000")]).rstrip(b"\n"),  # the file's last, no line end
        (12, 1): codecs.BOM_UTF8 + jsonl([row("x12", None, f"{DAY} 10:00:00.000000")]),
        (39, 10): jsonl([row("x39", None, f"{DAY} 10:00:00.000000")]),
        (17, 6): jsonl([row("x17", None, f"{DAY} 10:00:00.000000")]),  # after a blank line 5
        (21, 7): jsonl([row("x21", None, f"{DAY} 10:00:00.000000")]),  # in a file of quoted numbers
    }
    for (n, line), text in bad.items():
        day[f"stream-1-{n:04d}.jsonl.gz"][line] = text
    day["stream-1-0017.jsonl.gz"][5] = b"\n"
    day["stream-1-0021.jsonl.gz"][2] = jsonl([row("e21-2", "u2", f"{DAY} 01:00:00.000000", session_id="123")])
    day["stream-1-0022.jsonl.gz"][8] = b'{"$insert_id": "e22-8", "user_id": \n'  # cut short
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    folder = write_landing_day(settings.landing_url, DAY.isoformat(), _gzipped(day))
    parses = []
    read_ndjson = pl.read_ndjson

    def counted(*args, **kwargs):
        parses.append(1)
        return read_ndjson(*args, **kwargs)

    monkeypatch.setattr(landing_files.pl, "read_ndjson", counted)
    materialize_ingest(build_resources(settings), instance, DAY.isoformat(), selection=RAW_EVENTS)

    quarantine = read_partition(settings.data_url, "raw_events_quarantine", DAY)
    assert sorted(quarantine.select("source_file", "line", "reason").rows()) == sorted(
        [(f"{folder}/stream-1-{n:04d}.jsonl.gz", line, "missing_user_id") for n, line in bad]
        + [(f"{folder}/stream-1-0022.jsonl.gz", 8, "malformed_json")]
    )
    assert read_partition(settings.data_url, "raw_events", DAY).height == 400 - len(bad) - 1 - 1  # 17's blank line
    # 4 batches in one parse each; the odd one's join, then its 8 files one by one (22 read line by line, 21 again
    # as text), where each file was parsed on its own (40, and 22 and 21 again).
    assert len(parses) == 4 + 1 + 8 + 2, f"{len(parses)} parses of 40 small files in 5 batches"


def test_a_bad_file_parsed_with_others_fails_the_day_naming_it_and_the_first_of_two(tmp_path, instance):
    """A file that is no JSON lines among small files parsed together fails the day by its name, as it did parsed
    on its own; with a corrupt gzip file after it in the same batch, the day names the first bad file, as before."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    day = _gzipped(_small_files_day(40, 10))
    day["stream-1-0005.jsonl.gz"] = gzip.compress(b"\x00\x01\x02 not json\n" * 3, mtime=0)
    for later in (None, "stream-1-0017.jsonl.gz"):
        if later:
            day[later] = day[later][:-20]  # cut short: its error comes from reading it, before any parse
        folder = write_landing_day(settings.landing_url, DAY.isoformat(), day)

        result = materialize_ingest(build_resources(settings), instance, DAY.isoformat(), selection=RAW_EVENTS,
                                    raise_on_error=False)

        assert not result.success
        assert f"cannot read landing file {folder}/stream-1-0005.jsonl.gz: not JSON lines: none of lines 1-3" in (
            failure_text(result)
        )
        assert not (tmp_path / "lake" / "raw_events").exists()


@pytest.mark.s3
def test_a_sensor_tick_s_listing_of_s3_days_is_one_request_across_a_month_s_end(s3_server, tmp_path):
    """Each tick of the landing sensor (1,440 a day) looked up ``events/`` first (a HEAD and a listing: S3 has no
    folders), then listed its recent days month by month: five requests a tick where one or two do. The listing
    says whether there is anything, and the days of consecutive months are one listing from the first to the last;
    what is found is what the months' listings found."""
    landing = LandingZone(url=f"s3://landing/{tmp_path.name}")
    days = [(dt.date(2025, 1, 27) + dt.timedelta(days=n)).isoformat() for n in range(12)]  # 2025-01-27..02-07
    fs = filesystem(landing.url)
    fs.pipe({f"{landing.url}/events/date={day}/part-0.jsonl.gz": b"" for day in days})
    for day in days[:-1]:
        fs.pipe_file(f"{landing.url}/events/date={day}/_SUCCESS", b"")
    versions = {day: landing.data_files(dt.date.fromisoformat(day)).version for day in days[:-1]}
    with s3_calls(fs) as calls:
        for only in (None, days[2:], days[3:9], ["2025-01-28", "2025-03-01"]):
            calls.clear()
            wanted = days if only is None else only
            complete = {day: version for day, version in versions.items() if day in wanted}
            assert landing.days(only) == (complete, [day for day in days[-1:] if day in wanted])
            assert calls == ["ListObjectsV2"] * (2 if only and "2025-03-01" in only else 1), (only, calls)
