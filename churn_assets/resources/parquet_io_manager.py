"""A partition-aware Parquet IO manager for polars and pandas frames, on a local path or S3.

What the stock IO managers do not do, and this one does (DESIGN.md):

* one output may cover a range of partitions: it is split by its partition column (``date`` or
  ``month``) into each partition's folder, so a backfill of many days is one run;
* an output may also be a stream of ``(partition_key, frame)`` pairs, written one partition at a time,
  so a long backfill holds one day in memory, not the whole range;
* an input spanning several partitions arrives as one frame whatever their count; a ``pl.LazyFrame``
  annotation gets a lazy, hive-pruned scan, so ``lf.filter(pl.col("date") == day)`` reads one file;
* a self-dependent asset reads from storage only the partitions before the ones its run writes;
* writes are atomic, and each partition records its row count, column schema and content hash;
* the one partition a step just wrote is handed to the next steps of the same process from memory, while
  the stored file is unchanged: a daily run's checks and downstream assets do not decode it again;
* on S3, an input is scanned on local disk, not fetched in round trips per file on every collect: the range
  partitions the run just wrote and the inputs its steps downloaded (once, concurrently) are kept there for its
  next steps, while the store holds the same objects (``LocalCopies``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
import sys
import threading
import typing
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import dagster as dg
import polars as pl
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    NULL_DATA_VERSION,
    NULL_EVENT_POINTER,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from pydantic import Field

from churn_assets.apps import asset_name, key_string
from churn_assets.partitions import DATE_FORMAT, MONTH_FORMAT, latest_materializations, partition_column
from churn_assets.resources.filesystems import is_s3, polars_storage_options
from churn_assets.resources.lake import (
    LOCAL_COPIES,
    Lake,
    WrittenFile,
    _etag_version,
    content_hash,
    parquet_bytes,
    partition_value,
    some_keys,
    step_owner,
)
from churn_assets.threads import ordered_map

T = TypeVar("T")


class PartitionStream:
    """What a range-aware asset returns: its partitions one at a time, in order, as ``(key, frame)``.

    The IO manager writes each partition as it arrives, so a run over many days holds one in memory.
    """

    def __init__(self, partitions: Iterable[tuple[str, Any]]):
        self._partitions = partitions

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._partitions)

_HIVE_TYPES: dict[str, pl.DataType] = {"date": pl.Date(), "month": pl.String()}

# Asset metadata: the rows of each Parquet row group of the asset's files. A table read in ranges of a
# sorted key sizes them so that its row-group statistics prune a range to little more than its rows.
ROW_GROUP_ROWS = "churn/parquet_row_group_rows"
# Partitions of a range stored on S3 at a time: each upload is a round trip, and only its bytes are held.
S3_UPLOADS = 4


class RecentPartitions:
    """The single partitions the last ``assets`` assets wrote in this process, as written, each with the
    version of the file its write left (``Lake.checksum``'s token: size, modification time and inode, or S3's
    ETag), taken from the write itself: a look-up after it could pair the frame with another run's file.

    A run of one day reads each partition it writes back one to three times (the asset's checks, the next
    assets); a day of ~10 M events is ~1.5 s of CPU to decode each time. A partition is handed out only
    while its file is unchanged, so another run's rewrite is read from storage. A range run's partitions
    are not kept (they would hold the range in memory), nor is a file whose write gave no version (an S3
    upload in parts, of 5 GB or more); writing any partition of an asset forgets the ones kept for it.
    """

    def __init__(self, assets: int = 2):
        self._assets = assets
        self._kept: dict[str, tuple[str, str, pl.DataFrame]] = {}  # asset -> (url, checksum, frame)
        self._lock = threading.Lock()

    def forget(self, asset: str) -> None:
        with self._lock:
            self._kept.pop(asset, None)

    def keep(self, asset: str, url: str, checksum: str, frame: pl.DataFrame) -> None:
        with self._lock:
            self._kept.pop(asset, None)
            self._kept[asset] = (url, checksum, frame)
            while len(self._kept) > self._assets:
                del self._kept[next(iter(self._kept))]

    def get(self, asset: str, url: str, lake: Lake, etag: str = "") -> pl.DataFrame | None:
        """The frame kept for ``asset`` when it is the one of ``url`` and the file is unchanged: its S3 ``etag`` as
        the look-up that found the file gave it, or (none given) a look-up of its version now."""
        with self._lock:
            kept = self._kept.get(asset)
        if kept is None or kept[0] != url:
            return None
        version = _etag_version(etag) if etag else lake.checksum(url)
        return kept[2] if version == kept[1] else None


RECENT = RecentPartitions()


class MissingPartitionError(Exception):
    """An input partition that the lake does not hold."""


class StepInterrupted(dg.DagsterError, dg.DagsterExecutionInterruptedError):
    """The run was interrupted (terminated from the UI or the CLI's Ctrl-C) while a step stored its output.

    Dagster turns an interrupt into a retry of a step with a retry policy (raw_events retries an unreachable
    store): the terminated run then wrote the whole range again and succeeded. As a ``DagsterError`` this passes
    the step's error boundary unchanged, and as an interrupt it ends the run the way an interrupt ends a step
    without a retry policy: canceled when it was terminated."""


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores each partition of an asset as ``{base_url}/{asset}/{date|month}=KEY/data.parquet``."""

    base_url: str = Field(description="Root of the lake: an absolute local path or s3://bucket/prefix.")

    @property
    def lake(self) -> Lake:
        return Lake(self.base_url)

    # -- outputs ----------------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        asset = asset_name(context.asset_key)
        declared = context.definition_metadata.get("dagster/column_schema")
        row_group_rows = context.definition_metadata.get(ROW_GROUP_ROWS)
        row_group_rows = getattr(row_group_rows, "value", row_group_rows)  # raw, or as a MetadataValue
        if not context.has_asset_partitions:
            frame = _to_polars(obj)
            written = self.lake.write_table(self.lake.table_url(asset), frame, row_group_rows)
            context.add_output_metadata(table_metadata(frame, written, declared))
            return

        column = partition_column(context.asset_partitions_def)
        keys = list(context.asset_partition_keys)
        RECENT.forget(asset)

        # Each partition stored, with its metadata, as its upload ends: a partition stored before the
        # output failed is recorded even when the failure came before it was handed back here.
        stored_whole: dict[str, dict[str, Any]] = {}
        uploads_started: list[Future[WrittenFile]] = []

        def record(key: str, frame: pl.DataFrame, stored: Future[WrittenFile]) -> None:
            written = stored.result()
            metadata = stored_whole[key]
            if len(keys) == 1:
                if written.version is not None:
                    RECENT.keep(asset, written.url, written.version, frame)
                context.add_output_metadata(metadata)
            else:
                context.step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)

        lake, step = self.lake, step_owner(context.step_context)
        keeps_copies = len(keys) > 1 and is_s3(self.base_url)

        def store(key: str, data: bytes, shape: pl.DataFrame, rows: int) -> WrittenFile:
            written = lake.write_bytes(lake.table_url(asset, column, key), data)
            if keeps_copies:  # the run's next steps read the range it writes: a local copy spares a download
                LOCAL_COPIES.keep(lake, written, data, owner=step)
            stored_whole[key] = table_metadata(shape, written, declared, rows)
            return written

        def write(partition: tuple[str, pl.DataFrame], uploads: ThreadPoolExecutor) -> tuple:
            """The partition encoded, and handed to an uploader: (key, frame, the upload's future)."""
            key, frame = partition
            data = parquet_bytes(frame, row_group_rows)
            # A range's partitions are let go once encoded: their metadata needs only their shape.
            shape = frame if len(keys) == 1 else frame.clear()
            upload = uploads.submit(store, key, data, shape, frame.height)
            uploads_started.append(upload)
            return key, shape, upload

        # Write-behind: partition N is encoded on a writer thread while the stream computes partition N+1
        # here (polars, zstd, sha256 and fsync all release the GIL), so a range run keeps both cores busy
        # and holds two partitions. Its bytes are then stored by an uploader: on S3 each upload is a round
        # trip, and a few go at once, holding only their bytes. Dagster is only called from this thread.
        at_once = S3_UPLOADS if is_s3(self.base_url) else 1
        try:
            with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="upload") as uploads:
                in_flight: deque[tuple] = deque()
                partitions = each_partition_once(asset, keys, _split_by_partition(obj, asset, column, keys))
                for item in ordered_map(functools.partial(write, uploads=uploads), partitions, workers=1):
                    in_flight.append(item)
                    while in_flight and (len(in_flight) > at_once or in_flight[0][2].done()):
                        record(*in_flight.popleft())
                while in_flight:
                    record(*in_flight.popleft())
        except BaseException as error:
            # Every upload is over (the pool waits for them, and so does this, when an interrupt cut its
            # wait short): the partitions they stored are recorded, from a copy no uploader writes to.
            _wait_for(uploads_started)
            record_stored_before_failure(context, dict(stored_whole))
            if isinstance(error, (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)):
                raise StepInterrupted() from error
            raise
        set_data_version(context, stored_whole)

    # -- inputs -----------------------------------------------------------------------------------
    def load_input(self, context: dg.InputContext) -> Any:
        asset = asset_name(context.asset_key)
        wants = context.dagster_type.typing_type
        if not context.has_asset_partitions:
            url = self.lake.table_url(asset)
            scan = pl.scan_parquet(url, glob=False, storage_options=polars_storage_options(url))
            return _as_requested(scan, wants)

        column = partition_column(context.asset_partitions_def)
        keys = _keys_to_read(context)
        if not keys:
            # The upstream window lies before the first partition (e.g. install_times[D-1] on the
            # start date): there is nothing earlier to read.
            return None
        found, missing = self.lake.stored_table_etags(asset, column, keys)
        urls = list(found)
        if missing:
            hint = ""
            if _reads_itself(context):  # its own day before
                partitions = context.asset_partitions_def
                first = partitions.get_first_partition_key()
                # The range to advise starts after the last partition stored before the first missing one.
                before = partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, min(missing)))
                absent = set(self.lake.stored_tables(asset, column, before)[1])
                stored = [i for i, key in enumerate(before) if key not in absent]
                start = before[stored[-1] + 1] if stored else first
                hint = (
                    f" ({asset} carries each day on from the day before, from the first partition, {first}: run "
                    f"the days from {start} on as one range, --partition-range {start}...<the day>, with what "
                    "they read; if your landing data starts later, set CHURN_START_DATE to its first day)"
                )
            raise MissingPartitionError(
                f"{asset} has no stored partition {some_keys(missing)} under {self.lake.root_url}: "
                f"materialize {key_string(asset)} for those partitions first{hint}"
            )
        partition = {column: _HIVE_TYPES[column]}
        recent = RECENT.get(asset, urls[0], self.lake, found[urls[0]]) if len(urls) == 1 else None
        if recent is not None:  # the frame the file holds, with the partition column a scan adds last
            lazy = recent.lazy().with_columns(partition_value(keys[0], partition[column]).alias(column))
        else:
            # One version of each table however often the step collects it (features, in slices of users) while
            # other runs rewrite them; on S3 one download of each file, not round trips on every collect.
            lazy = LOCAL_COPIES.scan(self.lake, urls, partition, owner=step_owner(context.step_context), etags=found)
        return _as_requested(lazy, wants)


