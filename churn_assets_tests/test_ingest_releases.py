"""An app release that changes how its export writes the same events: a day holding files of the old release and
of the new one side by side gives the same events, and the same users, from both."""

from __future__ import annotations

import io

import dagster as dg
import polars as pl
import pytest

from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
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

DAY = "2025-01-01"  # the first partition: install_times starts there
# The old release's two events: Amplitude's time text, user ids as text.
OLD = [
    row("e1", "12345", "2025-01-01 10:00:00.000000", "session_start", 1735725600000, version_name="1.0"),
    row("e2", "12346", "2025-01-01 10:00:01.500000", "purchase", 1735725600000, version_name="1.0", revenue=4.99),
]
# Their times since 1970, in seconds.
EPOCH_SECONDS = [1735725600, 1735725601.5]


def _new(**columns: list) -> list[dict]:
    """The old release's events with other ids, and ``columns`` (key -> one value per event) as the new one
    writes them."""
    rows = [dict(r, **{"$insert_id": "new-" + r["$insert_id"]}) for r in OLD]
    for key, values in columns.items():
        for r, value in zip(rows, values, strict=True):
            r[key] = value
    return rows


def _parquet(rows: list[dict], **types: pl.DataType) -> bytes:
    """``rows`` as a Parquet file with the canonical column names, ``types`` as the new release typed them."""
    renamed = [{"event_id": r["$insert_id"], "app_version": r["version_name"], **r} for r in rows]
    frame = pl.DataFrame(renamed).drop("$insert_id", "version_name").with_columns(
        pl.col(name).cast(dtype) for name, dtype in types.items()
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


NEW_RELEASES = {
    # event_time as a number since 1970: seconds (with a fraction), JavaScript's milliseconds, Firebase's
    # microseconds, or milliseconds as text.
    "epoch seconds": ("new.jsonl", jsonl(_new(event_time=EPOCH_SECONDS))),
    "epoch milliseconds": ("new.jsonl", jsonl(_new(event_time=[int(s * 1000) for s in EPOCH_SECONDS]))),
    "epoch microseconds": ("new.jsonl.gz", jsonl(_new(event_time=[int(s * 10**6) for s in EPOCH_SECONDS]), gz=True)),
    "epoch milliseconds as text": ("new.jsonl", jsonl(_new(event_time=[str(int(s * 1000)) for s in EPOCH_SECONDS]))),
    # user ids as JSON numbers, integers or floats (pandas writes an integer column with gaps as floats), in a
    # file read by polars at once or, with a broken line in it, line by line.
    "user ids as integers": ("new.jsonl", jsonl(_new(user_id=[12345, 12346]))),
    "user ids as floats": ("new.jsonl", jsonl(_new(user_id=[12345.0, 12346.0]))),
    "user ids as floats beside a broken line": ("new.jsonl", jsonl(_new(user_id=[12345.0, 12346.0])) + b"{cut\n"),
    # Parquet: event times as int64 milliseconds, user ids and session ids in float64 columns.
    "parquet of numbers": ("new.parquet", _parquet(
        _new(event_time=[int(s * 1000) for s in EPOCH_SECONDS], user_id=[12345.0, 12346.0]),
        session_id=pl.Float64,
    )),
}


@pytest.mark.parametrize("release", list(NEW_RELEASES))
def test_a_new_release_s_file_beside_the_old_one_s_gives_the_same_events_and_users(tmp_path, release):
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    name, data = NEW_RELEASES[release]
    write_landing_day(settings.landing_url, DAY, {"old.jsonl": jsonl(OLD), name: data})

    result = materialize_ingest(build_resources(settings), dg.DagsterInstance.ephemeral(), DAY)

    events = read_partition(settings.data_url, "raw_events", DAY)
    old = events.filter(~pl.col("event_id").str.starts_with("new-"))
    new = events.filter(pl.col("event_id").str.starts_with("new-"))
    assert old.height == 2 and new.with_columns(pl.col("event_id").str.strip_prefix("new-")).equals(old)
    metadata = partition_metadata(result, "raw_events")[DAY]
    assert metadata["quarantined"] == (1 if "broken line" in release else 0)
    # One row per user on the day, each with the events of both releases.
    users = read_partition(settings.data_url, "user_daily", DAY)
    assert users.select("user_id", "n_events").sort("user_id").rows() == [("12345", 2), ("12346", 2)]


def test_a_release_that_renames_an_optional_key_is_counted_and_warned_of(tmp_path):
    """version_name renamed app_version by a release: no row is quarantined (the field is optional), so the day
    would pass without a word while every event lost its version. The day's metadata counts the events without
    each attribute, and a day none of whose events has one warns, naming the JSON key and what follows."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    renamed = [{**{k: v for k, v in r.items() if k != "version_name"}, "app_version": "2.0"} for r in OLD]
    write_landing_day(settings.landing_url, DAY, {"new.jsonl": jsonl(renamed)})
    instance = dg.DagsterInstance.ephemeral()

    result = materialize_ingest(build_resources(settings), instance, DAY)

    metadata = partition_metadata(result, "raw_events")[DAY]
    assert metadata["quarantined"] == 0
    assert (metadata["events_without/app_version"], metadata["events_without/platform"]) == (2, 0)
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if "did a release rename" in e.user_message]
    assert warnings == [
        f"{DAY}: none of the 2 events has app_version (JSON key 'version_name'): did a release rename or drop it? "
        f"user_daily[{DAY}] has it null, and features keep each user's last app_version seen in the 28 days before. "
        "Fix the export and re-deliver the day to keep it."
    ]


# Events with numeric ids, one without an event id and one without a user: an integer column with gaps, which pandas
# holds (and writes) as floats. Event id 10^16 is one that pandas writes as "1e+16".
NUMERIC_IDS = [(1, 33333), (2, 33334), (10**16, 33333), (None, 33333), (3, None)]
# The events raw_events keeps of them, whichever file type carried them: (event_id, user_id).
NUMERIC_IDS_KEPT = [("1", "33333"), ("10000000000000000", "33333"), ("2", "33334")]


def _numeric_id_rows() -> list[dict]:
    times = ["2025-01-01 10:00:00.000000", "2025-01-01 10:00:01.000000"]
    return [row(None, None, times[i % 2]) | {"$insert_id": e, "user_id": u} for i, (e, u) in enumerate(NUMERIC_IDS)]


def _pandas_csv(rows: list[dict]) -> bytes:
    """``rows`` as pandas' ``to_csv`` writes them: its id columns, with gaps, are floats (``33333.0``, ``1e+16``)."""
    import pandas as pd

    frame = pd.DataFrame(rows).rename(columns={"$insert_id": "event_id", "version_name": "app_version"})
    assert frame["user_id"].dtype == "float64"
    return frame.to_csv(index=False).encode()


NUMERIC_ID_FILES = {
    "JSON numbers": ("day.jsonl", lambda rows: jsonl([r | {k: r[k] and float(r[k]) for k in ("$insert_id", "user_id")}
                                                        for r in rows])),
    "Parquet float columns": ("day.parquet", lambda rows: _parquet(rows, event_id=pl.Float64, user_id=pl.Float64)),
    "CSV written by pandas": ("day.csv", _pandas_csv),
}


@pytest.mark.parametrize("kind", list(NUMERIC_ID_FILES))
def test_numeric_ids_are_the_same_ids_from_json_parquet_and_a_pandas_csv(tmp_path, kind):
    """The user 33333 is "33333" whether JSON carries it as 33333.0, Parquet in a float column, or pandas wrote it
    to CSV as "33333.0": one user, which ``erase --user-id 33333`` finds, and one event id across files."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    name, write = NUMERIC_ID_FILES[kind]
    write_landing_day(settings.landing_url, DAY, {name: write(_numeric_id_rows())})

    result = materialize_ingest(build_resources(settings), dg.DagsterInstance.ephemeral(), DAY)

    events = read_partition(settings.data_url, "raw_events", DAY)
    assert events.select("event_id", "user_id").sort("event_id").rows() == NUMERIC_IDS_KEPT
    assert partition_metadata(result, "raw_events")[DAY]["quarantined"] == 2


def test_a_csv_id_column_is_read_as_numbers_only_when_every_id_in_it_is_a_whole_float(tmp_path):
    """Per file and column: a column of whole floats only (pandas' "33333.0") is those integers; a column of string
    ids where "1.0" stands beside "abc" is text, kept as written, and so is every column of another file."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    header = "event_id,user_id,event_time,event_type\n"
    files = {
        "a.csv": (header + "10.0,1.0,2025-01-01 10:00,screen_view\n11.0,abc,2025-01-01 10:01,screen_view\n").encode(),
        "b.csv": (header + "12.0,2.0,2025-01-01 10:02,screen_view\nx13,2.0,2025-01-01 10:03,screen_view\n").encode(),
    }
    write_landing_day(settings.landing_url, DAY, files)

    materialize_ingest(build_resources(settings), dg.DagsterInstance.ephemeral(), DAY)

    events = read_partition(settings.data_url, "raw_events", DAY)
    assert events.select("event_id", "user_id").sort("event_id").rows() == [
        ("10", "1.0"), ("11", "abc"), ("12.0", "2"), ("x13", "2"),
    ]


@pytest.mark.parametrize(("user_ids", "read_as"), [
    (["1.0", "2.0"], ["1", "2"]),
    (["1.0", "1e+16", "1.2345678E7"], ["1", "10000000000000000", "12345678"]),  # pandas' and Spark's exponents
    # Text beside the floats, each a user id of its own: a float with a tail, one with leading zeros (no float
    # writer writes it), one with a fraction in exponent form (1234.5).
    (["1.0", "10.0x"], ["1.0", "10.0x"]),
    (["1.0", "007.0"], ["1.0", "007.0"]),
    (["1.0", "1.2345E3"], ["1.0", "1.2345E3"]),
])
def test_a_csv_user_id_column_is_read_as_whole_numbers_only_when_each_is_one_written_as_a_float(user_ids, read_as):
    """Known answers of the rule, one CSV file each: "007.0" or "10.0x" beside "1.0" is text, and so keeps every id of
    its column apart from the integers' (user "7", user "10")."""
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces

    lines = [f"e{n},{user_id},2025-01-01 10:00,screen_view" for n, user_id in enumerate(user_ids)]
    (piece,) = landing_pieces("a.csv", "\n".join(["event_id,user_id,event_time,event_type", *lines, ""]).encode())
    assert decode_piece(piece).get_column("user_id").to_list() == read_as
