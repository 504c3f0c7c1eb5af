"""Model artifacts in the lake, and the IO manager that stores and verifies them.

One ``model`` partition is a folder ``{base_url}/model/month=YYYY-MM/`` holding

* ``model.ubj`` — the booster in XGBoost's own UBJSON format;
* ``reference_sample.parquet`` — feature rows (and their scores) the drift report compares a day against;
* ``holdout_report.html`` — the holdout report: the scorers' metrics, risk bands, ROC, PR and calibration charts;
* ``model_card.json`` — features and categories, threshold, risk bands, metrics, training window, data
  versions, and the sha256 of each file above.

Each file is atomic by itself, a set of four is not: a write stages the whole new set in
``{folder}/_staging/`` (hive readers skip names starting with ``_``) before it replaces the folder's files,
and a reader that meets a card and files from different writes (their hashes disagree) reads the staged
set instead: a reader sees the old model or the new one, during a write or after a killed one.

Nothing loaded back is a pickle: the booster is parsed by XGBoost from UBJSON after its bytes matched
the card, the sample is Parquet and the card JSON. A file that is not what its card says, or not an
XGBoost model at all (a pickle renamed ``model.ubj``), is refused with an error naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from churn_assets.apps import asset_name, key_string
from churn_assets.resources.lake import Lake
from churn_assets.resources.parquet_io_manager import (
    MissingPartitionError,
    PartitionStream,
    _keys_to_read,
    _reads_itself,
    each_partition_once,
    record_stored_before_failure,
    set_data_version,
)

MODEL_FILE = "model.ubj"
REFERENCE_FILE = "reference_sample.parquet"
REPORT_FILE = "holdout_report.html"
CARD_FILE = "model_card.json"
CARD_FORMAT = 1
STAGING = "_staging"
_PICKLE_PROTOCOL_MARK = b"\x80"


class ModelArtifactError(Exception):
    """A stored model that cannot be trusted: missing, torn, altered, or not an XGBoost model."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_version(month: str, model_bytes: bytes, threshold: float, risk_bands: dict, features: list[dict]) -> str:
    """The name a model scores under (``predictions.model_version``, the drift summary's): the month it was
    trained for and a hash of what decides a user's row, the booster's bytes with its threshold, risk-band
    cut-offs and feature categories. A month trained again with another target recall has the same booster
    and other bands: another version."""
    scoring = {
        "threshold": threshold,
        "risk_bands": risk_bands,
        "categories": {f["name"]: f.get("categories") for f in features},
    }
    return f"{month}-{sha256(model_bytes + json.dumps(scoring, sort_keys=True).encode())[:8]}"


@dataclass(frozen=True)
class ChurnModel:
    """A model partition in memory: the booster's bytes, its card, the reference sample, the holdout report.

    Artifacts are kept as the bytes that are (or will be) stored, so a champion carried forward to the
    next month is written back byte for byte.
    """

    model_bytes: bytes
    card: dict[str, Any]
    reference_parquet: bytes
    holdout_report_html: bytes
    _booster: Any = field(default=None, repr=False, compare=False)

    @cached_property
    def booster(self) -> Any:
        return self._booster if self._booster is not None else load_booster(self.model_bytes, MODEL_FILE)

    @cached_property
    def reference_sample(self) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.reference_parquet))

    @property
    def version(self) -> str:
        return self.card["model_version"]

    def features_missing_from(self, columns: Iterable[str]) -> list[str]:
        """The model's features, in its order, that ``columns`` lack."""
        present = set(columns)
        return [f["name"] for f in self.card["features"] if f["name"] not in present]

    def with_card(self, card: dict[str, Any]) -> ChurnModel:
        """The same artifacts under another card (a champion carried forward to a new month)."""
        return replace(self, card=card)


def load_booster(data: bytes, where: str) -> Any:
    """An XGBoost booster parsed from UBJSON bytes; anything else (a pickle above all) is refused."""
    import xgboost as xgb  # imported where used: keeps loading the code location fast

    if data[:1] == _PICKLE_PROTOCOL_MARK and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ModelArtifactError(f"{where} is a Python pickle, not an XGBoost model: the platform never loads pickles")
    if data[:1] != b"{":
        raise ModelArtifactError(f"{where} is not an XGBoost UBJSON model (it starts with {data[:8]!r})")
    booster = xgb.Booster(params={"nthread": 2})
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelArtifactError(f"{where} is not a valid XGBoost model: {first_line}") from exc
    return booster


