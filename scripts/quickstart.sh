#!/usr/bin/env bash
# Runs vigil's main job on its embedded default: the shipped sample traffic through every stage
# built so far, into ./var (data, keys, dead letters). Needs the Rust toolchain and python3;
# installs ONNX Runtime (PyPI's onnxruntime==1.31.1) into ./.venv for the harm classifier.
# Safe to run again (a re-run stores nothing twice). Start afresh with `rm -rf var`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "quickstart: cargo is required (the machine's Rust toolchain)" >&2; exit 1; }

scripts/setup-python.sh
exec cargo run --release --locked --quiet -- run --input sample/traffic.jsonl "$@"
