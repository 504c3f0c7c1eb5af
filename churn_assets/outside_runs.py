"""Materializations recorded outside a run: what ``churn-assets erase`` rewrites and ``churn-assets adopt`` finds
stored, each partition with the metadata and the data version a run would have given it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl

from churn_assets.apps import asset_key
from churn_assets.assets.ml.predictions import highest_risk
from churn_assets.resources.lake import WrittenFile
from churn_assets.resources.parquet_io_manager import data_version_tags, table_metadata

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


def record_rewritten(
    instance: dg.DagsterInstance, asset: str, key: str, previous: dg.EventLogRecord | None, table: pl.DataFrame,
    written: WrittenFile, removed: int, version: str,
) -> None:
    """Records the rewritten partition ``key`` of ``asset`` as a materialization outside a run: the metadata of its
    latest one (the run's counts, raw_events' landing_version, which the landing sensor compares) with the table's
    own (rows, content hash, size) and ``erased_rows``; its data version ``version``. ``predictions``'
    ``highest_risk`` is that of the rewritten table."""
    before = dict(previous.asset_materialization.metadata) if previous and previous.asset_materialization else {}
    metadata = before | table_metadata(table, written) | {"erased_rows": removed}
    metadata.pop("dagster/column_schema", None)  # the declared one holds (the columns are those of the run)
    if asset == "predictions" and "highest_risk" in before:
        metadata |= {"users": table.height, "highest_risk": highest_risk(table)}
    record_outside_run(
        instance, asset, key, metadata, version, f"churn-assets erase: {removed} row(s) of erased users taken out"
    )
