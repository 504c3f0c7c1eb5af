"""The jobs automation launches: each one a slice of the asset graph, run in one process per run (the
code location's executor, ``definitions.py``).

Every asset has ``BackfillPolicy.single_run()``, so a range of partitions is one run, not one per day. A job's
partitions are its assets' (daily, or monthly for retraining): Dagster infers them from the selection.
"""

import dagster as dg

from churn_assets.apps import asset_key, automation_name

# Runs of daily_refresh and of monthly_retraining carry this tag; dagster.yaml lets one run per value
# run at a time, in the order they were queued, because install_times[D] reads install_times[D-1] and
# model[M] reads model[M-1] (a later partition must not overtake). The weekly_scoring schedule puts a run in
# daily_refresh's lane when the Sunday's refresh is queued or running there, so that it waits for it.
SERIAL_TAG = "churn/serial"

daily_refresh = dg.define_asset_job(
    name=automation_name("daily_refresh"),
    selection=dg.AssetSelection.groups("ingest", "features"),
    # Job tags (not run_tags): Dagster also puts them on the runs of a job backfill, not only on runs
    # started by the schedule, the sensor or the launchpad.
    tags={SERIAL_TAG: automation_name("daily_refresh")},
    description=(
        "Export days through the daily graph: raw_events → install_times → user_daily → features → labels, "
        "with their checks. One day a run (the schedule's yesterday, each day the landing sensor finds), or a "
        "range of days in one run (the schedule's catch-up after missed ticks, a backfill)."
    ),
)

weekly_scoring = dg.define_asset_job(
    name=automation_name("weekly_scoring"),
    selection=dg.AssetSelection.assets(asset_key("predictions"), asset_key("drift_report")),
    description="Churn scores and the drift report of one day (the schedule takes the Sunday of each week).",
)

monthly_retraining = dg.define_asset_job(
    name=automation_name("monthly_retraining"),
    selection=dg.AssetSelection.assets(asset_key("training_set"), asset_key("model")),
    # model[M] reads model[M-1] (its champion): months run one at a time, in the order they were queued.
    tags={SERIAL_TAG: automation_name("monthly_retraining")},
    description="The training set and the (challenger-vs-champion) model of one month.",
)
