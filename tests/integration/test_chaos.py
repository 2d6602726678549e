"""A seeded random run of faults and membership changes over real processes.

The scripted tests each drive one scenario; this one mixes them, the way a
production cluster meets them: while a plain client, a RedisCluster client,
three register clients (GET/SET on three keys, one reading from replicas
with READONLY; recorded for the linearizability checker) and two counter
clients (INCR, never retried) keep working, a
random sequence of steps is applied to a cluster that starts with three
nodes (durability fsync), or with one node (durability none: one-member
groups that answer a write in the round that logs it) that grows through the
two-node stage as nodes join:

* kill -9 of a node, restarted after a short while, or left dead past
  --down-after-ms (so that its replicas are rebuilt elsewhere when a spare
  node exists) and restarted at a later step;
* SIGSTOP / SIGCONT of a node;
* a node cut off from all others (iptables, when run as root);
* a node joining (up to five), a node drained (down to three up nodes);
* a shard's leadership transferred, a shard split (up to 16 shards).

At most one node is dead, paused or cut off at a time. From three running
nodes up every shard keeps a live majority (a rebuild or a drain in flight
may still find it short: the clients then see errors, never a lost write);
below three only a fault the same step undoes is applied (a quick kill -9 and
restart, or a pause). At the end every fault is undone, nodes join until
there are three, and the test checks that placement settles (no shard
wedged: every shard led, three voters, all on up nodes, no move in flight),
that no node died by itself, that every acknowledged write is readable with
its value, that the register history is linearizable, and that each counter
lies between its acknowledged INCRs and those plus the ones of unknown
outcome (none lost, none applied twice).

Environment: SHOAL_CHAOS_SEED (default: a fixed seed, so that CI runs the
same sequence; 0 = a random one, printed), SHOAL_CHAOS_STEPS (default 10).
A longer soak: ``for s in $(seq 1 20); do SHOAL_CHAOS_SEED=$s
SHOAL_CHAOS_STEPS=30 python3 -m pytest -q -s tests/integration/test_chaos.py
|| break; done`` (``-k 1-node`` or ``-k 3-nodes`` for one of the two). Every wait is bounded; every process is stopped by PID
(cluster_util).
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Dict, List, Optional

import pytest

from cluster_util import NET_ERRORS, AdminStatus, Cluster, RegisterClient, _Conn, _Worker, running_cluster
from conftest import SELFTEST, RespError
from linearizability import OK, READ, History, check
from test_elastic import ELASTIC_ARGS, SETTLE_TIMEOUT_S, Workload, ids_of, settled

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SELFTEST, reason="cluster tests need a real shoal binary")]

SHARDS = 8
MAX_SHARDS = 16
MAX_NODES = 5
DOWN_AFTER_S = 3.0                      # ELASTIC_ARGS: --down-after-ms 3000
STEPS = int(os.environ.get("SHOAL_CHAOS_STEPS", "10"))
_seed_env = os.environ.get("SHOAL_CHAOS_SEED", "20261204")
SEED = int(_seed_env) if _seed_env not in ("", "0") else random.SystemRandom().randrange(1, 1 << 31)
FINAL_SETTLE_S = SETTLE_TIMEOUT_S + 60.0 + 2.0 * STEPS  # after the last step: rebuilds, drains, moves back
REGISTER_KEYS = ["chaos:reg:a", "chaos:reg:b", "chaos:reg:{a}c"]


class CounterClient(_Worker):
    """INCR of one counter key, one command at a time, never retried: ``acked``
    counts the INCRs answered with an integer, ``unknown`` those that got an
    error or no answer (applied or not). Each answer must be above the last
    (no increment lost or applied twice before it), and at the end the counter
    must be between acked and acked + unknown (an INCR applied twice, e.g. a
    write re-proposed after it was logged, ends above it)."""

    def __init__(self, c: Cluster, cid: int, key: str, nodes: List[int], stop: threading.Event,
                 deadline: float):
        super().__init__(f"counter{cid}", stop, deadline)
        self.key = key
        self.conn = _Conn(c, nodes, cid, timeout=5.0)
        self.acked = 0
        self.unknown = 0
        self.last = 0

    def retarget(self, nodes: List[int]) -> None:
        self.conn.retarget(nodes)

    def run(self):
        try:
            for _ in range(100_000):
                if not self.running():
                    break
                c = self.conn.get()
                if c is None:
                    self.pause(0.05)  # nothing was sent
                    continue
                try:
                    rep = c.call("INCR", self.key)
                except NET_ERRORS:
                    self.unknown += 1
                    self.conn.broken()
                    continue
                v = rep.value
                if isinstance(v, int) and not isinstance(v, bool):
                    if v <= self.last:
                        self.unexpected.append(f"INCR {self.key} -> {v} after {self.last}")
                    self.acked += 1
                    self.last = v
                else:
                    self.unknown += 1
                    if not isinstance(v, RespError):
                        self.unexpected.append(f"INCR {self.key} -> {rep.raw[:200]!r}")
                    self.conn.close()
                    self.conn.rotate()
                    self.pause(0.02)
                self.pause(0.01)
        except Exception as e:
            self.unexpected.append(f"{self.name}: {e!r}")
        finally:
            self.conn.close()


@pytest.fixture(params=[(3, "fsync"), (1, "none")], ids=["3-nodes-fsync", "1-node-none"])
def chaos_cl(tmp_path, request):
    """Three nodes with fsync; or one node with durability none (its groups
    have one member and answer a write in the round that logs it) that grows
    through the two-node stage (one voter and one learner per shard) as nodes
    join."""
    n, durability = request.param
    yield from running_cluster(tmp_path / "cluster", n=n, shards=SHARDS, extra_args=ELASTIC_ARGS,
                               durability=durability)


class Chaos:
    """The nemesis: applies one random step at a time and remembers what it
    must undo. ``log`` lists every step taken, for the failure message."""

    def __init__(self, c: Cluster, rng: random.Random, t0: float):
        self.c = c
        self.rng = rng
        self.t0 = t0
        self.dead: Optional[int] = None     # killed and left down (kill_long)
        self.dead_since = 0.0
        self.draining: List[int] = []       # drained nodes: never faulted again
        self.log: List[str] = []
        self.partitions_ok, _ = c.iptables_usable()

    def note(self, what: str) -> None:
        line = f"t={time.monotonic() - self.t0:6.1f}s {what}"
        self.log.append(line)
        print(f"[chaos] {line}", flush=True)

    def live(self) -> List[int]:
        """Running, not paused, not drained: the nodes a fault may hit."""
        return [i for i, n in enumerate(self.c.nodes)
                if n.alive() and not n.paused and i not in self.draining]

    def hold(self, lo: float, hi: float) -> None:
        time.sleep(self.rng.uniform(lo, hi))

    def restart(self, i: int) -> None:
        self.c.nodes[i].start(cluster_ready=False)  # it may be the only way back to a majority

    def revive(self) -> None:
        if self.dead is not None:
            i, self.dead = self.dead, None
            self.note(f"restart node{i} (down {time.monotonic() - self.dead_since:.1f} s)")
            self.restart(i)

    # -- the steps ----------------------------------------------------------
    def step(self) -> None:
        kinds = ["kill_restart", "kill_long", "pause", "transfer", "split", "join", "drain"]
        if self.partitions_ok:
            kinds.append("partition")
        kind = self.rng.choice(kinds)
        if self.dead is not None and kind in ("kill_restart", "kill_long", "pause", "partition"):
            # one fault at a time: this step brings the dead node back instead
            if time.monotonic() - self.dead_since < DOWN_AFTER_S + 1.0:
                self.hold(DOWN_AFTER_S, DOWN_AFTER_S + 2.0)
            self.revive()
            return
        getattr(self, kind)()

    def _victim(self, brief: bool = False) -> Optional[int]:
        """A node to fault. From three running nodes up any, keeping two others
        running (every shard's majority stays up); below three only for a
        ``brief`` fault that this step undoes (a one- or two-node cluster has
        no majority without it)."""
        live = self.live()
        running = [i for i, n in enumerate(self.c.nodes) if n.alive()]
        if not live or (len(running) < 3 and not brief):
            return None
        return self.rng.choice(live)

    def kill_restart(self) -> None:
        i = self._victim(brief=True)
        if i is None:
            return
        self.note(f"kill -9 node{i}, restart soon")
        self.c.kill9(i)
        self.hold(0.2, 2.0)
        self.note(f"restart node{i}")
        self.restart(i)

    def _settled_enough(self) -> bool:
        """A fault left in place across steps (or for seconds) only where every
        shard and the meta shard have three voters, a leader and no move in
        flight: it then takes one voter of three. (Just after a join a shard
        may still have one voter and a learner; that voter dead or cut off,
        the shard has no leader until it is back.)"""
        st = self._status()
        return (st is not None and len(st.meta_actual_voters) >= 3 and st.moves_in_flight == 0 and
                all(len(sh.voters) == 3 and sh.leader_known and not sh.moving for sh in st.shards))

    def kill_long(self) -> None:
        i = self._victim()
        if i is None or not self._settled_enough():
            return
        self.note(f"kill -9 node{i}, left down past down-after")
        self.c.kill9(i)
        self.dead, self.dead_since = i, time.monotonic()

    def pause(self) -> None:
        i = self._victim(brief=True)
        if i is None:
            return
        self.note(f"SIGSTOP node{i}")
        self.c.sigstop(i)
        self.hold(0.5, 3.0)
        self.note(f"SIGCONT node{i}")
        self.c.sigcont(i)

    def partition(self) -> None:
        i = self._victim()
        if i is None or not self._settled_enough():
            return
        self.note(f"cut node{i} off from the others")
        self.c.partition(i)
        self.hold(1.0, 4.0)
        self.note("heal")
        problems = self.c.heal()
        assert not problems, problems

    def _status(self) -> Optional[AdminStatus]:
        try:
            return self.c.admin_status(timeout=10.0)
        except AssertionError as e:
            self.note(f"STATUS failed: {e!s:.200}")
            return None

    def _admin(self, *args) -> object:
        try:
            v = self.c.admin(*args, timeout=10.0)
        except AssertionError as e:
            v = f"failed: {e!s:.200}"
        if isinstance(v, RespError):
            v = f"-{v}"
        self.note(f"SHOAL.ADMIN {' '.join(args)} -> {v!r:.200}")
        return v

    def transfer(self) -> None:
        st = self._status()
        if st is None or not st.shards:
            return
        sh = self.rng.choice(st.shards)
        others = [v for v in sh.voters if v != sh.leader]
        if others:
            self._admin("TRANSFER", str(sh.id), self.rng.choice(others))

    def split(self) -> None:
        st = self._status()
        if st is None or len(st.shards) >= MAX_SHARDS:
            return
        sh = self.rng.choice(st.shards)
        self._admin("SPLIT", str(sh.id))

    def join(self) -> None:
        # (Not while a node is dead: a node joins once every shard has a leader.)
        if len(self.c.nodes) >= MAX_NODES or self.dead is not None:
            return
        self.note(f"node{len(self.c.nodes)} joins")
        self.c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S, via=self.rng.choice(self.live() or [0]))

    def drain(self) -> None:
        up = [i for i in self.live() if i != self.dead]
        if self.dead is not None or len(up) <= 3:
            return
        i = self.rng.choice(up)
        nid = self.c.nodes[i].node_id
        self._admin("DRAIN", nid)
        # What STATUS says counts, not the reply: a drain can take effect
        # although its reply was lost or was an error after a retry.
        for _ in range(20):
            st = self._status()
            if st is not None and nid in st.nodes:
                if st.nodes[nid].state in ("draining", "removed"):
                    self.draining.append(i)
                return
            time.sleep(0.5)
        raise AssertionError(f"STATUS does not answer after DRAIN {nid}")

    # -- the end --------------------------------------------------------------
    def undo(self) -> None:
        for n in self.c.nodes:
            if n.paused:
                n.sigcont()
        if self.c.rules:
            self.c.heal()
        self.revive()
        for _ in range(MAX_NODES):  # a cluster begun with one node grows to three
            if len(self.c.nodes) - len(self.draining) >= 3:
                break
            self.join()


def test_random_faults_and_membership_changes(chaos_cl):
    c = chaos_cl
    rng = random.Random(SEED)
    t0 = time.monotonic()
    print(f"\n[chaos] seed {SEED}, {STEPS} steps (SHOAL_CHAOS_SEED={SEED} reruns this sequence)")
    deadline_s = 60.0 + STEPS * 15.0 + FINAL_SETTLE_S
    first = list(range(len(c.nodes)))
    wl = Workload(c, "chaos", plain_nodes=first, deadline_s=deadline_s)
    history = History()
    stop = threading.Event()
    # Two read and write; the third reads with READONLY (replica reads are
    # linearizable too), each starting on another node.
    regs = [RegisterClient(c, cid, REGISTER_KEYS, first[cid % len(first):] + first[:cid % len(first)], history, stop,
                           time.monotonic() + deadline_s, readonly=cid == 2, timeout=5.0, interval=0.03,
                           max_ops=4000, seed=SEED + cid)
            for cid in range(3)]
    # Counters on keys of different shards (their slots are far apart).
    counters = [CounterClient(c, cid, key, first[cid % len(first):] + first[:cid % len(first)], stop,
                              time.monotonic() + deadline_s)
                for cid, key in enumerate(["chaos:count:{a}", "chaos:count:{b}"])]
    c.add_cleanup(stop.set)
    wl.start()
    for r in regs + counters:
        r.start()
    chaos = Chaos(c, rng, t0)
    try:
        for n in range(STEPS):
            chaos.step()
            c.check_alive()
            serving = [i for i, node in enumerate(c.nodes) if i not in chaos.draining]
            wl.retarget(serving)
            for k in counters:
                k.retarget(serving)
            for r in regs:
                r.conn.retarget(serving)
            chaos.hold(0.3, 1.5)
        chaos.undo()
        chaos.note("every fault undone; waiting for placement to settle")

        def final(st: AdminStatus) -> List[str]:
            drained = set(ids_of(c, chaos.draining))
            up = [nid for nid in ids_of(c, range(len(c.nodes))) if nid not in drained]
            out = settled(voters=3, up=up)(st)
            out += [f"drained node {d} is {st.nodes[d].state}" for d in drained
                    if st.nodes[d].state != "removed"]
            return out
        st = c.wait_status(final, FINAL_SETTLE_S, "placement to settle after the chaos "
                           f"(seed {SEED}; steps:\n" + "\n".join(chaos.log) + "\n)")
        chaos.note(f"settled:\n{st}")
        for i in chaos.draining:  # removed: its process has nothing left to serve
            code = c.stop(i)
            assert code == 0, f"node{i} (drained, removed) exited with {code}:\n{c.nodes[i].log_tail()}"
        c.check_alive()
    finally:
        stop.set()
        for r in regs + counters:
            r.join(timeout=30)
    stuck = [r.name for r in regs + counters if r.is_alive()]
    assert not stuck, f"clients did not stop: {stuck}"
    # The registers' last values, read once everything has settled: a last
    # acknowledged write lost at the end would be seen by no other read.
    rc = c.redis_cluster(decode_responses=False)
    try:
        for key in REGISTER_KEYS:
            h = history.invoke("final", READ, key)
            history.ok(h, value=rc.get(key))
    finally:
        rc.close()
    wl.finish()
    unexpected = [u for r in regs + counters for u in r.unexpected]
    assert not unexpected, "unexpected register or counter replies:\n" + "\n".join(unexpected[:20])
    rc = c.redis_cluster(decode_responses=False)
    try:
        for k in counters:
            final = int(rc.get(k.key) or 0)
            print(f"[chaos] {k.key}: {final} after {k.acked} acknowledged and {k.unknown} unknown INCRs")
            assert k.acked > 10, f"{k.key}: only {k.acked} INCRs acknowledged"
            assert k.acked <= final <= k.acked + k.unknown and final >= k.last, (
                f"{k.key} is {final}: {k.acked} INCRs acknowledged (the last answered {k.last}), "
                f"{k.unknown} unknown (seed {SEED})")
    finally:
        rc.close()
    acked = wl.verify(min_acked=20)
    res = check(history.ops(), timeout_s=120.0)
    print(f"[chaos] {len(acked)} acknowledged writes verified; registers: {history.summary()}; "
          f"linearizability: {res.status} ({str(res.explanation):.300})")
    assert res.status == OK, (f"register history not shown linearizable (seed {SEED}):\n{res}\nsteps:\n"
                              + "\n".join(chaos.log))
    done = [o for o in history.ops() if not o.unknown]
    reads = sum(o.kind == READ and o.client == 2 for o in done)
    writes = sum(o.kind != READ for o in done)
    assert reads >= 20 and writes >= 20, (f"too few register operations completed: {reads} READONLY reads, "
                                          f"{writes} writes")
    print(f"[chaos] seed {SEED}: {STEPS} steps, test took {time.monotonic() - t0:.1f} s")
