"""A tiny hand-written landing zone of three export days, and the exact ingest outputs it must give."""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import io
import re
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from churn_assets.assets.ingest.landing_files import CANONICAL_SCHEMA
from churn_assets.assets.ingest.user_daily import TOTAL_COLUMNS, user_daily_schema
from churn_assets.config import DEFAULT_EVENT_TYPES, TOTAL_COUNT_COLUMNS, ChurnSettings
from churn_assets.definitions import defs
from churn_assets.partitions import largest_window, window_sizes
from churn_assets.resources import build_resources
from churn_assets_tests.landing_helpers import (
    INGEST,
    jsonl,
    materialize_ingest,
    partition_metadata,
    read_partition,
    write_landing_day,
)
from churn_assets_tests.landing_helpers import (
    amplitude_row as row,
)

UTC = dt.UTC


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


DAY1 = [
    # u1: two sessions on day 1, a purchase, an app error; country and version change in the second session.
    row("e1", "u1", "2025-01-01 10:00:00.000000", "session_start", 1000, "iOS", "US", "1.0"),
    row("e2", "u1", "2025-01-01 10:05:00.000000", "screen_view", 1000, "iOS", "US", "1.0",
        event_properties={"screen": "home"}, amplitude_id=99),
    row("e3", "u1", "2025-01-01 10:12:30.000000", "purchase", 1000, "iOS", "US", "1.0", revenue=4.99),
    row("e3", "u1", "2025-01-01 10:12:30.000000", "purchase", 1000, "iOS", "US", "1.0", revenue=4.99),  # re-sent
    row("e4", "u1", "2025-01-01 15:00:00.000000", "session_start", 2000, "iOS", "DE", "1.1"),
    row("e5", "u1", "2025-01-01 15:03:00.000000", "app_error", 2000, "iOS", "DE", "1.1"),
    # u2: an untracked event type (counts in the total only) and an event outside any session.
    row("e7", "u2", "2025-01-01 23:00:00.000000", "custom_thing", None, "android", "BE", "2.0"),
    row("e6", "u2", "2025-01-01 23:59:59.999999", "session_start", -1, "android", "FR", "2.0"),
]
# Day 2 arrives as a CSV file and a Parquet file with the canonical columns. The CSV's second time carries
# a UTC offset, as ISO 8601 writers (pandas' to_csv of a zoned column, most exporters) put it: 09:30 UTC.
DAY2_CSV = (
    "event_id,user_id,event_time,event_type,session_id,platform,country,app_version,revenue\n"
    "e9,u3,2025-01-02 09:00:00.000000,session_start,4000,web,JP,3.0,\n"
    "e10,u3,2025-01-02T11:30:00+02:00,share,4000,web,JP,3.0,\n"
)
DAY2_PARQUET = pl.DataFrame(
    {
        "event_id": ["e11"],
        "user_id": ["u1"],
        "event_time": [t("2025-01-02 12:00:00")],
        "event_type": ["screen_view"],
        "session_id": [5000],
        "platform": ["iOS"],
        "country": ["DE"],
        "app_version": ["1.1"],
        "revenue": [None],
    },
    schema=CANONICAL_SCHEMA,
)
# Day 3: one event of u3 exported two days late, earlier than u3's known install time.
DAY3 = [row("e12", "u3", "2025-01-01 20:00:00.000000", "app_error", 6000, "web", "JP", "2.9")]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The three days ingested one run per day; shared by the tests that only read the results."""
    root = tmp_path_factory.mktemp("known_answers")
    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    parquet = io.BytesIO()
    DAY2_PARQUET.write_parquet(parquet)
    write_landing_day(settings.landing_url, "2025-01-01", {"part-0.jsonl.gz": jsonl(DAY1, gz=True)})
    write_landing_day(settings.landing_url, "2025-01-02", {"a.csv": DAY2_CSV.encode(), "b.parquet": parquet.getvalue()})
    write_landing_day(settings.landing_url, "2025-01-03", {"late.jsonl": jsonl(DAY3)})
    instance = dg.DagsterInstance.ephemeral()
    results = [
        materialize_ingest(build_resources(settings), instance, day)
        for day in ("2025-01-01", "2025-01-02", "2025-01-03")
    ]
    return settings.data_url, results


def test_blocking_checks_pass(ingested):
    _, results = ingested
    for result in results:
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {"raw_events_are_valid", "user_daily_is_consistent"}
        assert all(e.passed for e in evaluations)


def test_the_ingest_tables_are_what_their_declared_column_schemas_say(ingested):
    """The UI shows each asset's declared columns before anything is materialized; a partition records its
    own schema only where it differs from the declared one, and none of these does."""
    _, results = ingested
    for asset in ("raw_events", "install_times", "user_daily"):
        declared = defs.get_assets_def(asset).metadata_by_key[dg.AssetKey(asset)]["dagster/column_schema"]
        assert declared.columns, asset
        for metadata in partition_metadata(results[0], asset).values():
            assert "dagster/column_schema" not in metadata, asset


def test_raw_events_are_typed_and_deduplicated(ingested):
    lake, results = ingested
    day1 = read_partition(lake, "raw_events", "2025-01-01")
    assert day1.schema == pl.Schema(CANONICAL_SCHEMA)
    assert day1.to_dicts() == [
        {"event_id": "e1", "user_id": "u1", "event_time": t("2025-01-01 10:00:00"), "event_type": "session_start",
         "session_id": 1000, "platform": "iOS", "country": "US", "app_version": "1.0", "revenue": None},
        {"event_id": "e2", "user_id": "u1", "event_time": t("2025-01-01 10:05:00"), "event_type": "screen_view",
         "session_id": 1000, "platform": "iOS", "country": "US", "app_version": "1.0", "revenue": None},
        {"event_id": "e3", "user_id": "u1", "event_time": t("2025-01-01 10:12:30"), "event_type": "purchase",
         "session_id": 1000, "platform": "iOS", "country": "US", "app_version": "1.0", "revenue": 4.99},
        {"event_id": "e4", "user_id": "u1", "event_time": t("2025-01-01 15:00:00"), "event_type": "session_start",
         "session_id": 2000, "platform": "iOS", "country": "DE", "app_version": "1.1", "revenue": None},
        {"event_id": "e5", "user_id": "u1", "event_time": t("2025-01-01 15:03:00"), "event_type": "app_error",
         "session_id": 2000, "platform": "iOS", "country": "DE", "app_version": "1.1", "revenue": None},
        {"event_id": "e7", "user_id": "u2", "event_time": t("2025-01-01 23:00:00"), "event_type": "custom_thing",
         "session_id": None, "platform": "android", "country": "BE", "app_version": "2.0", "revenue": None},
        {"event_id": "e6", "user_id": "u2", "event_time": dt.datetime(2025, 1, 1, 23, 59, 59, 999999, tzinfo=UTC),
         "event_type": "session_start", "session_id": None, "platform": "android", "country": "FR",
         "app_version": "2.0", "revenue": None},
    ]
    meta = partition_metadata(results[0], "raw_events")["2025-01-01"]
    assert meta["rows_read"] == 8
    assert meta["duplicates_dropped"] == 1
    assert meta["quarantined"] == 0
    assert meta["dagster/row_count"] == 7
    assert meta["landing_files"] == 1

    day2 = read_partition(lake, "raw_events", "2025-01-02")
    assert day2.schema == pl.Schema(CANONICAL_SCHEMA)
    assert sorted(day2.rows()) == [
        ("e10", "u3", t("2025-01-02 09:30:00"), "share", 4000, "web", "JP", "3.0", None),
        ("e11", "u1", t("2025-01-02 12:00:00"), "screen_view", 5000, "iOS", "DE", "1.1", None),
        ("e9", "u3", t("2025-01-02 09:00:00"), "session_start", 4000, "web", "JP", "3.0", None),
    ]
    # The late event belongs to the day it was exported, whatever its event_time.
    day3 = read_partition(lake, "raw_events", "2025-01-03")
    assert day3.rows() == [("e12", "u3", t("2025-01-01 20:00:00"), "app_error", 6000, "web", "JP", "2.9", None)]


def test_install_times_carry_forward_and_move_earlier(ingested):
    lake, _ = ingested
    d1, d2, d3 = dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(2025, 1, 3)
    assert read_partition(lake, "install_times", d1).rows() == [
        ("u1", t("2025-01-01 10:00:00"), d1, d1),
        ("u2", t("2025-01-01 23:00:00"), d1, d1),
    ]
    assert read_partition(lake, "install_times", d2).rows() == [
        ("u1", t("2025-01-01 10:00:00"), d1, d2),
        ("u2", t("2025-01-01 23:00:00"), d1, d1),
        ("u3", t("2025-01-02 09:00:00"), d2, d2),
    ]
    # e12, exported on day 3, shows u3 was active on Jan 1 at 20:00: the install time moves earlier.
    assert read_partition(lake, "install_times", d3).rows() == [
        ("u1", t("2025-01-01 10:00:00"), d1, d2),
        ("u2", t("2025-01-01 23:00:00"), d1, d1),
        ("u3", t("2025-01-01 20:00:00"), d2, d3),
    ]


def _expected_user_day(user_id: str, **values) -> dict:
    expected = dict.fromkeys(user_daily_schema(list(DEFAULT_EVENT_TYPES)), 0)
    expected.update(user_id=user_id, session_minutes=0.0, revenue=0.0)
    expected.update(values)
    return expected


def test_user_daily_values(ingested):
    lake, _ = ingested
    day1 = read_partition(lake, "user_daily", "2025-01-01")
    assert day1.schema == pl.Schema(user_daily_schema(list(DEFAULT_EVENT_TYPES)))
    assert day1.to_dicts() == [
        _expected_user_day(
            "u1", n_session_start=2, n_screen_view=1, n_purchase=1, n_app_error=1, n_events=5, n_sessions=2,
            session_minutes=12.5 + 3.0, revenue=4.99, n_purchases=1, platform="iOS", country="DE",
            app_version="1.1", days_since_install=0,
        ),
        _expected_user_day(
            "u2", n_session_start=1, n_events=2, n_sessions=0, platform="android", country="FR",
            app_version="2.0", days_since_install=0,
        ),
    ]
    # Sparse: u2 has no event on day 2 and no row.
    assert read_partition(lake, "user_daily", "2025-01-02").to_dicts() == [
        _expected_user_day(
            "u1", n_screen_view=1, n_events=1, n_sessions=1, platform="iOS", country="DE", app_version="1.1",
            days_since_install=1,
        ),
        _expected_user_day(
            "u3", n_session_start=1, n_share=1, n_events=2, n_sessions=1, session_minutes=30.0, platform="web",
            country="JP", app_version="3.0", days_since_install=0,
        ),
    ]
    # days_since_install counts from the install time moved earlier by the late event.
    assert read_partition(lake, "user_daily", "2025-01-03").to_dicts() == [
        _expected_user_day(
            "u3", n_app_error=1, n_events=1, n_sessions=1, platform="web", country="JP", app_version="2.9",
            days_since_install=2,
        ),
    ]


def test_event_types_are_configuration(local_settings, instance):
    """Only the configured types get a column of their own; every event still counts in the total."""
    settings = ChurnSettings(
        data_url=local_settings.data_url, landing_url=local_settings.landing_url,
        event_types=("purchase", "app-error"),
    )
    write_landing_day(settings.landing_url, "2025-01-01", {"part-0.jsonl": jsonl(DAY1)})
    materialize_ingest(build_resources(settings), instance, "2025-01-01")
    day1 = read_partition(settings.data_url, "user_daily", "2025-01-01")
    assert day1.columns[:3] == ["user_id", "n_purchase", "n_app_error"]
    assert day1.select("user_id", "n_purchase", "n_app_error", "n_events").rows() == [("u1", 1, 0, 5), ("u2", 0, 0, 2)]


@pytest.mark.parametrize("value, says", [
    ("share,Share", "'share' and 'Share' would both be counted in n_share"),
    ("screen-view,screen_view", "'screen-view' and 'screen_view' would both be counted in n_screen_view"),
    ("purchase,sessions", "'sessions' would be counted in n_sessions, a total user_daily always has"),
    ("events", "'events' would be counted in n_events"),
    ("purchase,--", "'--' has no letter or digit"),
    (" , ", "names no event type"),
])
def test_event_types_that_would_share_a_column_are_refused_when_the_settings_load(value, says):
    """Two types counted in one column failed user_daily at run time, or (a type named "sessions") silently
    replaced a total by the type's count."""
    with pytest.raises(ValueError, match=re.escape(says)):
        ChurnSettings.from_env({"CHURN_EVENT_TYPES": value})


