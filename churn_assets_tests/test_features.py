"""``features``: the catalog, known answers on hand-made histories, a property test of the rolling windows
against a plain per-user loop, no reads of the future, and range runs equal to day-by-day runs."""

import datetime as dt
import importlib
import math
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from churn_assets.assets.features.catalog import (
    catalog_markdown,
    feature_catalog,
    features_schema,
)
from churn_assets.assets.features.checks import features_cover_users_at_risk
from churn_assets.assets.features.features import compute_features, features, features_of_days
from churn_assets.assets.features.rolling import day_blocks
from churn_assets.config import DEFAULT_EVENT_TYPES, ChurnSettings
from churn_assets.resources import build_resources
from churn_assets.resources.lake import Lake
from churn_assets.simulate import simulate
from churn_assets_tests.helpers import (
    INGEST_AND_FEATURES,
    START,
    day,
    delete_partitions_after,
    evaluations_by_partition,
    materialize_selected,
    read_partition,
    write_user_daily_history,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "features.md"


# -- the catalog ------------------------------------------------------------------------------------
def test_committed_doc_equals_the_generated_catalog(capsys):
    from churn_assets.cli import main

    assert main(["features-doc"]) == 0
    assert DOC.read_text() == capsys.readouterr().out == catalog_markdown(), (
        "docs/features.md is stale: run `churn-assets features-doc > docs/features.md`"
    )


def test_the_doc_lists_the_columns_of_the_event_types_given(capsys):
    """A tracked event type added to CHURN_EVENT_TYPES (tutorial_complete) was described nowhere: features-doc
    printed the default types' columns only, n_app_error_* included when app_error was no longer tracked."""
    from churn_assets.cli import main

    assert main(["features-doc", "--event-types", "tutorial_complete, share"]) == 0
    doc = capsys.readouterr().out
    assert "| `n_tutorial_complete_7d` | Int64 | numeric | no | Count of `tutorial_complete` events in D-6..D. |" in doc
    assert "`n_tutorial_complete_28d`" in doc and "`n_share_28d`" in doc and "app_error" not in doc
    assert "lists them for the\ntypes given to `churn-assets features-doc --event-types` (`tutorial_complete`" in doc
    assert "default types" not in doc
    # Types CHURN_EVENT_TYPES refuses are refused here too, with the same reasons, and nothing printed.
    for types, reason in [("share,Share", "would both be counted in n_share"), ("events_trend", "collide")]:
        assert main(["features-doc", "--event-types", types]) == 2
        out, err = capsys.readouterr()
        assert out == "" and reason in err


def test_catalog_columns_kinds_and_metadata():
    catalog = feature_catalog(DEFAULT_EVENT_TYPES)
    names = [f.name for f in catalog]
    assert len(names) == len(set(names))
    assert {f.name for f in catalog if f.kind == "categorical"} == {"platform", "country", "app_version"}
    assert all((f.dtype == pl.String) == (f.kind == "categorical") for f in catalog)
    assert {"n_paywall_view_7d", "n_paywall_view_28d", "active_days_1d", "revenue_28d", "history_days"} <= set(names)
    # Per-type columns follow CHURN_EVENT_TYPES.
    assert "n_share_7d" not in {f.name for f in feature_catalog(["purchase"])}
    with pytest.raises(ValueError, match="collide"):
        feature_catalog(["events"])  # n_events_7d would be both a total and a type count
    # The asset's column schema is the catalog, with each definition as the column description.
    schema = features.specs_by_key[dg.AssetKey("features")].metadata["dagster/column_schema"]
    described = {c.name: c.description for c in schema.columns}
    assert list(described) == ["user_id", *names]
    assert described["days_since_last_active"] == next(
        f.definition for f in catalog if f.name == "days_since_last_active"
    )


# -- known answers ------------------------------------------------------------------------------------
D = day(40)


def _known_histories() -> dict:
    return {
        "steady": {day(i): {} for i in range(0, 41)},
        "edge": {day(13): {"paywall_view": 2}},  # active only on D-27: still at risk
        "gone": {day(12): {}},  # last active on D-28: not at risk
        "new": {day(40): {}},  # installed and active on D
        "fading": {
            **{day(i): {"events": 20} for i in range(27, 34)},  # D-13..D-7
            **{day(i): {"events": 5} for i in range(34, 37)},  # D-6..D-4
        },
        "mover": {
            day(35): {"platform": "ios", "country": "US", "app_version": "2.0"},
            day(39): {"platform": "android", "country": "DE", "app_version": None, "revenue": 4.5, "n_purchases": 1},
        },
    }


@pytest.fixture(scope="module")
def known_lake(tmp_path_factory: pytest.TempPathFactory) -> ChurnSettings:
    """The histories above through D, with features materialized for every day in one range run."""
    root = tmp_path_factory.mktemp("known")
    settings_ = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    write_user_daily_history(settings_.data_url, _known_histories(), D)
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(["features"], build_resources(settings_), instance, day(0).isoformat(), D.isoformat())
    return settings_


def test_known_answers_for_each_feature_family(known_lake: ChurnSettings):
    frame = read_partition(known_lake.data_url, "features", D)
    assert frame.schema == pl.Schema(features_schema(DEFAULT_EVENT_TYPES))
    assert frame.get_column("user_id").to_list() == ["edge", "fading", "mover", "new", "steady"]
    rows = {r["user_id"]: r for r in frame.iter_rows(named=True)}

    steady = rows["steady"]
    assert [steady[f"active_days_{w}d"] for w in (1, 7, 14, 28)] == [1, 7, 14, 28]
    assert [steady[f"n_events_{w}d"] for w in (1, 7, 14, 28)] == [10, 70, 140, 280]
    assert steady["session_minutes_28d"] == 140.0 and steady["n_sessions_7d"] == 7
    assert (steady["days_since_last_active"], steady["active_streak_days"], steady["tenure_days"]) == (0, 28, 40)
    assert (steady["history_days"], steady["active_share_28d"], steady["active_days_trend_7d"]) == (28, 1.0, 0)
    assert steady["n_events_trend_7d"] == 0.0
    assert steady["activity_slope_28d"] == pytest.approx(0.0, abs=1e-12)

    edge = rows["edge"]
    assert (edge["days_since_last_active"], edge["active_days_28d"], edge["active_days_14d"]) == (27, 1, 0)
    assert (edge["n_paywall_view_28d"], edge["n_paywall_view_7d"], edge["tenure_days"]) == (2, 0, 27)
    assert edge["active_share_28d"] == pytest.approx(1 / 28)

    new = rows["new"]
    assert (new["tenure_days"], new["active_streak_days"], new["active_share_28d"]) == (0, 1, 1.0)
    assert (new["active_days_trend_7d"], new["n_events_trend_7d"]) == (1, pytest.approx(math.log(11)))
    # One active day at the newest end of a 28-day window: slope = 6y / (h(h+1)).
    assert new["activity_slope_28d"] == pytest.approx(6 * math.log(11) / (28 * 29))

    fading = rows["fading"]
    assert (fading["active_days_7d"], fading["active_days_trend_7d"]) == (3, -4)
    assert fading["n_events_trend_7d"] == pytest.approx(math.log(16 / 141))
    # 3 recent days of 5 minutes against 7 of them the week before: ln((1 + 15) / (1 + 35)), not its inverse.
    assert fading["session_minutes_trend_7d"] == pytest.approx(math.log(16 / 36))
    assert (fading["n_events_7d"], fading["n_events_14d"], fading["n_events_1d"]) == (15, 155, 0)
    assert (fading["days_since_last_active"], fading["active_streak_days"]) == (4, 10)
    # Active only in the second half of the window: a positive slope, whatever the fade at the end.
    fading_days = {27 - age: math.log1p(20) for age in range(7, 14)} | {27 - age: math.log1p(5) for age in range(4, 7)}
    assert fading["activity_slope_28d"] == pytest.approx(_ols_slope(fading_days, 28))

    mover = rows["mover"]
    # The last non-null value of the window: app_version was null on the last day.
    assert (mover["platform"], mover["country"], mover["app_version"]) == ("android", "DE", "2.0")
    assert (mover["revenue_7d"], mover["revenue_1d"], mover["n_purchases_7d"]) == (4.5, 0.0, 1)
    assert (mover["days_since_last_active"], mover["active_streak_days"], mover["active_days_7d"]) == (1, 1, 2)


def test_short_history_in_the_first_days(known_lake: ChurnSettings):
    first = read_partition(known_lake.data_url, "features", day(0)).row(0, named=True)
    assert (first["user_id"], first["history_days"], first["activity_slope_28d"]) == ("steady", 1, None)
    sixth = read_partition(known_lake.data_url, "features", day(5)).row(0, named=True)
    assert (sixth["history_days"], sixth["active_days_28d"], sixth["active_share_28d"]) == (6, 6, 1.0)
    assert sixth["activity_slope_28d"] == pytest.approx(0.0, abs=1e-12)


def _ols_slope(y_by_x: dict[int, float], days: int) -> float:
    xs = range(days)
    ys = [y_by_x.get(x, 0.0) for x in xs]
    mx, my = sum(xs) / days, sum(ys) / days
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _with_population_differing_on_d(known_lake: ChurnSettings, tmp_path: Path) -> ChurnSettings:
    """A copy of the lake whose install_times[D] holds one user at risk that features lacks, and says that
    one user of features is not at risk."""
    tampered = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=known_lake.landing_url)
    shutil.copytree(known_lake.data_url, tampered.data_url)
    lake = Lake(tampered.data_url)
    url = lake.table_url("install_times", "date", D.isoformat())
    installs = pl.read_parquet(url)
    stranger = installs.filter(pl.col("user_id") == "new").with_columns(pl.lit("stranger").alias("user_id"))
    lake.write_table(url, pl.concat([
        installs.with_columns(  # steady, per install_times, was last active on D-28: not at risk
            pl.when(pl.col("user_id") == "steady").then(pl.lit(day(12))).otherwise(pl.col("last_active_date"))
            .alias("last_active_date")
        ),
        stranger,  # at risk per install_times, absent from features
    ]))
    return tampered


