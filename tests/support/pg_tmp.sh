#!/usr/bin/env bash
# pg_tmp.sh — a throw-away PostgreSQL 15 cluster on a free loopback port,
# for the storage tests (nothing here is used in production).
#
#   pg_tmp.sh start          initdb + start; prints `export KEEL_TEST_PG_URL=...`
#                            and `export KEEL_TEST_PG_DIR=...` (eval the output)
#   pg_tmp.sh stop DIR       fast shutdown (the cluster stays on disk)
#   pg_tmp.sh restart DIR    starts a stopped cluster again on the same port
#   pg_tmp.sh destroy DIR    stops it if running and removes DIR
#
# PostgreSQL refuses to run as root: as root (CI) every server command runs
# as the `postgres` user through runuser. Authentication is `trust` on
# 127.0.0.1 and the Unix socket lives in DIR, so nothing outside DIR is
# touched. fsync is off: the cluster is thrown away after the tests.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

die() { echo "pg_tmp.sh: $*" >&2; exit 1; }

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

free_port() {
	# The kernel picks a free port; the tiny window before postgres binds it
	# is covered by the retry loop in start.
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 40000))
}

pg_start() { # DIR
	as_pg "$PGBIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null
}

cmd=${1:-}
case $cmd in
start)
	[ -x "$PGBIN/initdb" ] || die "no PostgreSQL 15 in $PGBIN (apt-get install postgresql)"
	dir=$(mktemp -d /tmp/keel-pg.XXXXXX)
	chmod 755 "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale \
		--no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
	ok=
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		cat >>"$dir/data/postgresql.conf" <<CONF
# keel test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
shared_buffers = 32MB
CONF
		if pg_start "$dir"; then ok=1; break; fi
	done
	[ -n "$ok" ] || { tail -n 20 "$dir/server.log" >&2; die "postgres did not start"; }
	as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres keel_test
	echo "export KEEL_TEST_PG_URL=postgres://postgres@127.0.0.1:$port/keel_test"
	echo "export KEEL_TEST_PG_DIR=$dir"
	;;
stop)
	dir=${2:?usage: pg_tmp.sh stop DIR}
	as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
	;;
restart)
	dir=${2:?usage: pg_tmp.sh restart DIR}
	pg_start "$dir"
	;;
destroy)
	dir=${2:?usage: pg_tmp.sh destroy DIR}
	case $dir in /tmp/keel-pg.*) ;; *) die "refusing to remove $dir (not a pg_tmp.sh cluster)" ;; esac
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
	;;
*)
	echo "usage: pg_tmp.sh start | stop DIR | restart DIR | destroy DIR" >&2
	exit 2
	;;
esac
