"""Schedules: for a given tick time, the run request targets the right partition and the right assets."""

import datetime as dt

import dagster as dg
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG, SCHEDULED_EXECUTION_TIME_TAG

from churn_assets.automation.schedules import partition_exists
from churn_assets.definitions import defs
from churn_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, daily_partitions, monthly_partitions

UTC = dt.UTC


def _evaluate(name: str, tick: dt.datetime) -> dg.RunRequest | dg.SkipReason:
    """The tick on an instance that has recorded nothing but the input the tick waits for (stored a day before)."""
    with dg.instance_for_test() as instance:
        _store_inputs_of(instance, name, tick)
        return _evaluate_on(instance, name, tick)


def _store_inputs_of(instance: dg.DagsterInstance, name: str, tick: dt.datetime) -> None:
    """What the refresh before the tick stores: the Sunday's features for scoring, the last day's labels for
    training."""
    asset = {"weekly_scoring": "features", "monthly_retraining": "labels"}.get(name)
    if asset:
        day = (tick.date() - dt.timedelta(days=1)).isoformat()
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day))


def _evaluate_on(instance: dg.DagsterInstance, name: str, tick: dt.datetime) -> dg.RunRequest | dg.SkipReason:
    schedule = defs.get_repository_def().get_schedule_def(name)
    # A context manager, closed before the instance: a context left open keeps the closed instance as
    # Dagster's current one for whatever runs next in this process.
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        data = schedule.evaluate_tick(context)
    if data.skip_message:
        return dg.SkipReason(data.skip_message)
    (request,) = data.run_requests
    return request


def _job_assets(job_name: str) -> set[str]:
    job = defs.resolve_job_def(job_name)
    return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}


def test_schedules_exist_with_design_names_and_times():
    expected = {
        "daily_refresh": ("0 2 * * *", "daily_refresh"),
        "weekly_scoring": ("0 3-23 * * 1", "weekly_scoring"),
        "monthly_retraining": ("0 4-23 1 * *", "monthly_retraining"),
    }
    for name, (cron, job_name) in expected.items():
        schedule = defs.get_schedule_def(name)
        assert schedule.cron_schedule == cron
        assert schedule.execution_timezone == "UTC"
        assert schedule.job_name == job_name


def test_daily_refresh_targets_yesterday_through_labels():
    request = _evaluate("daily_refresh", dt.datetime(2025, 3, 10, 2, 0, tzinfo=UTC))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2025-03-09"
    assert request.run_key == "2025-03-09"
    assert _job_assets("daily_refresh") == {"raw_events", "install_times", "user_daily", "features", "labels"}


def test_daily_refresh_across_a_month_and_year_boundary():
    assert _evaluate("daily_refresh", dt.datetime(2025, 3, 1, 2, tzinfo=UTC)).partition_key == "2025-02-28"
    assert _evaluate("daily_refresh", dt.datetime(2026, 1, 1, 2, tzinfo=UTC)).partition_key == "2025-12-31"


def test_daily_refresh_skips_a_tick_before_the_first_partition():
    # 2025-01-01 02:00 asks for 2024-12-31, the day before CHURN_START_DATE.
    result = _evaluate("daily_refresh", dt.datetime(2025, 1, 1, 2, tzinfo=UTC))
    assert isinstance(result, dg.SkipReason)
    assert "2024-12-31" in result.skip_message


def test_weekly_scoring_targets_the_sunday_before_monday():
    monday = dt.datetime(2025, 3, 10, 3, 0, tzinfo=UTC)
    assert monday.weekday() == 0
    request = _evaluate("weekly_scoring", monday)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2025-03-09"
    assert request.run_key == request.partition_key  # a tick evaluated twice launches one run
    assert dt.date.fromisoformat(request.partition_key).weekday() == 6
    assert _job_assets("weekly_scoring") == {"predictions", "drift_report"}


