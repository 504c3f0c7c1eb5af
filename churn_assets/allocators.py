"""polars' allocator settings for this process: freed memory is reused where it was freed, not faulted in anew.

A day's refresh allocates and frees frames of tens to hundreds of megabytes over and over: the pieces of
JSON lines ``raw_events`` parses on two threads while a third vets them, and the ~1 M-row slices of
``features``. polars' allocator (jemalloc) gives each thread one of 4 arenas per core and purges freed
pages 0.5 s after they are freed (polars' default): memory freed on one thread was not reused by the
next, and came back from the kernel as fresh pages, each one a page fault that the kernel zeroes. With
one arena per CPU (threads share the arena of the core they run on) and freed pages kept for 2 s, a day's
refresh of ~10 M events on 2 cores used ~4 s less system CPU in a slow phase (10.5-11.1 s instead of
14.6-15.6 s, ~1.2 M fewer page faults) and 3 s less in a faster one, where user CPU rose by 1-3 s; and
``raw_events`` peaked ~0.5 GB lower (2.9 GB instead of 3.4 GB), ``features`` ~0.1-0.2 GB higher
(docs/benchmarks.md, the eighteenth round). Kept 5 s, ``features`` held ~0.4 GB more; keeping glibc's freed
memory (numpy's arrays) longer saved nothing.

Set when the package is imported, before polars loads jemalloc (it reads its settings once), unless the
user set ``_RJEM_MALLOC_CONF`` (which polars appends to its own settings) or the process may use only some of
the machine's CPUs (:func:`reuse_freed_memory`). Measured on 2 cores only: on a host of many cores,
``_RJEM_MALLOC_CONF=dirty_decay_ms:500`` (polars' defaults) is the way back, to compare.
"""

import os
import sys

POLARS_ALLOCATOR_SETTINGS = "percpu_arena:percpu,dirty_decay_ms:2000"


def reuse_freed_memory() -> None:
    """Applies :data:`POLARS_ALLOCATOR_SETTINGS` to this process, when polars is not loaded yet, the user chose
    no settings of their own, and jemalloc accepts one arena per CPU here. Where it does not, polars' defaults
    stay: the longer purge delay with the default arenas (1 s) saved nothing measurable and held ~0.3 GB
    more at `raw_events`' peak."""
    if "polars" not in sys.modules and cpu_count_is_deterministic():
        os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_ALLOCATOR_SETTINGS)


def cpu_count_is_deterministic() -> bool:
    """Whether jemalloc accepts ``percpu_arena`` in this process: not when it is held to some of the machine's CPUs
    (``taskset``, a container's cpuset) or CPUs are offline ("<jemalloc>: Number of CPUs detected is not
    deterministic"), nor without ``sched_getcpu`` (macOS: "No getcpu support")."""
    affinity = getattr(os, "sched_getaffinity", None)
    return affinity is not None and (
        len(affinity(0)) == os.sysconf("SC_NPROCESSORS_ONLN") == os.sysconf("SC_NPROCESSORS_CONF")
    )
