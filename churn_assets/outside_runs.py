"""Materializations recorded outside a run: what ``churn-assets erase`` rewrites and ``churn-assets adopt`` finds
stored, each partition with the metadata and the data version a run would have given it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from churn_assets.apps import asset_key
from churn_assets.resources.parquet_io_manager import data_version_tags

# On a materialization churn-assets adopt recorded: a partition stored before the instance knew it, already acted
# upon by the automation of the instance before (drift_retraining_sensor passes such drift reports over).
ADOPTED_TAG = "churn/adopted"


def record_outside_run(
    instance: dg.DagsterInstance, asset: str, key: str, metadata: Mapping[str, Any], version: str, description: str,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Records partition ``key`` of ``asset`` (DESIGN.md's name: the key is this app's) as materialized outside a
    run, with ``metadata``, the data version ``version`` (given, as a run of our IO managers gives it) and ``tags``."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=asset_key(asset), partition=key, metadata=dict(metadata), description=description,
            tags={**(tags or {}), **data_version_tags(version)},
        )
    )

