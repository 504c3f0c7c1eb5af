"""Small ways to keep both cores busy: an ordered map and a producer thread.

polars, zstd, sha256, fsync and XGBoost release the GIL (ISA-L's gzip inflation and plotly do not), so
threads overlap the parts of a day that run on one core (reading its files, a small group-by, Python
building the next query) with another day's work. The map and the producer hold a bounded number of
items, and an error in a worker surfaces in the caller, at the item it belongs to.
"""

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

# A range run computes partitions of fewer rows than this two at a time: one small day leaves a core idle
# (planning, reading a file, a small group-by), while a big day keeps both busy by itself, and two big
# days at once would double the memory the run needs.
PARALLEL_BELOW_ROWS = 2_000_000


def workers_for(largest_rows: int) -> int:
    """How many partitions to compute at a time when the largest one reads ``largest_rows`` rows."""
    return 2 if largest_rows < PARALLEL_BELOW_ROWS else 1


# polars' in-memory engine runs a query over a small partition faster than its streaming engine (the
# default), which wins on big ones: user_daily of a day of 57 k events took 24 ms in memory against 39 ms
# streaming, of 561 k events 295 ms against 202 ms, of 27.7 M events 25 s against 11 s.
IN_MEMORY_BELOW_ROWS = 250_000


def engine_for(rows: int) -> str:
    """The polars engine for a per-partition query of user_daily, labels or a check's batch of days
    (``check_days.each_checked_batch``) over ``rows`` rows (measured on those queries; see above)."""
    return "in-memory" if rows < IN_MEMORY_BELOW_ROWS else "streaming"


def ordered_map(
    fn: Callable[[In], Out],
    items: Iterable[In],
    workers: int = 2,
    passes: Callable[[In], bool] | None = None,
) -> Iterator[Out]:
    """``fn(item)`` for each item, computed on ``workers`` threads and yielded in the items' order.

    ``items`` is consumed on the caller's thread (a stateful reader stays sequential, and producing the
    next item overlaps with ``fn`` working on the previous ones), at most ``workers`` + 1 items ahead of
    what has been yielded. ``workers=1`` is write-behind: the caller makes item N+1 while item N is
    handled.

    An item for which ``passes(item)`` is true is not given to ``fn``: it is yielded as it is, as soon as
    everything before it has been, without waiting for the items after it (a marker that ends a day is
    handed on before the next day is read).

    When ``items`` raises, the items it made before are finished and yielded first, then its error: a
    writer stores every day before the one whose landing file is corrupt (an interrupt stops at once).
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ordered-map") as pool:
        pending: deque[Future[Out]] = deque()
        try:
            iterator = iter(items)
            while True:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception:
                    while pending:  # the items made before the one that failed are handed on first
                        yield pending.popleft().result()
                    raise
                if passes is not None and passes(item):
                    while pending:
                        yield pending.popleft().result()
                    yield item
                    continue
                pending.append(pool.submit(fn, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the caller stopped early or an item failed: nothing more starts
                future.cancel()


# How long an interrupted run waits for a producer thread that does not stop (see Prefetched).
INTERRUPTED_WAIT_SECONDS = 1.0


class Prefetched:
    """Runs an iterator on a worker thread, at most ``ahead`` items in advance; its errors surface here.

    Use as a context manager; leaving it stops the worker, even one blocked on a full queue. Left on an interrupt
    (SIGTERM or SIGINT, which Dagster raises in the run's thread), it waits ``INTERRUPTED_WAIT_SECONDS`` at most for
    a worker blocked elsewhere (a read of a hung mount, or of any file that never ends): the worker is a daemon
    thread, which the process's exit ends, and waiting for it kept a run that was told to stop running.
    """

    def __init__(self, items: Iterator[Any], ahead: int, name: str = "prefetch"):
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)

    def __enter__(self) -> "Prefetched":
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        waited_since = time.monotonic()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
            if interrupted and time.monotonic() - waited_since > INTERRUPTED_WAIT_SECONDS:
                return
        self._thread.join()

    def _run(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if self._stop.is_set():
                    return
                self._queue.put((item, None))
            self._queue.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            self._queue.put((None, exc))

    def __iter__(self) -> "Prefetched":
        return self

    def __next__(self) -> Any:
        item, error = self._queue.get()
        if error is not None:
            raise error
        if item is _DONE:
            self._queue.put((_DONE, None))  # stays exhausted
            raise StopIteration
        return item


_DONE = object()
