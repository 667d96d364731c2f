#!/usr/bin/env bash
# bench/jobs/run.sh — keel's job queue against graphile-worker and pg-boss
# on one throw-away PostgreSQL (tests/support/with_pg.sh), in one run:
#   - throughput: N no-op jobs queued, then workers with CONC concurrency
#     started; jobs per second until the last one completed;
#   - latency: enqueue-to-start on an idle queue, SAMPLES jobs 20 ms apart,
#     p50 / p99.
# graphile-worker and pg-boss come from npm, installed into
# build/bench/jobs/node_modules by this script only (never a dependency of
# keel). Results: stdout and build/bench/jobs/results.txt.
#
#   bench/jobs/run.sh [N] [CONC] [SAMPLES]     (defaults 10000 8 200)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-10000} conc=${2:-8} samples=${3:-200}
out=$root/build/bench/jobs
mkdir -p "$out"
make -C "$root" --no-print-directory build/jobs_bench >&2
if [ ! -d "$out/node_modules/graphile-worker" ] || [ ! -d "$out/node_modules/pg-boss" ]; then
	[ -f "$out/package.json" ] || echo '{"name":"keel-jobs-bench","private":true}' > "$out/package.json"
	(cd "$out" && npm install --no-audit --no-fund graphile-worker@0.16 pg-boss@10 pg >&2)
fi
cp "$here/graphile.js" "$here/pgboss.js" "$out/"
export N=$n CONC=$conc SAMPLES=$samples OUT=$out ROOT=$root
"$root/tests/support/with_pg.sh" bash -c '
	set -euo pipefail
	url=$KEEL_TEST_PG_URL
	{
		"$ROOT/build/jobs_bench" throughput "$url" "$N" "$CONC"
		node "$OUT/graphile.js" throughput "$url" "$N" "$CONC"
		node "$OUT/pgboss.js" throughput "$url" "$N" "$CONC"
		"$ROOT/build/jobs_bench" latency "$url" "$SAMPLES"
		node "$OUT/graphile.js" latency "$url" "$SAMPLES"
		node "$OUT/pgboss.js" latency "$url" "$SAMPLES"
	} | tee "$OUT/results.txt"
'
