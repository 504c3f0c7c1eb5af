#!/usr/bin/env bash
# The main job on the local default: simulate landing data, then materialize the graph over it.
#   bash scripts/demo.sh            # 2,000 users over 28 days from 2025-01-01
#   USERS=20000 DAYS=120 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"

USERS="${USERS:-2000}"
DAYS="${DAYS:-28}"
START="${CHURN_START_DATE:-2025-01-01}"
export CHURN_DATA_URL="${CHURN_DATA_URL:-$PWD/data/lake}"
export CHURN_LANDING_URL="${CHURN_LANDING_URL:-$PWD/data/landing}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || { [ -f dagster.yaml ] && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"; } || true

LAST=$(python -c "import datetime as d; print(d.date.fromisoformat('$START') + d.timedelta(days=$DAYS - 1))")

echo "==> simulating $USERS users over $DAYS days into $CHURN_LANDING_URL"
churn-assets simulate --out "$CHURN_LANDING_URL" --users "$USERS" --days "$DAYS" --start "$START" --seed 7

echo "==> materializing raw_events → install_times → user_daily for $START...$LAST (one run)"
dagster asset materialize -m churn_assets.definitions \
  --select raw_events,install_times,user_daily \
  --partition-range "$START...$LAST"

cat <<MSG

Done. The lake is at $CHURN_DATA_URL (hive-partitioned Parquet, e.g. user_daily/date=$LAST/data.parquet).
Query it directly, e.g. with polars:
  $VENV/bin/python -c "import polars as pl; print(pl.scan_parquet('$CHURN_DATA_URL/user_daily/**/*.parquet', hive_partitioning=True).collect())"
Open the Dagster UI on the same lake and run history:
  DAGSTER_HOME=$DAGSTER_HOME CHURN_DATA_URL=$CHURN_DATA_URL CHURN_LANDING_URL=$CHURN_LANDING_URL $VENV/bin/dagster dev -m churn_assets.definitions
MSG
