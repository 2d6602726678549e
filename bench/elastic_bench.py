#!/usr/bin/env python3
"""Elastic scaling benchmark: how fast data moves onto a joining node, what
that costs the foreground load, and how fast the replication factor comes
back after a node dies.

  bench/elastic_bench.py --shoal build/release/src/cli/shoal [--data-mb 1024] [--quick] [--keep]
                         [--no-probe | --probe-rate 1000]

1. A 3-node shoal cluster (fsync) is loaded with --data-mb of random
   (incompressible) values under keys spread over every slot, through
   redis-py's RedisCluster (MSET in batches).
2. Foreground GETs (redis-benchmark --cluster) run idle, for the baseline
   p50/p99: five runs, medians (the runs during the moves are the same
   size). redis-benchmark's cluster keys carry a hash tag, so these GETs
   hit a few slots (one per node it saw as a master): a latency probe, not
   reads of the loaded data.
3. A 4th node joins; the same GETs run in a loop until the placement driver
   is done: no move in flight and nothing planned (SHOAL.ADMIN STATUS and
   PLAN, twice in a row a second apart). Printed: time from --join to done,
   the snapshot bytes the nodes received in that time (STATUS "transfers",
   what actually crossed the network), MB/s, replicas, leaders and bytes per
   node, and foreground p50/p99 during the moves against idle (the ratio).
   The planner weighs replicas by bytes and leaderships by load (the GETs
   above make some shards hot), so counts may differ by more than one.
   With --probe-rate N the foreground load is instead N GETs a second of
   the loaded keys, open loop, from a process of its own (PacedGets: a
   GET's latency counts from when it was due), idle and during the moves,
   and the same paced GETs run against redis-server at the same time, from
   another process: what the machine alone does to a server's latency while
   the moves run. GETs of 10 ms or more are printed in bursts, with the
   node of the worst one. A closed loop fills this machine's two cores, so
   the moves and the GETs only trade CPU; a paced load leaves room to see
   stalls.
4. One node is killed with kill -9; printed: time until every shard has 3
   voters on live nodes again (down-after-ms plus the copies).
5. One shard is split by hand (SHOAL.ADMIN SPLIT); printed: time until the
   split is done (the new shard led, no move in flight; STATUS polled every
   50 ms) and the GET p99 of runs during it and for a second after.
redis-server is measured in the same run for the same GETs, as the
reference for what the foreground latency costs on this machine.

Every process it starts is stopped by PID; addresses are 127.0.0.x only."""
import argparse
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_bench import Failed, Node, Resp, RespError, call, cpu_seconds, free_port, thread_stats  # noqa: E402

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


def status(node):
    return call(node.host, node.port, "SHOAL.ADMIN", "STATUS", timeout=10)


def parse_status(lines):
    nodes, shards, moving = {}, [], None
    for line in lines:
        w = line.split()
        if w[0] == "node":
            nodes[w[2]] = {"id": w[1], "state": w[3], "replicas": int(w[5]), "leaders": int(w[7]),
                           "bytes": int(w[9])}
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


def summary(lines):
    nodes, _, moving = parse_status(lines)
    per = " ".join(f"{a}: {n['replicas']} replicas {n['leaders']} leaders {n['bytes'] / 1e6:.0f} MB"
                   for a, n in nodes.items() if n["state"] == "up")
    return f"{per}; moves in flight {moving}"


def transfers(lines):
    """(bytes sent, bytes received) by snapshot transfers, summed over the
    nodes that are up (counters since each node started)."""
    for line in lines:
        w = line.split()
        if w[0] == "transfers":
            return int(w[w.index("bytes-sent") + 1]), int(w[w.index("bytes-received") + 1])
    raise Failed(f"no transfers line in STATUS: {lines}")


def node_cpu(nodes):
    """(CPU seconds of each node's process, {thread name: [ticks, ...]} of their live threads)."""
    pids = [n.pid for n in nodes]
    return {pid: cpu_seconds(pid) for pid in pids}, thread_stats(pids)


def cpu_per_mb(before, after, mb):
    """CPU milliseconds per MB by thread kind (summed over the nodes), largest first, and the total.
    Threads that ended meanwhile (each export runs on a thread of its own) count in the process's
    total only: shown as "ended threads"."""
    ticks = os.sysconf("SC_CLK_TCK")
    kinds = {}
    for name, a in after[1].items():
        kind = "shoal-w*" if name.startswith("shoal-w") and name[7:].isdigit() else name
        kinds[kind] = kinds.get(kind, 0) + (a[0] - before[1].get(name, [0])[0]) / ticks
    total = sum(c - before[0].get(pid, 0.0) for pid, c in after[0].items())
    kinds["ended threads"] = total - sum(kinds.values())
    ms = {k: v * 1000 / max(mb, 1e-9) for k, v in kinds.items()}
    top = sorted(((v, k) for k, v in ms.items() if v >= 0.5), reverse=True)
    return ", ".join(f"{k} {v:.1f}" for v, k in top) + f"; all {total * 1000 / max(mb, 1e-9):.1f}"


