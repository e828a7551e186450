#!/usr/bin/env bash
# Kafka → stored benchmark: starts a Tansu broker (in memory) on a free loopback port, runs
# `vigil bench --kafka` against it with any extra arguments, and stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "bench-kafka: tansu is not installed; ./scripts/test.sh installs it" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="tcp://127.0.0.1:$port"
tansu broker --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/ >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
cargo build --release --quiet
"${CARGO_TARGET_DIR:-target}/release/vigil" bench --kafka "127.0.0.1:$port" "$@"
