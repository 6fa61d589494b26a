#!/usr/bin/env bash
# Builds aether, starts a tiny origin on 127.0.0.1:${PORT:-3000}, shares it with `aether share`
# (embedded loopback server), fetches the public URL with curl, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-3000}"
cargo build --release -q -p aether-cli
dir="$(mktemp -d)"
echo "hello from the origin on port $PORT" > "$dir/index.html"
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &
origin=$!
trap 'kill $origin 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
target/release/aether share "$PORT" > "$dir/url" 2> "$dir/log" &
share=$!
trap 'kill $share $origin 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -s "$dir/url" ] && break; sleep 0.1; done
cat "$dir/log"
url="$(head -n1 "$dir/url")"
echo "\$ curl $url/"
curl -sS "$url/"
