#!/usr/bin/env bash
# bench/run.sh — keel against nginx, h2o, Kore, Express and Fastify in one
# run of ../shared/bench/run.sh (see its README). Extra arguments go to it.
#
#   bench/run.sh                      # full run, results in build/bench/
#   bench/run.sh --duration 5 --peers nginx --endpoints hello,json
#
# Targets: keel (access log off) and keel-log (JSON access log on, written
# to the file the harness redirects stdout to). One worker, pinned by the
# harness like every peer.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
shared=${KEEL_SHARED_BENCH:-$root/../shared/bench}
[ -x "$shared/run.sh" ] || { echo "bench: $shared/run.sh not found (set KEEL_SHARED_BENCH)" >&2; exit 2; }
[ -x "$root/build/keel" ] || { echo "bench: build/keel missing: run make first" >&2; exit 2; }
"$shared/setup-peers.sh" >&2
out=$root/build/bench
mkdir -p "$out"
cd "$root"
exec "$shared/run.sh" \
	--target 'keel=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false ./build/keel serve --port {PORT}' \
	--target 'keel-log=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=true ./build/keel serve --port {PORT}' \
	--json "$out/bench.json" --md "$out/bench.md" "$@"
