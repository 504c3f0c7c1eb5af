"""The landing zone: where the app's exports arrive (``CHURN_LANDING_URL``), read, never written.

A day's export is ``events/date=YYYY-MM-DD/`` with its data files and a ``_SUCCESS`` marker written last (DESIGN.md).
This module lists the days and their files (locally or on S3), and reads the files in blocks: on the local disk only
regular files inside the zone, on S3 many small files at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import io
import os
import stat
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

import dagster as dg
import fsspec
import fsspec.asyn
from pydantic import Field

from churn_assets.resources.filesystems import (
    filesystem,
    is_s3,
    join,
    reaching,
    require_bucket,
    s3_listing_pages,
)

SUCCESS_MARKER = "_SUCCESS"
# A landing file is read in blocks of this size (one ranged GET each on S3; its size and ETag as its day's listing gave
# them, else after a HEAD for them).
BLOCK_BYTES = 8 * 1024 * 1024
# An S3 landing file up to a block is fetched whole in one GET, up to FILES_AT_ONCE of them at once (BATCH_BYTES in
# all at most): Kinesis Data Firehose delivers a day as 288-1,500 files of a few KB to a few MB, which one after
# another, a HEAD and a GET each, took 1,500 x 2 round trips (~70 s of a 480 k-event day at 20 ms a request).
WHOLE_FILE_BYTES = BLOCK_BYTES
FILES_AT_ONCE = 64
BATCH_BYTES = 4 * BLOCK_BYTES


class NotARegularFileError(OSError):
    """A landing day's entry that is no regular file (a folder, a named pipe, a socket, a device): it holds no
    bytes to read, or never-ending ones (a pipe's read waited for a writer forever, and a run's SIGTERM with it).
    It fails the day by name, as a file of another type does; no retry can make it a file."""


@dataclass(frozen=True)
class LandingDay:
    """A complete landing day as one listing found it: its data files, and its ``_SUCCESS`` marker's version
    (what ``raw_events`` records as ``landing_version``, and the landing sensor compares)."""

    files: list[str]
    version: str
    sizes: tuple[int, ...] = ()  # each file's size in bytes, as listed (none given: unknown)
    etags: tuple[str, ...] = ()  # each S3 file's ETag, as listed (none given, or "": unknown)

    def listed(self, url: str) -> tuple[int, str] | None:
        """The size and ETag the listing gave the file ``url`` (for ``LandingZone.read_blocks``); None when it gave
        no ETag."""
        if not self.etags or not self.etags[index := self.files.index(url)]:
            return None
        return self.sizes[index], self.etags[index]

    def batches(self) -> Iterator[list[str]]:
        """The files in order, in runs to fetch together (``LandingZone.read_batch``): consecutive files of up to
        ``WHOLE_FILE_BYTES`` each, ``FILES_AT_ONCE`` and ``BATCH_BYTES`` at most; a larger file (or one of unknown
        size) alone."""
        batch: list[str] = []
        held = 0
        for url, size in zip(self.files, self.sizes or [None] * len(self.files), strict=True):
            small = size is not None and size <= WHOLE_FILE_BYTES
            if batch and (not small or len(batch) == FILES_AT_ONCE or held + size > BATCH_BYTES):
                yield batch
                batch, held = [], 0
            if not small:
                yield [url]
                continue
            batch.append(url)
            held += size
        if batch:
            yield batch


class LandingZone(dg.ConfigurableResource):
    """The read-only landing zone: ``{url}/events/date=YYYY-MM-DD/`` folders, complete once ``_SUCCESS`` exists."""

    url: str = Field(description="Root of the landing zone: a local path or s3://bucket/prefix.")
    max_quarantined_share: float = Field(
        default=0.5,
        description="Above this share of a day's rows quarantined, the day fails raw_events' blocking check "
        "(CHURN_MAX_QUARANTINED_SHARE).",
    )

    def day_url(self, day: dt.date) -> str:
        return join(self.url, "events", f"date={day.isoformat()}")

    def data_files(self, day: dt.date) -> LandingDay:
        """The day's files, sorted by name, but for hidden ones and markers (names starting with "." or
        "_"), and its marker's version; fails clearly when the day is absent, incomplete or without a file."""
        fs = filesystem(self.url)
        folder = self.day_url(day)
        own = fs._strip_protocol(folder).rstrip("/")
        try:  # one listing (one request on S3), not a look-up and then a listing
            with reaching(folder, "list"):  # a landing bucket that does not exist is not a missing day
                # On S3 the folder's own marker object (``date=D/``, which the AWS console, Hadoop's S3A and
                # others create for a folder) is listed as a file named like the folder: it is not a file in it.
                listed = {
                    _name(info["name"]): info
                    for info in fs.ls(folder, detail=True)
                    if info["name"].rstrip("/") != own
                }
        except FileNotFoundError:
            require_bucket(folder, "list")
            raise FileNotFoundError(f"no landing folder for {day} at {folder}") from None
        except NotADirectoryError:  # CHURN_LANDING_URL, or a folder on the way, is a file
            raise FileNotFoundError(
                f"no landing folder for {day} at {folder}: a file is in its place (is CHURN_LANDING_URL a file?)"
            ) from None
        if SUCCESS_MARKER not in listed:
            raise FileNotFoundError(
                f"landing day {day} is not complete: {join(folder, SUCCESS_MARKER)} does not exist yet"
            )
        # Hidden files and markers are not data; any other entry is read, or fails the day by name.
        names = [n for n in sorted(listed) if not n.startswith((".", "_"))]
        # A folder (on S3, a prefix: date=D/events.json.gz/part-0, as Spark writes its output) is seen here; a
        # local entry of another kind when it is opened (read_blocks), which judges the file it opened.
        for name in names:
            if listed[name]["type"] == "directory":
                raise NotARegularFileError(_not_a_regular_file(join(folder, name), "a folder"))
        files = [join(folder, n) for n in names]
        if not files:  # an export that wrote its marker and no file: ingesting no events would hide it
            raise FileNotFoundError(
                f"landing day {day} is complete but holds no data file at {folder} "
                "(a day without events is delivered as an empty file)"
            )
        if not is_s3(folder):
            _refuse_links_out_of(self.url, files)
        sizes = tuple(int(listed[n].get("size") or 0) for n in names)
        etags = tuple(str(listed[n].get("ETag") or "") for n in names)
        return LandingDay(files, _marker_version(listed[SUCCESS_MARKER]), sizes, etags)

    def read_batch(self, file_urls: list[str]) -> list[Iterable[bytes]]:
        """Each file's bytes in blocks, as :meth:`read_blocks` gives them. A run of small S3 files
        (``LandingDay.batches``) is fetched at once, each file whole in one GET (no HEAD: its size was listed),
        and held; a file's error getting it (gone, access denied) is raised by its own blocks, as read_blocks
        raises it. Any other file is read as its blocks are taken."""
        if len(file_urls) == 1 or not is_s3(self.url):
            return [self.read_blocks(url) for url in file_urls]
        fs = filesystem(self.url)
        fetched = fsspec.asyn.sync(fs.loop, _gathered, [fs._cat_file(url, max_concurrency=1) for url in file_urls])
        return [_fetched_blocks(url, data) for url, data in zip(file_urls, fetched, strict=True)]

    def read_blocks(
        self, file_url: str, block_bytes: int = BLOCK_BYTES, listed: tuple[int, str] | None = None
    ) -> Iterator[bytes]:
        """The file's bytes in consecutive blocks (one ranged GET each on S3), without holding the file. A local
        file is read only once it is known, as opened, to be a regular file inside the landing zone.

        On S3 each block is read from the object of one ETag (a file replaced while it is read fails with s3fs'
        ``FileExpired``): ``listed``'s, the size and ETag of the file as its day's listing gave them
        (``LandingDay.listed``), else a look-up's (a HEAD) first."""
        with reaching(file_url, "read"):
            if is_s3(file_url):
                handle = _s3_file(filesystem(self.url), file_url, block_bytes, listed)
            else:
                handle = _open_landing_file(self.url, file_url)
            with handle:
                while block := handle.read(block_bytes):
                    yield block

    def day_folders(self) -> list[str]:
        """The names ``X`` of the folders ``events/date=X/``, as written (not only days), sorted: one listing of
        ``events/`` itself, not of the files in its folders (on S3, a request per 1,000 folders)."""
        fs = filesystem(self.url)
        events = join(self.url, "events")
        try:
            with reaching(events, "list"):
                return _day_folders(fs, events)
        except FileNotFoundError:  # a landing bucket that does not exist is not an empty landing zone
            require_bucket(events, "list")
            return []

    def days(self, only: Collection[str] | None = None) -> tuple[dict[str, str], list[str]]:
        """The complete days with their marker's version, and the days with files but no ``_SUCCESS`` (an
        export still writing, or one that stopped), among the folders ``events/date=X/`` named in ``only`` (all
        of them when None). All: one recursive listing of ``events/`` (on S3, a page of 1,000 files per request,
        where a glob lists each day's folder on its own). ``only``: each folder on its own locally, and on S3
        one listing from the first day to the last when they fall in consecutive months (the landing sensor's
        recent days: one request where a listing per month took two or three), else one per month the days fall
        in (``date=YYYY-MM``; all at once beyond ``MAX_MONTH_LISTINGS``). On S3 the listing itself says whether
        ``events/`` holds anything: no look-up first (a HEAD and a listing, every tick of the sensor). No glob
        pattern: the landing root may hold glob characters (``[``, ``?``)."""
        fs = filesystem(self.url)
        events = join(self.url, "events")
        with reaching(events, "list"):
            exists = is_s3(events) or fs.exists(events)  # (a bucket that does not exist fails S3's listing)
            listed = _listing(fs, events, only) if exists else {}
        if not exists:  # a landing bucket that does not exist is not an empty landing zone
            require_bucket(events, "list")
        complete: dict[str, str] = {}
        seen: set[str] = set()
        for path, info in listed.items():
            if info["type"] == "directory":  # a day of many files on S3 without its marker (_listing)
                seen.add(_name(path).removeprefix("date="))
                continue
            *_, parent, folder, name = ["", "", *path.rstrip("/").split("/")]
            if parent != "events" or not folder.startswith("date="):
                continue
            seen.add(folder.removeprefix("date="))
            if name == SUCCESS_MARKER:
                complete[folder.removeprefix("date=")] = _marker_version(info)
        return complete, sorted(seen - set(complete))


