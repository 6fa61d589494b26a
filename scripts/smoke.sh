#!/usr/bin/env bash
# A release build end to end, as CI's smoke run: `aether serve` and `aether share` from
# target/release on loopback (tokio server, smol client), a tiny origin, and curl through the tunnel.
# Release builds drop debug assertions, so this is the run that covers them. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p aether-cli
bin=target/release/aether
dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
echo "smoke test body $$" > "$dir/index.html"
python3 -m http.server 0 --bind 127.0.0.1 --directory "$dir" > "$dir/origin.log" 2>&1 &
pids+=($!)
wait_for() { for _ in $(seq 200); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; echo "timed out waiting for '$1' in $2" >&2; cat "$2" >&2; exit 1; }
wait_for "Serving HTTP" "$dir/origin.log"
origin_port="$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$dir/origin.log" | head -n1)"
"$bin" --runtime tokio serve --address 127.0.0.1 --port 0 --tunnel-port 0 2> "$dir/serve.log" &
pids+=($!)
wait_for "serving on" "$dir/serve.log"
server="$(sed -n 's/.*serving on \(http:[^,]*\),.*/\1/p' "$dir/serve.log")"
"$bin" --runtime smol share "$origin_port" --server "$server" > "$dir/url" 2> "$dir/share.log" &
pids+=($!)
wait_for "http" "$dir/url"
url="$(head -n1 "$dir/url")"
# The URL comes at registration; the first tunnel connection lands a moment later.
for _ in $(seq 100); do
  body="$(curl -sS "$url/" || true)"
  [ "$body" = "smoke test body $$" ] && { echo "smoke: $url/ answered through a release build"; exit 0; }
  sleep 0.05
done
echo "smoke: $url/ answered '$body'" >&2
cat "$dir/serve.log" "$dir/share.log" >&2
exit 1
