"""Features: daily feature snapshots of the users at risk, and the churn labels resolved each day."""

import dagster as dg

from churn_assets.assets.features import checks
from churn_assets.assets.features.features import features
from churn_assets.assets.features.labels import labels

assets = [features, labels]
asset_checks = dg.load_asset_checks_from_modules([checks])
