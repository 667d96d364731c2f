#!/usr/bin/env bash
# Installs the Debian packages keel needs to build, test and benchmark,
# only those that are missing. Usage: scripts/deps.sh [build|test|bench]
set -euo pipefail
what=${1:-build}

BUILD_PKGS=(gcc make pkg-config libc6-dev libuv1-dev libjansson-dev libsqlite3-dev libpq-dev
            zlib1g-dev libsodium-dev libjwt-dev libhiredis-dev libcurl4-openssl-dev)
TEST_PKGS=(libcmocka-dev python3 python3-pytest python3-requests python3-websockets clang-14
           libclang-rt-14-dev llvm-14 curl procps iproute2 postgresql redis-server nodejs chromium
           nginx haproxy caddy prometheus systemd npm python3-aiosmtpd python3-yaml openssl
           valgrind wrk)
BENCH_PKGS=(wrk curl libwslay-dev)

pkgs=("${BUILD_PKGS[@]}")
case $what in
build) ;;
test) pkgs+=("${TEST_PKGS[@]}") ;;
bench) pkgs+=("${TEST_PKGS[@]}" "${BENCH_PKGS[@]}") ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "keel: this is not a Debian-like system (no dpkg/apt-get)." >&2
	echo "keel: install these packages (or your system's equivalents) and run make again:" >&2
	echo "  ${pkgs[*]}" >&2
	exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
	# npm comes with some nodejs builds (NodeSource) that conflict with
	# Debian's npm package: a working npm command is enough
	[ "$p" = npm ] && command -v npm >/dev/null 2>&1 && continue
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "keel: installing missing packages: ${missing[*]}" >&2
SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "keel: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "keel: packages installed" >&2