def test_monthly_retraining_targets_the_new_month():
    request = _evaluate("monthly_retraining", dt.datetime(2025, 4, 1, 4, 0, tzinfo=UTC))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2025-04"
    assert request.run_key == request.partition_key  # a tick evaluated twice launches one run
    assert _job_assets("monthly_retraining") == {"training_set", "model"}
    # The first month exists on its first day (end_offset=1).
    assert partition_exists(monthly_partitions, "2025-01", dt.datetime(2025, 1, 1, 4, tzinfo=UTC))


@pytest.mark.parametrize(
    ("name", "tick", "skipped", "first"),
    [
        ("monthly_retraining", dt.datetime(2025, 1, 1, 4, tzinfo=UTC), "2025-01", "snapshots span 0 days"),
        ("monthly_retraining", dt.datetime(2025, 2, 1, 4, tzinfo=UTC), "2025-02", "snapshots span 17 days"),
        ("weekly_scoring", dt.datetime(2025, 1, 6, 3, tzinfo=UTC), "2025-01", "2025-01-05 need a model of 2025-01: "),
        ("weekly_scoring", dt.datetime(2025, 3, 3, 3, tzinfo=UTC), "2025-03", None),  # Sunday 2 March
    ],
)
def test_the_first_months_without_a_model_are_skipped_naming_the_first_month_with_one(name, tick, skipped, first):
    """Training a month whose lookback begins before CHURN_START_DATE, or scoring a day of it, could only fail
    (twice, with the run retry, and an alert each time): the tick is skipped, saying when models begin."""
    result = _evaluate(name, tick)
    if first is None:
        assert isinstance(result, dg.RunRequest) and result.partition_key.startswith(skipped)
        return
    assert isinstance(result, dg.SkipReason)
    assert f"model[{skipped}] cannot be trained" in result.skip_message
    assert first in result.skip_message
    assert "begins before CHURN_START_DATE 2025-01-01" in result.skip_message
    assert result.skip_message.endswith("the first month with a model is 2025-03")


def test_monthly_retraining_skips_a_tick_before_the_first_month():
    # 2024-12-01 04:00 asks for 2024-12, the month before CHURN_START_DATE's.
    result = _evaluate("monthly_retraining", dt.datetime(2024, 12, 1, 4, tzinfo=UTC))
    assert isinstance(result, dg.SkipReason)
    assert "2024-12 is not a partition" in result.skip_message


@pytest.mark.parametrize(
    ("name", "after", "expected_next"),
    [
        ("daily_refresh", dt.datetime(2025, 3, 10, 2, 30, tzinfo=UTC), dt.datetime(2025, 3, 11, 2, tzinfo=UTC)),
        ("weekly_scoring", dt.datetime(2025, 3, 10, 2, 30, tzinfo=UTC), dt.datetime(2025, 3, 10, 3, tzinfo=UTC)),
        ("weekly_scoring", dt.datetime(2025, 3, 10, 3, 30, tzinfo=UTC), dt.datetime(2025, 3, 10, 4, tzinfo=UTC)),
        ("weekly_scoring", dt.datetime(2025, 3, 10, 23, 30, tzinfo=UTC), dt.datetime(2025, 3, 17, 3, tzinfo=UTC)),
        ("monthly_retraining", dt.datetime(2025, 3, 1, 3, tzinfo=UTC), dt.datetime(2025, 3, 1, 4, tzinfo=UTC)),
        ("monthly_retraining", dt.datetime(2025, 3, 1, 23, 5, tzinfo=UTC), dt.datetime(2025, 4, 1, 4, tzinfo=UTC)),
    ],
)
def test_next_tick_times(name, after, expected_next):
    from dagster._utils.schedules import cron_string_iterator

    schedule = defs.get_schedule_def(name)
    ticks = cron_string_iterator(after.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    assert next(ticks) == expected_next


def test_jobs_run_in_process_with_single_run_backfills():
    # What the UI, backfills and `dagster asset materialize` start for a selection of assets, too.
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == dg.in_process_executor.name
    for job_name in ("daily_refresh", "weekly_scoring", "monthly_retraining"):
        job = defs.resolve_job_def(job_name)
        assert job.executor_def.name == dg.in_process_executor.name
        for key in job.asset_layer.selected_asset_keys:
            policy = defs.resolve_assets_def(key).backfill_policy
            assert policy is not None and policy.max_partitions_per_run is None, key


def test_partition_exists_follows_the_clock():
    from churn_assets.partitions import daily_partitions

    now = dt.datetime(2025, 2, 1, 12, tzinfo=UTC)
    assert partition_exists(daily_partitions, "2025-01-31", now)
    assert not partition_exists(daily_partitions, "2025-02-01", now)  # today: not yet
    assert not partition_exists(daily_partitions, "2024-12-31", now)


def _refreshed(instance: dg.DagsterInstance, *days: str) -> None:
    for day in days:
        instance.report_runless_asset_event(dg.AssetMaterialization("install_times", partition=day))


def _range_of(request: dg.RunRequest) -> tuple[str, str]:
    return request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]


