"""``training_set``: exactly the labels of the L months before M with their snapshots' features, a seeded
stratified cap, clear failures, month ranges equal to single months, old label partitions that carried
their features, and the dependencies the UI shows."""

import datetime as dt
import shutil
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from churn_assets.assets.features.catalog import feature_catalog
from churn_assets.assets.features.features import features
from churn_assets.assets.features.labels import HORIZON_DAYS, LABELS_SCHEMA, labels
from churn_assets.assets.ml import training
from churn_assets.assets.ml.checks import training_set_is_sound
from churn_assets.assets.ml.training_set import (
    LOOKBACK_MONTHS,
    SAMPLE_SEED,
    MonthWindow,
    _labels_in,
    months_to_train,
    stratified_rows,
    too_early_to_train,
    training_set,
    training_set_schema,
)
from churn_assets.config import DEFAULT_EVENT_TYPES, ChurnSettings
from churn_assets.partitions import daily_partitions, monthly_partitions
from churn_assets.resources import ChurnParameters, build_resources
from churn_assets.resources.lake import Lake
from churn_assets.simulate import simulate
from churn_assets_tests.helpers import INGEST_AND_FEATURES, day, materialize_selected, read_partition

ASSETS = [*INGEST_AND_FEATURES, training_set, training_set_is_sound]
SIM_DAYS = 59  # 2025-01-01 .. 2025-02-28: the labels training_set[2025-02] and [2025-03] cover


@pytest.fixture(scope="module")
def labelled_lake(tmp_path_factory: pytest.TempPathFactory) -> ChurnSettings:
    """400 simulated users over January and February, ingested, featured and labelled in one run."""
    root = tmp_path_factory.mktemp("training_sim")
    settings = ChurnSettings(data_url=str(root / "lake"), landing_url=str(root / "landing"))
    simulate(settings.landing_url, users=400, days=SIM_DAYS, seed=5, file_format="parquet")
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_selected(
            ["raw_events", "install_times", "user_daily", "features", "labels"], build_resources(settings),
            instance, day(0).isoformat(), day(SIM_DAYS - 1).isoformat(),
        )
    return settings


def _copy(settings: ChurnSettings, tmp_path: Path) -> ChurnSettings:
    copy = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=settings.landing_url)
    shutil.copytree(settings.data_url, copy.data_url)
    return copy


def _resources(settings: ChurnSettings, max_training_rows: int | None = None, **changes) -> dict:
    resources = build_resources(settings)
    churn = resources["churn"]
    fields = {"event_types": churn.event_types, "horizon_days": churn.horizon_days,
              "lookback_months": churn.lookback_months,
              "max_training_rows": max_training_rows or churn.max_training_rows, **changes}
    resources["churn"] = ChurnParameters(**fields)
    return resources


def _materialize(resources: dict, month: str, last: str | None = None) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return materialize_selected(["training_set"], resources, instance, month, last, assets=ASSETS)


def _labels_between(lake_url: str, first: dt.date, last: dt.date) -> pl.DataFrame:
    """The stored labels of the label days ``first..last``, each row with its ``label_date`` and the user's
    columns of its snapshot ``features[snapshot_date]``, read partition by partition."""
    frames = []
    current = first
    while current <= last:
        labelled = read_partition(lake_url, "labels", current).with_columns(pl.lit(current).alias("label_date"))
        if labelled.height:
            snapshot = read_partition(lake_url, "features", current - dt.timedelta(days=HORIZON_DAYS))
            labelled = labelled.join(snapshot, on="user_id", how="left", maintain_order="left")
        frames.append(labelled)
        current += dt.timedelta(days=1)
    return pl.concat(frames, how="diagonal_relaxed")


