"""``drift_retraining_sensor``: a drift report over the threshold asks for a retraining, with a cool-down.

Each tick reads the ``drift_report`` materializations recorded since the storage id in its cursor — the
newest ``reports_per_tick`` of them when there are more: a backlog (the sensor turned on over a history of
reports) is passed over, so that an old month is not retrained in place of the current one — and moves its
cursor past all of them. A report is over the threshold when its share of drifted columns reaches
``threshold`` (or, for a report without a share, when it says the dataset drifted). Among the reports read
that are over the threshold, the latest day wins: ``monthly_retraining`` is requested for its month, unless
the previous request was less than ``cooldown`` ago. Cursor: ``{"after": storage id, "last_request": epoch
seconds or null}``. A report ``churn-assets adopt`` recorded (a partition stored before the instance) is read past,
never acted upon: the instance that ran it had its own sensor, and a new one would retrain an old month. So is a
report of a day with too few users to conclude (``too_few_rows``, under ``CHURN_DRIFT_MIN_ROWS``): on a handful of
users most columns differ from the reference by chance, which says nothing of the population.
"""

import datetime as dt
import json
import time
from typing import Any

import dagster as dg

from churn_assets.apps import asset_key, automation_name, key_string
from churn_assets.assets.monitoring.drift_report import had_too_few_rows
from churn_assets.automation.jobs import monthly_retraining
from churn_assets.config import SETTINGS
from churn_assets.outside_runs import ADOPTED_TAG

DRIFT_REPORT = asset_key("drift_report")
# Metadata keys a drift report may carry its verdict under, most specific first.
SHARE_KEYS = ("share_of_drifted_columns", "drift_share", "drifted_share")
VERDICT_KEYS = ("dataset_drift", "drift_detected")


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def drift_share(metadata: dict[str, Any]) -> float | None:
    """The report's share of drifted columns, 1.0/0.0 for a bare verdict, None when it says neither."""
    for key in SHARE_KEYS:
        if key in metadata and _value(metadata[key]) is not None:
            return float(_value(metadata[key]))
    for key in VERDICT_KEYS:
        if key in metadata and _value(metadata[key]) is not None:
            return 1.0 if bool(_value(metadata[key])) else 0.0
    return None


def _days(span: dt.timedelta) -> str:
    """A cool-down as people say it: "7 days", "1 day", "12 hours"."""
    if span.days and not span.seconds:
        return f"{span.days} day{'s' if span.days != 1 else ''}"
    hours = span.total_seconds() / 3600
    return f"{hours:g} hours"


def build_drift_retraining_sensor(
    threshold: float = SETTINGS.drift_threshold,
    cooldown: dt.timedelta = dt.timedelta(days=SETTINGS.retraining_cooldown_days),
    minimum_interval_seconds: int = 300,
    reports_per_tick: int = 500,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=automation_name("drift_retraining_sensor"),
        job=monthly_retraining,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            f"Requests {monthly_retraining.name} for the month of a {key_string('drift_report')} whose share of "
            f"drifted columns is at least {threshold:g}, at most once per {_days(cooldown)}; a report of fewer users "
            "than CHURN_DRIFT_MIN_ROWS concludes nothing and is passed over."
        ),
    )
    def drift_retraining_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {"after": None, "last_request": None}
        records = _newest_reports(context, state["after"], reports_per_tick)
        if not records:
            return dg.SensorResult(skip_reason=dg.SkipReason("no new drift report"))
        state["after"] = records[0].storage_id

        over, adopted, too_few = [], 0, 0
        for record in records:
            materialization = record.asset_materialization
            if materialization and (materialization.tags or {}).get(ADOPTED_TAG):
                adopted += 1  # history churn-assets adopt recorded: the instance before acted upon it
                continue
            if materialization and had_too_few_rows(materialization.metadata):
                too_few += 1  # a day of a few users: its drifted columns are chance
                continue
            share = drift_share(dict(materialization.metadata)) if materialization else None
            if share is not None and share >= threshold and materialization.partition:
                over.append((materialization.partition, share, record.storage_id))
        if not over:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{len(records)} new drift report(s), none at or over {threshold:g}"
                    + (f" ({adopted} recorded by churn-assets adopt, passed over whatever their share)"
                       if adopted else "")
                    + (f" ({too_few} of too few users to conclude, under CHURN_DRIFT_MIN_ROWS, passed over "
                       "whatever their share)" if too_few else "")
                ),
                cursor=json.dumps(state),
            )

        day, share, storage_id = max(over)
        now = time.time()
        if state["last_request"] is not None and now - state["last_request"] < cooldown.total_seconds():
            last = dt.datetime.fromtimestamp(state["last_request"], dt.UTC).isoformat(timespec="seconds")
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"drift report of {day} has {share:.0%} drifted columns, but a retraining was requested "
                    f"at {last}, within the cool-down of {_days(cooldown)}"
                ),
                cursor=json.dumps(state),
            )
        state["last_request"] = now
        month = day[:7]
        context.log.info(f"drift report of {day}: {share:.0%} drifted columns; requesting retraining of {month}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"drift:{day}:{storage_id}",
                    partition_key=month,
                    tags={"churn/drift_day": day, "churn/drift_share": f"{share:.3f}"},
                )
            ],
            cursor=json.dumps(state),
        )

    return drift_retraining_sensor


def _newest_reports(context: dg.SensorEvaluationContext, after: int | None, limit: int) -> list[Any]:
    """The newest ``limit`` drift report records after storage id ``after``, newest first; logs when older
    unread ones are passed over."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=after), limit=limit + 1, ascending=False
    ).records
    if len(records) > limit:
        context.log.info(f"more than {limit} unread drift reports: the newest {limit} are read, older ones passed over")
    return list(records[:limit])


drift_retraining_sensor = build_drift_retraining_sensor()
