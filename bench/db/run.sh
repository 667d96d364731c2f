#!/usr/bin/env bash
# bench/db/run.sh — the "single query" benchmark: keel's GET /db?id=N
# against Express 5 and Fastify 5 doing the same with the `pg` package,
# against the same throw-away PostgreSQL 15, in one run.
#
#   bench/db/run.sh                        # P=4 and 8, 10 s per target, results in build/bench/
#   bench/db/run.sh --rounds 3 --targets keel,fastify,express,fastify-prepared
#   bench/db/run.sh --duration 5 --targets keel,fastify
#
# What it does (docs/performance.md, "Single query"):
#  1. npm ci --omit=dev in bench/db when node_modules is missing;
#  2. a PostgreSQL 15 cluster from tests/support/pg_tmp.sh (unpinned: the
#     scheduler puts its backends on either CPU), the schema and the 10,000
#     seeded rows from `build/keel migrate up`, then VACUUM ANALYZE items;
#  3. per pool size P and per target, one after the other: start the server
#     pinned to CPU 0 (taskset; keel: WORKERS=1, DATABASE_POOL_MAX=P; the
#     Node peers: pg.Pool max=P), wait until it answers, check GET /db?id=42
#     (the right row) and /db?id=10001 (404), 2 s of warm-up, then
#     `wrk -t1 -c64 -d10s --latency -s bench/db/random_id.lua` pinned to
#     CPU 1 (a random id in 1..10000 per request);
#  4. during the measured run, CPU time (utime+stime from /proc/PID/stat)
#     of the server, of every PostgreSQL process (postmaster and all its
#     children) and of wrk, plus each CPU's busy share from /proc/stat,
#     sampled over the steady part of the run (from 1 s after wrk starts
#     to 1 s before it ends);
#  5. a markdown table on stdout (and in build/bench/db.md) and
#     build/bench/db.json; everything it started is stopped on exit.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

DURATION=10
WARMUP=2
ROUNDS=1
CONNECTIONS=64
POOLS=4,8
PG_CPU=""
TARGETS=keel,fastify,express
SERVER_CPU=0
WRK_CPU=1
PORT_BASE=18480
START_TIMEOUT=30
JSON_OUT=$root/build/bench/db.json
MD_OUT=$root/build/bench/db.md
LOG_DIR=""
KEEL_BIN=$root/build/keel

usage() {
	cat <<'EOF'
Usage: bench/db/run.sh [options]

  --duration S       measured seconds per target (default 10)
  --warmup S         unmeasured seconds of load before (default 2; 0 = none)
  --rounds N         passes over all pool sizes and targets, each starting
                     every server afresh; per target the median run by req/s
                     is reported, all runs go to the JSON (default 1)
  --connections C    wrk keep-alive connections (default 64)
  --pool LIST        database pool sizes P, comma separated: every target is
                     run with each (default 4,8). keel: DATABASE_POOL_MAX=P
                     (= DATABASE_POOL_MIN); Node: pg.Pool({max: P})
  --targets LIST     in order, from keel, fastify, express, fastify-prepared,
                     express-prepared (default keel,fastify,express); the
                     -prepared variants use a named pg statement (prepared
                     once per connection, like keel's statement cache)
  --json PATH        JSON results (default build/bench/db.json)
  --md PATH          markdown report (default build/bench/db.md)
  --log-dir DIR      keep server logs, wrk output and the PostgreSQL log here
  --pg-cpu N         pin PostgreSQL (postmaster, so every backend) to CPU N
                     (default: unpinned, the documented setup; an experiment)
  --server-cpu N     CPU for the server (default 0)
  --wrk-cpu N        CPU for wrk (default 1)
  -h, --help         this text
EOF
}

die() { echo "bench-db: $*" >&2; exit 2; }
log() { echo "[bench-db] $*" >&2; }
warn() { echo "[bench-db] WARNING: $*" >&2; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
	case $1 in
	--*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
	-h|--help) usage; exit 0 ;;
	esac
	[ $# -ge 2 ] || die "option $1 needs a value (see --help)"
	case $1 in
	--duration) DURATION=$2 ;;
	--warmup) WARMUP=$2 ;;
	--rounds) ROUNDS=$2 ;;
	--connections) CONNECTIONS=$2 ;;
	--pool) POOLS=$2 ;;
	--targets) TARGETS=$2 ;;
	--json) JSON_OUT=$2 ;;
	--md) MD_OUT=$2 ;;
	--log-dir) LOG_DIR=$2 ;;
	--server-cpu) SERVER_CPU=$2 ;;
	--wrk-cpu) WRK_CPU=$2 ;;
	--pg-cpu) PG_CPU=$2 ;;
	*) die "unknown option: $1 (see --help)" ;;
	esac
	shift 2
