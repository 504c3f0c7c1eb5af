"""Time-driven runs: every schedule asks for the partition its tick completes.

* ``daily_refresh`` — 02:00 UTC: the job of the same name for yesterday, and for the days before it a
  stopped daemon missed (``MAX_CATCH_UP_DAYS``); skipped while the day before them is being refreshed outside
  the job's serial lane (a backfill launched from the UI), which its run would overtake.
* ``weekly_scoring`` — Monday 03:00 UTC: the job of the same name for yesterday (the Sunday), once the Sunday's
  ``features`` are stored: when its refresh is late, the hourly ticks after 03:00 wait for it (``_once_stored``).
* ``monthly_retraining`` — the 1st at 04:00 UTC: the job of the same name for the new month, once the ``labels`` of
  the month's last day are stored, waiting the same way.

Schedules carry the names DESIGN.md gives them, which are also their jobs' names (Dagster keeps
schedules and jobs apart).

A tick whose partition does not exist (before ``CHURN_START_DATE``) is skipped with a reason, and so is a
tick of ``monthly_retraining`` or ``weekly_scoring`` in one of the first months, whose lookback begins before
``CHURN_START_DATE`` and which can have no model (``training_set.too_early_to_train``): their runs could
only fail (a Sunday is scored when its month's model is materialized all the same). The run key is the
partition key (``FIRST...LAST`` for a catch-up range), so a tick evaluated twice launches one run.
"""

import datetime as dt

import dagster as dg
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.storage.tags import RUN_KEY_TAG, SCHEDULED_EXECUTION_TIME_TAG

from churn_assets.apps import asset_key, key_string
from churn_assets.assets.ml.training_set import too_early_to_train
from churn_assets.automation.jobs import SERIAL_TAG, daily_refresh, monthly_retraining, weekly_scoring
from churn_assets.partitions import (
    MONTH_FORMAT,
    RANGE_END_TAG,
    RANGE_START_TAG,
    daily_partitions,
    latest_materializations,
    monthly_partitions,
)


def partition_exists(partitions_def: dg.TimeWindowPartitionsDefinition, key: str, now: dt.datetime) -> bool:
    """Whether ``key`` is a partition as of ``now`` (not before the start, not in the future)."""
    with dg.partition_loading_context(effective_dt=now):
        return partitions_def.has_partition_key(key)


def _request(
    partitions_def: dg.TimeWindowPartitionsDefinition, key: str, tick: dt.datetime
) -> dg.RunRequest | dg.SkipReason:
    if not partition_exists(partitions_def, key, tick):
        return dg.SkipReason(f"{key} is not a partition at {tick.isoformat()} (starts {partitions_def.start:%Y-%m-%d})")
    return dg.RunRequest(run_key=key, partition_key=key)


def _tick(context: dg.ScheduleEvaluationContext) -> dt.datetime:
    return context.scheduled_execution_time.astimezone(dt.UTC)


def _created_by_this_tick(context: dg.ScheduleEvaluationContext, name: str) -> dg.RunRequest | None:
    """The request of the run this very tick created before the daemon stopped (before it submitted the run or
    recorded the tick). The restarted daemon evaluates the tick again and submits the run it finds under the same
    run key; the checks below would count that run as asked for already (or as yesterday in flight), skip the tick
    and leave the run NOT_STARTED for good."""
    tags = {"dagster/schedule_name": name, SCHEDULED_EXECUTION_TIME_TAG: _tick(context).isoformat()}
    runs = context.instance.get_runs(dg.RunsFilter(tags=tags), limit=1)
    if not runs or RUN_KEY_TAG not in runs[0].tags:
        return None
    run = runs[0]
    return dg.RunRequest(
        run_key=run.tags[RUN_KEY_TAG],
        partition_key=run.tags.get("dagster/partition"),
        tags={tag: run.tags[tag] for tag in (RANGE_START_TAG, RANGE_END_TAG) if tag in run.tags},
    )


def _yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """The daily partition of the day that ended before the tick."""
    tick = _tick(context)
    return _request(daily_partitions, (tick.date() - dt.timedelta(days=1)).isoformat(), tick)


# Dagster evaluates only the latest of the ticks a stopped daemon missed, and install_times[D] builds on
# install_times[D-1]: yesterday alone would fail, and so would every tick after it, until someone ran the days
# missed. A tick whose days before it were not refreshed, back to one that was within this many days (or to
# the first partition), refreshes them with yesterday in one range run, as Airflow's catchup would. A longer
# gap is a history to load on purpose (docs/operations.md): the tick asks for yesterday, whose error names
# the range to run.
MAX_CATCH_UP_DAYS = 31


