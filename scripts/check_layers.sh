#!/bin/sh
# check_layers.sh [ROOT] — holds keel to its layer rule (docs/architecture.md)
# from the #include "..." lines of ROOT/src/**/*.{c,h} and ROOT/include/keel/*.h.
#
#   core < auth, schema < obs < resil < mw, store < svc < app
#
# A file may include headers of its own layer and of the layers it knows
# (ALLOWED below); anything else — a layer above, or a sibling such as mw
# including store — fails with file:line and both layers. Every public
# header is mapped to the layer of the module that implements it (PUBLIC
# below); a public header with no mapping, or a source folder with no
# layer, fails too, so new files get classified.
#
# check_layers.sh --self-test   runs the check over throw-away trees and
#                               fails unless it catches what it must.
set -u

# Which layers each layer may include (its own first).
allowed() {
    case $1 in
    core)   echo "core" ;;
    auth)   echo "auth core" ;;
    schema) echo "schema core" ;;
    obs)    echo "obs core" ;;
    resil)  echo "resil obs core" ;;
    mw)     echo "mw resil obs auth schema core" ;;
    store)  echo "store resil obs auth schema core" ;;
    svc)    echo "svc mw store resil obs auth schema core" ;;
    app)    echo "app svc mw store resil obs auth schema core" ;;
    *)      return 1 ;;
    esac
}

# include/keel/<name>.h -> the layer of the module that implements it.
public_layer() {
    case $1 in
    arena|common|config|http|json|log|net|router|server|ws) echo core ;;
    multipart|range) echo core ;; # the multipart and Range parsers
    rl_store) echo core ;;     # the rate-limit store contract: types only
    auth)     echo auth ;;     # src/auth: jwt, passwords, roles, principal
    schema)   echo schema ;;
    metrics|health|runtime|trace|alerts) echo obs ;;
    resil|http_client|otlp) echo resil ;;
    mw|ratelimit) echo mw ;;
    db|migrate|redis|cache|lock|events|jobs|cron|mail) echo store ;;
    service)  echo svc ;;
    keel)     echo svc ;;      # the umbrella header includes every module
    *)        return 1 ;;
    esac
}

# The layer of a file under ROOT (path relative to ROOT).
file_layer() {
    case $1 in
    include/keel/*.h) n=${1#include/keel/}; public_layer "${n%.h}" ;;
    src/main.c) echo app ;;
    src/*/*) d=${1#src/}; d=${d%%/*}; allowed "$d" >/dev/null && echo "$d" ;;
    *) return 1 ;;
    esac
}

self_test() {
    me=$0
    tmp=$(mktemp -d) || exit 1
    trap 'rm -rf "$tmp"' EXIT
    fails=0
    mk() { # mk TREE FILE LINE...
        t=$tmp/$1 f=$2; shift 2
        mkdir -p "$(dirname "$t/$f")"
        printf '%s\n' "$@" >>"$t/$f"
    }
    expect() { # expect TREE STATUS PATTERN
        out=$("$me" "$tmp/$1" 2>&1); st=$?
        if [ "$2" = 0 ] && [ $st -ne 0 ]; then
            echo "check-layers self-test: $1 should pass, got: $out"; fails=1
        elif [ "$2" != 0 ] && { [ $st -eq 0 ] || ! printf '%s' "$out" | grep -q -- "$3"; }; then
            echo "check-layers self-test: $1 should fail with '$3', got ($st): $out"; fails=1
        fi
    }
    base() {
        mk "$1" include/keel/common.h '#include <stddef.h>'
        mk "$1" include/keel/service.h '#include "common.h"'
        mk "$1" src/core/a.c '#include "keel/common.h"'
        mk "$1" src/app/app.h '#include "keel/service.h"'
        mk "$1" src/app/b.c '#include "app/app.h"' '#include "core/x.h"'
        mk "$1" src/core/x.h '/* internal */'
    }
    base clean;  expect clean 0 ''
    base up;     mk up src/core/a.c '#include "app/app.h"'
    expect up 1 'src/core/a.c:2: core includes app/app.h (layer app)'
    base pub;    mk pub src/core/y.c '#  include <keel/service.h>'
    expect pub 1 'src/core/y.c:1: core includes keel/service.h (layer svc)'
    base hdr;    mk hdr include/keel/common.h '#include "service.h"'
    expect hdr 1 'include/keel/common.h:2: core includes service.h (layer svc)'
    base sib;    mk sib src/mw/m.c '#include "keel/db.h"'; mk sib include/keel/db.h ''
    expect sib 1 'src/mw/m.c:1: mw includes keel/db.h (layer store)'
    base side;   mk side src/auth/j.c '#include "keel/metrics.h"'; mk side include/keel/metrics.h ''
    expect side 1 'src/auth/j.c:1: auth includes keel/metrics.h (layer obs)'
    base unmapped; mk unmapped include/keel/newthing.h ''
    expect unmapped 1 'include/keel/newthing.h: public header has no layer'
    base folder; mk folder src/misc/z.c '#include "keel/common.h"'
    expect folder 1 'src/misc/z.c: no layer'
    if [ $fails -ne 0 ]; then exit 1; fi
    echo "check-layers self-test: passed (a violating include fails the check)"
    exit 0
}

[ "${1:-}" = --self-test ] && self_test

root=${1:-.}
cd "$root" || exit 2
status=0
files=$( { find src -name '*.c' -o -name '*.h'; ls include/keel/*.h 2>/dev/null; } | sort)
[ -n "$files" ] || { echo "check-layers: no sources under $root"; exit 2; }

for f in $files; do
    if ! layer=$(file_layer "$f"); then
        case $f in
        include/*) echo "$f: public header has no layer: map it in scripts/check_layers.sh (public_layer)" ;;
        *) echo "$f: no layer for this folder: add it to scripts/check_layers.sh (allowed)" ;;
        esac
        status=1; continue
    fi
    ok=$(allowed "$layer")
    # "path" and <keel/...> includes (other <...> are system headers), as
    # "LINE: TARGET"
    incs=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*\(["<][^">]*[">]\).*/\1/p;t;s/.*/-/p' "$f" |
        awk '$0 != "-" { print NR ": " $0 }')
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        n=${line%%:*}; inc=${line#*: }
        case $inc in
        \<keel/*) inc=${inc#<}; inc=${inc%>} ;;
        \<*) continue ;;
        *) inc=${inc#\"}; inc=${inc%\"} ;;
        esac
        case $inc in
        keel/*.h) target=include/$inc ;;
        */*) target=src/$inc ;;
        *) target=$(dirname "$f")/$inc ;; # next to the including file
        esac
        if ! tl=$(file_layer "$target"); then
            echo "$f:$n: $layer includes $inc, which has no layer"
            status=1; continue
        fi
        case " $ok " in
        *" $tl "*) ;;
        *) echo "$f:$n: $layer includes $inc (layer $tl): $layer may include only $ok"
           status=1 ;;
        esac
    done <<EOF
$incs
EOF
done

if [ $status -ne 0 ]; then
    echo "check-layers: FAILED (layer rule: docs/architecture.md)"
else
    echo "check-layers: $(echo "$files" | wc -l) files, no include goes up a layer or across to a sibling"
fi
exit $status
