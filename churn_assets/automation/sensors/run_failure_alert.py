"""``run_failure_alert``: every failed run is logged and, when ``CHURN_ALERT_WEBHOOK`` is set, posted there.

The JSON posted: ``{"run_id", "job", "partition", "failed_steps", "error", "dagster_event"}`` — the error
is the root cause of the first failed step (or the run's own failure message when no step failed, e.g. a
run worker that crashed). On by default: an alert that needs someone to turn it on is no alert.
"""

from typing import Any

import dagster as dg

from churn_assets.resources.alerts import AlertWebhook


def _root_cause(error: Any) -> str:
    """The innermost error of a Dagster error chain (user code errors are wrapped by Dagster's own),
    as ``module.ExceptionClass: message``."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def failure_alert(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    step_failures = context.get_step_failure_events()
    run = context.dagster_run
    errors = [
        _root_cause(event.step_failure_data.error)
        for event in step_failures
        if event.step_failure_data is not None and event.step_failure_data.error is not None
    ]
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition")
        or _range(run.tags.get("dagster/asset_partition_range_start"), run.tags.get("dagster/asset_partition_range_end")),
        "failed_steps": [event.step_key for event in step_failures],
        "error": errors[0] if errors else (context.failure_event.message or "the run failed"),
        "dagster_event": context.failure_event.event_type_value,
    }


def _range(start: str | None, end: str | None) -> str | None:
    return f"{start}...{end}" if start and end else None


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs every failed run and posts {run_id, job, failed_steps, error} to CHURN_ALERT_WEBHOOK when it is set.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhook) -> None:
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
