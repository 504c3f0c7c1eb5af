"""Reading and vetting one export day's landing files: the pure logic behind ``raw_events``.

Every reader yields the same *raw* frame (all columns as strings, with the file and line each row came
from), so one validation step decides, row by row, what is trusted and what goes to quarantine.
"""


import datetime as dt
import gzip
import io
import json
import zlib
from dataclasses import dataclass

import polars as pl

CANONICAL_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "user_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "event_type": pl.String(),
    "session_id": pl.Int64(),
    "platform": pl.String(),
    "country": pl.String(),
    "app_version": pl.String(),
    "revenue": pl.Float64(),
}

# Amplitude export keys → canonical columns.
AMPLITUDE_KEYS = {
    "$insert_id": "event_id",
    "user_id": "user_id",
    "event_time": "event_time",
    "event_type": "event_type",
    "session_id": "session_id",
    "platform": "platform",
    "country": "country",
    "version_name": "app_version",
    "revenue": "revenue",
}

QUARANTINE_REASONS = (
    "malformed_json",
    "missing_event_id",
    "missing_user_id",
    "missing_event_type",
    "unparsable_event_time",
    "event_time_after_export_day",
    "event_time_too_old",
    "unparsable_revenue",
    "negative_revenue",
    "unparsable_session_id",
)

MAX_LATENESS = dt.timedelta(days=7)
# Amplitude's own "2025-03-01 00:01:24.230633" first: a fixed six-digit fraction parses ~4 × faster than
# "%.f" and never misreads another shape (it leaves it null for the next format).
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%6f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")


class LandingFileError(Exception):
    """A landing file that cannot be read at all; the partition fails and names it."""


@dataclass(frozen=True)
class VettedDay:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    rows_read: int
    duplicates_dropped: int

    def quarantine_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(QUARANTINE_REASONS, 0)
        for reason, n in self.quarantine.group_by("reason").len().iter_rows():
            counts[reason] = n
        return counts


def read_landing_file(name: str, data: bytes) -> pl.DataFrame:
    """One landing file as the raw frame: canonical names, every value a string, plus file and line."""
    try:
        if name.endswith(".jsonl.gz"):
            raw = _read_jsonl(_gunzip(data))
        elif name.endswith(".jsonl"):
            raw = _read_jsonl(data)
        elif name.endswith(".parquet"):
            raw = _stringify(pl.read_parquet(io.BytesIO(data)), name)
        elif name.endswith(".csv"):
            raw = _stringify(pl.read_csv(io.BytesIO(data), infer_schema=False), name)
        else:
            raise LandingFileError(f"unknown landing file type: {name}")
    except LandingFileError as exc:
        raise LandingFileError(f"cannot read landing file {name}: {exc}") from exc
    except Exception as exc:  # any decoder's error: the file as a whole is unreadable
        raise LandingFileError(f"cannot read landing file {name}: {type(exc).__name__}: {exc}") from exc
    return raw.with_columns(pl.lit(name).alias("source_file"))


def _gunzip(data: bytes) -> bytes:
    # zlib with wbits=47 accepts gzip (and concatenated members) without an extra file object.
    decompressor = zlib.decompressobj(47)
    out = decompressor.decompress(data) + decompressor.flush()
    while decompressor.unused_data:  # further gzip members
        rest = decompressor.unused_data
        decompressor = zlib.decompressobj(47)
        out += decompressor.decompress(rest) + decompressor.flush()
    if not decompressor.eof:
        raise gzip.BadGzipFile("truncated gzip stream")
    return out


# The contract's shape has session_id and revenue as JSON numbers: read typed, a file parses ~25 % faster.
# A file with any other shape (quoted numbers, fractions, booleans ...) is read again as text, and a file
# polars cannot read at all line by line; either way the vetting then judges each value.
_JSON_AS_TEXT = {key: pl.String for key in AMPLITUDE_KEYS}
_JSON_TYPED = _JSON_AS_TEXT | {"session_id": pl.Int64, "revenue": pl.Float64}


def _read_jsonl(data: bytes) -> pl.DataFrame:
    for schema in (_JSON_TYPED, _JSON_AS_TEXT):
        try:
            frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
        except pl.exceptions.ComputeError:
            continue
        frame = frame.rename(AMPLITUDE_KEYS).with_columns(pl.lit(None, pl.String).alias("parse_error"))
        return frame.with_row_index("line", offset=1)
    return _read_jsonl_line_by_line(data)


def _read_jsonl_line_by_line(data: bytes) -> pl.DataFrame:
    """The slow path for a file with broken lines: good lines kept, each bad one marked for quarantine."""
    rows = []
    text = data.decode("utf-8", errors="strict")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            row = {col: _as_string(obj.get(key)) for key, col in AMPLITUDE_KEYS.items()}
            row["parse_error"] = None
        except ValueError as exc:
            row = dict.fromkeys(AMPLITUDE_KEYS.values())
            row["parse_error"] = str(exc)[:200]
        row["line"] = number
        rows.append(row)
    schema = {col: pl.String for col in AMPLITUDE_KEYS.values()} | {"parse_error": pl.String, "line": pl.UInt32}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.select(["line", *AMPLITUDE_KEYS.values(), "parse_error"])