def test_a_training_window_of_one_month_is_refused_when_the_settings_load():
    """One month of labels holds fewer than the 31 days of snapshots the time-based split needs."""
    with pytest.raises(ValueError, match="CHURN_TRAINING_LOOKBACK_MONTHS=1 must be at least 2"):
        ChurnSettings.from_env({"CHURN_TRAINING_LOOKBACK_MONTHS": "1"})


def test_each_setting_is_read_from_its_variable():
    settings = ChurnSettings.from_env({
        "CHURN_START_DATE": "2024-06-01", "CHURN_EVENT_TYPES": "open, buy", "CHURN_ALERT_WEBHOOK": "http://hook",
        "CHURN_HORIZON_DAYS": "21", "CHURN_TRAINING_LOOKBACK_MONTHS": "4", "CHURN_MAX_TRAINING_ROWS": "1000",
        "CHURN_MAX_QUARANTINED_SHARE": "0.25", "CHURN_LANDING_SENSOR_INTERVAL": "5",
        "CHURN_DRIFT_THRESHOLD": "0.75", "CHURN_RETRAINING_COOLDOWN_DAYS": "0",  # 0: no cooldown
        "CHURN_DRIFT_MIN_ROWS": "1000",
    })
    assert settings.start_date == dt.date(2024, 6, 1) and settings.event_types == ("open", "buy")
    assert settings.alert_webhook == "http://hook"
    assert (settings.horizon_days, settings.lookback_months, settings.max_training_rows) == (21, 4, 1000)
    assert (settings.max_quarantined_share, settings.landing_sensor_interval_seconds) == (0.25, 5)
    assert (settings.drift_threshold, settings.retraining_cooldown_days, settings.drift_min_rows) == (0.75, 0, 1000)