def set_data_version(
    context: dg.OutputContext, stored: Mapping[str, Mapping[str, Any]], version_key: str = "content_hash"
) -> None:
    """Sets the data version Dagster records for the partitions ``stored`` (each key and its metadata) by the
    output, so that Dagster sees the same bytes as unchanged data:

    * partitions whose bytes (metadata ``version_key``) are those of their latest materialization, all under
      one data version, keep it: a day run again alone, or a range run again over some of the days of an
      earlier range, over unchanged data;
    * otherwise a single partition gets its content hash;
    * and a range its own hash of its keys and their content hashes: Dagster records one data version per
      asset and step, the same on each partition of a range run. Without one, Dagster hashed the run's id
      into it, and every range run marked what reads its partitions as changed.
    """
    hashes = {key: str(metadata[version_key])[:32] for key, metadata in stored.items()}
    version = _version_of_unchanged(context.step_context.instance, context.asset_key, hashes, version_key)
    if version is None:
        version = shared_data_version(hashes)
    context.step_context.set_data_version(context.asset_key, dg.DataVersion(version))


def shared_data_version(hashes: Mapping[str, str]) -> str:
    """The one data version of partitions stored together (``hashes``: each key and its content hash): a single
    partition's content hash, or a hash of the keys and their content hashes."""
    ranged = "".join(f"{key}={value}\n" for key, value in sorted(hashes.items()))
    return next(iter(hashes.values())) if len(hashes) == 1 else content_hash(ranged.encode())


