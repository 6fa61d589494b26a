#!/usr/bin/env bash
# Builds aether and the bench in release mode, then runs the bench: `bash bench/run.sh [--quick]`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p aether-cli -p aether-bench
exec target/release/aether-bench "$@"