def test_daily_refresh_after_missed_ticks_refreshes_the_days_missed_with_yesterday(instance):
    """A daemon down over three ticks: Dagster evaluates only the latest, and yesterday alone would fail on
    install_times of the day before (and so would every later tick). The tick runs the days since the last one
    refreshed, with yesterday, as one range run."""
    _refreshed(instance, "2025-03-01", "2025-03-05")
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 10, 2, tzinfo=UTC))
    assert isinstance(request, dg.RunRequest) and request.partition_key is None
    assert _range_of(request) == ("2025-03-06", "2025-03-09")
    assert request.run_key == "2025-03-06...2025-03-09"  # the same tick evaluated twice launches one run

    _refreshed(instance, "2025-03-08")  # the day before is refreshed: yesterday alone, as on every normal day
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 10, 2, tzinfo=UTC))
    assert (request.partition_key, request.run_key) == ("2025-03-09", "2025-03-09")
    assert "dagster/asset_partition_range_start" not in request.tags


def test_daily_refresh_catches_up_from_the_first_partition_but_not_over_a_long_gap(instance):
    """A deployment whose daemon starts after CHURN_START_DATE catches up from it; a gap of more than 31 days
    (or a history never loaded) is left to a backfill run on purpose: the tick asks for yesterday alone."""
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 1, 5, 2, tzinfo=UTC))
    assert _range_of(request) == ("2025-01-01", "2025-01-04")
    # The first partition at the window's far end, 31 days before yesterday, is within it; a day later it is not.
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 2, 2, 2, tzinfo=UTC))
    assert _range_of(request) == ("2025-01-01", "2025-02-01")
    assert _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 2, 3, 2, tzinfo=UTC)).partition_key == "2025-02-02"

    _refreshed(instance, "2025-01-29")  # 32 days before 2025-03-02, 31 before 2025-03-01
    assert _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 3, 2, tzinfo=UTC)).partition_key == "2025-03-02"
    assert _range_of(_evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 2, 2, tzinfo=UTC))) == (
        "2025-01-30", "2025-03-01"
    )


def test_a_catch_up_request_runs_the_days_missed(tmp_path, instance):
    """What the catch-up tick requests is a run the daily_refresh job can do: each missed day refreshed in order."""
    from churn_assets.automation.jobs import daily_refresh
    from churn_assets.config import ChurnSettings
    from churn_assets.definitions import all_asset_checks, all_assets
    from churn_assets.resources import build_resources
    from churn_assets_tests.landing_helpers import amplitude_row, jsonl, materialize_ingest, write_landing_day

    settings = ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    days = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
    for day in days:
        rows = [amplitude_row(f"{day}-{i}", f"u{i}", f"{day} 1{i}:00:00.000000") for i in range(3)]
        write_landing_day(settings.landing_url, day, {"a.jsonl": jsonl(rows)})
    resources = build_resources(settings)
    assert materialize_ingest(resources, instance, days[0]).success

    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 1, 5, 2, tzinfo=UTC))
    assert _range_of(request) == ("2025-01-02", "2025-01-04")
    job = dg.Definitions(
        assets=all_assets, asset_checks=all_asset_checks, jobs=[daily_refresh], resources=resources
    ).resolve_job_def("daily_refresh")
    assert job.execute_in_process(instance=instance, tags=request.tags).success
    for day in days[1:]:
        assert (tmp_path / "lake" / "install_times" / f"date={day}" / "data.parquet").exists()
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 1, 6, 2, tzinfo=UTC))
    assert request.partition_key == "2025-01-05"  # caught up: the next tick is a normal day's