def _version_of_unchanged(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, hashes: Mapping[str, str], version_key: str
) -> str | None:
    """The data version the partitions of ``hashes`` (key -> content hash) were last materialized under, when
    each still holds the bytes it held then (metadata ``version_key``) and all share that version; else None.
    One query of the event log per 1,000 partitions, before the output's own materializations are recorded."""
    previous = latest_materializations(instance, asset_key, list(hashes))
    versions = set()
    for key, stored_hash in hashes.items():
        materialization = previous[key].asset_materialization if key in previous else None
        before = None if materialization is None else materialization.metadata.get(version_key)
        if before is None or str(before.value)[:32] != stored_hash:
            return None
        versions.add((materialization.tags or {}).get(DATA_VERSION_TAG))
    return versions.pop() if len(versions) == 1 and None not in versions else None


def data_version_tags(version: str) -> dict[str, str]:
    """The tags that give a materialization recorded by hand (outside a run's output, or outside any run) the data
    version ``version``, as an output's ``dg.DataVersion`` does: Dagster has no public API for it, so this module
    alone names its tags."""
    return {DATA_VERSION_TAG: version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}


def provenance_tags(code_version: str, inputs: Mapping[dg.AssetKey, tuple[str | None, int | None]]) -> dict[str, str]:
    """The tags a run gives a materialization of what it was computed from (Dagster's data provenance): the code
    version, and each input asset's data version and the storage id of its latest event when it was read (``None``:
    none recorded). For a materialization recorded outside a run (``churn-assets adopt``); Dagster has no public API
    to build them, so this module alone names its tags."""
    tags = {CODE_VERSION_TAG: code_version}
    for key, (version, pointer) in inputs.items():
        tags[get_input_data_version_tag(key)] = NULL_DATA_VERSION.value if version is None else version
        tags[get_input_event_pointer_tag(key)] = NULL_EVENT_POINTER if pointer is None else str(pointer)
    return tags


