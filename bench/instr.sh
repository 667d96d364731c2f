#!/usr/bin/env bash
# bench/instr.sh — user-space instructions (and syscalls) per request under
# callgrind, keel against nginx, with the same client (docs/performance.md,
# "Instructions per request").
#
#   bench/instr.sh                 # keel /hello, keel /json, nginx /hello, N=20000
#   bench/instr.sh -n 5000 -t keel-hello
#   bench/instr.sh -k DIR          # keep the callgrind files (with --dump-instr=yes)
#                                  # for callgrind_annotate
#
# For each target the server is started under
#   valgrind --tool=callgrind --collect-systime=nsec
# twice: once driven with N keep-alive GETs over 8 connections
# (bench/instr_client.py: one request in flight per connection), once with
# none; both runs wait until the port listens, then stop the server with
# SIGTERM. Instructions per request = (Ir_N - Ir_0) / N, syscalls per
# request = (sysCount_N - sysCount_0) / N (under valgrind the vDSO clock
# reads are real syscalls, so this also counts clock reads).
#
# keel: WORKERS=1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false
# ENABLE_DEMO_ROUTES=true, default middleware (request ids, security
# headers, metrics), cwd a fresh temp dir per run (both runs create and
# migrate their SQLite file).
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
while getopts "n:c:t:k:h" o; do
	case $o in
	n) N=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	t) TARGETS=$OPTARG ;;
	k) KEEP=$OPTARG ;;
	*) sed -n '2,25p' "$0"; exit 2 ;;
	esac
done
command -v valgrind >/dev/null || { echo "instr: valgrind missing" >&2; exit 2; }
[ -x "$root/build/keel" ] || { echo "instr: build/keel missing: run make first" >&2; exit 2; }
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-instr.XXXXXX")
pid=""
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
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

# run NAME PATH REQUESTS -> prints "Ir sysCount"
run() {
	local name=$1 path=$2 n=$3 port out
	port=$(free_port)
	out=$tmp/callgrind.$name.$n.out
	case $name in
	keel-*)
		mkdir -p "$tmp/keel.$name.$n" # fresh: every run creates its SQLite file
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
		(cd "$tmp/keel.$name.$n" && exec env WORKERS=1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false \
			ENABLE_DEMO_ROUTES=true HOST=127.0.0.1 PORT="$port" LOG_LEVEL=warn "${extra[@]}" \
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
	if [ "$n" -gt 0 ]; then
		python3 "$here/instr_client.py" 127.0.0.1 "$port" "$path" "$n" "$CONNS" >/dev/null
	fi
	kill -TERM "$pid"
	wait "$pid" || true
	pid=""
	[ -s "$out" ] || { echo "instr: no callgrind output for $name" >&2; cat "$tmp/$name.$n.log" >&2; exit 1; }
	[ -n "$KEEP" ] && cp "$out" "$KEEP/"
	totals "$out"
}

printf '| target | N | Ir (N) | Ir (0) | instructions/request | syscalls/request |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
declare -A ipr
for t in ${TARGETS//,/ }; do
	case $t in
	*-hello) path=/hello ;;
	*-json) path=/json ;;
	*) echo "instr: unknown target $t" >&2; exit 2 ;;
	esac
	read -r irn scn < <(run "$t" "$path" "$N")
	read -r ir0 sc0 < <(run "$t" "$path" 0)
	ipr[$t]=$(( (irn - ir0) / N ))
	printf '| %s | %d | %d | %d | %d | %s |\n' "$t" "$N" "$irn" "$ir0" "${ipr[$t]}" \
		"$(awk -v a="$scn" -v b="$sc0" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')"
done
if [ -n "${ipr[nginx-hello]:-}" ]; then
	for t in ${TARGETS//,/ }; do
		case $t in keel-*) printf '%s / nginx-%s: %.2fx\n' "$t" "${t#keel-}" \
			"$(awk -v a="${ipr[$t]}" -v b="${ipr[nginx-${t#keel-}]:-${ipr[nginx-hello]}}" 'BEGIN { print a / b }')" ;;
		esac
	done
fi