@pytest.mark.parametrize("name, value, says", [
    ("CHURN_START_DATE", "2025-13-01", "CHURN_START_DATE='2025-13-01' is not a date in YYYY-MM-DD form"),
    ("CHURN_HORIZON_DAYS", "two", "CHURN_HORIZON_DAYS='two' is not a whole number"),
    ("CHURN_HORIZON_DAYS", "0", "CHURN_HORIZON_DAYS=0 must be at least 1"),
    ("CHURN_RETRAINING_COOLDOWN_DAYS", "-1", "CHURN_RETRAINING_COOLDOWN_DAYS=-1 must be at least 0"),
    ("CHURN_MAX_QUARANTINED_SHARE", "1.5", "CHURN_MAX_QUARANTINED_SHARE=1.5 must be between 0 and 1"),
    ("CHURN_DRIFT_THRESHOLD", "-0.1", "CHURN_DRIFT_THRESHOLD=-0.1 must be between 0 and 1"),
    ("CHURN_DRIFT_THRESHOLD", "half", "CHURN_DRIFT_THRESHOLD='half' is not a number"),
    ("CHURN_DRIFT_MIN_ROWS", "0", "CHURN_DRIFT_MIN_ROWS=0 must be at least 1"),
    # A slash short of s3://: it was a folder "s3:" under the working directory, written without a word.
    ("CHURN_DATA_URL", "s3:/bucket/lake", "CHURN_DATA_URL: storage URL 's3:/bucket/lake' is not s3://"),
    ("CHURN_LANDING_URL", "s3:bucket/landing", "CHURN_LANDING_URL: storage URL 's3:bucket/landing' is not s3://"),
    # Found out only when the first failed run's alert could not be posted (and was lost), before.
    # Without echoing the path: it is the webhook's token, and this error is the code location's load error in the UI.
    (
        "CHURN_ALERT_WEBHOOK", "hooks.example.com/x/SECRET",
        "CHURN_ALERT_WEBHOOK='hooks.example.com/…' is not an http:// or https:// URL",
    ),
    ("CHURN_ALERT_WEBHOOK", "https://", "CHURN_ALERT_WEBHOOK='https://' is not an http:// or https:// URL"),
    # A user:password@ before the host is a credential too: the message names the host alone.
    ("CHURN_ALERT_WEBHOOK", "bot:SECRET@hooks.example.com/x", "CHURN_ALERT_WEBHOOK='hooks.example.com/…' is not"),
])
def test_a_bad_setting_is_refused_naming_its_variable(name, value, says):
    with pytest.raises(ValueError, match=re.escape(says)) as refused:
        ChurnSettings.from_env({name: value})
    assert "SECRET" not in str(refused.value)


@pytest.mark.parametrize("value", ["Puzzle", "puzzle-2", "puzzle/x", "puzzle 2", "2048game", "_puzzle", "puzzle.io"])
def test_an_app_name_dagster_or_the_key_prefix_would_break_is_refused(value):
    """CHURN_APP starts every asset key and job, schedule and sensor name: a "-", "/", "." or space in it failed the
    code location's load with Dagster's traceback (or split the key); it is refused naming the variable (lowercase
    letters, digits and _, README's CHURN_APP; starting with a letter)."""
    with pytest.raises(ValueError, match=re.escape(f"CHURN_APP={value!r} is not an app name")):
        ChurnSettings.from_env({"CHURN_APP": value})


def test_an_app_name_is_taken_as_given_around_its_spaces():
    """An env file's or a Secret's value may end in a space or a newline: the app is the name itself."""
    for value, app in (("puzzle", "puzzle"), ("fit_2", "fit_2"), (" puzzle\n", "puzzle"), ("", None)):
        assert ChurnSettings.from_env({"CHURN_APP": value}).app == app, value


def test_a_setting_at_either_end_of_its_range_is_taken():
    """The bounds README gives are inclusive: a threshold of 1 (retrain only when every column drifted), a
    quarantined share of 0 (no dirty row allowed) or 1, a deadline of 48 hours; a webhook's scheme in any case."""
    for name, value, field, expected in [
        ("CHURN_DRIFT_THRESHOLD", "1", "drift_threshold", 1.0),
        ("CHURN_DRIFT_THRESHOLD", "0", "drift_threshold", 0.0),
        ("CHURN_MAX_QUARANTINED_SHARE", "1.0", "max_quarantined_share", 1.0),
        ("CHURN_MAX_QUARANTINED_SHARE", "0", "max_quarantined_share", 0.0),
        ("CHURN_LANDING_DEADLINE_HOURS", "48", "landing_deadline_hours", 48),
        ("CHURN_LANDING_DEADLINE_HOURS", "1", "landing_deadline_hours", 1),
        ("CHURN_HORIZON_DAYS", "1", "horizon_days", 1),
        ("CHURN_TRAINING_LOOKBACK_MONTHS", "2", "lookback_months", 2),
        ("CHURN_ALERT_WEBHOOK", "HTTPS://hooks.example.com/x", "alert_webhook", "HTTPS://hooks.example.com/x"),
    ]:
        assert getattr(ChurnSettings.from_env({name: value}), field) == expected, (name, value)


def test_a_variable_set_empty_takes_its_default():
    """An env file's ``CHURN_HORIZON_DAYS=`` (or Compose's ``${CHURN_HORIZON_DAYS:-}``) passes the variable empty:
    it means the default (ChurnSettings.from_env), not an error that stops every command."""
    names = set(
        re.findall(r'"(CHURN_[A-Z_]+)"', (Path(__file__).parents[1] / "churn_assets" / "config.py").read_text())
    )
    assert len(names) >= 13, names
    assert ChurnSettings.from_env(dict.fromkeys(names, "")) == ChurnSettings.from_env({})


def test_the_totals_user_daily_always_has_are_reserved_in_the_settings():
    counts = [column for column in TOTAL_COLUMNS if column.startswith("n_")]
    assert sorted(counts) == sorted(TOTAL_COUNT_COLUMNS)


def test_amplitude_json_gz_and_gzipped_csv_read_as_their_plain_files():
    """Amplitude's own exports end in .json.gz, and CSV exports are often gzipped: each gives the events the
    same file gives uncompressed."""
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces, vet_export_day

    def events(name: str, data: bytes, day: str) -> pl.DataFrame:
        pieces = [decode_piece(piece) for piece in landing_pieces(name, data)]
        return vet_export_day(pieces, dt.date.fromisoformat(day)).events

    from_jsonl = events("part-0.jsonl", jsonl(DAY1), "2025-01-01")
    assert from_jsonl.height == 7
    assert events("123_2025-01-01_0#0.json.gz", jsonl(DAY1, gz=True), "2025-01-01").equals(from_jsonl)
    assert events("part-0.json", jsonl(DAY1), "2025-01-01").equals(from_jsonl)
    from_csv = events("a.csv", DAY2_CSV.encode(), "2025-01-02")
    assert from_csv.height == 2
    assert events("a.csv.gz", gzip.compress(DAY2_CSV.encode()), "2025-01-02").equals(from_csv)