def record_stored_before_failure(
    context: dg.OutputContext, stored: Mapping[str, Mapping[str, Any]], version_key: str = "content_hash"
) -> None:
    """Records a materialization of each partition ``stored`` (its key and metadata) by an output that then
    failed: a range whose day 80 fails has written days 1-79 whole. Dagster records a range's
    materializations only once its whole output is handled; without these, the lake would hold the new
    files while the instance still described the old ones (row count, content hash, the landing version the
    landing sensor compares) and nothing read from them would look stale. The partitions not stored stay
    failed, and a retry of the failed partitions runs only those. Each one's data version is its content
    hash (metadata ``version_key``), as a single partition's run records it."""
    step = context.step_context
    for key, metadata in stored.items():
        of_body = step.get_asset_metadata(asset_key=context.asset_key, partition_key=key) or {}  # raw_events' counts
        materialization = dg.AssetMaterialization(
            asset_key=context.asset_key,
            partition=key,
            metadata={**of_body, **metadata},
            tags=data_version_tags(str(metadata[version_key])[:32]),
        )
        dg.DagsterEvent.asset_materialization(step, materialization)  # stored as it is made
    if stored:
        context.log.warning(
            f"{asset_name(context.asset_key)}: {len(stored)} partition(s) were stored before the failure and are "
            f"recorded as materialized: {some_keys(list(stored))}"
        )


