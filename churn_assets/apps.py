"""The names this code location gives its assets and automation: DESIGN.md's, or, with ``CHURN_APP`` set (one
Dagster instance holding several apps), the app's.

Dagster keys an asset's partitions, materializations, data versions and check results by its key alone, across
every code location of the instance: two apps' ``raw_events`` would be one asset in the UI, and each app's
sensors and schedules would read the other's history. Jobs, schedules and sensors belong to their code location,
but the runs they look up (by job name, by schedule name) and the queue's lanes (run tags) are the instance's.
So with ``CHURN_APP=puzzle`` every asset key starts with ``puzzle`` and every job, schedule and sensor is named
``puzzle_…``; everything that builds a key or a name asks this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from churn_assets.config import SETTINGS

APP = SETTINGS.app
KEY_PREFIX: tuple[str, ...] = (APP,) if APP else ()


def asset_key(name: str) -> dg.AssetKey:
    """The key of the asset DESIGN.md calls ``name`` in this code location (``raw_events`` → ``puzzle/raw_events``)."""
    return dg.AssetKey([*KEY_PREFIX, name])


def key_string(name: str) -> str:
    """The asset DESIGN.md calls ``name`` as a user types it in ``dagster asset materialize --select`` and the UI
    shows it (``labels`` → ``puzzle/labels``): for the commands our messages give."""
    return asset_key(name).to_user_string()


def automation_name(name: str) -> str:
    """The name of the job, schedule or sensor DESIGN.md calls ``name``
    (``daily_refresh`` → ``puzzle_daily_refresh``)."""
    return f"{APP}_{name}" if APP else name


def with_app_keys(definitions: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets and checks (all of the code location's, so that every key they read is among them) with their
    keys, and the keys they read and check, under the app's prefix (themselves without an app). One place, so no
    asset or check is written with a prefix of its own."""
    if not KEY_PREFIX:
        return list(definitions)
    # Dagster 1.13 moves a check's own asset, not its additional_deps: check_days.partition_check keys those itself.
    replacements = {key: key.with_prefix(list(KEY_PREFIX)) for d in definitions for key in d.keys}
    prefixed = []
    for definition in definitions:
        renamed = definition.with_attributes(asset_key_replacements=replacements)
        prefixed.append(renamed.coerce_to_checks_def() if not renamed.keys else renamed)
    return prefixed


def is_this_apps_run(run: dg.DagsterRun, app: str | None = APP) -> bool:
    """Whether ``run`` ran the assets or a job of ``app`` (this code location's; any run, without an app): a run of
    another app's code location in the same instance is that app's to alert about."""
    if not app:
        return True
    if run.asset_selection or run.asset_check_selection:
        keys = [*(run.asset_selection or ()), *(c.asset_key for c in run.asset_check_selection or ())]
        return any(key.path[:1] == [app] for key in keys)
    return run.job_name.startswith(f"{app}_")


def asset_name(key: dg.AssetKey) -> str:
    """The name DESIGN.md gives the asset of ``key``, which names its folder in the lake: each app has its own
    ``CHURN_DATA_URL``, so ``puzzle/raw_events`` is stored at ``{root}/raw_events/`` like any ``raw_events``."""
    path = key.path[len(KEY_PREFIX) :] if KEY_PREFIX and key.has_prefix(list(KEY_PREFIX)) else key.path
    return "/".join(path)
