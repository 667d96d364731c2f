#!/usr/bin/env bash
# redis_tmp.sh — a throw-away redis-server on a free loopback port, for the
# tests (nothing here is used in production). No persistence (--save ''
# --appendonly no); everything lives in a temp directory.
#
#   redis_tmp.sh start          prints `export KEEL_TEST_REDIS_URL=...` and
#                               `export KEEL_TEST_REDIS_DIR=...` (eval the output)
#   redis_tmp.sh stop DIR       stops it (SHUTDOWN NOSAVE); the port is kept in DIR
#   redis_tmp.sh restart DIR    starts it again on the same port
#   redis_tmp.sh destroy DIR    stops it if running and removes DIR
set -euo pipefail

die() { echo "redis_tmp.sh: $*" >&2; exit 1; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 40000))
}

rstart() { # DIR PORT
	redis-server --bind 127.0.0.1 --port "$2" --dir "$1" --save '' --appendonly no \
		--daemonize yes --pidfile "$1/redis.pid" --logfile "$1/redis.log" >/dev/null
	for _ in $(seq 1 100); do
		redis-cli -h 127.0.0.1 -p "$2" ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.05
	done
	return 1
}

rstop() { # DIR
	[ -f "$1/port" ] || return 0
	redis-cli -h 127.0.0.1 -p "$(cat "$1/port")" shutdown nosave >/dev/null 2>&1 || true
	for _ in $(seq 1 100); do
		[ -f "$1/redis.pid" ] && kill -0 "$(cat "$1/redis.pid")" 2>/dev/null || return 0
		sleep 0.05
	done
}

cmd=${1:-}
case $cmd in
start)
	command -v redis-server >/dev/null || die "no redis-server (apt-get install redis-server)"
	dir=$(mktemp -d /tmp/keel-redis.XXXXXX)
	ok=
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		if rstart "$dir" "$port"; then ok=1; break; fi
	done
	[ -n "$ok" ] || { tail -n 20 "$dir/redis.log" >&2; die "redis-server did not start"; }
	echo "$port" >"$dir/port"
	echo "export KEEL_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
	echo "export KEEL_TEST_REDIS_DIR=$dir"
	;;
stop)
	rstop "${2:?usage: redis_tmp.sh stop DIR}"
	;;
restart)
	dir=${2:?usage: redis_tmp.sh restart DIR}
	rstart "$dir" "$(cat "$dir/port")"
	;;
destroy)
	dir=${2:?usage: redis_tmp.sh destroy DIR}
	case $dir in /tmp/keel-redis.*) ;; *) die "refusing to remove $dir (not a redis_tmp.sh server)" ;; esac
	rstop "$dir"
	rm -rf "$dir"
	;;
*)
	echo "usage: redis_tmp.sh start | stop DIR | restart DIR | destroy DIR" >&2
	exit 2
	;;
esac
