#!/usr/bin/env bash
# bench/ws/run.sh — WebSocket echo throughput: keel's GET /ws/echo against
# the npm `ws` server (bench/ws/ws_server.js), same load client
# (bench/ws/wsload.c), same machine, one run.
#
#   bench/ws/run.sh                          # 64 connections, 64-byte messages, depth 1 and 8
#   bench/ws/run.sh --duration 10 --rounds 3
#
# Each target is started pinned to CPU 0 (keel: WORKERS=1), the client
# pinned to CPU 1; 1 s of warm-up inside the client, then DURATION seconds
# measured. Every round starts each server afresh; the median round is
# reported. npm ci in bench/ws when node_modules is missing. Results:
# a markdown table on stdout and build/bench/ws.md.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=5
ROUNDS=1
CONNS=64
SIZE=64
DEPTHS="1 8"
while [ $# -gt 0 ]; do
	case "$1" in
	--duration) DURATION=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--connections) CONNS=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--depths) DEPTHS=$2; shift 2 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
mkdir -p "$root/build/bench"
cc -O2 -o "$root/build/bench/wsload" "$here/wsload.c" || exit 1
[ -d "$here/node_modules/ws" ] || (cd "$here" && npm ci --omit=dev --no-audit --no-fund) || exit 1
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=""; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
start() { # target port
	case "$1" in
	keel) PORT=$2 HOST=127.0.0.1 WORKERS=1 LOG_LEVEL=warn ACCESS_LOG=false KEEL_ENV=test \
		ENABLE_DEMO_ROUTES=true RATE_LIMIT_ENABLED=false WS_MESSAGE_RATE=0 \
		taskset -c 0 "$root/build/keel" serve >/dev/null 2>&1 &
		pid=$!; path=/ws/echo ;;
	ws) PORT=$2 taskset -c 0 node "$here/ws_server.js" >/dev/null 2>&1 &
		pid=$!; path=/ ;;
	esac
	wait_port "$2"
}
declare -A res
for depth in $DEPTHS; do
	for target in keel ws; do
		runs=()
		for _ in $(seq "$ROUNDS"); do
			port=$(free_port)
			start "$target" "$port" || { echo "$target did not start" >&2; exit 1; }
			out=$(taskset -c 1 "$root/build/bench/wsload" 127.0.0.1 "$port" "$path" "$CONNS" "$SIZE" "$depth" "$DURATION")
			cleanup
			runs+=("$(echo "$out" | sed -n 's/.*"echoes_per_s":\([0-9]*\).*/\1/p')")
		done
		res[$target,$depth]=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")
	done
done
{
	echo "| depth (messages in flight per connection) | keel /ws/echo (echoes/s) | npm ws (echoes/s) | keel / ws |"
	echo "|---|---|---|---|"
	for depth in $DEPTHS; do
		k=${res[keel,$depth]}; w=${res[ws,$depth]}
		echo "| $depth | $k | $w | $(awk -v a="$k" -v b="$w" 'BEGIN{printf "%.2f", b ? a/b : 0}') |"
	done
	echo
	echo "$CONNS connections, $SIZE-byte binary messages, ${DURATION} s measured, median of $ROUNDS round(s); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$root/build/bench/ws.md"
