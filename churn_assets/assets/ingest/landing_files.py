"""Reading and vetting one export day's landing files: the pure logic behind ``raw_events``.

Every reader yields the same *raw* frame (the canonical columns as text, or already typed where the file
typed them canonically: JSON numbers, a Parquet file's timestamps and numbers; with the file and line each
row came from), so one validation step decides, row by row, what is trusted and what goes to quarantine.
"""


import codecs
import csv
import datetime as dt
import gzip
import io
import itertools
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

try:  # ISA-L's inflate reads gzip ~3 x faster than zlib's: a day of JSON lines is gigabytes of text
    from isal import isal_zlib as _inflate
except ImportError:  # a platform without its wheel: the standard library's
    _inflate = zlib

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
    "revenue_out_of_range",
    "unparsable_session_id",
)

MAX_LATENESS = dt.timedelta(days=7)
# The event's attributes: kept as given, an empty one read as missing.
ATTRIBUTES = ("platform", "country", "app_version")
# The columns a Parquet or CSV landing file must have; the others are optional.
REQUIRED_COLUMNS = ("event_id", "user_id", "event_time", "event_type")
# An event's revenue above this is no purchase but a broken value (a price in a minor unit ×10^6, a
# timestamp in the wrong field): user_daily and features sum revenue exactly, in whole millionths as 64-bit
# integers, which such values would overflow. A billion leaves room for any currency's real purchase.
MAX_REVENUE = 1e9
# Amplitude's own "2025-03-01 00:01:24.230633" first: a fixed six-digit fraction parses ~4 × faster than
# "%.f" and never misreads another shape (it leaves it null for the next format). A time without an offset
# is UTC (DESIGN.md); one with "Z" or an offset ("%+": ISO 8601, as pandas' to_csv and most exporters write
# zoned times) is that instant, in UTC. A time to the minute ("2025-03-01 08:00") is how spreadsheets write
# times in CSV; ISO 8601 also writes one with its zone ("2025-03-01T08:00Z", "…T10:00+02:00"), which "%+" refuses.
# The formats after the first parse only the rows it left null, so the last ones cost nothing on a clean day.
_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%6f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%+", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z",
)


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

    def quarantine_example(self) -> str:
        """The commonest reason's first row, as its export holds it (file, line, field, value), or "" when
        none: a day whose export changed (a time format, a renamed key) says what changed where, without a
        look into the quarantine file."""
        counts = {reason: n for reason, n in self.quarantine_counts().items() if n}
        if not counts:
            return ""
        reason = max(counts, key=counts.get)
        first = self.quarantine.filter(pl.col("reason") == reason).row(0, named=True)
        column = REASON_COLUMNS.get(reason)
        if column is None:
            seen = first["detail"] or "not a JSON object"
        else:
            key = AMPLITUDE_KEY_OF[column] if landing_type(first["source_file"]) == "json" else column
            value = first[column]
            seen = f"{key} is missing" if value is None or not value.strip() else f"{key} = {quoted(repr(value), 100)}"
        rows = f"{counts[reason]:,} row{'s' if counts[reason] != 1 else ''}"
        return f"{reason} in {rows}, the first in {first['source_file']} line {first['line']}: {seen}"


# The column each reason judged: what a quarantine example shows of the row.
REASON_COLUMNS = {
    "missing_event_id": "event_id", "missing_user_id": "user_id", "missing_event_type": "event_type",
    "unparsable_event_time": "event_time", "event_time_after_export_day": "event_time",
    "event_time_too_old": "event_time", "unparsable_revenue": "revenue", "negative_revenue": "revenue",
    "revenue_out_of_range": "revenue", "unparsable_session_id": "session_id",
}
# Each canonical column's key in a JSON landing file (``AMPLITUDE_KEYS`` the other way round): what a message names.
AMPLITUDE_KEY_OF = {column: key for key, column in AMPLITUDE_KEYS.items()}


# JSON is decoded and parsed this many bytes at a time: a day of 28 M events is ~8 GB of JSON, and holding
# it (and the frame parsed from it at once) is what bounded memory. Chunks of 16 MB (~50 k events) also
# decode and vet ~10 % faster than chunks of 256 MB: they stay in the CPU's caches.
CHUNK_BYTES = 16 * 1024 * 1024
# A JSON line longer than this is no event (an export's events are kilobytes): a file without line ends, or a
# gzip bomb of one line, which was held whole, then parsed, and ran the run out of memory with no word of why.
MAX_LINE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LandingPiece:
    """A slice of one landing file, not parsed yet: whole JSON lines (numbered from ``first_line``), or a
    whole Parquet or CSV file. Cutting a file into pieces (and inflating gzip, which holds the GIL) and
    parsing them (which does not) are separate steps, so they can run on separate threads."""

    name: str
    data: bytes
    first_line: int = 1
    lines: int = 0


# What a landing file holds, by the end of its name: JSON lines (Amplitude's own exports end in .json.gz),
# Parquet, or CSV; .gz is gzip. A day's other files, but for hidden ones and markers (names starting with
# "." or "_"), fail the day by name: ignoring one would drop its events without a word. So does an entry that is
# no regular file (``LandingZone`` refuses a folder, a named pipe, a socket, a device).
LANDING_TYPES = {
    ".jsonl.gz": "json", ".json.gz": "json", ".jsonl": "json", ".json": "json",
    ".parquet": "parquet", ".csv.gz": "csv", ".csv": "csv",
}


