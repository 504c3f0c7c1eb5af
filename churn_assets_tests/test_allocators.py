"""polars' allocator settings (``churn_assets/allocators.py``) reach jemalloc in a process that loads the code
location, and a user's own settings are left as they are."""

import os
import subprocess
import sys

import pytest

from churn_assets.allocators import POLARS_ALLOCATOR_SETTINGS, cpu_count_is_deterministic

# Loads the code location as `dagster` does: the package first, then its definitions, which load polars.
# stats_print, added between the two, makes jemalloc print the options it runs with when the process exits.
LOAD_THE_CODE_LOCATION = """
import os, sys
if os.environ.get("CPUS_FOR_THE_TEST"):  # held to some CPUs, as by taskset or a container's cpuset
    os.sched_setaffinity(0, {int(c) for c in os.environ["CPUS_FOR_THE_TEST"].split(",")})
import churn_assets
assert "polars" not in sys.modules
os.environ["_RJEM_MALLOC_CONF"] = ",".join(filter(None, [os.environ.get("_RJEM_MALLOC_CONF"), "stats_print:true"]))
import churn_assets.definitions
"""


def _jemalloc_options(user_settings: str | None, cpus: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | {"CPUS_FOR_THE_TEST": cpus}
    if user_settings is not None:
        env["_RJEM_MALLOC_CONF"] = user_settings
    done = subprocess.run(
        [sys.executable, "-c", LOAD_THE_CODE_LOCATION], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stderr


@pytest.mark.skipif(not cpu_count_is_deterministic(), reason="jemalloc refuses percpu_arena on this machine")
def test_the_code_location_gives_polars_one_arena_per_cpu_and_a_longer_purge_delay():
    assert POLARS_ALLOCATOR_SETTINGS == "percpu_arena:percpu,dirty_decay_ms:2000"
    options = _jemalloc_options(None)
    assert 'opt.percpu_arena: "percpu"' in options
    assert "opt.dirty_decay_ms: 2000 " in options


def test_a_users_own_allocator_settings_are_kept():
    options = _jemalloc_options("dirty_decay_ms:3000")
    assert 'opt.percpu_arena: "disabled"' in options
    assert "opt.dirty_decay_ms: 3000 " in options


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to hold to one"
)
def test_a_process_held_to_some_cpus_keeps_polars_defaults_and_prints_no_jemalloc_warning():
    """Held to one CPU (taskset -c 0, a container's cpuset), every process that loaded the package printed
    "<jemalloc>: Number of CPUs detected is not deterministic. Per-CPU arena disabled." on its stderr."""
    options = _jemalloc_options(None, cpus=str(min(os.sched_getaffinity(0))))
    assert "<jemalloc>" not in options
    assert 'opt.percpu_arena: "disabled"' in options
    assert "opt.dirty_decay_ms: 500 " in options  # polars' own
