#!/usr/bin/env python3
"""Side-by-side benchmark: shoal against redis-server, same machine, same run,
same parameters. Prints throughput, p50/p99 latency, server CPU seconds per
100k operations and the shoal/redis ratio for every line, then memory:
resident memory after loading 1M keys (16-byte keys, 100-byte values), after
loading one hash and one sorted set of 1M elements and 1M small hashes, and
shoal's resident memory while it loads ten times its memory budget.

  bench/bench.py --shoal build/release/src/cli/shoal [--quick]

--only scaling measures one node's scaling over --workers (1, 2, 4, 8 by
default, as far as the server's cores go): shoal with N workers runs on N
cores of --server-cpus, redis-server on one of them, redis-benchmark on
--client-cpus (e.g. on a 16-core machine: --server-cpus 0-7 --client-cpus
8-15 --bench-threads 4 --clients 200). --server-cpus and --client-cpus pin
the other sections' servers and clients the same way.

--baseline BINARY runs a second shoal build in the same rounds as --shoal
(fresh servers each round, the order rotating over the three servers), for
an A/B of two builds on a machine too noisy to compare separate runs:

  bench/bench.py --shoal NEW --baseline OLD --only none --rounds 4 --tests set,get

Each measured run has a fresh server: GET, LPOP and SPOP runs first write,
unmeasured, what they read (PREFILL), so that a GET finds its key as a
user's would.

Every server it starts listens on 127.0.0.1 only and is stopped by PID."""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TESTS = ["set", "get", "incr", "mset", "hset", "hget", "lpush", "lpop", "lrange100", "sadd", "spop", "zadd",
         "zrange100"]
# Tests of one command on a key filled first: (setup command, benchmarked command).
FILLED = {
    "hget": (["HSET", "bench:h", "f", "v" * 100], ["HGET", "bench:h", "f"]),
    "lrange100": (["RPUSH", "bench:l"] + [f"e{i:03d}" for i in range(100)], ["LRANGE", "bench:l", "0", "99"]),
    "zrange100": (["ZADD", "bench:z"] + [a for i in range(100) for a in (str(i), f"m{i:03d}")],
                  ["ZRANGE", "bench:z", "0", "99"]),
}
# Tests that read what an earlier test would have written: each server is
# fresh, so the keys are written first (unmeasured), or every GET would be a
# miss, every LPOP and SPOP find nothing. (test: (write test, requests))
PREFILL = {"get": ("set", 500000), "lpop": ("lpush", None), "spop": ("sadd", None)}
PIPELINES = [1, 16]
CLIENTS = 50


_taken_ports = set()


def free_port():
    """A port the kernel says is free and this run has not handed out: a
    server's client and peer ports, asked for one after the other, could
    otherwise be the same (it exited at start when they were)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port
    raise RuntimeError("no free port")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid, field="VmRSS:"):
    """Resident memory; field "RssAnon:" leaves out the mapped binary and libraries."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def cpu_list(spec):
    """"0-3,8" -> [0, 1, 2, 3, 8]; None -> None."""
    if not spec:
        return None
    cpus = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    usable = os.sched_getaffinity(0)
    if not cpus <= usable:
        sys.exit(f"cores {sorted(cpus - usable)} of '{spec}' are not usable here (usable: {sorted(usable)})")
    return sorted(cpus)


