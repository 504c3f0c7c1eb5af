"""Monitoring: how far each day's features and scores drift from what the model was trained on."""

from churn_assets.assets.monitoring.checks import features_have_not_drifted
from churn_assets.assets.monitoring.drift_report import drift_report

assets = [drift_report]
asset_checks = [features_have_not_drifted]
