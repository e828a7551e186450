#!/usr/bin/env bash
# vigil's whole test suite: formatting, lints (warnings are errors), and every unit and
# integration test. Installs what the tests need, idempotently: the Tansu Kafka-protocol broker
# (from crates.io, about 15-20 minutes the first time) and ONNX Runtime (PyPI's
# onnxruntime==1.31.1, into ./.venv), Debian's chromium (with libnss3-tools and openssl, which put a
# workstation certificate in its NSS store), Debian's prometheus (the monitoring tests), the
# console tests' playwright-core and mdBook (from crates.io; the docs test builds the book).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "test: cargo is required (the machine's Rust toolchain)" >&2; exit 1; }
# rustfmt and clippy ship with the toolchain; add them if this one lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# The Kafka tests start Tansu brokers of their own on loopback ports.
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
if ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "== installing the Tansu broker $TANSU_VERSION (once)"
  # Built in cargo's own temporary directory, not in this workspace's target directory.
  env -u CARGO_TARGET_DIR cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
fi

# The classifier tests run the shipped ONNX model under the real ONNX Runtime; the reviewer tests
# run the local GGUF model and an OpenAI-compatible llama.cpp server on loopback; the notebook
# test executes every notebook with nbclient (notebooks/requirements.txt, pinned).
scripts/setup-python.sh --tests --notebooks

# The console tests drive Debian's Chromium with Playwright (playwright-core, pinned in
# tests/console/package-lock.json); one gives Chromium the workstation certificate in an NSS
# store made with certutil and pk12util (libnss3-tools) from a PKCS#12 file openssl writes.
if [ ! -x /usr/bin/chromium ] || ! command -v certutil >/dev/null || ! command -v pk12util >/dev/null \
    || ! command -v openssl >/dev/null; then
  echo "== installing Debian's chromium, libnss3-tools and openssl (once)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y chromium libnss3-tools openssl \
    || { $SUDO apt-get update && $SUDO apt-get install -y chromium libnss3-tools openssl; }
fi
# The monitoring tests point Debian's Prometheus server at a running vigil and read the series
# back through its HTTP API; promtool checks the shipped alerting rules.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "== installing Debian's prometheus (once)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y prometheus || { $SUDO apt-get update && $SUDO apt-get install -y prometheus; }
fi
command -v npm >/dev/null || { echo "test: npm is required (the machine's Node.js)" >&2; exit 1; }
PLAYWRIGHT_VERSION=$(node -p "require('./tests/console/package.json').dependencies['playwright-core']")
if [ "$(node -p "require('./tests/console/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
  echo "== installing the console tests' npm packages (once)"
  npm ci --prefix tests/console --no-audit --no-fund
fi

# The docs test builds the book under docs/ with mdBook and checks every link in it.
MDBOOK_VERSION=0.4.52
if ! mdbook --version 2>/dev/null | grep -q "v$MDBOOK_VERSION"; then
  echo "== installing mdBook $MDBOOK_VERSION (once)"
  # Built in cargo's own temporary directory, not in this workspace's target directory.
  env -u CARGO_TARGET_DIR cargo install mdbook --version "$MDBOOK_VERSION" --locked
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# --no-fail-fast: every test binary runs even when one fails, so one failure never hides the rest
# (cargo still exits non-zero and lists the failed binaries at the end).
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