def _s3_file(
    fs: fsspec.AbstractFileSystem, url: str, block_bytes: int, listed: tuple[int, str] | None
) -> fsspec.spec.AbstractBufferedFile:
    """The S3 object ``url`` opened to be read in blocks of ``block_bytes``, with no read ahead. Given its size and
    ETag as ``listed``, without the HEAD s3fs asks them with: each block is then read of that ETag, as s3fs reads
    each of the ETag its HEAD gave (``If-Match``, or compared on the answer with ``local_expiry_check``)."""
    if listed is None:
        return fs.open(url, "rb", block_size=block_bytes, cache_type="none")
    size, etag = listed
    handle = fs.open(url, "rb", block_size=block_bytes, cache_type="none", size=size)
    handle.details = {"name": fs._strip_protocol(url), "size": size, "ETag": etag, "type": "file"}
    if not fs.local_expiry_check:
        handle.read_kw = {**handle.read_kw, "IfMatch": etag}
    return handle


async def _gathered(fetches: list) -> list:
    """The results of ``fetches`` (coroutines), each the value or the error it raised."""
    return await asyncio.gather(*fetches, return_exceptions=True)


def _fetched_blocks(file_url: str, data: bytes | BaseException) -> Iterator[bytes]:
    """A fetched file's bytes as its one block (none when empty), or its error, as ``read_blocks`` raises it."""
    with reaching(file_url, "read"):
        if isinstance(data, FileNotFoundError):  # S3's words name no key: "The specified key does not exist."
            raise FileNotFoundError(f"landing file {file_url} is gone since its day was listed ({data})") from data
        if isinstance(data, BaseException):
            raise data
        if data:
            yield data


