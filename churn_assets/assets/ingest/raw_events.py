"""``raw_events``: every valid event of one export day, typed and deduplicated."""


import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import dagster as dg
import polars as pl

from churn_assets.assets.ingest.landing_files import (
    AMPLITUDE_KEY_OF,
    ATTRIBUTES,
    CANONICAL_SCHEMA,
    JoinedPieces,
    LandingFileError,
    LandingPiece,
    VettedDay,
    decode_joined,
    decode_piece,
    joined_pieces,
    landing_pieces,
    vet_export_day,
)
from churn_assets.partitions import daily_partitions, days_in_range
from churn_assets.resources import LakeResource, LandingDay, LandingZone, NotARegularFileError
from churn_assets.resources.erased_users import erased_user_ids, without_erased
from churn_assets.resources.filesystems import BucketNotFoundError, StorageCertificateError, StorageSettingsError
from churn_assets.resources.parquet_io_manager import PartitionStream, column_schema
from churn_assets.threads import Prefetched, ordered_map

QUARANTINE_ASSET = "raw_events_quarantine"
_RAW_COLUMNS = ["source_file", "line", *CANONICAL_SCHEMA, "parse_error"]


# What the UI's column schema says of each column; the first four are never null (rows without them are quarantined).
RAW_EVENTS_COLUMNS = {
    "event_id": "The event's id (Amplitude's $insert_id), once per export day.",
    "user_id": "The user.",
    "event_time": "When the event happened (UTC); up to 7 days before the export day, never after it.",
    "event_type": "The event's type, as exported.",
    "session_id": "The session (epoch milliseconds of its start); null outside a session (-1 in the export).",
    "platform": "The device's platform; null when the export had none.",
    "country": "The user's country; null when the export had none.",
    "app_version": "The app's version (Amplitude's version_name); null when the export had none.",
    "revenue": "The event's revenue, ≥ 0; null when none.",
}


@dg.asset(
    group_name="ingest",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    owners=["team:data-platform"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2),
    metadata={
        "dagster/column_schema": column_schema(
            CANONICAL_SCHEMA, RAW_EVENTS_COLUMNS, key="event_id", not_null=["user_id", "event_time", "event_type"]
        )
    },
)
def raw_events(context: dg.AssetExecutionContext, landing: LandingZone, lake: LakeResource) -> PartitionStream:
    """Every valid event exported on day D (UTC), whatever its ``event_time``: typed to the canonical
    columns, duplicate event ids dropped. Reads the landing files of ``events/date=D/`` (JSON lines as
    .jsonl or .json, Parquet, or CSV; JSON and CSV may be gzipped) once the day's ``_SUCCESS`` exists; a file
    of another type, or an entry that is no regular file (a folder, a named pipe, a socket, a device), fails the
    day by name. Untrustworthy rows go to
    ``raw_events_quarantine/date=D/`` with a reason each; their counts are materialization metadata. The rows of
    users on the lake's erased-users list (``churn-assets erase``) are left out of both.
    """
    return PartitionStream(_stream(context, days_in_range(context), landing, lake))


def _stream(
    context: dg.AssetExecutionContext, days: list[dt.date], landing: LandingZone, lake: LakeResource
) -> Iterator[tuple[str, pl.DataFrame]]:
    # Three stages on two cores: a thread reads the landing files and inflates them into pieces of JSON
    # lines (gzip holds the GIL), a second hands them to two parsers (polars releases it; one piece at a
    # time left the parser the pipeline's bottleneck with a core idle at times: a day of 10 M events took
    # ~1 s longer), a few pieces ahead, while this thread vets each parsed chunk, in order, into compact
    # typed rows and hands each finished day to the IO manager's writer. Memory holds a day's typed events
    # and a few pieces, never a day of JSON text.
    try:
        erased = erased_user_ids(lake.lake)  # once a run: None (no list file) unless a user was erased
    except _NOT_RETRIED as exc:  # a misspelt lake bucket, credentials S3 refuses: as the day's first write would say
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    with (
        Prefetched(_landing_pieces(landing, days), ahead=2, name="landing-read") as pieces,
        Prefetched(ordered_map(_parsed, pieces, workers=2, passes=_is_marker), ahead=2, name="landing-parse") as items,
    ):
        for day in days:
            try:
                landing_day = _next_for(items, day)
                vetted = vet_export_day(_coalesced(_until_end_of(items, day)), day)
                # Its quarantine is the lake's first write.
                events = _vet_day(context, day, landing_day, vetted, lake, erased)
            except _NOT_RETRIED as exc:
                # Retrying cannot make a corrupt file readable, a pipe or a folder a file, an incomplete day
                # complete, a misspelt bucket exist, credentials right, an endpoint whole or its certificate
                # trusted: fail at once.
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
            yield day.isoformat(), events