@dg.schedule(
    name=daily_refresh.name,
    job=daily_refresh,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description=(
        "02:00 UTC every day: the daily refresh of yesterday (raw_events → labels). After missed ticks (the daemon "
        "was down), the days since the last one whose install_times is stored, up to "
        f"{MAX_CATCH_UP_DAYS} days back, with yesterday, as one range run."
    ),
)
def daily_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if again := _created_by_this_tick(context, daily_refresh.name):
        return again
    request = _yesterday(context)
    if not isinstance(request, dg.RunRequest):
        return request
    return _with_missed_days(context.instance, request, context.repository_def.asset_graph)


def _with_missed_days(
    instance: dg.DagsterInstance, request: dg.RunRequest, asset_graph: BaseAssetGraph
) -> dg.RunRequest | dg.SkipReason:
    day = dt.date.fromisoformat(request.partition_key)
    start = daily_partitions.start.date()
    before = [day - dt.timedelta(days=n) for n in range(1, MAX_CATCH_UP_DAYS + 1)]
    before = [d for d in before if d >= start]
    stored = latest_materializations(instance, _INSTALL_TIMES, [d.isoformat() for d in before])
    # A day whose run is queued (behind a backfill in the serial lane, say) or running, or which a backfill still
    # has to run, is not missed, and yesterday in flight is not asked for: asked for again, it was refreshed twice.
    # Should that fail, the next tick finds the day missed.
    in_flight = _days_in_flight(instance, asset_graph)
    if request.partition_key in in_flight:  # the last day of a backfill queued before the tick, say
        what = in_flight[request.partition_key] or f"a {daily_refresh.name} run or backfill"
        return dg.SkipReason(f"{request.partition_key} is already queued or running: refreshed by {what}")
    missed = []
    for earlier in before:  # newest first
        key = earlier.isoformat()
        if key in stored or key in in_flight:
            if key not in stored and (outside := in_flight[key]):
                # Outside the serial lane, a run queued now would not wait for install_times[key]: it would fail.
                return dg.SkipReason(
                    f"{request.partition_key} waits: {key_string('install_times')}[{key}] is being refreshed by "
                    f"{outside}, outside the {daily_refresh.name} lane; the next tick refreshes the days after it "
                    "with its yesterday"
                )
            break
        missed.append(earlier)
    else:
        if before and before[-1] > start:  # none refreshed in the window, and the first partition lies further
            return request
    if not missed:
        return request
    first, last = missed[-1].isoformat(), request.partition_key
    return dg.RunRequest(
        run_key=f"{first}...{last}",
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
    )


def _days_in_flight(instance: dg.DagsterInstance, asset_graph: BaseAssetGraph) -> dict[str, str | None]:
    """The days of install_times being refreshed, each with what refreshes it outside the serial lane (None inside
    it): a run queued, launched or running (a partition's or a range's) of daily_refresh, or of another job selecting
    install_times (a UI backfill's, ``dagster asset materialize``'s); a backfill in progress, whose daemon may not
    have launched the runs of all its days yet (a job backfill of daily_refresh queues them in the lane)."""
    days: dict[str, str | None] = {}
    for run in instance.get_runs(dg.RunsFilter(statuses=_IN_FLIGHT)):
        in_lane = run.job_name == daily_refresh.name
        if not in_lane and _INSTALL_TIMES not in (run.asset_selection or ()):
            continue
        outside = None if in_lane else f"run {run.run_id} of {run.job_name}"
        first, last = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
        if first and last:
            keys = daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
        else:
            keys = [run.tags["dagster/partition"]] if run.tags.get("dagster/partition") else []
        days |= {key: days.get(key) or outside for key in keys}
    for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        if backfill.is_asset_backfill:
            try:  # Dagster's own record of the backfill (a private API): one it cannot read is passed over
                target = backfill.get_asset_backfill_data(asset_graph).target_subset
            except Exception:  # noqa: BLE001 - e.g. saved by an older Dagster before the assets changed
                continue
            if _INSTALL_TIMES in target.partitions_subsets_by_asset_key:
                keys = target.get_partitions_subset(_INSTALL_TIMES).get_partition_keys()
                days |= dict.fromkeys(keys, f"backfill {backfill.backfill_id}")
        elif backfill.job_name == daily_refresh.name:
            days |= {key: days.get(key) for key in backfill.partition_names or ()}
    return days


_INSTALL_TIMES = asset_key("install_times")
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


# weekly_scoring and monthly_retraining read what a daily refresh stores a few hours before them: the Sunday's
# features, the labels of the month's last day. When that refresh was late (its export landed after 02:00, or it
# failed and was re-run), their run failed on the missing partition, and its retry, and nothing asked for the
# partition again. So they tick at their hour and then every hour until 23:00 UTC that day: a tick asks for the
# partition once its input is stored, unless a run of the schedule already has it or the job's assets were all
# stored since the first tick (by hand). The last tick asks regardless, so that a refresh that never came fails a
# run whose error names the missing partition, and the run failure sensor alerts, as the single tick did.
LAST_WAITING_HOUR = 23