def card_problems(card: dict[str, Any]) -> list[str]:
    """What makes ``card`` unfit to score with, as no trained model's card should be (``model_artifacts_are_sound``
    checks each one written): a threshold outside (0, 1), risk-band cut-offs missing or not rising, no label
    horizon, a categorical feature without its categories. Empty when there is nothing to say. (A card edited
    by hand after it was stored is refused as it loads: :func:`_verify_card`.)"""
    from churn_assets.assets.ml.scoring import RISK_BANDS  # where used: scoring imports XGBoost

    def number(value: Any) -> bool:  # JSON's NaN and Infinity, which Python's json reads, are not numbers here
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    found = []
    threshold = card.get("threshold")
    if not (number(threshold) and 0.0 < threshold < 1.0):
        found.append(f"threshold {threshold!r} outside (0, 1)")
    bands = card.get("risk_bands")
    bands = bands if isinstance(bands, dict) else {}
    if missing := [band for band in RISK_BANDS if not number(bands.get(band))]:
        found.append(f"risk-band cut-offs {missing} missing or not numbers: {card.get('risk_bands')!r}")
    elif not all(bands[low] <= bands[high] for low, high in zip(RISK_BANDS, RISK_BANDS[1:])):
        found.append(f"risk-band cut-offs do not rise: {bands}")
    label = card.get("label") if isinstance(card.get("label"), dict) else {}
    horizon = label.get("horizon_days")
    if not (number(horizon) and horizon == int(horizon) and horizon >= 1):
        found.append(f"label horizon_days {horizon!r} is not a number of days")
    uncategorised = [
        f.get("name")
        for f in card.get("features", [])
        if f.get("kind") == "categorical"
        and not (f.get("categories") and all(isinstance(c, str) for c in f["categories"]))
    ]
    if uncategorised:
        found.append(f"categorical features {uncategorised} without their categories")
    return found


def _verify_card(card: dict[str, Any], model_bytes: bytes, card_url: str) -> None:
    """Refuses a card whose threshold, risk-band cut-offs or categories are not those its ``model_version``
    hashes with ``model_bytes``: a card edited by hand, which would band and score every user differently
    from the predictions already stored under that version. A card stored before the version hashed them
    (the booster's hash alone) cannot be checked so: ``predictions`` still refuses one unfit to score with
    (``require_sound_cards``)."""
    month, stored = card.get("trained_for_month"), card.get("model_version")
    hashed = model_version(month, model_bytes, card.get("threshold"), card.get("risk_bands"), card["features"])
    if stored not in (hashed, f"{month}-{sha256(model_bytes)[:8]}"):
        raise ModelArtifactError(
            f"{card_url}: its threshold, risk-band cut-offs or feature categories are not the ones its model_version "
            f"{stored} was stored with (edited by hand?); refusing to load it. Restore the card, or materialize "
            f"{key_string('model')}[{card.get('month')}] again."
        )


def card_bytes(card: dict[str, Any]) -> bytes:
    return (json.dumps(card, indent=2, allow_nan=False) + "\n").encode()


def artifact_files(churn_model: ChurnModel) -> dict[str, bytes]:
    """The files of a partition holding ``churn_model``, in the order they are written: the card, which
    lists the other files' hashes, last."""
    artifacts = {
        MODEL_FILE: churn_model.model_bytes,
        REFERENCE_FILE: churn_model.reference_parquet,
        REPORT_FILE: churn_model.holdout_report_html,
    }
    card = {
        **churn_model.card,
        "artifacts": {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in artifacts.items()},
    }
    return {**artifacts, CARD_FILE: card_bytes(card)}


def artifact_metadata(folder: str, card_data: bytes) -> dict[str, Any]:
    """What a ``model`` partition's materialization records of its artifacts in ``folder``, from its card's bytes
    (``card_sha256`` is the partition's data version)."""
    card = json.loads(card_data)
    return {
        "dagster/uri": folder,
        "model_version": card["model_version"],
        "model_sha256": card["artifacts"][MODEL_FILE]["sha256"],
        "card_sha256": sha256(card_data),
        "model_card": dg.MetadataValue.path(f"{folder}/{CARD_FILE}"),
        "holdout_report": dg.MetadataValue.path(f"{folder}/{REPORT_FILE}"),
    }