def _as_string(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _stringify(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    missing = [c for c in ("event_id", "user_id", "event_time", "event_type") if c not in frame.columns]
    if missing:
        raise LandingFileError(f"missing required columns {missing} (has {frame.columns})")
    columns = []
    for col in CANONICAL_SCHEMA:
        if col not in frame.columns:
            columns.append(pl.lit(None, pl.String).alias(col))
        elif frame.schema[col] == pl.String:
            columns.append(pl.col(col))
        elif isinstance(frame.schema[col], pl.Datetime):
            columns.append(pl.col(col).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.6f").alias(col)
                           if frame.schema[col].time_zone else
                           pl.col(col).dt.strftime("%Y-%m-%d %H:%M:%S%.6f").alias(col))
        else:
            columns.append(pl.col(col).cast(pl.String))
    return frame.select(columns).with_columns(pl.lit(None, pl.String).alias("parse_error")).with_row_index(
        "line", offset=1
    )


def parse_event_times(text: pl.Series) -> pl.Series:
    """Each text as a UTC timestamp in the first of ``_TIME_FORMATS`` that parses it, else null.

    The first format is tried on every row, the others only on the rows it left unparsed (usually none):
    parsing is a third of vetting's time, and coalescing every format would parse every row each time.
    """
    parsed = text.str.to_datetime(_TIME_FORMATS[0], time_unit="us", time_zone="UTC", strict=False, cache=False)
    for fmt in _TIME_FORMATS[1:]:
        retry = (parsed.is_null() & text.is_not_null()).arg_true()
        if retry.is_empty():
            break
        again = text.gather(retry).str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False, cache=False)
        parsed = parsed.scatter(retry, again)
    return parsed


def vet_export_day(raw: pl.DataFrame, export_day: dt.date) -> VettedDay:
    """Types the raw rows of one export day, quarantines the untrustworthy ones, drops duplicate ids."""
    day_start = dt.datetime.combine(export_day, dt.time(), tzinfo=dt.UTC)
    day_end = day_start + dt.timedelta(days=1)
    oldest = day_start - MAX_LATENESS

    # session_id and revenue are JSON numbers already typed by the reader, or text to parse here.
    if raw.schema["session_id"] == pl.String:
        session_text = pl.col("session_id").str.strip_chars()
        session = pl.coalesce(
            session_text.cast(pl.Int64, strict=False),
            session_text.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False),
        )
    else:
        session = pl.col("session_id").cast(pl.Int64)
    typed = raw.with_columns(
        parse_event_times(raw.get_column("event_time")).alias("_time"),
        pl.col("revenue").cast(pl.Float64, strict=False).alias("_revenue"),
        session.alias("_session"),
    )
    blank = lambda c: pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")  # noqa: E731
    reason = (
        pl.when(pl.col("parse_error").is_not_null()).then(pl.lit("malformed_json"))
        .when(blank("event_id")).then(pl.lit("missing_event_id"))
        .when(blank("user_id")).then(pl.lit("missing_user_id"))
        .when(blank("event_type")).then(pl.lit("missing_event_type"))
        .when(pl.col("_time").is_null()).then(pl.lit("unparsable_event_time"))
        .when(pl.col("_time") >= day_end).then(pl.lit("event_time_after_export_day"))
        .when(pl.col("_time") < oldest).then(pl.lit("event_time_too_old"))
        .when(pl.col("revenue").is_not_null() & pl.col("_revenue").is_null()).then(pl.lit("unparsable_revenue"))
        .when(pl.col("_revenue") < 0).then(pl.lit("negative_revenue"))
        .when(pl.col("session_id").is_not_null() & pl.col("_session").is_null()).then(pl.lit("unparsable_session_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    typed = typed.with_columns(reason.alias("reason"))

    quarantine = typed.filter(pl.col("reason").is_not_null()).select(
        "source_file", pl.col("line").cast(pl.Int64), "reason",
        "event_id", "user_id", "event_time", "event_type",
        pl.col("session_id").cast(pl.String), pl.col("revenue").cast(pl.String),
        pl.col("parse_error").alias("detail"),
    )
    valid = typed.filter(pl.col("reason").is_null()).select(
        "event_id",
        "user_id",
        pl.col("_time").alias("event_time"),
        "event_type",
        pl.when(pl.col("_session") < 0).then(None).otherwise(pl.col("_session")).alias("session_id"),
        "platform",
        "country",
        "app_version",
        pl.col("_revenue").alias("revenue"),
    )
    # The first row of each event id, in file order (is_first_distinct: a third of unique(maintain_order)'s time).
    events = valid.filter(pl.col("event_id").is_first_distinct())
    return VettedDay(
        events=events.cast(CANONICAL_SCHEMA),
        quarantine=quarantine,
        rows_read=raw.height,
        duplicates_dropped=valid.height - events.height,
    )
