"""Jobs, schedules and sensors that run the graph by themselves (DESIGN.md, Automation)."""

from churn_assets.automation.jobs import daily_refresh, monthly_retraining, weekly_scoring
from churn_assets.automation.schedules import (
    daily_refresh_schedule,
    monthly_retraining_schedule,
    weekly_scoring_schedule,
)
from churn_assets.automation.sensors.drift_retraining_sensor import drift_retraining_sensor
from churn_assets.automation.sensors.landing_sensor import landing_sensor
from churn_assets.automation.sensors.run_failure_alert import run_failure_alert

jobs: list = [daily_refresh, weekly_scoring, monthly_retraining]
schedules: list = [daily_refresh_schedule, weekly_scoring_schedule, monthly_retraining_schedule]
sensors: list = [landing_sensor, drift_retraining_sensor, run_failure_alert]
