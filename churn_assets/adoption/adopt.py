"""What ``churn-assets adopt`` does: record in a new Dagster instance every partition the lake already stores.

A new instance over a lake that holds data (the trial's SQLite instance left for production's PostgreSQL one, or an
instance lost while the lake was backed up) shows every partition missing: the landing sensor requests every landing
day again and the schedules recompute or wait. Adopting the lake records each stored partition of each asset of the
code location as a materialization outside a run, with what its run would have recorded that its files tell (rows,
content hash, size; raw_events' quarantine counts and, when surely current, its ``landing_version``; predictions'
scores; drift_report's verdict; model's card), a data version as a range run over the asset gives it, and the inputs
it was built from (Dagster's provenance tags), so that nothing reads as Unsynced and a day run again over the same
bytes keeps what reads it in sync.
"""

from __future__ import annotations

import graphlib
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl

from churn_assets.apps import APP, asset_key, asset_name, automation_name, key_string
from churn_assets.assets.ingest.landing_files import ATTRIBUTES
from churn_assets.assets.ingest.raw_events import QUARANTINE_ASSET
from churn_assets.assets.ml.model import card_metadata
from churn_assets.assets.ml.predictions import highest_risk, scored_metadata
from churn_assets.assets.monitoring.drift_report import OLD_SUMMARY_FILE, SUMMARY_FILE, drift_metadata
from churn_assets.config import SETTINGS
from churn_assets.outside_runs import ADOPTED_TAG, record_outside_run
from churn_assets.partitions import partition_column
from churn_assets.resources.filesystems import is_s3, join, reaching, require_bucket
from churn_assets.resources.lake import TABLE_FILE, Lake, WrittenFile, content_hash, partition_key, some_keys
from churn_assets.resources.landing import marker_time
from churn_assets.resources.model_io_manager import CARD_FILE, ModelArtifactError, ModelIOManager, artifact_metadata
from churn_assets.resources.parquet_io_manager import provenance_tags, shared_data_version, table_metadata
from churn_assets.stops import exit_status, is_stop, uninterrupted, why
from churn_assets.threads import ordered_map

# The code version the adopted materializations' provenance names: the assets declare none, so Dagster compares only
# their inputs' versions (a run records its run id there).
CODE_VERSION = "churn-assets adopt"
DESCRIPTION = "churn-assets adopt: stored in the lake before this instance recorded it"


class AdoptionRefused(ValueError):
    """A lake that cannot be adopted into this instance as asked: nothing was recorded."""


class AdoptionStopped(RuntimeError):
    """An adoption stopped by ``error`` (a read the storage refused or failed, a write the instance refused, or Ctrl-C
    or SIGTERM) ``where`` it was. ``report`` holds the partitions recorded before it (None: it stopped before
    recording any, while it read the lake, and the instance is as it was)."""

    def __init__(self, report: AdoptionReport | None, where: str, error: BaseException):
        self.report, self.where = report, where
        self.exit_status = exit_status(error)
        super().__init__(f"stopped {where}: {why(error)}")

    def lines(self) -> list[str]:
        """What the command prints: where and why it stopped, what it recorded, and what to run next."""
        recorded = {asset: keys for asset, keys in (self.report.recorded if self.report else {}).items() if keys}
        if not recorded:
            return [str(self), "nothing was recorded (the instance is as it was): run churn-assets adopt again with "
                    "the same options"]
        return [
            str(self),
            "recorded before it (each a whole materialization):",
            *(f"  {key_string(asset)}: {len(keys)} partition(s): {keys[0]} .. {keys[-1]}"
              for asset, keys in recorded.items()),
            "the other stored partitions are not recorded yet: run churn-assets adopt again with --only-missing (and "
            "the same other options): it records the rest as one whole adoption would have",
        ]


@dataclass(frozen=True)
class Stored:
    """A partition the lake stores: its key, the file that holds it (a table, or a model's card) and when that file
    was last written (epoch seconds, from the listing)."""

    key: str
    url: str
    modified: float