done
for v in DURATION WARMUP ROUNDS CONNECTIONS SERVER_CPU WRK_CPU; do
	is_uint "${!v}" || die "--$(tr 'A-Z_' 'a-z-' <<<"$v") must be a non-negative integer"
done
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$CONNECTIONS" -ge 1 ] ||
	die "--duration, --rounds and --connections must be >= 1"
IFS=, read -r -a POOL_LIST <<<"$POOLS"
for p in "${POOL_LIST[@]}"; do
	is_uint "$p" && [ "$p" -ge 1 ] && [ "$p" -le 50 ] || die "--pool: sizes must be in 1..50 (the cluster allows 60 connections)"
done
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
	case $t in keel|fastify|express|fastify-prepared|express-prepared) ;;
	*) die "unknown target '$t'" ;; esac
done

for t in wrk curl taskset setsid ps awk ss; do
	command -v "$t" >/dev/null || die "'$t' not found (apt-get install wrk curl util-linux procps iproute2)"
done
NCPU=$(getconf _NPROCESSORS_ONLN)
[ "$NCPU" -ge 2 ] || die "needs 2 CPUs (server and wrk pinned apart), found $NCPU"
[ "$SERVER_CPU" -lt "$NCPU" ] && [ "$WRK_CPU" -lt "$NCPU" ] || die "--server-cpu/--wrk-cpu must be < $NCPU"
[ -z "$PG_CPU" ] || { is_uint "$PG_CPU" && [ "$PG_CPU" -lt "$NCPU" ]; } || die "--pg-cpu must be < $NCPU"
[ -x "$KEEL_BIN" ] || die "$KEEL_BIN missing: run make first"
HZ=$(getconf CLK_TCK)
need_node=0
for t in "${TARGET_LIST[@]}"; do [ "$t" = keel ] || need_node=1; done
if [ "$need_node" = 1 ]; then
	command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for the Node peers"
	if [ ! -d "$here/node_modules/pg" ] || [ ! -d "$here/node_modules/fastify" ] || [ ! -d "$here/node_modules/express" ]; then
		log "installing the Node peers' packages (npm ci --omit=dev in bench/db)"
		(cd "$here" && npm ci --omit=dev --no-audit --no-fund >&2) || die "npm ci failed"
	fi
fi

# ---------------------------------------------------------------- clean-up
TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-bench-db.XXXXXX") || die "mktemp failed"
[ -n "$LOG_DIR" ] || LOG_DIR=$TMP/logs
mkdir -p "$LOG_DIR" && LOG_DIR=$(cd "$LOG_DIR" && pwd) || die "cannot create $LOG_DIR"
PG_DIR=""
CUR_PID=""
WRK_PID=""

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# sleep that a signal interrupts at once (bash runs traps only after a
# foreground command ends, but during `wait` at once).
nap() { sleep "$1" & wait $!; }