def plan(node):
    """The moves the planner would make now (SHOAL.ADMIN PLAN): [] when none."""
    return call(node.host, node.port, "SHOAL.ADMIN", "PLAN", timeout=10) or []


def load_random(node, keys, value_size, threads=4):
    """keys keys (bench:<i>) of random bytes, spread over every slot, by MSET
    batches of about 1 MB through redis-py's RedisCluster, from `threads`
    threads (each its own client)."""
    import redis  # python3-redis, installed by scripts/install-deps.sh
    batch = max(1, (1 << 20) // value_size)
    errors = []

    def part(t):
        try:
            rc = redis.RedisCluster(host=node.host, port=node.port, decode_responses=False)
            try:
                for k in range(t * batch, keys, threads * batch):
                    n = min(batch, keys - k)
                    blob = os.urandom(value_size * n)
                    rc.mset_nonatomic({f"bench:{k + j}": blob[j * value_size:(j + 1) * value_size]
                                       for j in range(n)})
            finally:
                rc.close()
        except Exception as e:  # noqa: BLE001 -- reported below, not lost with the thread
            errors.append(e)
    workers = [threading.Thread(target=part, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise Failed(f"loading failed: {errors[0]!r}")


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


def _crc16_table():
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else c << 1
        table.append(c & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: bytes) -> int:
    """Redis Cluster's slot of a key (CRC16/XMODEM mod 16384; no hash tags in bench:<i>)."""
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc & 16383


class PacedGets:
    """An open-loop foreground load: GETs of the loaded keys (bench:<i>, drawn
    at random) at a fixed total rate from `threads` threads, each with its
    own connections, routed by slot (CLUSTER SLOTS; MOVED updates the map,
    TRYAGAIN retries after 10 ms). A GET's latency runs from the moment it
    was due, not from when it was sent: a stall that delays the ones behind
    it counts against all of them (no coordinated omission). run(seconds)
    returns the latencies in ms; start()/stop() run it in the background, in
    a process of its own."""

    def __init__(self, host, port, keys, rate, threads=2):
        self.host, self.port, self.keys, self.rate, self.threads = host, port, keys, rate, threads
        self.slots = [None] * 16384
        try:
            for r in call(host, port, "CLUSTER", "SLOTS", timeout=10):
                for s in range(int(r[0]), int(r[1]) + 1):
                    self.slots[s] = (r[2][0], int(r[2][1]))
            self.cluster = True
        except RespError:  # redis-server without cluster mode: one node holds every key
            self.cluster = False
        self.lat, self.errors, self.redirects, self.slow, self.retried = [], [], 0, [], {}

    def _loop(self, k, until):
        import random
        rng = random.Random(k)
        conns = {}
        period = self.threads / self.rate
        due = time.monotonic() + k * period / self.threads
        lat = []
        try:
            while not self._stop.is_set() and due < until:
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                key = b"bench:%d" % rng.randrange(self.keys)
                addr = self.slots[key_slot(key)] or (self.host, self.port)
                for _ in range(50):
                    conn = conns.get(addr)
                    if conn is None:
                        conn = conns[addr] = Resp(addr[0], addr[1], timeout=10)
                        if self.cluster:
                            conn.call("CLUSTER", "SLOTS")  # a cluster-aware client: MOVED, not forwarded
                    try:
                        conn.call("GET", key)
                        break
                    except RespError as e:
                        w = str(e).split()
                        if w[0] in ("MOVED", "ASK"):
                            host, port = w[2].rsplit(":", 1)
                            addr = (host, int(port))
                            if w[0] == "MOVED":
                                self.slots[int(w[1])] = addr
                            self.redirects += 1
                        elif w[0] in ("TRYAGAIN", "CLUSTERDOWN"):
                            # retried as cluster clients do; counted, and printed
                            self.retried[w[0]] = self.retried.get(w[0], 0) + 1
                            time.sleep(0.01)
                        else:
                            raise
                else:
                    raise Failed(f"GET {key!r}: 50 redirects or retries")
                ms = (time.monotonic() - due) * 1000
                lat.append(ms)
                if ms >= 10:
                    self.slow.append((time.time() - (time.monotonic() - due), ms, f"{addr[0]}:{addr[1]}",
                                      key_slot(key)))
                due += period
        except Exception as e:  # noqa: BLE001 -- reported by stop(), not lost with the thread
            self.errors.append(e)
        finally:
            for c in conns.values():
                c.close()
            self.lat.extend(lat)

    def start(self, seconds=3600):
        """Runs the GETs in a process of their own (forked), so that neither
        this process's other threads nor the other probe hold them up."""
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)

        def child():
            self.lat, self.errors, self.redirects, self.slow, self.retried = [], [], 0, [], {}
            until = time.monotonic() + seconds
            workers = [threading.Thread(target=self._loop, args=(k, until)) for k in range(self.threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            send.send((sorted(self.lat), [repr(e) for e in self.errors], self.redirects, self.slow, self.retried))
        self._proc = ctx.Process(target=child, daemon=True)
        self._proc.start()

    def stop(self):
        self._stop.set()
        got = self._recv.recv() if self._recv.poll(120) else None
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
        if got is None:
            raise Failed("paced GETs: no result from their process")
        self.lat, errors, self.redirects, self.slow, self.retried = got
        if errors:
            raise Failed(f"paced GETs failed: {errors[0]}")
        return self.lat

    def run(self, seconds):
        self.start(seconds)
        time.sleep(seconds)
        return self.stop()


def bursts(slow, t0):
    """PacedGets.slow as bursts (GETs due within 0.2 s of each other): a
    burst over every node at once is a stall of the machine or the probe."""
    out = []
    for w in sorted(slow):
        if out and w[0] - out[-1]["last"] <= 0.2:
            b = out[-1]
            b["last"], b["n"], b["max"] = w[0], b["n"] + 1, max(b["max"], w[1])
            b["nodes"].add(w[2])
        else:
            out.append({"first": w[0], "last": w[0], "n": 1, "max": w[1], "nodes": {w[2]}, "at": w[2]})
        if w[1] >= out[-1]["max"]:
            out[-1]["at"] = w[2]
    return "; ".join(f"{b['first'] - t0:.2f}: {b['n']}, {b['max']:.0f} ms at {b['at']}, {len(b['nodes'])} nodes"
                     for b in out) or "none"


def percentile(sorted_ms, q):
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))] if sorted_ms else float("nan")


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
    ap.add_argument("--keep", action="store_true", help="keep the nodes' folders and logs (printed at the end)")
    ap.add_argument("--no-probe", action="store_true",
                    help="no foreground GETs during the join's moves (STATUS polled every 0.5 s): what moving "
                         "data costs alone; the kill and split steps still run")
    ap.add_argument("--probe-rate", type=int, default=0,
                    help="foreground GETs per second of the loaded keys, open loop (PacedGets), instead of "
                         "closed-loop redis-benchmark runs: the latency a steady load sees, idle and during the "
                         "join's moves, on a machine whose cores the probe would otherwise fill (0: closed loop)")
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
        load_random(n0, keys, args.value_size)
        load_s = time.time() - t
        # --data-mb counts MiB; every rate and size printed below is in MB (10^6 bytes).
        loaded_mb = keys * args.value_size / 1e6
        print(f"loaded {keys} keys of {args.value_size} random bytes ({args.data_mb} MiB = {loaded_mb:.0f} MB) "
              f"in {load_s:.1f} s ({loaded_mb / load_s:.1f} MB/s)")
        # Runs of the same size idle and during the moves; medians of runs.
        gets = max(5000, keys // 32)
        runs = [get_latency(n0.host, n0.port, gets, args.clients) for _ in range(5)]
        idle = tuple(sorted(r[i] for r in runs)[len(runs) // 2] for i in range(3))
        print(f"idle GET ({len(runs)} runs of {gets}, medians): {idle[0]:.0f} ops/s p50 {idle[1]:.2f} ms "
              f"p99 {idle[2]:.2f} ms")

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
        # Paced GETs idle, against both at once (as during the moves below).
        paced = PacedGets(n0.host, n0.port, keys, args.probe_rate) if args.probe_rate else None
        paced_ref = PacedGets("127.0.0.1", rport, keys, args.probe_rate) if paced else None
        if paced:
            paced.start(15)
            paced_ref.start(15)
            time.sleep(15)
            lat, lat_ref = paced.stop(), paced_ref.stop()
            paced_idle = (percentile(lat, 0.5), percentile(lat, 0.99))
            ref_idle = (percentile(lat_ref, 0.5), percentile(lat_ref, 0.99))
            print(f"idle paced GETs ({args.probe_rate}/s open loop, {len(lat)} in 15 s): p50 {paced_idle[0]:.2f} ms "
                  f"p99 {paced_idle[1]:.2f} ms; redis-server at the same time: p50 {ref_idle[0]:.2f} ms p99 "
                  f"{ref_idle[1]:.2f} ms")

        received0 = transfers(status(n0))[1]
        cpu0 = node_cpu(shoal.nodes)
        t_join = time.time()
        # The same paced GETs against redis-server at the same time: a stall
        # both see is the machine's (or the probe's), not shoal's.
        if paced:
            paced.start()
            paced_ref.start()
        shoal.start_node(3, join)
        during = []
        done = None
        quiet = 0  # consecutive polls with nothing in flight or planned
        next_report = time.time() + 30
        deadline = time.time() + 1800
        while time.time() < deadline:
            if args.no_probe or paced:
                time.sleep(0.5)
            else:
                during.append(get_latency(n0.host, n0.port, gets, args.clients))
            try:
                s = status(n0)
                nodes, _, moving = parse_status(s)
                up = [n for n in nodes.values() if n["state"] == "up"]
                idle_now = moving == 0 and len(up) == 4 and min(n["replicas"] for n in up) > 0 and plan(n0) == []
            except (OSError, RespError):
                continue
            quiet = quiet + 1 if idle_now else 0
            if quiet == 1:
                done = time.time()
                cpu1 = node_cpu(shoal.nodes)
                if paced:
                    lat = paced.stop()
                    lat_ref = paced_ref.stop()
            if quiet >= 2:
                break
            if time.time() >= next_report:
                next_report = time.time() + 30
                print(f"  {time.time() - t_join:.0f} s after --join: {summary(s)}; plan: {'; '.join(plan(n0)) or 'nothing'}",
                      flush=True)
        if quiet < 2:
            raise Failed("the 4-node cluster did not settle within 30 minutes")
        to_done = done - t_join
        received = transfers(s)[1] - received0
        mb = received / 1e6
        print(f"join -> settled: {to_done:.1f} s; {mb:.0f} MB of snapshots received: {mb / to_done:.1f} MB/s"
              f"{' (no foreground load)' if args.no_probe else ''}")
        print(f"  per node: {summary(s)}")
        # What the new node holds against what it was sent: a replica sent
        # twice (a move restarted, or planned back and forth) shows here.
        held = sum(n["bytes"] for a, n in parse_status(s)[0].items() if a.startswith(HOSTS[3] + ":"))
        if held:
            print(f"  the new node holds {held / 1e6:.0f} MB in its replicas: received / held "
                  f"{received / held:.2f}")
        print(f"  CPU of the nodes from --join to settled, ms per MB received: {cpu_per_mb(cpu0, cpu1, mb)}")
        if paced:
            p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            retried = "".join(f", {n} {e} retried" for e, n in sorted(paced.retried.items()))
            print(f"paced GETs during the moves ({len(lat)}, {paced.redirects} redirected{retried}): p50 {p50:.2f} ms "
                  f"p99 {p99:.2f} ms, max {lat[-1]:.2f} ms; ratio to idle p50 {p50 / paced_idle[0]:.2f}x "
                  f"p99 {p99 / paced_idle[1]:.2f}x")
            r50, r99 = percentile(lat_ref, 0.5), percentile(lat_ref, 0.99)
            print(f"  redis-server, the same paced GETs at the same time ({len(lat_ref)}): p50 {r50:.2f} ms p99 "
                  f"{r99:.2f} ms, max {lat_ref[-1]:.2f} ms; ratio to its idle p50 {r50 / ref_idle[0]:.2f}x p99 "
                  f"{r99 / ref_idle[1]:.2f}x (what the machine alone does); shoal's p99 over redis-server's "
                  f"during: {p99 / r99:.2f}x")
            print(f"  GETs of 10 ms or more, by burst (s after --join: count, worst, nodes): "
                  f"shoal {bursts(paced.slow, t_join)}; redis-server {bursts(paced_ref.slow, t_join)}")
        if during:
            p50 = sorted(d[1] for d in during)[len(during) // 2]
            p99 = max(d[2] for d in during)
            p99_median = sorted(d[2] for d in during)[len(during) // 2]
            print(f"GET during the moves ({len(during)} runs): p50 {p50:.2f} ms, p99 median of runs {p99_median:.2f} ms, "
                  f"worst run {p99:.2f} ms; ratio to idle p50 {p50 / idle[1]:.2f}x p99 {p99_median / idle[2]:.2f}x "
                  f"(worst {p99 / idle[2]:.2f}x)")

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
        if args.keep:
            print(f"nodes' folders and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def shoal_tails(shoal):
    return "\n".join(n.tail() for n in shoal.nodes)


if __name__ == "__main__":
    sys.exit(main())