_END = object()
# What fails the step at once: no retry makes a file readable, a bucket exist or a certificate trusted (below).
_NOT_RETRIED = (
    LandingFileError, NotARegularFileError, FileNotFoundError, BucketNotFoundError, PermissionError,
    StorageSettingsError, StorageCertificateError,
)


def _landing_pieces(landing: LandingZone, days: list[dt.date]) -> Iterator[tuple[dt.date, Any]]:
    """(day, the day's LandingDay), then (day, piece) for each piece of its files, then (day, _END)."""
    for day in days:
        landing_day = landing.data_files(day)
        yield day, landing_day
        for batch in landing_day.batches():
            if len(batch) == 1:  # its next blocks are read (on S3: fetched) while its first ones are inflated
                listed = landing_day.listed(batch[0])  # its size and ETag: on S3 no HEAD for them
                with Prefetched(landing.read_blocks(batch[0], listed=listed), ahead=2, name="landing-fetch") as blocks:
                    for piece in landing_pieces(batch[0], blocks):
                        yield day, piece
                continue
            # Small files (a Firehose delivery's hundreds): on S3 fetched at once, no thread for each, and their
            # text parsed in one go.
            for piece in joined_pieces(_small_files_pieces(landing, batch)):
                yield day, piece
        yield day, _END


def _small_files_pieces(landing: LandingZone, batch: list[str]) -> Iterator[LandingPiece]:
    """The pieces of a batch of small files (``LandingDay.batches``), fetched together."""
    for url, blocks in zip(batch, landing.read_batch(batch), strict=True):
        yield from landing_pieces(url, blocks)


def _parsed(item: tuple[dt.date, LandingPiece | JoinedPieces]) -> tuple[dt.date, list[pl.DataFrame]]:
    """A piece, or joined pieces, parsed into raw frames."""
    day, piece = item
    frames = decode_joined(piece) if isinstance(piece, JoinedPieces) else [decode_piece(piece)]
    return day, [frame.select(_RAW_COLUMNS) for frame in frames]


def _is_marker(item: tuple[dt.date, Any]) -> bool:
    """A day's list of files or its end: passed on at once, so a day never waits for the next one's files."""
    return not isinstance(item[1], LandingPiece | JoinedPieces)


def _next_for(items: Iterator[tuple[dt.date, Any]], day: dt.date) -> Any:
    got, value = next(items)
    if got != day:
        raise RuntimeError(f"landing reader out of step: expected {day}, got {got}")
    return value


def _until_end_of(items: Iterator[tuple[dt.date, Any]], day: dt.date) -> Iterator[pl.DataFrame]:
    while (frames := _next_for(items, day)) is not _END:
        yield from frames


# Parsed pieces of fewer rows than this are vetted together with the ones after them: a piece is a file, or 16 MB
# of one (~50 k events), and a Firehose day's 1,500 files of a few hundred events each were vetted one by one.
VET_AT_LEAST_ROWS = 32_768