# SIGTERM, up to 10 s, then SIGKILL to its process group (it was started
# with setsid, so its PID is the group id). Always by id.
stop_server() {
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
	if alive "$pid"; then
		warn "pid $pid ignored SIGTERM for 10 s; SIGKILL"
		kill -KILL -- "-$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if alive "$WRK_PID"; then kill -TERM "$WRK_PID" 2>/dev/null; wait "$WRK_PID" 2>/dev/null; fi
	[ -n "$CUR_PID" ] && stop_server "$CUR_PID"
	if [ -n "$PG_DIR" ]; then
		[ -f "$PG_DIR/server.log" ] && cp "$PG_DIR/server.log" "$LOG_DIR/postgres.log" 2>/dev/null
		"$root/tests/support/pg_tmp.sh" destroy "$PG_DIR" || warn "could not remove $PG_DIR"
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "[bench-db] interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- PostgreSQL
log "starting PostgreSQL (tests/support/pg_tmp.sh, unpinned)"
pg_env=$("$root/tests/support/pg_tmp.sh" start) || die "could not start PostgreSQL"
eval "$pg_env"
PG_DIR=$KEEL_TEST_PG_DIR
DB_URL=$KEEL_TEST_PG_URL
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_MASTER=$(head -n 1 "$PG_DIR/data/postmaster.pid")
PG_VERSION=$("$PGBIN/postgres" --version | awk '{print $3}')
log "PostgreSQL $PG_VERSION on $DB_URL (postmaster pid $PG_MASTER)"
if [ -n "$PG_CPU" ]; then
	# Backends are forked from the postmaster and inherit its affinity.
	for p in $PG_MASTER $(ps -o pid= --ppid "$PG_MASTER"); do taskset -a -p -c "$PG_CPU" "$p" >/dev/null; done
	log "PostgreSQL pinned to CPU $PG_CPU (--pg-cpu: not the documented setup)"
fi
PG_PIN=${PG_CPU:-unpinned}
DATABASE_URL=$DB_URL "$KEEL_BIN" migrate up >"$LOG_DIR/migrate.log" 2>&1 ||
	{ cat "$LOG_DIR/migrate.log" >&2; die "keel migrate up failed"; }
rows=$("$PGBIN/psql" "$DB_URL" -Atq -c 'VACUUM ANALYZE items' -c 'SELECT count(*) FROM items') ||
	die "psql failed"
[ "$rows" = 10000 ] || die "items has '$rows' rows, expected 10000"
log "schema + seed: build/keel migrate up, $rows rows in items"

# ---------------------------------------------------------------- helpers
port_free() {
	[ -z "$(ss -Htan "sport = :$1" 2>/dev/null)" ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
NEXT_PORT=$PORT_BASE
pick_port() {
	while ! port_free "$NEXT_PORT"; do
		NEXT_PORT=$((NEXT_PORT + 1))
		[ "$NEXT_PORT" -lt $((PORT_BASE + 500)) ] || return 1
	done
	PORT=$NEXT_PORT
	NEXT_PORT=$((NEXT_PORT + 1))
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# One snapshot, taken by a single awk process (forking a tool per file
# would itself take CPU time and, on loaded CPUs, hundreds of ms): wall
# time; utime+stime (clock ticks, all threads) and context switches of the
# server (summed over its threads' status) and of wrk; the same summed over the postmaster and every process
# it started ("pid ticks ctxsw" lines, so a backend that appears between
# two snapshots can be counted whole); "busy total" jiffies of the two
# CPUs from /proc/stat (busy = all but idle and iowait) and their irq +
# softirq jiffies.
snapshot() { # SERVER_PID WRK_PID OUT
	local now=$EPOCHREALTIME
	awk -v srv="$1" -v wrk="$2" -v pm="$PG_MASTER" -v c0="cpu$SERVER_CPU" -v c1="cpu$WRK_CPU" -v now="$now" '
		function ctx(pid,   f, line, n) {
			f = "/proc/" pid "/status"; n = 0
			while ((getline line < f) > 0)
				if (line ~ /^(non)?voluntary_ctxt_switches:/) { split(line, a, /[ \t]+/); n += a[2] }
			close(f); return n
		}
		FILENAME == "/proc/stat" {
			if ($1 == c0 || $1 == c1) { t = 0; for (i = 2; i <= NF; i++) t += $i; cpu[$1] = (t - $5 - $6) " " t " " ($7 + $8) }
			next
		}
		/^[0-9]+ \(/ { # a /proc/PID/stat line
			pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
			if (pid == srv) srvt = f[12] + f[13]
			else if (pid == wrk) wrkt = f[12] + f[13]
			if (pid == pm || f[2] == pm) pg[pid] = f[12] + f[13]
			else if (pid == 2 || f[2] == 2) kt[pid] = f[12] + f[13] # kernel threads (ksoftirqd, kworker)
			next
		}
		/^(non)?voluntary_ctxt_switches:/ { srvcs += $2 } # the server threads status
		END {
			printf "wall %.6f\nsrv %d %d\nwrk %d\ncpus %s %s\n", now, srvt, srvcs, wrkt, cpu[c0], cpu[c1]
			for (p in pg) printf "pg %s %d %d\n", p, pg[p], ctx(p)
			for (p in kt) printf "kt %s %d\n", p, kt[p]
		}' /proc/stat - >"$3" < <(cat /proc/[0-9]*/stat /proc/"$1"/task/*/status 2>/dev/null)
}

# The CPU figures of a measured run from two snapshots, as a JSON object.
cpu_json() { # A B HZ
	awk -v hz="$3" '
		NR == FNR {
			if ($1 == "wall") w0 = $2; else if ($1 == "srv") { s0 = $2; sc0 = $3 }
			else if ($1 == "wrk") k0 = $2; else if ($1 == "cpus") { b0 = $2; t0 = $3; i0 = $4; b1 = $5; t1 = $6; i1 = $7 }
			else if ($1 == "pg") { pg[$2] = $3; pc[$2] = $4 }
			else if ($1 == "kt") kt[$2] = $3
			next
		}
		$1 == "wall" { w = $2 - w0 }
		$1 == "srv" { s = ($2 - s0) / hz; sc = $3 - sc0 }
		$1 == "wrk" { k = ($2 - k0) / hz }
		$1 == "cpus" {
			u0 = 100 * ($2 - b0) / ($3 - t0); u1 = 100 * ($5 - b1) / ($6 - t1)
			irq = (($4 - i0) + ($7 - i1)) / hz
			busy = (($2 - b0) + ($5 - b1)) / hz # CPU-seconds, both CPUs
		}
		$1 == "pg" { g += ($3 - pg[$2]) / hz; gc += $4 - pc[$2] }
		$1 == "kt" { kk += ($3 - kt[$2]) / hz }
		END {
			printf "{\"window_s\":%.3f,\"server_cpu_s\":%.2f,\"postgres_cpu_s\":%.2f,\"wrk_cpu_s\":%.2f,\"kthreads_cpu_s\":%.2f,\"irq_softirq_s\":%.2f,\"busy_s\":%.2f,\"server_ctxsw\":%d,\"postgres_ctxsw\":%d,\"server_cpu_busy_pct\":%.1f,\"wrk_cpu_busy_pct\":%.1f}",
				w, s, g, k, kk, irq, busy, sc, gc, u0, u1
		}' "$1" "$2"
}

jget() { sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<<"$1"; }
fmt() { awk -v x="$1" -v f="$2" 'BEGIN { printf f, x }'; }
fmt_ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
fmt_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
json_str() {
	local s=$1
	s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/ }
	printf '"%s"' "$s"
}

# The server command for target $1 with pool size $2 on port $3 (an array).
target_cmd() {
	local t=$1 p=$2 port=$3
	case $t in
	keel)
		CMD=(env WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false ENABLE_DEMO_ROUTES=true RATE_LIMIT_ENABLED=false
			MIGRATE_ON_START=false DATABASE_URL="$DB_URL" DATABASE_POOL_MAX="$p"
			DATABASE_POOL_MIN="$p" "$KEEL_BIN" serve --port "$port") ;;
	fastify|express)
		CMD=(env NODE_ENV=production BENCH_HOST=127.0.0.1 DATABASE_URL="$DB_URL" PG_POOL_MAX="$p"
			PG_PREPARED=0 node "$here/$t.js" "$port") ;;
	fastify-prepared|express-prepared)
		CMD=(env NODE_ENV=production BENCH_HOST=127.0.0.1 DATABASE_URL="$DB_URL" PG_POOL_MAX="$p"
			PG_PREPARED=1 node "$here/${t%-prepared}.js" "$port") ;;
	esac
}

target_version() {
	case $1 in
	keel) "$KEEL_BIN" version 2>/dev/null | head -n 1 ;;
	*)
		local fw=${1%-prepared}
		(cd "$here" && node -e "process.stdout.write(require('$fw/package.json').version + ' + pg ' + require('pg/package.json').version + ' (node ' + process.version + ')')") ;;
	esac
}

