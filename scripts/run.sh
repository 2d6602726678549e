#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running shoal:
# installs what is needed, builds the Release binary and starts a node with
# the embedded default configuration (127.0.0.1:6379, data in ./shoal-data).
# Extra arguments go to `shoal server` (e.g. --port 7000 --durability none).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake --preset release >/dev/null
cmake --build build/release --target shoal -- -j"$(nproc)"
echo "shoal: starting; connect with redis-cli (port 6379 unless --port is given); Ctrl-C stops it"
exec build/release/src/cli/shoal server "$@"
