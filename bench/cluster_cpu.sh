#!/bin/bash
# Throughput and CPU of a warm 3-node shoal cluster under SET, repeated runs.
#
#   bench/cluster_cpu.sh BINARY [MAXMEMORY] [ROUNDS]
#
# Starts 3 nodes on 127.0.0.1-3 (ports $PORT and $PEER_PORT, default 7601 and
# 7611), waits for them to settle, writes 600k SETs to warm them (every key of
# redis-benchmark --cluster -r 100000 then exists), then runs ROUNDS (default
# 3) runs of 200k SETs at -P 16 and one of 30k at -P 1, printing ops/s and the
# cluster's CPU seconds per 100k requests (all three processes, from /proc) for
# each. Unlike bench/cluster_bench.py it measures a warm cluster several
# times in one start, which is what A/B runs of the write path need on a
# noisy machine. KEYS=0 in the environment writes one key over and over (no
# -r: a hot key) instead of 100k random ones. TEST=get measures GETs of
# those keys instead of SETs (the warm-up still writes them). PROFILE=FILE records the
# first -P 16 run with `perf record -a -g` into FILE (and PROFILE_P1=FILE
# the -P 1 run; PERF_OPTS replaces "-a -g"). Every node it starts is stopped by PID on exit.
# Its ops/s are measured from the servers' command counters
# (bench/measured_rate.py, as bench/cluster_bench.py does): redis-benchmark's
# own figure in cluster mode (a thread per master) is rounded to its 250 ms
# timer, and short runs read up to 15 % low. The sampling (an INFO a node
# every 10 ms) is in the CPU figures, under 1 % of them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:?usage: cluster_cpu.sh BINARY [MAXMEMORY] [ROUNDS]}
MM=${2:-1gb}
ROUNDS=${3:-3}
PORT=${PORT:-7601}
PEER_PORT=${PEER_PORT:-7611}
KEYS=${KEYS:-100000}
TEST=${TEST:-set}
RANGE=(-r "$KEYS")
[ "$KEYS" = 0 ] && RANGE=()
DIR=$(mktemp -d /tmp/shoal-cluster-cpu.XXXXXX)
PIDS=()
cleanup() {
  perf_stop
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
for i in 1 2 3; do
  mkdir -p "$DIR/n$i"
  join=()
  [ "$i" != 1 ] && join=(--join "127.0.0.1:$PORT")
  "$BIN" server --bind "127.0.0.$i" --port "$PORT" --peer-port "$PEER_PORT" --dir "$DIR/n$i" \
    --maxmemory "$MM" "${join[@]}" > "$DIR/n$i.log" 2>&1 &
  PIDS+=($!)
  [ "$i" = 1 ] && sleep 1.5
done
# Settled: every node leads something (bounded: 60 s).
for _ in $(seq 1 120); do
  n=$(redis-cli -h 127.0.0.1 -p "$PORT" cluster nodes 2>/dev/null | awk 'NF >= 9' | wc -l)
  [ "$n" = 3 ] && break
  sleep 0.5
done
[ "$n" = 3 ] || { echo "the cluster did not settle; logs in $DIR" >&2; exit 1; }
cpu() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
PERF_PID=
perf_start() {  # FILE: record the whole machine until perf_stop
  [ -n "$1" ] || return 0
  perf record ${PERF_OPTS:--a -g} -o "$1" > /dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.5
}
perf_stop() {
  [ -n "$PERF_PID" ] || return 0
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=
}
bench() {  # requests pipeline -> "ops/s cpu-s/100k"
  local c0 c1 r
  c0=$(cpu)
  r=$(python3 "$HERE/measured_rate.py" --requests "$1" --node "127.0.0.1:$PORT" --node "127.0.0.2:$PORT" \
      --node "127.0.0.3:$PORT" -- redis-benchmark --cluster -h 127.0.0.1 -p "$PORT" -c 50 -n "$1" -P "$2" \
      -t "${3:-$TEST}" "${RANGE[@]}" -d 100 --csv 2>&1 | awk '/^measured_rate/ {print $2}')
  c1=$(cpu)
  echo "${r%.*} $(echo "scale=2; ($c1 - $c0) / 100 / ($1 / 100000)" | bc)"
}
bench 600000 16 set > /dev/null
line="maxmemory $MM; ${TEST^^} -P 16:"
for r in $(seq 1 "$ROUNDS"); do
  [ "$r" = 1 ] && perf_start "${PROFILE:-}"
  out=$(bench 200000 16)
  perf_stop
  line="$line | $out"
done
perf_start "${PROFILE_P1:-}"
out=$(bench 30000 1)
perf_stop
echo "$line || ${TEST^^} -P 1: $out    (ops/s cpu-s/100k)"
