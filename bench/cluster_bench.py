#!/usr/bin/env python3
"""Cluster benchmark: a 3-node shoal cluster against a Redis Cluster of 3
masters + 3 replicas, same machine, same run, same redis-benchmark --cluster
parameters. Prints throughput, p50/p99 latency, cluster CPU seconds per 100k
operations (all server processes of one system together) and the shoal/redis
ratio for every line (ops/s from the masters' command counters, sampled while each run
goes on: redis-benchmark's own figure is rounded to its 250 ms timer in cluster mode;
--reported-rate prints that one instead), then failover: the time from kill -9 of the process that
leads a key's slot until a client writing that key every 10 ms gets its first
acknowledged write, and whether the last write acknowledged before the kill
survived (--failover-signal stop: SIGSTOP instead, a process that hangs
with its connections open, resumed with SIGCONT once measured).

  bench/cluster_bench.py --shoal build/release/src/cli/shoal [--quick]

shoal nodes listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (one address per
node), Redis on 127.0.0.1; every process it starts is stopped by PID.

On a machine with cores to spare, --pin K gives each of three "machines" K
cores of its own: shoal node i runs on machine i's cores (with one worker per
core), Redis Cluster's master i and the replica of another master share
machine i's cores, and redis-benchmark runs on the cores left over (at least
one). Without --pin every process may run on every core."""
import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TESTS = ["set", "get"]
PIPELINES = [1, 16]
CLIENTS = 50
SHOAL_HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
REDIS_NODES = 6
WRITE_INTERVAL = 0.010
STOPPED_TIMEOUT = 0.05  # the failover writer's socket timeout after a SIGSTOP
VERB = {"kill": "killed", "stop": "stopped"}
FAILOVER_TAG = "{fo}"  # both failover keys share this hash tag, hence one slot


class Failed(Exception):
    """A system could not be started or measured; the message says why."""


_taken_ports = set()


