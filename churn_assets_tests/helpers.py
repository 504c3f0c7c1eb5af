"""Test helpers for features, labels and training_set: hand-made lakes and in-process materializations."""

import datetime as dt
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import dagster as dg
import polars as pl

from churn_assets.assets import features as features_domain
from churn_assets.assets import ingest as ingest_domain
from churn_assets.assets.ingest.install_times import INSTALL_TIMES_SCHEMA
from churn_assets.assets.ingest.user_daily import event_type_column, user_daily_schema
from churn_assets.config import DEFAULT_EVENT_TYPES
from churn_assets.partitions import daily_partitions
from churn_assets.resources.filesystems import polars_storage_options
from churn_assets.resources.lake import Lake, partition_key, partition_value

START = daily_partitions.start.date()
INGEST_AND_FEATURES = [*ingest_domain.assets, *features_domain.assets, *features_domain.asset_checks]


def day(n: int) -> dt.date:
    """The n-th day after the first partition (day(0) is the start date)."""
    return START + dt.timedelta(days=n)


def user_day_row(user_id: str, **values: object) -> dict:
    """One ``user_daily`` row: zeros and the attributes of a plain user unless ``values`` say otherwise.

    ``events`` (default 10) sets ``n_events``; per-type counts are given by event type, e.g.
    ``paywall_view=3``.
    """
    row: dict[str, object] = {name: 0 for name in user_daily_schema(list(DEFAULT_EVENT_TYPES))}
    row.update(user_id=user_id, n_events=values.pop("events", 10), n_sessions=1, session_minutes=5.0,
               revenue=0.0, platform="ios", country="US", app_version="1.0", days_since_install=0)
    for key, value in values.items():
        column = event_type_column(key) if key in DEFAULT_EVENT_TYPES else key
        row[column] = value
    return row


def write_user_daily_history(
    lake_url: str,
    activity: Mapping[str, Mapping[dt.date, Mapping[str, object]]],
    last_day: dt.date,
    installs: Mapping[str, dt.datetime] | None = None,
) -> None:
    """Writes ``user_daily`` and ``install_times`` partitions for every day from the start to ``last_day``
    (inclusive), as the ingest assets would: ``activity[user][day]`` = that day's values (see
    :func:`user_day_row`); a user's install time defaults to 08:00 UTC on their first active day.
    """
    lake = Lake(lake_url)
    installs = dict(installs or {})
    for user, days in activity.items():
        installs.setdefault(user, dt.datetime.combine(min(days), dt.time(8), tzinfo=dt.UTC))
    schema = user_daily_schema(list(DEFAULT_EVENT_TYPES))
    current = START
    while current <= last_day:
        rows = [
            user_day_row(user, **values) | {"days_since_install": (current - installs[user].date()).days}
            for user, days in sorted(activity.items())
            for d, values in days.items()
            if d == current
        ]
        lake.write_table(
            lake.table_url("user_daily", "date", current.isoformat()),
            pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema),
        )
        seen = []
        for user, days in sorted(activity.items()):
            active = [d for d in days if d <= current]
            if active:
                seen.append(
                    {"user_id": user, "install_time": installs[user],
                     "first_active_date": min(active), "last_active_date": max(active)}
                )
        lake.write_table(
            lake.table_url("install_times", "date", current.isoformat()),
            pl.DataFrame(seen, schema=INSTALL_TIMES_SCHEMA, orient="row") if seen
            else pl.DataFrame(schema=INSTALL_TIMES_SCHEMA),
        )
        current += dt.timedelta(days=1)


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def materialize_selected(
    selection: Iterable[str],
    resources: dict,
    instance: dg.DagsterInstance,
    first: str,
    last: str | None = None,
    assets: list | None = None,
) -> dg.ExecuteInProcessResult:
    """Materializes ``selection`` (asset names; upstream assets are read from the lake) for one partition or
    the range ``first..last`` in one run, with the blocking checks of the selected assets."""
    assets = INGEST_AND_FEATURES if assets is None else assets
    selected = dg.AssetSelection.assets(*selection)  # includes the checks of the selected assets
    if last is None:
        return dg.materialize(assets, resources=resources, instance=instance, partition_key=first, selection=selected)
    return dg.materialize(
        assets, resources=resources, instance=instance, tags=range_tags(first, last), selection=selected
    )


def read_partition(lake_url: str, asset: str, key: str | dt.date, column: str = "date") -> pl.DataFrame:
    key = key.isoformat() if isinstance(key, dt.date) else key
    lake = Lake(lake_url)
    return pl.read_parquet(lake.table_url(asset, column, key))


def delete_partitions_after(lake_url: str, last_day: dt.date) -> int:
    """Removes every daily partition later than ``last_day`` of every asset in a local lake; returns how many."""
    removed = 0
    for folder in Path(lake_url).glob("*/date=*"):
        if dt.date.fromisoformat(folder.name.removeprefix("date=")) > last_day:
            shutil.rmtree(folder)
            removed += 1
    return removed


def evaluations_by_partition(result: dg.ExecuteInProcessResult, check_name: str) -> dict:
    """The evaluations of ``check_name`` in a run, by partition: exactly one for each partition it checked
    (a range run evaluates each day, or month, on its own), none without a partition."""
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name == check_name]
    by_partition = {e.partition: e for e in evaluations}
    assert len(by_partition) == len(evaluations) and None not in by_partition
    return by_partition


def scan_tables(lake: Lake, urls: list[str], partition: dict[str, pl.DataType]) -> pl.LazyFrame:
    """What the lake stores at the partition tables ``urls``, read straight from the store (no copies, no links),
    with the partition column (``partition``: its name and type) from each table's folder name; the first file's
    columns are the scan's, as the IO manager's inputs have them."""
    ((column, dtype),) = partition.items()
    options = polars_storage_options(urls[0])
    schema = lake.table_schema(urls[0])
    tables = [
        pl.scan_parquet(url, glob=False, schema=schema, extra_columns="ignore", storage_options=options)
        .with_columns(partition_value(partition_key(url, column), dtype).alias(column))
        for url in urls
    ]
    return pl.concat(tables, how="vertical")


def data_versions(instance: dg.DagsterInstance, asset: str, keys: Iterable[str]) -> dict[str, str | None]:
    """The data version Dagster records for each of ``keys`` of ``asset`` (its latest materialization's)."""
    found = {}
    for key in keys:
        record = instance.get_latest_data_version_record(dg.AssetKey(asset), partition_key=key)
        found[key] = None if record is None else record.event_log_entry.tags.get("dagster/data_version")
    return found


def stale_partitions(instance: dg.DagsterInstance, assets: list, asset: str, keys: Iterable[str]) -> list[str]:
    """The ``keys`` of ``asset`` whose stale status is not fresh: what the UI shows as "Unsynced", from Dagster's
    own resolver (``CachingStaleStatusResolver``, which the webserver's GraphQL answers from) over ``assets``."""
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    resolver = get_stale_status_resolver(instance, assets)
    return [key for key in keys if resolver.get_status(dg.AssetKey(asset), key) != StaleStatus.FRESH]


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's error message in ``result``, with its causes: what the UI shows of a failed run."""
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)