def _refuse_links_out_of(root: str, files: list[str]) -> None:
    """Fails when a local landing file is a link to a file outside the landing zone ``root``. Whoever may write
    the landing zone (an exporter's rsync -a keeps the links it finds) could otherwise have a run read any file
    the run can: into the lake, or into an error the UI and the alert show (``/proc/self/environ`` linked as a
    CSV file, whose header the error quotes, is the run's AWS keys and database password). Checked when the day
    is listed, so that no file outside is even opened, and again on each file as opened (``_open_landing_file``):
    a link changed in between is caught there."""
    for path in files:
        _refuse_outside(root, path, os.path.realpath(path))


def _refuse_outside(root: str, path: str, target: str | None) -> None:
    """Fails when the landing file ``path``, which is the file ``target`` (None: no telling), is outside the
    landing zone ``root``."""
    top = os.path.realpath(root)
    if target is None:
        raise PermissionError(
            f"landing file {path} changed while it was opened (a link changed?), so the platform cannot tell whether "
            f"it is inside the landing zone {top}, and reads no file outside it; deliver files rather than links"
        )
    if os.path.commonpath([top, target]) != top:
        raise PermissionError(
            f"landing file {path} links to {target}, outside the landing zone {top}: the platform reads "
            "no file outside it; copy the file in rather than link it"
        )