def _once_stored(
    context: dg.ScheduleEvaluationContext, name: str, request: dg.RunRequest, first_hour: int,
    needs: tuple[str, str], job_assets: tuple[str, ...], queue_behind_refresh: bool = False,
) -> dg.RunRequest | dg.SkipReason:
    """``request`` at the first tick it can run: ``needs`` (an asset and its partition) stored, not asked for yet;
    with ``queue_behind_refresh``, also while ``needs``' day is being refreshed in daily_refresh's serial lane,
    queued behind it."""
    instance, key, tick = context.instance, request.partition_key, _tick(context)
    asked = instance.get_runs(
        dg.RunsFilter(tags={"dagster/schedule_name": name, "dagster/partition": key}), limit=1
    )
    if asked:
        run = asked[0]
        return dg.SkipReason(f"{key} was asked for at an earlier tick: run {run.run_id} ({run.status.value})")
    first_tick = tick.replace(hour=first_hour, minute=0, second=0, microsecond=0)
    stored = [latest_materializations(instance, asset_key(asset), [key]).get(key) for asset in job_assets]
    if tick > first_tick and all(record and record.timestamp >= first_tick.timestamp() for record in stored):
        stored_by = f"stored since {first_tick:%H:%M} UTC by another run"
        return dg.SkipReason(f"{', '.join(map(key_string, job_assets))} of {key} were {stored_by}")
    asset, partition = needs
    if latest_materializations(instance, asset_key(asset), [partition]):
        return request
    refreshing = _days_in_flight(instance, context.repository_def.asset_graph) if queue_behind_refresh else {}
    if partition in refreshing and refreshing[partition] is None:
        # Its refresh is queued or running in daily_refresh's serial lane: queued in the lane behind it, the run
        # starts once the refresh is done (the queue is first in, first out), not an hour later, and a tick that
        # asks regardless (23:00, or the latest one a restarted daemon evaluates) no longer fails beside it.
        return dg.RunRequest(
            run_key=request.run_key, partition_key=key, tags={**request.tags, SERIAL_TAG: daily_refresh.name}
        )
    if tick.hour >= LAST_WAITING_HOUR:
        return request
    return dg.SkipReason(
        f"{key} waits for {key_string(asset)}[{partition}], not stored yet (its daily refresh is late, queued or "
        f"failed): every tick until {LAST_WAITING_HOUR}:00 UTC asks for {key} once it is stored, and the last one "
        "asks regardless"
    )


@dg.schedule(
    name=weekly_scoring.name,
    job=weekly_scoring,
    cron_schedule="0 3-23 * * 1",
    execution_timezone="UTC",
    description=(
        "Monday 03:00 UTC: predictions and the drift report of yesterday, the Sunday. When the Sunday's features "
        "are not stored yet (a late refresh), the hourly ticks until 23:00 ask for it once they are."
    ),
)
def weekly_scoring_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if again := _created_by_this_tick(context, weekly_scoring.name):
        return again
    request = _yesterday(context)
    if not isinstance(request, dg.RunRequest):
        return request
    day, month = request.partition_key, request.partition_key[:7]
    # A model stored anyway (trained before CHURN_START_DATE moved later, or under another H) can score.
    if (why := too_early_to_train(month)) and not latest_materializations(
        context.instance, asset_key("model"), [month]
    ):
        return dg.SkipReason(
            f"{key_string('predictions')} and {key_string('drift_report')} of {day} need a model of {month}: {why}"
        )
    # Scoring has no lane of its own, so it can queue in the refresh's; a retraining keeps to its own (model[M]
    # reads model[M-1]) and waits for the next tick instead.
    return _once_stored(
        context, weekly_scoring.name, request, 3, ("features", day), ("predictions", "drift_report"),
        queue_behind_refresh=True,
    )


@dg.schedule(
    name=monthly_retraining.name,
    job=monthly_retraining,
    cron_schedule="0 4-23 1 * *",
    execution_timezone="UTC",
    description=(
        "The 1st of each month, 04:00 UTC: the training set and model of the month that begins. When the labels of "
        "the month's last day are not stored yet (a late refresh), the hourly ticks until 23:00 ask once they are."
    ),
)
def monthly_retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if again := _created_by_this_tick(context, monthly_retraining.name):
        return again
    tick = _tick(context)
    request = _request(monthly_partitions, tick.strftime(MONTH_FORMAT), tick)
    if not isinstance(request, dg.RunRequest):
        return request
    if why := too_early_to_train(request.partition_key):
        return dg.SkipReason(why)
    last_label_day = (tick.date() - dt.timedelta(days=1)).isoformat()
    return _once_stored(
        context, monthly_retraining.name, request, 4, ("labels", last_label_day), ("training_set", "model")
    )
