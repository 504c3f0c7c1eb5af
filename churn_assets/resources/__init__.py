"""Resources of the code location: the lake, the landing zone and the model parameters.

Local and S3 deployments differ only in the URLs these resources are given (``CHURN_DATA_URL``,
``CHURN_LANDING_URL``), never in asset code. The landing zone's reading is ``landing.py``.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from churn_assets.config import WEBHOOK_VARIABLE, ChurnSettings
from churn_assets.resources.alerts import AlertWebhook
from churn_assets.resources.lake import Lake
from churn_assets.resources.landing import LandingDay, LandingZone, NotARegularFileError
from churn_assets.resources.model_io_manager import ModelIOManager
from churn_assets.resources.parquet_io_manager import PartitionedParquetIOManager


class LakeResource(dg.ConfigurableResource):
    """The lake, for artifacts that are not tables (quarantine files, models, reports)."""

    url: str = Field(description="Root of the lake: an absolute local path or s3://bucket/prefix.")

    @property
    def lake(self) -> Lake:
        return Lake(self.url)


class ChurnParameters(dg.ConfigurableResource):
    """The modelling choices of DESIGN.md: tracked event types, label horizon, training lookback."""

    event_types: list[str] = Field(description="Event types counted one by one (CHURN_EVENT_TYPES).")
    horizon_days: int = Field(default=14, description="H: a snapshot's user churned when inactive for H days after it.")
    lookback_months: int = Field(default=3, description="L: months of labels a monthly training set covers.")
    max_training_rows: int = Field(
        default=500_000,
        description=(
            "Cap on a monthly training set's rows; beyond it a seeded, stratified sample (CHURN_MAX_TRAINING_ROWS)."
        ),
    )


def build_resources(settings: ChurnSettings) -> dict[str, object]:
    """The resources for one deployment, all derived from its settings."""
    return {
        "io_manager": PartitionedParquetIOManager(base_url=settings.data_url),
        "model_io_manager": ModelIOManager(base_url=settings.data_url),
        "lake": LakeResource(url=settings.data_url),
        "landing": LandingZone(url=settings.landing_url, max_quarantined_share=settings.max_quarantined_share),
        # Read from the variable by Dagster when the sensor runs, so that the UI's resource page names the
        # variable: given as a string, the URL (its path is the webhook's token) was shown to every viewer.
        "alerts": AlertWebhook(
            url=dg.EnvVar(WEBHOOK_VARIABLE) if settings.alert_webhook_from_env else settings.alert_webhook
        ),
        "churn": ChurnParameters(
            event_types=list(settings.event_types),
            horizon_days=settings.horizon_days,
            lookback_months=settings.lookback_months,
            max_training_rows=settings.max_training_rows,
        ),
    }


__all__ = [
    "AlertWebhook",
    "ChurnParameters",
    "LakeResource",
    "LandingDay",
    "LandingZone",
    "NotARegularFileError",
    "PartitionedParquetIOManager",
    "build_resources",
]
