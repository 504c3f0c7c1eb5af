"""Ingest: the landing zone becomes typed events, install times and per-user daily activity."""

from churn_assets.assets.ingest.checks import raw_events_are_valid, user_daily_is_consistent
from churn_assets.assets.ingest.install_times import install_times
from churn_assets.assets.ingest.raw_events import raw_events
from churn_assets.assets.ingest.user_daily import user_daily

assets = [raw_events, install_times, user_daily]
asset_checks = [raw_events_are_valid, user_daily_is_consistent]
