"""Multi-node shoal clusters for the integration tests, and the client
workloads the fault tests run against them.

Addresses: node i binds 127.0.0.(i + 2) (client port and peer port both on
that address, picked free by binding there). 127.0.0.1 is left to the test
clients: a loopback connection from an unbound socket has source address
127.0.0.1, so the iptables rules that cut node addresses apart never cut the
test off from any node (the partition test must still reach the isolated
node to see that it stops serving).

Every wait is bounded in iterations and in time; every process is stopped by
PID at teardown (SIGCONT first for paused ones, SIGTERM, SIGKILL after a
timeout); every iptables rule added is removed at teardown (and at exit).
Node logs are ``<tmp>/node<i>.log``; teardown prints their tails (pytest shows
them when the test failed).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from conftest import (SHOAL_BIN, SKIP_NO_SHOAL, WORKERS, ConnectionClosed, RespConn, RespError,
                      RespProtocolError, ServerProcess, encode_command)
from linearizability import READ, WRITE, History

try:  # python3-redis
    import redis
    from redis.cluster import ClusterNode as _RCNode
    from redis.cluster import RedisCluster
    from redis.crc import key_slot as _key_slot
except ImportError:  # pragma: no cover - Debian's python3-redis is a test dependency
    redis = None

HASH_SLOTS = 16384
IP_BASE = 2                     # node i binds 127.0.0.(i + IP_BASE)
READY_TIMEOUT_S = float(os.environ.get("SHOAL_CLUSTER_READY_TIMEOUT", "60"))
STOP_TIMEOUT_S = 15.0
CLUSTER_WORKERS = int(os.environ.get("SHOAL_CLUSTER_WORKERS", str(WORKERS)))
IPTABLES = shutil.which("iptables")
RULE_TAG = f"shoal-test-{os.getpid()}"

NET_ERRORS = (OSError, ConnectionClosed, RespProtocolError)


def node_ip(i: int) -> str:
    return f"127.0.0.{i + IP_BASE}"


def free_ports_on(ip: str, count: int = 1) -> List[int]:
    """``count`` distinct free TCP ports on ``ip`` (held open together while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((ip, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def key_slot(key) -> int:
    if isinstance(key, str):
        key = key.encode()
    return _key_slot(key)


_SLOT_KEYS: Optional[List[str]] = None


def key_for_every_slot(prefix: str = "s") -> List[str]:
    """A list of 16384 keys, the i-th hashing to slot i (computed once)."""
    global _SLOT_KEYS
    if _SLOT_KEYS is not None and _SLOT_KEYS[0].startswith(prefix + ":"):
        return _SLOT_KEYS
    keys: List[Optional[str]] = [None] * HASH_SLOTS
    missing = HASH_SLOTS
    for n in range(5_000_000):
        k = f"{prefix}:{n}"
        s = key_slot(k)
        if keys[s] is None:
            keys[s] = k
            missing -= 1
            if missing == 0:
                break
    assert missing == 0
    _SLOT_KEYS = keys  # type: ignore[assignment]
    return _SLOT_KEYS  # type: ignore[return-value]


def parse_info(text) -> Dict[str, str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = {}
    for line in str(text).splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        out[k] = v
    return out


def _s(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


# --------------------------------------------------------------------------
# SHOAL.ADMIN STATUS
# --------------------------------------------------------------------------

NO_LEADER = "0" * 16


class NodeStatus:
    """One ``node <id> <host:port> <state> replicas N leaders N bytes N ops-per-sec N[
    meta-voter]`` line (bytes held by its replicas, operations per second served
    by the shards it leads)."""

    def __init__(self, node_id: str, addr: str, state: str, replicas: int, leaders: int,
                 meta_voter: bool, nbytes: int = 0, ops_per_sec: int = 0):
        self.id, self.addr, self.state = node_id, addr, state
        self.replicas, self.leaders, self.meta_voter = replicas, leaders, meta_voter
        self.bytes, self.ops_per_sec = nbytes, ops_per_sec

    def __repr__(self):
        return (f"node {self.id} {self.addr} {self.state} replicas {self.replicas} "
                f"leaders {self.leaders} bytes {self.bytes} ops-per-sec {self.ops_per_sec}"
                f"{' meta-voter' if self.meta_voter else ''}")


class ShardStatus:
    """One ``shard <id> slots a-b leader <id> voters .. learners .. bytes B
    ops-per-sec N[ splitting-into ID][ incarnations id:n,..][ moving-to
    voters .. learners ..| (no leader known)]`` line. ``voters``/``learners``:
    what the shard's leader has (with no leader known: what the metadata
    lists, and ``leader`` None); ``want_*``: where it is moving (= the actual
    sets when it is not moving)."""

    def __init__(self, line: str):
        self.line = line
        t = line.split()
        try:
            assert t[0] == "shard" and t[2] == "slots" and t[4] == "leader", line
            assert t[6] == "voters" and t[8] == "learners", line
            self.id = int(t[1])
            a, b = t[3].split("-")
            self.slots = (int(a), int(b))
            self.leader: Optional[str] = None if t[5] == NO_LEADER else t[5]
            self.voters = _id_list(t[7])
            self.learners = _id_list(t[9])
            rest = t[10:]
            self.bytes = self.ops_per_sec = 0
            if rest and rest[0] == "bytes":
                assert rest[2] == "ops-per-sec", line
                self.bytes, self.ops_per_sec = int(rest[1]), int(rest[3])
                rest = rest[4:]
            self.splitting_into: Optional[int] = None
            if rest and rest[0] == "splitting-into":
                self.splitting_into = int(rest[1])
                rest = rest[2:]
            # node id -> incarnation of its replica (placed after the shard began)
            self.incarnations: Dict[str, int] = {}
            if rest and rest[0] == "incarnations":
                for pair in rest[1].split(","):
                    node, n = pair.split(":")
                    self.incarnations[node] = int(n)
                rest = rest[2:]
            self.leader_known = "(no leader known)" not in line
            self.survivors: List[Tuple[str, int, int]] = []
            self.moving = bool(rest) and rest[0] == "moving-to"
            if self.moving:
                assert rest[1] == "voters" and rest[3] == "learners", line
                self.want_voters, self.want_learners = _id_list(rest[2]), _id_list(rest[4])
            else:
                # with no leader known: the replicas that report none, furthest
                # ahead first, as node:term/index[/rN]
                if rest[3:4] == ["survivors"]:
                    for item in rest[4].split(","):
                        node, pos = item.split(":")
                        term, index = pos.split("/")[:2]
                        self.survivors.append((node, int(term), int(index)))
                    rest = rest[:3]
                assert not rest or " ".join(rest) == "(no leader known)", line
                self.want_voters, self.want_learners = list(self.voters), list(self.learners)
        except (IndexError, ValueError) as e:
            raise AssertionError(f"cannot parse SHOAL.ADMIN STATUS line {line!r}: {e!r}")

    def members(self) -> List[str]:
        """Every node named on the line (voters, learners, and where it moves)."""
        return sorted(set(self.voters + self.learners + self.want_voters + self.want_learners))

    def __repr__(self):
        return self.line


def _id_list(text: str) -> List[str]:
    if text == "-":
        return []
    ids = text.split(",")
    for i in ids:
        assert len(i) == 16 and all(c in "0123456789abcdef" for c in i), f"bad node id {i!r}"
    return ids


class AdminStatus:
    """SHOAL.ADMIN STATUS parsed: ``header`` (cluster, epoch, replication-factor,
    balance, down-after-ms), ``nodes`` {id: NodeStatus} in the order listed,
    ``shards`` [ShardStatus], ``moves_in_flight``."""

    def __init__(self, lines: Sequence):
        self.lines = [_s(x) for x in lines]
        assert self.lines, "SHOAL.ADMIN STATUS: empty reply"
        h = self.lines[0].split()
        assert len(h) == 10 and h[0] == "cluster" and h[2] == "epoch", self.lines[0]
        assert h[4] == "replication-factor" and h[6] == "balance" and h[8] == "down-after-ms", \
            self.lines[0]
        self.cluster_id = h[1]
        self.epoch = int(h[3])
        self.replication_factor = int(h[5])
        self.balance = h[7]
        self.down_after_ms = int(h[9])
        self.nodes: Dict[str, NodeStatus] = {}
        self.shards: List[ShardStatus] = []
        self.moves_in_flight: Optional[int] = None
        # the meta shard's membership as its leader has it, and its recoveries
        self.meta_leader = ""
        self.meta_actual_voters: List[str] = []
        self.meta_actual_learners: List[str] = []
        self.meta_recovery = -1
        self.transfers_sending = self.transfer_bytes_sent = self.transfer_bytes_received = -1
        for ln in self.lines[1:]:
            t = ln.split()
            if t and t[0] == "node":
                assert len(t) in (12, 13) and t[4] == "replicas" and t[6] == "leaders", ln
                assert t[8] == "bytes" and t[10] == "ops-per-sec", ln
                assert len(t) == 12 or t[12] == "meta-voter", ln
                self.nodes[t[1]] = NodeStatus(t[1], t[2], t[3], int(t[5]), int(t[7]), len(t) == 13,
                                              int(t[9]), int(t[11]))
            elif t and t[0] == "shard":
                self.shards.append(ShardStatus(ln))
            elif t and t[0] == "transfers":
                assert len(t) == 7 and t[1] == "sending" and t[3] == "bytes-sent" \
                    and t[5] == "bytes-received", ln
                self.transfers_sending, self.transfer_bytes_sent, self.transfer_bytes_received = \
                    int(t[2]), int(t[4]), int(t[6])
            elif t and t[0] == "meta":
                assert len(t) == 9 and t[1] == "leader" and t[3] == "voters" and t[5] == "learners" \
                    and t[7] == "recovery", ln
                self.meta_leader = t[2]
                self.meta_actual_voters = [] if t[4] == "-" else t[4].split(",")
                self.meta_actual_learners = [] if t[6] == "-" else t[6].split(",")
                self.meta_recovery = int(t[8])
            elif t and t[0] == "moves-in-flight":
                assert len(t) == 2, ln
                self.moves_in_flight = int(t[1])
            else:
                raise AssertionError(f"unexpected SHOAL.ADMIN STATUS line {ln!r}")
        assert self.moves_in_flight is not None, "no moves-in-flight line"
        assert self.meta_recovery >= 0, "no meta line"
        assert self.transfer_bytes_received >= 0, "no transfers line"
        assert self.lines[-1].startswith("moves-in-flight "), self.lines[-1]

    def ids_in(self, *states: str) -> List[str]:
        return [i for i, n in self.nodes.items() if n.state in states]

    def by_addr(self, addr: str) -> Optional[NodeStatus]:
        return next((n for n in self.nodes.values() if n.addr == addr), None)

    def meta_voters(self) -> List[str]:
        return [i for i, n in self.nodes.items() if n.meta_voter]

    def placement_problems(self, voters: Optional[int] = None) -> List[str]:
        """Why placement is not settled and even (empty list: it is): a move in
        flight, a shard without a known leader on an up node, a voter or learner
        on a node not up, fewer than ``voters`` voters (given), or replicas or
        leaders per up node differing by more than one."""
        up = set(self.ids_in("up"))
        out = []
        if self.moves_in_flight != 0:
            out.append(f"moves-in-flight {self.moves_in_flight}")
        for sh in self.shards:
            if sh.moving or not sh.leader_known:
                out.append(f"not settled: {sh}")
            if sh.leader not in up:
                out.append(f"shard {sh.id}: leader {sh.leader} is not an up node")
            off = [x for x in sh.voters + sh.learners if x not in up]
            if off:
                out.append(f"shard {sh.id}: replicas on nodes not up: {off}")
            if voters is not None and len(sh.voters) != voters:
                out.append(f"shard {sh.id}: {len(sh.voters)} voters, not {voters}")
        ups = [self.nodes[i] for i in up]
        if ups:
            for what in ("replicas", "leaders"):
                vals = {n.id: getattr(n, what) for n in ups}
                if max(vals.values()) - min(vals.values()) > 1:
                    out.append(f"{what} per up node differ by more than one: {vals}")
        return out

    def __str__(self):
        return "\n".join(self.lines)


def parse_admin_status(lines: Sequence) -> AdminStatus:
    return AdminStatus(lines)


def is_moved(value) -> bool:
    return isinstance(value, RespError) and value.startswith("MOVED ")


def _iptables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([IPTABLES, "-w", "5", *args], capture_output=True, timeout=30)


def _tagged_rules(tag_prefix: str) -> List[List[str]]:
    """INPUT rules whose comment starts with tag_prefix, as specs for -D."""
    r = _iptables("-S", "INPUT")
    out = []
    for ln in r.stdout.decode(errors="replace").splitlines():
        if ln.startswith("-A ") and tag_prefix in ln:
            out.append([s.strip('"') for s in ln.split()[1:]])
    return out


def remove_stale_rules() -> None:
    """Delete rules left by earlier test processes that died without healing
    (their tag names a PID that no longer exists)."""
    if not IPTABLES or os.geteuid() != 0:
        return
    for spec in _tagged_rules("shoal-test-"):
        tag = next((x for x in spec if x.startswith("shoal-test-")), "")
        pid = tag[len("shoal-test-"):]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            _iptables("-D", *spec)


# --------------------------------------------------------------------------
# nodes
# --------------------------------------------------------------------------

class ClusterNode(ServerProcess):
    """One ``shoal server`` of a cluster. Restart uses the same command line."""

    def __init__(self, cluster: "Cluster", index: int, join: Optional[str]):
        ip = node_ip(index)
        port, peer_port, tls_port = free_ports_on(ip, 3)
        super().__init__(f"node{index}", ClusterNode._make_argv, port,
                         cluster.tmp / f"node{index}", cluster.tmp / f"node{index}.log")
        self.host = ip
        self.index = index
        self.peer_port = peer_port
        self.tls_port = tls_port if cluster.tls else None  # with tls-cluster: the announced port
        self.join = join
        self.cluster = cluster
        self.paused = False
        self._node_id: Optional[str] = None

    @staticmethod
    def _make_argv(node: "ClusterNode") -> List[str]:
        c = node.cluster
        # absolute: the process runs with its data folder as working directory
        argv = [os.path.abspath(SHOAL_BIN), "server", "--bind", node.host, "--port", str(node.port),
                "--peer-port", str(node.peer_port), "--dir", str(node.dir),
                "--durability", c.durability, "--workers", str(c.workers)]
        if node.join:
            argv += ["--join", node.join]
        if c.shards is not None:
            argv += ["--shards", str(c.shards)]
        if c.replicas is not None:
            argv += ["--replicas", str(c.replicas)]
        if c.tls:
            argv += ["--tls-port", str(node.tls_port), "--tls-cert-file", c.tls["cert"],
                     "--tls-key-file", c.tls["key"], "--tls-ca-cert-file", c.tls["ca"], "--tls-cluster", "yes"]
        return argv + list(c.extra_args)

    @property
    def ip(self) -> str:
        return self.host

    @property
    def node_id(self) -> str:
        """The node's 64-bit id as 16 hex digits (as SHOAL.ADMIN prints it): the
        first 16 of the 40 of CLUSTER MYID. Asked once (it survives restarts)."""
        if self._node_id is None:
            v = self.call("CLUSTER", "MYID")
            if isinstance(v, RespError) or not isinstance(v, bytes) or len(v) != 40:
                raise AssertionError(f"{self.name}: CLUSTER MYID -> {v!r}")
            self._node_id = v.decode()[:16]
        return self._node_id

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def join_address(self) -> str:
        """Where other nodes join through: the TLS port in a tls-cluster."""
        return f"{self.host}:{self.tls_port}" if self.tls_port else self.address

    def info(self) -> Dict[str, object]:
        return {"index": self.index, "addr": self.host, "port": self.port,
                "peer_port": self.peer_port, "pid": self.pid, "dir": str(self.dir),
                "log": str(self.log_path), "alive": self.alive(), "paused": self.paused}

    def sigstop(self) -> None:
        self.check_alive(" before SIGSTOP")
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def sigcont(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def _terminate(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT_S):
        if self.paused:
            self.sigcont()
        return super()._terminate(sig, timeout)

    def client(self, **kw) -> RespConn:
        kw.setdefault("timeout", 10.0)
        kw.setdefault("connect_timeout", 2.0)
        return RespConn(self.host, self.port, **kw)

    def call(self, *args, timeout: float = 10.0):
        """One command on a fresh plain (not cluster-aware) connection; returns the value."""
        with self.client(timeout=timeout) as c:
            return c.execute(*args)


# --------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------

_LIVE_CLUSTERS: List["Cluster"] = []


def _cleanup_at_exit() -> None:  # last resort if a teardown never ran
    for c in list(_LIVE_CLUSTERS):
        try:
            c.teardown(print_logs=False)
        except Exception:
            pass


atexit.register(_cleanup_at_exit)


def stop_live_clusters() -> None:
    """Tear down every cluster still running (e.g. a module-scoped one, before a
    test that starts a big cluster of its own on a small machine). Their own
    fixtures' teardown later returns the problems found now."""
    for c in list(_LIVE_CLUSTERS):
        c.teardown()


def running_cluster(path: Path, start_timeout: Optional[float] = None, **kwargs):
    """Fixture body: yields a started Cluster, tears it down (by PID) and fails
    the test if teardown found problems (a node that died, a bad exit code)."""
    c = Cluster(path, **kwargs)
    problems: List[str] = []
    try:
        if start_timeout is None:
            c.start()
        else:
            c.start(timeout=start_timeout)
        yield c
    finally:
        problems = c.teardown()
    if problems:
        pytest.fail("cluster problems at teardown:\n" + "\n".join(problems), pytrace=False)


class Cluster:
    """N shoal nodes on 127.0.0.2.. ; node 0 bootstraps, the others --join it."""

    def __init__(self, tmp: Path, n: int = 3, durability: str = "fsync",
                 shards: Optional[int] = None, replicas: Optional[int] = None,
                 workers: Optional[int] = None, extra_args: Sequence[str] = (),
                 tls: Optional[Dict[str, str]] = None):
        if not SHOAL_BIN:
            pytest.skip(SKIP_NO_SHOAL)
        if not (os.path.isfile(SHOAL_BIN) and os.access(SHOAL_BIN, os.X_OK)):
            pytest.fail(f"SHOAL_BIN={SHOAL_BIN!r} is not an executable file", pytrace=False)
        if redis is None:
            pytest.skip("python3-redis is not installed")
        assert durability in ("fsync", "none")
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.durability = durability
        self.shards = shards
        self.replicas = replicas
        self.workers = workers if workers is not None else CLUSTER_WORKERS
        self.extra_args = list(extra_args)
        # {"cert", "key", "ca"}: PEM files; every node runs tls-cluster with them.
        self.tls = tls
        self.nodes: List[ClusterNode] = []
        self.rules: List[List[str]] = []
        self._partitioned_once = False
        self.problems: List[str] = []
        self._torn_down = False
        self.teardown_problems: List[str] = []
        self._cleanups: List[Callable[[], None]] = []
        for i in range(n):
            self._new_node()
        _LIVE_CLUSTERS.append(self)

    # -- membership ----------------------------------------------------------
    def _new_node(self, via: int = 0) -> ClusterNode:
        i = len(self.nodes)
        join = None if i == 0 else self.nodes[via].join_address
        node = ClusterNode(self, i, join)
        self.nodes.append(node)
        return node

    def __len__(self):
        return len(self.nodes)

    def node(self, i: int) -> ClusterNode:
        return self.nodes[i]

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Cluster":
        """Start the nodes one after another, then wait until ready."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.alive():
                continue
            node.start()
            # let each node be known before the next joins (bounded)
            self._wait(lambda: self._known_nodes(node) >= node.index + 1,
                       deadline, f"{node.name} to see {node.index + 1} known nodes")
        self.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        return self

    def add_node(self, timeout: float = READY_TIMEOUT_S, ready: bool = True, via: int = 0) -> ClusterNode:
        """Start one more node (joining through node ``via``). ``ready``: wait until the
        whole cluster is ready (wait_ready); else only until the new node is a
        member (knows the cluster and is listed by SHOAL.ADMIN STATUS) - a
        cluster with a dead node, or of two nodes, is never "ready"."""
        node = self._new_node(via)
        node.start()
        if ready:
            self.wait_ready(timeout=timeout)
        else:
            deadline = time.monotonic() + timeout

            def member() -> bool:
                try:
                    return node.node_id in self.admin_status(via=node.index).nodes
                except (NET_ERRORS + (AssertionError,)):
                    return False
            self._wait(member, deadline, f"{node.name} to be a member of the cluster", 0.2)
        return node

    def _known_nodes(self, node: ClusterNode) -> int:
        try:
            return int(self.cluster_info(node.index, timeout=2.0).get("cluster_known_nodes", 0))
        except (NET_ERRORS + (ValueError, AssertionError)):
            return 0

    # -- observation ---------------------------------------------------------
    def alive_nodes(self) -> List[ClusterNode]:
        return [n for n in self.nodes if n.alive() and not n.paused]

    def check_alive(self) -> None:
        """Fail (with the log tail) if a node died without the test asking for it."""
        for n in self.nodes:
            n.check_alive(" during the test")

    def cluster_info(self, i: int, timeout: float = 5.0) -> Dict[str, str]:
        v = self.nodes[i].call("CLUSTER", "INFO", timeout=timeout)
        if isinstance(v, RespError):
            raise AssertionError(f"CLUSTER INFO on node{i}: {v}")
        return parse_info(v)

    def is_ready_info(self, info: Dict[str, str], expect_nodes: int) -> bool:
        try:
            return (info.get("cluster_state") == "ok"
                    and int(info.get("shoal_shards", -1)) > 0
                    and int(info.get("shoal_shards_replicated", -2))
                    == int(info.get("shoal_shards", -1))
                    and int(info.get("cluster_known_nodes", -1)) == expect_nodes)
        except ValueError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, nodes: Optional[Sequence[int]] = None,
                   expect_nodes: Optional[int] = None) -> float:
        """Wait until every (given, running) node reports cluster_state:ok, all shards
        replicated and the expected number of known nodes. Returns seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        expect = expect_nodes if expect_nodes is not None else len(self.nodes)
        idx = list(nodes) if nodes is not None else [n.index for n in self.nodes
                                                     if n.alive() and not n.paused]
        last: Dict[int, object] = {}
        for _ in range(100_000):
            self.check_alive()
            all_ok = True
            for i in idx:
                try:
                    info = self.cluster_info(i, timeout=2.0)
                    last[i] = {k: v for k, v in info.items()
                               if k.startswith(("cluster_state", "cluster_known", "shoal_"))}
                    if not self.is_ready_info(info, expect):
                        all_ok = False
                except (NET_ERRORS + (AssertionError,)) as e:
                    last[i] = repr(e)
                    all_ok = False
                if not all_ok:
                    break
            if all_ok:
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise AssertionError(f"cluster not ready after {timeout:.0f}s (expecting {expect} "
                             f"nodes); last CLUSTER INFO: {last}\n{self.log_tails(2500)}")

    def _wait(self, cond: Callable[[], bool], deadline: float, what: str,
              interval: float = 0.1) -> None:
        for _ in range(100_000):
            self.check_alive()
            if cond():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}\n{self.log_tails(2500)}")

    # -- SHOAL.ADMIN -------------------------------------------------------------
    def admin(self, *args, via: Optional[int] = None, timeout: float = 20.0, retry: bool = True,
              retry_errors: Sequence[str] = ("TRYAGAIN",)):
        """SHOAL.ADMIN args on node ``via`` (default: any running node; a non-leader
        relays it to the meta leader). Returns the reply value (a RespError too).
        With ``retry``, an error reply starting with one of ``retry_errors`` or a
        connection error is retried (bounded), on the next running node when
        ``via`` is not given."""
        deadline = time.monotonic() + timeout
        last: object = None
        for attempt in range(200):
            idx = self._via(via)
            if not idx:
                raise AssertionError("SHOAL.ADMIN: no running node")
            i = idx[attempt % len(idx)]
            try:
                v = self.nodes[i].call("SHOAL.ADMIN", *args, timeout=min(10.0, timeout))
                if not (retry and isinstance(v, RespError) and v.startswith(tuple(retry_errors))):
                    return v
                last = f"node{i}: {v}"
            except NET_ERRORS as e:
                if not retry:
                    raise
                last = f"node{i}: {e!r}"
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"SHOAL.ADMIN {' '.join(map(str, args))} kept failing: {last}")

    def admin_status(self, via: Optional[int] = None, timeout: float = 20.0) -> "AdminStatus":
        """SHOAL.ADMIN STATUS, parsed. A relay that lost the meta leader (which just
        died: "ERR connection to ... lost") is retried like -TRYAGAIN: STATUS reads."""
        v = self.admin("STATUS", via=via, timeout=timeout,
                       retry_errors=("TRYAGAIN", "ERR connection to "))
        if isinstance(v, RespError) or not isinstance(v, list):
            raise AssertionError(f"SHOAL.ADMIN STATUS -> {v!r}")
        return parse_admin_status(v)

    def meta_leader(self, timeout: float = 20.0) -> int:
        """Index of the running node that leads the meta shard (where the placement
        driver runs): the one that answers SHOAL.ADMIN STATUS itself on a
        connection marked as relayed already (SHOAL.ROUTED); the others answer
        -TRYAGAIN there instead of relaying (bounded wait while there is none)."""
        deadline = time.monotonic() + timeout
        last: Dict[int, object] = {}
        for _ in range(1000):
            for i in self._via(None):
                try:
                    with self.nodes[i].client(timeout=5.0) as conn:
                        if conn.call("SHOAL.ROUTED").raw != b"+OK\r\n":
                            raise AssertionError(f"node{i}: SHOAL.ROUTED refused")
                        v = conn.execute("SHOAL.ADMIN", "STATUS")
                    if isinstance(v, list):
                        return i
                    last[i] = v
                except NET_ERRORS as e:
                    last[i] = repr(e)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"no node leads the meta shard: {last}")

    def wait_status(self, cond: Callable[["AdminStatus"], object], timeout: float, what: str,
                    interval: float = 0.5, via: Optional[int] = None) -> "AdminStatus":
        """Poll SHOAL.ADMIN STATUS until cond(status) is truthy (bounded in time and
        count); cond may also return a list of problems (empty = satisfied).
        Returns the satisfying status; fails with the last status and log tails."""
        deadline = time.monotonic() + timeout
        last: object = None
        why: object = None
        for _ in range(100_000):
            self.check_alive()
            try:
                st = self.admin_status(via=via, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
                r = cond(st)
                if (isinstance(r, list) and not r) or (not isinstance(r, list) and r):
                    return st
                last, why = st, r
            except (NET_ERRORS + (AssertionError,)) as e:
                why = repr(e)
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {why}\n"
                             f"last SHOAL.ADMIN STATUS:\n{last}\n{self.log_tails(2500)}")

    def node_by_addr(self, host, port) -> Optional[int]:
        host, port = _s(host), int(port)
        for n in self.nodes:
            if n.host == host and n.port == port:
                return n.index
        return None

    def _via(self, via: Optional[int], exclude: Sequence[int] = ()) -> List[int]:
        if via is not None:
            return [via]
        return [n.index for n in self.alive_nodes() if n.index not in exclude]

    def slots(self, via: Optional[int] = None, exclude: Sequence[int] = ()
              ) -> List[Tuple[int, int, List[Tuple[str, int, str]]]]:
        """CLUSTER SLOTS (from a cluster-aware connection) as
        [(start, end, [(ip, port, id), ...master first])]."""
        errors = []
        for i in self._via(via, exclude):
            try:
                with self.nodes[i].client(timeout=5.0) as c:
                    v = c.execute("CLUSTER", "SLOTS")
            except NET_ERRORS as e:
                errors.append(f"node{i}: {e!r}")
                continue
            if isinstance(v, RespError) or not isinstance(v, list):
                errors.append(f"node{i}: {v!r}")
                continue
            out = []
            for entry in v:
                nodes = [(_s(x[0]), int(x[1]), _s(x[2]) if len(x) > 2 else "")
                         for x in entry[2:]]
                out.append((int(entry[0]), int(entry[1]), nodes))
            return out
        raise AssertionError(f"CLUSTER SLOTS failed everywhere: {errors}")

    def slot_owner(self, slot: int, via: Optional[int] = None,
                   exclude: Sequence[int] = ()) -> Optional[int]:
        """Index of the node CLUSTER SLOTS names as master of ``slot`` (None if unknown)."""
        for start, end, nodes in self.slots(via, exclude):
            if start <= slot <= end and nodes:
                return self.node_by_addr(nodes[0][0], nodes[0][1])
        return None

    def slot_replicas(self, slot: int, via: Optional[int] = None) -> List[int]:
        for start, end, nodes in self.slots(via):
            if start <= slot <= end:
                return [self.node_by_addr(h, p) for h, p, _ in nodes[1:]]
        return []

    def leader_of_key(self, key, via: Optional[int] = None,
                      exclude: Sequence[int] = ()) -> Optional[int]:
        return self.slot_owner(key_slot(key), via, exclude)

    def wait_leader(self, key, not_on: Sequence[int] = (), via: Optional[int] = None,
                    timeout: float = 15.0) -> int:
        """Wait until the shard of ``key`` has a leader on a running node outside
        ``not_on`` (as seen from ``via``, or from any node outside ``not_on``)."""
        deadline = time.monotonic() + timeout
        found: List[Optional[int]] = [None]

        def cond():
            try:
                i = self.leader_of_key(key, via, exclude=not_on)
            except AssertionError:
                return False
            if i is None or i in not_on or not self.nodes[i].alive() or self.nodes[i].paused:
                return False
            found[0] = i
            return True
        self._wait(cond, deadline, f"a leader for {key!r} outside {list(not_on)}")
        return found[0]  # type: ignore[return-value]

    def wait_stable_leaders(self, stable_for: float = 2.0, timeout: float = 20.0) -> bool:
        """Wait (bounded) until CLUSTER SLOTS names the same masters for
        ``stable_for`` seconds: right after start the placement driver may still
        be moving leaders around. Returns False if they kept moving."""
        deadline = time.monotonic() + timeout
        last = None
        since = time.monotonic()
        for _ in range(100_000):
            try:
                cur = [(a, b, nodes[0][:2] if nodes else None) for a, b, nodes in self.slots()]
            except AssertionError:
                cur = None
            now = time.monotonic()
            if cur != last or cur is None:
                last, since = cur, now
            elif now - since >= stable_for:
                return True
            if now > deadline:
                return False
            time.sleep(0.2)
        return False

    def myid(self, i: int) -> str:
        return _s(self.nodes[i].call("CLUSTER", "MYID"))

    # -- clients -------------------------------------------------------------
    def redis_cluster(self, **kw) -> "RedisCluster":
        """A redis-py RedisCluster seeded with every running node."""
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 2)
        startup = [_RCNode(n.host, n.port) for n in self.alive_nodes()]
        return RedisCluster(startup_nodes=startup, **kw)

    def redis(self, i: int, **kw) -> "redis.Redis":
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host=self.nodes[i].host, port=self.nodes[i].port, **kw)

    # -- faults --------------------------------------------------------------
    def kill9(self, i: int) -> None:
        self.nodes[i].kill9()

    def stop(self, i: int) -> Optional[int]:
        return self.nodes[i].stop()

    def sigstop(self, i: int) -> None:
        self.nodes[i].sigstop()

    def sigcont(self, i: int) -> None:
        self.nodes[i].sigcont()

    def restart(self, i: int) -> ClusterNode:
        """Start node i again with the same command line (same --dir, --join)."""
        node = self.nodes[i]
        if node.alive():
            node.stop()
        return node.start()  # type: ignore[return-value]

    @staticmethod
    def iptables_usable() -> Tuple[bool, str]:
        if not IPTABLES:
            return False, "iptables is not installed"
        if os.geteuid() != 0:
            return False, "iptables needs root"
        r = subprocess.run([IPTABLES, "-w", "5", "-S", "INPUT"], capture_output=True,
                           timeout=30)
        if r.returncode != 0:
            return False, f"iptables -S fails: {r.stderr.decode(errors='replace').strip()}"
        return True, ""

    def partition(self, i: int, others: Optional[Sequence[int]] = None) -> None:
        """Drop all traffic between node i's address and every other node's address,
        both directions (INPUT chain: on loopback every packet passes it)."""
        ok, why = self.iptables_usable()
        if not ok:
            pytest.skip(why)
        remove_stale_rules()
        others = [j for j in (others if others is not None else range(len(self.nodes)))
                  if j != i]
        a = node_ip(i)
        for j in others:
            b = node_ip(j)
            for src, dst in ((a, b), (b, a)):
                spec = ["INPUT", "-s", src, "-d", dst, "-m", "comment", "--comment",
                        RULE_TAG, "-j", "DROP"]
                r = _iptables("-I", *spec)
                if r.returncode != 0:
                    self.heal()
                    raise AssertionError(f"iptables -I {' '.join(spec)} failed: "
                                         f"{r.stderr.decode(errors='replace')}")
                self.rules.append(spec)
                self._partitioned_once = True

    def heal_between(self, i: int, j: int) -> None:
        """Remove the rules partition() added between nodes i and j only (the
        others stay until heal() or teardown)."""
        pair = {node_ip(i), node_ip(j)}
        keep = []
        for spec in self.rules:
            if {spec[2], spec[4]} == pair:
                r = _iptables("-D", *spec)
                assert r.returncode == 0, f"iptables -D {' '.join(spec)}: {r.stderr.decode(errors='replace')}"
            else:
                keep.append(spec)
        self.rules = keep

    def heal(self) -> List[str]:
        """Remove every rule partition() added (and any left with our tag)."""
        problems = []
        while self.rules:
            spec = self.rules.pop()
            r = _iptables("-D", *spec)
            if r.returncode != 0:
                problems.append(f"iptables -D {' '.join(spec)}: "
                                f"{r.stderr.decode(errors='replace').strip()}")
        if IPTABLES and os.geteuid() == 0 and self._partitioned_once:
            # belt and braces: nothing tagged with our pid may survive
            for _ in range(100):
                left = _tagged_rules(RULE_TAG)
                if not left:
                    break
                if _iptables("-D", *left[0]).returncode != 0:
                    problems.append(f"could not delete leftover rule {' '.join(left[0])}")
                    break
        self.problems.extend(problems)
        return problems

    # -- logs and teardown ----------------------------------------------------
    def add_cleanup(self, fn: Callable[[], None]) -> None:
        """Run fn() at the start of teardown (before the nodes are stopped)."""
        self._cleanups.append(fn)

    def log_tails(self, n: int = 4000) -> str:
        parts = []
        for node in self.nodes:
            parts.append(f"---- {node.name} {node.address} (pid {node.pid}, "
                         f"{'alive' if node.alive() else 'exited'}) log tail:\n"
                         f"{node.log_tail(n)}")
        return "\n".join(parts)

    def print_logs(self, n: int = 4000) -> None:
        print(self.log_tails(n))

    def teardown(self, print_logs: bool = True) -> List[str]:
        """Heal, SIGCONT, SIGTERM everything by PID (in parallel), SIGKILL after
        STOP_TIMEOUT_S. Returns the problems seen (unexpected deaths, unclean exits)."""
        if self._torn_down:
            return self.teardown_problems
        self._torn_down = True
        problems: List[str] = []
        for fn in reversed(self._cleanups):  # e.g. stop client threads first
            try:
                fn()
            except Exception as e:
                problems.append(f"cleanup {fn!r}: {e!r}")
        problems += self.heal()
        for node in self.nodes:
            try:
                node.check_alive(" during the test")
            except AssertionError as e:
                problems.append(str(e))
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            node._expected_dead = True
            node.sigcont()
            try:
                os.kill(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in running:
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(node.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.proc.wait(timeout=10)
                problems.append(f"{node.name} did not exit within {STOP_TIMEOUT_S}s of "
                                f"SIGTERM; SIGKILLed")
                continue
            if node.proc.returncode != 0:
                problems.append(f"{node.name} exited with {node.proc.returncode} after SIGTERM")
        for node in self.nodes:
            problems.extend(m for m in node.unexpected_exits if m not in problems)
        if print_logs:
            self.print_logs()
        if self in _LIVE_CLUSTERS:
            _LIVE_CLUSTERS.remove(self)
        self.teardown_problems = problems
        return problems


# --------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------

class _Conn:
    """A RespConn to one node of a rotation; reconnects (to the next node) after errors."""

    def __init__(self, cluster: Cluster, nodes: Sequence[int], start: int, timeout: float,
                 readonly: bool = False):
        self.cluster = cluster
        self.nodes = list(nodes)
        self.pos = start % len(self.nodes)
        self.timeout = timeout
        self.readonly = readonly
        self.conn: Optional[RespConn] = None

    @property
    def node_index(self) -> int:
        nodes = self.nodes  # (another thread may replace the list: retarget)
        return nodes[self.pos % len(nodes)]

    def get(self) -> Optional[RespConn]:
        if self.conn is not None:
            return self.conn
        node = self.cluster.nodes[self.node_index]
        try:
            c = RespConn(node.host, node.port, timeout=self.timeout, connect_timeout=1.0)
        except OSError:
            self.rotate()
            return None
        if self.readonly:
            try:
                if c.call("READONLY").raw != b"+OK\r\n":
                    c.close()
                    self.rotate()
                    return None
            except NET_ERRORS:
                c.close()
                self.rotate()
                return None
        self.conn = c
        return c

    def broken(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.rotate()

    def retarget(self, nodes: Sequence[int]) -> None:
        """Rotate over these nodes from the next connection on (any thread)."""
        self.pos %= len(nodes)
        self.nodes = list(nodes)

    def rotate(self) -> None:
        self.pos = (self.pos + 1) % len(self.nodes)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Worker(threading.Thread):
    def __init__(self, name: str, stop: threading.Event, deadline: float):
        super().__init__(name=name, daemon=True)
        self.stop_ev = stop
        self.deadline = deadline
        self.unexpected: List[str] = []
        self.errors = 0

    def running(self) -> bool:
        return not self.stop_ev.is_set() and time.monotonic() < self.deadline

    def pause(self, s: float) -> None:
        self.stop_ev.wait(s)


RETRYABLE_ERRORS = ("TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK", "LOADING")


class AckWriter(_Worker):
    """SETs unique keys with unique values over plain (forwarded) connections,
    rotating over ``nodes`` after errors. ``acked`` holds every acknowledged write;
    ``timeline`` (invoke, complete, ok) every attempt. Keys are
    ``<key_prefix>:w<wid>:<n>``; a {hash tag} in the prefix aims at one shard.

    ``retries`` > 0 is what a careful plain client does: a -TRYAGAIN,
    -CLUSTERDOWN, -LOADING reply or a connection error is retried (the same
    key and value: a unique key makes the SET idempotent) on the next node after
    a short pause, a -MOVED/-ASK one on the node it names, up to ``retries``
    times within ``retry_for`` seconds. ``failed`` lists the SETs that still
    failed, with their last error (another error reply fails at once);
    ``retried`` counts the retries."""

    def __init__(self, cluster: Cluster, wid: int, nodes: Sequence[int], stop: threading.Event,
                 deadline: float, key_prefix: str = "ack", timeout: float = 3.0,
                 interval: float = 0.0, max_ops: int = 100_000, retries: int = 0,
                 retry_for: float = 10.0):
        super().__init__(f"ackwriter{wid}", stop, deadline)
        self.wid = wid
        self.cluster = cluster
        self.conn = _Conn(cluster, nodes, wid, timeout)
        self.key_prefix = key_prefix
        self.interval = interval
        self.max_ops = max_ops
        self.retries = retries
        self.retry_for = retry_for
        self.acked: Dict[str, bytes] = {}
        self.unknown: Dict[str, bytes] = {}
        self.timeline: List[Tuple[float, float, bool]] = []
        self.failed: List[str] = []
        self.retried = 0

    def retarget(self, nodes: Sequence[int]) -> None:
        """Rotate over these nodes from the next connection on."""
        self.conn.retarget(nodes)

    def _follow(self, err: str) -> None:
        """After -MOVED/-ASK slot host:port: the next connection goes there."""
        parts = err.split()
        host, _, port = parts[-1].rpartition(":") if len(parts) >= 3 else ("", "", "")
        i = self.cluster.node_by_addr(host, port) if port.isdigit() else None
        self.conn.close()
        if i is not None and i in self.conn.nodes:
            self.conn.pos = self.conn.nodes.index(i)
        else:
            self.conn.rotate()

    def _set_once(self, key: str, val: bytes) -> Optional[str]:
        """One attempt; None when acknowledged, else what went wrong (prefixed
        "retry:" when it may be retried)."""
        c = self.conn.get()
        if c is None:
            return "retry:no connection"
        t0 = time.monotonic()
        try:
            rep = c.call("SET", key, val)
        except NET_ERRORS as e:
            self.timeline.append((t0, time.monotonic(), False))
            self.conn.broken()
            return f"retry:{e!r}"
        t1 = time.monotonic()
        if rep.raw == b"+OK\r\n":
            self.timeline.append((t0, t1, True))
            return None
        self.timeline.append((t0, t1, False))
        if not isinstance(rep.value, RespError):
            self.unexpected.append(f"SET {key} -> {rep.raw[:200]!r}")
            self.conn.close()
            self.conn.rotate()
            return f"reply {rep.raw[:200]!r}"
        err = str(rep.value)
        if err.startswith(("MOVED ", "ASK ")):
            self._follow(err)
        else:
            self.conn.close()
            self.conn.rotate()
        return ("retry:" if err.startswith(RETRYABLE_ERRORS) else "") + err

    def run(self):
        try:
            for n in range(self.max_ops):
                if not self.running():
                    break
                key = f"{self.key_prefix}:w{self.wid}:{n}"
                val = f"v-{self.wid}-{n}-{random.getrandbits(32):08x}".encode()
                give_up = time.monotonic() + self.retry_for
                err = self._set_once(key, val)
                for attempt in range(self.retries):
                    if err is None or not err.startswith("retry:") or not self.running() \
                            or time.monotonic() > give_up:
                        break
                    self.retried += 1
                    self.pause(min(0.5, 0.02 * (2 ** min(attempt, 5))))
                    err = self._set_once(key, val)
                if err is None:
                    self.acked[key] = val
                    self.unknown.pop(key, None)
                else:
                    if err == "retry:no connection" and not self.retries:
                        self.pause(0.05)  # nothing was sent
                        continue
                    self.unknown[key] = val
                    self.errors += 1
                    if self.retries:
                        self.failed.append(f"SET {key}: {err}")
                    self.pause(0.02)
                if self.interval:
                    self.pause(self.interval)
        except Exception as e:  # must not vanish with the thread
            self.unexpected.append(f"{self.name}: {e!r}")
        finally:
            self.conn.close()


class FailoverProbe(_Worker):
    """Measures when a shard takes writes again: every ``interval`` seconds it
    sends one SET (unique key under ``key_prefix``, which carries the shard's
    {hash tag}) on an idle plain connection to one of ``nodes``, opening more
    connections while earlier requests are stuck (on a dead or paused leader),
    so that one stuck request never delays the next: the resolution is
    ``interval``, not a client timeout. A request unanswered after ``timeout``
    is abandoned (unknown outcome). ``timeline`` holds (invoke, complete, ok)
    for every request; ``acked`` every acknowledged write."""

    def __init__(self, cluster: Cluster, nodes: Sequence[int], stop: threading.Event,
                 deadline: float, key_prefix: str, interval: float = 0.025,
                 timeout: float = 1.5, max_conns: int = 100):
        super().__init__("failover-probe", stop, deadline)
        self.cluster = cluster
        self.nodes = list(nodes)
        self.key_prefix = key_prefix
        self.interval = interval
        self.timeout = timeout
        self.max_conns = max_conns
        self.acked: Dict[str, bytes] = {}
        self.unknown: Dict[str, bytes] = {}
        self.timeline: List[Tuple[float, float, bool]] = []

    def retarget(self, nodes: Sequence[int]) -> None:
        """Send through these nodes from now on (idle connections elsewhere are dropped)."""
        self.nodes = list(nodes)

    def run(self):
        import selectors
        sel = selectors.DefaultSelector()
        idle: List[socket.socket] = []
        node_of: Dict[socket.socket, int] = {}
        busy: Dict[socket.socket, list] = {}  # sock -> [t0, key, val, buffer]
        n = 0
        rr = 0
        next_send = time.monotonic()

        def drop(sock):
            try:
                sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            node_of.pop(sock, None)
            sock.close()

        try:
            for _ in range(10_000_000):
                if not self.running():
                    break
                now = time.monotonic()
                if now >= next_send:
                    next_send = now + self.interval
                    targets = list(self.nodes)
                    for x in [x for x in idle if node_of.get(x) not in targets]:
                        idle.remove(x)
                        drop(x)
                    sock = idle.pop() if idle else None
                    if sock is None and len(busy) < self.max_conns:
                        ni = targets[rr % len(targets)]
                        node = self.cluster.nodes[ni]
                        rr += 1
                        try:
                            sock = socket.create_connection((node.host, node.port), timeout=0.2)
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                            sock.setblocking(False)
                            sel.register(sock, selectors.EVENT_READ)
                            node_of[sock] = ni
                        except OSError:
                            sock = None
                    if sock is not None:
                        key = f"{self.key_prefix}:{n}"
                        val = f"p-{n}-{random.getrandbits(32):08x}".encode()
                        n += 1
                        t0 = time.monotonic()
                        try:
                            sock.send(encode_command("SET", key, val))
                            busy[sock] = [t0, key, val, b""]
                        except OSError:
                            self.timeline.append((t0, time.monotonic(), False))
                            self.unknown[key] = val
                            drop(sock)
                wait = max(0.0, min(next_send - time.monotonic(), 0.05))
                for ev, _ in sel.select(timeout=wait):
                    sock = ev.fileobj
                    st = busy.get(sock)
                    try:
                        data = sock.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if st is None:  # bytes on an idle connection: should not happen
                        if data:
                            self.unexpected.append(f"unsolicited bytes {data[:100]!r}")
                        if sock in idle:
                            idle.remove(sock)
                        drop(sock)
                        continue
                    t1 = time.monotonic()
                    if not data:  # closed: unknown outcome
                        del busy[sock]
                        self.timeline.append((st[0], t1, False))
                        self.unknown[st[1]] = st[2]
                        self.errors += 1
                        drop(sock)
                        continue
                    st[3] += data
                    if b"\r\n" not in st[3]:
                        continue
                    del busy[sock]
                    line = st[3].split(b"\r\n", 1)[0]
                    if line == b"+OK":
                        self.timeline.append((st[0], t1, True))
                        self.acked[st[1]] = st[2]
                        idle.append(sock)
                    else:
                        self.timeline.append((st[0], t1, False))
                        self.unknown[st[1]] = st[2]
                        self.errors += 1
                        if not line.startswith(b"-"):
                            self.unexpected.append(f"SET {st[1]} -> {st[3][:200]!r}")
                        drop(sock)  # (an error reply: start afresh, maybe elsewhere)
                now = time.monotonic()
                for sock, st in list(busy.items()):
                    if now - st[0] > self.timeout:
                        del busy[sock]
                        self.timeline.append((st[0], now, False))
                        self.unknown[st[1]] = st[2]
                        self.errors += 1
                        drop(sock)
        except Exception as e:
            self.unexpected.append(f"{self.name}: {e!r}")
        finally:
            for sock in list(busy) + idle:
                drop(sock)
            sel.close()


class ClusterClientWriter(_Worker):
    """SETs unique keys through redis-py's RedisCluster (cluster-aware: follows
    MOVED, refreshes its slot map after connection errors). redis-py logs every
    failed attempt with a traceback; its cluster logger is quietened while this runs.

    ``retry_for`` > 0 is what a careful application adds to redis-py's own
    retries (``retry_attempts``): a SET that raised is sent again (same key and
    value) for up to ``retry_for`` seconds, on a new RedisCluster client when
    the old one raised RedisClusterException (its own bookkeeping failed, e.g.
    redis-py 4.3's "cannot pickle" while re-reading the slot map from a dead
    seed node). ``failed`` lists the SETs that still raised, with the last
    exception; ``retried`` counts the retries."""

    def __init__(self, cluster: Cluster, stop: threading.Event, deadline: float,
                 prefix: str = "ack:rc", interval: float = 0.002, retry_attempts: int = 2,
                 socket_timeout: float = 2.0, retry_for: float = 0.0):
        super().__init__("rcwriter", stop, deadline)
        self.cluster = cluster
        self.prefix = prefix
        self.interval = interval
        self.retry_attempts = retry_attempts
        self.socket_timeout = socket_timeout
        self.retry_for = retry_for
        self.acked: Dict[str, bytes] = {}
        self.unknown: Dict[str, bytes] = {}
        self.failed: List[str] = []  # SETs that raised after redis-py's own retries
        self.retried = 0
        self._rc = None

    def _client(self):
        if self._rc is None:
            self._rc = self.cluster.redis_cluster(
                decode_responses=False, socket_timeout=self.socket_timeout,
                cluster_error_retry_attempts=self.retry_attempts)
        return self._rc

    def _drop_client(self) -> None:
        if self._rc is not None:
            try:
                self._rc.close()
            except Exception:
                pass
        self._rc = None

    def run(self):
        log = logging.getLogger("redis.cluster")
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            n = 0
            for _ in range(1_000_000):
                if not self.running():
                    break
                if self._rc is None and not self.retry_for:
                    try:
                        self._client()
                    except Exception as e:
                        self.failed.append(f"RedisCluster(): {e!r}")
                        self.errors += 1
                        self.pause(0.2)
                        continue
                key = f"{self.prefix}:{n}"
                val = f"rc-{n}-{random.getrandbits(32):08x}".encode()
                n += 1
                give_up = time.monotonic() + self.retry_for
                ok: object = None
                err: Optional[Exception] = None
                for attempt in range(1000):
                    try:
                        ok = self._client().set(key, val)
                        err = None
                        break
                    except Exception as e:  # redis-py raises many kinds during failover
                        err = e
                        if redis is not None and isinstance(e, redis.exceptions.RedisClusterException):
                            self._drop_client()
                    if time.monotonic() >= give_up or not self.running():
                        break
                    self.retried += 1
                    self.pause(min(0.5, 0.05 * (attempt + 1)))
                if err is not None:
                    self.unknown[key] = val
                    self.failed.append(f"set {key}: {err!r}")
                    self.errors += 1
                    self.pause(0.05)
                    continue
                if ok is True:
                    self.acked[key] = val
                else:
                    self.unknown[key] = val
                    self.unexpected.append(f"RedisCluster.set({key}) -> {ok!r}")
                if self.interval:
                    self.pause(self.interval)
        except Exception as e:
            self.unexpected.append(f"{self.name}: {e!r}")
        finally:
            log.setLevel(level)
            self._drop_client()


class StateMonitor(_Worker):
    """Polls CLUSTER INFO on the given running nodes every ``interval`` s;
    ``bad`` lists every answer whose cluster_state was not ok (or that failed),
    ``samples`` counts the answers seen."""

    def __init__(self, cluster: Cluster, nodes: Sequence[int], stop: threading.Event,
                 deadline: float, interval: float = 0.5):
        super().__init__("state-monitor", stop, deadline)
        self.cluster = cluster
        self.nodes = list(nodes)
        self.interval = interval
        self.samples = 0
        self.bad: List[str] = []

    def retarget(self, nodes: Sequence[int]) -> None:
        self.nodes = list(nodes)

    def run(self):
        try:
            for _ in range(1_000_000):
                if not self.running():
                    break
                for i in list(self.nodes):
                    node = self.cluster.nodes[i]
                    if not node.alive() or node.paused:
                        continue
                    t = time.monotonic()
                    try:
                        info = self.cluster.cluster_info(i, timeout=5.0)
                        self.samples += 1
                        if info.get("cluster_state") != "ok":
                            self.bad.append(f"t={t:.1f} node{i}: {info}")
                    except (NET_ERRORS + (AssertionError,)) as e:
                        if node.alive():  # (not one the test just killed)
                            self.bad.append(f"t={t:.1f} node{i}: CLUSTER INFO failed: {e!r}")
                self.pause(self.interval)
        except Exception as e:
            self.unexpected.append(f"{self.name}: {e!r}")


class RegisterClient(_Worker):
    """Random GET/SET on a few register keys, recorded in a History for the
    linearizability checker. Write values are unique. A write that gets an error
    or no answer has an unknown outcome; a read that fails is dropped. With
    ``readonly`` the connection sends READONLY (follower reads); MOVED replies
    then count as failed reads."""

    def __init__(self, cluster: Cluster, cid: int, keys: Sequence[str], nodes: Sequence[int],
                 history: History, stop: threading.Event, deadline: float,
                 readonly: bool = False, timeout: float = 8.0, interval: float = 0.02,
                 write_ratio: float = 0.5, max_ops: int = 3000, seed: Optional[int] = None):
        super().__init__(f"register{cid}", stop, deadline)
        self.cid = cid
        self.keys = list(keys)
        self.conn = _Conn(cluster, nodes, cid, timeout, readonly=readonly)
        self.history = history
        self.readonly = readonly
        self.interval = interval
        self.write_ratio = 0.0 if readonly else write_ratio
        self.max_ops = max_ops
        self.rng = random.Random(seed if seed is not None else cid)
        self.ops = 0
        self.moved = 0

    def run(self):
        try:
            seq = 0
            for _ in range(self.max_ops * 4):
                if not self.running() or self.ops >= self.max_ops:
                    break
                c = self.conn.get()
                if c is None:
                    self.pause(0.05)
                    continue
                key = self.rng.choice(self.keys)
                self.ops += 1
                if self.rng.random() < self.write_ratio:
                    seq += 1
                    val = f"c{self.cid}-{seq}".encode()
                    h = self.history.invoke(self.cid, WRITE, key, val)
                    try:
                        rep = c.call("SET", key, val)
                    except NET_ERRORS:
                        self.history.info(h)
                        self.errors += 1
                        self.conn.broken()
                        continue
                    if rep.raw == b"+OK\r\n":
                        self.history.ok(h)
                    else:
                        self.history.info(h)
                        self.errors += 1
                        if not isinstance(rep.value, RespError):
                            self.unexpected.append(f"SET {key} -> {rep.raw[:200]!r}")
                        self.conn.close()
                        self.conn.rotate()
                else:
                    h = self.history.invoke(self.cid, READ, key)
                    try:
                        rep = c.call("GET", key)
                    except NET_ERRORS:
                        self.history.info(h)
                        self.errors += 1
                        self.conn.broken()
                        continue
                    v = rep.value
                    if v is None or (isinstance(v, bytes) and not isinstance(v, RespError)):
                        self.history.ok(h, value=v)
                    else:
                        self.history.info(h)
                        if is_moved(v):
                            self.moved += 1
                        else:
                            self.errors += 1
                        if not isinstance(v, RespError):
                            self.unexpected.append(f"GET {key} -> {rep.raw[:200]!r}")
                        self.conn.close()
                        self.conn.rotate()
                if self.interval:
                    self.pause(self.interval)
        except Exception as e:
            self.unexpected.append(f"{self.name}: {e!r}")
        finally:
            self.conn.close()


def verify_acked(cluster: Cluster, acked: Dict[str, bytes], timeout: float = 60.0) -> List[str]:
    """Read every acknowledged key through RedisCluster; return the mismatches."""
    rc = cluster.redis_cluster(decode_responses=False)
    try:
        keys = list(acked)
        bad: List[str] = []
        deadline = time.monotonic() + timeout
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            vals = None
            for attempt in range(20):
                try:
                    vals = rc.mget_nonatomic(chunk)
                    break
                except Exception as e:  # a slot map refresh racing a move
                    if time.monotonic() > deadline:
                        raise AssertionError(f"reading acknowledged keys: {e!r}")
                    time.sleep(0.25)
            if vals is None:
                raise AssertionError("reading acknowledged keys failed 20 times")
            for k, v in zip(chunk, vals):
                if v != acked[k]:
                    bad.append(f"{k}: expected {acked[k]!r}, got {v!r}")
        return bad
    finally:
        rc.close()


def readonly_read_all(cluster: Cluster, i: int, expected: Dict[str, bytes],
                      timeout: float = 30.0) -> Tuple[int, List[str]]:
    """READONLY GET of every key on node i until all match (bounded).
    Returns (keys verified, stale or wrong values seen). A value that differs
    from the single acknowledged write of that key is a stale read."""
    pending = dict(expected)
    wrong: List[str] = []
    deadline = time.monotonic() + timeout
    conn: Optional[RespConn] = None
    for _ in range(1000):  # rounds over the keys not verified yet
        if not pending or time.monotonic() > deadline:
            break
        try:
            if conn is None:
                conn = cluster.nodes[i].client(timeout=5.0)
                if conn.call("READONLY").raw != b"+OK\r\n":
                    raise AssertionError(f"node{i} refused READONLY")
            for k in list(pending):
                if time.monotonic() > deadline:
                    break
                v = conn.execute("GET", k)
                if isinstance(v, RespError):
                    continue  # MOVED / not ready yet: try again next round
                if v != pending[k]:
                    wrong.append(f"node{i} READONLY GET {k}: expected {pending[k]!r}, got {v!r}")
                del pending[k]
        except NET_ERRORS:
            if conn is not None:
                conn.close()
            conn = None
        if pending:
            time.sleep(0.2)
    if conn is not None:
        conn.close()
    return len(expected) - len(pending), wrong
