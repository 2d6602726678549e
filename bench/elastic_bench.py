#!/usr/bin/env python3
"""Elastic scaling benchmark: how fast data moves onto a joining node, what
that costs the foreground load, and how fast the replication factor comes
back after a node dies.

  bench/elastic_bench.py --shoal build/release/src/cli/shoal [--data-mb 1024] [--quick]

1. A 3-node shoal cluster (fsync) is loaded with --data-mb of values.
2. Foreground GETs (redis-benchmark --cluster) run idle, for the baseline
   p50/p99.
3. A 4th node joins; the same GETs run in a loop until the placement driver
   reports the cluster balanced (SHOAL.ADMIN STATUS: no moves in flight,
   replicas per node within one). Printed: time from --join to balanced,
   data moved onto the new node (its replica count times the data of one
   shard: the data loaded over the shard count), MB/s, and foreground p50/p99 during the moves
   against idle (the ratio).
4. One node is killed with kill -9; printed: time until every shard has 3
   voters on live nodes again (down-after-ms plus the copies).
5. One shard is split by hand (SHOAL.ADMIN SPLIT); printed: time until the
   split is done (the new shard led, no move in flight; STATUS polled every
   50 ms) and the GET p99 of runs during it and for a second after.
redis-server is measured in the same run for the same GETs, as the
reference for what the foreground latency costs on this machine.

Every process it starts is stopped by PID; addresses are 127.0.0.x only."""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_bench import Failed, Node, RespError, call, free_port  # noqa: E402

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


def status(node):
    return call(node.host, node.port, "SHOAL.ADMIN", "STATUS", timeout=10)


def parse_status(lines):
    nodes, shards, moving = {}, [], None
    for line in lines:
        w = line.split()
        if w[0] == "node":
            nodes[w[2]] = {"id": w[1], "state": w[3], "replicas": int(w[5]), "leaders": int(w[7])}
        elif w[0] == "shard":
            voters = w[w.index("voters") + 1].split(",")
            shards.append({"id": int(w[1]), "voters": voters, "moving": "moving-to" in w})
        elif w[0] == "moves-in-flight":
            moving = int(w[1])
    return nodes, shards, moving


def balanced(lines, want_nodes):
    nodes, _, moving = parse_status(lines)
    up = [n for n in nodes.values() if n["state"] == "up"]
    if moving != 0 or len(up) != want_nodes:
        return False
    reps = [n["replicas"] for n in up]
    leads = [n["leaders"] for n in up]
    return max(reps) - min(reps) <= 1 and max(leads) - min(leads) <= 1 and min(reps) > 0


def get_latency(host, port, requests, clients, cluster=True):
    argv = ["redis-benchmark", "-h", host, "-p", str(port), "-c", str(clients), "-n", str(requests),
            "-t", "get", "-r", "100000", "--csv"]
    if cluster:
        argv.insert(1, "--cluster")
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    for line in run.stdout.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if len(cols) >= 7 and cols[0] != "test":
            return float(cols[1]), float(cols[4]), float(cols[6])
    raise Failed(f"no result from {' '.join(argv)}: {run.stdout[-500:]} {run.stderr[-500:]}")