def test_event_times_parse_in_every_export_shape():
    """Amplitude's six-digit fraction, shorter or longer fractions, none, the ISO "T", ISO 8601 with "Z" or
    a UTC offset (the instant, in UTC), and a spreadsheet's time to the minute, with blanks around or not: all
    the same instant as the text says; anything else is null
    (and quarantined by the vetting)."""
    from churn_assets.assets.ingest.landing_files import parse_event_times

    texts = pl.Series([
        "2025-03-01 00:01:24.230633", "2025-03-01 00:01:24.5", "2025-03-01 00:01:24",
        "2025-03-01 00:01:24.2306339", "2025-03-01T00:01:24.230633", "2025-03-01T00:01:24",
        "2025-03-01T00:01:24.230633Z", "2025-03-01 00:01:24+00:00", "2025-03-01T02:01:24.5+02:00",
        "2025-02-28T16:01:24-0800", "2025-03-01 00:01", "2025-03-01T00:01",
        "2025-02-30 00:01:24.230633", "2025-03-01T00:01:24+25:00", "2025-03-01 25:01", "yesterday", None,
        # A CSV field padded with blanks (fixed-width exports) is the time it holds.
        "2025-03-01 00:01:24.230633 ", " 2025-03-01T02:01:24+02:00\t", "2025-03-01 00:01   ",
    ])
    utc = dt.UTC
    assert parse_event_times(texts).to_list() == [
        dt.datetime(2025, 3, 1, 0, 1, 24, 230633, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, 24, 500000, tzinfo=utc),
        dt.datetime(2025, 3, 1, 0, 1, 24, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, 24, 230633, tzinfo=utc),
        dt.datetime(2025, 3, 1, 0, 1, 24, 230633, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, 24, tzinfo=utc),
        dt.datetime(2025, 3, 1, 0, 1, 24, 230633, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, 24, tzinfo=utc),
        dt.datetime(2025, 3, 1, 0, 1, 24, 500000, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, 24, tzinfo=utc),
        dt.datetime(2025, 3, 1, 0, 1, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, tzinfo=utc),
        None, None, None, None, None,
        dt.datetime(2025, 3, 1, 0, 1, 24, 230633, tzinfo=utc), dt.datetime(2025, 3, 1, 0, 1, 24, tzinfo=utc),
        dt.datetime(2025, 3, 1, 0, 1, tzinfo=utc),
    ]


def test_an_iso_time_to_the_minute_with_z_or_an_offset_is_that_instant():
    """ISO 8601 allows a time to the minute with its zone ("2025-03-01T02:01+02:00", "2025-03-01T00:01Z"), which
    coming_from.md promises as "an ISO 8601 time with Z or an offset": read as the instant, not quarantined as
    unparsable; an offset out of range stays null."""
    from churn_assets.assets.ingest.landing_files import parse_event_times

    texts = pl.Series([
        "2025-03-01T00:01Z", "2025-03-01T02:01+02:00", "2025-02-28T16:01-0800", "2025-03-01 02:01+02:00",
        " 2025-03-01T00:01Z ", "2025-03-01T00:01+25:00",
    ])
    at = dt.datetime(2025, 3, 1, 0, 1, tzinfo=dt.UTC)
    assert parse_event_times(texts).to_list() == [at, at, at, at, at, None]


def test_numbers_as_json_numbers_or_as_text_in_several_files_give_the_same_events(tmp_path):
    """The contract's JSON numbers take the typed fast path; a file with quoted or fractional numbers is
    read as text. Both, in files of the same day, give the same typed events."""
    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    numbers = [
        row("n1", "u1", "2025-01-01 10:00:00.000000", "purchase", 1000, revenue=4.99),
        row("n2", "u1", "2025-01-01 10:01:00.000000", "screen_view", -1),
        row("n3", "u2", "2025-01-01 11:00:00.000000", "session_start", None, revenue=2),
    ]
    quoted = [dict(r, **{"$insert_id": "q" + r["$insert_id"][1:]},
                   session_id=None if r["session_id"] is None else str(r["session_id"]),
                   revenue=None if r["revenue"] is None else str(r["revenue"])) for r in numbers]
    fractional = [dict(numbers[0], **{"$insert_id": "f1"}, session_id=1000.0)]
    write_landing_day(settings.landing_url, "2025-01-01", {
        "a.jsonl.gz": jsonl(numbers, gz=True), "b.jsonl": jsonl(quoted), "c.jsonl": jsonl(fractional),
    })
    result = materialize_ingest(build_resources(settings), dg.DagsterInstance.ephemeral(), "2025-01-01",
                                selection=["raw_events"])
    assert result.success
    events = read_partition(settings.data_url, "raw_events", "2025-01-01").sort("event_id")
    assert events.schema == pl.Schema(CANONICAL_SCHEMA)
    assert events.select("event_id", "session_id", "revenue").rows() == [
        ("f1", 1000, 4.99),
        ("n1", 1000, 4.99), ("n2", None, None), ("n3", None, 2.0),
        ("q1", 1000, 4.99), ("q2", None, None), ("q3", None, 2.0),
    ]
    assert partition_metadata(result, "raw_events")["2025-01-01"]["quarantined"] == 0


@pytest.mark.parametrize("name", ["part-0.jsonl.gz", "part-0.jsonl"])
def test_a_file_vetted_in_chunks_equals_the_file_vetted_whole(tmp_path, name):
    """Large files are decoded and vetted a chunk of lines at a time: the same events, the same
    quarantined rows with the same line numbers, and duplicates dropped across chunks."""
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces, vet_export_day
    from churn_assets.simulate import simulate

    simulate(str(tmp_path), users=200, days=2, seed=3, dirty=True, file_format="jsonl.gz")
    data = (tmp_path / "events" / "date=2025-01-02" / "part-00000.jsonl.gz").read_bytes()
    if not name.endswith(".gz"):
        data = gzip.decompress(data)
    day = dt.date(2025, 1, 2)
    (whole_file,) = map(decode_piece, landing_pieces(name, data))  # a small file is one piece by default
    whole = vet_export_day(whole_file, day)
    chunks = [decode_piece(piece) for piece in landing_pieces(name, data, chunk_bytes=4096)]
    assert len(chunks) > 20
    chunked = vet_export_day(chunks, day)
    assert chunked.rows_read == whole.rows_read == sum(c.height for c in chunks)
    assert whole.duplicates_dropped > 0 and chunked.duplicates_dropped == whole.duplicates_dropped
    assert chunked.events.equals(whole.events)
    assert chunked.quarantine.height > 0 and chunked.quarantine.equals(whole.quarantine)


@pytest.mark.parametrize("block_bytes", [1, 777, 4096, 10**9])
def test_a_gzipped_file_read_in_blocks_gives_the_pieces_of_the_whole_file(block_bytes):
    """raw_events inflates a landing file as its blocks arrive (read, or fetched from S3, ahead): whatever
    the blocks' size, and with gzip members ending inside a block, the same lines in pieces of whole lines,
    numbered as in the file."""
    from churn_assets.assets.ingest.landing_files import landing_pieces

    lines = [f'{{"$insert_id":"e{i}","user_id":"u{i % 7}","n":"{"x" * (i % 50)}"}}\n'.encode() for i in range(3000)]
    data = b"".join(gzip.compress(b"".join(lines[i:i + 700]), mtime=0) for i in range(0, len(lines), 700))
    blocks = (data[i:i + block_bytes] for i in range(0, len(data), block_bytes))

    pieces = list(landing_pieces("part-0.jsonl.gz", blocks, chunk_bytes=8192))

    assert len(pieces) > 10 and b"".join(p.data for p in pieces) == b"".join(lines)
    assert all(p.data.endswith(b"\n") and p.lines == p.data.count(b"\n") for p in pieces)
    assert [p.first_line for p in pieces] == [1 + sum(p.lines for p in pieces[:i]) for i in range(len(pieces))]
    assert all(4096 < len(p.data) < 3 * 8192 for p in pieces[:-1])  # ~chunk_bytes of text each


