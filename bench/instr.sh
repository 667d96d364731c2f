#!/usr/bin/env bash
# bench/instr.sh — user-space instructions (and syscalls) per request under
# callgrind, keel against nginx, with the same client (docs/performance.md,
# "Instructions per request"; `make bench-instr` is the regression gate on
# top of it, bench/bench.py).
#
#   bench/instr.sh                 # keel /hello, keel /json, nginx /hello, /json, N=20000
#   bench/instr.sh -n 5000 -t keel-hello,keel-db
#   bench/instr.sh -t keel-hello:20000,keel-authme:1000   # N per target
#   bench/instr.sh -k DIR          # keep the callgrind files (with --dump-instr=yes)
#                                  # for callgrind_annotate
#   bench/instr.sh -o FILE         # also write "target<TAB>instr/req<TAB>syscalls/req<TAB>Ir_N<TAB>Ir_0"
#
# Targets: keel-hello (GET /hello), keel-json (GET /json), keel-echo (POST
# /echo, the harness's JSON body), keel-authme (GET /auth/me, the demo route
# with the harness's HS256 token), keel-apime (GET /api/v1/auth/me with a
# real access token: JWT, auth state and user record from the cache),
# keel-db (GET /db?id=1..10000 on SQLite), nginx-hello, nginx-json.
#
# For each target the server is started under
#   valgrind --tool=callgrind --collect-systime=nsec
# once per target: W requests (-w, default 20) to each endpoint of that
# server named in -t, in order — what is done once, like libjwt loaded on
# first use, the first cache load, SQLite statements prepared, is in every
# run — then N keep-alive requests of the target over 8 connections
# (bench/instr_client.py: one request in flight per connection); plus one
# run per server with the warm-up only. Each run waits until the port
# listens and ends with SIGTERM. Instructions per request = (Ir_target -
# Ir_warm-up) / N, syscalls per request likewise with sysCount (under
# valgrind the vDSO clock reads are real syscalls, so this also counts
# clock reads).
#
# keel: WORKERS=1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false
# ENABLE_DEMO_ROUTES=true, default middleware (request ids, security
# headers, metrics), SHED_LOOP_LAG=0 (valgrind's slowdown on a busy machine
# can lag the loop past the 2 s default: a 503 would end the run), cwd a
# fresh temp dir per run with a copy of one SQLite
# file prepared once (migrated, one account registered: no migration runs
# under valgrind, and every run starts from the same bytes).
# nginx: daemon off, master_process off, 1 worker, access log off,
# keepalive_requests 1000000, `return 200 "ok"` for /hello and the JSON
# body for /json (like ../shared/bench/peers/nginx).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
N=20000
CONNS=8
TARGETS=keel-hello,keel-json,nginx-hello,nginx-json
KEEP=""
OUT=""
WARM=20
while getopts "n:c:t:k:o:w:h" o; do
	case $o in
	n) N=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	t) TARGETS=$OPTARG ;;
	k) KEEP=$OPTARG ;;
	o) OUT=$OPTARG ;;
	w) WARM=$OPTARG ;;
	*) sed -n '2,40p' "$0"; exit 2 ;;
	esac
done
command -v valgrind >/dev/null || { echo "instr: valgrind missing" >&2; exit 2; }
[ -x "$root/build/keel" ] || { echo "instr: build/keel missing: run make first" >&2; exit 2; }
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-instr.XXXXXX")
pid=""
prep_pid=""
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[ -n "$prep_pid" ] && kill -TERM "$prep_pid" 2>/dev/null && wait "$prep_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "$KEEP" ] && mkdir -p "$KEEP"
vg=(valgrind --tool=callgrind --collect-systime=nsec)
[ -n "$KEEP" ] && vg+=(--dump-instr=yes)

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_listen() { # port pid
	for _ in $(seq 1 600); do
		kill -0 "$2" 2>/dev/null || { echo "instr: server died at start" >&2; return 1; }
		[ -n "$(ss -ltnH "sport = :$1")" ] && return 0
		sleep 0.1
	done
	echo "instr: server did not listen on $1" >&2
	return 1
}

