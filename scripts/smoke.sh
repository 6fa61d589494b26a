#!/usr/bin/env bash
# Release-build smoke run: `aether serve` and `aether share` from target/release (where
# debug assertions are off), on each runtime, in front of a tiny origin; curls through the
# tunnel and checks the body. Stops what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p aether-cli
bin=target/release/aether
dir="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
echo "smoke body $$" > "$dir/index.html"

# Waits (at most 20 s) until file $1 has a line matching $2; prints that line.
wait_line() {
  for _ in $(seq 200); do
    if line="$(grep -m1 -E "$2" "$1" 2>/dev/null)"; then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "no line matching '$2' in $1:" >&2; cat "$1" >&2; return 1
}

python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$dir" > "$dir/origin.log" 2>&1 &
pids+=($!)
origin_port="$(wait_line "$dir/origin.log" 'port [0-9]+' | sed -E 's/.*port ([0-9]+).*/\1/')"

for rt in tokio smol; do
  "$bin" --runtime "$rt" serve --address 127.0.0.1 --port 0 --tunnel-port 0 2> "$dir/serve-$rt.log" &
  pids+=($!)
  http="$(wait_line "$dir/serve-$rt.log" 'serving on http://' | sed -E 's#.*http://([^,]+),.*#\1#')"
  "$bin" --runtime "$rt" share "$origin_port" --server "http://$http" > "$dir/url-$rt" 2> "$dir/share-$rt.log" &
  pids+=($!)
  url="$(wait_line "$dir/url-$rt" '^http://')"
  id="${url##*/}"
  wait_line "$dir/serve-$rt.log" "tunnel $id online" > /dev/null
  body="$(curl -sS --max-time 10 "$url/")"
  if [ "$body" != "smoke body $$" ]; then
    echo "smoke ($rt): expected 'smoke body $$', got '$body'" >&2
    cat "$dir/serve-$rt.log" "$dir/share-$rt.log" >&2
    exit 1
  fi
  echo "smoke ($rt): $url/ -> $body"
done
