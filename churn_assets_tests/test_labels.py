"""``labels``: known answers at the horizon's edges, empty first partitions, the horizon guard, and the
blocking check catching a population that does not match its snapshot, on one day and over a range."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from churn_assets.assets import check_days
from churn_assets.assets.features.checks import labels_match_snapshots
from churn_assets.assets.features.labels import HORIZON_DAYS, LABELS_SCHEMA
from churn_assets.config import ChurnSettings
from churn_assets.resources import ChurnParameters, build_resources
from churn_assets.resources.lake import Lake
from churn_assets_tests.helpers import (
    INGEST_AND_FEATURES,
    day,
    evaluations_by_partition,
    materialize_selected,
    read_partition,
    write_user_daily_history,
)

S = day(30)  # the snapshot
D = day(30 + HORIZON_DAYS)  # the day its labels become known
LAST = day(30 + HORIZON_DAYS + 1)


def _histories() -> dict:
    h = HORIZON_DAYS
    return {
        "back_on_last_day": {day(30): {}, day(30 + h): {}},  # returns on S+H: not churned
        "back_a_day_late": {day(30): {}, day(30 + h + 1): {}},  # returns on S+H+1: churned
        "installed_on_snapshot": {day(30): {}},  # installed on S: at risk, churned
        "last_seen_s_minus_27": {day(3): {}},  # at risk on S (just), churned
        "last_seen_s_minus_28": {day(2): {}},  # not at risk on S: not labelled at all
        "back_next_day": {day(20): {}, day(31): {}},  # inactive on S itself, returns on S+1
        "regular": {day(i): {} for i in range(0, 46)},
    }


@pytest.fixture(scope="module")
def labelled_lake(tmp_path_factory: pytest.TempPathFactory) -> ChurnSettings:
    """The histories above through S+H+1, with features and labels materialized in one range run."""
    root = tmp_path_factory.mktemp("labels")
    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    write_user_daily_history(settings.data_url, _histories(), LAST)
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(["features", "labels"], build_resources(settings), instance,
                             day(0).isoformat(), LAST.isoformat())
    return settings


def test_known_labels_at_the_edges_of_the_horizon(labelled_lake: ChurnSettings):
    frame = read_partition(labelled_lake.data_url, "labels", D)
    assert frame.schema == pl.Schema(LABELS_SCHEMA)
    assert frame.columns == ["user_id", "snapshot_date", "churned"]
    assert dict(frame.select("user_id", "churned").iter_rows()) == {
        "back_a_day_late": 1,
        "back_next_day": 0,
        "back_on_last_day": 0,
        "installed_on_snapshot": 1,
        "last_seen_s_minus_27": 1,
        "regular": 0,
    }
    assert frame.get_column("snapshot_date").unique().to_list() == [S]
    # One label per user of the snapshot, in its order; the features stay in features[S].
    snapshot = read_partition(labelled_lake.data_url, "features", S)
    assert_frame_equal(frame.select("user_id"), snapshot.select("user_id"), check_exact=True)


def test_a_day_later_the_late_returner_is_labelled_for_the_next_snapshot(labelled_lake: ChurnSettings):
    frame = read_partition(labelled_lake.data_url, "labels", LAST)
    assert frame.get_column("snapshot_date").unique().to_list() == [day(31)]
    churned = dict(frame.select("user_id", "churned").iter_rows())
    # Snapshot S+1: back_a_day_late was at risk (active on S) and returned on (S+1)+H.
    assert churned["back_a_day_late"] == 0 and churned["back_next_day"] == 1


def test_first_horizon_days_are_empty_partitions(labelled_lake: ChurnSettings):
    schema = pl.Schema(LABELS_SCHEMA)
    for offset in range(HORIZON_DAYS):
        empty = read_partition(labelled_lake.data_url, "labels", day(offset))
        assert empty.height == 0 and empty.schema == schema
    first = read_partition(labelled_lake.data_url, "labels", day(HORIZON_DAYS))
    assert first.get_column("snapshot_date").unique().to_list() == [day(0)]
    assert first.get_column("user_id").to_list() == ["regular"]


def test_horizon_that_disagrees_with_the_partition_mapping_fails_clearly(labelled_lake: ChurnSettings, instance):
    resources = build_resources(labelled_lake)
    churn = resources["churn"]
    resources["churn"] = ChurnParameters(
        event_types=churn.event_types, horizon_days=HORIZON_DAYS + 7, lookback_months=churn.lookback_months
    )
    with pytest.raises(dg.Failure, match=f"horizon_days={HORIZON_DAYS + 7}.*H={HORIZON_DAYS}"):
        materialize_selected(["labels"], resources, instance, D.isoformat())


def _with_a_ghost_in_the_snapshot(labelled_lake: ChurnSettings, tmp_path: Path) -> ChurnSettings:
    """A copy of the labelled lake whose snapshot features[S] holds one user more ("ghost") than labels[D]."""
    tampered = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=labelled_lake.landing_url)
    shutil.copytree(labelled_lake.data_url, tampered.data_url)
    lake = Lake(tampered.data_url)
    snapshot = read_partition(tampered.data_url, "features", S)
    ghost = snapshot.filter(pl.col("user_id") == "regular").with_columns(pl.lit("ghost").alias("user_id"))
    lake.write_table(lake.table_url("features", "date", S.isoformat()), pl.concat([snapshot, ghost]))
    return tampered


def test_blocking_check_catches_a_population_that_differs_from_its_snapshot(
    labelled_lake: ChurnSettings, tmp_path: Path, instance
):
    tampered = _with_a_ghost_in_the_snapshot(labelled_lake, tmp_path)
    # The check alone, on the stored labels[D]: a check-only selection takes its partition as a run tag
    # (dagster cannot infer a partitions definition from checks, so partition_key= is refused).
    result = dg.materialize(
        INGEST_AND_FEATURES,
        resources=build_resources(tampered),
        instance=instance,
        selection=dg.AssetSelection.checks(labels_match_snapshots),
        tags={"dagster/partition": D.isoformat()},
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.partition == D.isoformat()
    assert evaluation.metadata["snapshot_users_unlabelled"].value == 1
    assert evaluation.metadata["users_not_in_snapshot"].value == 0


def _check_labels_over_the_range(settings: ChurnSettings, instance: dg.DagsterInstance) -> dict:
    """labels_match_snapshots alone over labels[D..LAST], one run: its evaluations by day."""
    result = dg.materialize(
        INGEST_AND_FEATURES,
        resources=build_resources(settings),
        instance=instance,
        selection=dg.AssetSelection.checks(labels_match_snapshots),
        tags={
            "dagster/asset_partition_range_start": D.isoformat(),
            "dagster/asset_partition_range_end": LAST.isoformat(),
        },
        raise_on_error=False,
    )
    evaluations = evaluations_by_partition(result, "labels_match_snapshots")
    assert sorted(evaluations) == [D.isoformat(), LAST.isoformat()]
    return {
        key: (e.passed, {k: v.value for k, v in e.metadata.items()}, e.description)
        for key, e in evaluations.items()
    }


@pytest.mark.parametrize("batch_rows", [1, 1_000_000])
def test_blocking_check_over_a_range_evaluates_each_day(
    labelled_lake: ChurnSettings, tmp_path: Path, instance, monkeypatch, batch_rows: int
):
    """A range run's check compares each label day with its own snapshot, a batch of days at a time (so its
    memory follows a batch, not the range: here each day alone, or both days together), and records each
    day's evaluation with that day's counts."""
    monkeypatch.setattr(check_days, "BATCH_ROWS", batch_rows)
    tampered = _with_a_ghost_in_the_snapshot(labelled_lake, tmp_path)  # labels[D] misses the ghost
    lake = Lake(tampered.data_url)
    last = read_partition(tampered.data_url, "labels", LAST)  # labels[LAST] gains a user features[S+1] lacks
    stranger = last.filter(pl.col("user_id") == "regular").with_columns(pl.lit("stranger").alias("user_id"))
    lake.write_table(lake.table_url("labels", "date", LAST.isoformat()), pl.concat([last, stranger]).sort("user_id"))

    by_day = _check_labels_over_the_range(tampered, instance)

    d_passed, d_counts, d_why = by_day[D.isoformat()]
    last_passed, last_counts, last_why = by_day[LAST.isoformat()]
    assert not d_passed and not last_passed
    assert (d_counts["snapshot_users_unlabelled"], d_counts["users_not_in_snapshot"]) == (1, 0)
    assert (last_counts["snapshot_users_unlabelled"], last_counts["users_not_in_snapshot"]) == (0, 1)
    assert d_why == "failed: snapshot_users_unlabelled = 1"
    assert last_why == "failed: users_not_in_snapshot = 1"
    assert d_counts["rows"] == read_partition(tampered.data_url, "labels", D).height
    assert last_counts["rows"] == last.height + 1
    for counts in (d_counts, last_counts):
        assert counts["duplicate_user_days"] == 0 and counts["snapshot_partitions_missing"] == 0


def test_blocking_check_counts_bad_labels_and_a_missing_snapshot(
    labelled_lake: ChurnSettings, tmp_path: Path, instance
):
    """labels[D] with a label of 2, a snapshot date a day off and one null: each is counted, and a user whose
    snapshot date is wrong (or null) matches no row of features[S]; features[S+1] deleted: labels[LAST] has
    no snapshot, and none of its users is in one."""
    tampered = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=labelled_lake.landing_url)
    shutil.copytree(labelled_lake.data_url, tampered.data_url)
    lake = Lake(tampered.data_url)
    user = pl.col("user_id")
    labels = read_partition(tampered.data_url, "labels", D).with_columns(
        pl.when(user == "regular").then(pl.lit(2, pl.Int8)).otherwise(pl.col("churned")).alias("churned"),
        pl.when(user == "back_next_day").then(pl.lit(S - dt.timedelta(days=1)))
        .when(user == "back_on_last_day").then(None)
        .otherwise(pl.col("snapshot_date")).alias("snapshot_date"),
    )
    lake.write_table(lake.table_url("labels", "date", D.isoformat()), labels)
    shutil.rmtree(Path(lake.table_url("features", "date", day(31).isoformat())).parent)

    by_day = _check_labels_over_the_range(tampered, instance)

    d_passed, d_counts, _ = by_day[D.isoformat()]
    assert not d_passed
    assert {name: n for name, n in d_counts.items() if name != "churn_rate"} == {  # churn_rate: pinned below
        "non_binary_labels": 1, "wrong_snapshot_dates": 1, "null_snapshot_dates": 1, "duplicate_user_days": 0,
        "snapshot_partitions_missing": 0, "users_not_in_snapshot": 2, "snapshot_users_unlabelled": 2,
        "rows": labels.height,
    }
    last_passed, last_counts, last_why = by_day[LAST.isoformat()]
    last_rows = read_partition(tampered.data_url, "labels", LAST).height
    assert not last_passed and last_rows > 0
    assert last_counts["snapshot_partitions_missing"] == 1
    assert (last_counts["users_not_in_snapshot"], last_counts["snapshot_users_unlabelled"]) == (last_rows, 0)
    assert last_why == f"failed: snapshot_partitions_missing = 1, users_not_in_snapshot = {last_rows}"


def test_a_range_with_one_bad_day_fails_that_day_only(labelled_lake: ChurnSettings, tmp_path: Path, instance):
    tampered = _with_a_ghost_in_the_snapshot(labelled_lake, tmp_path)

    by_day = _check_labels_over_the_range(tampered, instance)

    assert not by_day[D.isoformat()][0] and by_day[D.isoformat()][1]["snapshot_users_unlabelled"] == 1
    passed, counts, why = by_day[LAST.isoformat()]
    assert passed and why is None and counts["snapshot_users_unlabelled"] == 0
    # Each day's churn rate is its own labels' (pinned here, on labels left untouched): 3 of the 6 users of S
    # churned, 2 of the 5 of S+1 (last_seen_s_minus_27 is no longer at risk on S+1).
    assert (by_day[D.isoformat()][1]["churn_rate"], counts["churn_rate"]) == (0.5, 0.4)


@pytest.mark.s3
def test_the_labels_check_of_a_range_run_on_s3_reads_the_snapshots_the_run_wrote_from_its_copies(s3_server, tmp_path):
    """labels_match_snapshots reads the snapshots (features[D-H]) from the lake. In a range run on S3 they are the
    features the run has just written, kept on local disk for its next steps; the check downloaded them again, a GET
    each (16 in a 30-day backfill). Read from the copies while S3 holds the same objects; another writer's
    version is downloaded."""
    from churn_assets.assets.features.checks import _snapshots
    from churn_assets.partitions import daily_partitions
    from churn_assets.resources.lake import LOCAL_COPIES
    from churn_assets.resources.parquet_io_manager import PartitionedParquetIOManager

    base = f"s3://lake/{tmp_path.name}"
    first = daily_partitions.start.date()
    snapshot_days = [first + dt.timedelta(days=n) for n in range(3)]
    keys = [day.isoformat() for day in snapshot_days]

    @dg.asset(name="features", partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def features() -> pl.DataFrame:
        return pl.DataFrame({"date": snapshot_days, "user_id": ["u1", "u2", "u3"]})

    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    result = dg.materialize([features], resources={"io_manager": PartitionedParquetIOManager(base_url=base)},
                            tags=tags)
    assert result.success
    lake = Lake(base)
    lake.write_table(lake.table_url("features", "date", keys[1]), pl.DataFrame({"user_id": ["other"]}))
    lake.fs.connect()
    gets: list[str] = []
    lake.fs.s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    label_days = [day + dt.timedelta(days=HORIZON_DAYS) for day in snapshot_days]

    snapshots, lacking = _snapshots(label_days, lake, owner=f"{result.run_id}/labels_match_snapshots")  # the run's

    assert snapshots.sort("date").collect().rows() == [
        (label_days[0], "u1", snapshot_days[0]), (label_days[1], "other", snapshot_days[1]),
        (label_days[2], "u3", snapshot_days[2]),
    ]
    assert not lacking and LOCAL_COPIES.root is not None
    assert gets == [lake.table_url("features", "date", keys[1]).removeprefix("s3://lake/")], gets