def test_weekly_scoring_of_an_early_month_runs_when_its_model_exists(instance):
    """A month too early to train under the settings may have a model anyway: trained before CHURN_START_DATE
    was moved later, or under a shorter CHURN_HORIZON_DAYS. Its Sundays were skipped as 'cannot be trained',
    leaving the month unscored though predictions could run; the tick asks for them when the model is stored."""
    tick = dt.datetime(2025, 1, 6, 3, tzinfo=UTC)
    _store_inputs_of(instance, "weekly_scoring", tick)
    assert isinstance(_evaluate_on(instance, "weekly_scoring", tick), dg.SkipReason)

    instance.report_runless_asset_event(dg.AssetMaterialization("model", partition="2025-01"))
    request = _evaluate_on(instance, "weekly_scoring", tick)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2025-01-05"


def test_daily_refresh_does_not_catch_up_days_whose_runs_are_queued_or_in_progress(instance):
    """install_times[D-1] is not stored yet while D-1's run waits in the serial lane (behind a backfill, say) or
    runs: those days are not missed. The tick asked for them again in a range, refreshing each of them twice."""

    def run(status: dg.DagsterRunStatus, **tags: str) -> None:
        instance.add_run(dg.DagsterRun(job_name="daily_refresh", status=status, tags=tags))

    _refreshed(instance, "2025-03-01")
    backfill = {"dagster/asset_partition_range_start": "2025-03-02", "dagster/asset_partition_range_end": "2025-03-07"}
    run(dg.DagsterRunStatus.STARTED, **backfill)
    run(dg.DagsterRunStatus.STARTING, **{"dagster/partition": "2025-03-08"})
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 10, 2, tzinfo=UTC))
    assert (request.partition_key, request.run_key) == ("2025-03-09", "2025-03-09")

    run(dg.DagsterRunStatus.FAILURE, **{"dagster/partition": "2025-03-10"})
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 12, 2, tzinfo=UTC))
    assert _range_of(request) == ("2025-03-09", "2025-03-11")  # a failed run refreshes nothing: its day is missed


def _asset_backfill(instance: dg.DagsterInstance, first: str, last: str) -> None:
    """A backfill of the daily assets as the UI launches it (asset graph → Materialize → a range), not started yet:
    the backfill daemon has launched none of its runs, and its runs will be __ASSET_JOB's, outside the serial lane."""
    from dagster._core.execution.backfill import PartitionBackfill

    days = daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    instance.add_backfill(PartitionBackfill.from_asset_partitions(
        backfill_id="uibackfl", asset_graph=defs.get_repository_def().asset_graph, partition_names=days,
        asset_selection=[dg.AssetKey(a) for a in _DAILY], tags={}, all_partitions=False,
        backfill_timestamp=dt.datetime.fromisoformat(last).replace(tzinfo=UTC).timestamp() + 86400,
        dynamic_partitions_store=instance,
        title=None, description=None, run_config=None,
    ))


_DAILY = ("raw_events", "install_times", "user_daily", "features", "labels")


