"""The churn_assets code location: every asset, check, job, schedule, sensor and resource."""

import dagster as dg

from churn_assets import automation
from churn_assets.assets import features, ingest, ml, monitoring
from churn_assets.config import SETTINGS
from churn_assets.resources import build_resources

DOMAINS = (ingest, features, ml, monitoring)

all_assets = [a for domain in DOMAINS for a in domain.assets]
all_asset_checks = [c for domain in DOMAINS for c in domain.asset_checks]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_asset_checks,
    jobs=automation.jobs,
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=build_resources(SETTINGS),
)