def test_a_landing_file_that_cannot_be_read_fails_with_its_storage_error():
    """An error getting a file's bytes (S3 gone, say) is raised as it is, so the asset's retry policy can
    try again; a file whose content cannot be decoded fails as a LandingFileError that names it."""
    from churn_assets.assets.ingest.landing_files import LandingFileError, landing_pieces

    data = gzip.compress(b"".join(b'{"a": %d}\n' % i for i in range(1000)))

    def dropped_after_one_block():
        yield data[:100]
        raise ConnectionResetError("connection reset by peer")

    with pytest.raises(ConnectionResetError, match="reset by peer"):
        list(landing_pieces("part-0.jsonl.gz", dropped_after_one_block()))
    with pytest.raises(LandingFileError, match="cannot read landing file part-0.jsonl.gz: .*truncated"):
        list(landing_pieces("part-0.jsonl.gz", [data[:100], data[100:-8]]))  # its end is missing
    with pytest.raises(ConnectionResetError):
        list(landing_pieces("part-0.parquet", dropped_after_one_block()))


def test_a_typed_parquet_file_is_vetted_like_the_same_values_as_text():
    """A Parquet landing file whose event times and numbers have their canonical types is vetted as it is,
    without turning them into text and back: the same events, and the same quarantined rows with the same
    text in them, as the same values landed as text."""
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces, vet_export_day

    day = dt.date(2025, 1, 2)
    typed = pl.DataFrame(
        {
            "event_id": ["a", "b", "c", "d", "e", "f", "g", "a", "h", "i"],
            "user_id": ["u1", "u2", None, "u3", "u4", "u5", "u6", "u1", "u7", "u8"],
            "event_time": [
                t("2025-01-02 10:00:00.000001"), t("2025-01-02 23:59:59.999999"), t("2025-01-02 11:00:00"), None,
                t("2025-01-03 00:00:00"), t("2024-12-25 23:59:59"), t("2025-01-02 12:00:00"),
                t("2025-01-02 10:00:00.000001"), t("2025-01-02 13:00:00"), t("2025-01-02 14:00:00"),
            ],
            "event_type": ["session_start", "purchase", "screen_view", "screen_view", "screen_view", "purchase",
                           "purchase", "session_start", "purchase", "purchase"],
            "session_id": [1000, -1, None, 3, 4, 5, 6, 1000, 7, 8],
            "platform": ["iOS"] * 10,
            "country": ["US"] * 10,
            "app_version": ["1.0"] * 10,
            "revenue": [None, 4.99, 0.0, None, None, -1.0, float("nan"), None, float("inf"), -0.5],
        },
        schema=CANONICAL_SCHEMA,
    )
    as_text = typed.with_columns(
        pl.col("event_time").dt.strftime("%Y-%m-%d %H:%M:%S%.6f"),
        pl.col("session_id").cast(pl.String),
        pl.col("revenue").cast(pl.String),
    )

    def vetted(frame: pl.DataFrame):
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        (piece,) = landing_pieces("part-0.parquet", buffer.getvalue())
        raw = decode_piece(piece)
        return raw.schema["event_time"], vet_export_day(raw, day)

    typed_times, from_typed = vetted(typed)
    text_times, from_text = vetted(as_text)
    assert (typed_times, text_times) == (CANONICAL_SCHEMA["event_time"], pl.String)
    assert from_typed.events.get_column("event_id").to_list() == ["a", "b"]
    assert from_typed.events.equals(from_text.events)
    assert from_typed.quarantine.get_column("reason").to_list() == [
        "missing_user_id", "unparsable_event_time", "event_time_after_export_day", "event_time_too_old",
        "unparsable_revenue", "unparsable_revenue", "negative_revenue",
    ]
    assert from_typed.quarantine.equals(from_text.quarantine)
    assert from_typed.quarantine.filter(pl.col("event_id") == "e").get_column("event_time").to_list() == [
        "2025-01-03 00:00:00.000000"
    ]
    assert from_typed.duplicates_dropped == from_text.duplicates_dropped == 1


@pytest.mark.parametrize("chunk_bytes", [None, 64])
def test_blank_lines_keep_quarantine_line_numbers_true(chunk_bytes):
    """polars skips blank lines; a quarantined row still names the line it is on in the file, whether the
    file is read whole or in chunks of a few lines."""
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces, vet_export_day

    good = row("e1", "u1", "2025-01-01 10:00:00.000000", "screen_view", 1)
    no_user = row("e2", None, "2025-01-01 10:01:00.000000", "screen_view", 1)
    late = row("e3", "u1", "2025-01-02 00:00:01.000000", "screen_view", 1)
    lines = [jsonl([good]), b"\n", jsonl([no_user]), b"   \r\n", b"\n", jsonl([late]), jsonl([good])[:-1]]
    text = b"".join(lines)  # the last line has no newline
    pieces = landing_pieces("a.jsonl", text, chunk_bytes=chunk_bytes)
    vetted = vet_export_day([decode_piece(piece) for piece in pieces], dt.date(2025, 1, 1))
    assert vetted.quarantine.select("line", "reason").rows() == [
        (3, "missing_user_id"), (6, "event_time_after_export_day")
    ]
    assert vetted.events.get_column("event_id").to_list() == ["e1"]
    assert vetted.duplicates_dropped == 1


def _vetted(name: str, data: bytes, day: str = "2025-01-01"):
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces, vet_export_day

    return vet_export_day([decode_piece(piece) for piece in landing_pieces(name, data)], dt.date.fromisoformat(day))


def test_a_line_that_is_not_utf8_is_quarantined_and_a_bom_is_skipped():
    """One line with a Latin-1 byte used to fail the whole day (every good line lost); it is a malformed line.
    A file that starts with a UTF-8 byte order mark (some Windows tools write one) keeps its first event."""
    good = [row(f"e{i}", "u1", "2025-01-01 10:00:00.000000", "screen_view", 1) for i in (1, 3)]
    latin1 = jsonl([row("e2", "u2", "2025-01-01 10:00:00.000000", "screen_view", 1, country="CI")]).replace(
        b'"CI"', b'"C\xf4te d\'Ivoire"'
    )
    vetted = _vetted("a.jsonl", jsonl(good[:1]) + latin1 + jsonl(good[1:]))
    assert vetted.quarantine.select("line", "reason").rows() == [(2, "malformed_json")]
    assert "utf-8" in vetted.quarantine.get_column("detail")[0]
    assert vetted.events.get_column("event_id").to_list() == ["e1", "e3"]

    with_bom = _vetted("a.jsonl", codecs.BOM_UTF8 + jsonl(good))
    assert with_bom.quarantine.height == 0
    assert with_bom.events.get_column("event_id").to_list() == ["e1", "e3"]