def pinned(cpus):
    """A preexec_fn that runs the child (and every thread it starts) on `cpus`."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def machines(args):
    """--pin K: ([cores of machine 0, 1, 2], the client's cores), or (None, None)."""
    if not args.pin:
        return None, None
    usable = sorted(os.sched_getaffinity(0))
    k = args.pin
    if 3 * k + 1 > len(usable):
        sys.exit(f"--pin {k} needs {3 * k + 1} cores (3 machines of {k} and one for redis-benchmark); "
                 f"this process may use {len(usable)}")
    return [usable[i * k:(i + 1) * k] for i in range(3)], usable[3 * k:]


def free_port(host="127.0.0.1"):
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def crc16(data):
    """CRC16-CCITT (XModem), the Redis Cluster key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    k = key.encode()
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1:end]
    return crc16(k) % 16384


class RespError(Exception):
    pass


class Resp:
    """Minimal RESP2 client: one connection, one command at a time."""

    def __init__(self, host, port, timeout=2.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def call(self, *args):
        out = bytearray(b"*%d\r\n" % len(args))
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()

    def _read(self):
        line = self.rfile.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rfile.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed")
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"bad reply {line!r}")

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass


def call(host, port, *args, timeout=2.0):
    conn = Resp(host, port, timeout)
    try:
        return conn.call(*args)
    finally:
        conn.close()


def info_fields(text):
    out = {}
    for line in (text or "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


class Node:
    """One server process, started and stopped by PID; waits for PING."""

    def __init__(self, name, argv, host, port, workdir, cpus=None):
        self.name, self.host, self.port = name, host, port
        self.cpus = cpus
        self.log_path = os.path.join(workdir, f"{name}.log")
        k = 1
        while os.path.exists(self.log_path):  # a later round: keep the earlier log
            k += 1
            self.log_path = os.path.join(workdir, f"{name}-round{k}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=pinned(cpus))

    def pin(self, cpus):
        """Moves every thread of the running process onto `cpus`."""
        self.cpus = cpus
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:  # a thread that just ended
                pass

    def wait_ping(self, timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"{self.name} exited early with status {self.proc.returncode}\n"
                             + self.tail())
            try:
                if call(self.host, self.port, "PING") == "PONG":
                    return
            except (OSError, RespError) as e:
                last = e
            time.sleep(0.1)
        raise Failed(f"{self.name} did not answer PING within {timeout} s ({last})\n" + self.tail())

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)

    def freeze(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()

    def tail(self, lines=20):
        self.log.flush()
        try:
            with open(self.log_path, errors="replace") as f:
                text = f.readlines()[-lines:]
        except OSError:
            text = []
        return f"--- last {len(text)} lines of {self.log_path} ({self.addr}, pid {self.pid}):\n" + \
            "".join("    " + t for t in text)


class Cluster:
    name = "?"

    def __init__(self):
        self.nodes = []  # every node start() launched, appended before anything can fail
        self.describe = None

    @property
    def entry(self):
        return self.nodes[0]

    def pids(self):
        return [n.pid for n in self.nodes if n.alive()]

    def cpu(self):
        return sum(cpu_seconds(pid) for pid in self.pids())

    def node_at(self, host, port):
        for n in self.nodes:
            if n.port == int(port) and (n.host == host or host in ("", None)):
                return n
        for n in self.nodes:  # an address we did not bind to explicitly (e.g. a hostname)
            if n.port == int(port):
                return n
        return None

    def tails(self):
        return "\n".join(n.tail() for n in self.nodes)

    def stop(self):
        for n in self.nodes:
            try:
                n.stop()
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping {n.name} (pid {n.pid}): {e}", file=sys.stderr)


class RedisCluster(Cluster):
    name = "redis"

    def start(self, workdir, args):
        self.describe = (f"Redis Cluster, 3 masters + 3 replicas, cluster-node-timeout "
                         f"{args.node_timeout} ms, appendonly "
                         + ("no" if args.redis_appendfsync == "none"
                            else f"yes appendfsync {args.redis_appendfsync}"))
        for i in range(REDIS_NODES):
            port, bus = free_port(), free_port()
            d = tempfile.mkdtemp(dir=workdir, prefix=f"redis{i}-")
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                    "--daemonize", "no", "--save", "", "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus),
                    "--cluster-node-timeout", str(args.node_timeout)]
            argv += (["--appendonly", "no"] if args.redis_appendfsync == "none"
                     else ["--appendonly", "yes", "--appendfsync", args.redis_appendfsync])
            cores, _ = machines(args)
            self.nodes.append(Node(f"redis{i}", argv, "127.0.0.1", port, workdir,
                                   cpus=cores[i % 3] if cores else None))
        for n in self.nodes:
            n.wait_ping()
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *[n.addr for n in self.nodes],
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=120)
        if create.returncode != 0:
            raise Failed(f"redis-cli --cluster create failed ({create.returncode}):\n"
                         f"{create.stdout[-3000:]}{create.stderr[-2000:]}")
        self.wait_ready(args.ready_timeout)
        cores, _ = machines(args)
        if cores:
            # Each machine: one master and the replica of another machine's master.
            machine_of = {n.port: i % 3 for i, n in enumerate(self.nodes)}
            for n in self.nodes:
                rep = info_fields(call(n.host, n.port, "INFO", "replication"))
                if rep.get("role") == "slave":
                    m = machine_of[int(rep["master_port"])]
                    machine_of[n.port] = (m + 1) % 3
                    n.pin(cores[(m + 1) % 3])
            masters = sorted(machine_of[n.port] for n in self.nodes
                             if info_fields(call(n.host, n.port, "INFO", "replication")).get("role") == "master")
            if masters != [0, 1, 2]:
                raise Failed(f"Redis Cluster's masters are not one per machine: {masters}")
            self.describe += f"; pinned: machines of {args.pin} cores each, a master and a replica on each"

    def wait_ready(self, timeout):
        """cluster_state:ok on all six and every replica's link to its master up."""
        deadline = time.time() + timeout
        state = {}
        while time.time() < deadline:
            state = {}
            for n in self.nodes:
                try:
                    ci = info_fields(call(n.host, n.port, "CLUSTER", "INFO"))
                    rep = info_fields(call(n.host, n.port, "INFO", "replication"))
                    state[n.name] = (ci.get("cluster_state"), rep.get("role"),
                                     rep.get("master_link_status"), ci.get("cluster_known_nodes"))
                except (OSError, RespError) as e:
                    state[n.name] = (str(e),)
            ok = all(s[0] == "ok" and s[3] == str(REDIS_NODES) and
                     (s[1] == "master" or s[2] == "up") for s in state.values())
            roles = [s[1] for s in state.values() if len(s) > 1]
            if ok and roles.count("master") == 3 and roles.count("slave") == 3:
                return
            time.sleep(0.2)
        raise Failed(f"Redis Cluster not ready within {timeout} s: {state}\n" + self.tails())

    def slot_owner(self, slot):
        for start, end, master, *_ in call(self.entry.host, self.entry.port, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self.node_at(master[0], master[1])
        return None


class ShoalCluster(Cluster):
    name = "shoal"

    def start(self, workdir, args):
        self.describe = (f"shoal, 3 nodes on {', '.join(SHOAL_HOSTS)}, --durability "
                         f"{args.shoal_durability}"
                         + (f" --shards {args.shards}" if args.shards else " (default shards)")
                         + (f" --replicas {args.replicas}" if args.replicas else " (default replicas)")
                         + (f"; pinned: node i on machine i's {args.pin} cores" if args.pin else ""))
        join = None
        self.ready_timeout = args.ready_timeout
        deadline = time.time() + args.ready_timeout  # from the first start to ready
        for i, host in enumerate(SHOAL_HOSTS):
            port, peer = free_port(host), free_port(host)
            d = tempfile.mkdtemp(dir=workdir, prefix=f"shoal{i}-")
            argv = [args.shoal, "server", "--bind", host, "--port", str(port), "--peer-port",
                    str(peer), "--dir", d, "--durability", args.shoal_durability]
            if join:
                argv += ["--join", join]
            if args.shards:
                argv += ["--shards", str(args.shards)]
            if args.replicas:
                argv += ["--replicas", str(args.replicas)]
            if args.workers:
                argv += ["--workers", str(args.workers)]
            cores, _ = machines(args)
            node = Node(f"shoal{i}", argv, host, port, workdir, cpus=cores[i] if cores else None)
            node.argv = argv
            self.nodes.append(node)
            node.wait_ping()
            if join is None:
                join = f"{host}:{peer if args.join_via == 'peer' else port}"
            self.wait_known(node, i + 1, deadline)  # one join at a time
        self.wait_ready(deadline)

    def wait_known(self, node, count, deadline):
        known = None
        while time.time() < deadline:
            if not node.alive():
                raise Failed(f"{node.name} exited with status {node.proc.returncode} while "
                             f"joining\n" + self.tails())
            try:
                known = info_fields(call(node.host, node.port, "CLUSTER", "INFO")).get(
                    "cluster_known_nodes")
                if known is not None and int(known) >= count:
                    return
            except (OSError, RespError, ValueError) as e:
                known = str(e)
            time.sleep(0.1)
        raise Failed(f"{node.name} did not see {count} known nodes within {self.ready_timeout} s "
                     f"(cluster_known_nodes: {known})\n" + self.tails())

    def wait_ready(self, deadline):
        """cluster_state:ok, shoal_shards_replicated == shoal_shards and all 3 nodes known,
        on every node, and every node leading shards (the placement driver spreads
        leaders right after replication; redis-benchmark needs them spread)."""
        state = {}
        while time.time() < deadline:
            state = {}
            for n in self.nodes:
                if not n.alive():
                    raise Failed(f"{n.name} exited with status {n.proc.returncode} while the "
                                 f"cluster formed\n" + self.tails())
                try:
                    ci = info_fields(call(n.host, n.port, "CLUSTER", "INFO"))
                    state[n.name] = (ci.get("cluster_state"), ci.get("shoal_shards_replicated"),
                                     ci.get("shoal_shards"), ci.get("cluster_known_nodes"),
                                     ci.get("shoal_leaders_here", "0"))
                except (OSError, RespError) as e:
                    state[n.name] = (str(e),)
            if all(len(s) == 5 and s[0] == "ok" and s[1] is not None and s[1] == s[2]
                   and s[3] == str(len(self.nodes)) and s[4] != "0" for s in state.values()):
                return
            time.sleep(0.2)
        lines = [f"  {name}: " + (f"cluster_state:{s[0]} shoal_shards_replicated:{s[1]} "
                                  f"shoal_shards:{s[2]} cluster_known_nodes:{s[3]}"
                                  + f" shoal_leaders_here:{s[4]}"
                                  if len(s) == 5 else s[0])
                 for name, s in state.items()]
        raise Failed(f"shoal cluster not ready within {self.ready_timeout} s of the first start "
                     f"(needs cluster_state:ok, shoal_shards_replicated == shoal_shards and "
                     f"cluster_known_nodes:"
                     f"{len(self.nodes)} on every node):\n"
                     + "\n".join(lines) + "\ncommand lines:\n"
                     + "\n".join("  " + " ".join(n.argv) for n in self.nodes) + "\n" + self.tails())

    def slot_owner(self, slot):
        """The node that leads the slot: first address of its CLUSTER SLOTS entry."""
        for n in self.nodes:
            if not n.alive():
                continue
            try:
                for start, end, master, *_ in call(n.host, n.port, "CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return self.node_at(master[0], master[1])
            except (OSError, RespError, ValueError, TypeError, IndexError):
                continue
        return None


def thread_stats(pids):
    """{thread name: [cpu ticks, voluntary switches, involuntary switches]} summed over the
    threads of every process in pids (shoal names its threads: shoal-w0, shoal-peers, ...)."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
            except (FileNotFoundError, ProcessLookupError):
                continue
            a = out.setdefault(name, [0, 0, 0])
            a[0] += int(fields[11]) + int(fields[12])
            a[1] += int(status.get("voluntary_ctxt_switches", "0"))
            a[2] += int(status.get("nonvoluntary_ctxt_switches", "0"))
    return out


def thread_lines(before, after, ops):
    """Per thread name: CPU microseconds and context switches per operation."""
    ticks = os.sysconf("SC_CLK_TCK")
    lines, total = [], [0.0, 0.0, 0.0]
    for name in sorted(after):
        d = [after[name][i] - before.get(name, [0, 0, 0])[i] for i in range(3)]
        if d[0] == 0 and d[1] == 0:
            continue
        us = d[0] / ticks * 1e6 / ops
        total = [total[0] + us, total[1] + d[1] / ops, total[2] + d[2] / ops]
        lines.append(f"      {name:<16} cpu {us:8.1f} us/op  switches {d[1] / ops:6.2f} + {d[2] / ops:5.2f} forced /op")
    lines.append(f"      {'all threads':<16} cpu {total[0]:8.1f} us/op  switches {total[1]:6.2f} + {total[2]:5.2f} forced /op")
    return lines


class Progress:
    """The commands the cluster's masters have processed (INFO stats), sampled every few
    milliseconds while a redis-benchmark run goes on. redis-benchmark --cluster runs a
    thread per master, and threaded it notices that the last reply came only on its
    250 ms timer: the duration it measures, hence the ops/s it prints, is rounded up
    to that grid (up to 12 % off in a 2-second run, for either system). The rate
    between 5 % and 95 % of the run's requests, from these samples, is not."""

    def __init__(self, cluster):
        self.conns = []
        for n in cluster.nodes:
            if not n.alive():
                continue
            conn = Resp(n.host, n.port)
            if info_fields(conn.call("INFO", "replication")).get("role") == "master":
                self.conns.append(conn)
            else:
                conn.close()
        self.samples = []
        self.polls = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def total(self):
        """The masters' commands, less this sampler's own INFO calls."""
        total = sum(int(info_fields(c.call("INFO", "stats")).get("total_commands_processed", 0))
                    for c in self.conns)
        self.polls += 1
        return total - (self.polls - 1) * len(self.conns)

    def _loop(self):
        while not self.stopping.is_set():
            try:
                self.samples.append((time.monotonic(), self.total()))
            except (OSError, RespError, ConnectionError, ValueError):
                return  # a node went away: no rate from these samples
            time.sleep(0.01)

    def __enter__(self):
        self.samples.append((time.monotonic(), self.total()))
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()
        for c in self.conns:
            c.close()

    def rate(self, requests):
        """ops/s between 5 % and 95 % of `requests` past the first sample, or None."""
        if len(self.samples) < 3:
            return None
        base = self.samples[0][1]

        def crossing(count):
            for (t0, c0), (t1, c1) in zip(self.samples, self.samples[1:]):
                if c0 < count <= c1:
                    return t0 + (t1 - t0) * (count - c0) / (c1 - c0)
            return None

        lo, hi = crossing(base + 0.05 * requests), crossing(base + 0.95 * requests)
        if lo is None or hi is None or hi <= lo:
            return None
        return 0.9 * requests / (hi - lo)


def whole_pipelines(requests, clients, pipeline):
    """requests rounded up to whole pipelines for every client: redis-benchmark 7.0 --cluster
    never finishes a run whose last pipeline is partial (seen with -c 1 -P 16 -n 381000,
    against Redis Cluster as against shoal), and prints no result."""
    step = clients * pipeline
    return -(-requests // step) * step


def run_benchmark(cluster, test, pipeline, requests, args):
    """One redis-benchmark --cluster run; returns (ops/s, p50 ms, p99 ms, cluster cpu s per 100k ops,
    per-thread lines or None)."""
    cpu0 = cluster.cpu()
    threads0 = thread_stats(cluster.pids()) if args.threads else None
    argv = ["redis-benchmark", "--cluster", "-h", cluster.entry.host, "-p", str(cluster.entry.port),
            "-c", str(args.clients), "-n", str(requests), "-P", str(pipeline), "-t", test,
            "-r", "100000", "-d", str(args.data_size), "--csv"]
    if args.bench_threads:
        argv += ["--threads", str(args.bench_threads)]
    try:
        with Progress(cluster) as progress:
            run = subprocess.run(argv, capture_output=True, text=True, timeout=args.run_timeout,
                                 preexec_fn=pinned(machines(args)[1]))
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(argv)} ran past {args.run_timeout} s") from None
    cpu = cluster.cpu() - cpu0
    threads = thread_lines(threads0, thread_stats(cluster.pids()), requests) if args.threads else None
    for line in run.stdout.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if len(cols) >= 7 and cols[0] != "test":
            measured = progress.rate(requests)
            if args.reported_rate or measured is None:
                measured = float(cols[1])
            return measured, float(cols[4]), float(cols[6]), cpu / requests * 100000, threads
    msg = (f"no result from redis-benchmark for {cluster.name} {test} (exit {run.returncode}):\n"
           f"  {' '.join(argv)}\nstdout: {run.stdout[-2000:]!r}\nstderr: {run.stderr[-2000:]!r}")
    if isinstance(cluster, ShoalCluster):
        # redis-benchmark --cluster reads CLUSTER NODES (masters with slots; it refuses a
        # cluster with fewer than two), then CLUSTER SLOTS after a MOVED.
        try:
            msg += "\nCLUSTER NODES from the entry node:\n" + \
                str(call(cluster.entry.host, cluster.entry.port, "CLUSTER", "NODES"))
        except (OSError, RespError) as e:
            msg += f"\nCLUSTER NODES failed: {e}"
    raise Failed(msg)


class SlotWriter:
    """Writes keys of one slot the way a cluster client does: follows MOVED, refreshes the
    slot map from any node that answers when a write fails, reconnects."""

    def __init__(self, cluster, slot, timeout):
        self.cluster, self.slot, self.timeout = cluster, slot, timeout
        self.conn = None
        self.target = None
        self.last_error = None

    def _disconnect(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def refresh(self):
        # The node that just failed is asked last, as cluster clients do: a
        # stopped process would hold each question for the whole timeout.
        nodes = sorted(self.cluster.nodes, key=lambda n: (n.host, n.port) == self.target)
        for n in nodes:
            try:
                for start, end, master, *_ in call(n.host, n.port, "CLUSTER", "SLOTS",
                                                   timeout=self.timeout):
                    if start <= self.slot <= end:
                        if (master[0] or n.host, int(master[1])) != self.target:
                            self._disconnect()
                            self.target = (master[0] or n.host, int(master[1]))
                        return True
            except (OSError, RespError, ValueError, TypeError, IndexError):
                continue  # dead, or a reply this client does not understand: ask the next node
        return False

    def command(self, *args):
        """One attempt; returns (True, reply) or (False, error text)."""
        try:
            if self.target is None and not self.refresh():
                return False, "no node answered CLUSTER SLOTS"
            if self.conn is None:
                self.conn = Resp(*self.target, timeout=self.timeout)
            return True, self.conn.call(*args)
        except RespError as e:
            err = str(e)
            if err.startswith("MOVED"):
                host, port = err.split()[2].rsplit(":", 1)
                self._disconnect()
                self.target = (host or self.target[0], int(port))
            else:
                self.refresh()
            return False, err
        except OSError as e:
            self._disconnect()
            self.refresh()
            return False, f"{type(e).__name__}: {e}"


def measure_failover(cluster, args):
    """kill -9 (or SIGSTOP) the node leading FAILOVER_TAG's slot while writing it every 10 ms."""
    key, probe = f"{FAILOVER_TAG}:last", f"{FAILOVER_TAG}:probe"
    slot = key_slot(key)
    victim = cluster.slot_owner(slot)
    if victim is None:
        raise Failed(f"{cluster.name}: no node owns slot {slot} in CLUSTER SLOTS")
    # A stopped leader answers nothing and closes nothing: the writer's
    # timeout bounds how soon it gives up on it, so it is short there (and
    # the figure's resolution is about two of them).
    writer = SlotWriter(cluster, slot, timeout=1.0 if args.failover_signal == "kill" else STOPPED_TIMEOUT)
    # Steady state first: 100 consecutive acknowledged writes (about a second).
    acked, streak, deadline = None, 0, time.time() + 20
    i = 0
    while streak < 100:
        if time.time() > deadline:
            raise Failed(f"{cluster.name}: writes to slot {slot} did not succeed before the kill "
                         f"(last error: {writer.last_error})")
        i += 1
        ok, reply = writer.command("SET", key, i)
        if ok and reply == "OK":
            acked, streak = i, streak + 1
        else:
            writer.last_error, streak = reply, 0
        time.sleep(WRITE_INTERVAL)
    # The node that acknowledged them is the one to kill (the slot's owner at this moment).
    victim = cluster.node_at(*writer.target) or victim
    t0 = time.monotonic()
    if args.failover_signal == "kill":
        victim.kill9()
    else:
        victim.freeze()
    try:
        return _after_failure(writer, victim, key, probe, slot, acked, i, t0, args)
    finally:
        victim.thaw()  # a stopped process resumes, to be stopped by SIGTERM with the rest


def _after_failure(writer, victim, key, probe, slot, acked, i, t0, args):
    """Writes every 10 ms from t0 until one is acknowledged, then checks the last one
    acknowledged before the failure."""
    failed, errors, recovered = 0, {}, None
    while time.monotonic() - t0 < args.failover_timeout:
        tick = time.monotonic()
        i += 1
        ok, reply = writer.command("SET", probe, i)
        if ok and reply == "OK":
            recovered = time.monotonic() - t0
            break
        failed += 1
        reason = str(reply).split(":")[0].split(" ")[0]
        errors[reason] = errors.get(reason, 0) + 1
        time.sleep(max(0.0, WRITE_INTERVAL - (time.monotonic() - tick)))
    kept = None
    if recovered is not None:
        for _ in range(100):
            ok, reply = writer.command("GET", key)
            if ok:
                kept = reply == str(acked)
                break
            time.sleep(WRITE_INTERVAL)
    return {"seconds": recovered, "victim": victim, "slot": slot,
            "failed": failed, "errors": errors, "kept": kept, "acked": acked,
            "new_target": writer.target}


def shoal_elections(cluster):
    """Campaigns started so far by the replicas on every live shoal node (INFO raft)."""
    total = 0
    for n in cluster.nodes:
        if n.alive():
            total += int(info_fields(call(n.host, n.port, "INFO", "raft")).get("elections_started", 0))
    return total


def run_system(system, workdir, args):
    """Start one cluster, benchmark it, fail it over, stop it; returns its results."""
    out = {"throughput": {}, "failover": None, "describe": None, "errors": []}
    print(f"\n-- {system}: starting", flush=True)
    t = time.time()
    cluster = RedisCluster() if system == "redis" else ShoalCluster()
    try:
        cluster.start(workdir, args)
        out["describe"] = cluster.describe
        print(f"   {cluster.describe}: ready in {time.time() - t:.1f} s; pids "
              f"{' '.join(str(p) for p in cluster.pids())}", flush=True)
        if "throughput" in args.only:
            elections_before = shoal_elections(cluster) if system == "shoal" else None
            for p in PIPELINES:
                for test in TESTS:  # set first, so that get finds keys
                    n = whole_pipelines(args.requests * (4 if p > 1 else 1), args.clients, p)
                    try:
                        r = run_benchmark(cluster, test, p, n, args)
                        if n / r[0] < args.min_seconds:
                            # redis-benchmark --cluster (threaded) ends runs on a 250 ms tick, so a
                            # short run understates ops/s; rerun long enough to make that small.
                            n = whole_pipelines(int(n * 1.2 * args.min_seconds / (n / r[0]) // 1000 * 1000 + 1000),
                                                args.clients, p)
                            r = run_benchmark(cluster, test, p, n, args)
                    except Failed as e:  # keep going: the other lines and failover still tell something
                        out["errors"].append(str(e))
                        print(f"!! {system} {test} -P {p}: {e}", file=sys.stderr, flush=True)
                        continue
                    out["throughput"][(test, p)] = r
                    print(f"   {test:<4} -P {p:<2} -n {n:<8} {r[0]:>12.0f} ops/s  p50 {r[1]:.3f}  "
                          f"p99 {r[2]:.3f}  cpu/100k {r[3]:.3f}", flush=True)
                    if r[4]:
                        print("\n".join(r[4]), flush=True)
            if elections_before is not None:
                # Under load no leader should lose its followers' trust: any
                # campaign here is a spurious election.
                print(f"   elections started during the runs (all nodes): "
                      f"{shoal_elections(cluster) - elections_before}", flush=True)
        if "failover" in args.only:
            try:
                fo = measure_failover(cluster, args)
            except Failed as e:
                out["errors"].append(str(e))
                print(f"!! {system} failover: {e}", file=sys.stderr, flush=True)
                return out
            out["failover"] = fo
            when = f"{fo['seconds']:.2f} s" if fo["seconds"] is not None else \
                f"no write acknowledged within {args.failover_timeout} s"
            print(f"   failover: {VERB[args.failover_signal]} {fo['victim'].name} ({fo['victim'].addr}); {when}", flush=True)
    finally:
        cluster.stop()
    return out


def fmt_row(r):
    return f"{r[0]:>12.0f}{r[1]:>7.3f}{r[2]:>7.3f}{r[3]:>9.3f}" if r else f"{'-':>12}{'-':>7}{'-':>7}{'-':>9}"


def print_report(args, rounds_out, systems):
    def med(system, key):
        vals = [r[system]["throughput"][key] for r in rounds_out
                if system in r and key in r[system]["throughput"]]
        return [statistics.median(v[i] for v in vals) for i in range(4)] if vals else None

    if "throughput" in args.only:
        print(f"\n== throughput: redis-benchmark --cluster -c {args.clients} -r 100000 "
              f"-d {args.data_size}, median of {args.rounds} round(s)")
        for s in systems:
            desc = next((r[s]["describe"] for r in rounds_out if s in r and r[s]["describe"]), None)
            print(f"   {s}: {desc or 'not measured'}")
        print(f"{'test':<5}{'P':>3} | {'shoal ops/s':>12}{'p50':>7}{'p99':>7}{'cpu/100k':>9} | "
              f"{'redis ops/s':>12}{'p50':>7}{'p99':>7}{'cpu/100k':>9} | {'ratio':>6}{'cpu ratio':>10}")
        for p in PIPELINES:
            for test in TESTS:
                s, r = med("shoal", (test, p)), med("redis", (test, p))
                ratio = f"{s[0] / r[0]:>6.2f}" if s and r and r[0] else f"{'-':>6}"
                cpu_ratio = f"{r[3] / s[3]:>10.2f}" if s and r and s[3] else f"{'-':>10}"
                print(f"{test:<5}{p:>3} | {fmt_row(s)} | {fmt_row(r)} | {ratio}{cpu_ratio}")
        print("ratio = shoal ops/s / redis ops/s; cpu ratio = redis cpu / shoal cpu "
              "(cluster-wide; >= 1.0: shoal at least as good)")

    if "failover" in args.only:
        how = "kill -9" if args.failover_signal == "kill" else \
            f"SIGSTOP (the writer's timeout {STOPPED_TIMEOUT * 1000:.0f} ms)"
        print(f"\n== failover: {how} the node leading slot {key_slot(FAILOVER_TAG)} (keys "
              f"{FAILOVER_TAG}:*) while writing it every {WRITE_INTERVAL * 1000:.0f} ms; time from the "
              f"signal to the first acknowledged write (bounded at {args.failover_timeout} s)")
        times = {}
        for s in systems:
            for k, r in enumerate(rounds_out):
                fo = r.get(s, {}).get("failover")
                if not fo:
                    print(f"{s:<6} round {k + 1}: not measured")
                    continue
                if fo["seconds"] is not None:
                    times.setdefault(s, []).append(fo["seconds"])
                when = f"{fo['seconds']:7.2f} s" if fo["seconds"] is not None else "  timeout"
                kept = {True: "kept", False: "LOST", None: "not checked"}[fo["kept"]]
                errs = ", ".join(f"{e} x{c}" for e, c in sorted(fo["errors"].items(), key=lambda x: -x[1]))
                extra = f" (cluster-node-timeout {args.node_timeout} ms)" if s == "redis" else ""
                to = "{}:{}".format(*fo["new_target"])
                print(f"{s:<6} round {k + 1}: {when}{extra}; {VERB[args.failover_signal]} {fo['victim'].name} "
                      f"{fo['victim'].addr}, writes then went to {to}; "
                      f"{fo['failed']} failed attempts ({errs or 'none'}); last write acknowledged "
                      f"before the {args.failover_signal} (value {fo['acked']}): {kept}")
        for s in systems:
            if s in times:
                t = sorted(times[s])
                print(f"{s}: median {statistics.median(t):.3f} s over {len(t)} {args.failover_signal}(s) "
                      f"(min {t[0]:.3f}, max {t[-1]:.3f})")
        if "shoal" in times and "redis" in times:
            sm, rm = statistics.median(times["shoal"]), statistics.median(times["redis"])
            print(f"median: shoal {sm:.2f} s, redis {rm:.2f} s, ratio redis/shoal "
                  f"{rm / sm if sm else float('inf'):.2f} (>= 1.0: shoal recovers at least as fast)")


def machine_line(args, systems):
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 2**20:.1f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    print(f"machine: {usable} cores usable ({os.cpu_count()} online), {model}{mem}, "
          f"{platform.system()} {platform.release()}")

    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"? ({e})"
    if "shoal" in systems:
        print(f"shoal: {version([args.shoal, '--version'])} ({args.shoal})")
    print(f"redis: {version(['redis-server', '--version'])}")
    print(f"redis-benchmark: {version(['redis-benchmark', '--version'])}; python {platform.python_version()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shoal", default="build/release/src/cli/shoal")
    ap.add_argument("--rounds", type=int, default=1,
                    help="fresh clusters each round, alternating which system goes first")
    ap.add_argument("--requests", type=int, default=200000, help="requests per test at -P 1 (x4 at -P 16)")
    ap.add_argument("--clients", type=int, default=CLIENTS)
    ap.add_argument("--data-size", type=int, default=100, help="redis-benchmark -d")
    ap.add_argument("--reported-rate", action="store_true",
                    help="ops/s as redis-benchmark prints them (rounded to its 250 ms timer), not "
                         "from the masters' command counters")
    ap.add_argument("--min-seconds", type=float, default=5.0,
                    help="a run shorter than this is repeated with more requests (quick: 2)")
    ap.add_argument("--bench-threads", type=int, default=None,
                    help="redis-benchmark --threads (default: its own, one per master)")
    ap.add_argument("--workers", type=int, default=None, help="shoal --workers")
    ap.add_argument("--shards", type=int, default=None, help="shoal --shards (default: shoal's, 16)")
    ap.add_argument("--replicas", type=int, default=None, help="shoal --replicas (default: shoal's, 3)")
    ap.add_argument("--shoal-durability", choices=["fsync", "none"], default="fsync")
    ap.add_argument("--join-via", choices=["client", "peer"], default="client",
                    help="which port of the first node --join names (default: its client port)")
    ap.add_argument("--redis-appendfsync", choices=["none", "everysec", "always"], default="none",
                    help="none: appendonly no (default); otherwise appendonly yes with this fsync")
    ap.add_argument("--node-timeout", type=int, default=15000, help="Redis cluster-node-timeout, ms")
    ap.add_argument("--ready-timeout", type=int, default=60, help="seconds for a cluster to become ready")
    ap.add_argument("--failover-timeout", type=float, default=40.0,
                    help="seconds to wait for the first write after the kill")
    ap.add_argument("--failover-signal", choices=["kill", "stop"], default="kill",
                    help="kill: kill -9 the slot's leader (default); stop: SIGSTOP it (SIGCONT after)")
    ap.add_argument("--run-timeout", type=int, default=600, help="seconds for one redis-benchmark run")
    ap.add_argument("--systems", choices=["shoal", "redis"], action="append",
                    help="measure only this system (repeatable; default both)")
    ap.add_argument("--only", choices=["throughput", "failover"], action="append")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy every server's log into DIR at the end")
    ap.add_argument("--quick", action="store_true", help="50k requests at -P 1, 1 round")
    ap.add_argument("--pin", type=int, default=0, metavar="K",
                    help="three machines of K cores each, redis-benchmark on the cores left (see above)")
    ap.add_argument("--threads", action="store_true",
                    help="after each run, CPU and context switches per operation by thread name")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.requests, args.min_seconds = 1, 50000, min(args.min_seconds, 2.0)
    args.only = set(args.only or ["throughput", "failover"])
    systems = [s for s in ("shoal", "redis") if s in set(args.systems or ["shoal", "redis"])]
    if "shoal" in systems and not os.access(args.shoal, os.X_OK):
        sys.exit(f"no shoal binary at {args.shoal}: cmake --preset release && cmake --build build/release "
                 f"(or --systems redis to measure Redis Cluster alone)")
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: scripts/install-deps.sh installs it")
    if "shoal" in systems:
        for host in SHOAL_HOSTS:
            try:
                free_port(host)
            except OSError as e:
                sys.exit(f"cannot bind {host}: {e} (shoal nodes need 127.0.0.1-3 on the loopback)")

    # SIGTERM/SIGHUP unwind through the finally blocks that stop the servers.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    machine_line(args, systems)
    cores, client = machines(args)
    if cores:
        print(f"pinned: machines on cores {cores}, redis-benchmark on {client}")
    start = time.time()
    rounds_out, failures = [], []
    with tempfile.TemporaryDirectory(prefix="shoal-cluster-bench-") as workdir:
        for k in range(args.rounds):
            order = systems if k % 2 == 0 else list(reversed(systems))
            this = {}
            for system in order:
                try:
                    this[system] = run_system(system, workdir, args)
                    if this[system]["errors"]:
                        failures.append(system)
                except Failed as e:
                    print(f"\n!! {system} failed in round {k + 1}:\n{e}", file=sys.stderr, flush=True)
                    failures.append(system)
            rounds_out.append(this)
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            for name in os.listdir(workdir):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(workdir, name), args.keep_logs)
    print_report(args, rounds_out, systems)
    print(f"\ntotal {time.time() - start:.0f} s")
    if failures:
        sys.exit(f"failed: {', '.join(sorted(set(failures)))} (see above)")


if __name__ == "__main__":
    main()