def test_blocking_check_compares_the_population_with_install_times(
    known_lake: ChurnSettings, tmp_path: Path, instance
):
    """install_times (computed from raw_events, not user_daily) says who is at risk; the check holds
    features[D] to it, and counts a user-day stored twice and a null where the catalog allows none."""
    tampered = _with_population_differing_on_d(known_lake, tmp_path)
    lake = Lake(tampered.data_url)
    url = lake.table_url("features", "date", D.isoformat())
    rows = pl.read_parquet(url)
    lake.write_table(url, pl.concat([
        rows.with_columns(  # history_days is never null (the catalog says so)
            pl.when(pl.col("user_id") == "edge").then(None).otherwise(pl.col("history_days")).alias("history_days")
        ),
        rows.filter(pl.col("user_id") == "new"),  # "new" twice
    ]))
    result = dg.materialize(
        INGEST_AND_FEATURES, resources=build_resources(tampered), instance=instance,
        selection=dg.AssetSelection.checks(features_cover_users_at_risk),
        tags={"dagster/partition": D.isoformat()}, raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.partition == D.isoformat()
    assert evaluation.metadata["users_not_at_risk"].value == 1
    assert evaluation.metadata["users_at_risk_missing"].value == 1
    assert evaluation.metadata["nulls_in_required_columns"].value == 1
    assert evaluation.metadata["duplicate_user_days"].value == 1


def test_a_range_with_one_bad_day_fails_that_day_only_and_stops_labels(
    known_lake: ChurnSettings, tmp_path: Path, instance
):
    """A range run of features and labels: the check records one evaluation per day, D failing with its own
    counts and the days before passing; its failure still stops labels in the run."""
    tampered = _with_population_differing_on_d(known_lake, tmp_path)
    first = D - dt.timedelta(days=2)
    result = dg.materialize(
        INGEST_AND_FEATURES, resources=build_resources(tampered), instance=instance,
        selection=dg.AssetSelection.assets("features", "labels"),
        tags={"dagster/asset_partition_range_start": first.isoformat(),
              "dagster/asset_partition_range_end": D.isoformat()},
        raise_on_error=False,
    )
    assert not result.success
    evaluations = evaluations_by_partition(result, "features_cover_users_at_risk")
    assert sorted(evaluations) == [(first + dt.timedelta(days=i)).isoformat() for i in range(3)]
    bad = evaluations.pop(D.isoformat())
    assert not bad.passed
    assert bad.description == "failed: users_not_at_risk = 1, users_at_risk_missing = 1"
    assert all(e.passed and e.metadata["users_at_risk_missing"].value == 0 for e in evaluations.values())
    assert all(e.metadata["rows"].value > 0 for e in evaluations.values())
    assert {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()} == {"features"}


# -- property: the rolling windows against a plain per-user loop ---------------------------------------
TYPES = ["paywall_view", "share"]


def _loop_features(history: dict, day_d: dt.date, first_day: dt.date) -> dict[str, dict]:
    """The window features the slow way: one user, one day at a time."""
    out = {}
    history_days = min(28, (day_d - first_day).days + 1)
    for user, days in history.items():
        window = {d: v for d, v in days.items() if 0 <= (day_d - d).days < 28 and d >= first_day}
        if not window:
            continue
        f: dict[str, object] = {}
        for w in (1, 7, 14, 28):
            inside = [v for d, v in window.items() if (day_d - d).days < w]
            f[f"active_days_{w}d"] = len(inside)
            for col in ("n_events", "n_sessions", "session_minutes", "revenue", "n_purchases"):
                f[f"{col}_{w}d"] = sum(v[col] for v in inside)
            if w in (7, 28):
                for t in TYPES:
                    f[f"n_{t}_{w}d"] = sum(v[f"n_{t}"] for v in inside)
        last = max(window)
        f["days_since_last_active"] = (day_d - last).days
        streak, cursor = 0, last
        while cursor in window:
            streak, cursor = streak + 1, cursor - dt.timedelta(days=1)
        f["active_streak_days"] = streak
        recent = [v for d, v in window.items() if (day_d - d).days < 7]
        before = [v for d, v in window.items() if 7 <= (day_d - d).days < 14]
        f["active_days_trend_7d"] = len(recent) - len(before)
        f["n_events_trend_7d"] = math.log(
            (1 + sum(v["n_events"] for v in recent)) / (1 + sum(v["n_events"] for v in before))
        )
        ys = {history_days - 1 - (day_d - d).days: math.log1p(v["n_events"]) for d, v in window.items()}
        f["activity_slope_28d"] = _ols_slope(ys, history_days) if history_days >= 2 else None
        for col in ("platform", "country", "app_version"):
            values = [window[d][col] for d in sorted(window) if window[d][col] is not None]
            f[col] = values[-1] if values else None
        out[user] = f
    return out


day_values = st.fixed_dictionaries(
    {
        "n_events": st.integers(0, 200),
        "n_sessions": st.integers(0, 6),
        "session_minutes": st.floats(0, 300, allow_nan=False).map(lambda x: round(x, 3)),
        "revenue": st.sampled_from([0.0, 0.99, 4.99, 19.99]),
        "n_purchases": st.integers(0, 2),
        "n_paywall_view": st.integers(0, 5),
        "n_share": st.integers(0, 5),
        "platform": st.sampled_from(["ios", "android", None]),
        "country": st.sampled_from(["US", "DE", None]),
        "app_version": st.sampled_from(["1.0", "1.1", None]),
    }
)
histories = st.dictionaries(
    st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
    st.dictionaries(st.integers(0, 49).map(day), day_values, min_size=1, max_size=25),
    min_size=1,
)


_WINDOW_SCHEMA = {
    "user_id": pl.String, "date": pl.Date, "n_events": pl.Int64, "n_sessions": pl.Int64,
    "session_minutes": pl.Float64, "revenue": pl.Float64, "n_purchases": pl.Int64, "n_paywall_view": pl.Int64,
    "n_share": pl.Int64, "platform": pl.String, "country": pl.String, "app_version": pl.String,
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories, offset=st.integers(0, 49))
def test_rolling_windows_match_a_per_user_loop(history: dict, offset: int):
    day_d = day(offset)
    rows = [{"user_id": u, "date": d, **v} for u, days in history.items() for d, v in days.items() if d <= day_d]
    window = pl.DataFrame(rows, schema=_WINDOW_SCHEMA, orient="row")
    installs = pl.DataFrame(
        {"user_id": list(history), "install_time": [
            dt.datetime.combine(min(days), dt.time(0), tzinfo=dt.UTC) for days in history.values()]},
        schema={"user_id": pl.String, "install_time": pl.Datetime("us", "UTC")},
    )
    got = {r["user_id"]: r for r in compute_features(window, installs, day_d, START, TYPES).iter_rows(named=True)}
    expected = _loop_features(
        {u: {d: v for d, v in days.items() if d <= day_d} for u, days in history.items()}, day_d, START
    )
    assert set(got) == set(expected)
    for user, want in expected.items():
        for name, value in want.items():
            if isinstance(value, float):
                assert got[user][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (user, name)
            else:
                assert got[user][name] == value, (user, name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories, first=st.integers(0, 45), count=st.integers(1, 12), late=st.sampled_from(["u1", "u2"]))
def test_a_block_of_days_matches_the_per_user_loop_on_each_day(history: dict, first: int, count: int, late: str):
    """A range run computes consecutive days together (``features_of_days``): each day of the block equals
    that day alone, the per-user loop's windows included, and takes its install times from its own day's
    ``install_times`` (here one user's install time moves earlier midway, as a late event does)."""
    days = [day(first + i) for i in range(count)]
    rows = [{"user_id": u, "date": d, **v} for u, by_day in history.items() for d, v in by_day.items() if d <= days[-1]]
    window = pl.DataFrame(rows, schema=_WINDOW_SCHEMA, orient="row")
    moved = days[len(days) // 2]

    def installs_on(d: dt.date) -> pl.DataFrame:
        times = {u: dt.datetime.combine(min(by_day), dt.time(12), tzinfo=dt.UTC) for u, by_day in history.items()}
        if late in times and d >= moved:
            times[late] -= dt.timedelta(days=3)
        return pl.DataFrame({"user_id": list(times), "install_time": list(times.values())},
                            schema={"user_id": pl.String, "install_time": pl.Datetime("us", "UTC")})

    installs = pl.concat(installs_on(d).with_columns(pl.lit(d).alias("date")) for d in days)
    block = features_of_days(window, installs, days, START, TYPES)
    assert [d for d, _ in block] == days
    for d, frame in block:
        alone = compute_features(window.filter(pl.col("date") <= d), installs_on(d), d, START, TYPES)
        assert_frame_equal(frame, alone, check_exact=True)
        expected = _loop_features({u: {e: v for e, v in by_day.items() if e <= d} for u, by_day in history.items()},
                                  d, START)
        assert frame.get_column("user_id").to_list() == sorted(expected)
        for row in frame.iter_rows(named=True):
            assert row["active_days_28d"] == expected[row["user_id"]]["active_days_28d"]
            assert row["n_events_7d"] == expected[row["user_id"]]["n_events_7d"]
            assert row["active_streak_days"] == expected[row["user_id"]]["active_streak_days"]
        if late in history and any(0 <= (d - e).days < 28 for e in history[late]):
            tenure = frame.filter(pl.col("user_id") == late).get_column("tenure_days").item()
            assert tenure == (d - min(history[late])).days + (3 if d >= moved else 0)


# -- simulated data: no future reads, range runs == day-by-day runs ----------------------------------
SIM_DAYS = 32
INGEST = ["raw_events", "install_times", "user_daily"]


@pytest.fixture(scope="module")
def simulated_lake(tmp_path_factory: pytest.TempPathFactory) -> ChurnSettings:
    """300 simulated users over 32 days, ingested, featured and labelled in one range run."""
    root = tmp_path_factory.mktemp("features_sim")
    settings_ = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    simulate(settings_.landing_url, users=300, days=SIM_DAYS, seed=11, file_format="parquet")
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(
            [*INGEST, "features", "labels"], build_resources(settings_), instance, day(0).isoformat(),
            day(SIM_DAYS - 1).isoformat(),
        )
    return settings_


@pytest.mark.parametrize("offset", [3, 17, 29])
def test_no_future_reads(simulated_lake: ChurnSettings, tmp_path: Path, offset: int):
    """features[D] and labels[D] from a lake holding nothing after D equal those of the full lake."""
    snapshot_day = day(offset)
    truncated = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=simulated_lake.landing_url)
    shutil.copytree(simulated_lake.data_url, truncated.data_url)
    delete_partitions_after(truncated.data_url, snapshot_day)
    for asset in ("features", "labels"):  # recomputed from the truncated lake, not copied
        shutil.rmtree(Path(truncated.data_url) / asset / f"date={snapshot_day}")
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(["features", "labels"], build_resources(truncated), instance, snapshot_day.isoformat())
    for asset in ("features", "labels"):
        full = read_partition(simulated_lake.data_url, asset, snapshot_day)
        assert_frame_equal(read_partition(truncated.data_url, asset, snapshot_day), full, check_exact=True)
    assert read_partition(truncated.data_url, "features", snapshot_day).height > 50


def test_features_agree_with_an_independent_duckdb_query(simulated_lake: ChurnSettings, tmp_path: Path):
    """The benchmark's DuckDB yardstick (benchmarks/duckdb_baseline.py: plain SQL over the landing files, each event
    once, sessions without -1) gives the same users at risk on every day, with the same activity, event, session,
    revenue and recency values as ``features`` computed by the chain from the same simulated exports."""
    from benchmarks import duckdb_baseline

    figures = duckdb_baseline.run(Path(simulated_lake.landing_url), tmp_path / "duckdb_features", threads=1)
    same = duckdb_baseline.agreement(tmp_path / "duckdb_features", Path(simulated_lake.data_url))
    assert figures["rows"] == same["rows_in_both"] > 300 * 5
    assert same["rows_only_in_features"] == same["rows_only_in_duckdb"] == 0
    assert {column: same[column] for column in duckdb_baseline.COLUMNS} == dict.fromkeys(duckdb_baseline.COLUMNS, 1.0)


def test_duckdb_baseline_run_again_over_fewer_days_leaves_none_of_the_earlier_days(
    simulated_lake: ChurnSettings, tmp_path: Path
):
    """The query's output folder, written again from a landing zone of fewer days, kept the earlier run's other days
    (DuckDB's OVERWRITE_OR_IGNORE replaces only the folders it writes): its row count and agreement counted them."""
    from benchmarks import duckdb_baseline

    out = tmp_path / "duckdb_features"
    duckdb_baseline.run(Path(simulated_lake.landing_url), out, threads=1)
    fewer = tmp_path / "landing"
    for offset in range(10):
        folder = f"events/date={day(offset)}"
        shutil.copytree(Path(simulated_lake.landing_url) / folder, fewer / folder)
    again = duckdb_baseline.run(fewer, out, threads=1)
    assert again["rows"] == duckdb_baseline.run(fewer, tmp_path / "fresh", threads=1)["rows"] > 0
    assert len(list(out.glob("date=*"))) == 10


def test_duckdb_agreement_counts_a_null_on_either_side_as_a_difference(tmp_path: Path):
    """agreement() compared two values with ``==`` and averaged: a null on one side gave a null, which the mean
    skips, so a snapshot whose value one side lacked counted as agreeing."""
    from benchmarks import duckdb_baseline

    values = {c: [1, 2] for c in duckdb_baseline.COLUMNS} | {"revenue_28d": [0.5, 1.5]}
    ours = pl.DataFrame({"user_id": ["a", "b"], **values})
    theirs = ours.with_columns(pl.Series("n_sessions_7d", [None, 2]), pl.Series("revenue_28d", [None, 1.5]))
    for folder, frame in ((tmp_path / "lake" / "features", ours), (tmp_path / "duckdb", theirs)):
        (folder / "date=2025-01-01").mkdir(parents=True)
        frame.write_parquet(folder / "date=2025-01-01" / "data.parquet")
    same = duckdb_baseline.agreement(tmp_path / "duckdb", tmp_path / "lake")
    assert same["rows_in_both"] == 2 and same["n_events_7d"] == 1.0
    assert same["n_sessions_7d"] == same["revenue_28d"] == 0.5


def test_range_run_equals_day_by_day_runs(simulated_lake: ChurnSettings, tmp_path: Path):
    by_day = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=simulated_lake.landing_url)
    for asset in INGEST:
        shutil.copytree(Path(simulated_lake.data_url) / asset, Path(by_day.data_url) / asset)
    resources = build_resources(by_day)
    with dg.DagsterInstance.ephemeral() as instance:
        for offset in range(SIM_DAYS):
            materialize_selected(["features", "labels"], resources, instance, day(offset).isoformat())
    labelled = 0
    for offset in range(SIM_DAYS):
        for asset in ("features", "labels"):
            ranged = read_partition(simulated_lake.data_url, asset, day(offset))
            assert_frame_equal(read_partition(by_day.data_url, asset, day(offset)), ranged, check_exact=True)
        labelled += read_partition(by_day.data_url, "labels", day(offset)).height
    assert labelled > 1000


def test_large_windows_computed_in_slices_of_users_give_the_same_features(
    simulated_lake: ChurnSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A window above MAX_WINDOW_ROWS (28 days of ~70k daily users in production; here 300 rows) is computed in
    user_id ranges: every user in exactly one slice, so the partition is the same, row for row."""
    # The package exports the asset under the module's name: fetch the module itself.
    features_module = importlib.import_module("churn_assets.assets.features.features")
    monkeypatch.setattr(features_module, "MAX_WINDOW_ROWS", 300)
    monkeypatch.setattr(features_module, "SLICE_ROWS", 300)
    sliced = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=simulated_lake.landing_url)
    for asset in INGEST:
        shutil.copytree(Path(simulated_lake.data_url) / asset, Path(sliced.data_url) / asset)
    first, last = day(SIM_DAYS - 4), day(SIM_DAYS - 1)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_selected(["features"], build_resources(sliced), instance, first.isoformat(),
                                      last.isoformat())
        logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("computed in slices of users" in message for message in logged)
    for offset in range(SIM_DAYS - 4, SIM_DAYS):
        full = read_partition(simulated_lake.data_url, "features", day(offset))
        assert full.height > 100
        assert_frame_equal(read_partition(sliced.data_url, "features", day(offset)), full, check_exact=True)


def test_range_runs_in_blocks_of_days_give_the_same_features(
    simulated_lake: ChurnSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A range run computes its days in blocks (here ~2 days each instead of one block for the whole range):
    each block reads the days its windows need, and every partition is the same, row for row."""
    features_module = importlib.import_module("churn_assets.assets.features.features")
    windows = [read_partition(simulated_lake.data_url, "user_daily", day(o)).height for o in range(SIM_DAYS)]
    limit = 2 * sum(windows[-28:])
    monkeypatch.setattr(features_module, "BLOCK_WINDOW_ROWS", limit)
    sizes = {day(o): sum(windows[max(0, o - 27):o + 1]) for o in range(SIM_DAYS)}
    assert len(day_blocks(list(sizes), sizes.get, limit)) >= 10
    blocked = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=simulated_lake.landing_url)
    for asset in INGEST:
        shutil.copytree(Path(simulated_lake.data_url) / asset, Path(blocked.data_url) / asset)
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(["features"], build_resources(blocked), instance, day(0).isoformat(),
                             day(SIM_DAYS - 1).isoformat())
    for offset in range(SIM_DAYS):
        full = read_partition(simulated_lake.data_url, "features", day(offset))
        assert_frame_equal(read_partition(blocked.data_url, "features", day(offset)), full, check_exact=True)


def test_event_types_missing_from_user_daily_fail_clearly(known_lake: ChurnSettings, instance):
    settings_ = ChurnSettings(data_url=known_lake.data_url, landing_url=known_lake.landing_url,
                              event_types=(*DEFAULT_EVENT_TYPES, "level_up"))
    with pytest.raises(dg.Failure, match="no column n_level_up.*rematerialize user_daily"):
        materialize_selected(["features"], build_resources(settings_), instance, D.isoformat())


def test_window_sums_stay_exact_beyond_what_float64_counts():
    """A window's sum is the difference of two running totals: an exact integer, also above 2**53 (where a
    float64 sum rounds) and when the running totals themselves pass 2**63 on the way."""
    from churn_assets.assets.features.features import running_totals

    running = running_totals(np.array([2**53, 1, 1, 2**62, 2**62, 2**62, 7, -(2**62)]))
    first, last = np.array([0, 1, 5, 6]), np.array([3, 3, 7, 8])
    assert (running[last] - running[first]).tolist() == [2**53 + 2, 2, 2**62 + 7, 7 - 2**62]
    assert running_totals(np.array([], np.int64)).tolist() == [0]


def test_features_are_the_same_in_any_row_order(simulated_lake: ChurnSettings):
    """Float values are summed in fixed point, so a window gives the very same features whatever the order
    of its rows (as read whole, in slices of users, or shuffled), run after run."""
    snapshot_day = day(29)
    lake = Path(simulated_lake.data_url)
    window = pl.concat(
        pl.read_parquet(lake / "user_daily" / f"date={d}").with_columns(pl.lit(d).alias("date"))
        for d in (snapshot_day - dt.timedelta(days=n) for n in range(27, -1, -1))
    )
    installs = pl.read_parquet(lake / "install_times" / f"date={snapshot_day}").select("user_id", "install_time")
    in_memory = compute_features(window, installs, snapshot_day, day(0), DEFAULT_EVENT_TYPES)
    assert in_memory.height > 200 and in_memory.get_column("session_minutes_28d").sum() > 0

    for seed in range(3):
        shuffled = window.sample(fraction=1.0, shuffle=True, seed=seed)
        assert_frame_equal(compute_features(shuffled, installs, snapshot_day, day(0), DEFAULT_EVENT_TYPES),
                           in_memory, check_exact=True)


def test_a_type_dropped_from_the_event_types_leaves_older_user_daily_readable(
    known_lake: ChurnSettings, tmp_path: Path
):
    """CHURN_EVENT_TYPES loses a type, and the next daily refresh writes user_daily[D] without its column:
    features[D] reads its window of older partitions that still have it. It failed with polars' "did not
    find column n_screen_view", a column no longer tracked."""
    fewer = tuple(t for t in DEFAULT_EVENT_TYPES if t != "screen_view")
    settings_ = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=known_lake.landing_url, event_types=fewer)
    shutil.copytree(known_lake.data_url, settings_.data_url)
    lake = Lake(settings_.data_url)
    url = lake.table_url("user_daily", "date", D.isoformat())
    lake.write_table(url, pl.read_parquet(url).drop("n_screen_view"))
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(["features"], build_resources(settings_), instance, D.isoformat())
    got = read_partition(settings_.data_url, "features", D)
    assert "n_screen_view_7d" not in got.columns
    before = read_partition(known_lake.data_url, "features", D)
    assert_frame_equal(got, before.select(got.columns), check_exact=True)