# GET /db?id=$2 on port $1: "STATUS BODY".
get_db() { curl -s --max-time 5 -w ' %{http_code}' "http://127.0.0.1:$1/db?id=$2" 2>/dev/null; }

# The row of id 42, as migration 0001 seeds it.
check_row() {
	local port=$1 out body code
	out=$(get_db "$port" 42); code=${out##* }; body=${out% *}
	[ "$code" = 200 ] || { echo "GET /db?id=42: HTTP ${code:-none}"; return; }
	body=$(tr -d ' \n\r\t' <<<"$body")
	for kv in '"id":42' '"name":"item00042"' '"price_cents":5998'; do
		[[ $body == *"$kv"* ]] || { echo "GET /db?id=42: wrong row: $body"; return; }
	done
	[[ $body == '{'*'}' ]] || { echo "GET /db?id=42: not a JSON object"; return; }
	out=$(get_db "$port" 10001); code=${out##* }
	[ "$code" = 404 ] || { echo "GET /db?id=10001: HTTP ${code:-none}, expected 404"; return; }
	echo ""
}

wait_ready() {
	local pid=$1 port=$2 deadline=$((SECONDS + START_TIMEOUT)) code
	while [ "$SECONDS" -lt "$deadline" ]; do
		alive "$pid" || return 1
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/db?id=1" 2>/dev/null)
		[ -n "$code" ] && [ "$code" != 000 ] && return 0
		sleep 0.1
	done
	return 1
}

# One wrk run; measure=1 also samples CPU over the steady part. Sets
# WRK_RES (the BENCH_RESULT object) and CPU_RES (a JSON fragment).
run_wrk() {
	local port=$1 dur=$2 out=$3 measure=$4 srv=$5 rc
	# exec: $! is wrk itself, so its CPU time can be read by PID.
	(exec taskset -c "$WRK_CPU" wrk -t1 -c"$CONNECTIONS" -d"${dur}s" --timeout 5s --latency \
		-s "$here/random_id.lua" "http://127.0.0.1:$port/db" </dev/null >"$out" 2>&1) &
	WRK_PID=$!
	CPU_RES=""
	if [ "$measure" = 1 ]; then
		# 1 s off each end (ramp-up, wrk's exit); less on short runs
		local lead=1
		[ "$dur" -ge 4 ] || lead=$(awk -v d="$dur" 'BEGIN { print d / 4 }')
		nap "$lead"
		snapshot "$srv" "$WRK_PID" "$TMP/snap.A"
		nap "$(awk -v d="$dur" -v l="$lead" 'BEGIN { print d - 2 * l }')"
		snapshot "$srv" "$WRK_PID" "$TMP/snap.B"
		CPU_RES=$(cpu_json "$TMP/snap.A" "$TMP/snap.B" "$HZ")
	fi
	wait "$WRK_PID"; rc=$?
	WRK_PID=""
	WRK_RES=$(sed -n 's/^BENCH_RESULT //p' "$out" | tail -n 1)
	[ "$rc" = 0 ] && [ -n "$WRK_RES" ]
}

# ---------------------------------------------------------------- run
START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
# Is the machine idle? Anything else running skews every figure here.
idle_before=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; sleep 1; awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
BUSY_BEFORE=$(awk 'NR == 1 { b = $1; i = $2 } NR == 2 { printf "%.0f", 100 * ($1 - b) / (($1 - b) + ($2 - i)) }' <<<"$idle_before")
[ "$BUSY_BEFORE" -le 10 ] || warn "the machine is ${BUSY_BEFORE}% busy before the run (load $LOADAVG): figures will be off"
RESULTS=()     # JSON objects
ROWS=()        # "P|target|status|rps|p50|p99|errors|rss_idle|rss_after|cpu-json|rounds"
declare -A FASTIFY_RPS RUNS VERSION COMMAND FAIL
log "wrk -t1 -c$CONNECTIONS -d${DURATION}s (+${WARMUP}s warm-up), $ROUNDS round(s); server on CPU $SERVER_CPU, wrk on CPU $WRK_CPU, PostgreSQL $([ -n "$PG_CPU" ] && echo "on CPU $PG_CPU" || echo unpinned); logs in $LOG_DIR"
failed=0

# One measurement of target $1 with pool $2 (round $3): appends
# "rps<TAB>wrk-json<TAB>cpu-json<TAB>rss_idle<TAB>rss_after" to RUNS[$2:$1],
# or sets FAIL[$2:$1].
measure() {
	local T=$1 P=$2 r=$3 name="$1.p$2.r$3" why rss_idle rss_after
	pick_port || die "no free port"
	target_cmd "$T" "$P" "$PORT"
	[ -n "${VERSION[$P:$T]:-}" ] || VERSION[$P:$T]=$(target_version "$T")
	COMMAND[$P:$T]="taskset -c $SERVER_CPU ${CMD[*]}"
	log "$T (pool $P$([ "$ROUNDS" -gt 1 ] && echo ", round $r/$ROUNDS")): starting on port $PORT"
	setsid taskset -c "$SERVER_CPU" "${CMD[@]}" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
	CUR_PID=$!
	if ! wait_ready "$CUR_PID" "$PORT"; then
		why="did not answer within ${START_TIMEOUT}s"
		alive "$CUR_PID" || why="exited during start-up"
		tail -n 15 "$LOG_DIR/$name.log" >&2
	else
		why=$(check_row "$PORT")
	fi
	if [ -n "$why" ]; then
		warn "$T (pool $P): $why"
		stop_server "$CUR_PID"; CUR_PID=""
		FAIL[$P:$T]=$why
		return 1
	fi
	nap 1
	rss_idle=$(rss_kb "$CUR_PID")
	if [ "$WARMUP" -gt 0 ]; then
		run_wrk "$PORT" "$WARMUP" "$LOG_DIR/$name.warmup.txt" 0 "$CUR_PID" || warn "$T: warm-up wrk failed"
	fi
	log "$T (pool $P): measuring ${DURATION}s"
	if ! run_wrk "$PORT" "$DURATION" "$LOG_DIR/$name.wrk.txt" 1 "$CUR_PID"; then
		why="wrk failed (see $LOG_DIR/$name.wrk.txt)"
	fi
	rss_after=$(rss_kb "$CUR_PID")
	if ! alive "$CUR_PID"; then
		why="died under load"; tail -n 15 "$LOG_DIR/$name.log" >&2
	fi
	stop_server "$CUR_PID"; CUR_PID=""
	if [ -n "$why" ]; then
		warn "$T (pool $P): $why"
		FAIL[$P:$T]=$why
		return 1
	fi
	RUNS[$P:$T]+="$(jget "$WRK_RES" rps)	$WRK_RES	$CPU_RES	$rss_idle	$rss_after"$'\n'
	log "$T (pool $P): $(fmt "$(jget "$WRK_RES" rps)" '%.0f') req/s, p50 $(fmt_ms "$(jget "$WRK_RES" p50_us)") ms, p99 $(fmt_ms "$(jget "$WRK_RES" p99_us)") ms"
}

# --rounds N: N passes over every pool size and target, each starting the
# server afresh (interleaved, so a slow patch of the machine does not
# land on one target only); the median run by req/s is reported.
for ((r = 1; r <= ROUNDS; r++)); do
	for P in "${POOL_LIST[@]}"; do
		for T in "${TARGET_LIST[@]}"; do
			[ -z "${FAIL[$P:$T]:-}" ] || continue
			measure "$T" "$P" "$r" || failed=1
		done
	done
done

for P in "${POOL_LIST[@]}"; do
	for T in "${TARGET_LIST[@]}"; do
		if [ -n "${FAIL[$P:$T]:-}" ]; then
			ROWS+=("$P|$T|failed: ${FAIL[$P:$T]}||||||||")
			RESULTS+=("$(printf '{"target": %s, "pool": %s, "status": %s}' "$(json_str "$T")" "$P" "$(json_str "failed: ${FAIL[$P:$T]}")")")
			continue
		fi
		runs=${RUNS[$P:$T]%$'\n'}
		n=$(wc -l <<<"$runs")
		med=$(sort -g -k1,1 <<<"$runs" | sed -n "$(((n + 1) / 2))p")
		IFS=$'\t' read -r rps res cpu rss_idle rss_after <<<"$med"
		all_rps=$(cut -f1 <<<"$runs" | paste -sd, -)
		p50=$(jget "$res" p50_us); p99=$(jget "$res" p99_us)
		errs=0
		for k in err_connect err_read err_write err_status err_timeout; do errs=$((errs + $(jget "$res" "$k"))); done
		[ "$errs" = 0 ] || { warn "$T (pool $P): $errs errors: not a valid figure"; failed=1; }
		case $T in fastify) FASTIFY_RPS[$P]=$rps ;; esac
		ROWS+=("$P|$T|ok|$rps|$p50|$p99|$errs|$rss_idle|$rss_after|$cpu|$all_rps")
		runs_json=$(awk -F'\t' '{ printf "%s{\"rps\": %s, \"cpu\": %s, \"rss_idle_kb\": %s, \"rss_after_kb\": %s, \"wrk\": %s}", (NR > 1 ? ", " : ""), $1, $3, $4, $5, $2 }' <<<"$runs")
		RESULTS+=("$(printf '{"target": %s, "version": %s, "command": %s, "pool": %s, "status": "ok", "rps": %s, "rounds_rps": [%s], "p50_us": %s, "p99_us": %s, "errors": %s, "rss_idle_kb": %s, "rss_after_kb": %s, "cpu": %s, "runs": [%s]}' \
			"$(json_str "$T")" "$(json_str "${VERSION[$P:$T]}")" "$(json_str "${COMMAND[$P:$T]}")" "$P" "$rps" "$all_rps" "$p50" "$p99" "$errs" "$rss_idle" "$rss_after" "$cpu" "$runs_json")")
	done
done

# ---------------------------------------------------------------- report
report() {
	local row P T st rps p50 p99 errs ri ra cpu all ratio fr
	echo "| pool | target | req/s | × fastify | p50 ms | p99 ms | errors | RSS idle MB | RSS after MB |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
	for row in "${ROWS[@]}"; do
		IFS='|' read -r P T st rps p50 p99 errs ri ra cpu all <<<"$row"
		if [ "$st" != ok ]; then echo "| $P | $T | $st | | | | | | |"; continue; fi
		fr=${FASTIFY_RPS[$P]:-}
		ratio=$([ -n "$fr" ] && awk -v a="$rps" -v b="$fr" 'BEGIN { printf "%.2f", a / b }' || echo —)
		[ "$ROUNDS" -gt 1 ] && all=" ($(tr , '\n' <<<"$all" | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f–%.0f", v[1], v[NR] }'))" || all=""
		echo "| $P | $T | $(fmt "$rps" '%.0f')$all | $ratio | $(fmt_ms "$p50") | $(fmt_ms "$p99") | $errs | $(fmt_mb "$ri") | $(fmt_mb "$ra") |"
	done
	echo
	echo "Where the CPU goes (steady part of the measured run). % = share of one core; µs/req = CPU time per request; kernel threads = ksoftirqd, kworkers (network work deferred from interrupts); rest = busy time of the two CPUs charged to none of these (other processes, interrupts):"
	echo
	echo "| pool | target | server % | PostgreSQL % | wrk % | kernel threads % | rest % | CPU $SERVER_CPU busy % | CPU $WRK_CPU busy % | server µs/req | PostgreSQL µs/req | wrk µs/req | both CPUs busy µs/req | server ctx sw/req | PostgreSQL ctx sw/req |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for row in "${ROWS[@]}"; do
		IFS='|' read -r P T st rps p50 p99 errs ri ra cpu all <<<"$row"
		[ "$st" = ok ] || continue
		local w s g k kt b c0 c1 scs gcs
		w=$(jget "$cpu" window_s); s=$(jget "$cpu" server_cpu_s); g=$(jget "$cpu" postgres_cpu_s); k=$(jget "$cpu" wrk_cpu_s)
		b=$(jget "$cpu" busy_s); kt=$(jget "$cpu" kthreads_cpu_s)
		c0=$(jget "$cpu" server_cpu_busy_pct); c1=$(jget "$cpu" wrk_cpu_busy_pct)
		scs=$(jget "$cpu" server_ctxsw); gcs=$(jget "$cpu" postgres_ctxsw)
		awk -v P="$P" -v T="$T" -v w="$w" -v s="$s" -v g="$g" -v k="$k" -v b="$b" -v kt="$kt" -v r="$rps" -v c0="$c0" -v c1="$c1" -v scs="$scs" -v gcs="$gcs" 'BEGIN {
			n = r * w; o = b - s - g - k - kt; if (o < 0) o = 0
			printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
				P, T, 100 * s / w, 100 * g / w, 100 * k / w, 100 * kt / w, 100 * o / w, c0, c1,
				1e6 * s / n, 1e6 * g / n, 1e6 * k / n, 1e6 * b / n, scs / n, gcs / n }'
	done
	echo
	echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency, random id 1..10000 per request (+${WARMUP}s warm-up$([ "$ROUNDS" -gt 1 ] && echo "; median of $ROUNDS interleaved rounds, (min–max)")); server on CPU $SERVER_CPU, wrk on CPU $WRK_CPU, PostgreSQL $PG_VERSION $([ -n "$PG_CPU" ] && echo "on CPU $PG_CPU" || echo unpinned); $NCPU CPUs, $(uname -sr), $START_DATE."
}

