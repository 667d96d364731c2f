#!/usr/bin/env bash
# bench/ws/run.sh — keel's WebSocket transport against the npm `ws` server
# and a Socket.IO server, same load client (bench/ws/wsbench.c), same
# machine, one run (`make bench-ws` builds everything and calls this).
#
#   bench/ws/run.sh [--rounds 3] [--only idle,fanout,rate,echo,floor]
#                   [--idle-conns 10000] [--fanout-conns 10000] [--rate-conns 1000]
#                   [--echo-conns 64] [--size 64] [--depths "1 8"] [--seconds 5]
#                   [--messages 20] [--window 64] [--echo-io epoll|uring] [--build build]
#
# Figures (docs/performance.md, "WebSocket at 10,000 connections"):
#   idle    --idle-conns authenticated idle connections (Bearer JWT on the
#           upgrade): the server's VmRSS growth per connection
#   fanout  one message to --fanout-conns connections: time until the last
#           one has it, p50/p99 over --messages messages
#   rate    sustained broadcast messages/s to --rate-conns members,
#           --window messages in flight
#   echo    --echo-conns connections, --size-byte binary messages, DEPTH
#           in flight per connection, echoes/s
#   floor   no server: write(2) of the same 2+--size byte frame to
#           --fanout-conns loopback sockets per pass (a receiver on CPU 1
#           only draining), p50/p99 over --messages passes — the kernel's
#           floor under the fan-out figure (wsbench floor)
# Targets: keel = build/bench/fanout_service (GET /ws/fanout, libkeel) for
# idle/fanout/rate and build/keel (GET /ws/echo, the reference service) for
# echo, plus keel-app = build/keel's unauthenticated /ws/echo for idle;
# ws = bench/ws/ws_server.js; sio = bench/ws/sio_server.js.
# Every measurement starts its server afresh, pinned to CPU 0 (keel:
# WORKERS=1; node is one event loop), the client pinned to CPU 1. Rounds
# are interleaved (round 1 of every figure and target, then round 2, ...)
# and the median per figure and target is reported with its ratio to the
# peers of the same run. Raw JSON lines: BUILD/bench/ws/results.jsonl;
# the markdown table: BUILD/bench/ws/report.md.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=3
ONLY=idle,fanout,rate,echo,floor
IDLE_CONNS=10000
FANOUT_CONNS=10000
RATE_CONNS=1000
ECHO_CONNS=64
SIZE=64
DEPTHS="1 8"
SECONDS_=5
MESSAGES=20
WINDOW=64
ECHO_IO=epoll
BUILD=build
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) ROUNDS=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	--idle-conns) IDLE_CONNS=$2; shift 2 ;;
	--fanout-conns) FANOUT_CONNS=$2; shift 2 ;;
	--rate-conns) RATE_CONNS=$2; shift 2 ;;
	--echo-conns|--connections) ECHO_CONNS=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--depths) DEPTHS=$2; shift 2 ;;
	--seconds|--duration) SECONDS_=$2; shift 2 ;;
	--messages) MESSAGES=$2; shift 2 ;;
	--window) WINDOW=$2; shift 2 ;;
	--echo-io) ECHO_IO=$2; shift 2 ;;
	--build) BUILD=$2; shift 2 ;;
	-h|--help) sed -n '2,30p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