@dataclass(frozen=True)
class AssetOfLocation:
    """An asset of the code location as adopting it needs it: its name (the lake's folder), partition column, the
    assets it reads (DESIGN.md's names; itself when it builds on its own previous partition), its declared columns."""

    name: str
    column: str
    parents: tuple[str, ...]
    partitions_def: dg.PartitionsDefinition | None = None
    declared: Any = None
    is_model: bool = False


@dataclass
class AdoptionReport:
    """What an adoption recorded: per asset the partition keys; and what it left for the landing sensor."""

    lake: str
    recorded: dict[str, list[str]] = field(default_factory=dict)  # asset -> keys recorded, in order
    already: dict[str, int] = field(default_factory=dict)  # asset -> partitions the instance recorded before
    unreadable: dict[str, str] = field(default_factory=dict)  # "asset[key]" -> why it was not recorded
    stale_landing: list[str] = field(default_factory=list)  # days stored before their landing day's current marker
    no_marker: list[str] = field(default_factory=list)  # raw_events days whose landing day has no _SUCCESS
    other_folders: list[str] = field(default_factory=list)  # folders of the lake's root that hold no asset of the code
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The report as the command prints it."""
        total = sum(map(len, self.recorded.values()))
        lines = [f"recorded {total} stored partition(s) of {self.lake} in the instance (DAGSTER_HOME), "
                 f"in {self.seconds:.1f} s:"]
        for asset, keys in self.recorded.items():
            span = f": {keys[0]} .. {keys[-1]}" if keys else ""
            before = f" ({self.already[asset]} recorded before, left as they were)" if self.already.get(asset) else ""
            lines.append(f"  {key_string(asset)}: {len(keys)} partition(s){span}{before}")
        for where, reason in self.unreadable.items():
            lines.append(f"  not recorded: {where}: {reason}")
        if self.other_folders:
            lines.append(f"  not recorded: {', '.join(self.other_folders)}: folders of the lake that are no asset of "
                         "this code location (written by another release of churn-assets?)")
        if self.stale_landing:
            lines.append(
                f"left for the landing sensor to refresh: {len(self.stale_landing)} day(s) of "
                f"{key_string('raw_events')} stored before their landing day's current _SUCCESS, or not surely after "
                f"it: {some_keys(self.stale_landing)} (recorded without landing_version: once turned on, the sensor "
                f"requests their {automation_name('daily_refresh')})"
            )
        else:
            lines.append("left for the landing sensor to refresh: none (every stored day was built from its "
                         "landing day's current delivery)")
        if self.no_marker:
            lines.append(f"{key_string('raw_events')} days whose landing day has no _SUCCESS under CHURN_LANDING_URL: "
                         f"{len(self.no_marker)} ({some_keys(self.no_marker)}): nothing for the sensor to refresh")
        return lines


def adopt(
    lake: Lake,
    instance: dg.DagsterInstance,
    assets: Iterable[dg.AssetsDefinition],
    landing_days: Mapping[str, str],
    only_missing: bool = False,
    without_landing: bool = False,
    new_app_keys: bool = False,
) -> AdoptionReport:
    """Records in ``instance`` every partition ``lake`` stores of each of ``assets`` (the code location's), upstream
    first. ``landing_days``: the complete landing days and their ``_SUCCESS`` versions (``LandingZone.days``), for
    raw_events' ``landing_version``. Refused, before anything is recorded, when the instance already records any
    partition of these assets (unless ``only_missing``: then only the partitions it does not record are), when the
    lake stores nothing, when the instance records the lake under another app's keys (``CHURN_APP``) unless
    ``new_app_keys`` (the app's history recorded again under this ``CHURN_APP``'s keys), or when no stored raw_events
    day has a complete landing day (a wrong ``CHURN_LANDING_URL``?) unless ``without_landing``. Stopped (a read or
    a record that failed, ``KeyboardInterrupt``): :class:`AdoptionStopped`, which says what it recorded before."""
    began = time.perf_counter()
    location = _location(assets)
    try:
        report, described = _read_lake(lake, instance, location, landing_days, only_missing, without_landing,
                                       new_app_keys)
    except AdoptionRefused:
        raise
    except BaseException as exc:  # a read the storage or the instance failed, Ctrl-C, SIGTERM
        if not is_stop(exc):
            raise
        raise AdoptionStopped(None, "before recording anything, while reading the lake", exc) from exc
    _record_all(instance, location, described, report)
    report.seconds = time.perf_counter() - began
    return report


def _read_lake(
    lake: Lake, instance: dg.DagsterInstance, location: Sequence[AssetOfLocation], landing_days: Mapping[str, str],
    only_missing: bool, without_landing: bool, new_app_keys: bool,
) -> tuple[AdoptionReport, dict[str, list[tuple[str, dict[str, Any], str]]]]:
    """What :func:`adopt` records, read before anything is (refused as it says): the report of what it will record,
    and per asset each stored partition's metadata and own version (:func:`_describe`)."""
    listings = {asset.name: _listing(lake, asset.name) for asset in location}
    stored = {asset.name: _stored_partitions(lake, asset, listings[asset.name]) for asset in location}
    outside = {
        name: [p.key for p in found if not _is_partition(location, name, p.key)] for name, found in stored.items()
    }
    stored = {name: [p for p in found if p.key not in outside[name]] for name, found in stored.items()}
    already = {asset.name: instance.get_materialized_partitions(asset_key(asset.name)) for asset in location}
    _refuse(lake, instance, location, stored, already, only_missing)
    if not new_app_keys:
        _refuse_another_app(lake, instance, location)
    if not without_landing:
        _refuse_no_landing(stored.get("raw_events", []), landing_days)
    report = AdoptionReport(lake.root_url, already={name: len(keys) for name, keys in already.items() if keys})
    report.other_folders = _other_folders(lake, location)
    report.unreadable |= {
        f"{key_string(name)}[{some_keys(keys)}]":
            "not partitions of the asset (before CHURN_START_DATE, or after today?)"
        for name, keys in outside.items() if keys
    }
    cards: dict[str, dict[str, Any]] = {}
    # Every file is read before anything is recorded: one that cannot be read leaves the instance as it was. Those of
    # partitions recorded before too (--only-missing): the data version hashes every stored partition, as one clean
    # adoption's does, and predictions find their model's card (after an adoption stopped part-way, the rest got a
    # version of their own, and a range run again over both kept neither: what reads them showed Unsynced).
    described = {}
    for asset in location:
        described[asset.name] = _describe(
            lake, asset, stored[asset.name], listings[asset.name], landing_days, cards, report, already[asset.name]
        )
        report.recorded[asset.name] = [key for key, _, _ in described[asset.name] if key not in already[asset.name]]
    return report, described


def _record_all(
    instance: dg.DagsterInstance, location: Sequence[AssetOfLocation],
    described: Mapping[str, list[tuple[str, dict[str, Any], str]]], report: AdoptionReport,
) -> None:
    """Records in ``instance`` the partitions ``report`` lists, upstream first, each with its metadata of
    ``described``, the asset's data version and its inputs' provenance; each record whole (Ctrl-C and SIGTERM held
    until it is written). Stopped: :class:`AdoptionStopped`, ``report`` then listing those recorded before it."""
    to_record, report.recorded = report.recorded, {asset.name: [] for asset in location}
    versions: dict[str, str] = {}
    pointers: dict[str, int | None] = {}
    where = "before recording anything"
    try:
        pointers |= {asset.name: _latest_storage_id(instance, asset.name) for asset in location}
        for asset in location:
            if not described[asset.name]:
                continue
            versions[asset.name] = shared_data_version({key: version for key, _, version in described[asset.name]})
            for key, metadata, _ in described[asset.name]:
                if key not in to_record[asset.name]:
                    continue
                where = f"part-way, recording {key_string(asset.name)}[{key}] in the Dagster instance"
                tags = _provenance(asset, versions, pointers)
                with uninterrupted():
                    record_outside_run(instance, asset.name, key, metadata, versions[asset.name], DESCRIPTION, tags)
                    report.recorded[asset.name].append(key)
                    where = f"part-way, after recording {key_string(asset.name)}[{key}] in the Dagster instance"
                if asset.name in asset.parents:  # the next partition builds on this one
                    pointers[asset.name] = _latest_storage_id(instance, asset.name)
            pointers[asset.name] = _latest_storage_id(instance, asset.name)
    except BaseException as exc:
        if not is_stop(exc):
            raise
        raise AdoptionStopped(report, where, exc) from exc


def _location(assets: Iterable[dg.AssetsDefinition]) -> list[AssetOfLocation]:
    """The code location's partitioned assets, each after the assets it reads."""
    found: dict[str, AssetOfLocation] = {}
    for definition in assets:
        for key in definition.keys:
            if definition.partitions_def is None:
                continue
            name = asset_name(key)
            declared = definition.metadata_by_key.get(key, {}).get("dagster/column_schema")
            found[name] = AssetOfLocation(
                name=name,
                column=partition_column(definition.partitions_def),
                parents=tuple(sorted(asset_name(dep) for dep in definition.asset_deps[key])),
                partitions_def=definition.partitions_def,
                declared=declared,
                is_model=definition.get_io_manager_key_for_asset_key(key) == "model_io_manager",
            )
    order = graphlib.TopologicalSorter(
        {name: [p for p in asset.parents if p != name and p in found] for name, asset in found.items()}
    )
    return [found[name] for name in order.static_order()]


def _is_partition(location: Sequence[AssetOfLocation], name: str, key: str) -> bool:
    """Whether ``key`` is a partition of the asset ``name`` now (not before CHURN_START_DATE, nor in the future)."""
    partitions_def = next(asset.partitions_def for asset in location if asset.name == name)
    return partitions_def is not None and partitions_def.has_partition_key(key)


def _stored_partitions(lake: Lake, asset: AssetOfLocation, listed: Mapping[str, float]) -> list[Stored]:
    """The partitions of ``asset`` the lake stores, in key order, from the listing of its folder (``listed``)."""
    file = CARD_FILE if asset.is_model else TABLE_FILE
    found = []
    for url, modified in listed.items():
        folder, _, name = url.rpartition("/")
        if name != file or folder.rpartition("/")[0] != join(lake.root_url, asset.name):
            continue  # another file, or one under a partition's folder (a model's _staging/)
        try:
            found.append(Stored(partition_key(url, asset.column), url, modified))
        except ValueError:  # a folder that names no partition of the asset's kind
            continue
    return sorted(found, key=lambda stored: stored.key)


def _listing(lake: Lake, folder: str) -> dict[str, float]:
    """Every file under ``{root}/{folder}/`` (URLs as the lake writes them) with its modification time: one listing
    (on S3, a request per 1,000 files)."""
    root = join(lake.root_url, folder)
    try:
        with reaching(root, "list"):
            listed = lake.fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    found = {}
    for path, info in listed.items():
        if info.get("type") == "directory":
            continue
        url = lake.fs.unstrip_protocol(path) if is_s3(lake.root_url) else path
        modified = info.get("LastModified") or info.get("mtime") or 0.0
        found[url] = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
    return found


def _other_folders(lake: Lake, location: Sequence[AssetOfLocation]) -> list[str]:
    """The folders of the lake's root that hold no asset of the code location (nor raw_events' quarantine): an asset
    an older release wrote and this one dropped. One listing of the root."""
    known = {asset.name for asset in location} | {QUARANTINE_ASSET}
    try:
        with reaching(lake.root_url, "list"):
            listed = lake.fs.ls(lake.root_url, detail=True)
    except FileNotFoundError:
        return []
    folders = {entry["name"].rstrip("/").rpartition("/")[2] for entry in listed if entry.get("type") == "directory"}
    return sorted(folders - known)


def _refuse(
    lake: Lake, instance: dg.DagsterInstance, location: Sequence[AssetOfLocation], stored: Mapping[str, list[Stored]],
    already: Mapping[str, set[str]], only_missing: bool,
) -> None:
    """Refuses, before anything is recorded: an instance that records partitions of the location's assets (unless
    ``only_missing``), a lake that stores none."""
    recorded = {name: keys for name, keys in already.items() if keys}
    if recorded and not only_missing:
        counts = ", ".join(f"{key_string(name)} ({len(keys)})" for name, keys in recorded.items())
        raise AdoptionRefused(
            f"the Dagster instance (DAGSTER_HOME) already records materialized partitions of this code location's "
            f"assets: {counts}. Adopting a lake is for a new instance: give an empty DAGSTER_HOME, or pass "
            "--only-missing to record only the stored partitions it does not record. Nothing was recorded"
        )
    if not any(stored.values()):
        if is_s3(lake.root_url):
            require_bucket(lake.root_url, "list")
        names = ", ".join(asset.name for asset in location)
        raise AdoptionRefused(
            f"{lake.root_url} stores no partition of any asset ({names}: no {{asset}}/date=…/{TABLE_FILE} nor "
            f"model/month=…/{CARD_FILE}): is CHURN_DATA_URL the lake to adopt? Nothing was recorded"
        )


def _refuse_no_landing(stored: Sequence[Stored], landing_days: Mapping[str, str]) -> None:
    """Refuses a lake whose stored raw_events days have no complete landing day among ``landing_days``: every day would
    be recorded without its landing version, and once ``CHURN_LANDING_URL`` is set right the landing sensor would
    request every one of them again, the work adopting is there to spare."""
    if stored and not any(partition.key in landing_days for partition in stored):
        raise AdoptionRefused(
            f"none of the {len(stored)} stored day(s) of {key_string('raw_events')} ({stored[0].key} .. "
            f"{stored[-1].key}) has a complete landing day (a _SUCCESS) under CHURN_LANDING_URL "
            f"({SETTINGS.landing_url}): is it the app's landing zone? Set it to the one its runs read; if that zone "
            "no longer holds those days, pass --without-landing (the days are recorded without a landing version, "
            "and the landing sensor requests only days landed again). Nothing was recorded"
        )


def _refuse_another_app(lake: Lake, instance: dg.DagsterInstance, location: Sequence[AssetOfLocation]) -> None:
    """Refuses a lake the instance already records under another key of the same asset (another ``CHURN_APP``, or
    none): its materializations' ``dagster/uri`` lie under this lake's root."""
    order = {asset.name: n for n, asset in enumerate(location)}
    ours = {asset_key(name) for name in order}
    others = [key for key in instance.get_asset_keys() if key not in ours and key.path[-1] in order]
    for key in sorted(others, key=lambda key: (order[key.path[-1]], key.to_user_string())):
        page = instance.fetch_materializations(key, limit=1)
        materialization = page.records[0].asset_materialization if page.records else None
        uri = materialization.metadata.get("dagster/uri") if materialization else None
        if uri is not None and str(getattr(uri, "value", uri)).startswith(lake.root_url.rstrip("/") + "/"):
            app = "/".join(key.path[:-1])
            setting = f"CHURN_APP={app}" if app else "CHURN_APP unset"
            mine = f"CHURN_APP={APP}" if APP else "CHURN_APP unset"
            raise AdoptionRefused(
                f"the instance records {key.to_user_string()} stored under {lake.root_url}: the lake is that of the "
                f"code location with {setting}, not {mine} (docs/operations.md, \"More than one app\": keys are "
                "<app>/<asset>, one lake per app): set CHURN_APP to the lake's app, or CHURN_DATA_URL to this app's "
                f"lake. If this is the lake's app, now under {mine} (its history to be recorded under the new keys), "
                "pass --new-app-keys. Nothing was recorded"
            )


def _describe(
    lake: Lake, asset: AssetOfLocation, partitions: list[Stored], listed: Mapping[str, float],
    landing_days: Mapping[str, str], cards: dict[str, dict[str, Any]], report: AdoptionReport,
    recorded_before: set[str],
) -> list[tuple[str, dict[str, Any], str]]:
    """Each partition's materialization metadata and its own version (content hash, or a model's card hash), in key
    order, each file read once, a few at a time; a model whose artifacts do not match its card, or a table that is
    not Parquet, is left out (named in ``report``). ``recorded_before``: the keys the instance records, read for the
    asset's data version alone (``report`` names none of them as left for the landing sensor, nor as not recorded)."""
    if asset.is_model:
        manager = ModelIOManager(base_url=lake.root_url)
        described = []
        for partition in partitions:
            try:
                card_data = manager.verified_card(asset.name, partition.key)
            except ModelArtifactError as exc:
                if partition.key not in recorded_before:
                    report.unreadable[f"{key_string(asset.name)}[{partition.key}]"] = str(exc)
                continue
            cards[partition.key] = json.loads(card_data)
            metadata = artifact_metadata(lake.partition_url(asset.name, asset.column, partition.key), card_data)
            metadata |= card_metadata(cards[partition.key])
            described.append((partition.key, metadata, str(metadata["card_sha256"])[:32]))
        return described
    extra = _extra_metadata(
        lake, asset, [p for p in partitions if p.key not in recorded_before], listed, landing_days, report
    )

    def describe(partition: Stored) -> tuple[str, dict[str, Any], str] | None:
        data = lake.read_bytes(partition.url)
        written = WrittenFile(url=partition.url, content_hash=content_hash(data), size_bytes=len(data))
        scan = pl.scan_parquet(io.BytesIO(data))
        try:
            shape = pl.DataFrame(schema=scan.collect_schema())
        except pl.exceptions.PolarsError as exc:
            if partition.key in recorded_before:
                return None
            report.unreadable[f"{key_string(asset.name)}[{partition.key}]"] = (
                f"{partition.url} is not a Parquet table ({exc}): materialize the partition again"
            )
            return None
        metadata = table_metadata(shape, written, asset.declared, scan.select(pl.len()).collect().item())
        if asset.name == "raw_events":  # as the run counts them: the null attributes of the day's events
            present = [column for column in ATTRIBUTES if column in shape.columns]
            nulls = scan.select(pl.col(present).null_count()).collect().row(0) if present else ()
            metadata |= {f"events_without/{column}": n for column, n in zip(present, nulls, strict=True)}
        if asset.name == "predictions":
            metadata |= _predictions_metadata(pl.read_parquet(io.BytesIO(data)), partition.key, cards)
        return partition.key, metadata | extra(partition), written.content_hash[:32]

    described = ordered_map(describe, partitions, workers=4 if is_s3(lake.root_url) else 2)
    return [found for found in described if found is not None]


def _extra_metadata(
    lake: Lake, asset: AssetOfLocation, partitions: list[Stored], listed: Mapping[str, float],
    landing_days: Mapping[str, str], report: AdoptionReport,
) -> Callable[[Stored], dict[str, Any]]:
    """A function giving each partition of ``asset`` what its run recorded beside its table that the lake tells:
    raw_events' landing version and quarantine counts (noting in ``report`` the days left for the landing sensor),
    drift_report's verdict from the summary beside it (in its folder's listing, ``listed``)."""
    if asset.name == "raw_events":
        quarantines = _quarantine_counts(lake, report)
        built_from: dict[str, str] = {}  # day -> the version of the landing delivery it was surely built from
        for partition in partitions:
            version = landing_days.get(partition.key)
            if version is None:
                report.no_marker.append(partition.key)
            elif _built_from(partition, version):
                built_from[partition.key] = version
            else:
                report.stale_landing.append(partition.key)

        def raw_events(partition: Stored) -> dict[str, Any]:
            version = built_from.get(partition.key)
            current = {"landing_version": version} if version is not None else {}
            url = lake.table_url(QUARANTINE_ASSET, "date", partition.key)
            counts = quarantines.get(url)
            if counts is None:
                return current
            return current | {
                "quarantined": sum(counts.values()),
                **{f"quarantined/{reason}": n for reason, n in sorted(counts.items())},
                "quarantine_uri": url,
            }

        return raw_events
    if asset.name == "drift_report":
        def drift_report(partition: Stored) -> dict[str, Any]:
            folder = lake.partition_url(asset.name, asset.column, partition.key)
            for name, old_names in ((SUMMARY_FILE, False), (OLD_SUMMARY_FILE, True)):  # a partition before 2026-12-01
                url = f"{folder}/{name}"
                if url in listed:
                    return drift_metadata(json.loads(lake.read_bytes(url)), folder, old_names)
            return {}

        return drift_report
    return lambda partition: {}


def _built_from(partition: Stored, marker_version: str) -> bool:
    """Whether raw_events' stored ``partition`` was surely built from the landing delivery whose ``_SUCCESS`` has
    ``marker_version``: written after that marker (strictly: S3 keeps times to the second). A partition written
    before it was built from an earlier delivery (the day was re-delivered since) and is left for the sensor."""
    return partition.modified > marker_time(marker_version)


def _quarantine_counts(lake: Lake, report: AdoptionReport) -> dict[str, dict[str, int]]:
    """Each stored quarantine table (URL) with its rows per reason: one listing, then the reason column alone (file
    by file when one is not Parquet: it is named in ``report``, its day recorded without quarantine counts)."""
    urls = lake.partition_tables(QUARANTINE_ASSET, "date")
    try:
        return {url: {} for url in urls} | lake.rows_by_value(urls, "reason")
    except pl.exceptions.PolarsError:  # a file that is not Parquet: which one, read one at a time
        found: dict[str, dict[str, int]] = {}
        for url in urls:
            try:
                found[url] = lake.rows_by_value([url], "reason").get(url, {})
            except pl.exceptions.PolarsError as exc:
                report.unreadable[f"{QUARANTINE_ASSET}[{partition_key(url, 'date')}]"] = (
                    f"{url} is not a Parquet table ({exc}): its raw_events day is recorded without quarantine counts"
                )
        return found


def _predictions_metadata(scored: pl.DataFrame, day: str, cards: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """What a day of predictions recorded of its scores: with the card of the model that scored them when the lake
    still holds it (the month's model of the version the scores name), else what the table alone says."""
    card = cards.get(day[:7])
    versions = scored.get_column("model_version").unique().to_list() if "model_version" in scored.columns else []
    metadata: dict[str, Any] = {"users": scored.height, "highest_risk": highest_risk(scored)}
    if versions:
        metadata["model_version"] = versions[0]
    if card is not None and versions == [card.get("model_version")]:
        metadata = scored_metadata(scored, card) | metadata
    return metadata


def _provenance(
    asset: AssetOfLocation, versions: Mapping[str, str], pointers: Mapping[str, int | None]
) -> dict[str, str]:
    """The tags a run gives a materialization of what its inputs were (Dagster's data provenance): each asset read
    at its data version and its latest event's storage id when it was read. Without them Dagster judges an input
    newer by time, and a day run again over the same bytes showed everything that reads it as Unsynced."""
    inputs = {asset_key(parent): (versions.get(parent), pointers.get(parent)) for parent in asset.parents}
    return provenance_tags(CODE_VERSION, inputs) | {ADOPTED_TAG: "true"}


def _latest_storage_id(instance: dg.DagsterInstance, name: str) -> int | None:
    records = instance.fetch_materializations(asset_key(name), limit=1).records
    return records[0].storage_id if records else None
