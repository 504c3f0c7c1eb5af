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
import contextlib
import datetime as dt
import errno
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import polars as pl

from churn_assets.resources.filesystems import (
    filesystem,
    is_s3,
    join,
    polars_storage_options,
    reaching,
    require_bucket,
    s3_listing_pages,
)

TABLE_FILE = "data.parquet"
# S3's limit for one PUT; a file below it is stored with one request, which answers with its ETag.
SINGLE_PUT_BYTES = 5 * 2**30
_STALE_TMP_SECONDS = 3600


@dataclass(frozen=True)
class WrittenFile:
    url: str
    content_hash: str
    size_bytes: int
    etag: str | None = None  # S3's, when the store gave it
    version: str | None = None  # the file's Lake.checksum as this write left it (None: the store gave no ETag)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def some_keys(keys: list[str]) -> str:
    """Partition keys for a message: the first five, and how many more."""
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def partition_key(url: str, column: str) -> str:
    """The key of the partition table at ``url``, from its folder's name alone (``.../{column}=KEY/data.parquet``):
    the folders above it, the lake's root, may hold ``key=value`` names of their own."""
    folder = url.rstrip("/").split("/")[-2]
    name, equals, key = folder.partition("=")
    if name != column or not equals:
        raise ValueError(f"{url} is not a partition table of a {column!r} partition (no {column}=KEY folder)")
    return key


def partition_value(key: str, dtype: pl.DataType) -> pl.Expr:
    """The partition ``key`` as a literal of its column's type (a ``date`` key is a Date)."""
    return pl.lit(dt.date.fromisoformat(key) if dtype == pl.Date else key, dtype)


# Rows per Parquet row group unless an asset sizes them (ROW_GROUP_ROWS): about polars' own default, but fixed.
# polars' default follows the frame's chunks, so the same rows computed in other pieces (a features day in
# more slices of users in a range run than alone) gave other bytes, hence another content hash and data version.
DEFAULT_ROW_GROUP_ROWS = 131_072