def test_rows_are_the_labels_of_the_months_before_with_their_features(labelled_lake: ChurnSettings, tmp_path: Path):
    settings = _copy(labelled_lake, tmp_path)
    result = _materialize(build_resources(settings), "2025-03")
    frame = read_partition(settings.data_url, "training_set", "2025-03", column="month")

    schema = training_set_schema(list(DEFAULT_EVENT_TYPES))
    assert frame.schema == pl.Schema(schema)
    assert frame.columns[:4] == ["user_id", "snapshot_date", "label_date", "churned"]
    # Exactly the label partitions of the L (=3) months before March that exist: January and February.
    expected = _labels_between(settings.data_url, day(0), dt.date(2025, 2, 28)).select(list(schema))
    assert frame.height == expected.height > 3000
    assert_frame_equal(frame, expected.sort("snapshot_date", "user_id"), check_exact=True)
    # Every row has its features; snapshots fall inside the window, H days before their label.
    required = [f.name for f in feature_catalog(DEFAULT_EVENT_TYPES) if not f.nullable]
    assert frame.select(pl.sum_horizontal(pl.col(required).is_null().sum())).item() == 0
    assert frame.get_column("label_date").min() >= dt.date(2025, 1, 1)
    assert frame.get_column("label_date").max() <= dt.date(2025, 2, 28)
    assert frame.get_column("snapshot_date").max() <= dt.date(2025, 2, 28) - dt.timedelta(days=HORIZON_DAYS)
    assert (frame.get_column("label_date") - frame.get_column("snapshot_date")).unique().to_list() == [
        dt.timedelta(days=HORIZON_DAYS)
    ]
    assert frame.get_column("churned").unique().sort().to_list() == [0, 1]

    [materialization] = result.asset_materializations_for_node("training_set")
    assert materialization.metadata["labelled_rows"].value == expected.height
    assert materialization.metadata["sampled"].value is False
    assert materialization.metadata["label_window"].value == "2024-12-01..2025-02-28"
    # The class counts and label rate the UI shows are the month's own.
    churned = int(expected.get_column("churned").sum())
    assert materialization.metadata["churned_rows"].value == churned
    assert materialization.metadata["retained_rows"].value == expected.height - churned
    assert materialization.metadata["label_rate"].value == round(churned / expected.height, 4)
    assert materialization.metadata["first_snapshot"].value == str(frame.get_column("snapshot_date").min())
    assert materialization.metadata["last_snapshot"].value == str(frame.get_column("snapshot_date").max())
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed


def test_cap_is_a_seeded_sample_that_keeps_class_shares(labelled_lake: ChurnSettings, tmp_path: Path):
    settings = _copy(labelled_lake, tmp_path)
    full = _labels_between(settings.data_url, day(0), dt.date(2025, 2, 28))
    cap = 1000
    _materialize(_resources(settings, max_training_rows=cap), "2025-03")
    first = read_partition(settings.data_url, "training_set", "2025-03", column="month")
    _materialize(_resources(settings, max_training_rows=cap), "2025-03")
    second = read_partition(settings.data_url, "training_set", "2025-03", column="month")

    assert first.height == cap
    assert_frame_equal(first, second, check_exact=True)  # seeded: the same rows every time
    churned_share = full.get_column("churned").mean()
    assert first.get_column("churned").sum() == round(cap * churned_share)
    # A sample of the real rows, values untouched.
    joined = first.join(full, on=["user_id", "snapshot_date"], how="inner", suffix="_label")
    assert joined.height == cap
    assert (joined.get_column("n_events_28d") == joined.get_column("n_events_28d_label")).all()


