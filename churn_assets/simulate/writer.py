"""Rendering days of events into landing files, and writing them to a local path or S3.

JSON lines are assembled directly as bytes with numpy: every line is a row of a ``uint8`` matrix in which
each field is copied from a small pre-rendered table (event type + properties + revenue, user block,
version) or computed as digits (event time, session id, event id), variable-width fields padded with NUL
bytes that are then deleted with ``bytes.translate``. Lines come out in chunks of a few MB, which a
background thread gzips (one ``zlib`` stream per file, header mtime 0) and writes, so generation and
compression overlap on two cores.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from churn_assets.resources import filesystems
from churn_assets.simulate.population import (
    COUNTRY_CODES,
    EVENT_TYPES,
    PLATFORMS,
    PROPERTY_TABLE,
    DayEvents,
    version_name,
)

FORMATS = ("jsonl.gz", "jsonl", "parquet", "csv")
CHUNK_ROWS = 16_384
TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"

_DIGITS2 = np.frombuffer(b"".join(f"{i:02d}".encode() for i in range(100)), dtype=np.uint8).reshape(100, 2)


def _table(strings: list[str], width: int | None = None) -> np.ndarray:
    """Strings as a NUL-padded ``(len, max width)`` uint8 matrix."""
    encoded = [s.encode() for s in strings]
    width = width or max((len(b) for b in encoded), default=1) or 1
    out = np.zeros((len(encoded), width), np.uint8)
    for i, b in enumerate(encoded):
        out[i, : len(b)] = np.frombuffer(b, np.uint8)
    return out


_HEX4 = np.frombuffer(b"".join(f"{i:04x}".encode() for i in range(65536)), dtype=np.uint8).reshape(-1, 4)
_DIGITS4 = np.frombuffer(b"".join(f"{i:04d}".encode() for i in range(10000)), dtype=np.uint8).reshape(-1, 4)
_HMS = np.frombuffer(
    b"".join(f"{h:02d}:{m:02d}:{s:02d}".encode() for h in range(24) for m in range(60) for s in range(60)),
    dtype=np.uint8,
).reshape(-1, 8)


def hex_ids(ids: np.ndarray) -> np.ndarray:
    """uint64 ids as ``(n, 16)`` uint8 hex digits (big-endian, so the same on every machine)."""
    quads = ids.astype(">u8").view(">u2").astype(np.uint16)  # 4 x 16 bits per id, most significant first
    return _HEX4[quads].reshape(-1, 16)


def hex_strings(ids: np.ndarray) -> pl.Series:
    return pl.Series(np.ascontiguousarray(hex_ids(ids)).view("S16").ravel()).cast(pl.String)


def _c(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8)


@dataclass
class Tables:
    """Everything a day's rendering needs that does not change from day to day."""

    user_ids: list[str]
    user_id_series: pl.Series
    device_ids: list[str]
    platform: np.ndarray
    country: np.ndarray
    versions: list[str]
    first_epoch_day: int  # the first epoch day the date table covers
    dates: np.ndarray  # (k, 10) "YYYY-MM-DD" for epoch days first_epoch_day ...
    event_block: np.ndarray  # per property entry: "event_type":...,"revenue":...,"event_properties":{...}
    user_block: np.ndarray  # per user: "user_id":...,"device_id":...,"platform":...,"country":...
    version_block: np.ndarray