def test_a_last_piece_of_only_broken_lines_is_quarantined_not_the_file():
    """A file cut short mid-line: its last piece (16 MB on a real day) holds one broken line and no good one;
    that line is quarantined. Only a first piece without any JSON object fails the file (not JSON lines)."""
    from churn_assets.assets.ingest.landing_files import decode_piece, landing_pieces, vet_export_day

    good = jsonl([row(f"e{i}", "u1", "2025-01-01 10:00:00.000000", "screen_view", 1) for i in range(20)])
    text = good + b'{"$insert_id": "e20", "user_id": "u1", "event_ti'
    pieces = list(landing_pieces("a.jsonl", text, chunk_bytes=len(good) + 1))
    assert len(pieces) > 1 and pieces[-1].lines == 1
    vetted = vet_export_day([decode_piece(piece) for piece in pieces], dt.date(2025, 1, 1))
    assert vetted.quarantine.select("line", "reason").rows() == [(21, "malformed_json")]
    assert vetted.events.height == 20


def test_csv_rows_name_the_line_they_are_on():
    """The header is line 1: a CSV row's quarantine line is the one an editor shows."""
    header, first = DAY2_CSV.splitlines(keepends=True)[:2]
    no_user = "e11,,2025-01-02 10:00:00,share,4000,web,JP,3.0,\n"
    vetted = _vetted("a.csv", (header + first + no_user).encode(), "2025-01-02")
    assert vetted.quarantine.select("line", "reason").rows() == [(3, "missing_user_id")]


def test_blank_csv_lines_are_skipped_not_quarantined():
    """As in JSON lines, a blank line (or one of separators only, which spreadsheets leave below the data) is
    no event: it used to be quarantined as missing_event_id. The rows after it keep their line numbers."""
    header, first, second = DAY2_CSV.splitlines(keepends=True)
    no_user = "e11,,2025-01-02 10:00:00,share,4000,web,JP,3.0,\n"
    vetted = _vetted("a.csv", (header + first + "\n" + no_user + ",,,,,,,,\n" + second + "\n").encode(), "2025-01-02")
    assert vetted.quarantine.select("line", "reason").rows() == [(4, "missing_user_id")]
    assert vetted.events.get_column("event_id").to_list() == ["e9", "e10"]
    assert vetted.rows_read == 3


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_csv_lines_may_end_in_lf_crlf_or_cr(eol):
    """Windows tools end lines in CRLF, Excel for Mac's "CSV (Macintosh)" in CR alone: read by LF, a CR file
    was one header line, and its day materialized without any of its events and without an error."""
    text = codecs.BOM_UTF8 + eol.join(DAY2_CSV.splitlines()).encode() + eol.encode()
    vetted = _vetted("a.csv", text, "2025-01-02")
    assert vetted.quarantine.height == 0
    assert vetted.events.equals(_vetted("a.csv", DAY2_CSV.encode(), "2025-01-02").events)
    assert vetted.events.get_column("event_id").to_list() == ["e9", "e10"]


def test_a_cr_csv_with_a_line_break_in_a_quoted_field_is_read_by_cr():
    """Excel for Mac ends its "CSV (Macintosh)" records in CR and writes a line break typed in a cell (Option-Return)
    as LF, quoted: the file's line end is the header's, not LF wherever one is. Read by LF, the header was the
    text up to that LF, and the day materialized without any of its events and without an error."""
    header, first, second = DAY2_CSV.splitlines()
    text = "\r".join([header, first.replace(",web,", ',"we\nb",'), second]) + "\r"
    vetted = _vetted("a.csv", text.encode(), "2025-01-02")
    assert vetted.events.get_column("event_id").to_list() == ["e9", "e10"]
    assert vetted.events.get_column("platform").to_list() == ["we\nb", "web"]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_a_csv_not_in_utf8_names_its_line_whatever_its_lines_end_in(eol):
    """An export in Windows-1252 fails naming its first line that is not UTF-8: in a file of CR line ends
    (Excel for Mac) too, where counting LFs named line 1 whatever the line."""
    from churn_assets.assets.ingest.landing_files import LandingFileError

    header, first, second = DAY2_CSV.splitlines()
    text = eol.join([header, first, second.replace("JP", "Québec")]) + eol
    with pytest.raises(LandingFileError, match="line 3 is not UTF-8 text"):
        _vetted("a.csv", text.encode("cp1252"), "2025-01-02")


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.json.gz", "a.csv", "a.csv.gz", "a.parquet"])
def test_an_empty_file_of_any_type_is_a_day_without_events(name):
    """docs/coming_from.md: a day without events is delivered as an empty file (a CronJob's CSV of nothing)."""
    vetted = _vetted(name, b"")
    assert (vetted.events.height, vetted.quarantine.height, vetted.rows_read) == (0, 0, 0)
    assert vetted.events.schema == pl.Schema(CANONICAL_SCHEMA)


@pytest.mark.parametrize(
    "text", [b"\n", b"\r\n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\r\n"], ids=["lf", "crlf", "bom", "bom-crlf"]
)
@pytest.mark.parametrize("name", ["a.jsonl", "a.csv"])
def test_a_file_of_a_line_end_or_a_byte_order_mark_alone_is_empty_too(name, text):
    """A shell's `echo "$rows" > day.csv` of no rows writes a line end, a UTF-8 writer with a BOM writes it
    alone: a JSON lines file of that was a day without events, a CSV one failed the day (polars' "empty CSV")."""
    vetted = _vetted(name, text)
    assert (vetted.events.height, vetted.quarantine.height, vetted.rows_read) == (0, 0, 0)
    assert vetted.events.schema == pl.Schema(CANONICAL_SCHEMA)


@pytest.mark.parametrize("in_memory_below_rows", [0, 10**9], ids=["streaming", "in-memory"])
def test_user_daily_sums_revenue_exactly_and_breaks_time_ties_by_event_id(in_memory_below_rows, monkeypatch):
    """Ten purchases of 0.10 make 1.00 (a float sum gives 0.9999999999999999, and on a large day a
    different last digit from run to run); of two last events at the same time, the greater id wins,
    whatever the rows' order, and whichever polars engine the day's size picks."""
    from churn_assets import threads
    from churn_assets.assets.ingest.user_daily import summarize_user_day

    monkeypatch.setattr(threads, "IN_MEMORY_BELOW_ROWS", in_memory_below_rows)

    day = dt.date(2025, 1, 1)
    purchases = [
        ("p" + str(i), "u1", t(f"2025-01-01 10:00:0{i}.000000"), "purchase", 1, "iOS", "US", "1.0", 0.1)
        for i in range(10)
    ]
    last = [
        ("z2", "u1", t("2025-01-01 11:00:00.000000"), "screen_view", 1, "android", "FR", "2.0", None),
        ("z1", "u1", t("2025-01-01 11:00:00.000000"), "screen_view", 1, "web", "DE", "1.5", None),
    ]
    events = pl.DataFrame(purchases + last, schema=CANONICAL_SCHEMA, orient="row")
    installs = pl.DataFrame({"user_id": ["u1"], "install_time": [t("2024-12-31 08:00:00.000000")]})
    for frame in (events, events.reverse()):
        (user,) = summarize_user_day(frame, installs, day, DEFAULT_EVENT_TYPES).iter_rows(named=True)
        assert user["revenue"] == 1.0 and user["n_purchases"] == 10
        assert (user["platform"], user["country"], user["app_version"]) == ("android", "FR", "2.0")


