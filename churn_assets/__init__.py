"""churn_assets: a Dagster asset graph from a mobile app's raw event exports to daily churn predictions."""

import warnings

from churn_assets.allocators import reuse_freed_memory

reuse_freed_memory()  # before any module of the package loads polars

from dagster import BetaWarning, PreviewWarning  # noqa: E402

# The definitions use, on purpose, three Dagster APIs marked beta or preview: single-run backfill policies,
# partitioned asset checks and partition mappings that allow missing upstream partitions. Dagster warns at
# each definition, in every process that loads the code location (each `dagster` command, each run);
# those three warnings, and no others, are silenced.
for _message, _category in (
    (r"Parameter `backfill_policy` of function `asset` is currently in beta", BetaWarning),
    (r"Parameter `allow_nonexistent_upstream_partitions` of initializer `TimeWindowPartitionMapping", BetaWarning),
    (r"Specifying a partitions_def on an AssetCheckSpec is currently in preview", PreviewWarning),
):
    warnings.filterwarnings("ignore", message=_message, category=_category)
