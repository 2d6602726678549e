#!/usr/bin/env python3
"""Runs one redis-benchmark command and prints, after its own output, the rate the
servers saw: `measured_rate OPS` (ops/s between 5 % and 95 % of its requests, from
the masters' total_commands_processed sampled every 10 ms), or `measured_rate none`
when the samples do not cover the run.

  bench/measured_rate.py --requests N --node HOST:PORT [--node HOST:PORT ...] -- \\
      redis-benchmark --cluster ... -n N -t set

redis-benchmark --cluster (a thread per master) rounds the duration it measures up
to its 250 ms timer, so the ops/s it prints for a short run can be up to 15 % low
(docs/PERFORMANCE.md, 2026-12-05, nineteenth session). bench/cluster_bench.py
measures its rates this way (Progress); this lets the shell benchmarks
(cluster_cpu.sh, secret_bench.sh, tls_bench.sh) do the same. Run one test (-t) per
command: the rate is of all the commands the masters processed meanwhile.
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_bench import Progress  # noqa: E402


class _Node:
    def __init__(self, host, port):
        self.host, self.port = host, port

    def alive(self):
        return True


class _Nodes:
    def __init__(self, addrs):
        self.nodes = []
        for a in addrs:
            host, _, port = a.rpartition(":")
            self.nodes.append(_Node(host or "127.0.0.1", int(port)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, required=True, help="the run's -n")
    ap.add_argument("--node", action="append", required=True, help="HOST:PORT of a node (plain port); repeat")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the redis-benchmark command")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command after --")
    with Progress(_Nodes(args.node)) as progress:
        run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    rate = progress.rate(args.requests)
    print(f"measured_rate {rate:.0f}" if rate is not None else "measured_rate none")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