case "$BUILD" in /*) ;; *) BUILD="$root/$BUILD" ;; esac
client="$BUILD/bench/wsbench"
for f in "$client" "$BUILD/bench/fanout_service" "$BUILD/keel"; do
	[ -x "$f" ] || { echo "missing $f (make bench-ws builds it)" >&2; exit 1; }
done
export NODE_PATH="$BUILD/bench-node/node_modules"
[ -d "$NODE_PATH/ws" ] && [ -d "$NODE_PATH/socket.io" ] || {
	echo "missing $NODE_PATH (make bench-ws runs npm ci there)" >&2; exit 1; }

# 10,000 connections need more descriptors than the usual soft limit of
# 1024, in the servers (inherited from this shell) and in the client
ulimit -n "$(ulimit -Hn)" || exit 1
need=$(( (IDLE_CONNS > FANOUT_CONNS ? IDLE_CONNS : FANOUT_CONNS) + 64 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	echo "RLIMIT_NOFILE hard limit $(ulimit -Hn) < $need: raise it (limits.conf, systemd LimitNOFILE)" >&2
	exit 1
fi

# the benchmark's HS256 token (as shared/bench/run.sh makes it): sub bench-user, no exp
SECRET=${BENCH_JWT_SECRET:-keel-bench-secret}
export BENCH_JWT_SECRET=$SECRET
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jh=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
jp=$(printf '%s' '{"sub":"bench-user","name":"Bench User","iat":1700000000}' | b64url)
TOKEN="$jh.$jp.$(printf '%s' "$jh.$jp" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)"

out="$BUILD/bench/ws"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
tmp=$(mktemp -d)
pid=""
stop() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	pid=""
}
cpid=""
trap '[ -n "$cpid" ] && kill "$cpid" 2>/dev/null; stop; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

keel_env=(HOST=127.0.0.1 WORKERS=1 LOG_LEVEL=warn ACCESS_LOG=false KEEL_ENV=test
	RATE_LIMIT_ENABLED=false MAX_CONNECTIONS=20000 MAX_CONNECTIONS_PER_IP=0
	WS_MAX_PER_IP=0 WS_MESSAGE_RATE=0)

# start TARGET KIND PORT: sets pid and path (KIND: fan = the broadcast
# endpoint, echo = the echo endpoint)
start() {
	local target=$1 kind=$2 port=$3
	case "$target:$kind" in
	keel:fan) (cd "$tmp" && exec env "${keel_env[@]}" PORT="$port" FANOUT_JWT_SECRET="$SECRET" \
		taskset -c 0 "$BUILD/bench/fanout_service" serve) >"$tmp/server.log" 2>&1 &
		path=/ws/fanout ;;
	keel:echo|keel-app:*) (cd "$tmp" && exec env "${keel_env[@]}" PORT="$port" ENABLE_DEMO_ROUTES=true \
		taskset -c 0 "$BUILD/keel" serve) >"$tmp/server.log" 2>&1 &
		path=/ws/echo ;;
	ws:fan) PORT=$port taskset -c 0 node "$here/ws_server.js" >"$tmp/server.log" 2>&1 &
		path=/fanout ;;
	ws:echo) PORT=$port taskset -c 0 node "$here/ws_server.js" >"$tmp/server.log" 2>&1 &
		path=/echo ;;
	sio:*) PORT=$port taskset -c 0 node "$here/sio_server.js" >"$tmp/server.log" 2>&1 &
		path='/socket.io/?EIO=4&transport=websocket' ;;
	esac
	pid=$!
	wait_port "$port" || { echo "$target did not start:" >&2; cat "$tmp/server.log" >&2; return 1; }
}

# measure FIGURE TARGET EXTRA_LABEL CLIENT_ARGS...: one JSON line into $results
failures=0
measure() {
	local fig=$1 target=$2 label=$3 kind=fan
	shift 3
	[ "$fig" = echo ] && kind=echo
	local port proto=ws
	port=$(free_port)
	[ "$target" = sio ] && proto=sio
	start "$target" "$kind" "$port" || { failures=$((failures + 1)); stop; return; }
	local auth=(--token "$TOKEN")
	[ "$target" = keel-app ] && auth=()
	local line rc
	taskset -c 1 "$client" "$@" --port "$port" --path "$path" --proto "$proto" \
		"${auth[@]}" --server-pid "$pid" >"$tmp/client.out" 2>"$tmp/client.err" &
	cpid=$!
	wait "$cpid"
	rc=$?
	cpid=""
	line=$(cat "$tmp/client.out")
	if [ "$rc" -eq 0 ] && [ -n "$line" ]; then
		echo "{\"figure\":\"$fig\",\"target\":\"$target\",\"label\":\"$label\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"result\":$line}" |
			tee -a "$results"
	else
		echo "$fig $target $label failed: $(head -c 400 "$tmp/client.err")" >&2
		echo "{\"figure\":\"$fig\",\"target\":\"$target\",\"label\":\"$label\",\"failed\":true}" >>"$results"
		failures=$((failures + 1))
	fi
	stop
}

# the kernel's floor: no server to start; the writer pinned to CPU 0 (as
# the servers), its receiver to CPU 1 (as the clients)
measure_floor() {
	local line
	if taskset -c 0,1 "$client" floor --conns "$FANOUT_CONNS" --messages "$MESSAGES" --size "$SIZE" \
		--writer-cpu 0 --reader-cpu 1 >"$tmp/client.out" 2>"$tmp/client.err" &&
		line=$(cat "$tmp/client.out") && [ -n "$line" ]; then
		echo "{\"figure\":\"floor\",\"target\":\"kernel\",\"label\":\"$FANOUT_CONNS\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"result\":$line}" |
			tee -a "$results"
	else
		echo "floor failed: $(head -c 400 "$tmp/client.err")" >&2
		echo "{\"figure\":\"floor\",\"target\":\"kernel\",\"label\":\"$FANOUT_CONNS\",\"failed\":true}" >>"$results"
		failures=$((failures + 1))
	fi
}

echo "bench/ws: $ROUNDS round(s) of: $ONLY; load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$ROUNDS"); do
	echo "--- round $round" >&2
	for fig in ${ONLY//,/ }; do
		case "$fig" in
		idle) for t in keel keel-app ws sio; do
			measure idle "$t" "$IDLE_CONNS" idle --conns "$IDLE_CONNS" --settle 2; done ;;
		fanout) for t in keel ws sio; do
			measure fanout "$t" "$FANOUT_CONNS" fanout --conns "$FANOUT_CONNS" --messages "$MESSAGES" \
				--size "$SIZE" --settle 1; done ;;
		rate) for t in keel ws sio; do
			measure rate "$t" "$RATE_CONNS" rate --conns "$RATE_CONNS" --window "$WINDOW" \
				--size "$SIZE" --seconds "$SECONDS_" --settle 1; done ;;
		echo) for d in $DEPTHS; do for t in keel ws; do
			measure echo "$t" "depth $d" echo --conns "$ECHO_CONNS" --size "$SIZE" --depth "$d" \
				--seconds "$SECONDS_" --io "$ECHO_IO"; done; done ;;
		floor) measure_floor ;;
		*) echo "unknown figure $fig" >&2; exit 2 ;;
		esac
	done
done

/usr/bin/python3 "$here/report.py" "$results" \
	"$ROUNDS rounds, interleaved; idle $IDLE_CONNS, fan-out $FANOUT_CONNS ($MESSAGES messages), rate $RATE_CONNS members (window $WINDOW, ${SECONDS_} s), echo $ECHO_CONNS connections, $SIZE-byte messages; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" |
	tee "$out/report.md"
[ "$failures" -eq 0 ] || { echo "bench/ws: $failures measurement(s) failed" >&2; exit 1; }