REPORT=$(report)
echo "$REPORT"
mkdir -p "$(dirname "$MD_OUT")" && printf '%s\n' "$REPORT" >"$MD_OUT"
mkdir -p "$(dirname "$JSON_OUT")"
{
	printf '{\n  "meta": {"date": %s, "loadavg_before": %s, "busy_pct_before": %s, "kernel": %s, "cpus": %s, "cpu_model": %s, "postgres": %s, "wrk": %s,\n' \
		"$(json_str "$START_DATE")" "$(json_str "$LOADAVG")" "$BUSY_BEFORE" "$(json_str "$(uname -r)")" "$NCPU" \
		"$(json_str "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)")" "$(json_str "$PG_VERSION")" \
		"$(json_str "$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')")"
	printf '    "duration_s": %s, "warmup_s": %s, "rounds": %s, "connections": %s, "wrk_threads": 1, "server_cpu": %s, "wrk_cpu": %s, "postgres_cpu": %s,\n' \
		"$DURATION" "$WARMUP" "$ROUNDS" "$CONNECTIONS" "$SERVER_CPU" "$WRK_CPU" "$(json_str "$PG_PIN")"
	printf '    "request": "GET /db?id=N, N random in 1..10000", "sql": "SELECT id, name, price_cents FROM items WHERE id = $1",\n'
	printf '    "cpu": "utime+stime from /proc/PID/stat over the window (1 s after wrk starts to 1 s before it ends); postgres = postmaster + all its children; kthreads = children of kthreadd; busy_s, irq_softirq_s and *_busy_pct from /proc/stat (busy_s: both CPUs; irq/softirq time may also be charged to the process it interrupted)", "latency_unit": "us"},\n'
	printf '  "results": [\n'
	for ((i = 0; i < ${#RESULTS[@]}; i++)); do
		printf '    %s%s\n' "${RESULTS[$i]}" "$([ $i -lt $((${#RESULTS[@]} - 1)) ] && echo ,)"
	done
	printf '  ]\n}\n'
} >"$JSON_OUT"
log "written: $JSON_OUT, $MD_OUT"
exit "$failed"