def build_tables(users: int, device_ids: np.ndarray, platform: np.ndarray, country: np.ndarray,
                 n_versions: int, start: dt.date, days: int) -> Tables:
    width = max(6, len(str(users - 1)))
    user_ids = [f"u{i:0{width}d}" for i in range(users)]
    device_strings = [b.decode() for b in np.ascontiguousarray(hex_ids(device_ids)).view("S16").ravel()]
    event_block = []
    for t, k, v, r in zip(PROPERTY_TABLE.event_type, PROPERTY_TABLE.key, PROPERTY_TABLE.value,
                          PROPERTY_TABLE.revenue):
        revenue = "null" if np.isnan(r) else json.dumps(float(r))
        event_block.append(f'"event_type":"{EVENT_TYPES[t]}","revenue":{revenue},"event_properties":{{"{k}":"{v}"}}')
    user_block = [
        f'"user_id":"{u}","device_id":"{dv}","platform":"{PLATFORMS[p]}","country":"{COUNTRY_CODES[c]}"'
        for u, dv, p, c in zip(user_ids, device_strings, platform.tolist(), country.tolist())
    ]
    versions = [version_name(i) for i in range(n_versions)]
    epoch = dt.date(1970, 1, 1)
    first = (start - epoch).days - 16
    date_strings = [(epoch + dt.timedelta(days=first + i)).isoformat() for i in range(days + 32)]
    return Tables(
        user_ids=user_ids,
        user_id_series=pl.Series("user_id", user_ids),
        device_ids=device_strings,
        platform=platform,
        country=country,
        versions=versions,
        first_epoch_day=first,
        dates=_table(date_strings),
        event_block=_table(event_block),
        user_block=_table(user_block),
        version_block=_table(versions),
    )


# ----------------------------------------------------------------------------------------------------
# JSON lines


class JsonlRenderer:
    """Renders rows of a :class:`DayEvents` as Amplitude-shaped JSON lines, chunk by chunk."""

    def __init__(self, tables: Tables):
        self.t = tables
        pieces: list[tuple[str, object]] = [
            ("c", '{"$insert_id":"'), ("id", 16), ("c", '","event_time":"'), ("date", 10), ("c", " "),
            ("hms", 8), ("c", "."), ("us2", 2), ("us4", 4), ("c", '",'),
            ("event", tables.event_block.shape[1]), ("c", ',"session_id":'), ("sid_hi", 5), ("sid_lo1", 4),
            ("sid_lo2", 4), ("c", ","), ("user", tables.user_block.shape[1]), ("c", ',"version_name":"'),
            ("version", tables.version_block.shape[1]), ("c", '"}\n'),
        ]
        self.slots: dict[str, slice] = {}
        self.consts: list[tuple[slice, np.ndarray]] = []
        pos = 0
        for kind, value in pieces:
            if kind == "c":
                arr = _c(value)  # type: ignore[arg-type]
                self.consts.append((slice(pos, pos + len(arr)), arr))
                pos += len(arr)
            else:
                self.slots[kind] = slice(pos, pos + int(value))  # type: ignore[arg-type]
                pos += int(value)
        self.width = pos
        self.buffer = np.zeros((CHUNK_ROWS, self.width), np.uint8)
        for sl, arr in self.consts:
            self.buffer[:, sl] = arr
        sid = self.slots["sid_hi"]
        self.sid_all = slice(sid.start, self.slots["sid_lo2"].stop)
        self.minus_one = np.zeros(self.sid_all.stop - self.sid_all.start, np.uint8)
        self.minus_one[:2] = _c("-1")

    def chunks(self, ev: DayEvents, rows: np.ndarray):
        """Yield the JSON lines of ``ev[rows]`` as bytes, CHUNK_ROWS lines at a time."""
        for a in range(0, len(rows), CHUNK_ROWS):
            yield self.render(ev, rows[a : a + CHUNK_ROWS])

    def render(self, ev: DayEvents, rows: np.ndarray) -> bytes:
        t, s = self.t, self.slots
        m = self.buffer[: len(rows)]
        m[:, s["id"]] = hex_ids(ev.event_id[rows])
        time_us = ev.time_us[rows]
        secs = time_us // 1_000_000
        micro = time_us - secs * 1_000_000
        epoch_day = secs // 86_400
        m[:, s["date"]] = t.dates[epoch_day - t.first_epoch_day]
        m[:, s["hms"]] = _HMS[secs - epoch_day * 86_400]
        high = micro // 10_000
        m[:, s["us2"]] = _DIGITS2[high]
        m[:, s["us4"]] = _DIGITS4[micro - high * 10_000]
        m[:, s["event"]] = t.event_block[ev.prop[rows]]
        # session id (epoch ms, 13 digits until 2286): the leading digits from a small per-chunk table
        sid = ev.session_id[rows]
        none = sid < 0
        valid = sid[~none] if none.any() else sid
        if len(valid):
            hi = sid // 100_000_000
            h0 = int(valid.min()) // 100_000_000
            h1 = int(valid.max()) // 100_000_000
            hi_table = _table([str(h) for h in range(h0, h1 + 1)], width=5)
            lo = sid - hi * 100_000_000
            lo1 = lo // 10_000
            m[:, s["sid_hi"]] = hi_table[np.clip(hi - h0, 0, h1 - h0)]
            m[:, s["sid_lo1"]] = _DIGITS4[lo1]  # in 0..9999 (also for -1, overwritten below)
            m[:, s["sid_lo2"]] = _DIGITS4[lo - lo1 * 10_000]
        if none.any():
            m[none, self.sid_all] = self.minus_one
        m[:, s["user"]] = t.user_block[ev.user[rows]]
        m[:, s["version"]] = t.version_block[ev.version[rows]]
        return m.tobytes().translate(None, b"\0")


