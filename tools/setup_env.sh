#!/usr/bin/env bash
# Installs what the project needs into the current Python, on a fresh machine too.
# torch is pinned first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test]"
# Test data only: cartopy's wheel ships a 720 x 360 equirectangular Earth raster that tests/test_rotate_real_image.py
# reads. Installed without its dependencies (cartopy is never imported); where no wheel exists those tests skip.
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('cartopy') is None)"; then
  "$PY" -m pip install -q --no-deps --only-binary=:all: "cartopy==0.26.0" ||
    echo "no cartopy 0.26.0 wheel for this Python: the real-image rotation tests will skip" >&2
fi
