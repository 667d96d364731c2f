#!/usr/bin/env bash
# with_pg.sh CMD... — runs CMD with a throw-away PostgreSQL 15 cluster:
# starts one (tests/support/pg_tmp.sh), exports KEEL_TEST_PG_URL,
# KEEL_TEST_PG_DIR and KEEL_TEST_PG_CTL (this directory's pg_tmp.sh, for
# tests that stop and restart the server), runs CMD, and always stops and
# removes the cluster. Exits with CMD's status.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -gt 0 ] || { echo "usage: with_pg.sh CMD..." >&2; exit 2; }
env_lines=$("$here/pg_tmp.sh" start)
eval "$env_lines"
export KEEL_TEST_PG_URL KEEL_TEST_PG_DIR
export KEEL_TEST_PG_CTL="$here/pg_tmp.sh"
trap '"$here/pg_tmp.sh" destroy "$KEEL_TEST_PG_DIR"' EXIT
set +e
"$@"
status=$?
set -e
exit $status
