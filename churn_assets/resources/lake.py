"""The lake: hive-partitioned Parquet on a local path or S3, written atomically.

Layout (DESIGN.md): daily partitions at ``{root}/{asset}/date=YYYY-MM-DD/``, monthly ones at
``{root}/{asset}/month=YYYY-MM/``. A partition's table is one file, ``data.parquet``; other artifacts of a
partition (a model, a report) sit beside it in the same folder.

Atomicity: a reader sees the old file or the new one, never a torn one. Locally a file is written under a
hidden temporary name in the same folder and renamed over the old one (``os.replace`` is atomic on POSIX);
on S3 one PUT (or one completed multipart upload) is atomic by itself.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

import polars as pl

from churn_assets.resources.filesystems import filesystem, is_s3, join, polars_storage_options, reaching

TABLE_FILE = "data.parquet"
_STALE_TMP_SECONDS = 3600


@dataclass(frozen=True)
class WrittenFile:
    url: str
    content_hash: str
    size_bytes: int


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def some_keys(keys: list[str]) -> str:
    """Partition keys for a message: the first five, and how many more."""
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def parquet_bytes(frame: pl.DataFrame, row_group_rows: int | None = None) -> bytes:
    """``frame`` as a Parquet file: zstd level 1, with statistics, in row groups of ``row_group_rows`` rows
    (polars' default when None)."""
    # zstd level 1 encodes a day of events ~2 x faster than level 3, for files ~10 % larger that read as fast.
    buffer = io.BytesIO()
    frame.write_parquet(
        buffer, compression="zstd", compression_level=1, statistics=True, row_group_size=row_group_rows
    )
    return buffer.getvalue()


class Lake:
    """Paths and atomic reads and writes under one root URL."""

    def __init__(self, root_url: str):
        self.root_url = root_url.rstrip("/") if is_s3(root_url) else root_url
        self.fs = filesystem(root_url)

    # -- paths ------------------------------------------------------------------------------------
    def partition_url(self, asset: str, column: str | None = None, key: str | None = None) -> str:
        """A partition's folder; an unpartitioned asset's folder when no column is given."""
        if column is None:
            return join(self.root_url, asset)
        return join(self.root_url, asset, f"{column}={key}")

    def table_url(self, asset: str, column: str | None = None, key: str | None = None) -> str:
        return join(self.partition_url(asset, column, key), TABLE_FILE)

    def stored_tables(self, asset: str, column: str, keys: list[str]) -> tuple[list[str], list[str]]:
        """The table URLs of the partitions ``keys`` of ``asset`` that are stored, and the keys that are not."""
        urls = {key: self.table_url(asset, column, key) for key in keys}
        if is_s3(self.root_url) and len(keys) > 1:
            # One listing of the keys' common prefix (a request per 1,000 objects) instead of a HEAD request
            # per partition: a range run's input over 120 days took ~0.4 s of requests, and their CPU.
            common = os.path.commonprefix([f"{column}={key}" for key in keys])
            with reaching(self.root_url, "list"):
                found = set(self.fs.find(self.partition_url(asset), prefix=common))
            stored = {key for key, url in urls.items() if self.fs._strip_protocol(url) in found}
        else:
            stored = {key for key, url in urls.items() if self.exists(url)}
        return [url for key, url in urls.items() if key in stored], [key for key in keys if key not in stored]

    # -- writes -----------------------------------------------------------------------------------
    def write_bytes(self, url: str, data: bytes) -> WrittenFile:
        if is_s3(url):
            with reaching(url, "write"):
                self.fs.pipe_file(url, data)
        else:
            _atomic_local_write(url, data)
        return WrittenFile(url=url, content_hash=content_hash(data), size_bytes=len(data))

    def write_table(self, url: str, frame: pl.DataFrame, row_group_rows: int | None = None) -> WrittenFile:
        return self.write_bytes(url, parquet_bytes(frame, row_group_rows))

    # -- reads ------------------------------------------------------------------------------------
    def exists(self, url: str) -> bool:
        with reaching(url, "look up"):
            return self.fs.exists(url)

    def checksum(self, url: str) -> str:
        """A token that changes when the file at ``url`` is rewritten (fsspec's: its size, modification time
        and inode locally, its ETag on S3)."""
        with reaching(url, "look up"):
            return str(self.fs.checksum(url))

    def read_bytes(self, url: str) -> bytes:
        with reaching(url, "read"):
            return self.fs.cat_file(url)

    def scan_tables(self, urls: list[str], hive_schema: dict[str, pl.DataType]) -> pl.LazyFrame:
        """A lazy scan of partition tables; the hive column comes from each path, so filters on it prune files.

        The first file's columns are the scan's. A later file's columns beyond them are not read (partitions
        written before a table lost columns, such as labels that carried their snapshot's features); a column
        the reader asks for and a file lacks is still an error.
        """
        return pl.scan_parquet(
            urls,
            hive_partitioning=True,
            hive_schema=hive_schema,
            storage_options=polars_storage_options(urls[0]),
            extra_columns="ignore",
        )


class LocalCopies:
    """Local copies of S3 partition tables, for the inputs of one step at a time.

    A scan of S3 files costs requests for each file it reads, on each collect: a footer, then ranges.
    Those are round trips, one after another. ``features`` reads its 28-day window in ~23 slices of
    users (at ~1 M daily users, ~2,500 requests and twice the window's bytes in footers alone), and a
    range run reads its days one by one (each ~2 requests an input). One concurrent download of each file
    replaces them: the scans then read local files. The copies are kept until another step asks for its
    own, and removed when the process exits (they go under the temporary directory, ``TMPDIR``); those of
    a process that was killed are removed by the next one (``remove_stale_copies``).
    """

    def __init__(self):
        self._root: str | None = None
        self._owner: str | None = None
        self._lock = threading.Lock()

    @property
    def root(self) -> str | None:
        """The folder that holds the copies (None before the first)."""
        return self._root

    def of(self, lake: Lake, urls: list[str], owner: str) -> list[str]:
        """Local paths of copies of ``urls`` (S3 objects), keeping their ``key=value`` folders for hive; the
        copies made for an earlier ``owner`` (a step) are removed."""
        with self._lock:
            if self._root is None:
                remove_stale_copies(tempfile.gettempdir())
                self._root = tempfile.mkdtemp(prefix=f"{_COPIES_PREFIX}{os.getpid()}-")
                atexit.register(shutil.rmtree, self._root, True)
            if owner != self._owner:
                for name in os.listdir(self._root):
                    shutil.rmtree(os.path.join(self._root, name), ignore_errors=True)
                self._owner = owner
            folder = tempfile.mkdtemp(dir=self._root)
        paths = [os.path.join(folder, lake.fs._strip_protocol(url)) for url in urls]
        for path in paths:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with reaching(urls[0], "read"):
            lake.fs.get(urls, paths)  # concurrently
        return paths


LOCAL_COPIES = LocalCopies()
_COPIES_PREFIX = "churn-s3-copies-"


def remove_stale_copies(parent: str, min_age_seconds: float = _STALE_TMP_SECONDS) -> list[str]:
    """Removes the copies left in ``parent`` by processes that were killed before they could (their pid
    is gone, and their folder has not changed for ``min_age_seconds``); returns the folders removed."""
    removed = []
    now = time.time()
    for entry in os.scandir(parent):
        if not (entry.name.startswith(_COPIES_PREFIX) and entry.is_dir()):
            continue
        pid = entry.name.removeprefix(_COPIES_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or _is_running(int(pid)) or now - entry.stat().st_mtime < min_age_seconds:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _atomic_local_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(folder)
    # A hidden name that does not end in .parquet: no reader globbing the lake picks it up.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _remove_stale_temporaries(folder: str) -> None:
    """Temporaries left by a killed writer; fresh ones may belong to a concurrent writer, so they stay."""
    now = time.time()
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            try:
                if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                    os.remove(entry.path)
            except FileNotFoundError:
                pass
