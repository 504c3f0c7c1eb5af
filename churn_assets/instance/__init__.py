"""Dagster's event logs, with their connections kept open and Dagster's event batches stored a batch at a
time: ``PooledSqliteEventLogStorage`` for the local instance (``dagster.yaml``), and
``churn_assets.instance.postgres.PooledPostgresEventLogStorage`` for the production one
(``deploy/dagster.yaml``; not imported here, so the local instance does not import ``dagster-postgres``).
"""

from churn_assets.instance.sqlite import RUN_SHARDS_KEPT, PooledSqliteEventLogStorage

__all__ = ["RUN_SHARDS_KEPT", "PooledSqliteEventLogStorage"]
