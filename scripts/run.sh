#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running shoal cluster:
# installs what is needed, builds the Release binary and starts a local
# 3-node cluster with the embedded default configuration (`shoal demo`:
# nodes on 127.0.0.1:7001-7003, data under ./shoal-demo). Ctrl-C stops it.
# Extra arguments go to `shoal demo` (e.g. --port 8001 --dir /tmp/shoal).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake --preset release >/dev/null
cmake --build build/release --target shoal -- -j"$(nproc)"
exec build/release/src/cli/shoal demo "$@"
