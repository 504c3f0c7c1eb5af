"""Jobs, schedules and sensors that run the graph by themselves (DESIGN.md, Automation)."""

from churn_assets.automation.jobs import daily_refresh
from churn_assets.automation.schedules import daily_refresh_schedule
from churn_assets.automation.sensors.landing_sensor import landing_sensor
from churn_assets.automation.sensors.run_failure_alert import run_failure_alert

# weekly_scoring / monthly_retraining (and the drift sensor that requests the latter) join these lists
# once their assets are in the graph: a job naming an unknown asset breaks the code location.
jobs: list = [daily_refresh]
schedules: list = [daily_refresh_schedule]
sensors: list = [landing_sensor, run_failure_alert]