def test_daily_refresh_waits_for_days_a_backfill_or_the_cli_is_refreshing(instance):
    """A backfill launched from the UI (before its daemon launched a run) or a `dagster asset materialize` range still
    running refreshes the days before yesterday outside the serial lane. The tick asked for them again in a range,
    and the two wrote the same partitions at the same time; yesterday alone would overtake them and fail on
    install_times of the day before. The tick waits, and the next one refreshes the days after them."""
    _refreshed(instance, "2025-03-01")
    _asset_backfill(instance, "2025-03-02", "2025-03-06")
    skip = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 8, 2, tzinfo=UTC))
    assert isinstance(skip, dg.SkipReason)
    assert "install_times[2025-03-06] is being refreshed by backfill uibackfl" in skip.skip_message

    cli = dg.DagsterRun(
        job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
        asset_selection=frozenset(dg.AssetKey(a) for a in _DAILY),
        tags={"dagster/asset_partition_range_start": "2025-03-07", "dagster/asset_partition_range_end": "2025-03-08"},
    )
    instance.add_run(cli)
    skip = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 10, 2, tzinfo=UTC))
    assert f"install_times[2025-03-08] is being refreshed by run {cli.run_id} of __ASSET_JOB" in skip.skip_message

    _refreshed(instance, *(f"2025-03-0{d}" for d in range(2, 9)))  # stored: what refreshes them no longer matters
    request = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 10, 2, tzinfo=UTC))
    assert (request.partition_key, request.run_key) == ("2025-03-09", "2025-03-09")

    # A run of other assets (scoring, say) refreshes no day of install_times.
    instance.add_run(dg.DagsterRun(
        job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
        asset_selection=frozenset({dg.AssetKey("predictions")}), tags={"dagster/partition": "2025-03-10"},
    ))
    assert _range_of(_evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 12, 2, tzinfo=UTC))) == (
        "2025-03-09", "2025-03-11"
    )


def test_daily_refresh_does_not_ask_again_for_a_yesterday_queued_or_running(instance):
    """Yesterday already queued in daily_refresh's lane (the last day of a `dagster job backfill … --to YESTERDAY`
    started before the daemon) or refreshed by a backfill from the UI: the tick asked for it again, and it was
    refreshed twice."""
    _refreshed(instance, "2025-03-07", "2025-03-08")
    # QUEUED needs a run from a code location (test_daemon.py has one); NOT_STARTED is the status just before.
    instance.add_run(dg.DagsterRun(
        job_name="daily_refresh", status=dg.DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": "2025-03-09"}
    ))
    skip = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 10, 2, tzinfo=UTC))
    assert isinstance(skip, dg.SkipReason)
    assert skip.skip_message.startswith("2025-03-09 is already queued or running")

    _refreshed(instance, "2025-03-09", "2025-03-10")
    _asset_backfill(instance, "2025-03-11", "2025-03-11")
    skip = _evaluate_on(instance, "daily_refresh", dt.datetime(2025, 3, 12, 2, tzinfo=UTC))
    assert "2025-03-11 is already queued or running" in skip.skip_message and "backfill uibackfl" in skip.skip_message


def _launch(
    instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus, tick: dt.datetime
) -> dg.DagsterRun:
    """The run the daemon launches for a tick's request: the job, with the tags the schedule resolved for it (its
    own name's and the partition's) and those the daemon adds (the tick's time, the run key)."""
    assert request.tags["dagster/schedule_name"] and request.tags.get("dagster/partition") == request.partition_key
    job_name = request.tags["dagster/schedule_name"]  # each schedule runs the job of its name
    tags = {**request.tags, SCHEDULED_EXECUTION_TIME_TAG: tick.isoformat(), RUN_KEY_TAG: request.run_key}
    run = dg.DagsterRun(job_name=job_name, status=status, tags=tags)
    instance.add_run(run)
    return run


def test_weekly_scoring_waits_for_a_late_refresh_of_the_sunday(instance):
    """The Sunday's refresh was late (its export landed after 02:00): the 03:00 tick's run failed on the missing
    features[Sunday], so did its retry, and the Sunday went unscored. The tick now waits, and an hourly tick after it
    asks for the Sunday once its features are stored: once, whatever the ticks after it find."""
    monday = dt.datetime(2025, 3, 10, tzinfo=UTC)
    skip = _evaluate_on(instance, "weekly_scoring", monday.replace(hour=3))
    assert isinstance(skip, dg.SkipReason)
    assert skip.skip_message.startswith("2025-03-09 waits for features[2025-03-09], not stored yet")
    assert isinstance(_evaluate_on(instance, "weekly_scoring", monday.replace(hour=4)), dg.SkipReason)

    instance.report_runless_asset_event(dg.AssetMaterialization("features", partition="2025-03-09"))
    request = _evaluate_on(instance, "weekly_scoring", monday.replace(hour=5))
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2025-03-09", "2025-03-09")

    run = _launch(instance, request, dg.DagsterRunStatus.FAILURE, monday.replace(hour=5))
    skip = _evaluate_on(instance, "weekly_scoring", monday.replace(hour=6))
    assert skip.skip_message == f"2025-03-09 was asked for at an earlier tick: run {run.run_id} (FAILURE)"
    # The run of another Sunday does not count.
    next_monday = dt.datetime(2025, 3, 17, 3, tzinfo=UTC)
    _store_inputs_of(instance, "weekly_scoring", next_monday)
    assert _evaluate_on(instance, "weekly_scoring", next_monday).partition_key == "2025-03-16"


