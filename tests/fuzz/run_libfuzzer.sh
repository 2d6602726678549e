#!/bin/sh
# Runs a libFuzzer binary for a bounded time in a temporary folder, its
# corpus starting from the seed folder if one is given. A crash fails the
# test; libFuzzer's report (with the crashing input in base64) is printed.
#   run_libfuzzer.sh BINARY SECONDS [SEED_DIR]
set -u
bin=$1
seconds=$2
seeds=${3:-}
d=$(mktemp -d)
mkdir "$d/corpus"
if [ -n "$seeds" ]; then cp "$seeds"/* "$d/corpus/"; fi
cd "$d" || exit 1
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 corpus > fuzz.log 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then tail -80 fuzz.log; else tail -1 fuzz.log; fi
cd / && rm -rf "$d"
exit "$rc"