# Opening never waits: a named pipe opens at once (read alone, it would wait for a writer), and a terminal is
# not made the run's.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def _open_landing_file(root: str, path: str) -> io.FileIO:
    """The local landing file ``path``, opened for reading once the opened file is known to be a regular file
    inside the landing zone ``root``. Judged on the descriptor, not on the path before the open: a link swapped
    between a check and the open would be read wherever it then led, and a pipe put in the file's place waited
    forever."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # a socket (or a device without its driver) cannot be opened at all
            raise
        raise NotARegularFileError(_not_a_regular_file(path, _kind(os.stat(path).st_mode))) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise NotARegularFileError(_not_a_regular_file(path, _kind(opened.st_mode)))
        _refuse_outside(root, path, _opened_path(fd, path, opened))
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _opened_path(fd: int, path: str, opened: os.stat_result) -> str | None:
    """Where the file opened as ``fd`` (from ``path``) is: on Linux the kernel's own path of the descriptor, which
    no later change of a link alters; elsewhere the path's resolution, taken only when it is the opened file (the
    same device and inode), else None."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (macOS)
        target = os.path.realpath(path)
        resolved = os.stat(target)
        same = (resolved.st_dev, resolved.st_ino) == (opened.st_dev, opened.st_ino)
        return target if same else None


def _kind(mode: int) -> str:
    """What a file of ``mode`` is, in a user's words."""
    for is_kind, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if is_kind(mode):
            return kind
    return f"a file of mode {stat.filemode(mode)}"


def _not_a_regular_file(path: str, kind: str) -> str:
    return (
        f"landing file {path} is {kind}, not a regular file: a landing day holds regular files only (and hidden "
        "entries or markers, named with a leading '.' or '_', which are not read); move it out of the day's folder "
        "or put the file it stands for in its place"
    )


# Past this many months, a listing of some landing days lists the whole landing zone in one go instead.
MAX_MONTH_LISTINGS = 3
# S3 lists this many objects a request at most.
LIST_PAGE = 1000
# A full page of a listing of landing days that reaches fewer day folders than this shows days of many files (over
# ~100 each: Kinesis Data Firehose delivers 288-1,500 a day); the days after the page are then looked up by their
# _SUCCESS marker alone, a request each and all at once, where listing them all took a request per 1,000 files one
# after another: ~1,100 requests for two years of 1,500 files a day, at every first tick of an hour.
MANY_FILES_PAGE_DAYS = 10


def _listing(fs: fsspec.AbstractFileSystem, events: str, only: Collection[str] | None) -> dict[str, dict]:
    """``{path: info}`` of the files under ``events/`` (see :meth:`LandingZone.days`); on S3, of days of many
    files, only each day's marker (and an entry standing for its folder, ``date=D/``, when it has none)."""
    if only is None:
        return _s3_days(fs, events, "date=", None) if is_s3(events) else fs.find(events, detail=True)
    folders = {join(events, f"date={day}") for day in only}
    if is_s3(events):
        months = sorted({day[:7] for day in only})
        if len(months) > MAX_MONTH_LISTINGS:
            return _s3_days(fs, events, "date=", only)
        found: dict[str, dict] = {}
        if _consecutive(months):  # the months' listings would list these days' objects and more, each a request
            found = _s3_days(fs, events, "date=", only, between=(min(only), max(only)))
        else:
            for month in months:
                found |= _s3_days(fs, events, f"date={month}", only)
        own = {fs._strip_protocol(folder).rstrip("/") for folder in folders}
        return {path: info for path, info in found.items() if path.rsplit("/", 1)[0] in own}
    found = {}
    for folder in sorted(folders):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # gone since the folders were listed
            found |= {info["name"]: info for info in fs.ls(folder, detail=True) if info["type"] != "directory"}
    return found


