#!/usr/bin/env bash
# bench/analytics/run.sh — analytics ingestion: keel's POST
# /api/v1/analytics/events against an Express 5 peer doing the same job
# (bench/analytics/express.js: same checks, same buffer-and-batch design,
# same table), on one throw-away PostgreSQL 15 (tests/support/with_pg.sh),
# in one run.
#
#   bench/analytics/run.sh [DURATION_S] [CONNECTIONS]     (defaults 10 32)
#
# Each server runs alone, pinned to CPU 0 (keel: WORKERS=1; Node is one
# process), wrk pinned to CPU 1 posts the same 100-event batch with the
# same bearer token (-t1 -cC, 2 s warm-up, then DURATION_S measured);
# PostgreSQL is unpinned. Events/s = 202 answers/s x 100. After each
# server's SIGTERM the rows in analytics_events are counted against the
# events accepted (nothing accepted may be missing). Express and pg come
# from npm into build/bench/analytics (never a dependency of keel).
# Results: stdout and build/bench/analytics.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export DUR=${1:-10} CONN=${2:-32}
export OUT=$root/build/bench/analytics HERE=$here ROOT=$root
mkdir -p "$OUT"
for t in wrk curl taskset node npm; do
	command -v "$t" >/dev/null || { echo "bench-analytics: $t not found" >&2; exit 1; }
done
[ -x "$root/build/keel" ] || make -C "$root" --no-print-directory build/keel >&2
if [ ! -d "$OUT/node_modules/express" ] || [ ! -d "$OUT/node_modules/pg" ]; then
	cp "$here/package.json" "$OUT/package.json"
	(cd "$OUT" && npm install --omit=dev --no-audit --no-fund >&2)
fi
cp "$here/express.js" "$OUT/"

"$root/tests/support/with_pg.sh" bash -c '
set -euo pipefail
export DATABASE_URL=$KEEL_TEST_PG_URL
export JWT_SECRET=bench-analytics-secret-0123456789abcdef0123
export PASSWORD_HASH_MEMORY=8mb PASSWORD_HASH_OPS=1
"$ROOT/build/keel" migrate up >/dev/null
PORT=18590
psql() { command psql -X -q -A -t -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
wait_up() {
	for _ in $(seq 1 200); do
		curl -s -o /dev/null "http://127.0.0.1:$PORT/$1" && return 0
		sleep 0.05
	done
	echo "bench-analytics: the server did not come up" >&2
	return 1
}
# a token for wrk, from keel (the Express peer checks the same HS256 key)
PORT=$PORT WORKERS=1 RATE_LIMIT_ENABLED=false LOG_LEVEL=warn "$ROOT/build/keel" serve \
	>"$OUT/keel-setup.log" 2>&1 &
pid=$!
wait_up health/live
export TOKEN=$(curl -s -X POST -H "Content-Type: application/json" \
	-d "{\"email\":\"bench@example.com\",\"password\":\"correct horse battery staple\"}" \
	"http://127.0.0.1:$PORT/api/v1/auth/register" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)[\"access_token\"])")
kill -TERM $pid; wait $pid || true
/usr/bin/python3 - "$OUT/body.json" <<PY
import json, sys, datetime
t = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
ev = [{"name": "page_view", "ts": t, "session_id": "s-%d" % (i % 7),
       "properties": {"path": "/p/%d" % i, "plan": ["free", "pro"][i % 2], "n": i}}
      for i in range(100)]
open(sys.argv[1], "w").write(json.dumps({"events": ev}))
PY
export BODY_FILE=$OUT/body.json
run() { # name, start command...
	local name=$1; shift
	psql "TRUNCATE analytics_events"
	taskset -c 0 "$@" >"$OUT/$name.log" 2>&1 &
	local spid=$!
	sleep 0.3
	wait_up api/v1/analytics/events || true
	taskset -c 1 wrk -t1 -c"$CONN" -d2s -s "$HERE/post_batch.lua" \
		"http://127.0.0.1:$PORT/api/v1/analytics/events" >"$OUT/$name.warm.txt"
	taskset -c 1 wrk -t1 -c"$CONN" -d"${DUR}s" --latency -s "$HERE/post_batch.lua" \
		"http://127.0.0.1:$PORT/api/v1/analytics/events" >"$OUT/$name.wrk.txt"
	kill -TERM $spid; wait $spid || true
	local reqs non2xx rps p50 p99 warm_reqs warm_non rows
	reqs=$(awk "/requests in/ {print \$1}" "$OUT/$name.wrk.txt")
	non2xx=$(awk -F= "/non2xx/ {print \$2}" "$OUT/$name.wrk.txt")
	warm_reqs=$(awk "/requests in/ {print \$1}" "$OUT/$name.warm.txt")
	warm_non=$(awk -F= "/non2xx/ {print \$2}" "$OUT/$name.warm.txt")
	p50=$(awk "/ 50%/ {print \$2}" "$OUT/$name.wrk.txt")
	p99=$(awk "/ 99%/ {print \$2}" "$OUT/$name.wrk.txt")
	rows=$(psql "SELECT COUNT(*) FROM analytics_events")
	local accepted=$(( (reqs - non2xx + warm_reqs - warm_non) * 100 ))
	local eps=$(( (reqs - non2xx) * 100 / DUR ))
	echo "| $name | $eps | $(( (reqs - non2xx) / DUR )) | $non2xx | $p50 | $p99 | $rows / $accepted |"
}
{
	echo "| server | events/s | batches/s (202) | non-2xx | p50 | p99 | rows written / accepted |"
	echo "|---|---|---|---|---|---|---|"
	run keel env PORT=$PORT WORKERS=1 RATE_LIMIT_ENABLED=false LOG_LEVEL=warn ACCESS_LOG=false \
		JOBS_ENABLED=false DATABASE_POOL_MAX=4 "$ROOT/build/keel" serve
	run express node "$OUT/express.js" $PORT
} | tee "$OUT/../analytics.md"
'