def test_the_last_tick_asks_regardless_so_that_a_refresh_that_never_came_alerts(instance):
    """A Sunday whose refresh has not come by 23:00: the last tick asks for it all the same, and the run fails naming
    the missing partition, which the run failure sensor posts, as the single 03:00 tick's run did."""
    assert isinstance(_evaluate_on(instance, "weekly_scoring", dt.datetime(2025, 3, 10, 22, tzinfo=UTC)), dg.SkipReason)
    request = _evaluate_on(instance, "weekly_scoring", dt.datetime(2025, 3, 10, 23, tzinfo=UTC))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2025-03-09"
    first_of_april = dt.datetime(2025, 4, 1, 22, tzinfo=UTC)
    assert isinstance(_evaluate_on(instance, "monthly_retraining", first_of_april), dg.SkipReason)
    request = _evaluate_on(instance, "monthly_retraining", dt.datetime(2025, 4, 1, 23, tzinfo=UTC))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2025-04"


def test_a_sunday_scored_by_hand_after_the_first_tick_is_not_scored_again(instance):
    """An operator who ran `dagster asset materialize --select predictions,drift_report` after the first tick: the
    later ticks do not score the day a second time. Assets stored before the first tick (a backfill) do not count."""

    def store(*assets: str, day: str) -> None:  # stored now: after a past tick, before a future one
        for asset in assets:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day))

    past = dt.datetime(2025, 3, 10, 4, tzinfo=UTC)
    store("features", "predictions", day="2025-03-09")
    assert isinstance(_evaluate_on(instance, "weekly_scoring", past), dg.RunRequest)  # drift_report not stored
    store("drift_report", day="2025-03-09")
    skip = _evaluate_on(instance, "weekly_scoring", past)
    assert skip.skip_message == "predictions, drift_report of 2025-03-09 were stored since 03:00 UTC by another run"

    future = dt.datetime(2030, 3, 11, 4, tzinfo=UTC)  # a Monday whose 03:00 tick comes after what is stored now
    store("features", "predictions", "drift_report", day="2030-03-10")
    assert isinstance(_evaluate_on(instance, "weekly_scoring", future), dg.RunRequest)


def test_monthly_retraining_waits_for_the_labels_of_the_months_last_day(instance):
    """training_set[M] reads labels up to the last day of M-1, which the refresh of that day stores at 02:00 on the
    1st (or whenever its export lands, for the landing sensor)."""
    first = dt.datetime(2025, 4, 1, tzinfo=UTC)
    skip = _evaluate_on(instance, "monthly_retraining", first.replace(hour=4))
    assert skip.skip_message.startswith("2025-04 waits for labels[2025-03-31], not stored yet")
    instance.report_runless_asset_event(dg.AssetMaterialization("labels", partition="2025-03-30"))
    assert isinstance(_evaluate_on(instance, "monthly_retraining", first.replace(hour=5)), dg.SkipReason)
    instance.report_runless_asset_event(dg.AssetMaterialization("labels", partition="2025-03-31"))
    request = _evaluate_on(instance, "monthly_retraining", first.replace(hour=9))
    assert (request.partition_key, request.run_key) == ("2025-04", "2025-04")
    run = _launch(instance, request, dg.DagsterRunStatus.STARTED, first.replace(hour=9))
    skip = _evaluate_on(instance, "monthly_retraining", first.replace(hour=10))
    assert f"run {run.run_id} (STARTED)" in skip.skip_message