def _s3_days(
    fs: fsspec.AbstractFileSystem, events: str, prefix: str, only: Collection[str] | None,
    between: tuple[str, str] | None = None,
) -> dict[str, dict]:
    """``{path: info}`` of the objects under ``events/{prefix}`` (of the day folders from ``between``'s first day to
    its last, when given), as ``fs.find`` lists them, page by page; once a full page reaches fewer than
    ``MANY_FILES_PAGE_DAYS`` day folders, the days after it (those of ``only``, or every folder of ``events/``) by
    their ``_SUCCESS`` alone (see ``MANY_FILES_PAGE_DAYS``), each listed as its marker, or as its folder
    (``…/date=D/``) when it has none."""
    bucket, _, root = fs._strip_protocol(events).partition("/")
    found: dict[str, dict] = {}
    # After a name just before the first day's folder (its last character dropped): every key of the folder sorts after
    # it, every key of a day before it sorts before. (After the folder's own name, SeaweedFS skipped the folder.)
    start_after = f"{root}/date={between[0]}"[:-1] if between else ""
    past = f"date={between[1]}" if between else None
    for entries, more in s3_listing_pages(fs, bucket, f"{root}/{prefix}", start_after, page_size=LIST_PAGE):
        for entry in entries:
            if past is not None and _day_folder(root, entry["Key"]) > past:
                return found
            found[f"{bucket}/{entry['Key']}"] = {**entry, "name": f"{bucket}/{entry['Key']}", "type": "file",
                                                 "size": entry["Size"]}
        if not more:
            return found
        last = entries[-1]["Key"]
        if len({_day_folder(root, e["Key"]) for e in entries}) < MANY_FILES_PAGE_DAYS:
            break
    days = sorted(only) if only is not None else _day_folders(fs, events)
    # The days from the one the page stopped in (its marker may come after the page), under the prefix.
    stopped_in = _day_folder(root, last)
    later = [f"{root}/date={day}" for day in days if f"date={day}" >= stopped_in and f"date={day}".startswith(prefix)]
    markers = fsspec.asyn.sync(fs.loop, _gathered, [
        fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{folder}/{SUCCESS_MARKER}", MaxKeys=1, **fs.req_kw)
        for folder in later
    ])
    for folder, listed in zip(later, markers, strict=True):
        if isinstance(listed, BaseException):
            raise listed
        entry = next((e for e in listed.get("Contents", []) if e["Key"] == f"{folder}/{SUCCESS_MARKER}"), None)
        name = f"{bucket}/{entry['Key']}" if entry else f"{bucket}/{folder}/"
        found[name] = {**(entry or {}), "name": name, "type": "file" if entry else "directory",
                       "size": entry["Size"] if entry else 0}
    return found


def _consecutive(months: list[str]) -> bool:
    """Whether the sorted months ``YYYY-MM`` follow one another without a gap."""
    numbers = [int(month[:4]) * 12 + int(month[5:7]) for month in months]
    return numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else False


def _day_folders(fs: fsspec.AbstractFileSystem, events: str) -> list[str]:
    """The names ``X`` of the folders ``events/date=X/``, sorted (see :meth:`LandingZone.day_folders`)."""
    names = [_name(info["name"]) for info in fs.ls(events, detail=True) if info["type"] == "directory"]
    return sorted(name.removeprefix("date=") for name in names if name.startswith("date="))


def _day_folder(root: str, key: str) -> str:
    """The ``date=…`` folder of the S3 ``key`` under ``root`` (``…/events``)."""
    return key[len(root) + 1:].split("/", 1)[0]


def _marker_version(info: dict) -> str:
    """A ``_SUCCESS`` marker's version: its modification time (an empty marker's ETag never changes when
    it is written again), with the ETag on S3."""
    modified = info.get("LastModified") or info.get("mtime") or info.get("created")
    modified = modified.isoformat() if isinstance(modified, dt.datetime) else str(modified)
    etag = str(info.get("ETag") or "").strip('"')
    return f"{modified}|{etag}" if etag else modified


def marker_time(version: str) -> float:
    """When the ``_SUCCESS`` marker of ``version`` (:func:`_marker_version`) was written, in epoch seconds: its local
    modification time, or S3's LastModified (to the second)."""
    modified = version.partition("|")[0]
    try:
        return float(modified)
    except ValueError:
        return dt.datetime.fromisoformat(modified).timestamp()


def _name(path: str) -> str:
    return path.rstrip("/").split("/")[-1]
