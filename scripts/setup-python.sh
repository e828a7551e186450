#!/usr/bin/env bash
# Creates the project's Python virtual environment (.venv) and installs, from PyPI, what vigil
# needs at run time: ONNX Runtime 1.31.1, whose shared library the harm classifier loads.
# With --notebooks, also the pinned notebook requirements (training and analysis).
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT=onnxruntime==1.31.1
command -v python3 >/dev/null || { echo "setup-python: python3 is required" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import onnxruntime, sys; sys.exit(onnxruntime.__version__ != "1.31.1")' 2>/dev/null; then
  echo "== installing $ORT into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "$ORT"
fi
if [ "${1:-}" = "--notebooks" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r notebooks/requirements.txt
fi
