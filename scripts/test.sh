#!/usr/bin/env bash
# vigil's whole test suite: formatting, lints (warnings are errors), and every unit and
# integration test. Installs nothing beyond the Rust toolchain today; each later prerequisite
# (a broker, ONNX Runtime, a browser) is installed here, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "test: cargo is required (the machine's Rust toolchain)" >&2; exit 1; }
# rustfmt and clippy ship with the toolchain; add them if this one lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
