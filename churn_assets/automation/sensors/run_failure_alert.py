"""``run_failure_alert``: every failed run is logged and, when ``CHURN_ALERT_WEBHOOK`` is set, posted there.

The JSON posted: ``{"app", "run_id", "job", "partition", "failed_steps", "error", "dagster_event"}`` — ``app`` is
``CHURN_APP`` (null without one), so that a team whose instance holds several apps need not parse the job; the error
is the first failed step's own error (what the step raised, not Dagster's wrapper around it), followed by
its innermost cause when that says more; or the run's own failure message when no step failed, e.g. a run
worker that crashed. On by default: an alert that needs someone to turn it on is no alert.
"""

import re
from typing import Any

import dagster as dg

from churn_assets.apps import APP, automation_name, is_this_apps_run
from churn_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from churn_assets.resources.alerts import AlertWebhook


def _dagster_wrappers() -> frozenset[str]:
    """Names of the errors Dagster wraps a user code error in ("Error occurred while executing op …",
    "Exceeded max_retries of 2" after a step's retries)."""
    names, pending = set(), [dg.DagsterUserCodeExecutionError, dg.RetryRequested]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return frozenset(names)


_DAGSTER_WRAPPERS = _dagster_wrappers()


def _chain(error: Any) -> list[Any]:
    """A Dagster error and its causes, outermost first."""
    chain = [error]
    while getattr(chain[-1], "cause", None) is not None:
        chain.append(chain[-1].cause)
    return chain


def _gist(error: Any) -> str:
    """What an error says beyond its class: its text, or its class name when it has no text."""
    head, separator, text = error.message.strip().partition(": ")
    return text if separator and head.endswith(error.cls_name) else error.cls_name


def step_error(error: Any) -> str:
    """A failed step's error as ``ExceptionClass: message``: the error the step raised (a ``dg.Failure``,
    ``LandingFileError``, …, whose message names what failed), followed by ``(caused by …)`` with the
    innermost cause when the message does not already say it."""
    chain = _chain(error)
    own = next((e for e in chain if e.cls_name not in _DAGSTER_WRAPPERS), chain[0])
    message, cause = _unqualified(own.message), chain[-1]
    if cause is own or _gist(cause) in message:
        return message
    return f"{message} (caused by {_unqualified(cause.message)})"


def _unqualified(message: str) -> str:
    """``dagster._core.definitions.events.Failure: …`` as ``Failure: …``: the class, not its module."""
    return re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", message.strip(), count=1)


def failure_alert(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    step_failures = context.get_step_failure_events()
    run = context.dagster_run
    errors = [
        step_error(event.step_failure_data.error)
        for event in step_failures
        if event.step_failure_data is not None and event.step_failure_data.error is not None
    ]
    if errors and "DagsterAssetCheckFailedError" in errors[0]:
        # "1 blocking asset check failed … raw_events: raw_events_are_valid" says neither which partition
        # nor why: each failed evaluation of that step says both (its description, e.g. the day mostly
        # quarantined), which a range run's alert otherwise leaves to the UI.
        errors[0] = _with_failed_checks(errors[0], context.instance, run.run_id, step_failures[0].step_key)
    return {
        "app": APP,
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition")
        or _range(run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)),
        "failed_steps": [event.step_key for event in step_failures],
        "error": errors[0] if errors else (context.failure_event.message or "the run failed"),
        "dagster_event": context.failure_event.event_type_value,
    }


def _with_failed_checks(
    error: str, instance: dg.DagsterInstance, run_id: str, step_key: str | None, shown: int = 3
) -> str:
    """``error`` (a blocking check's failure) followed by the failed evaluations of the step: the check, its
    partition and its description, the first ``shown`` of them."""
    failed = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if evaluation is None or evaluation.passed or entry.step_key != step_key:
            continue
        where = f"[{evaluation.partition}]" if evaluation.partition else ""
        failed.append(f"{evaluation.check_name}{where}: {evaluation.description or 'failed'}")
    if not failed:
        return error
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"{error.rstrip()} ({'; '.join(failed[:shown])}{more})"


def _range(start: str | None, end: str | None) -> str | None:
    return f"{start}...{end}" if start and end else None


@dg.run_failure_sensor(
    name=automation_name("run_failure_alert"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    # Every run of the instance: a run started by `dagster asset materialize` (a backfill, a CronJob) belongs
    # to no code location, and a sensor watching only its own location's runs never saw it fail.
    # With CHURN_APP, each app's sensor alerts about its own runs (by its asset keys or job names), not the others'.
    monitor_all_code_locations=True,
    description=(
        "Logs every failed run of the instance (of this app's, with CHURN_APP) and, when CHURN_ALERT_WEBHOOK is "
        "set, posts "
        "{app, run_id, job, partition, failed_steps, error, dagster_event} to it as JSON."
    ),
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhook) -> None:
    if not is_this_apps_run(context.dagster_run):
        return
    alert = failure_alert(context)
    context.log.error(
        f"run {alert['run_id']} of {alert['job']} failed"
        + (f" (partition {alert['partition']})" if alert["partition"] else "")
        + f" in {', '.join(alert['failed_steps']) or 'no step'}: {alert['error']}"
    )
    if alerts.enabled:
        # A webhook that refuses the alert fails the tick, so the failure shows on the sensor in the UI.
        status = alerts.post(alert)
        context.log.info(f"alert for run {alert['run_id']} posted to the webhook (HTTP {status})")
