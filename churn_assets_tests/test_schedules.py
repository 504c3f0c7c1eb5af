"""Schedules: for a given tick time, the run request targets the right partition and the right assets."""

import datetime as dt

import dagster as dg
import pytest

from churn_assets.automation.schedules import partition_exists
from churn_assets.partitions import monthly_partitions
from churn_assets.definitions import defs

UTC = dt.UTC


def _evaluate(name: str, tick: dt.datetime) -> dg.RunRequest | dg.SkipReason:
    schedule = defs.get_repository_def().get_schedule_def(name)
    # Both as context managers, closed in order: a context left open keeps the closed instance as
    # Dagster's current one for whatever runs next in this process.
    with dg.instance_for_test() as instance, dg.build_schedule_context(
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
        "weekly_scoring": ("0 3 * * 1", "weekly_scoring"),
        "monthly_retraining": ("0 4 1 * *", "monthly_retraining"),
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
        ("weekly_scoring", dt.datetime(2025, 3, 10, 3, 30, tzinfo=UTC), dt.datetime(2025, 3, 17, 3, tzinfo=UTC)),
        ("monthly_retraining", dt.datetime(2025, 3, 1, 5, tzinfo=UTC), dt.datetime(2025, 4, 1, 4, tzinfo=UTC)),
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
