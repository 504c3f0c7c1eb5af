#!/usr/bin/env bash
# The main job on the local default: simulate landing data, then materialize the whole graph over it
# (DESIGN.md): the daily chain over every day, the training sets and models of every month that can
# have one, and the predictions and drift report of the last day.
#   bash scripts/demo.sh            # 3,000 users over 75 days from 2025-01-01: the model of 2025-03
#   USERS=20000 DAYS=120 bash scripts/demo.sh
# CHURN_DATA_URL, CHURN_LANDING_URL and DAGSTER_HOME choose where it writes (default: ./data, ./.dagster_home).
# With CHURN_APP set (docs/operations.md, "More than one app") it runs that app's assets: puzzle/raw_events, ….
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
BIN="$(cd "$VENV/bin" && pwd)"
export PATH="$BIN:$PATH"

USERS="${USERS:-3000}"
DAYS="${DAYS:-75}"
START="${CHURN_START_DATE:-2025-01-01}"
export CHURN_START_DATE="$START"
export CHURN_DATA_URL="${CHURN_DATA_URL:-$PWD/data/lake}"
export CHURN_LANDING_URL="${CHURN_LANDING_URL:-$PWD/data/landing}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"

# The last day, and the months to train (churn_assets/assets/ml/training_set.py, months_to_train): those
# whose snapshots span the model's time split, from the first with a whole lookback when the days reach
# it (the benchmarks do the same), with H and L as the definitions read them.
PLAN=$(python - "$START" "$DAYS" <<'PY'
import datetime as dt
import sys

from churn_assets.assets.ml.training_set import months_to_train
from churn_assets.config import SETTINGS


def months(start: dt.date, days: int) -> list[str]:
    last = start + dt.timedelta(days=days - 1)
    return months_to_train(start, last, SETTINGS.horizon_days, SETTINGS.lookback_months)


start, days = dt.date.fromisoformat(sys.argv[1]), int(sys.argv[2])
planned = months(start, days)
min_days = next(n for n in range(1, 400) if months(start, n))  # the first day of the first month with a model
print(start + dt.timedelta(days=days - 1), planned[0] if planned else "-", planned[-1] if planned else "-", min_days)
PY
)
read -r LAST FIRST_MONTH LAST_MONTH MIN_DAYS <<<"$PLAN"
if [ "$FIRST_MONTH" = "-" ]; then
  echo "DAYS=$DAYS is too few for the whole graph: the first model needs at least $MIN_DAYS days from $START." >&2
  exit 2
fi

mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || { [ -f dagster.yaml ] && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"; } || true

# The console log at INFO: step events, checks and warnings, without Dagster's DEBUG. (Each run is one
# process: the code location's executor.)
RUN_CONFIG='{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'
materialize() {
  dagster asset materialize -m churn_assets.definitions --config-json "$RUN_CONFIG" "$@"
}
# The keys of DESIGN.md's asset names, under CHURN_APP's prefix when it is set: raw_events,labels →
# puzzle/raw_events,puzzle/labels.
keys() {
  if [ -n "${CHURN_APP:-}" ]; then echo "$CHURN_APP/${1//,/,$CHURN_APP/}"; else echo "$1"; fi
}

echo "==> simulating $USERS users over $DAYS days into $CHURN_LANDING_URL"
churn-assets simulate --out "$CHURN_LANDING_URL" --users "$USERS" --days "$DAYS" --start "$START" --seed 7

echo "==> raw_events → install_times → user_daily → features → labels for $START...$LAST (one run)"
materialize --select "$(keys raw_events,install_times,user_daily,features,labels)" --partition-range "$START...$LAST"

echo "==> training_set → model for $FIRST_MONTH...$LAST_MONTH (one run)"
materialize --select "$(keys training_set,model)" --partition-range "$FIRST_MONTH...$LAST_MONTH"

echo "==> predictions, drift_report for $LAST"
materialize --select "$(keys predictions,drift_report)" --partition "$LAST"

case "$CHURN_DATA_URL" in
  s3://*) ;;
  *)
    echo
    python - "$CHURN_DATA_URL" "$LAST" "$LAST_MONTH" <<'PY'
import json
import sys

import polars as pl

lake, day, month = sys.argv[1:]
card = json.load(open(f"{lake}/model/month={month}/model_card.json"))
print(f"model[{month}]: {card['model_version']} — {card['selection']['decision']}: {card['selection']['reason']}")
drift = json.load(open(f"{lake}/drift_report/date={day}/_summary.json"))
print(f"drift on {day}: {drift['share_of_drifted_columns']:.0%} of the feature columns drifted "
      f"(dataset drift: {'yes' if drift['dataset_drift'] else 'no'}"
      f"{', too few users to conclude' if drift.get('too_few_rows') else ''})")
scores = pl.read_parquet(f"{lake}/predictions/date={day}/data.parquet")
bands = dict(scores.group_by("risk_band").len().iter_rows())
print(f"predictions for {day}: {scores.height} users at risk; risk bands "
      + ", ".join(f"{band} {bands.get(band, 0)}" for band in ("Low", "Medium", "High", "Critical")))
with pl.Config(tbl_rows=5, tbl_hide_dataframe_shape=True, tbl_width_chars=120):
    print(scores.sort("rank").head(5).select("rank", "user_id", "churn_probability", "risk_band", "top_reason_1"))
PY
    ;;
esac

cat <<MSG

Done. The lake is at $CHURN_DATA_URL (hive-partitioned Parquet, e.g. user_daily/date=$LAST/data.parquet).
  predictions of $LAST:    $CHURN_DATA_URL/predictions/date=$LAST/data.parquet
  drift report of $LAST:   $CHURN_DATA_URL/drift_report/date=$LAST/_report.html (_summary.json beside it)
  model in production $LAST_MONTH: $CHURN_DATA_URL/model/month=$LAST_MONTH/ (model_card.json, holdout_report.html, model.ubj)
Query it directly, e.g. with polars (the date column comes from the folder names):
  $BIN/python -c "import polars as pl; print(pl.scan_parquet('$CHURN_DATA_URL/predictions/**/*.parquet', hive_partitioning=True).filter(pl.col('risk_band') == 'Critical').select('date', 'rank', 'user_id', 'churn_probability', 'top_reason_1').collect())"
Open the Dagster UI on the same lake and run history:
  ${CHURN_APP:+CHURN_APP=$CHURN_APP }DAGSTER_HOME=$DAGSTER_HOME CHURN_DATA_URL=$CHURN_DATA_URL CHURN_LANDING_URL=$CHURN_LANDING_URL CHURN_START_DATE=$START $BIN/dagster dev -w $PWD/workspace.yaml
MSG