def pinned(cpus):
    """A preexec_fn that runs the child (and every thread it starts) on `cpus`."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


class Server:
    def __init__(self, name, argv, port, workdir, cpus=None):
        self.name, self.port = name, port
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=pinned(cpus))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited early, see {self.log.name}")
            try:
                out = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                                     text=True, timeout=5).stdout.strip()
                if out == "PONG":
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} did not answer PING")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_redis(workdir, fsync, cpus=None):
    port = free_port()
    d = tempfile.mkdtemp(dir=workdir)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
            "--daemonize", "no"]
    argv += ["--appendonly", "yes", "--appendfsync", "always"] if fsync else ["--appendonly", "no"]
    return Server("redis", argv, port, workdir, cpus)


def start_shoal(binary, workdir, fsync, maxmemory="1gb", workers=None, cpus=None):
    port = free_port()
    d = tempfile.mkdtemp(dir=workdir)
    argv = [binary, "server", "--port", str(port), "--peer-port", str(free_port()), "--dir", d,
            "--durability", "fsync" if fsync else "none", "--maxmemory", maxmemory]
    if workers:
        argv += ["--workers", str(workers)]
    return Server("shoal", argv, port, workdir, cpus)


def run_benchmark(server, test, pipeline, requests, client_cpus=None, threads=None):
    """One redis-benchmark run; returns (ops/s, p50 ms, p99 ms, cpu s per 100k ops)."""
    if test in PREFILL:
        write, count = PREFILL[test]
        # GETs of redis-benchmark's keys (-r 100000): 500k SETs leave about
        # 99 % of them written; a pop test pops what as many pushes pushed.
        fill = ["redis-benchmark", "-p", str(server.port), "-c", str(CLIENTS), "-n", str(count or requests),
                "-P", "16", "-r", "100000", "-d", "100", "-q", "-t", write]
        subprocess.run(fill, capture_output=True, check=True, timeout=600, preexec_fn=pinned(client_cpus))
    cpu0 = cpu_seconds(server.pid)
    argv = ["redis-benchmark", "-p", str(server.port), "-c", str(CLIENTS), "-n", str(requests),
            "-P", str(pipeline), "-r", "100000", "-d", "100", "--csv", "-q"]
    if threads:
        argv += ["--threads", str(threads)]
    if test == "mset":
        # 10 keys in one slot ({hash tag}): shoal, like Redis Cluster, refuses
        # multi-key commands across slots. redis-benchmark's own mset spreads them.
        value = "x" * 100
        argv += ["MSET"] + [a for i in range(10) for a in (f"{{m}}k{i}:__rand_int__", value)]
    elif test in FILLED:
        setup, command = FILLED[test]
        subprocess.run(["redis-cli", "-p", str(server.port)] + setup, capture_output=True, check=True, timeout=60)
        argv += command
    else:
        argv += ["-t", test]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, preexec_fn=pinned(client_cpus)).stdout
    cpu = cpu_seconds(server.pid) - cpu0
    for line in out.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if len(cols) >= 7 and cols[0] != "test":
            rps, p50, p99 = float(cols[1]), float(cols[4]), float(cols[6])
            return rps, p50, p99, cpu / requests * 100000
    raise RuntimeError(f"no result from redis-benchmark for {test}: {out!r}")


def throughput_section(args, workdir, fsync):
    mode = "fsync  vs redis appendfsync always" if fsync else "none   vs redis without persistence"
    print(f"\n== durability {mode}; -c {CLIENTS}, median of {args.rounds} rounds")
    if args.baseline:
        print(f"   base = {args.baseline}, run in the same rounds; base/redis and shoal/base on its line")
    print(f"{'test':<10}{'P':>3} | {'shoal ops/s':>12}{'p50':>7}{'p99':>7}{'cpu/100k':>9} | "
          f"{'redis ops/s':>12}{'p50':>7}{'p99':>7}{'cpu/100k':>9} | {'ratio':>6}{'cpu ratio':>10}")
    names = ["shoal", "redis"] + (["base"] if args.baseline else [])
    rows = []
    for test in TESTS:
        for p in PIPELINES:
            n = args.requests * (4 if p > 1 else 1)
            if fsync and p == 1:
                n = max(n // 4, 20000)
            results = {name: [] for name in names}
            for rnd in range(args.rounds):
                # Fresh servers each round; who goes first rotates.
                for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                    if name == "redis":
                        srv = start_redis(workdir, fsync, cpus=args.server_cpus)
                    else:
                        binary = args.shoal if name == "shoal" else args.baseline
                        srv = start_shoal(binary, workdir, fsync, workers=args.workers, cpus=args.server_cpus)
                    try:
                        results[name].append(run_benchmark(srv, test, p, n, args.client_cpus, args.bench_threads))
                    finally:
                        srv.stop()
            med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in results.items()}
            s, r = med["shoal"], med["redis"]
            ratio = s[0] / r[0] if r[0] else 0
            cpu_ratio = r[3] / s[3] if s[3] else 0
            rows.append((test, p, ratio))
            print(f"{test:<10}{p:>3} | {s[0]:>12.0f}{s[1]:>7.3f}{s[2]:>7.3f}{s[3]:>9.3f} | "
                  f"{r[0]:>12.0f}{r[1]:>7.3f}{r[2]:>7.3f}{r[3]:>9.3f} | {ratio:>6.2f}{cpu_ratio:>10.2f}",
                  flush=True)
            if args.baseline:
                b = med["base"]
                base_ratio = b[0] / r[0] if r[0] else 0
                # shoal/base: ops/s ratio and CPU per op ratio (>= 1.0: shoal better on both).
                print(f"{'  base':<10}{p:>3} | {b[0]:>12.0f}{b[1]:>7.3f}{b[2]:>7.3f}{b[3]:>9.3f} | "
                      f"{'base/redis':>12} {base_ratio:5.2f}  shoal/base ops {s[0] / b[0] if b[0] else 0:5.2f}"
                      f"  cpu {b[3] / s[3] if s[3] else 0:5.2f}", flush=True)
    return rows


def load_keys(port, count, key_bytes=16, value_bytes=100, chunk=100000):
    """Loads `count` distinct keys via redis-cli --pipe (16-byte keys, 100-byte values)."""
    value = b"v" * value_bytes
    for start in range(0, count, chunk):
        buf = bytearray()
        for i in range(start, min(count, start + chunk)):
            key = b"k%0*d" % (key_bytes - 1, i)
            buf += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=bytes(buf),
                       capture_output=True, check=True, timeout=600)
        yield min(count, start + chunk)


def memory_section(args, workdir):
    print(f"\n== memory: resident after loading {args.keys:,} keys (16-byte keys, 100-byte values)")
    rss = {}
    for name in ("shoal", "redis"):
        srv = start_shoal(args.shoal, workdir, False) if name == "shoal" else start_redis(workdir, False)
        try:
            for _ in load_keys(srv.port, args.keys):
                pass
            time.sleep(1)
            rss[name] = rss_bytes(srv.pid)
        finally:
            srv.stop()
    print(f"shoal {rss['shoal'] / 2**20:8.1f} MiB   redis {rss['redis'] / 2**20:8.1f} MiB   "
          f"ratio redis/shoal {rss['redis'] / rss['shoal']:.2f} (>= 1.0: shoal uses less)")


def encode_commands(commands):
    buf = bytearray()
    for argv in commands:
        buf += b"*%d\r\n" % len(argv)
        for a in argv:
            a = a if isinstance(a, bytes) else str(a).encode()
            buf += b"$%d\r\n%s\r\n" % (len(a), a)
    return bytes(buf)


def pipe_commands(port, commands, chunk=2000):
    """Sends an iterable of commands through redis-cli --pipe, `chunk` commands at a time."""
    batch = []
    for argv in commands:
        batch.append(argv)
        if len(batch) == chunk:
            subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=encode_commands(batch),
                           capture_output=True, check=True, timeout=600)
            batch = []
    if batch:
        subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=encode_commands(batch),
                       capture_output=True, check=True, timeout=600)


def big_hash(n, per_command=100):
    for start in range(0, n, per_command):
        args = ["HSET", "big:hash"]
        for i in range(start, min(n, start + per_command)):
            args += [b"field:%08d" % i, b"value:%08d" % i]
        yield args


def big_zset(n, per_command=100):
    for start in range(0, n, per_command):
        args = ["ZADD", "big:zset"]
        for i in range(start, min(n, start + per_command)):
            args += [b"%d" % ((i * 7919) % 1000003), b"member:%08d" % i]
        yield args


def small_hashes(n):
    for i in range(n):
        yield ["HSET", b"h:%08d" % i, "name", b"user%08d" % i, "visits", b"%d" % (i % 1000),
               "plan", "free", "country", "NZ"]


COLLECTIONS = {
    "one hash, {n:,} fields (14-byte fields and values)": (big_hash, "HLEN", "big:hash"),
    "one sorted set, {n:,} members (15-byte members)": (big_zset, "ZCARD", "big:zset"),
    "{n:,} small hashes (4 fields each, ~40 bytes)": (small_hashes, "DBSIZE", None),
}


def collections_section(args, workdir):
    n = args.keys
    print(f"\n== memory: resident after loading collections ({n:,} elements each; fresh server each). "
          f"shoal keeps its data on disk and RocksDB's cache within half of --maxmemory: shown at the "
          f"default 1gb and at 128mb, with the count read back")
    for label, (gen, count_cmd, key) in COLLECTIONS.items():
        rss, counts, disk = {}, {}, 0
        for name in ("shoal", "shoal 128mb", "redis"):
            if name == "redis":
                srv = start_redis(workdir, False)
            else:
                srv = start_shoal(args.shoal, workdir, False, maxmemory="128mb" if "128" in name else "1gb")
            try:
                pipe_commands(srv.port, gen(n))
                time.sleep(1)
                rss[name] = rss_bytes(srv.pid)
                counts[name] = subprocess.run(["redis-cli", "-p", str(srv.port), count_cmd] + ([key] if key else []),
                                              capture_output=True, text=True).stdout.strip()
                if name == "shoal":
                    info = subprocess.run(["redis-cli", "-p", str(srv.port), "INFO", "memory"],
                                          capture_output=True, text=True).stdout
                    for line in info.splitlines():
                        if line.startswith("storage_disk_bytes:"):
                            disk = int(line.split(":")[1])
            finally:
                srv.stop()
        print(f"{label.format(n=n)} (shoal on disk {disk / 2**20:.1f} MiB):", flush=True)
        for name in ("shoal", "shoal 128mb", "redis"):
            ratio = f"   ratio redis/shoal {rss['redis'] / rss[name]:.2f}" if name != "redis" else ""
            print(f"  {name:<12} {rss[name] / 2**20:7.1f} MiB  count {counts[name]}{ratio}", flush=True)


def budget_section(args, workdir):
    start = time.time()
    budget = args.budget_mb
    data_mb = budget * 10
    keys = data_mb * 2**20 // 116
    print(f"\n== memory budget: shoal --maxmemory {budget}mb loading {data_mb} MiB "
          f"({keys:,} keys), resident sampled after every 100k keys")
    srv = start_shoal(args.shoal, workdir, False, maxmemory=f"{budget}mb")
    peak = peak_anon = 0
    try:
        for done in load_keys(srv.port, keys):
            peak = max(peak, rss_bytes(srv.pid))
            peak_anon = max(peak_anon, rss_bytes(srv.pid, "RssAnon:"))
        info = subprocess.run(["redis-cli", "-p", str(srv.port), "INFO", "memory"],
                              capture_output=True, text=True).stdout
        dbsize = subprocess.run(["redis-cli", "-p", str(srv.port), "DBSIZE"],
                                capture_output=True, text=True).stdout.strip()
        sample = subprocess.run(["redis-cli", "-p", str(srv.port), "GET", "k%015d" % (keys // 2)],
                                capture_output=True, text=True).stdout.strip()
    finally:
        srv.stop()
    rate = keys / (time.time() - start)
    print(f"loaded at {rate:,.0f} keys/s; "
          f"peak resident {peak / 2**20:.1f} MiB (anonymous {peak_anon / 2**20:.1f} MiB) for a "
          f"{budget} MiB budget (ratio budget/peak {budget * 2**20 / peak:.2f}, "
          f"budget/anonymous {budget * 2**20 / peak_anon:.2f}); DBSIZE {dbsize}; "
          f"a key from the middle reads back {'ok' if sample == 'v' * 100 else 'WRONG'}")
    for line in info.splitlines():
        if line.startswith(("storage_", "client_buffers", "used_memory:", "maxmemory:")):
            print("  " + line)


def keyspace_section(args, workdir):
    """KEYS * and a whole SCAN of a few live keys after many keys were
    written and deleted (by DEL, and by FLUSHALL), against redis-server."""
    n = 20000 if args.quick else 100000
    live = [f"live{i}{{la2}}".encode() for i in range(8)]
    print(f"\n== keyspace walks: KEYS * and a whole SCAN (redis-cli --scan) over {len(live)} live keys after "
          f"{n:,} keys were written and deleted; fresh server each; seconds")
    print(f"{'deleted by':<12}{'':>4} | {'shoal KEYS':>11}{'SCAN':>9} | {'redis KEYS':>11}{'SCAN':>9}")
    for how in ("DEL", "FLUSHALL"):
        times = {}
        for name in ("shoal", "redis"):
            srv = start_shoal(args.shoal, workdir, False) if name == "shoal" else start_redis(workdir, False)
            try:
                commands = [["SET", b"gone:%d" % i, "v"] for i in range(n)]
                commands += [["DEL", b"gone:%d" % i] for i in range(n)] if how == "DEL" else [["FLUSHALL"]]
                commands += [["SET", k, "v"] for k in live]
                pipe_commands(srv.port, commands)
                cli = ["redis-cli", "-p", str(srv.port)]
                t0 = time.time()
                keys = subprocess.run(cli + ["KEYS", "*"], capture_output=True, timeout=600).stdout.split()
                t1 = time.time()
                scanned = subprocess.run(cli + ["--scan"], capture_output=True,
                                         timeout=600).stdout.split()
                t2 = time.time()
                if sorted(keys) != sorted(live) or sorted(scanned) != sorted(live):
                    sys.exit(f"{name}: KEYS or SCAN returned {keys[:10]} / {scanned[:10]}, not the live keys")
                times[name] = (t1 - t0, t2 - t1)
            finally:
                srv.stop()
        s, r = times["shoal"], times["redis"]
        print(f"{how:<12}{'':>4} | {s[0]:>11.3f}{s[1]:>9.3f} | {r[0]:>11.3f}{r[1]:>9.3f}", flush=True)


SCALING_TESTS = [("set", 1), ("set", 16), ("get", 1), ("get", 16)]


def scaling_section(args, workdir):
    """One node over --workers: shoal with N workers on N cores, against
    redis-server (one thread) on one of those cores; durability none."""
    server_cpus = args.server_cpus or sorted(os.sched_getaffinity(0))
    counts = [w for w in args.scaling_workers if w <= len(server_cpus)]
    print(f"\n== scaling: one node, shoal --workers N on N of cores {server_cpus}, redis-server on core "
          f"{server_cpus[0]}, redis-benchmark on {args.client_cpus or 'any core'}; durability none "
          f"vs redis without persistence; -c {CLIENTS}, median of {args.rounds} rounds")
    names = [f"{t} -P{p}" for t, p in SCALING_TESTS]
    print(f"{'':<14}" + "".join(f"{n:>20}" for n in names))

    def measure(start):
        row = []
        for test, p in SCALING_TESTS:
            n = args.requests * (4 if p > 1 else 1)
            runs = []
            for _ in range(args.rounds):
                srv = start()
                try:
                    runs.append(run_benchmark(srv, test, p, n, args.client_cpus, args.bench_threads)[0])
                finally:
                    srv.stop()
            row.append(statistics.median(runs))
        return row

    redis = measure(lambda: start_redis(workdir, False, cpus=server_cpus[:1]))
    print(f"{'redis-server':<14}" + "".join(f"{v:>20.0f}" for v in redis), flush=True)
    first = None
    for w in counts:
        row = measure(lambda: start_shoal(args.shoal, workdir, False, workers=w, cpus=server_cpus[:w]))
        first = first or row
        cells = [f"{v:.0f} x{v / f:.2f} r{v / r:.2f}" for v, f, r in zip(row, first, redis)]
        print(f"{f'shoal w={w}':<14}" + "".join(f"{c:>20}" for c in cells), flush=True)
    print("x: ops/s against shoal with one worker; r: against redis-server in the same run")


def main():
    global CLIENTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shoal", default="build/release/src/cli/shoal")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200000, help="requests per run at -P 1")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--budget-mb", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--clients", type=int, default=CLIENTS, help="redis-benchmark -c")
    ap.add_argument("--bench-threads", type=int, default=None, help="redis-benchmark --threads")
    ap.add_argument("--server-cpus", help="cores for the servers, e.g. 0-7 (default: any)")
    ap.add_argument("--client-cpus", help="cores for redis-benchmark, e.g. 8-15 (default: any)")
    ap.add_argument("--scaling-workers", default="1,2,4,8", help="--only scaling: worker counts")
    ap.add_argument("--quick", action="store_true", help="fewer requests and keys, 1 round")
    ap.add_argument("--only", choices=["none", "fsync", "memory", "collections", "budget", "keyspace", "scaling"],
                    action="append")
    ap.add_argument("--tests", help=f"comma-separated subset of {','.join(TESTS)}")
    ap.add_argument("--baseline", help="a second shoal binary, run in the same rounds as --shoal in the "
                    "throughput sections (an A/B of two builds on a noisy machine)")
    args = ap.parse_args()
    if args.tests:
        unknown = set(args.tests.split(",")) - set(TESTS)
        if unknown:
            sys.exit(f"unknown tests: {','.join(sorted(unknown))}")
        TESTS[:] = [t for t in TESTS if t in args.tests.split(",")]
    if args.quick:
        args.rounds, args.requests, args.keys = 1, 50000, 200000
    CLIENTS = args.clients
    args.server_cpus, args.client_cpus = cpu_list(args.server_cpus), cpu_list(args.client_cpus)
    args.scaling_workers = [int(w) for w in args.scaling_workers.split(",")]
    if not os.access(args.shoal, os.X_OK):
        sys.exit(f"no shoal binary at {args.shoal}: cmake --preset release && cmake --build build/release")
    if args.baseline and not os.access(args.baseline, os.X_OK):
        sys.exit(f"no shoal binary at {args.baseline} (--baseline)")
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: scripts/install-deps.sh installs it")
    print(f"shoal {subprocess.run([args.shoal, '--version'], capture_output=True, text=True).stdout.strip()}"
          f" vs {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]};"
          f" {os.cpu_count()} cores")
    only = set(args.only or ["none", "fsync", "memory", "collections", "budget", "keyspace"])  # scaling: asked for
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as workdir:
        if "none" in only:
            throughput_section(args, workdir, False)
        if "fsync" in only:
            throughput_section(args, workdir, True)
        if "memory" in only:
            memory_section(args, workdir)
        if "collections" in only:
            collections_section(args, workdir)
        if "budget" in only:
            budget_section(args, workdir)
        if "keyspace" in only:
            keyspace_section(args, workdir)
        if "scaling" in only:
            scaling_section(args, workdir)


if __name__ == "__main__":
    main()