class Shoal:
    def __init__(self, args, workdir):
        self.args, self.workdir, self.nodes = args, workdir, []

    def start_node(self, i, join):
        host = HOSTS[i]
        port, peer = free_port(host), free_port(host)
        d = tempfile.mkdtemp(dir=self.workdir, prefix=f"shoal{i}-")
        argv = [self.args.shoal, "server", "--bind", host, "--port", str(port), "--peer-port", str(peer),
                "--dir", d, "--durability", "fsync", "--shards", str(self.args.shards),
                "--down-after-ms", str(self.args.down_after_ms), "--maxmemory", "1gb"]
        if join:
            argv += ["--join", join]
        node = Node(f"shoal{i}", argv, host, port, self.workdir)
        self.nodes.append(node)
        node.wait_ping()
        return node

    def wait(self, cond, timeout, what):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            for n in self.nodes:
                if not n.alive():
                    continue
                try:
                    last = status(n)
                    if cond(last):
                        return last
                    break
                except (OSError, RespError) as e:
                    last = str(e)
            time.sleep(0.25)
        raise Failed(f"{what} not reached within {timeout} s: {last}")

    def stop(self):
        for n in self.nodes:
            n.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shoal", default="build/release/src/cli/shoal")
    ap.add_argument("--data-mb", type=int, default=1024)
    ap.add_argument("--value-size", type=int, default=4096)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--down-after-ms", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="64 MB of data")
    args = ap.parse_args()
    if args.quick:
        args.data_mb = 64
    if not os.path.exists(args.shoal):
        sys.exit(f"no shoal binary at {args.shoal}: cmake --preset release && cmake --build build/release")
    workdir = tempfile.mkdtemp(prefix="shoal-elastic-")
    keys = args.data_mb * 1024 * 1024 // args.value_size
    shoal = Shoal(args, workdir)
    redis = None
    try:
        n0 = shoal.start_node(0, None)
        join = f"{n0.host}:{n0.port}"
        for i in (1, 2):
            shoal.start_node(i, join)
        shoal.wait(lambda s: balanced(s, 3), 120, "a balanced 3-node cluster")
        t = time.time()
        load = subprocess.run(["redis-benchmark", "--cluster", "-h", n0.host, "-p", str(n0.port), "-c", "20",
                               "-P", "16", "-n", str(keys), "-r", str(keys), "-t", "set", "-d",
                               str(args.value_size), "-q"], capture_output=True, text=True, timeout=3600)
        if load.returncode != 0:
            raise Failed(f"load failed: {load.stdout[-500:]} {load.stderr[-500:]}")
        load_s = time.time() - t
        print(f"loaded {keys} SETs of {args.value_size} bytes ({args.data_mb} MB) in {load_s:.1f} s")
        gets = max(20000, keys // 4)
        idle = get_latency(n0.host, n0.port, gets, args.clients)
        print(f"idle GET: {idle[0]:.0f} ops/s p50 {idle[1]:.2f} ms p99 {idle[2]:.2f} ms")

        # The same GETs against redis-server alone, as a reference point.
        rport = free_port()
        rdir = tempfile.mkdtemp(dir=workdir, prefix="redis-")
        redis = Node("redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", rdir,
                               "--save", "", "--appendonly", "no"], "127.0.0.1", rport, workdir)
        redis.wait_ping()
        subprocess.run(["redis-benchmark", "-p", str(rport), "-c", "20", "-P", "16", "-n", str(min(keys, 100000)),
                        "-r", str(keys), "-t", "set", "-d", str(args.value_size), "-q"], capture_output=True,
                       timeout=600)
        ref = get_latency("127.0.0.1", rport, gets, args.clients, cluster=False)
        print(f"redis-server GET (same run, one process): {ref[0]:.0f} ops/s p50 {ref[1]:.2f} ms p99 {ref[2]:.2f} ms")

        t_join = time.time()
        shoal.start_node(3, join)
        during = []
        done = None
        deadline = time.time() + 1800
        while time.time() < deadline:
            during.append(get_latency(n0.host, n0.port, max(5000, gets // 8), args.clients))
            try:
                s = status(n0)
            except (OSError, RespError):
                continue
            if balanced(s, 4):
                done = time.time()
                break
        if done is None:
            raise Failed("the 4-node cluster did not balance within 30 minutes")
        to_balanced = done - t_join
        nodes, _, _ = parse_status(s)
        new = nodes[shoal.nodes[3].addr]
        shard_mb = args.data_mb / args.shards
        moved_mb = new["replicas"] * shard_mb
        p50 = sorted(d[1] for d in during)[len(during) // 2]
        p99 = max(d[2] for d in during)
        print(f"join -> balanced: {to_balanced:.1f} s; {new['replicas']} replicas ({moved_mb:.0f} MB) moved onto "
              f"the new node: {moved_mb / to_balanced:.1f} MB/s")
        print(f"GET during the moves ({len(during)} runs): p50 {p50:.2f} ms p99 (worst run) {p99:.2f} ms; "
              f"ratio to idle p50 {p50 / idle[1]:.2f}x p99 {p99 / idle[2]:.2f}x")

        victim = shoal.nodes[1]
        t_kill = time.time()
        victim.kill9()

        def healed(lines):
            ns, shards, moving = parse_status(lines)
            dead = ns[victim.addr]["id"]
            return moving == 0 and all(len(sh["voters"]) == 3 and dead not in sh["voters"] for sh in shards)
        shoal.wait(healed, 600, "every shard back at 3 voters after kill -9")
        heal_s = time.time() - t_kill
        print(f"kill -9 -> replication factor restored: {heal_s:.1f} s "
              f"(down-after-ms {args.down_after_ms}, so {heal_s - args.down_after_ms / 1000:.1f} s of copying)")
        # 5. A split by hand: the new shard keeps its data in place.
        nodes, shards, _ = parse_status(status(n0))
        t_split = time.time()
        reply = None
        while reply is None and time.time() < t_split + 30:
            try:
                reply = call(n0.host, n0.port, "SHOAL.ADMIN", "SPLIT", str(shards[0]["id"]), timeout=10)
            except RespError as e:
                if not str(e).startswith("TRYAGAIN"):
                    raise Failed(f"SHOAL.ADMIN SPLIT: {e}")
                time.sleep(0.2)
        if reply is None:
            raise Failed("SHOAL.ADMIN SPLIT kept answering TRYAGAIN for 30 s")
        # GETs run beside it (a thread) while STATUS is polled every 50 ms.
        split_lat = []
        stop_gets = threading.Event()

        get_errors = []

        def gets_during():
            try:
                while not stop_gets.is_set():
                    split_lat.append(get_latency(n0.host, n0.port, 5000, args.clients))
            except Exception as e:  # noqa: BLE001 -- reported below, not lost with the thread
                get_errors.append(e)
        getter = threading.Thread(target=gets_during, daemon=True)
        getter.start()
        split_s = None
        while time.time() < t_split + 300:
            try:
                _, sh, moving = parse_status(status(n0))
                if len(sh) == len(shards) + 1 and moving == 0:
                    split_s = time.time() - t_split
                    break
            except (OSError, RespError):
                pass
            time.sleep(0.05)
        time.sleep(1.0)  # GETs just after the split too
        stop_gets.set()
        getter.join(timeout=60)
        if split_s is None:
            raise Failed("the split did not finish within 300 s")
        if getter.is_alive() or get_errors or not split_lat:
            raise Failed(f"GETs beside the split: {get_errors or 'none finished'}")
        worst = max(d[2] for d in split_lat)
        print(f"split ({' '.join(reply) if isinstance(reply, list) else reply}): done in {split_s:.2f} s; "
              f"GET p99 (worst of {len(split_lat)} runs during and just after) {worst:.2f} ms, "
              f"{worst / idle[2]:.2f}x idle")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; shoal {args.shards} shards, "
              f"fsync; data {args.data_mb} MB; values {args.value_size} B")
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        print(shoal_tails(shoal), file=sys.stderr)
        return 1
    finally:
        shoal.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def shoal_tails(shoal):
    return "\n".join(n.tail() for n in shoal.nodes)


if __name__ == "__main__":
    sys.exit(main())
