"""The churn_assets code location: every asset, check, job, schedule, sensor and resource."""

import dagster as dg

from churn_assets import automation
from churn_assets.apps import with_app_keys
from churn_assets.assets import features, ingest, ml, monitoring
from churn_assets.config import SETTINGS
from churn_assets.resources import build_resources

DOMAINS = (ingest, features, ml, monitoring)

# Under CHURN_APP's prefix when it is set (apps.py): the assets and the checks together, since checks read assets.
_assets_and_checks = with_app_keys([d for domain in DOMAINS for d in (*domain.assets, *domain.asset_checks)])
all_assets = [d for d in _assets_and_checks if not isinstance(d, dg.AssetChecksDefinition)]
all_asset_checks = [d for d in _assets_and_checks if isinstance(d, dg.AssetChecksDefinition)]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_asset_checks,
    jobs=automation.jobs,
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=build_resources(SETTINGS),
    # Every run in one process: the jobs, and what the UI, `dagster asset materialize` and backfills launch
    # for a selection of assets. A run's steps follow one another anyway (each asset reads its upstream's
    # partitions) and each already keeps both cores busy; one process per step costs ~8 s a run on 2 cores
    # (each step imports the code location again).
    executor=dg.in_process_executor,
)