def test_user_daily_keeps_the_last_platform_country_and_version_seen_when_later_events_lack_them():
    """A backend's purchase without a platform, country or version, after the app's events: the day keeps the
    values last seen (by time, then id), each column on its own; a user whose events never had one has none."""
    from churn_assets.assets.ingest.user_daily import summarize_user_day

    day = dt.date(2025, 1, 1)
    rows = [
        ("a1", "u1", t("2025-01-01 08:00:00.000000"), "session_start", 1, "iOS", "US", "1.0", None),
        ("a2", "u1", t("2025-01-01 08:30:00.000000"), "screen_view", 1, "android", None, "1.1", None),
        ("a3", "u1", t("2025-01-01 09:00:00.000000"), "purchase", None, None, None, None, 4.99),
        # Two events at u2's last time that has a country: the greater id wins, as for any column.
        ("b2", "u2", t("2025-01-01 10:00:00.000000"), "screen_view", 1, "web", "FR", "2.0", None),
        ("b1", "u2", t("2025-01-01 10:00:00.000000"), "screen_view", 1, "web", "DE", "2.0", None),
        ("b3", "u2", t("2025-01-01 11:00:00.000000"), "purchase", None, "web", None, "2.1", 1.0),
        ("c1", "u3", t("2025-01-01 12:00:00.000000"), "purchase", None, None, None, None, 2.0),
    ]
    events = pl.DataFrame(rows, schema=CANONICAL_SCHEMA, orient="row")
    installs = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "install_time": [t("2024-12-31 08:00:00.000000")] * 3})
    for frame in (events, events.reverse()):
        got = summarize_user_day(frame, installs, day, DEFAULT_EVENT_TYPES)
        assert got.select("user_id", "platform", "country", "app_version").rows() == [
            ("u1", "android", "US", "1.1"),
            ("u2", "web", "FR", "2.1"),
            ("u3", None, None, None),
        ]
        assert got.get_column("n_events").to_list() == [3, 3, 1]


@pytest.mark.parametrize("dropped", [[], [0], [9], [3, 4], [0, 5, 9], list(range(0, 40, 2)), list(range(40))])
def test_duplicates_are_dropped_from_a_chunk_as_a_filter_would(dropped):
    """A chunk keeps its rows as slices of itself when it drops a few (the first row, the last, neighbours),
    and is filtered when it drops many: the same rows in the same order either way."""
    from churn_assets.assets.ingest.landing_files import _kept_rows

    chunk = pl.DataFrame({"event_id": [f"e{i}" for i in range(40)], "n": list(range(40))})
    keep = pl.Series([i not in dropped for i in range(40)])
    pieces = _kept_rows(chunk, keep)
    kept = pl.concat(pieces) if pieces else chunk.clear()
    assert kept.equals(chunk.filter(keep))
    # A few dropped rows: the kept runs between them as slices of the chunk (no copy of its columns, ~1 s of
    # CPU a 10 M-event day); many: one filtered copy.
    runs = sum(1 for i in range(40) if i not in dropped and (i == 0 or i - 1 in dropped))
    assert len(pieces) == (runs if len(dropped) <= 16 else 1)


def test_first_of_each_id_matches_is_first_distinct():
    """Duplicates are found through 64-bit hashes first, then compared as strings: the same rows as
    polars' exact ``is_first_distinct``, over a chunked column as ``vet_export_day`` builds it."""
    from churn_assets.assets.ingest.landing_files import first_of_each_id

    rng = np.random.default_rng(7)
    ids = pl.Series("event_id", [f"e{n}" for n in rng.integers(0, 40_000, 50_000)])  # ~15 k repeats
    chunked = pl.concat([ids.slice(i, 5_000) for i in range(0, len(ids), 5_000)], rechunk=False)
    assert chunked.n_chunks() == 10
    first = first_of_each_id(chunked)
    assert first.to_list() == ids.is_first_distinct().to_list()
    assert (~first).sum() == len(ids) - ids.n_unique() > 0
    unique = pl.Series("event_id", ["b", "a", "c"])
    assert first_of_each_id(unique).to_list() == [True, True, True]
    assert first_of_each_id(pl.Series("event_id", [], pl.String)).to_list() == []


