#!/usr/bin/env bash
# The side-by-side benchmark (issue 5): `bash bench/run.sh [--quick] [--external] [--systems a,b] [--runtime tokio|smol]`.
#
# `--external` loads each system with Debian's wrk against an nginx origin (both installed with
# apt-get when missing) instead of the bench's own threads and origin; results go to
# bench/results-external.{md,json}.
#
# Builds aether and the bench in release mode, installs the peers (crates `bore-cli` and
# `rathole`, several minutes of compiling the first time) under bench/.tools when missing,
# raises the open-file limit for the idle-tunnel figure, and runs the bench. A peer that is
# not installed or fails to install or run is reported as unavailable. `--quick` (CI) installs
# nothing unless AETHER_BENCH_INSTALL=1, so it stays within a few minutes; AETHER_BENCH_INSTALL=0
# skips installing in a full run. Results: bench/results.md and bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=bench/.tools
mkdir -p "$tools"
install=1 external=0
for arg in "$@"; do
    if [ "$arg" = --quick ]; then install=0; fi
    if [ "$arg" = --external ]; then external=1; fi
done
if [ "$external" = 1 ] && ! { command -v wrk && { command -v nginx || [ -x /usr/sbin/nginx ]; }; } >/dev/null; then
    echo "bench: installing wrk and nginx (Debian packages)" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -q wrk nginx-light >"$tools/apt.log" 2>&1 ||
        { $sudo apt-get update -q >>"$tools/apt.log" 2>&1 && $sudo apt-get install -y -q wrk nginx-light >>"$tools/apt.log" 2>&1; } ||
        { echo "bench: could not install wrk and nginx; see $tools/apt.log" >&2; exit 2; }
fi
if [ "${AETHER_BENCH_INSTALL:-$install}" != 0 ]; then
    # rathole's lock file pins a `time` that no longer builds: resolve afresh (no --locked).
    for pair in bore:bore-cli rathole:rathole; do
        bin=${pair%%:*} crate=${pair#*:}
        if [ ! -x "$tools/bin/$bin" ]; then
            echo "bench: installing $crate into $tools (once; see $tools/$bin.log)" >&2
            cargo install -q --root "$tools" "$crate" >"$tools/$bin.log" 2>&1 ||
                echo "bench: $crate failed to install; its row will say why" >&2
        fi
    done
fi
cargo build --release -q -p aether-cli -p aether-bench
# 1,000 idle tunnels of 10 connections: 10,000 sockets in the bench and as many in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true
exec target/release/aether-bench "$@"