def event_record(ev: DayEvents, row: int, t: Tables) -> dict:
    """One event as a JSON-ready dict (for the few rows rendered one by one, e.g. dirty rows)."""
    prop = int(ev.prop[row])
    revenue = PROPERTY_TABLE.revenue[prop]
    user = int(ev.user[row])
    return {
        "$insert_id": format_id(int(ev.event_id[row])),
        "event_time": format_time(int(ev.time_us[row])),
        "event_type": EVENT_TYPES[PROPERTY_TABLE.event_type[prop]],
        "revenue": None if np.isnan(revenue) else float(revenue),
        "event_properties": {PROPERTY_TABLE.key[prop]: PROPERTY_TABLE.value[prop]},
        "session_id": int(ev.session_id[row]),
        "user_id": t.user_ids[user],
        "device_id": t.device_ids[user],
        "platform": PLATFORMS[t.platform[user]],
        "country": COUNTRY_CODES[t.country[user]],
        "version_name": t.versions[int(ev.version[row])],
    }


def format_id(value: int) -> str:
    return f"{value:016x}"


def format_time(time_us: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%d %H:%M:%S.%f")


def jsonl_line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


# ----------------------------------------------------------------------------------------------------
# Canonical columns (parquet, csv)


CANONICAL_SCHEMA = {
    "event_id": pl.String,
    "user_id": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "event_type": pl.String,
    "session_id": pl.Int64,
    "platform": pl.String,
    "country": pl.String,
    "app_version": pl.String,
    "revenue": pl.Float64,
}


def canonical_frame(ev: DayEvents, rows: np.ndarray, t: Tables) -> pl.DataFrame:
    users = ev.user[rows]
    sid = ev.session_id[rows]
    revenue = PROPERTY_TABLE.revenue[ev.prop[rows]]
    return pl.DataFrame(
        {
            "event_id": hex_strings(ev.event_id[rows]),
            "user_id": t.user_id_series.gather(users),
            "event_time": pl.Series(ev.time_us[rows]).cast(pl.Datetime("us", "UTC")),
            "event_type": pl.Series(EVENT_TYPES).gather(ev.event_type[rows]),
            "session_id": pl.Series(sid),
            "platform": pl.Series(PLATFORMS).gather(t.platform[users]),
            "country": pl.Series(COUNTRY_CODES).gather(t.country[users]),
            "app_version": pl.Series(t.versions).gather(ev.version[rows]),
            "revenue": pl.Series(revenue).fill_nan(None),
        },
        schema=CANONICAL_SCHEMA,
    ).with_columns(pl.when(pl.col("session_id") >= 0).then(pl.col("session_id")).alias("session_id"))


def canonical_records(records: list[dict]) -> pl.DataFrame:
    """Dirty rows (canonical keys, ``event_time`` as a string or None) as a frame; times parsed leniently."""
    frame = pl.DataFrame(
        records,
        schema={**CANONICAL_SCHEMA, "event_time": pl.String},
        orient="row",
    )
    return frame


def render_table(frames: list[pl.DataFrame], file_format: str) -> bytes:
    buf = io.BytesIO()
    if file_format == "parquet":
        frames = [
            f.with_columns(pl.col("event_time").str.to_datetime(TIME_FORMAT, time_zone="UTC", strict=False))
            if f.schema["event_time"] == pl.String
            else f
            for f in frames
        ]
        pl.concat(frames, how="vertical").write_parquet(buf, compression="zstd", statistics=True)
    else:
        frames = [
            f if f.schema["event_time"] == pl.String
            else f.with_columns(pl.col("event_time").dt.strftime(TIME_FORMAT))
            for f in frames
        ]
        pl.concat(frames, how="vertical").write_csv(buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# Storage: a background thread compresses and writes, in submission order.


class BackgroundWriter:
    """Runs compression and writes on one worker thread, FIFO, with a bound on work in flight. Once a task failed
    (a write the storage refused), every later one is skipped: a day's ``_SUCCESS``, queued after its files, is never
    written over a file that was not."""

    def __init__(self, out_url: str, max_pending: int = 24):
        self.out_url = out_url
        self.s3 = filesystems.is_s3(out_url)
        self.fs = filesystems.filesystem(out_url)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simulate-writer")
        self.pending: deque[Future] = deque()
        self.max_pending = max_pending
        self.bytes_written = 0
        self.files_written = 0
        self.failed: BaseException | None = None  # the first task's error, after which nothing more is written

    def submit(self, fn, *args) -> Future:
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        future = self.pool.submit(self._unless_failed, fn, *args)
        self.pending.append(future)
        return future

    def _unless_failed(self, fn, *args):
        if self.failed is not None:
            raise RuntimeError("not done: an earlier write of the simulation failed") from self.failed
        try:
            return fn(*args)
        except BaseException as exc:
            self.failed = exc
            raise

    def write_file(self, path: str, pieces) -> Future:
        """Write ``pieces`` (bytes or futures of bytes) as one file, after everything submitted before."""
        return self.submit(self._write, path, pieces)

    def _write(self, path: str, pieces) -> None:
        data = [p.result() if isinstance(p, Future) else p for p in pieces]
        size = sum(len(p) for p in data)
        if self.s3:
            with filesystems.reaching(path, "write"):  # (its error names the file and what S3 said)
                self.fs.pipe(path, b"".join(data))
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
            with open(tmp, "wb") as fh:
                fh.writelines(data)
            os.replace(tmp, path)
        self.bytes_written += size
        self.files_written += 1

    def clear_folder(self, folder: str, prefix: str = "part-") -> Future:
        """Remove a previous run's ``_SUCCESS`` and ``part-*`` files from a day folder."""
        return self.submit(self._clear, folder, prefix)

    def _clear(self, folder: str, prefix: str) -> None:
        if self.s3:
            try:
                with filesystems.reaching(folder, "list"):
                    names = self.fs.ls(folder, detail=False)
            except FileNotFoundError:
                return
            stale = [n for n in names if n.rsplit("/", 1)[-1] == "_SUCCESS"
                     or n.rsplit("/", 1)[-1].startswith(prefix)]
            # the marker first, so a reader never sees a complete day with missing files
            stale.sort(key=lambda n: not n.endswith("/_SUCCESS"))
            for name in stale:
                self.fs.rm_file(name)
        else:
            if not os.path.isdir(folder):
                return
            marker = os.path.join(folder, "_SUCCESS")
            if os.path.exists(marker):
                os.remove(marker)
            for name in sorted(os.listdir(folder)):
                if name.startswith(prefix):
                    os.remove(os.path.join(folder, name))

    def close(self) -> None:
        """Waits for every task; raises the first that failed (those after it only say they were not done)."""
        try:
            while self.pending:
                try:
                    self.pending.popleft().result()
                except Exception:
                    if self.failed is None:
                        raise
        finally:
            self.pool.shutdown(wait=True)
        if self.failed is not None:
            raise self.failed


class GzipStream:
    """One gzip member compressed on the writer's thread, chunk by chunk, in order."""

    def __init__(self, writer: BackgroundWriter, level: int = 1):
        self.writer = writer
        self.obj = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip wrapper, header mtime 0
        self.parts: list[Future] = []

    def add(self, data: bytes) -> None:
        self.parts.append(self.writer.submit(self.obj.compress, data))

    def finish(self) -> list[Future]:
        self.parts.append(self.writer.submit(self.obj.flush))
        return self.parts