@pytest.mark.parametrize(
    ("name", "tick"),
    [
        ("weekly_scoring", dt.datetime(2025, 3, 10, 5, tzinfo=UTC)),
        ("monthly_retraining", dt.datetime(2025, 4, 1, 4, tzinfo=UTC)),
        ("daily_refresh", dt.datetime(2025, 3, 12, 2, tzinfo=UTC)),
    ],
)
def test_a_tick_interrupted_after_creating_its_run_asks_for_that_run_again(instance, name, tick):
    """The daemon stopped (a restart, an OOM kill) after creating a tick's run and before submitting it: the restarted
    daemon evaluates the same tick again and submits the run it finds under the run key asked for. The tick counted
    that run, NOT_STARTED, as asked for at an earlier tick (as yesterday queued, for daily_refresh): it was skipped,
    the run never left NOT_STARTED, and the partition was neither run nor alerted on."""
    _store_inputs_of(instance, name, tick)
    instance.report_runless_asset_event(dg.AssetMaterialization("install_times", partition="2025-03-08"))
    request = _evaluate_on(instance, name, tick)
    assert isinstance(request, dg.RunRequest), request.skip_message
    _launch(instance, request, dg.DagsterRunStatus.NOT_STARTED, tick)

    again = _evaluate_on(instance, name, tick)
    assert isinstance(again, dg.RunRequest), again.skip_message
    assert (again.run_key, again.partition_key) == (request.run_key, request.partition_key)
    assert {t: again.tags.get(t) for t in (RANGE_START_TAG, RANGE_END_TAG)} == {
        t: request.tags.get(t) for t in (RANGE_START_TAG, RANGE_END_TAG)
    }
    assert isinstance(_evaluate_on(instance, name, tick + dt.timedelta(hours=1)), dg.SkipReason)


def test_weekly_scoring_queues_behind_the_sundays_refresh_in_its_lane(instance):
    """The Sunday's refresh queued or running in daily_refresh's serial lane (a late export the landing sensor just
    requested, the catch-up of a restarted daemon): the tick asks for the Sunday at once, in the same lane, so that
    the run starts when the refresh is done, instead of an hour later or, at 23:00, failing beside it. A refresh
    outside the lane (a backfill from the UI) cannot be queued behind: the tick waits, and 23:00 asks regardless;
    a retraining keeps to its own lane and waits."""
    monday = dt.datetime(2025, 3, 10, 4, tzinfo=UTC)
    refresh = dg.DagsterRun(
        job_name="daily_refresh", status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"dagster/partition": "2025-03-09", "churn/serial": "daily_refresh"},
    )
    instance.add_run(refresh)
    request = _evaluate_on(instance, "weekly_scoring", monday)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2025-03-09"
    assert request.tags["churn/serial"] == "daily_refresh"
    # A run asked for so runs the weekly_scoring job, in the lane (dagster.yaml: one run of it at a time).
    assert defs.resolve_job_def("weekly_scoring").tags.get("churn/serial") is None

    first_of_april = dt.datetime(2025, 4, 1, 5, tzinfo=UTC)
    instance.add_run(dg.DagsterRun(
        job_name="daily_refresh", status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": "2025-03-31", "churn/serial": "daily_refresh"},
    ))
    assert isinstance(_evaluate_on(instance, "monthly_retraining", first_of_april), dg.SkipReason)

    with dg.instance_for_test() as other:  # the Sunday refreshed by a UI backfill's run, outside the lane
        other.add_run(dg.DagsterRun(
            job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset(dg.AssetKey(a) for a in _DAILY), tags={"dagster/partition": "2025-03-09"},
        ))
        assert isinstance(_evaluate_on(other, "weekly_scoring", monday), dg.SkipReason)
        last = _evaluate_on(other, "weekly_scoring", monday.replace(hour=23))
        assert isinstance(last, dg.RunRequest) and "churn/serial" not in last.tags
