"""polars' allocator settings (``churn_assets/allocators.py``) reach jemalloc in a process that loads the code
location, and a user's own settings are left as they are."""

import os
import subprocess
import sys

from churn_assets.allocators import POLARS_ALLOCATOR_SETTINGS

# Loads the code location as `dagster` does: the package first, then its definitions, which load polars.
# stats_print, added between the two, makes jemalloc print the options it runs with when the process exits.
LOAD_THE_CODE_LOCATION = """
import os, sys
import churn_assets
assert "polars" not in sys.modules
os.environ["_RJEM_MALLOC_CONF"] = os.environ.get("_RJEM_MALLOC_CONF", "") + ",stats_print:true"
import churn_assets.definitions
"""


def _jemalloc_options(user_settings: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if user_settings is not None:
        env["_RJEM_MALLOC_CONF"] = user_settings
    done = subprocess.run(
        [sys.executable, "-c", LOAD_THE_CODE_LOCATION], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stderr


def test_the_code_location_gives_polars_one_arena_per_cpu_and_a_longer_purge_delay():
    assert POLARS_ALLOCATOR_SETTINGS == "percpu_arena:percpu,dirty_decay_ms:2000"
    options = _jemalloc_options(None)
    assert 'opt.percpu_arena: "percpu"' in options
    assert "opt.dirty_decay_ms: 2000 " in options


def test_a_users_own_allocator_settings_are_kept():
    options = _jemalloc_options("dirty_decay_ms:3000")
    assert 'opt.percpu_arena: "disabled"' in options
    assert "opt.dirty_decay_ms: 3000 " in options