class ModelIOManager(dg.ConfigurableIOManager):
    """Stores ``model`` partitions as artifact folders and loads them back verified.

    An output is a :class:`ChurnModel` (one partition) or a :class:`PartitionStream` of
    ``(month, ChurnModel)``. An input arrives as ``{month: ChurnModel}`` for every upstream month (a
    daily asset in a range run spanning months gets several), or None when the mapping yields none.
    """

    base_url: str = Field(description="Root of the lake: an absolute local path or s3://bucket/prefix.")

    @property
    def lake(self) -> Lake:
        return Lake(self.base_url)

    def folder(self, asset: str, key: str) -> str:
        return self.lake.partition_url(asset, "month", key)

    # -- outputs ----------------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: ChurnModel | PartitionStream | None) -> None:
        if obj is None:
            return
        asset = asset_name(context.asset_key)
        keys = list(context.asset_partition_keys)
        pairs: Iterable[tuple[str, ChurnModel]] = [(keys[0], obj)] if isinstance(obj, ChurnModel) else obj
        written: dict[str, dict[str, Any]] = {}
        try:
            for key, churn_model in each_partition_once(asset, keys, pairs):
                metadata = written[key] = self.write(asset, key, churn_model)
                if len(keys) == 1:
                    context.add_output_metadata(metadata)
                else:
                    context.step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)
        except BaseException:
            record_stored_before_failure(context, written, version_key="card_sha256")
            raise
        set_data_version(context, written, version_key="card_sha256")

    def write(self, asset: str, key: str, churn_model: ChurnModel) -> dict[str, Any]:
        """Writes one partition's artifacts, never partially (:meth:`writing`); returns the materialization
        metadata."""
        folder = self.folder(asset, key)
        files = artifact_files(churn_model)
        for _ in self.writing(folder, files):
            pass
        return artifact_metadata(folder, files[CARD_FILE])

    def writing(self, folder: str, files: dict[str, bytes]) -> Iterator[str]:
        """Writes ``files`` (:func:`artifact_files`) into ``folder`` one file at a time, yielding the URL of
        each file written or removed: a test stops there, as a killed process would.

        The set is staged whole in ``{folder}/_staging/``, card last, then replaces the folder's files, card
        last, then the staging is removed, its card first. At every step :meth:`read` finds a whole set:
        the folder's old one until the staged set is complete, then the staged one until the folder's
        files are all new. A complete staged set met at the start is a write killed while replacing the
        folder's files: it is finished first, since staging over it would leave no whole set.
        """
        staging = f"{folder}/{STAGING}"
        try:
            _, unfinished = self._verified_files(staging)
        except (ModelArtifactError, FileNotFoundError):
            unfinished = {}
        for where, written in ((folder, unfinished), (staging, files), (folder, files)):
            for name, data in written.items():
                self.lake.write_bytes(f"{where}/{name}", data)
                yield f"{where}/{name}"
        for url in (f"{staging}/{CARD_FILE}", staging):
            self.lake.remove(url)
            yield url

    # -- inputs -----------------------------------------------------------------------------------
    def verified_card(self, asset: str, key: str) -> bytes:
        """The stored card of partition ``key`` as its bytes, once every file it lists matched its hash (the booster
        not parsed): ModelArtifactError when one does not, FileNotFoundError when there is no card."""
        _, contents = self._verified_files(self.folder(asset, key))
        return contents[CARD_FILE]

    def load_input(self, context: dg.InputContext) -> dict[str, ChurnModel] | None:
        asset = asset_name(context.asset_key)
        models: dict[str, ChurnModel] = {}
        absent: list[str] = []
        for key in _keys_to_read(context):
            try:
                models[key] = self.read(asset, key)
            except MissingPartitionError:
                # A model's own previous month is its champion. The first months have too few labels to train
                # a model, so the first model that exists has no predecessor: none stored means no champion.
                if not _reads_itself(context):
                    raise
                absent.append(key)
        if absent:
            context.log.info(f"no stored {asset} for {sorted(absent)}: no champion to compare with")
        return models or None

    def read(self, asset: str, key: str) -> ChurnModel:
        """One partition's artifacts, each checked against the card before anything is parsed. Files from
        different writes (a rewrite under way, or killed while replacing them) are not refused at once: the
        rewrite's staged set is read, or the folder once more (the rewrite may have just finished). Each file is
        read, not looked up first: a GET each, where a HEAD went before each of them."""
        folder = self.folder(asset, key)
        card_url = f"{folder}/{CARD_FILE}"
        try:
            return self._read_set(folder)
        except FileNotFoundError:  # no card (a file it lists that is gone is a ModelArtifactError)
            stored = False
        except ModelArtifactError:
            stored = True
        if not stored:  # (raised outside the handler: not shown "during handling of" the card's absence)
            raise MissingPartitionError(
                f"{asset} has no stored partition {key} under {self.lake.root_url} ({card_url} does not exist): "
                + (
                    _never_trained(key)
                    or f"materialize {key_string('training_set')},{key_string(asset)} for {key} first (a month whose "
                    "training set has too few labels, or one class, fails and has no model: docs/operations.md, "
                    "'Too few labels')"
                )
            )
        try:
            return self._read_set(f"{folder}/{STAGING}")
        except (ModelArtifactError, FileNotFoundError):  # no staged set, an incomplete one, or one just removed
            pass
        # Outside the handler: the folder's error alone, not chained to the staged card's absence.
        return self._read_set(folder)

    def _read_set(self, where: str) -> ChurnModel:
        """The model whose card and files are in ``where``, verified (:meth:`_verified_files`) and parsed."""
        card, contents = self._verified_files(where)
        booster = load_booster(contents[MODEL_FILE], f"{where}/{MODEL_FILE}")
        expected_features = [f["name"] for f in card["features"]]
        if list(booster.feature_names or []) != expected_features:
            raise ModelArtifactError(
                f"{where}/{MODEL_FILE} has features {booster.feature_names}, its card lists {expected_features}"
            )
        _verify_card(card, contents[MODEL_FILE], f"{where}/{CARD_FILE}")
        return ChurnModel(
            model_bytes=contents[MODEL_FILE],
            card=card,
            reference_parquet=contents[REFERENCE_FILE],
            holdout_report_html=contents[REPORT_FILE],
            _booster=booster,
        )

    def _verified_files(self, where: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The card in ``where`` and the bytes of every file of its set (the card's too), each file's hash
        checked against the card; FileNotFoundError when there is no card."""
        card_url = f"{where}/{CARD_FILE}"
        card_data = self.lake.read_bytes(card_url)
        try:
            card = json.loads(card_data)
        except ValueError as exc:
            raise ModelArtifactError(f"{card_url} is not a JSON model card: {exc}") from exc
        if card.get("format") != CARD_FORMAT or not isinstance(card.get("artifacts"), dict):
            raise ModelArtifactError(f"{card_url} is not a model card of format {CARD_FORMAT}")

        contents = {}
        for name in (MODEL_FILE, REFERENCE_FILE, REPORT_FILE):
            url = f"{where}/{name}"
            try:
                data = self.lake.read_bytes(url)
            except FileNotFoundError:
                data = None
            if data is None:  # (raised outside the handler, as above)
                raise ModelArtifactError(f"{url} is missing: the model card {card_url} lists it")
            if name == MODEL_FILE:
                # A pickle gets its own message even when someone also rewrote the card's hash.
                if data[:1] != b"{":
                    load_booster(data, url)
            expected = card["artifacts"].get(name, {}).get("sha256")
            if sha256(data) != expected:
                raise ModelArtifactError(
                    f"{url} does not match its model card: sha256 {sha256(data)[:16]}…, the card "
                    f"{card_url} says {str(expected)[:16]}…; refusing to load it"
                )
            contents[name] = data
        return card, {**contents, CARD_FILE: card_data}


def _never_trained(month: str) -> str | None:
    """Why ``month`` can have no model (one of the first months after ``CHURN_START_DATE``), or None."""
    from churn_assets.assets.ml.training_set import too_early_to_train  # where used: the assets import this module

    return too_early_to_train(month)
