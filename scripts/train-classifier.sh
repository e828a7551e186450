#!/usr/bin/env bash
# Retrains vigil's harm classifier: executes notebooks/train_classifier.ipynb in the project's
# virtual environment, which writes models/harm-linear.onnx, its golden scores and its model
# card, and var/eval/dev.jsonl for `vigil eval`. Reads ../shared/data (or $VIGIL_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh --notebooks
cd notebooks
../.venv/bin/python - <<'PY'
import nbformat, nbclient
nb = nbformat.read("train_classifier.ipynb", 4)
nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
print("trained: models/harm-linear.onnx, models/harm-linear.md")
PY