def _wait_for(futures: list[Future[Any]]) -> None:
    """Until ``futures`` are done, through interrupts (a second Ctrl-C, or a run's termination while its step
    waits for its uploads): each is one write or PUT already under way, which would otherwise store a
    partition after the failure recorded what was stored."""
    while True:
        try:
            concurrent.futures.wait(list(futures))
            return
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            continue


def _reads_itself(context: dg.InputContext) -> bool:
    """Whether the input is the step's own asset (a self-dependency: install_times[D-1], model[M-1])."""
    step = context.step_context
    return step.assets_def is not None and context.asset_key in step.assets_def.keys


def _keys_to_read(context: dg.InputContext) -> list[str]:
    keys = list(context.asset_partition_keys)
    step = context.step_context
    if _reads_itself(context) and step.has_partitions:
        # Self-dependency: partitions this run writes come from the run itself, not from storage.
        being_written = set(
            step.assets_def.partitions_def.get_partition_keys_in_range(step.partition_key_range)
        )
        keys = [key for key in keys if key not in being_written]
    return keys


def _to_polars(frame: Any) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if _is_pandas_frame(frame):
        return pl.from_pandas(frame)
    raise TypeError(f"the parquet IO manager stores polars or pandas frames, not {type(frame).__name__}")


def each_partition_once(asset: str, keys: list[str], partitions: Iterable[tuple[str, T]]) -> Iterator[tuple[str, T]]:
    """``partitions``, ``(key, value)`` pairs of ``asset``, as they come; fails at a key outside the run's
    ``keys`` or seen before, and at the end when some of ``keys`` never came (Dagster would record them as
    materialized)."""
    wanted, seen = set(keys), set()
    for key, value in partitions:
        if key not in wanted:
            raise ValueError(
                f"{asset} produced partition {key!r}, outside the run's partitions {keys[0]}..{keys[-1]}"
            )
        if key in seen:
            raise ValueError(f"{asset} produced partition {key!r} twice; each of the run's partitions comes once")
        seen.add(key)
        yield key, value
    missing = [key for key in keys if key not in seen]
    if missing:
        raise ValueError(
            f"{asset} produced no partition {some_keys(missing)} ({len(missing)} of the run's {len(keys)}); "
            "nothing was stored for them"
        )


def _split_by_partition(obj: Any, asset: str, column: str, keys: list[str]) -> Iterable[tuple[str, pl.DataFrame]]:
    """Each partition's rows, without the partition column (the folder name carries it)."""
    if isinstance(obj, (pl.DataFrame, pl.LazyFrame)) or _is_pandas_frame(obj):
        frame = _to_polars(obj)
        if column not in frame.columns:
            if len(keys) != 1:
                raise ValueError(
                    f"{asset}: an output covering {len(keys)} partitions ({keys[0]}..{keys[-1]}) needs a "
                    f"{column!r} column to split on"
                )
            yield keys[0], frame
            return
        as_keys = _partition_keys(frame.get_column(column), column)
        unknown = set(as_keys.unique().to_list()) - set(keys)
        if unknown:
            raise ValueError(
                f"{asset} produced rows for partitions {some_keys(sorted(map(str, unknown)))}, outside the run's "
                f"partitions {keys[0]}..{keys[-1]}"
            )
        frame = frame.with_columns(as_keys.alias("__key"))
        for key in keys:
            yield key, frame.filter(pl.col("__key") == key).drop("__key", column)
        return
    for key, frame in obj:
        frame = _to_polars(frame)
        yield key, frame.drop(column) if column in frame.columns else frame


def _partition_keys(values: pl.Series, column: str) -> pl.Series:
    """The partition key of each row; datetimes (pandas' dates) count by their day or month."""
    if isinstance(values.dtype, (pl.Datetime, pl.Date)):
        return values.dt.strftime(DATE_FORMAT if column == "date" else MONTH_FORMAT)
    return values.cast(pl.String)


