"""Features: daily feature snapshots of the users at risk, and the churn labels resolved each day."""

from churn_assets.assets.features.checks import features_cover_users_at_risk, labels_match_snapshots
from churn_assets.assets.features.features import features
from churn_assets.assets.features.labels import labels

assets = [features, labels]
asset_checks = [features_cover_users_at_risk, labels_match_snapshots]