def test_the_raw_events_check_fails_on_each_kind_of_bad_row(ingested, tmp_path):
    """raw_events_are_valid counts the rows that repeat an event id, a null user, an event time after the
    export day, and a column of the wrong type (here a stored partition tampered with)."""
    from churn_assets.assets.ingest.checks import raw_events_are_valid
    from churn_assets.resources.lake import Lake

    lake_url, _ = ingested
    tampered = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    lake = Lake(tampered.data_url)
    day1 = read_partition(lake_url, "raw_events", "2025-01-01")
    first = day1.head(1)
    no_user = first.with_columns(pl.lit("n1").alias("event_id"), pl.lit(None, pl.String).alias("user_id"))
    next_day = first.with_columns(pl.lit("n2").alias("event_id"), pl.lit(t("2025-01-02 00:00:00")).alias("event_time"))
    rows = pl.concat([day1, day1.slice(2, 2), no_user, next_day]).with_columns(pl.col("session_id").cast(pl.Int32))
    lake.write_table(lake.table_url("raw_events", "date", "2025-01-01"), rows)
    result = dg.materialize(
        INGEST, resources=build_resources(tampered), instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.checks(raw_events_are_valid), tags={"dagster/partition": "2025-01-01"},
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["duplicate_event_ids"].value == 2
    assert evaluation.metadata["null_user_ids"].value == 1
    assert evaluation.metadata["event_times_out_of_bounds"].value == 1  # D+1 00:00 is past the day
    assert evaluation.metadata["columns_with_wrong_type"].value == 1
    assert evaluation.metadata["wrong_columns"].value == "['session_id']"
    assert evaluation.metadata["rows"].value == day1.height + 4


def test_the_user_daily_check_fails_on_a_repeated_user_an_unknown_one_and_a_negative_count(ingested, tmp_path):
    """user_daily_is_consistent counts, over a range of two days, a user-day stored twice, a user
    install_times does not know and a negative count (here stored partitions tampered with), beside the days
    that are sound."""
    from churn_assets.assets.ingest.checks import user_daily_is_consistent
    from churn_assets.resources.lake import Lake

    lake_url, _ = ingested
    tampered = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    lake = Lake(tampered.data_url)
    for day in ("2025-01-01", "2025-01-02"):
        for asset in ("user_daily", "install_times"):
            lake.write_table(lake.table_url(asset, "date", day), read_partition(lake_url, asset, day))
    day2 = read_partition(lake_url, "user_daily", "2025-01-02")
    stranger = day2.head(1).with_columns(pl.lit("nobody").alias("user_id"), pl.lit(-1, pl.Int64).alias("n_sessions"))
    lake.write_table(lake.table_url("user_daily", "date", "2025-01-02"), pl.concat([day2, day2.head(1), stranger]))
    result = dg.materialize(
        INGEST, resources=build_resources(tampered), instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.checks(user_daily_is_consistent),
        tags={"dagster/asset_partition_range_start": "2025-01-01", "dagster/asset_partition_range_end": "2025-01-02"},
        raise_on_error=False,
    )
    # Each day evaluated on its own: the tampered day fails with its counts, the sound one passes.
    sound, tampered_day = sorted(result.get_asset_check_evaluations(), key=lambda e: e.partition)
    assert (sound.partition, tampered_day.partition) == ("2025-01-01", "2025-01-02")
    assert sound.passed and not tampered_day.passed
    assert tampered_day.metadata["duplicate_user_days"].value == 1
    assert tampered_day.metadata["users_missing_from_install_times"].value == 1
    assert tampered_day.metadata["negative_counts"].value == 1
    assert sound.metadata["duplicate_user_days"].value == 0
    assert sound.metadata["negative_counts"].value == 0
    assert sound.metadata["users_missing_from_install_times"].value == 0
    day1 = read_partition(lake_url, "user_daily", "2025-01-01")
    assert sound.metadata["rows"].value == day1.height
    assert tampered_day.metadata["rows"].value == day2.height + 2


def test_a_window_holds_the_rows_of_its_last_length_days():
    d1, d2, d3 = dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(2025, 1, 3)
    daily = pl.LazyFrame({"date": [d1, d2, d2, d3, d3, d3, d3]})
    assert window_sizes(daily, [d2, d3], 2) == {d2: 3, d3: 6}
    assert largest_window(daily, [d1, d2, d3], 1) == 4


def test_a_quoted_or_blank_empty_revenue_or_session_id_is_none_not_unparsable():
    """Python's csv.writer(quoting=QUOTE_ALL), spreadsheets and many exporters write a missing value as "",
    and hand-written CSV pads fields with blanks: each is the same missing value as an unquoted empty field
    (revenue null, no session), not a row to quarantine; a number with blanks around it is that number."""
    header = "event_id,user_id,event_time,event_type,session_id,platform,country,app_version,revenue\n"
    quoted = (
        '"q1","u1","2025-01-02 10:00:00","share","","web","JP","3.0",""\n'
        '"q2","u1","2025-01-02 10:01:00","share"," ","web","JP","3.0"," "\n'
        '"q3","u1","2025-01-02 10:02:00","purchase"," 4000 ","web","JP","3.0"," 4.99 "\n'
    )
    vetted = _vetted("a.csv", (header + quoted).encode(), "2025-01-02")
    assert vetted.quarantine.height == 0
    assert vetted.events.select("event_id", "session_id", "revenue").rows() == [
        ("q1", None, None), ("q2", None, None), ("q3", 4000, 4.99)
    ]
    json_line = (
        b'{"$insert_id":"j1","user_id":"u1","event_time":"2025-01-02 10:00:00","event_type":"a",'
        b'"session_id":"","revenue":""}\n'
    )
    vetted = _vetted("a.jsonl", json_line, "2025-01-02")
    assert vetted.quarantine.height == 0
    assert vetted.events.select("session_id", "revenue").rows() == [(None, None)]


@pytest.mark.parametrize("name", ["a.jsonl", "a.csv", "a.parquet"])
def test_a_session_id_with_a_fraction_is_unparsable_not_cut_to_an_integer(name):
    """Session ids are epoch milliseconds. One sent as seconds with a fraction (1735912068.049) or as 1.5 was
    cut to an integer, silently merging sessions; it is quarantined as unparsable_session_id. A whole number
    written as a float (1000.0, as pandas writes an integer column with gaps) is still that number."""
    ids = {"whole": 1000.0, "seconds": 1735912068.049, "half": 1.5, "big": 1.2e19}
    frame = pl.DataFrame({
        "event_id": list(ids), "user_id": "u1", "event_time": "2025-01-02 10:00:00", "event_type": "a",
        "session_id": list(ids.values()),
    })
    if name.endswith(".parquet"):
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        data = buffer.getvalue()
    elif name.endswith(".csv"):
        data = frame.write_csv().encode()
    else:
        data = frame.rename({"event_id": "$insert_id"}).write_ndjson().encode()
    vetted = _vetted(name, data, "2025-01-02")
    assert vetted.events.select("event_id", "session_id").rows() == [("whole", 1000)]
    assert sorted(vetted.quarantine.select("event_id", "reason").rows()) == [
        ("big", "unparsable_session_id"), ("half", "unparsable_session_id"), ("seconds", "unparsable_session_id")
    ]


def test_a_range_given_last_day_first_fails_saying_so():
    """`dagster asset materialize --partition-range 2025-01-03...2025-01-01` is accepted by Dagster and ran
    over no day: raw_events "materialized" no partition and its check failed on a type error."""
    from churn_assets.partitions import daily_partitions, days_in_range

    seen = []

    @dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def some_days(context) -> None:
        seen.append(days_in_range(context))

    def run(first: str, last: str) -> dg.ExecuteInProcessResult:
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        return dg.materialize([some_days], tags=tags, raise_on_error=False)

    assert run("2025-01-01", "2025-01-02").success and seen == [[dt.date(2025, 1, 1), dt.date(2025, 1, 2)]]
    # Two days apart, and two days next to each other (whose time window is empty rather than reversed).
    for first, last in [("2025-01-03", "2025-01-01"), ("2025-01-02", "2025-01-01")]:
        result = run(first, last)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        description = str(failure.step_failure_data.user_failure_data.description)
        assert f"{first}...{last} ends before it starts" in description
    assert seen == [[dt.date(2025, 1, 1), dt.date(2025, 1, 2)]]


def test_a_quoted_empty_platform_country_or_version_is_missing_as_an_unquoted_one():
    """A CSV written with every field quoted ("" for a backend purchase without a platform) gives the same
    raw_events and user_daily as one with empty fields: the day keeps the values last seen, not ""."""
    from churn_assets.assets.ingest.landing_files import LandingPiece, decode_piece, vet_export_day
    from churn_assets.assets.ingest.user_daily import summarize_user_day

    day = dt.date(2025, 3, 1)
    quoted = (
        b'"event_id","user_id","event_time","event_type","session_id","platform","country","app_version","revenue"\n'
        b'"e1","u1","2025-03-01 08:00:00.000000","session_start","1","ios","US","1.2",""\n'
        b'"e2","u1","2025-03-01 09:00:00.000000","purchase","","","","","4.5"\n'
    )
    unquoted = quoted.replace(b',""', b",")
    vetted = [
        vet_export_day(decode_piece(LandingPiece("a.csv", data, 1, 3)), day).events for data in (quoted, unquoted)
    ]
    assert vetted[0].equals(vetted[1])
    assert vetted[0].get_column("platform").to_list() == ["ios", None]
    installs = pl.DataFrame({"user_id": ["u1"], "install_time": [t("2025-03-01 08:00:00.000000")]})
    (user,) = summarize_user_day(vetted[0], installs, day, DEFAULT_EVENT_TYPES).iter_rows(named=True)
    assert (user["platform"], user["country"], user["app_version"]) == ("ios", "US", "1.2")