def column_schema(
    schema: Mapping[str, pl.DataType],
    descriptions: Mapping[str, str] | None = None,
    key: str | None = None,
    not_null: Iterable[str] = (),
) -> dg.TableSchema:
    """The column schema the UI shows for a table of this polars schema: each column's ``descriptions`` entry, the
    table's ``key`` marked never null and unique (within a partition), the ``not_null`` columns never null."""
    descriptions, not_null = descriptions or {}, {key, *not_null} - {None}

    def constraints(name: str) -> dg.TableColumnConstraints:
        return dg.TableColumnConstraints(nullable=name not in not_null, unique=name == key)

    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=descriptions.get(name), constraints=constraints(name))
            for name, dtype in schema.items()
        ]
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of ``header`` and ``rows`` (cells already formatted), as the UI's metadata shows it.
    No cell ends its cell or its row: a line break in one is a space, its ``|`` and ``\\`` are escaped."""
    lines = ["| " + " | ".join(map(table_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(table_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def table_cell(text: str) -> str:
    """``text`` as one cell of a Markdown table row: a line break a space, ``|`` and ``\\`` escaped."""
    return " ".join(text.splitlines()).replace("\\", "\\\\").replace("|", "\\|")


def markdown_code(value: str, limit: int = 100) -> str:
    """A value from the data (a ``user_id``: what the app's users send) as Markdown inline code, cut to
    ``limit`` characters: shown as the text it is. As plain Markdown, a user id ``![x](https://…)`` loaded an
    image from anywhere in the browser of whoever opened the run, ``[sign in](https://…)`` or a bare URL was a
    link, and ``*`` or ``<b>`` styled the table; inside a code span none of these is read."""
    text = " ".join(value.splitlines())
    text = text if len(text) <= limit else text[:limit] + "…"
    if not text:
        return ""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def preview_markdown(frame: pl.DataFrame, rows: int = 10) -> dg.MetadataValue:
    """The first ``rows`` rows of ``frame`` as a Markdown table for the UI (floats to 4 decimals, text as
    inline code: :func:`markdown_code`)."""
    head = frame.head(rows)
    cells = [
        [
            "–" if v is None else f"{v:.4f}" if isinstance(v, float) else markdown_code(v) if isinstance(v, str)
            else str(v)
            for v in row
        ]
        for row in head.iter_rows()
    ]
    return dg.MetadataValue.md(markdown_table(head.columns, cells))


def table_metadata(
    frame: pl.DataFrame, written: WrittenFile, declared: Any = None, rows: int | None = None
) -> dict[str, Any]:
    """A partition's materialization metadata. Its column schema is recorded only where it differs from the
    one the asset declares (names and types): the UI shows the declared one, and 80 columns repeated on
    each of a backfill's partitions made Dagster's event log serialize ~9 KB per materialization. ``rows``
    is its row count where ``frame`` holds only its schema."""
    schema = column_schema(frame.schema)
    metadata: dict[str, Any] = {"dagster/row_count": frame.height if rows is None else rows}
    if not isinstance(declared, dg.TableSchema) or _names_and_types(declared) != _names_and_types(schema):
        metadata["dagster/column_schema"] = schema
    return metadata | {
        "dagster/uri": written.url,
        "content_hash": written.content_hash,
        "size_bytes": written.size_bytes,
    }


def _names_and_types(schema: dg.TableSchema) -> list[tuple[str, str]]:
    return [(column.name, column.type) for column in schema.columns]


def _as_requested(lazy: pl.LazyFrame, wants: Any) -> Any:
    # ``pl.LazyFrame | None`` (an input that may have no upstream partition) asks for a LazyFrame too.
    wants = next((t for t in typing.get_args(wants) if t is not type(None)), wants)
    if wants is pl.LazyFrame:
        return lazy
    if _is_pandas_frame_type(wants):
        return lazy.collect().to_pandas()
    return lazy.collect()


# pandas takes ~1.5 s to import and the data assets never use it: it is only looked at when already loaded
# (a pandas frame, or an input annotated with one, means its module imported pandas).
def _is_pandas_frame(obj: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def _is_pandas_frame_type(wants: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and wants is pandas.DataFrame