# totals of a callgrind file: "Ir sysCount"
totals() {
	awk '/^events:/ { for (i = 2; i <= NF; i++) ev[$i] = i - 1 }
	     /^(summary|totals):/ { print $(ev["Ir"] + 1), $(ev["sysCount"] + 1); exit }' "$1"
}

BENCH_TOKEN=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwibmFtZSI6IkJlbmNoIFVzZXIiLCJpYXQiOjE3MDAwMDAwMDB9.Uiwm0NmqLgn9OxyDdaNsVMXblgeEK2bkpXiyz83c9As
ECHO_BODY='{"id":42,"name":"keel","tags":["fast","small"],"active":true,"score":9.5}'
keel_env=(WORKERS=1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false ENABLE_DEMO_ROUTES=true
	HOST=127.0.0.1 LOG_LEVEL=warn DATABASE_URL=sqlite:./keel.db
	JWT_SECRET=instr-secret-0123456789abcdef0123456789abcdef JWT_EXPIRES_IN=24h
	BENCH_JWT_SECRET=keel-bench-secret PASSWORD_HASH_MEMORY=8mb PASSWORD_HASH_OPS=1
	SHED_LOOP_LAG=0 JOBS_ENABLED=false)
# (the job runner polls on a timer: its cost grows with wall time, not
# requests, so it is off here.)
# KEEL_INSTR_ENV="NAME=value ...": more settings for every keel run (e.g.
# AUTH_STATE_CACHE_TTL=0 USER_CACHE_TTL=0: /api/v1/auth/me from the database)
read -r -a extra_env <<<"${KEEL_INSTR_ENV:-}"
keel_env+=("${extra_env[@]}")
API_TOKEN=""

# The SQLite file every keel run starts from: migrated, one account.
prepare_keel() {
	local port d=$tmp/prep
	mkdir -p "$d"
	port=$(free_port)
	(cd "$d" && exec env "${keel_env[@]}" PORT="$port" "$root/build/keel" serve >"$d/log" 2>&1) &
	prep_pid=$!
	wait_listen "$port" "$prep_pid" || { cat "$d/log" >&2; exit 1; }
	API_TOKEN=$(python3 "$here/instr_client.py" --register 127.0.0.1 "$port" \
		bench@example.com "correct horse battery staple")
	kill -TERM "$prep_pid"
	wait "$prep_pid" || true
	prep_pid=""
}

# drive TARGET PORT N: N requests of TARGET's kind
drive() {
	local -a req=()
	case $1 in
	keel-*echo) req=(-X POST -H "Content-Type: application/json" -d "$ECHO_BODY") ;;
	keel-*authme) req=(-H "Authorization: Bearer $BENCH_TOKEN") ;;
	keel-*apime) req=(-H "Authorization: Bearer $API_TOKEN") ;;
	esac
	python3 "$here/instr_client.py" 127.0.0.1 "$2" "$(path_of "$1")" "$3" "$CONNS" "${req[@]}" >/dev/null
}

# run NAME REQUESTS -> prints "Ir sysCount" (NAME keel-warm / nginx-warm:
# the warm-up only)
run() {
	local name=$1 n=$2 port out
	port=$(free_port)
	out=$tmp/callgrind.$name.$n.out
	case $name in
	keel-*)
		local d=$tmp/keel.$name.$n
		mkdir -p "$d"
		# the database and its write-ahead log (a clean exit may leave rows
		# in the WAL: SQLite checkpoints when it likes, not at every close)
		cp "$tmp/prep/keel.db" "$d/"
		[ ! -f "$tmp/prep/keel.db-wal" ] || cp "$tmp/prep/keel.db-wal" "$d/"
		# keel-trace-*: tracing on at 100 %, exporting to $OTLP_ENDPOINT
		# (bench/trace.sh -i starts a receiver); keel-notrace-*: tracing off;
		# keel-unsampled-*: tracing on, nothing sampled (always_off)
		local extra=()
		case $name in
		keel-trace-*) extra=(OTEL_TRACES_SAMPLER=always_on
			OTEL_EXPORTER_OTLP_ENDPOINT="${OTLP_ENDPOINT:?keel-trace-* needs OTLP_ENDPOINT}") ;;
		keel-notrace-*) extra=(OTEL_SDK_DISABLED=true) ;;
		keel-unsampled-*) extra=(OTEL_TRACES_SAMPLER=always_off) ;;
		esac
		(cd "$d" && exec env "${keel_env[@]}" "${extra[@]}" PORT="$port" \
			"${vg[@]}" --callgrind-out-file="$out" "$root/build/keel" serve \
			>"$tmp/$name.$n.log" 2>&1) &
		;;
	nginx-*)
		local d=$tmp/nginx.$n
		mkdir -p "$d/tmp"
		local user_line=""
		[ "$(id -u)" = 0 ] && user_line="user root;"
		cat >"$d/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