def landing_type(name: str) -> str:
    """``json``, ``parquet`` or ``csv``; a LandingFileError for any other file."""
    for suffix, kind in LANDING_TYPES.items():
        if name.endswith(suffix):
            return kind
    raise LandingFileError(f"not a landing file type: a landing day holds {', '.join(LANDING_TYPES)} files")


def landing_pieces(
    name: str, data: bytes | Iterable[bytes], chunk_bytes: int | None = None
) -> Iterator[LandingPiece]:
    """One landing file in pieces of consecutive lines: JSON in ~``chunk_bytes`` of text each (by default
    ``CHUNK_BYTES``; inflated when gzipped), Parquet and CSV whole. ``decode_piece`` parses each.

    ``data`` is the file's bytes, or its blocks in order (``LandingZone.read_blocks``): a gzipped file is
    inflated as its blocks arrive, so reading it overlaps with the work on its first pieces."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    with _naming(name):
        gzipped = name.endswith(".gz")
        if landing_type(name) != "json":
            yield LandingPiece(name, b"".join(_gunzip_chunks(data, chunk_bytes)) if gzipped else _whole(data))
            return
        texts = _gunzip_chunks(data, chunk_bytes) if gzipped else _split_lines(_whole(data), chunk_bytes)
        first_line = 1
        for text in texts:
            lines = count_lines(text)
            yield LandingPiece(name, text, first_line, lines)
            first_line += lines


def decode_piece(piece: LandingPiece) -> pl.DataFrame:
    """A piece as a raw frame: canonical names, values as text (or already canonically typed), file and line."""
    with _naming(piece.name):
        kind = landing_type(piece.name)
        if not piece.data:  # an empty file, of any type: a day (or a part of one) without events
            return _EMPTY_RAW
        if kind == "parquet":
            raw = _stringify(pl.read_parquet(io.BytesIO(piece.data)), first_line=1)
        elif kind == "csv":  # the header is line 1 (a record that spans lines counts as one)
            frame = _float_written_ids(_read_csv(piece.data))
            raw = _stringify(frame, first_line=2)
            # A blank line (or one of separators only, as spreadsheets leave below the data) holds no event:
            # skipped, as in JSON lines, not quarantined as an event without an id. The rest keep their lines.
            blank = frame.select(pl.all_horizontal(pl.all().is_null())).to_series()
            if blank.any():
                raw = raw.filter(~blank)
        else:
            raw = _read_jsonl(piece.data, piece.first_line, piece.lines)
        return raw.with_columns(pl.lit(piece.name).alias("source_file"))


@dataclass(frozen=True)
class JoinedPieces:
    """Consecutive JSON-lines pieces of small landing files (a Firehose delivery's hundreds of a few hundred events
    each), to be parsed in one go by ``decode_joined``: parsing each on its own cost ~0.4 ms of polars' set-up a
    file, more than its events."""

    pieces: tuple[LandingPiece, ...]


def joined_pieces(
    pieces: Iterable[LandingPiece], chunk_bytes: int | None = None
) -> Iterator[LandingPiece | JoinedPieces]:
    """``pieces`` (consecutive, in file order) with runs of JSON-lines pieces joined up to ~``chunk_bytes`` of text
    (by default ``CHUNK_BYTES``, what a big file's piece holds); a run of one, or any other piece, as it is.

    When ``pieces`` fails (a file that cannot be inflated), the pieces before are handed on first, as they were one
    by one: a day with two bad files names the first."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    held: list[LandingPiece] = []
    size = 0
    pieces = iter(pieces)
    while True:
        try:
            piece = next(pieces)
        except StopIteration:
            break
        except Exception:
            yield from _run_of(held)
            raise
        joinable = _joinable(piece)
        if not joinable or size + len(piece.data) > chunk_bytes:
            yield from _run_of(held)
            held, size = [], 0
        if not joinable:
            yield piece
            continue
        held.append(piece)
        size += len(piece.data)
    yield from _run_of(held)


def _joinable(piece: LandingPiece) -> bool:
    return bool(piece.data) and landing_type(piece.name) == "json"


def _run_of(pieces: list[LandingPiece]) -> Iterator[LandingPiece | JoinedPieces]:
    if len(pieces) == 1:
        yield pieces[0]
    elif pieces:
        yield JoinedPieces(tuple(pieces))


def decode_joined(joined: JoinedPieces) -> list[pl.DataFrame]:
    """The joined pieces' raw frames: one frame of all their rows, each with its file and line, when their text is
    the contract's shape throughout, a row a line; else each piece's own, as ``decode_piece`` reads it (a blank
    line, which polars skips, so that rows could not be told their line; a line that is no JSON object, quoted
    numbers, a file that fails: by its name)."""
    frame = _read_joined(joined.pieces)
    return [frame] if frame is not None else [decode_piece(piece) for piece in joined.pieces]


def _read_joined(pieces: tuple[LandingPiece, ...]) -> pl.DataFrame | None:
    """The pieces' text parsed in one polars call as the contract's typed JSON lines, a row a line, with each row's
    file and line; None when it cannot be (polars fails, or skips a blank line): ``_read_jsonl`` then reads each."""
    texts: list[bytes | memoryview] = []
    for piece in pieces:
        bom = piece.first_line == 1 and piece.data.startswith(codecs.BOM_UTF8)  # as _read_jsonl strips it
        texts.append(memoryview(piece.data)[len(codecs.BOM_UTF8):] if bom else piece.data)
        if not piece.data.endswith(b"\n"):  # a last line without its line end: the next file's is another line
            texts.append(b"\n")
    lines = np.array([piece.lines for piece in pieces], dtype=np.int64)
    try:
        frame = pl.read_ndjson(io.BytesIO(b"".join(texts)), schema=_JSON_TYPED)
    except Exception:  # whatever polars says of the text, each file's own reading says of that file, by name
        return None
    if frame.height != lines.sum():
        return None
    # Row r of piece k is on line first_line[k] + (r - the piece's first row).
    first_rows = np.cumsum(lines) - lines
    first_lines = np.array([piece.first_line for piece in pieces], dtype=np.int64)
    line = np.arange(frame.height, dtype=np.int64) + np.repeat(first_lines - first_rows, lines)
    owner = np.repeat(np.arange(len(pieces), dtype=np.uint32), lines)
    return frame.rename(AMPLITUDE_KEYS).with_columns(
        pl.lit(None, pl.String).alias("parse_error"),
        pl.Series("line", line, dtype=pl.get_index_type()),  # what with_row_index numbers a file's rows in
        pl.Series("source_file", [piece.name for piece in pieces], dtype=pl.String).gather(owner),
    )


def _read_csv(data: bytes) -> pl.DataFrame:
    """A CSV file's frame, every column as text. A file that is not UTF-8 (an export in cp1252, say) fails
    naming its first line that is not: every line with an accent in it would be, so quarantining them one by
    one would keep a few rows and hide the cause. Lines end in LF or CRLF, or in CR alone when the header's
    does (Excel for Mac's "CSV (Macintosh)", which read by LF was one header line and no event, silently; its
    quoted fields may hold an LF, a line break typed in a cell)."""
    header_end = re.search(rb"\r\n?|\n", data)
    eol = b"\r" if header_end is not None and header_end.group() == b"\r" else b"\n"
    try:
        return pl.read_csv(io.BytesIO(data), infer_schema=False, eol_char=eol.decode())
    except pl.exceptions.NoDataError:  # no header either: a byte order mark or a line end alone, as an empty file
        return pl.DataFrame(schema=dict.fromkeys(REQUIRED_COLUMNS, pl.String))
    except pl.exceptions.ComputeError:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(eol, 0, exc.start) + 1
            raise LandingFileError(
                f"line {line} is not UTF-8 text (byte {data[exc.start]:#04x}): landing files are UTF-8; "
                "re-export the file as UTF-8 (from Windows-1252, say: iconv -f cp1252 -t utf-8)"
            ) from None
        _fail_on_a_long_record(data)
        raise


def _fail_on_a_long_record(data: bytes) -> None:
    """A record with more fields than the header (an unquoted comma in a value, say) fails the file naming its
    line, where polars says only "found more fields than defined in 'Schema'" and suggests an option of its
    own. The line is the file's line on which the record ends (a quoted field may span lines)."""
    text = data.decode("utf-8").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    for record in reader:
        if len(record) > len(header):
            raise LandingFileError(
                f"line {reader.line_num} has {len(record)} fields, the header {len(header)}: a value holding a "
                "comma must be quoted"
            )


# A whole number as a float column writes it: pandas' and polars' to CSV write ``33333.0``, and from 10^16 up
# ``1e+16`` or ``1.2345678901234568e+16``; Java (Spark) ``1.2345678E7``. The exponent form is whole only when its
# value is (``_float_written_ids`` checks it); the ".0" form always is.
_FLOAT_WRITTEN = r"^-?(?:0|[1-9][0-9]*)\.0$|^-?[1-9](?:\.[0-9]+)?[eE]\+?[0-9]+$"


def _float_written_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """A CSV file's frame with each id column (``event_id``, ``user_id``) whose every value (but empty ones) is a
    whole number written as a float (``_FLOAT_WRITTEN``) read as those integers: ``33333.0`` is the user
    ``"33333"``, as in a Parquet float column or a JSON number. pandas writes an integer column with gaps as floats,
    so a file exported from pandas holds such columns. A column with any other value (``abc``, ``33333``, ``1.5``)
    is text and stays as written: ``1.0`` beside ``abc`` is a string id. A ".0" is cut from the text, so a long id
    keeps its digits; an exponent's value is the float's (``_number_text``), as Parquet has it.

    Costs a look at each id column's first value; only a column whose first value is written so (a pandas export)
    is matched in full (one regular expression over the column) and rewritten."""
    rewritten = []
    for col in ("event_id", "user_id"):
        if col not in frame.columns:  # _stringify names it
            continue
        ids = frame.get_column(col)
        given = ids.str.len_bytes() > 0
        first = given.arg_max()  # the first value given; None in a file without rows
        if first is None or not _is_float_written(ids[first]):
            continue
        number = ids.cast(pl.Float64, strict=False)
        whole = ids.str.contains(_FLOAT_WRITTEN) & (number == number.floor())
        if not (whole | ~given).fill_null(True).all():
            continue
        text = pl.col(col)
        rewritten.append(
            pl.when(text.str.ends_with(".0")).then(text.str.strip_suffix(".0"))
            .when(text.str.len_bytes() > 0).then(_number_text(text.cast(pl.Float64)))
            .otherwise(text)
            .alias(col)
        )
    return frame.with_columns(rewritten) if rewritten else frame


def _is_float_written(value: str | None) -> bool:
    return value is not None and re.fullmatch(_FLOAT_WRITTEN, value) is not None


class _ReadFailed(Exception):
    """Getting a file's bytes failed (its storage, not its content): ``_naming`` raises the cause as it is."""


def _whole(data: bytes | Iterable[bytes]) -> bytes:
    return data if isinstance(data, bytes) else b"".join(_read(data))


def _read(blocks: Iterable[bytes]) -> Iterator[bytes]:
    blocks = iter(blocks)
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except Exception as exc:
            raise _ReadFailed from exc
        yield block


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Any error decoding a file fails it as a whole, with its name. An error getting its bytes (S3
    unreachable, say) is raised as it is: a retry may succeed where a corrupt file never will."""
    try:
        yield
    except _ReadFailed as exc:
        raise exc.__cause__ from None
    except LandingFileError as exc:
        raise LandingFileError(f"cannot read landing file {name}: {exc}") from exc
    except Exception as exc:  # any decoder's error: the file as a whole is unreadable
        text = str(exc)
        shown = quoted(text)
        # A cause cut short is not kept: the UI and the alert show an error's causes whole.
        raise LandingFileError(f"cannot read landing file {name}: {type(exc).__name__}: {shown}") from (
            exc if shown == text else None
        )


# At most this many characters of a landing file's content (a header, a decoder's message quoting the file) go
# into an error: it is shown in the run's log, the UI and the alert, and a CSV header line of 10 MB (a file without
# line ends, or no CSV) made an error of 10 MB, or 40 MB of NUL bytes written out as \x00.
QUOTED_CHARS = 300


def quoted(text: str, limit: int = QUOTED_CHARS) -> str:
    """``text`` as an error may quote it: whole when short, else its first ``limit`` characters and how many more."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _gunzip_chunks(data: bytes | Iterable[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """The decompressed text in pieces of whole lines, ~``chunk_bytes`` each (gzip members concatenated)."""
    # wbits=47 reads gzip without a file object. The input is fed a slice at a time so that the output
    # held is a chunk, not the whole text (JSON lines compress ~10 x); each chunk is copied once. Slices of
    # 128 KB (~1.3 MB of text out per call, which stays in the CPU's caches until it is copied) inflate
    # at ~1.1-1.2 GB/s, slices of 1 MB at ~0.7-0.8 GB/s.
    feeds = _slices(data, max(1, chunk_bytes // 128))
    decompressor = None  # the next feed starts a gzip member
    pieces: list[bytes | memoryview] = []
    size = 0
    unbroken = 0  # once a chunk's text is inflated and no line ends in it: the length of its last line so far
    feed: bytes | memoryview = next(feeds, b"")
    taken = len(feed)  # the file's bytes read so far
    if not feed:  # an empty file, not an empty gzip stream: no text
        return
    while feed:
        if decompressor is None or decompressor.eof:  # a gzip member starts here
            start = taken - len(feed)
            while len(feed) < 2 and (more := next(feeds, b"")):
                feed, taken = bytes(feed) + bytes(more), taken + len(more)
            if bytes(feed[:2]) != _GZIP_MAGIC and (start or len(feed) >= 2):  # a 1-byte file: truncated
                _not_gzip(start, feed, feeds)
                break  # zeros padding the file after its last member
            decompressor = _inflate.decompressobj(47)
        try:
            out = decompressor.decompress(feed)
        except _inflate.error as exc:  # the decoder's own words ("Error -3 ...") do not say it is the data
            raise gzip.BadGzipFile(f"corrupt gzip data within bytes {taken - len(feed)}-{taken}: {exc}") from None
        if decompressor.eof:
            out += decompressor.flush()
            feed = decompressor.unused_data
        else:
            feed = b""
        if not feed:
            feed = next(feeds, b"")
            taken += len(feed)
        if not out:
            continue
        pieces.append(out)
        size += len(out)
        cut = out.rfind(b"\n") + 1 if size >= chunk_bytes else 0
        if cut:
            if unbroken and (line := unbroken + out.find(b"\n") + 1) > MAX_LINE_BYTES:  # the long line ends here
                raise _line_too_long(line)
            pieces[-1] = memoryview(out)[:cut]
            yield b"".join(pieces)
            pieces = [out[cut:]] if cut < len(out) else []
            size, unbroken = (len(pieces[0]) if pieces else 0), 0
        elif size >= chunk_bytes:
            unbroken = unbroken + len(out) if unbroken else _after_last_line_end(pieces)
            if unbroken > MAX_LINE_BYTES:
                raise _line_too_long(unbroken)
    if not decompressor.eof:
        raise gzip.BadGzipFile(
            f"truncated gzip stream: the file ends at byte {taken} inside compressed data (an upload or copy cut "
            "short?)"
        )
    if pieces:
        yield b"".join(pieces)


_GZIP_MAGIC = b"\x1f\x8b"


def _not_gzip(start: int, feed: bytes | memoryview, feeds: Iterator[memoryview]) -> None:
    """Where a gzip member should start there is none. At the file's start: not gzip (a plain file named .gz,
    say). After the last member, zeros that pad the file to a block size are skipped, as gzip(1) and Python's
    gzip do; anything else there is not gzip either, and would be lost without a word."""
    head = bytes(feed[:16])
    if start == 0:
        raise gzip.BadGzipFile(f"not gzip data: the file starts with {head!r}, not with gzip's bytes 1f 8b")
    for block in itertools.chain([feed], feeds):
        if bytes(block).strip(b"\0"):
            raise gzip.BadGzipFile(
                f"data after the end of the gzip stream, from byte {start} ({head!r}), is not gzip"
            )


def _slices(data: bytes | Iterable[bytes], step: int) -> Iterator[memoryview]:
    """``data`` (bytes, or blocks of bytes) in consecutive non-empty slices of at most ``step`` bytes."""
    for block in [data] if isinstance(data, bytes) else _read(data):
        view = memoryview(block)
        for start in range(0, len(view), step):
            yield view[start:start + step]


def _split_lines(data: bytes, chunk_bytes: int) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + chunk_bytes) + 1 if start + chunk_bytes < len(data) else len(data)
        if end <= start:  # one line longer than a chunk
            end = data.find(b"\n", start + chunk_bytes) + 1 or len(data)
            if end - start > MAX_LINE_BYTES:
                raise _line_too_long(end - start)
        yield data[start:end]
        start = end


def _after_last_line_end(pieces: list[bytes | memoryview]) -> int:
    """How many bytes of ``pieces`` (consecutive text) follow its last line end."""
    length = 0
    for piece in reversed(pieces):
        end = bytes(piece).rfind(b"\n") + 1
        length += len(piece) - end
        if end:
            break
    return length


def _line_too_long(length: int) -> LandingFileError:
    return LandingFileError(
        f"a line of more than {length >> 20} MB, where JSON lines hold one event a line (the limit is "
        f"{MAX_LINE_BYTES >> 20} MB): a file without line ends, or not JSON lines"
    )


def count_lines(text: bytes) -> int:
    """The lines of ``text``, a last one without its newline included. numpy counts ~1 GB/s without the GIL,
    in slices (bounded scratch memory); ``bytes.count`` holds the GIL for as long, and the reader thread
    shares it with the run."""
    view = np.frombuffer(text, dtype=np.uint8)
    newlines = sum(int(np.count_nonzero(view[i:i + _COUNT_SLICE] == 10)) for i in range(0, len(view), _COUNT_SLICE))
    return newlines + (1 if text and not text.endswith(b"\n") else 0)


_COUNT_SLICE = 16 * 1024 * 1024

# The contract's shape has session_id and revenue as JSON numbers: read typed, a file parses ~25 % faster.
# A file with any other shape (quoted numbers, fractions, booleans ...) is read again as text, and a file
# polars cannot read at all line by line; either way the vetting then judges each value.
_JSON_AS_TEXT = {key: pl.String for key in AMPLITUDE_KEYS}
_JSON_TYPED = _JSON_AS_TEXT | {"session_id": pl.Int64, "revenue": pl.Float64}


def _read_jsonl(data: bytes, first_line: int, lines: int) -> pl.DataFrame:
    """``data``'s JSON lines as a raw frame, each row numbered by its line in the file (the first is
    ``first_line``). polars skips blank lines, so a text with any (more ``lines`` than rows) is read line by
    line, which numbers rows by the lines they are on."""
    if first_line == 1 and data.startswith(codecs.BOM_UTF8):  # written by some Windows tools
        data = data[len(codecs.BOM_UTF8):]
    for schema in (_JSON_TYPED, _JSON_AS_TEXT):
        try:
            frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
        except pl.exceptions.ComputeError:
            continue
        if frame.height != lines:
            break
        frame = frame.rename(AMPLITUDE_KEYS).with_columns(pl.lit(None, pl.String).alias("parse_error"))
        return frame.with_row_index("line", offset=first_line)
    return _read_jsonl_line_by_line(data, first_line)


def _read_jsonl_line_by_line(data: bytes, first_line: int = 1) -> pl.DataFrame:
    """The slow path for a file with broken lines: good lines kept, each bad one marked for quarantine (a
    line that is not UTF-8 text too). A file whose first piece holds no JSON object at all is not JSON lines
    (a binary file, say): it fails the file. A later piece of only bad lines (a last line cut short) is
    quarantined."""
    rows = []
    # Lines end at "\n" only: JSON text may hold U+2028 and other characters str.splitlines() splits on.
    for number, line in enumerate(data.removesuffix(b"\n").split(b"\n"), start=first_line):
        if not line.strip():
            continue
        try:
            _refuse_deep_nesting(line)
            obj = json.loads(line.decode("utf-8"), object_pairs_hook=_first_of_each_key)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            row = {col: _as_string(obj.get(key)) for key, col in AMPLITUDE_KEYS.items()}
            _refuse_surrogates(row)
            row["parse_error"] = None
        # UnicodeDecodeError is a ValueError; a RecursionError (a line within MAX_JSON_NESTING parsed on a stack
        # already deep) would otherwise fail the whole file, and so the day.
        except (ValueError, RecursionError) as exc:
            row = dict.fromkeys(AMPLITUDE_KEYS.values())
            row["parse_error"] = (f"nested too deeply: {exc}" if isinstance(exc, RecursionError) else str(exc))[:200]
        row["line"] = number
        rows.append(row)
    if first_line == 1 and rows and all(row["parse_error"] is not None for row in rows):
        raise LandingFileError(
            f"not JSON lines: none of lines {first_line}-{rows[-1]['line']} is a JSON object "
            f"(line {rows[0]['line']}: {rows[0]['parse_error']})"
        )
    schema = {col: pl.String for col in AMPLITUDE_KEYS.values()} | {"parse_error": pl.String, "line": pl.UInt32}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.select(["line", *AMPLITUDE_KEYS.values(), "parse_error"])


# The deepest a JSON line's arrays and objects may nest (the event's own object is the first level) when its file is
# read line by line. Python's json gives up at a depth of its own, which is not the same on every Python: near
# 1,000 levels on 3.11 (less the caller's stack), 1,500 on 3.12, 10,000 on 3.13, so the same line was an event on
# one and malformed_json on another. Every supported Python parses this deep. (polars, reading a file whole, keeps
# an event up to 1,024 levels deep.)
MAX_JSON_NESTING = 512
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def _refuse_deep_nesting(line: bytes) -> None:
    """Refuses a line whose arrays and objects nest more than :data:`MAX_JSON_NESTING` levels deep (an event whose
    ``event_properties``, which the platform ignores, are whatever the app sends). Brackets are counted only on a
    line with more than that many opening ones; those inside strings are no nesting."""
    if line.count(b"[") + line.count(b"{") <= MAX_JSON_NESTING:
        return
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", line)):
        depth += 1 if bracket in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_NESTING:
        raise ValueError(f"nested too deeply: {deepest} levels of arrays and objects, more than {MAX_JSON_NESTING}")


def _first_of_each_key(pairs: list[tuple[str, object]]) -> dict:
    """An object with a key twice keeps its first value, as polars does: Python's last one gave the same line
    another user (or time) whenever some other line of its text was broken and the text was read line by line."""
    return dict(reversed(pairs))


def _refuse_surrogates(row: dict[str, str | None]) -> None:
    """A JSON escape of half a UTF-16 pair (``"\\ud83d"``, an emoji cut in two by a client) is valid JSON but no
    text: such a value fails its line (quarantined as ``malformed_json``), not the whole file, which is what
    storing it did, with no line."""
    for key, col in AMPLITUDE_KEYS.items():
        value = row[col]
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # its message would hold the surrogate itself, which is no text either
                raise ValueError(
                    f"{key}: \\u{ord(value[exc.start]):04x} is half of a UTF-16 surrogate pair, not text"
                ) from None


def _as_string(value: object) -> str | None:
    """A JSON value as the text polars' reader gives it: a number in a text field (a user id sent as 12345 or
    12345.0) is read the same whichever path reads its file, so a file with a broken line keeps its users."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float):  # json.dumps writes 12345.0 and 1e+20; polars 12345 and 100000000000000000000
        return np.format_float_positional(value, trim="-")
    return json.dumps(value)