def parquet_bytes(frame: pl.DataFrame, row_group_rows: int | None = None) -> bytes:
    """``frame`` as a Parquet file: zstd level 1, with statistics, in row groups of ``row_group_rows`` rows
    (:data:`DEFAULT_ROW_GROUP_ROWS` when None): the same rows give the same bytes however they were chunked."""
    # zstd level 1 encodes a day of events ~2 x faster than level 3, for files ~10 % larger that read as fast.
    buffer = io.BytesIO()
    frame.write_parquet(
        buffer,
        compression="zstd",
        compression_level=1,
        statistics=True,
        row_group_size=row_group_rows or DEFAULT_ROW_GROUP_ROWS,
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
        found, missing = self.stored_table_etags(asset, column, keys)
        return list(found), missing

    def stored_table_etags(self, asset: str, column: str, keys: list[str]) -> tuple[dict[str, str], list[str]]:
        """:meth:`stored_tables`, each stored URL with its S3 ETag from the one listing that found it, or for a
        single key from its look-up (one HEAD, which also gives what :meth:`checksum` would ask again); ``""`` on
        disk."""
        urls = {key: self.table_url(asset, column, key) for key in keys}
        if is_s3(self.root_url) and len(keys) > 1:
            listed = self.etags(list(urls.values()))
        elif is_s3(self.root_url):
            listed = {url: etag for url in urls.values() if (etag := self.etag(url)) is not None}
        else:
            listed = {url: "" for url in urls.values() if self.exists(url)}
        missing = [key for key, url in urls.items() if url not in listed]
        if keys and not listed:  # a bucket that does not exist holds nothing either
            require_bucket(urls[keys[0]], "look up")
        return {url: listed[url] for url in urls.values() if url in listed}, missing

    # -- writes -----------------------------------------------------------------------------------
    def write_bytes(self, url: str, data: bytes) -> WrittenFile:
        """Stores ``data`` at ``url`` atomically; the result's ``version`` is what :meth:`checksum` says of the
        file this write left, taken from the write itself: a look-up after it could see another writer's file."""
        etag = None
        if is_s3(url):
            with reaching(url, "write"):
                # One PUT up to S3's limit for one (5 GB): it answers with the object's ETag, which s3fs's
                # multipart upload (its default from 100 MB) does not return. A larger file goes in s3fs's parts.
                one_put = {"chunksize": SINGLE_PUT_BYTES // 2} if len(data) < SINGLE_PUT_BYTES else {}
                response = self.fs.pipe_file(url, data, **one_put)
            etag = response.get("ETag") if isinstance(response, dict) else None
            version = _etag_version(etag) if etag else None
        else:
            version = _stat_version(_atomic_local_write(url, data))
        return WrittenFile(
            url=url, content_hash=content_hash(data), size_bytes=len(data), etag=etag, version=version
        )

    def write_table(self, url: str, frame: pl.DataFrame, row_group_rows: int | None = None) -> WrittenFile:
        return self.write_bytes(url, parquet_bytes(frame, row_group_rows))

    def remove(self, url: str) -> None:
        """Removes the file at ``url``, or the folder and everything under it; nothing when there is none."""
        with reaching(url, "remove"), contextlib.suppress(FileNotFoundError):
            self.fs.rm(url, recursive=True)

    # -- reads ------------------------------------------------------------------------------------
    def etags(self, urls: list[str]) -> dict[str, str]:
        """The S3 objects among ``urls`` that exist, with their ETags: one listing of the URLs' common
        prefix (a request per 1,000 objects) instead of a HEAD request per object. A range run's input over
        120 days took ~0.4 s of requests one by one, and their CPU.

        The listing runs from the first URL to the last only (keys come in order): the common prefix of a
        window across a month's end (``date=2026-``) or a year's (``date=202``) is the whole year or every day
        stored, which a day's refresh listed for each of its inputs through every January on a two-year lake."""
        stripped = {self.fs._strip_protocol(url): url for url in urls}
        first, last = min(stripped), max(stripped)
        bucket, _, prefix = os.path.commonprefix([first, last]).partition("/")
        found: dict[str, str] = {}
        try:
            with reaching(urls[0], "list"):
                for name, etag in self._listed_between(bucket, prefix, first, last, len(stripped)):
                    if name in stripped:
                        found[stripped[name]] = etag
        except FileNotFoundError:  # no such bucket: the caller says so
            return {}
        return found

    def _listed_between(
        self, bucket: str, prefix: str, first: str, last: str, expected: int
    ) -> Iterator[tuple[str, str]]:
        """``(bucket/key, ETag)`` of the objects under ``prefix`` from ``first`` to ``last`` (``bucket/key``s), in
        order: S3 starts the listing after a key just before ``first``'s, in pages sized for ``expected`` objects
        and a few beside them (a page of 1,000 at most), and it stops past ``last``."""
        pages = s3_listing_pages(
            self.fs, bucket, prefix, start_after=first.partition("/")[2][:-1], page_size=min(1000, 2 * expected + 8)
        )
        for entries, _ in pages:
            for entry in entries:
                name = f"{bucket}/{entry['Key']}"
                if name > last:
                    return
                yield name, entry.get("ETag", "")

    def etag(self, url: str) -> str | None:
        """The ETag of the S3 object at ``url`` (``""`` when the store gives none), None when there is no such
        object."""
        with reaching(url, "look up"):
            try:
                return self.fs.info(url).get("ETag", "")
            except FileNotFoundError:
                return None

    def exists(self, url: str) -> bool:
        with reaching(url, "look up"):
            return self.fs.exists(url)

    def checksum(self, url: str) -> str:
        """A token that changes when the file at ``url`` is rewritten: its size, modification time and inode
        locally, its ETag on S3 (what :meth:`write_bytes` returns as the written file's ``version``)."""
        if not is_s3(url):
            return _stat_version(os.stat(url))
        with reaching(url, "look up"):
            return _etag_version(self.fs.info(url)["ETag"])

    def read_bytes(self, url: str) -> bytes:
        """The whole file at ``url``; on S3 one GET. s3fs otherwise looks the object's size up first (a HEAD) to
        fetch one of over 50 MB in parts at once: the files read whole here (a model's) are smaller."""
        with reaching(url, "read"):
            return self.fs.cat_file(url, max_concurrency=1) if is_s3(url) else self.fs.cat_file(url)

    def table_schema(self, url: str) -> pl.Schema:
        """The columns a stored table holds, from its footer."""
        with reaching(url, "read"):
            return pl.scan_parquet(url, glob=False, storage_options=polars_storage_options(url)).collect_schema()

    def partition_tables(self, asset: str, column: str) -> list[str]:
        """The URLs of every stored partition table of ``asset`` (``{asset}/{column}=…/data.parquet``), in key
        order: one listing (on S3, a request per 1,000 files)."""
        pattern = join(self.root_url, asset, f"{column}=*", TABLE_FILE)
        with reaching(pattern, "list"):
            found = self.fs.glob(pattern)
        return sorted(self.fs.unstrip_protocol(path) if is_s3(self.root_url) else path for path in found)

    def rows_by_value(
        self, urls: list[str], column: str, values: list[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """The partition tables ``urls`` that hold rows (of ``values`` alone, when given), each (URL) with its rows
        per value of its string ``column``: that column alone read, every table in one scan. Raises polars' error
        when one of them is not Parquet."""
        if not urls:
            return {}
        scan = pl.scan_parquet(
            urls, schema={column: pl.String()}, extra_columns="ignore", hive_partitioning=False,
            include_file_paths="_url", storage_options=polars_storage_options(urls[0]),
        )
        if values is not None:
            scan = scan.filter(pl.col(column).is_in(pl.Series(values, dtype=pl.String()).implode()))
        found: dict[str, dict[str, int]] = {}
        with reaching(urls[0], "read"):
            counted = scan.group_by("_url", column).len().collect()
        for url, value, rows in counted.iter_rows():
            found.setdefault(url, {})[value] = rows
        return found


def scan_linked_tables(folder: str, partition: dict[str, pl.DataType]) -> pl.LazyFrame:
    """A lazy scan of the tables a folder of links holds (:meth:`LocalCopies.links`), with the partition column
    parsed from the links' folders alone, so a filter on it reads only the tables it selects.

    The first file's columns are the scan's: a later file's columns beyond them are not read (partitions written
    before a table lost columns, such as labels that carried their snapshot's features); a column the reader asks
    for and a file lacks is still an error.
    """
    return pl.scan_parquet(
        folder.rstrip("/") + "/",
        hive_partitioning=True,
        hive_schema=partition,
        glob=False,
        extra_columns="ignore",
    )


class LocalCopies:
    """Local copies of S3 partition tables, for the steps of one run: the range partitions it wrote and the
    inputs its steps downloaded; and the folders of links a step's inputs are scanned through.

    A scan of S3 files costs requests for each file it reads, on each collect: a footer, then ranges.
    Those are round trips, one after another. ``features`` reads its 28-day window in ~23 slices of
    users (at ~1 M daily users, ~2,500 requests and twice the window's bytes in footers alone), and a
    range run reads its days one by one (each ~2 requests an input). A local copy of each file replaces
    them: the scans then read local files.

    * A copy is kept for the run's next steps that read the same table, with the object's ETag it holds:
      a range partition the IO manager stores (``keep``), with the ETag its upload got back, and an input a
      step downloaded (``scan``), with the ETag the listing that found it gave. It is used only while the
      listing of the input shows that ETag, so another writer's version is downloaded instead (and replaces
      it). A daily run's ``features`` and ``labels`` read the same ``user_daily`` days, a range run's
      ``features`` check the ``install_times`` it wrote, weekly scoring's steps the same ``features[D]``.
    * Copies are kept for the last ``assets`` tables (assets) a step of the run read or wrote; an input
      without an ETag, and a ``scanning`` block's downloads, for the step alone.
    * The rest of an input is downloaded once, concurrently, whole (``scan``).
    * An input, local or copied, is scanned through a folder of links that name only their partition
      (``links``), so the scan finds the partition column there and nowhere else in a path.

    Nothing a step may still scan is removed under it (it scans hard links to the copies): the links of a step,
    its own downloads, and the copies replaced or of tables fallen out of the last ``assets``, are removed when
    another step begins (asks for copies or keeps one), everything when another run's step begins (a copy is
    never used past its run: ``owner`` is ``run id/step key``, :func:`step_owner`), and the lot when the process
    exits. Everything goes under the temporary directory (``TMPDIR``); what a process that was killed left is
    removed by the next one (``remove_stale_copies``).
    """

    def __init__(self, assets: int = 3):
        self._assets = assets
        self._root: str | None = None
        self._owner: str | None = None
        self._lock = threading.Lock()
        self._downloads: list[str] = []  # folders of the current step's links and own downloads
        self._copies: dict[str, tuple[str, str]] = {}  # S3 URL -> (local path, the ETag of the object it holds)
        self._recent: list[str] = []  # the tables whose copies are kept (``_table``), used longest ago first
        self._doomed: list[str] = []  # paths to remove when another step begins

    @property
    def root(self) -> str | None:
        """The folder that holds the copies (None before the first)."""
        return self._root

    def of(
        self, lake: Lake, urls: list[str], owner: str, etags: Mapping[str, str], keep: bool = True
    ) -> list[str]:
        """Local paths of copies of ``urls`` (S3 objects), keeping their ``key=value`` folders for hive: the
        ones kept for the run while the store still holds them (``etags``: the objects' ETags now, from the
        listing that found them, ``Lake.stored_table_etags``), the others downloaded, and kept for the run's next
        steps (``keep``; else for this step alone)."""
        with self._lock:
            root = self._begin(owner)
            kept = {url: self._copies[url] for url in urls if url in self._copies}
        paths = {url: path for url, (path, etag) in kept.items() if etags.get(url) == etag}
        missing = [url for url in urls if url not in paths]
        targets: list[str] = []
        if missing:
            folder = tempfile.mkdtemp(dir=root)
            with self._lock:
                self._downloads.append(folder)
            targets = [os.path.join(folder, lake.fs._strip_protocol(url)) for url in missing]
            for path in targets:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                with reaching(missing[0], "read"):
                    lake.fs.get(missing, targets)  # concurrently
            except OSError as exc:
                if exc.errno not in _LOCAL_DISK_FULL:
                    raise
                # Said of the local disk, or "No space left on device" reads as the bucket being full.
                raise OSError(
                    exc.errno,
                    f"could not copy {missing[0]} and {len(missing) - 1} more to the temporary directory {folder} "
                    f"(TMPDIR: a run on S3 copies its inputs there): {exc.strerror}",
                ) from exc
            paths.update(zip(missing, targets, strict=True))
        if keep:
            with self._lock:
                self._use({_table(url) for url in urls})
                if missing and self._owner == owner:  # (else another step began, and removed the downloads)
                    self._downloads.remove(folder)
                    for url, path in zip(missing, targets, strict=True):
                        if etags.get(url):
                            self._hold(url, path, etags[url])
                        else:  # which object it holds is not known: for this step alone
                            self._doomed.append(path)
        return [paths[url] for url in urls]

    def links(self, paths: list[str], column: str, keys: list[str], owner: str) -> str:
        """A new folder holding a link ``{column}=KEY/data.parquet`` to each local table of ``paths`` (the
        partitions ``keys``), for :func:`scan_linked_tables`: the tables' own paths may hold other
        ``key=value`` folders (the lake's root, ``TMPDIR``), which a hive scan of them would take for columns.

        A hard link where it can be (the table on the same file system as ``TMPDIR``): it keeps the file the step
        began with, which another run's write replaces in the lake (under a new inode) without changing it, so
        every collect of the scan reads the same version. A symbolic link otherwise, which follows the lake's
        file (docs/operations.md, "Runs that overlap")."""
        with self._lock:
            root = self._begin(owner)
        folder = tempfile.mkdtemp(dir=root, prefix="links-")
        with self._lock:
            self._downloads.append(folder)
        for path, key in zip(paths, keys, strict=True):
            partition = os.path.join(folder, f"{column}={key}")
            os.mkdir(partition)
            _link(os.path.abspath(path), os.path.join(partition, TABLE_FILE))
        return folder

    def scan(
        self, lake: Lake, urls: list[str], partition: dict[str, pl.DataType], owner: str,
        etags: Mapping[str, str] | None = None, keep: bool = True,
    ) -> pl.LazyFrame:
        """A lazy scan of exactly the partition tables ``urls``, with the partition column (``partition``: its name
        and type) holding each table's key, that reads the same version of each table however many times and
        however late it is collected, while other runs rewrite them: S3 objects downloaded whole, one GET each
        (:meth:`of`; ``etags`` and ``keep`` as there), and scanned through links (:meth:`links`,
        :func:`scan_linked_tables`), hard ones to local tables where they can be. polars' ranged reads of an S3 object
        replaced between two of them mixed the two files or panicked, and a scan of a local table collected
        again read the new file. A filter on the partition column reads only the tables it selects."""
        ((column, _),) = partition.items()
        keys = [partition_key(url, column) for url in urls]
        paths = self.of(lake, urls, owner, etags or {}, keep) if is_s3(urls[0]) else urls
        return scan_linked_tables(self.links(paths, column, keys, owner), partition)

    @contextlib.contextmanager
    def scanning(
        self, lake: Lake, urls: list[str], partition: dict[str, pl.DataType], owner: str
    ) -> Iterator[pl.LazyFrame]:
        """:meth:`scan`, whose downloads and links are removed when the block ends, not when another step begins,
        and not kept for the next steps: for a step that reads many such scans one after another (training_set's
        months, each ~90 days of features). Copies kept for the run are read, not removed."""
        with self._lock:
            self._begin(owner)
            before = len(self._downloads)
        try:
            yield self.scan(lake, urls, partition, owner, keep=False)
        finally:
            with self._lock:
                mine = self._downloads[before:] if self._owner == owner else []  # (or another step removed them)
                del self._downloads[len(self._downloads) - len(mine) :]
            for folder in mine:
                shutil.rmtree(folder, ignore_errors=True)

    def keep(self, lake: Lake, written: WrittenFile, data: bytes, owner: str) -> None:
        """Keeps ``data``, just stored at ``written.url`` with ``written.etag``, for the next steps that read
        it. Without an ETag, or when the local disk refuses it, nothing is kept (the copy is downloaded when
        needed)."""
        if written.etag is None:
            return
        with self._lock:
            root = self._begin(owner)
            self._use({_table(written.url)})
        path = os.path.join(root, "written", lake.fs._strip_protocol(written.url))
        try:
            _atomic_local_write(path, data, durable=False)
        except OSError:
            return
        with self._lock:
            if self._owner == owner:
                self._hold(written.url, path, written.etag)
            else:
                self._doomed.append(path)

    def _begin(self, owner: str) -> str:
        """The copies' folder; when ``owner`` is another step than the last, what nothing can scan any more
        is removed, and when it is a step of another run, every copy."""
        if self._root is None:
            remove_stale_copies(tempfile.gettempdir())
            self._root = tempfile.mkdtemp(prefix=f"{_COPIES_PREFIX}{os.getpid()}-")
            atexit.register(shutil.rmtree, self._root, True)
        if owner != self._owner:
            if _run_of(owner) != _run_of(self._owner or ""):
                for table in self._recent:
                    self._forget(table)
                self._recent = []
            for folder in self._downloads:
                shutil.rmtree(folder, ignore_errors=True)
            for path in self._doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            self._downloads, self._doomed, self._owner = [], [], owner
        return self._root

    def _use(self, tables: set[str]) -> None:
        """Marks ``tables`` as the ones used last; the copies of those used before the last ``assets`` go."""
        for table in sorted(tables):
            if table in self._recent:
                self._recent.remove(table)
            self._recent.append(table)
        while len(self._recent) > self._assets:
            self._forget(self._recent.pop(0))

    def _hold(self, url: str, path: str, etag: str) -> None:
        """Keeps the copy at ``path`` of ``url``'s object of ``etag`` while its table is among the last used, in
        place of an older one (which goes when another step begins: a scan may still read it)."""
        before = self._copies.pop(url, None)
        if before is not None and before[0] != path:
            self._doomed.append(before[0])
        if _table(url) in self._recent:
            self._copies[url] = (path, etag)
        else:
            self._doomed.append(path)

    def _forget(self, table: str) -> None:
        for url, (path, _) in list(self._copies.items()):
            if _table(url) == table:
                del self._copies[url]
                self._doomed.append(path)


def step_owner(step: object) -> str:
    """Who asks :data:`LOCAL_COPIES` for copies: a step execution context's run id and step key."""
    return f"{step.run_id}/{step.step.key}"  # type: ignore[attr-defined]


def _run_of(owner: str) -> str:
    """The run of an ``owner`` (:func:`step_owner`); an owner without one is a run of its own."""
    run, slash, _ = owner.partition("/")
    return run if slash else owner


def _table(url: str) -> str:
    """The table (the asset's folder) a partition table's URL is of: ``.../{asset}/{column}=KEY/data.parquet``."""
    return url.rsplit("/", 2)[0]


LOCAL_COPIES = LocalCopies()
# A local disk that takes no more: full, over a quota, or over the process's file size limit.
_LOCAL_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
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


def _link(target: str, link: str) -> None:
    """A hard link ``link`` to ``target``; a symbolic one when the file system refuses (another device, or one
    without hard links)."""
    try:
        os.link(target, link)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINK:
            raise
        os.symlink(target, link)


# A hard link across file systems (EXDEV), or where the file system has none or refuses them (EPERM: some
# network and FUSE mounts, Linux's protected_hardlinks on a file of another user).
_NO_HARD_LINK = (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK)


def _atomic_local_write(path: str, data: bytes, durable: bool = True) -> os.stat_result:
    """Writes ``path`` through a temporary file renamed over it; returns the file's stat as written (its
    size, modification time and inode stay those of the file the rename puts in place).

    An error of the disk names ``path``: a full disk or a quota fails a write with "No space left on
    device" and no file name, which does not say whether the lake or the temporary directory is full."""
    try:
        return _replace_through_temporary(path, data, durable)
    except OSError as exc:
        if exc.errno is None:
            raise
        # OSError(errno, ...) is the errno's own class (PermissionError for EACCES), as the error was.
        raise OSError(exc.errno, f"could not write {path}: {exc.strerror}") from exc


def _replace_through_temporary(path: str, data: bytes, durable: bool) -> os.stat_result:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(folder)
    # A hidden name that does not end in .parquet: no reader globbing the lake picks it up.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:  # a temporary copy need not survive a crash of the machine
                os.fsync(handle.fileno())
            written = os.fstat(handle.fileno())  # after the last write: closing changes none of it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return written


def _stat_version(stat: os.stat_result) -> str:
    return f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}"


def _etag_version(etag: str) -> str:
    return etag.strip('"')


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
