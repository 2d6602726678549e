#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a green test run: installs
# what is needed, builds the Debug+ASan/UBSan tree and the clang fuzz targets,
# and runs every test with CTest (unit, simulation, integration against real
# redis-server and clients, fuzzing for a bounded time, the layer check).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs="${SHOAL_BUILD_JOBS:-$(nproc)}"
# Let ccache reuse objects across clones in other folders (CI clones afresh).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -- -j"$jobs"
cmake --preset debug -DSHOAL_FUZZ_BINARY="$PWD/build/fuzz/tests/fuzz/resp_parser_fuzz" \
  -DSHOAL_FUZZ_DIR="$PWD/build/fuzz/tests/fuzz" >/dev/null
cmake --build build/debug -- -j"$jobs"
# Two tests at a time, except the integration tests, which run alone.
ctest --test-dir build/debug --output-on-failure -j"$jobs" --timeout 1500