def _coalesced(frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """``frames`` (consecutive raw frames, in file order) with runs of small ones of the same column types joined
    into one frame of ``VET_AT_LEAST_ROWS`` rows or more, in the same order; empty ones left out."""
    held: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        if not frame.height:
            continue
        if held and frame.schema != held[0].schema:
            yield pl.concat(held)
            held, rows = [], 0
        held.append(frame)
        rows += frame.height
        if rows >= VET_AT_LEAST_ROWS:
            yield pl.concat(held)
            held, rows = [], 0
    if held:
        yield pl.concat(held)


def _vet_day(
    context: dg.AssetExecutionContext, day: dt.date, landing_day: LandingDay, vetted: VettedDay, lake: LakeResource,
    erased: pl.Series | None = None,
) -> pl.DataFrame:
    erasure = {}
    if erased is not None:
        vetted, erasure = _without_erased(vetted, erased)
    store = lake.lake
    quarantine_url = store.table_url(QUARANTINE_ASSET, "date", day.isoformat())
    store.write_table(quarantine_url, vetted.quarantine)
    counts = {reason: n for reason, n in vetted.quarantine_counts().items() if n}  # the reasons found
    without = _events_without(vetted.events)
    context.add_asset_metadata(
        {
            "landing_files": len(landing_day.files),
            # The _SUCCESS version this partition read: the landing sensor requests the day again only for another.
            "landing_version": landing_day.version,
            "rows_read": vetted.rows_read,
            "duplicates_dropped": vetted.duplicates_dropped,
            "quarantined": vetted.quarantine.height,
            **{f"quarantined/{reason}": n for reason, n in counts.items()},
            "quarantine_uri": quarantine_url,
            **({"quarantine_example": example} if (example := vetted.quarantine_example()) else {}),
            **{f"events_without/{column}": n for column, n in without.items()},
            **erasure,
        },
        partition_key=day.isoformat(),
    )
    if vetted.quarantine.height:
        context.log.warning(
            f"{day}: {vetted.quarantine.height} rows quarantined at {quarantine_url}: {counts}; {example}"
        )
    _warn_of_attributes_gone(context, day, vetted.events.height, without)
    if not vetted.rows_read:
        _warn_of_a_day_without_events(context, day, len(landing_day.files))
    return vetted.events


def _warn_of_a_day_without_events(context: dg.AssetExecutionContext, day: dt.date, files: int) -> None:
    """A complete day whose files hold no event is a day the app was down, or an export that failed and wrote empty
    files: nothing else says which, and every user looks a day less active in features (docs/operations.md)."""
    context.log.warning(
        f"{day}: the landing day is complete but its {files} file{'s' if files != 1 else ''} hold no event: if the "
        "app was not down that day, the export failed; re-deliver the day with its events. Until then features count "
        f"{day} as a day without activity for every user, and predictions of it and the days after score them as "
        "more at risk (docs/operations.md, 'A day without events')."
    )


def _without_erased(vetted: VettedDay, erased: pl.Series) -> tuple[VettedDay, dict[str, int]]:
    """The day without the rows of the ``erased`` users (its events and its quarantine), and what metadata says
    of it: how many users the list holds, and how many of the day's rows it left out."""
    events, quarantine = without_erased(vetted.events, erased), without_erased(vetted.quarantine, erased)
    left_out = vetted.events.height - events.height + vetted.quarantine.height - quarantine.height
    return (
        replace(vetted, events=events, quarantine=quarantine),
        {"erased_users": erased.len(), "erased_rows": left_out},
    )


def _events_without(events: pl.DataFrame) -> dict[str, int]:
    """How many of the day's events have no platform, country or app version (null counts: free)."""
    return {column: events.get_column(column).null_count() for column in ATTRIBUTES}


def _warn_of_attributes_gone(
    context: dg.AssetExecutionContext, day: dt.date, events: int, without: dict[str, int]
) -> None:
    """A day none of whose events has an attribute is an export that renamed or dropped its key (a release's
    ``app_version`` for ``version_name``): no row is quarantined for it, so the run's log says so."""
    for column, n in without.items():
        if events and n == events:
            context.log.warning(
                f"{day}: none of the {events:,} events has {column} (JSON key {AMPLITUDE_KEY_OF[column]!r}): did a "
                f"release rename or drop it? user_daily[{day}] has it null, and features keep each user's last "
                f"{column} seen in the 28 days before. Fix the export and re-deliver the day to keep it."
            )
