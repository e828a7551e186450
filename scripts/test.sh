#!/usr/bin/env bash
# vigil's whole test suite: formatting, lints (warnings are errors), and every unit and
# integration test. Installs nothing beyond the Rust toolchain today; each later prerequisite
# (a broker, ONNX Runtime, a browser) is installed here, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "test: $tool is required (part of the Rust toolchain)" >&2; exit 1; }
done

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
