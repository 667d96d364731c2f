#!/usr/bin/env bash
# bench/events/run.sh [run.py options] — keel's events routes against an
# Express 5 + Knex peer on one throw-away PostgreSQL (bench/events/run.py).
# The peer's npm packages go to bench/events/node_modules (npm ci), never a
# dependency of keel.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
make -C "$root" --no-print-directory all >&2
[ -d "$here/node_modules/knex" ] || (cd "$here" && npm ci --no-audit --no-fund >&2)
exec "$root/tests/support/with_pg.sh" /usr/bin/python3 "$here/run.py" "$@"