$user_line
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location = /hello { default_type text/plain; return 200 "ok"; }
        location = /json { default_type application/json; return 200 '{"message":"Hello, World!"}'; }
    }
}
CONF
		"${vg[@]}" --callgrind-out-file="$out" "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" \
			>"$tmp/$name.$n.log" 2>&1 &
		;;
	esac
	pid=$!
	wait_listen "$port" "$pid" || { cat "$tmp/$name.$n.log" >&2; exit 1; }
	# the warm-up: W requests to every endpoint of this server measured
	# in this invocation, in the same order in every run
	for w in ${TARGETS//,/ }; do
		w=${w%%:*}
		[ "${w%%-*}" = "${name%%-*}" ] && [ "$WARM" -gt 0 ] && drive "$w" "$port" "$WARM"
	done
	[ "$n" -gt 0 ] && drive "$name" "$port" "$n"
	kill -TERM "$pid"
	wait "$pid" || true
	pid=""
	[ -s "$out" ] || { echo "instr: no callgrind output for $name" >&2; cat "$tmp/$name.$n.log" >&2; exit 1; }
	[ -n "$KEEP" ] && cp "$out" "$KEEP/"
	totals "$out"
}

path_of() {
	case $1 in
	*-hello) echo /hello ;;
	*-json) echo /json ;;
	keel-*echo) echo /echo ;;
	keel-*authme) echo /auth/me ;;
	keel-*apime) echo /api/v1/auth/me ;;
	keel-*db) echo '/db?id={id}' ;;
	*) echo "instr: unknown target $1" >&2; return 1 ;;
	esac
}
for t in ${TARGETS//,/ }; do path_of "${t%%:*}" >/dev/null || exit 2; done
[[ ",$TARGETS," == *,keel-* ]] && prepare_keel
[ -n "$OUT" ] && : >"$OUT"

printf '| target | N | Ir (warm-up + N) | Ir (warm-up) | instructions/request | syscalls/request |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
declare -A ipr zero
for tn in ${TARGETS//,/ }; do
	t=${tn%%:*}
	n=$N
	[ "$t" != "$tn" ] && n=${tn#*:}
	server=${t%%-*}
	read -r irn scn < <(run "$t" "$n")
	[ -n "${zero[$server]:-}" ] || zero[$server]=$(run "$server-warm" 0)
	read -r ir0 sc0 <<<"${zero[$server]}"
	ipr[$t]=$(( (irn - ir0) / n ))
	spr=$(awk -v a="$scn" -v b="$sc0" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')
	printf '| %s | %d | %d | %d | %d | %s |\n' "$t" "$n" "$irn" "$ir0" "${ipr[$t]}" "$spr"
	[ -n "$OUT" ] && printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${ipr[$t]}" "$spr" "$irn" "$ir0" >>"$OUT"
done
if [ -n "${ipr[nginx-hello]:-}" ]; then
	for t in ${TARGETS//,/ }; do
		t=${t%%:*}
		case $t in keel-*) printf '%s / nginx-%s: %.2fx\n' "$t" "${t#keel-}" \
			"$(awk -v a="${ipr[$t]}" -v b="${ipr[nginx-${t#keel-}]:-${ipr[nginx-hello]}}" 'BEGIN { print a / b }')" ;;
		esac
	done
fi