# Columns of a Parquet landing file already of their canonical type are vetted as they are, like the
# numbers the JSON reader types: turning a day's event times into text only to parse them back cost as
# much as reading the file.
_KEPT_TYPED = ("event_time", "session_id", "revenue")


def _time_text(times: pl.Expr) -> pl.Expr:
    """UTC timestamps as the text the contract's JSON carries (what a quarantined row shows)."""
    return times.dt.strftime("%Y-%m-%d %H:%M:%S%.6f")


def _stringify(frame: pl.DataFrame, first_line: int) -> pl.DataFrame:
    """A Parquet or CSV landing file's frame as a raw frame, its rows numbered from ``first_line``."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise LandingFileError(
            f"missing required columns {missing} (has {len(frame.columns)} columns: {quoted(repr(frame.columns))})"
        )
    columns = []
    for col in CANONICAL_SCHEMA:
        if col not in frame.columns:
            columns.append(pl.lit(None, pl.String).alias(col))
        elif frame.schema[col] == pl.String or (col in _KEPT_TYPED and frame.schema[col] == CANONICAL_SCHEMA[col]):
            columns.append(pl.col(col))
        elif isinstance(frame.schema[col], pl.Datetime):
            utc = pl.col(col).dt.convert_time_zone("UTC") if frame.schema[col].time_zone else pl.col(col)
            columns.append(_time_text(utc).alias(col))
        elif frame.schema[col].is_float():
            columns.append(_number_text(pl.col(col)).alias(col))
        else:
            columns.append(pl.col(col).cast(pl.String))
    return frame.select(columns).with_columns(pl.lit(None, pl.String).alias("parse_error")).with_row_index(
        "line", offset=first_line
    )


def _number_text(number: pl.Expr) -> pl.Expr:
    """A float column as text, a whole number without its ".0": a user id in a float column (pandas writes an
    integer column with gaps as one) is the same user as in an integer column, or as a JSON number."""
    return pl.coalesce(_whole_number(number).cast(pl.String), number.cast(pl.String))


_EMPTY_RAW = pl.DataFrame(
    schema={"line": pl.UInt32, **{c: pl.String for c in (*AMPLITUDE_KEYS.values(), "parse_error", "source_file")}}
)


def parse_event_times(text: pl.Series) -> pl.Series:
    """Each text as a UTC timestamp in the first of ``_TIME_FORMATS`` that parses it, else as an epoch number
    (``_epoch_times``), else null.

    The first format is tried on every row, the others only on the rows it left unparsed (usually none):
    parsing is a third of vetting's time, and coalescing every format would parse every row each time.
    Those rows are stripped of blanks first: a CSV field padded to a width ("2025-03-01 08:00:00 ") is that
    time, as a padded revenue or session id is that number.
    """
    parsed = text.str.to_datetime(_TIME_FORMATS[0], time_unit="us", time_zone="UTC", strict=False, cache=False)
    for fmt in (*_TIME_FORMATS, None):  # None: an epoch number, last
        retry = (parsed.is_null() & text.is_not_null()).arg_true()
        if retry.is_empty():
            break
        stripped = text.gather(retry).str.strip_chars()
        again = (
            _epoch_times(stripped) if fmt is None
            else stripped.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False, cache=False)
        )
        parsed = parsed.scatter(retry, again)
    return parsed


# An epoch number's unit, by its size: a release that sends event_time as a number (a JSON number, a Parquet
# integer column, or the same as text) sends seconds (10 digits now), milliseconds (13, JavaScript's Date.now()),
# microseconds (16, Firebase's event_timestamp) or nanoseconds (19). Numbers outside these ranges (a year, 2025;
# a day number) are no time: null, so unparsable. A unit misread still lands decades away, which the export day's
# bounds quarantine. Each unit: (the smallest number, the number above the largest, microseconds in one).
_EPOCH_UNITS = ((1e9, 1e11, 1e6), (1e12, 1e14, 1e3), (1e15, 1e17, 1.0), (1e18, 1e20, 1e-3))


def _epoch_times(text: pl.Series) -> pl.Series:
    """Each text that is an epoch number (seconds, milliseconds, microseconds or nanoseconds since 1970, by
    ``_EPOCH_UNITS``; seconds may have a fraction) as a UTC timestamp, else null. Whole numbers are scaled
    exactly, as integers."""
    whole = pl.col("t").cast(pl.Int64, strict=False)
    number = pl.coalesce(whole.cast(pl.Float64), pl.col("t").cast(pl.Float64, strict=False))
    micros = pl.lit(None, pl.Int64)
    for low, high, to_micros in _EPOCH_UNITS:
        scaled = whole * int(to_micros) if to_micros >= 1 else whole // round(1 / to_micros)
        value = pl.coalesce(scaled, (number * to_micros).round().cast(pl.Int64, strict=False))
        micros = pl.when((number >= low) & (number < high)).then(value).otherwise(micros)
    return text.to_frame("t").select(micros.cast(pl.Datetime("us", "UTC"))).to_series().alias(text.name)


def _whole_number(number: pl.Expr) -> pl.Expr:
    """A float ``number`` as an Int64 when it is a whole number (and fits), null otherwise."""
    return pl.when(number == number.floor()).then(number).cast(pl.Int64, strict=False)


def vet_export_day(raw: pl.DataFrame | Iterable[pl.DataFrame], export_day: dt.date) -> VettedDay:
    """Types the raw rows of one export day, quarantines the untrustworthy ones, drops duplicate ids.

    ``raw`` may come in chunks (consecutive rows, in file order): each is typed and vetted on its own,
    so only the compact typed rows of the day are held, and duplicates are then dropped across them.
    """
    chunks = [raw] if isinstance(raw, pl.DataFrame) else raw
    valid: list[pl.DataFrame] = []
    quarantined: list[pl.DataFrame] = []
    rows_read = 0
    for chunk in chunks:
        rows_read += chunk.height
        kept, rejected = _vet_chunk(chunk, export_day)
        valid.append(kept)
        quarantined.append(rejected)
    if not valid:  # a day without rows: the empty frames of the vetting itself
        kept, rejected = _vet_chunk(_EMPTY_RAW, export_day)
        valid, quarantined = [kept], [rejected]
    # The first row of each event id, in file order, over the whole day; each chunk is filtered by its slice
    # of the mask and let go.
    first = first_of_each_id(pl.concat([v.get_column("event_id") for v in valid], rechunk=False))
    events, offset = [], 0
    while valid:
        chunk = valid.pop(0)
        events.extend(_kept_rows(chunk, first.slice(offset, chunk.height)))
        offset += chunk.height
    day_events = pl.concat(events, rechunk=False)
    return VettedDay(
        events=day_events,
        quarantine=pl.concat(quarantined),
        rows_read=rows_read,
        duplicates_dropped=offset - day_events.height,
    )


# A chunk with at most this many rows to drop keeps the rest as slices of itself (no copy): an export re-sends
# a few events here and there, and filtering every chunk of a day for them copied all its columns (~1 s of
# CPU for 10 M events). The Parquet writer takes the slices as they are.
_DROP_BY_SLICING = 16


def _kept_rows(chunk: pl.DataFrame, keep: pl.Series) -> list[pl.DataFrame]:
    """The rows of ``chunk`` where ``keep`` is true, in one piece or as several slices of it."""
    dropped = (~keep).arg_true()
    if dropped.is_empty():
        return [chunk]
    if len(dropped) > _DROP_BY_SLICING:
        return [chunk.filter(keep)]
    pieces, start = [], 0
    for position in dropped.to_list():
        if position > start:
            pieces.append(chunk.slice(start, position - start))
        start = position + 1
    if start < chunk.height:
        pieces.append(chunk.slice(start))
    return pieces


def first_of_each_id(ids: pl.Series) -> pl.Series:
    """True on the first row of each id (in order), False on the rows that repeat an earlier one.

    Ids are compared by their 64-bit hash first: sorting 28 M hashes finds the few that repeat, and only
    those rows (every duplicate, and the rare hash collision) are compared as strings. Exact, and ~6 x
    faster than ``is_first_distinct`` on a day of 28 M string ids (3.5 s against 21 s), which hashes
    and compares every string in one thread.
    """
    hashes = ids.hash()
    ordered = hashes.sort()
    repeated = ordered.filter(ordered == ordered.shift(1))
    first = pl.repeat(True, len(ids), dtype=pl.Boolean, eager=True)
    if repeated.is_empty():
        return first
    candidates = hashes.is_in(repeated.implode()).arg_true()
    return first.scatter(candidates, ids.gather(candidates).is_first_distinct())


def _vet_chunk(raw: pl.DataFrame, export_day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One chunk's trusted rows, typed (duplicates kept), and its quarantined rows with their reason."""
    day_start = dt.datetime.combine(export_day, dt.time(), tzinfo=dt.UTC)
    day_end = day_start + dt.timedelta(days=1)
    oldest = day_start - MAX_LATENESS

    # session_id and revenue are JSON numbers already typed by the reader, or text to parse here. A text of
    # blanks only, or empty ("" in a CSV written with every field quoted, or in JSON), is a missing value,
    # as an unquoted empty CSV field is: no session, no revenue; not a value to quarantine.
    # A session id written as a whole float ("1738108860000.0", as pandas writes an integer column with gaps) is
    # that integer; one with a fraction (1.5, or seconds with their milliseconds, 1735912068.049) is no epoch-ms
    # id, and cutting it to an integer would merge sessions: unparsable.
    if raw.schema["session_id"] == pl.String:
        session_text = pl.col("session_id").str.strip_chars()
        session = pl.coalesce(
            session_text.cast(pl.Int64, strict=False), _whole_number(session_text.cast(pl.Float64, strict=False))
        )
        session_given = session_text.str.len_bytes() > 0
    else:
        given = pl.col("session_id")
        session = _whole_number(given) if raw.schema["session_id"].is_float() else given.cast(pl.Int64)
        session_given = given.is_not_null()
    if raw.schema["revenue"] == pl.String:
        revenue_text = pl.col("revenue").str.strip_chars()
        revenue = revenue_text.cast(pl.Float64, strict=False)
        revenue_given = revenue_text.str.len_bytes() > 0
    else:
        revenue = pl.col("revenue").cast(pl.Float64, strict=False)
        revenue_given = pl.col("revenue").is_not_null()
    times = raw.get_column("event_time")
    typed_times = times.dtype == CANONICAL_SCHEMA["event_time"]  # a Parquet file's, already UTC timestamps
    typed = raw.with_columns(
        (times if typed_times else parse_event_times(times)).alias("_time"),
        revenue.alias("_revenue"),
        session.alias("_session"),
    )
    blank = lambda c: pl.col(c).is_null() | (pl.col(c).str.strip_chars_start().str.len_bytes() == 0)  # noqa: E731
    reason = (
        pl.when(pl.col("parse_error").is_not_null()).then(pl.lit("malformed_json"))
        .when(blank("event_id")).then(pl.lit("missing_event_id"))
        .when(blank("user_id")).then(pl.lit("missing_user_id"))
        .when(blank("event_type")).then(pl.lit("missing_event_type"))
        .when(pl.col("_time").is_null()).then(pl.lit("unparsable_event_time"))
        .when(pl.col("_time") >= day_end).then(pl.lit("event_time_after_export_day"))
        .when(pl.col("_time") < oldest).then(pl.lit("event_time_too_old"))
        .when(revenue_given.fill_null(False) & ~pl.col("_revenue").is_finite().fill_null(False))
        .then(pl.lit("unparsable_revenue"))
        .when(pl.col("_revenue") < 0).then(pl.lit("negative_revenue"))
        .when(pl.col("_revenue") > MAX_REVENUE).then(pl.lit("revenue_out_of_range"))
        .when(session_given.fill_null(False) & pl.col("_session").is_null()).then(pl.lit("unparsable_session_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    typed = typed.with_columns(reason.alias("reason"))

    quarantine = typed.filter(pl.col("reason").is_not_null()).select(
        "source_file", pl.col("line").cast(pl.Int64), "reason",
        "event_id", "user_id", _time_text(pl.col("event_time")) if typed_times else "event_time", "event_type",
        pl.col("session_id").cast(pl.String), pl.col("revenue").cast(pl.String),
        pl.col("parse_error").alias("detail"),
    )
    valid = typed.filter(pl.col("reason").is_null()).select(
        "event_id",
        "user_id",
        pl.col("_time").alias("event_time"),
        "event_type",
        pl.when(pl.col("_session") < 0).then(None).otherwise(pl.col("_session")).alias("session_id"),
        # An empty attribute ("" in a CSV with every field quoted, or in JSON) is a missing one, as an
        # unquoted empty CSV field is: user_daily keeps the last value seen, not a later event's "". (Empty,
        # not blank: stripping three columns of every event was ~0.5 s of CPU on a day of 10 M events.)
        *[pl.when(pl.col(c).str.len_bytes() == 0).then(None).otherwise(pl.col(c)).alias(c) for c in ATTRIBUTES],
        pl.col("_revenue").alias("revenue"),
    )
    return valid.cast(CANONICAL_SCHEMA), quarantine