def test_a_type_added_to_the_event_types_names_the_days_to_rematerialize(known_lake: ChurnSettings, tmp_path: Path):
    """CHURN_EVENT_TYPES gains a type and user_daily is refreshed for the first and the last day of the
    window only: features names the days it reads, not "rematerialize user_daily first" (already done for
    D), and a day in the middle of the window that lacks the column fails the same way, not with polars'
    ColumnNotFoundError."""
    more = (*DEFAULT_EVENT_TYPES, "level_up")
    settings_ = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=known_lake.landing_url, event_types=more)
    shutil.copytree(known_lake.data_url, settings_.data_url)
    lake = Lake(settings_.data_url)
    for refreshed in (D - dt.timedelta(days=27), D):
        url = lake.table_url("user_daily", "date", refreshed.isoformat())
        lake.write_table(url, pl.read_parquet(url).with_columns(pl.lit(0, pl.Int64).alias("n_level_up")))
    window = f"{(D - dt.timedelta(days=27)).isoformat()}...{D.isoformat()}"
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(
            dg.Failure, match=re.escape("no column n_level_up") + ".*" + re.escape(f"--partition-range {window}")
        ):
            materialize_selected(["features"], build_resources(settings_), instance, D.isoformat())


def test_only_a_tracked_types_missing_column_is_blamed_on_CHURN_EVENT_TYPES():
    """features turns polars' "did not find column n_T" (a user_daily file written before T was tracked) into
    advice to rematerialize user_daily; any other missing column (a bug, another input) keeps its own error."""
    import polars as pl

    from churn_assets.assets.features.features import tracked_column_missing

    def error(text: str) -> pl.exceptions.ColumnNotFoundError:
        return pl.exceptions.ColumnNotFoundError(text)

    types = ("session_start", "level_up")
    assert tracked_column_missing(
        error("did not find column n_level_up, consider passing `missing_columns='insert'`"), types
    ) == "n_level_up"
    assert tracked_column_missing(
        error("did not find column install_time, consider passing `missing_columns='insert'`"), types
    ) is None
    assert tracked_column_missing(
        error('unable to find column "days_since_install"; valid columns: ["a"]'), types
    ) is None
