#!/usr/bin/env bash
# Retrains vigil's harm classifier: executes notebooks/train_classifier.ipynb in the project's
# virtual environment (through scripts/run-notebooks.py, which pins BLAS and OpenMP to one
# thread, as the test suite does), which writes models/harm-linear.onnx, its golden scores and
# its model card, and the evaluation sets under var/eval/ for `vigil eval`. Reads
# ../shared/data (or $VIGIL_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh --notebooks
.venv/bin/python scripts/run-notebooks.py --only train_classifier --exports var/exports \
  --model-dir models --eval-dir var/eval --no-golden --timeout 3600 "$@"
echo "trained: models/harm-linear.onnx, models/harm-linear.md"
