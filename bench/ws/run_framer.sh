#!/usr/bin/env bash
# bench/ws/run_framer.sh — keel's frame parser against wslay's on the same
# bytes (bench/ws/framer.c); needs libwslay-dev (scripts/deps.sh bench).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
make -s -j2 build/libkeel.a
mkdir -p build/bench
cc -O2 -std=gnu11 -D_GNU_SOURCE -Iinclude -Isrc -o build/bench/framer bench/ws/framer.c \
	build/libkeel.a -lwslay -luv -ljansson -lsodium -lpthread -lm
build/bench/framer | tee build/bench/framer.md
