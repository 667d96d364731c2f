#!/usr/bin/env bash
# bench/trace.sh — the cost of tracing (docs/performance.md, "Tracing"):
# GET /hello on two keel servers started side by side, tracing off
# (OTEL_SDK_DISABLED=true) and tracing on at 100 % (OTEL_TRACES_SAMPLER=
# always_on) exporting every span to an OTLP/HTTP receiver: build/bench/
# otlp_sink (bench/otlp_sink.c, built here when missing: counts the spans
# in the raw bodies, in C, so that it keeps up at ~80k spans/s on a shared
# core), or with RECEIVER=python the test suite's tests/e2e/otlp_receiver.py
# in counting mode (slower: at 50k req/s it took ~20 % of the spans). Rounds
# are interleaved (off, on, on, off, ...) so both see the same machine; the
# median req/s of each and their ratio are printed, with the spans the
# receiver got and what keel counted as exported and dropped, and whether
# the run is valid (at most 1 % of the spans dropped: otherwise the "on"
# rounds did less export work than a collector that keeps up costs).
#
#   bench/trace.sh [-r ROUNDS] [-d SECONDS] [-c CONNECTIONS] [-i N]
#
# -i N: instead, instructions per request under callgrind (bench/instr.sh,
# N requests) of keel-notrace-hello and keel-trace-hello, the latter
# exporting to the receiver.
#
# Both servers: WORKERS=1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false
# LOG_LEVEL=warn, pinned to CPU 0; wrk (1 thread) pinned to CPU 1; the
# receiver is not pinned.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
ROUNDS=5 DUR=5 CONNS=64 INSTR=""
while getopts "r:d:c:i:h" o; do
	case $o in
	i) INSTR=$OPTARG ;;
	r) ROUNDS=$OPTARG ;;
	d) DUR=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	*) sed -n '2,27p' "$0"; exit 2 ;;
	esac
done
command -v wrk >/dev/null || { echo "trace bench: wrk missing" >&2; exit 2; }
[ -x "$root/build/keel" ] || { echo "trace bench: build/keel missing: run make first" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-trace-bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() { # port
	for _ in $(seq 1 200); do
		curl -fsS -o /dev/null "http://127.0.0.1:$1/health/live" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "trace bench: nothing answers on $1" >&2
	exit 1
}
rxp=$(free_port)
if [ "${RECEIVER:-sink}" = python ]; then
	/usr/bin/python3 "$root/tests/e2e/otlp_receiver.py" "$rxp" >"$tmp/rx.out" 2>"$tmp/rx.err" &
else
	make -s -C "$root" --no-print-directory build/bench/otlp_sink >&2
	"$root/build/bench/otlp_sink" "$rxp" >"$tmp/rx.out" 2>"$tmp/rx.err" &
fi
rxpid=$!
pids+=("$rxpid")
if [ -n "$INSTR" ]; then
	OTLP_ENDPOINT="http://127.0.0.1:$rxp" "$here/instr.sh" -n "$INSTR" \
		-t keel-notrace-hello,keel-trace-hello
	kill -TERM "$rxpid"
	wait "$rxpid" 2>/dev/null || true
	read -r posts spans bytes <"$tmp/rx.out" || true
	printf 'receiver: %s requests, %s spans, %s bytes\n' "${posts:-?}" "${spans:-?}" "${bytes:-?}"
	exit 0
fi
common=(WORKERS=1 HOST=127.0.0.1 ACCESS_LOG=false RATE_LIMIT_ENABLED=false LOG_LEVEL=warn)
start() { # name port env...
	local name=$1 port=$2
	shift 2
	mkdir -p "$tmp/$name"
	(cd "$tmp/$name" && exec env "${common[@]}" "$@" taskset -c 0 "$root/build/keel" serve \
		--port "$port" >"$tmp/$name.log" 2>&1) &
	pids+=($!)
	wait_http "$port"
}
poff=$(free_port)
start off "$poff" OTEL_SDK_DISABLED=true
pon=$(free_port)
start on "$pon" OTEL_TRACES_SAMPLER=always_on OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$rxp"
rps() { # port seconds
	taskset -c 1 wrk -t1 -c"$CONNS" -d"$2"s "http://127.0.0.1:$1/hello" |
		awk '/^Requests\/sec:/ { print $2 }'
}
rps "$poff" 2 >/dev/null # warm-up
rps "$pon" 2 >/dev/null
offs=() ons=()
printf '| round | off req/s | on req/s | on/off |\n|---:|---:|---:|---:|\n'
for i in $(seq 1 "$ROUNDS"); do
	if [ $((i % 2)) = 1 ]; then
		a=$(rps "$poff" "$DUR"); b=$(rps "$pon" "$DUR")
	else
		b=$(rps "$pon" "$DUR"); a=$(rps "$poff" "$DUR")
	fi
	offs+=("$a") ons+=("$b")
	printf '| %d | %s | %s | %.3f |\n' "$i" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mo=$(median "${offs[@]}") mn=$(median "${ons[@]}")
printf '\nmedian: off %s req/s, on %s req/s, on/off %.3f\n' "$mo" "$mn" \
	"$(awk -v a="$mo" -v b="$mn" 'BEGIN { print b / a }')"
sleep 6 # one OTEL_BSP_SCHEDULE_DELAY: the last partial batches leave
metrics=$(curl -fsS "http://127.0.0.1:$pon/metrics")
exported=$(awk '/^otel_spans_exported_total / { print $2 }' <<<"$metrics")
dropped=$(awk '/^otel_spans_dropped_total/ { s += $2 } END { print s + 0 }' <<<"$metrics")
kill -TERM "$rxpid"
wait "$rxpid" 2>/dev/null || true
read -r posts spans bytes <"$tmp/rx.out" || true
printf 'keel (on): otel_spans_exported_total %s, otel_spans_dropped_total %s\n' "$exported" "$dropped"
printf 'receiver: %s requests, %s spans, %s bytes\n' "${posts:-?}" "${spans:-?}" "${bytes:-?}"
awk -v e="${exported:-0}" -v d="${dropped:-0}" -v r="${spans:-0}" 'BEGIN {
	t = e + d
	printf "spans: received %d, exported %d, dropped %d (%.2f %% of %d)\n", r, e, d, t ? 100 * d / t : 0, t
	if (t == 0 || d > 0.01 * t)
		print "INVALID: more than 1 % of the spans were dropped: the receiver did not keep up"
	else
		print "valid: at most 1 % of the spans dropped"
}'
