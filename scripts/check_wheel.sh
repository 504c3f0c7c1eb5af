#!/usr/bin/env bash
# The package as a deployment gets it: built as a wheel from a copy of the files the Dockerfile copies, installed
# (not editable, pinned by constraints.txt) into a fresh virtualenv, and run from a folder that is not the checkout,
# holding what the Dockerfile puts in the image's workdir (dagster.yaml, workspace.yaml, deploy/). Checks that the
# installed package is what is imported, that importing the definitions warns nothing, that pip finds every
# requirement met, and that the console script and the code location (-m and workspace.yaml) work on a small lake.
#   bash scripts/check_wheel.sh     # a few minutes, most of them installing the dependencies (.ci/run runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/churn-wheel-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir "$WORK/src" "$WORK/app" "$WORK/home"
cp -r pyproject.toml constraints.txt README.md churn_assets "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
python3 -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet -c constraints.txt "$WORK"/dist/churn_assets-*.whl
"$WORK/venv/bin/pip" check

cp -r dagster.yaml workspace.yaml deploy "$WORK/app/"
cp dagster.yaml "$WORK/home/"
cd "$WORK/app"
export PATH="$WORK/venv/bin:$PATH" DAGSTER_HOME="$WORK/home"
unset CHURN_DATA_URL CHURN_LANDING_URL CHURN_APP PYTHONPATH

python - "$WORK/venv" <<'PY'
import sys
from pathlib import Path

import churn_assets

where = Path(churn_assets.__file__).resolve()
assert where.is_relative_to(Path(sys.argv[1]).resolve()), f"churn_assets imported from {where}, not the installed wheel"
PY
warnings=$(python -W error::DeprecationWarning -c "import churn_assets.definitions" 2>&1) || {
  echo "importing churn_assets.definitions from the wheel failed:" >&2; echo "$warnings" >&2; exit 1; }
[ -z "$warnings" ] || { echo "importing churn_assets.definitions printed:" >&2; echo "$warnings" >&2; exit 1; }

churn-assets simulate --users 200 --days 3 --start 2025-01-01 --seed 3 --no-progress
dagster asset materialize -m churn_assets.definitions --select raw_events,install_times,user_daily \
  --partition-range 2025-01-01...2025-01-03 >"$WORK/materialize.log" 2>&1 || {
  tail -50 "$WORK/materialize.log" >&2; exit 1; }
test -f data/lake/user_daily/date=2025-01-03/data.parquet
dagster definitions validate -w workspace.yaml >"$WORK/validate.log" 2>&1 || { cat "$WORK/validate.log" >&2; exit 1; }
echo "the wheel installs and runs from $WORK/app: ok"
