#!/usr/bin/env bash
# Installs what the tests need (first run only), lints the code and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
# Lint first (ruff, set up in pyproject.toml): a finding fails the run, and so fails CI.
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest -q "$@"
