#!/usr/bin/env bash
# bench/run.sh — keel against nginx, h2o, Kore, Express and Fastify in one
# run of ../shared/bench/run.sh (see its README). Extra arguments go to it.
#
#   bench/run.sh                      # full run, results in build/bench/
#   bench/run.sh --duration 5 --peers nginx --endpoints hello,json
#
# Targets (one worker each, pinned by the harness like every peer):
#   keel          the default service, rate limiter off (wrk from one
#                 address would otherwise meet the 100/15 min default)
#   keel-log      the same with the JSON access log on (to the file the
#                 harness redirects stdout to)
#   keel-bare     security headers and rate limiter off
#   keel-limited  security headers and the limiter on: the general and
#                 burst tiers both checked on every request, with limits
#                 too high to refuse, so every request does the full work
#   keel-limited-redis  the same limits kept in Redis (REDIS_URL: a
#                 throw-away redis-server from tests/support/redis_tmp.sh,
#                 unpinned like PostgreSQL in bench/db); only when
#                 redis-server is installed
# keel-bare against keel-limited is the edge-protection overhead, and
# keel-limited against keel-limited-redis the cost of shared limits
# (docs/performance.md).
#
# KEEL_BENCH_TARGETS=keel-limited,keel-limited-redis runs only the keel
# targets named (default: all of them; the peers are chosen by --peers).
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
lim='RATE_LIMIT_ENABLED=true RATE_LIMIT_MAX=1000000000 RATE_LIMIT_BURST=1000000000/1s'
keel_targets=(
	'keel=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false ./build/keel serve --port {PORT}'
	'keel-log=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=true RATE_LIMIT_ENABLED=false ./build/keel serve --port {PORT}'
	'keel-bare=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false SECURITY_HEADERS=false RATE_LIMIT_ENABLED=false ./build/keel serve --port {PORT}'
	"keel-limited=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false $lim ./build/keel serve --port {PORT}"
)
want=${KEEL_BENCH_TARGETS:-}
wanted() { [ -z "$want" ] || [[ ",$want," == *",$1,"* ]]; }
if command -v redis-server >/dev/null && wanted keel-limited-redis; then
	eval "$("$root/tests/support/redis_tmp.sh" start)"
	trap '"$root/tests/support/redis_tmp.sh" destroy "$KEEL_TEST_REDIS_DIR" >/dev/null 2>&1' EXIT
	keel_targets+=("keel-limited-redis=env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false $lim REDIS_URL=$KEEL_TEST_REDIS_URL ./build/keel serve --port {PORT}")
fi
target_args=()
for t in "${keel_targets[@]}"; do
	wanted "${t%%=*}" && target_args+=(--target "$t")
done
[ ${#target_args[@]} -gt 0 ] || { echo "bench: KEEL_BENCH_TARGETS=$want names no keel target" >&2; exit 2; }
"$shared/run.sh" "${target_args[@]}" \
	--json "$out/bench.json" --md "$out/bench.md" "$@"
