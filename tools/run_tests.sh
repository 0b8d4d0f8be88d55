#!/usr/bin/env bash
# The README's test command: set up, lint, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash tools/setup_env.sh
"$PY" -m ruff check .
"$PY" -m pytest -q "$@"
