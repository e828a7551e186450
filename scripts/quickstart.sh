#!/usr/bin/env bash
# Runs vigil's main job on its embedded default: the shipped sample traffic through every stage
# built so far, into ./var (data, keys, dead letters). Needs nothing but the Rust toolchain;
# safe to run again (a re-run stores nothing twice). Start afresh with `rm -rf var`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "quickstart: cargo is required (the machine's Rust toolchain)" >&2; exit 1; }

exec cargo run --release --locked --quiet -- run --input sample/traffic.jsonl "$@"