def test_prefiltered_sample_is_exactly_the_bottom_k_of_each_class():
    """The streaming threshold pass is an optimisation only: the rows are those a plain bottom-k picks."""
    n = 40_000
    rows = pl.DataFrame({
        "user_id": [f"u{i % 5000}" for i in range(n)],
        "snapshot_date": [dt.date(2025, 1, 1) + dt.timedelta(days=i // 5000) for i in range(n)],
        "churned": pl.Series([int(i % 7 == 0) for i in range(n)], dtype=pl.Int8),
        "value": range(n),
    })
    counts = {c: rows.filter(pl.col("churned") == c).height for c in (0, 1)}
    sample = stratified_rows(rows.lazy(), counts, cap=1200).collect()
    order = pl.struct("user_id", "snapshot_date").hash(seed=SAMPLE_SEED).alias("_order")
    expected = pl.concat([
        rows.filter(pl.col("churned") == c).with_columns(order)
        .bottom_k(k, by=["_order", "user_id", "snapshot_date"]).drop("_order")
        for c, k in ((1, round(1200 * counts[1] / n)), (0, 1200 - round(1200 * counts[1] / n)))
    ])
    assert sample.height == 1200
    assert_frame_equal(sample.sort("value"), expected.sort("value"))


def test_a_months_labels_are_exactly_the_days_of_its_lookback_months():
    """A range run reads the labels of every month's window at once: each month keeps the days of its L
    months before it, the first and last included, and no day either side."""
    first, last = dt.date(2025, 1, 30), dt.date(2025, 5, 2)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    labels_read = pl.LazyFrame({
        "user_id": [f"u{i}" for i in range(len(days))],
        "snapshot_date": [d - dt.timedelta(days=HORIZON_DAYS) for d in days],
        "churned": pl.Series([i % 2 for i in range(len(days))], dtype=pl.Int8),
        "date": days,
    }).cast(LABELS_SCHEMA)
    kept = _labels_in(labels_read, MonthWindow.of("2025-05", 3)).collect().get_column("label_date")
    assert (kept.min(), kept.max(), kept.len()) == (dt.date(2025, 2, 1), dt.date(2025, 4, 30), 89)


def test_a_range_of_months_equals_single_month_runs(labelled_lake: ChurnSettings, tmp_path: Path):
    ranged = _copy(labelled_lake, tmp_path / "ranged")
    single = _copy(labelled_lake, tmp_path / "single")
    _materialize(build_resources(ranged), "2025-02", "2025-03")
    for month in ("2025-02", "2025-03"):
        _materialize(build_resources(single), month)
    for month in ("2025-02", "2025-03"):
        assert_frame_equal(
            read_partition(ranged.data_url, "training_set", month, column="month"),
            read_partition(single.data_url, "training_set", month, column="month"),
            check_exact=True,
        )
    february = read_partition(single.data_url, "training_set", "2025-02", column="month")
    assert february.get_column("label_date").max() == dt.date(2025, 1, 31)


@pytest.mark.s3
def test_training_set_and_the_labels_check_on_s3_read_one_version_of_each_snapshot(
    labelled_lake: ChurnSettings, s3_server, tmp_path: Path, monkeypatch
):
    """On S3 the snapshot days of each month (and of the labels check) are downloaded whole, one GET each, and
    read there: a features backfill rewriting a day between two of polars' ranged reads of it (held here by a
    proxy) gave a training set of rows from two files. The same training sets as on disk, and each month's
    downloads are gone once the month is written."""
    from s3fs import S3FileSystem

    from churn_assets.resources.lake import LOCAL_COPIES
    from churn_assets_tests.s3_proxy import HoldingProxy

    remote = ChurnSettings(data_url=f"s3://lake/{tmp_path.name}", landing_url=labelled_lake.landing_url)
    local = _copy(labelled_lake, tmp_path / "local")
    # A snapshot day of a few MB, which polars reads in ranges after its footer (400 users' fit in one request):
    # users no label names, whose revenue does not compress.
    day_file = Path(Lake(local.data_url).table_url("features", "date", "2025-01-10"))
    snapshot_day = pl.read_parquet(day_file)
    noise = (pl.int_range(pl.len()).hash(seed=3) % 10**9 / 100).cast(snapshot_day.schema["revenue_28d"])
    others = snapshot_day.sample(200_000, with_replacement=True, seed=1).with_columns(
        pl.format("zz{}", pl.int_range(pl.len())).alias("user_id"), noise.alias("revenue_28d")
    )
    pl.concat([snapshot_day, others]).write_parquet(day_file)
    Lake(remote.data_url).fs.put(f"{local.data_url}/", f"{remote.data_url}/", recursive=True)
    _materialize(build_resources(local), "2025-02", "2025-03")
    proxy = HoldingProxy(s3_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    S3FileSystem.clear_instance_cache()
    try:
        lake = Lake(remote.data_url)
        snapshot = lake.table_url("features", "date", "2025-01-10")  # in February's window
        rewritten = pl.read_parquet(snapshot).with_columns(pl.col("n_events_28d") + 1000)
        proxy.hold(snapshot.removeprefix("s3://"))
        failed = []

        def materialize():
            try:
                _materialize(build_resources(remote), "2025-02", "2025-03")
            except Exception as exc:  # (what polars read of two files raised)
                failed.append(exc)

        run = threading.Thread(target=materialize)
        run.start()
        while run.is_alive() and not proxy.held.wait(0.05):
            pass
        if proxy.held.is_set():  # a features backfill rewrites the day while polars reads it
            lake.write_table(snapshot, rewritten)
        proxy.release()
        run.join(timeout=120)
        assert not failed, str(failed[0])[:1000]
        for month in ("2025-02", "2025-03"):
            assert_frame_equal(
                pl.read_parquet(lake.table_url("training_set", "month", month)),
                read_partition(local.data_url, "training_set", month, column="month"),
                check_exact=True,
            )
        left = [p for p in Path(LOCAL_COPIES.root).rglob("features/date=*/data.parquet") if tmp_path.name in str(p)]
        assert left == []
        with dg.DagsterInstance.ephemeral() as instance:
            checked = materialize_selected(["labels"], build_resources(remote), instance, "2025-02-01", "2025-02-03")
        assert [e.passed for e in checked.get_asset_check_evaluations()] == [True] * 3
    finally:
        proxy.close()
        S3FileSystem.clear_instance_cache()


def test_a_month_without_labels_fails_with_its_counts(labelled_lake: ChurnSettings):
    with pytest.raises(dg.Failure, match=r"training_set\[2025-01\]: too few labelled rows \(0 < \d+\).*"
                                         r"2024-10-01\.\.2024-12-31.*churned=1: 0, churned=0: 0") as failure:
        _materialize(build_resources(labelled_lake), "2025-01")
    # Its label days lie before CHURN_START_DATE: there is nothing to materialize, only a later month to train.
    assert "Materialize labels for those days" not in str(failure.value)
    assert str(failure.value).endswith(
        "model[2025-01] cannot be trained: its lookback (2024-10-01..2024-12-31) begins before CHURN_START_DATE "
        "2025-01-01, so its training set's snapshots span 0 days, where the time split needs 31 (2 x H + 3, H = 14); "
        "the first month with a model is 2025-03."
    )


def test_a_month_with_one_class_fails_with_its_counts(labelled_lake: ChurnSettings, tmp_path: Path):
    settings = _copy(labelled_lake, tmp_path)
    lake = Lake(settings.data_url)
    for offset in range(31):  # January's labels, all "retained"
        url = lake.table_url("labels", "date", day(offset).isoformat())
        lake.write_table(url, pl.read_parquet(url).with_columns(pl.lit(0, pl.Int8).alias("churned")))
    rows = _labels_between(settings.data_url, day(0), day(30)).height
    with pytest.raises(dg.Failure, match=rf"training_set\[2025-02\]: a class has fewer than \d+ rows: {rows} "
                                         rf"labelled rows.*churned=1: 0, churned=0: {rows}"):
        _materialize(build_resources(settings), "2025-02")


def test_a_label_whose_user_left_its_snapshot_fails_with_the_days_to_label_again(
    labelled_lake: ChurnSettings, tmp_path: Path
):
    """features[S] rematerialized without a user that labels[S+H] still has: no features to train on."""
    settings = _copy(labelled_lake, tmp_path)
    lake = Lake(settings.data_url)
    snapshot_day = dt.date(2025, 1, 20)
    url = lake.table_url("features", "date", snapshot_day.isoformat())
    snapshot = pl.read_parquet(url)
    lake.write_table(url, snapshot.slice(1))
    stored = lake.table_url("training_set", "month", "2025-03")
    with pytest.raises(dg.Failure, match=r"training_set\[2025-03\]: labels whose user has no row in their snapshot's "
                                         r"features: 1 \(snapshot days 2025-01-20\).*Materialize labels again"):
        _materialize(build_resources(settings), "2025-03")
    assert not lake.exists(stored)  # nothing half-written


def test_a_missing_snapshot_partition_fails_with_its_day(labelled_lake: ChurnSettings, tmp_path: Path):
    settings = _copy(labelled_lake, tmp_path)
    shutil.rmtree(Path(settings.data_url) / "features" / "date=2025-01-20")
    with pytest.raises(dg.Failure, match=r"training_set\[2025-03\]: features has no stored partition 2025-01-20 "
                                         r"under .*materialize features \(then labels\) for those days first"):
        _materialize(build_resources(settings), "2025-03")
    # features of days no label of the window needs (2025-02-15 onwards: labels of March and later) are not read
    shutil.rmtree(Path(settings.data_url) / "features" / "date=2025-02-20")
    shutil.copytree(Path(labelled_lake.data_url) / "features" / "date=2025-01-20",
                    Path(settings.data_url) / "features" / "date=2025-01-20")
    _materialize(build_resources(settings), "2025-03")


@pytest.mark.parametrize("old_days", [["2025-01-01", "2025-01-02"], ["2025-01-20", "2025-02-03"]])
def test_snapshots_written_before_a_catalog_column_fail_with_the_days_to_materialize_again(
    labelled_lake: ChurnSettings, tmp_path: Path, old_days: list[str]
):
    """A feature added to the catalog (or a type to CHURN_EVENT_TYPES) and features materialized again for
    some days only: the snapshots written before lack the column. training_set failed with polars' 'unable
    to find column "x"; valid columns: [...]' when the window's first day was old, 'did not find column x,
    consider passing `missing_columns='insert'`' when a later one was, naming no day; it names the days."""
    settings = _copy(labelled_lake, tmp_path)
    lake = Lake(settings.data_url)
    for old in old_days:
        url = lake.table_url("features", "date", old)
        lake.write_table(url, pl.read_parquet(url).drop("active_share_28d", "n_share_7d"))
    stored = lake.table_url("training_set", "month", "2025-03")
    days = ", ".join(old_days)
    with pytest.raises(dg.Failure, match=rf"training_set\[2025-03\]: features of snapshot days {days} \(2 days\) "
                                         r"lack the feature columns active_share_28d, n_share_7d: .*Materialize "
                                         rf"features again for those days \(--partition-range {old_days[0]}\.\.\."
                                         rf"{old_days[-1]};"):
        _materialize(build_resources(settings), "2025-03")
    assert not lake.exists(stored)  # nothing half-written


def test_labels_stored_with_their_features_give_the_same_training_set(labelled_lake: ChurnSettings, tmp_path: Path):
    """Label partitions written when labels still carried their snapshot's feature columns are read as
    they are: only their keys and label count, and the features come from the snapshots."""
    slim = _copy(labelled_lake, tmp_path / "slim")
    wide = _copy(labelled_lake, tmp_path / "wide")
    lake = Lake(wide.data_url)
    for offset in range(HORIZON_DAYS, 59):
        label_day = day(offset)
        url = lake.table_url("labels", "date", label_day.isoformat())
        snapshot = read_partition(wide.data_url, "features", label_day - dt.timedelta(days=HORIZON_DAYS))
        stale = snapshot.with_columns(pl.col("n_events_28d") + 1000)  # what the wide file held: not read
        lake.write_table(url, pl.read_parquet(url).join(stale, on="user_id", how="left", maintain_order="left"))
    for settings in (slim, wide):
        _materialize(build_resources(settings), "2025-03")
    assert_frame_equal(
        read_partition(wide.data_url, "training_set", "2025-03", column="month"),
        read_partition(slim.data_url, "training_set", "2025-03", column="month"),
        check_exact=True,
    )


def test_lookback_that_disagrees_with_the_partition_mapping_fails_clearly(labelled_lake: ChurnSettings):
    resources = _resources(labelled_lake, lookback_months=LOOKBACK_MONTHS + 1)
    with pytest.raises(dg.Failure, match=f"lookback_months={LOOKBACK_MONTHS + 1}"):
        _materialize(resources, "2025-03")


def test_check_flags_snapshots_after_the_cutoff(labelled_lake: ChurnSettings, tmp_path: Path):
    settings = _copy(labelled_lake, tmp_path)
    _materialize(build_resources(settings), "2025-03")
    lake = Lake(settings.data_url)
    url = lake.table_url("training_set", "month", "2025-03")
    frame = pl.read_parquet(url)
    late = frame.head(3).with_columns(  # labels known only on March 1st: too late for March's model (the edge)
        pl.lit(dt.date(2025, 3, 1)).alias("label_date"),
        pl.lit(dt.date(2025, 3, 1) - dt.timedelta(days=HORIZON_DAYS)).alias("snapshot_date"),
    )
    other_horizon = frame.head(1).with_columns(  # a label made when CHURN_HORIZON_DAYS was 7
        pl.lit(dt.date(2025, 2, 10)).alias("label_date"), pl.lit(dt.date(2025, 2, 3)).alias("snapshot_date")
    )

    def evaluate(rows: pl.DataFrame) -> dg.AssetCheckEvaluation:
        lake.write_table(url, rows)
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(
                ASSETS, resources=build_resources(settings), instance=instance,
                selection=dg.AssetSelection.checks(training_set_is_sound),
                tags={"dagster/partition": "2025-03"}, raise_on_error=False,
            )
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation

    # Late labels of the right horizon: the check fails, and does not send the user to rematerialize labels.
    evaluation = evaluate(pl.concat([frame, late]))
    assert evaluation.description.startswith("failed: labels_after_cutoff = 3, snapshots_after_cutoff = 3")
    assert "CHURN_HORIZON_DAYS" not in evaluation.description and "cause" not in evaluation.metadata

    evaluation = evaluate(pl.concat([frame, late, other_horizon]))
    assert not evaluation.passed and evaluation.partition == "2025-03"
    assert evaluation.description.startswith(
        "failed: labels_after_cutoff = 3, snapshots_after_cutoff = 3, snapshots_not_h_days_before_label = 1"
    )
    assert f"not {HORIZON_DAYS} days (CHURN_HORIZON_DAYS) before them" in evaluation.description
    assert "materialize labels again over the label days of training_set[2025-03]" in evaluation.description
    assert evaluation.metadata["labels_after_cutoff"].value == 3
    assert evaluation.metadata["snapshots_after_cutoff"].value == 3
    assert evaluation.metadata["snapshots_not_h_days_before_label"].value == 1

    # Retained users only: one class, and a label rate of 0 outside the band.
    evaluation = evaluate(frame.filter(pl.col("churned") == 0))
    assert not evaluation.passed
    assert evaluation.description.startswith(
        "failed: months_with_one_class = 1, months_with_label_rate_outside_band = 1"
    )


def _upstream_keys(asset: dg.AssetsDefinition, upstream: str, key: str, downstream_def, upstream_def) -> list[str]:
    """The upstream partitions Dagster maps ``asset[key]`` to (the mapping it infers when none is declared)."""
    graph = dg.Definitions(assets=ASSETS, resources=build_resources(ChurnSettings())).resolve_asset_graph()
    mapping = graph.get_partition_mapping(asset.key, dg.AssetKey(upstream))
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        downstream_def.subset_with_partition_keys([key]), downstream_def, upstream_def
    )
    return sorted(result.partitions_subset.get_partition_keys())


def test_declared_dependencies_are_the_true_ones():
    """What the UI shows: lookback windows, the H-day shift, month -> days."""
    daily, monthly = daily_partitions, monthly_partitions
    window = _upstream_keys(features, "user_daily", "2025-03-10", daily, daily)
    assert (window[0], window[-1], len(window)) == ("2025-02-11", "2025-03-10", 28)
    assert (
        _upstream_keys(features, "user_daily", "2025-01-03", daily, daily) == ["2025-01-01", "2025-01-02", "2025-01-03"]
    )
    assert _upstream_keys(features, "install_times", "2025-03-10", daily, daily) == ["2025-03-10"]
    assert _upstream_keys(labels, "features", "2025-03-10", daily, daily) == ["2025-02-24"]
    assert _upstream_keys(labels, "features", "2025-01-10", daily, daily) == []  # before the start: empty
    returns = _upstream_keys(labels, "user_daily", "2025-03-10", daily, daily)
    assert (returns[0], returns[-1], len(returns)) == ("2025-02-25", "2025-03-10", HORIZON_DAYS)
    months = _upstream_keys(training_set, "labels", "2025-05", monthly, daily)
    assert (months[0], months[-1], len(months)) == ("2025-02-01", "2025-04-30", 89)
    assert _upstream_keys(training_set, "labels", "2025-01", monthly, daily) == []
    # The labels' snapshots lie H days earlier: a month more of features (month offsets cannot shift by H).
    snapshots = _upstream_keys(training_set, "features", "2025-05", monthly, daily)
    assert (snapshots[0], snapshots[-1], len(snapshots)) == ("2025-01-01", "2025-04-30", 120)


def test_months_to_train_from_the_first_with_a_whole_lookback():
    """The months a backfill (the demo, the benchmarks) trains: those whose snapshots span the split's
    2H + 3 days, from the first with a whole lookback once the days reach it."""
    start = dt.date(2025, 1, 1)

    def months(days: int) -> list[str]:
        return months_to_train(start, start + dt.timedelta(days=days - 1), horizon_days=14, lookback_months=3)

    assert months(59) == []  # 2025-03's snapshots start on the 1st: the month is needed whole
    assert months(60) == months(90) == ["2025-03"]  # 45 snapshot days, 2 × 14 + 3 needed
    assert months(91) == months(120) == ["2025-04"]  # labels of January..March, all after the start
    assert months(200) == ["2025-04", "2025-05", "2025-06", "2025-07"]
    # A start mid-month: the first whole lookback is one month later.
    assert months_to_train(dt.date(2025, 1, 15), dt.date(2025, 6, 1), 14, 3) == ["2025-05", "2025-06"]
    # At the edge: February's snapshots from a 2 January start span 2 × 9 + 3 days, just what the split
    # needs; from 3 January one day fewer, so the backfill starts in March instead.
    assert months_to_train(dt.date(2025, 1, 2), dt.date(2025, 3, 15), 9, 3) == ["2025-02", "2025-03"]
    assert training.time_split(dt.date(2025, 1, 2), dt.date(2025, 1, 22), 9, 0.15, 0.15)
    assert months_to_train(dt.date(2025, 1, 3), dt.date(2025, 3, 15), 9, 3) == ["2025-03"]
    with pytest.raises(ValueError, match="needs at least 21"):
        training.time_split(dt.date(2025, 1, 3), dt.date(2025, 1, 22), 9, 0.15, 0.15)


def test_too_early_to_train_agrees_with_the_split_at_the_edge():
    """The schedules skip, and the errors explain, exactly the months whose snapshots are too few for the split:
    February from a 2 January start (H = 9) spans just the 21 days needed and is trained, from 3 January it is
    a day short and March is the first month with a model; with a horizon no lookback can hold (H = 30, L = 2)
    no month is too early, none can be trained, and training says why."""
    assert too_early_to_train("2025-02", dt.date(2025, 1, 2), 9, 3) is None
    assert too_early_to_train("2025-01", dt.date(2025, 1, 2), 9, 3).endswith("the first month with a model is 2025-02")
    assert too_early_to_train("2025-02", dt.date(2025, 1, 3), 9, 3) == (
        "model[2025-02] cannot be trained: its lookback (2024-11-01..2025-01-31) begins before CHURN_START_DATE "
        "2025-01-03, so its training set's snapshots span 20 days, where the time split needs 21 (2 x H + 3, "
        "H = 9); the first month with a model is 2025-03"
    )
    assert too_early_to_train("2025-02", dt.date(2025, 1, 1), 30, 2) is None
