#!/usr/bin/env bash
# with_redis.sh CMD... — runs CMD with a throw-away redis-server
# (tests/support/redis_tmp.sh): exports KEEL_TEST_REDIS_URL and
# KEEL_TEST_REDIS_DIR, runs CMD, always stops and removes the server.
# Exits with CMD's status.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -gt 0 ] || { echo "usage: with_redis.sh CMD..." >&2; exit 2; }
env_lines=$("$here/redis_tmp.sh" start)
eval "$env_lines"
export KEEL_TEST_REDIS_URL KEEL_TEST_REDIS_DIR
trap '"$here/redis_tmp.sh" destroy "$KEEL_TEST_REDIS_DIR"' EXIT
set +e
"$@"
status=$?
set -e
exit $status
