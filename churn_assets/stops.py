"""How ``churn-assets erase``, ``adopt`` and ``simulate`` stop: SIGTERM (a container or CI job stopped, a Kubernetes
Job evicted) taken as Ctrl-C, records that Ctrl-C or SIGTERM does not cut in two, and the exit statuses of a stop.
Each command turns a stop into a short message of what stands and what to run next (no traceback)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FAILED = 1  # a read or write the storage (local disk, S3) or the instance refused or failed
INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports a process stopped by SIGINT
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_deferring = threading.local()


def exit_status(error: BaseException) -> int:
    """The exit status of a command stopped by ``error``: :data:`INTERRUPTED` for Ctrl-C or SIGTERM, else
    :data:`FAILED`."""
    return INTERRUPTED if isinstance(error, KeyboardInterrupt) else FAILED


def why(error: BaseException) -> str:
    """What stopped a command, as its message says it."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    return f"{type(error).__name__}: {error}"


def is_stop(error: BaseException) -> bool:
    """Whether ``error`` stops a command with its message (an error, Ctrl-C or SIGTERM), not SystemExit and the like."""
    return isinstance(error, (Exception, KeyboardInterrupt))


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, inside the block (without it, SIGTERM ended the process at
    once, exit 143, whatever it was in the middle of)."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C or SIGTERM received inside the block waits until it ends, then raises KeyboardInterrupt: the records it
    writes are all written, or (an error) its caller says which are not; it is raised too when the block failed,
    since the stop asked for is what the command reports (exit 130). Blocks within it defer to it; off the main
    thread (where no signal handler runs) it does nothing."""
    if getattr(_deferring, "on", False) or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in _SIGNALS}
    _deferring.on = True
    try:
        yield
    finally:
        _deferring.on = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:  # (after an error too: it is the KeyboardInterrupt's context)
            raise KeyboardInterrupt(f"signal {received[0]}")
