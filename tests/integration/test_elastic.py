"""Elastic placement seen from outside: real ``shoal server`` processes on
loopback, real clients (redis-py's RedisCluster, plain connections, redis-cli),
the placement driven by the meta leader and observed with SHOAL.ADMIN STATUS.

* grow 3 -> 5 nodes while a cluster-aware and a plain client write: placement
  settles (no move in flight, 3 voters per shard, replicas and leaders per up
  node within one, 5 meta voters), no client operation fails once the clients'
  usual redirect/retry handling is done, every acknowledged write is readable;
* kill -9 one node of 5 for good: it is "down" no sooner than --down-after-ms,
  then every shard is rebuilt to 3 voters on up nodes; no acknowledged write lost;
* the 2-node stage: 1 node, a 2nd joins (each shard 1 voter + 1 learner), the
  2nd is killed and a 3rd joins: writes keep succeeding and cluster_state stays
  ok throughout; after down-after no shard has a voter or learner on the dead
  node; the dead node restarts and every shard gets 3 voters again, with all
  data readable (also by follower reads on the restarted node);
* drain: 4 nodes, one drained by host:port (redis-cli) ends up "removed" and
  listed by no shard, data intact; the admin errors (unknown node, REMOVE of an
  up node holding replicas, DRAIN below the replication factor, unknown
  subcommand) return their exact prefixes and change nothing; BALANCE off/on.

Each test has its own cluster (8 shards, --down-after-ms 3000), grown from one
node by joining nodes one after another, and writes 3000 keys before the change
it makes, so replicas are copied by snapshot. Every wait is bounded; every
process is stopped by PID (cluster_util). Needs SHOAL_BIN. Run with -s to see
the timings and the final SHOAL.ADMIN STATUS of each step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence

import pytest
import redis

from cluster_util import (AckWriter, AdminStatus, Cluster, ClusterClientWriter, StateMonitor, parse_info,
                          key_slot, readonly_read_all, running_cluster, verify_acked)
from conftest import SELFTEST, SHOAL_BIN, RespConn, RespError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SELFTEST, reason="cluster tests need a real shoal binary")]

SHARDS = 8
DOWN_AFTER_MS = 3000
DOWN_AFTER_S = DOWN_AFTER_MS / 1000.0
ELASTIC_ARGS = ["--down-after-ms", str(DOWN_AFTER_MS)]
SETTLE_TIMEOUT_S = 60.0                  # joins / restarts until placement is settled
REPAIR_TIMEOUT_S = DOWN_AFTER_S + 75.0   # a death until its replicas are rebuilt
SAFETY_DEADLINE_S = 200.0                # no workload thread runs longer than this
PRELOAD_KEYS = 3000                      # keys written before a change (copied by snapshots)
REDIS_CLI = shutil.which("redis-cli")


@pytest.fixture
def ecl(tmp_path):
    """A 1-node cluster (8 shards, --down-after-ms 3000); tests grow it with grow()."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=SHARDS, extra_args=ELASTIC_ARGS)


def grow(c: Cluster, n: int, timeout: float = SETTLE_TIMEOUT_S) -> AdminStatus:
    """Join nodes one after another (each as soon as the previous one is a
    member, as an operator scaling out would) until there are ``n``, then wait
    until placement has settled: no move in flight, min(3, n) voters per shard
    (1 voter + 1 learner at 2 nodes), replicas and leaders per up node within
    one (leaders: from 3 nodes), 3 meta voters (5 from 5 nodes, 1 below 3)."""
    t0 = time.monotonic()
    for _ in range(len(c.nodes), n):
        c.add_node(ready=False, timeout=timeout)
    ids = ids_of(c, range(n))
    voters = 1 if n < 3 else 3
    meta = 5 if n >= 5 else (3 if n >= 3 else 1)

    def cond(st: AdminStatus) -> List[str]:
        out = settled(voters=voters, up=ids, meta_voters=meta)(st)
        if n == 2:  # the leaders stay on the only voter
            out = [x for x in out if not x.startswith("leaders per up node")]
            out += [f"shard {sh.id}: learners {sh.learners}" for sh in st.shards
                    if len(sh.learners) != 1]
        return out
    st = c.wait_status(cond, timeout, f"placement to settle after growing to {n} nodes "
                                      f"(a shard still 'moving-to' is wedged)")
    print(f"grew to {n} nodes, settled {time.monotonic() - t0:.1f} s after the first join")
    return st


class Workload:
    """Writers running through a whole scenario: a plain client (retrying
    AckWriter over ``plain_nodes``) and a RedisCluster client; optionally a
    CLUSTER INFO monitor on ``monitor_nodes``."""

    def __init__(self, c: Cluster, tag: str, plain_nodes: Sequence[int],
                 monitor_nodes: Optional[Sequence[int]] = None, deadline_s: float = SAFETY_DEADLINE_S):
        self.c = c
        self.tag = tag
        self.stop_ev = threading.Event()
        deadline = time.monotonic() + deadline_s
        self.plain = AckWriter(c, 0, plain_nodes, self.stop_ev, deadline, key_prefix=f"el:{tag}",
                               interval=0.01, timeout=5.0, retries=30, retry_for=15.0)
        self.rc = ClusterClientWriter(c, self.stop_ev, deadline, prefix=f"el:{tag}:rc",
                                      interval=0.01, retry_attempts=5, socket_timeout=5.0,
                                      retry_for=15.0)
        self.writers = [self.plain, self.rc]
        self.monitor = (StateMonitor(c, monitor_nodes, self.stop_ev, deadline)
                        if monitor_nodes is not None else None)
        self.threads = self.writers + ([self.monitor] if self.monitor else [])
        c.add_cleanup(self.stop)  # a failed test stops the clients before the nodes

    def start(self, warmup: float = 1.0) -> None:
        for t in self.threads:
            t.start()
        time.sleep(warmup)
        for t in self.threads:
            assert t.is_alive(), f"{t.name} ended early: {t.unexpected}"

    def retarget(self, nodes: Sequence[int]) -> None:
        self.plain.retarget(nodes)
        if self.monitor:
            self.monitor.retarget(nodes)

    def acked_count(self) -> int:
        return sum(len(w.acked) for w in self.writers)

    def stop(self, timeout: float = 45.0) -> List[str]:
        self.stop_ev.set()
        stuck = []
        deadline = time.monotonic() + timeout
        for t in self.threads:
            if t.ident is None:
                continue
            t.join(timeout=max(0.1, deadline - time.monotonic()))
            if t.is_alive():
                stuck.append(t.name)
        return stuck

    def finish(self, run_after: float = 1.0) -> None:
        time.sleep(run_after)
        stuck = self.stop()
        assert not stuck, f"workload threads did not stop: {stuck}"
        unexpected = [u for t in self.threads for u in t.unexpected]
        assert not unexpected, "unexpected replies:\n" + "\n".join(unexpected[:20])
        print(f"[{self.tag}] plain writer: {len(self.plain.acked)} acked, {self.plain.retried} "
              f"retries, {len(self.plain.failed)} failed; RedisCluster writer: "
              f"{len(self.rc.acked)} acked, {self.rc.retried} retries, {len(self.rc.failed)} failed"
              + (f"; monitor: {self.monitor.samples} CLUSTER INFO samples, "
                 f"{len(self.monitor.bad)} not ok" if self.monitor else ""))

    def acked(self) -> Dict[str, bytes]:
        out: Dict[str, bytes] = {}
        for w in self.writers:
            out.update(w.acked)
        return out

    def assert_no_failed_ops(self, unknown_ok: bool = False) -> None:
        """``unknown_ok``: a write forwarded to a leader that was killed with
        it in flight may end "outcome is unknown" (never acknowledged, so
        nothing is lost); at most a few are tolerated."""
        failed = self.plain.failed + self.rc.failed
        if unknown_ok:
            unknown = [f for f in failed if "outcome is unknown" in f]
            assert len(unknown) <= 5, unknown
            failed = [f for f in failed if f not in unknown]
        assert not failed, (f"{len(failed)} client operations failed after the clients' "
                            f"redirect/retry handling, e.g.:\n" + "\n".join(failed[:20]))

    def assert_state_ok(self) -> None:
        assert self.monitor is not None and self.monitor.samples > 0
        assert not self.monitor.bad, ("cluster_state was not ok:\n" +
                                      "\n".join(self.monitor.bad[:20]))

    def verify(self, min_acked: int = 50) -> Dict[str, bytes]:
        acked = self.acked()
        assert len(self.plain.acked) > 10 and len(self.rc.acked) > 10, (
            f"too few acknowledged writes: plain {len(self.plain.acked)}, "
            f"RedisCluster {len(self.rc.acked)}")
        assert len(acked) >= min_acked, f"only {len(acked)} acknowledged writes"
        bad = verify_acked(self.c, acked)
        assert not bad, (f"{len(bad)} of {len(acked)} acknowledged writes lost or wrong, e.g.:\n"
                         + "\n".join(bad[:20]))
        return acked


def preload(c: Cluster, prefix: str, n: int) -> Dict[str, bytes]:
    """SET n keys (100-byte values, spread over every shard) through RedisCluster."""
    data = {f"{prefix}:{i}": (f"{prefix}-{i}-".encode() + b"x" * 100)[:100] for i in range(n)}
    rc = c.redis_cluster(decode_responses=False)
    try:
        keys = list(data)
        for k in range(0, n, 500):
            chunk = {key: data[key] for key in keys[k:k + 500]}
            res = rc.mset_nonatomic(chunk)
            assert res and all(r is True for r in res), f"MSET through RedisCluster: {res!r}"
    finally:
        rc.close()
    return data


def load_random(c: Cluster, prefix: str, n: int) -> Dict[str, bytes]:
    """SET n keys of about 2 kB of random (incompressible) bytes each through
    RedisCluster, 200 per MSET."""
    big = {f"{prefix}:{i}": (b"%d-" % i) + os.urandom(2000) for i in range(n)}
    rc = c.redis_cluster(decode_responses=False)
    try:
        keys = list(big)
        for k in range(0, len(keys), 200):
            res = rc.mset_nonatomic({key: big[key] for key in keys[k:k + 200]})
            assert res and all(r is True for r in res), res
    finally:
        rc.close()
    return big


def verify_all(c: Cluster, wl, data: Dict[str, bytes]) -> Dict:
    """Every write the workload saw acknowledged, and every preloaded key, is
    readable with its value; returns the acknowledged writes."""
    acked = wl.verify()
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} preloaded keys lost or wrong, e.g.:\n" + "\n".join(bad[:20])
    return acked


def ids_of(c: Cluster, idx: Sequence[int]) -> List[str]:
    return [c.nodes[i].node_id for i in idx]


def settled(voters: Optional[int] = 3, up: Optional[Sequence[str]] = None,
            meta_voters: Optional[int] = None):
    """A wait_status condition: placement settled and even (see
    AdminStatus.placement_problems) with exactly the nodes ``up`` up (given),
    and ``meta_voters`` meta voters, all up (given)."""
    def cond(st: AdminStatus) -> List[str]:
        out = st.placement_problems(voters=voters)
        if up is not None and sorted(st.ids_in("up")) != sorted(up):
            out.append(f"up nodes {sorted(st.ids_in('up'))}, want {sorted(up)}")
        if meta_voters is not None:
            mv = st.meta_voters()
            if len(mv) != meta_voters or any(st.nodes[m].state != "up" for m in mv):
                out.append(f"meta voters {mv}, want {meta_voters} on up nodes")
            if sorted(st.meta_actual_voters) != sorted(mv):
                out.append(f"meta voters {sorted(st.meta_actual_voters)} in the meta shard, {sorted(mv)} wanted")
        return out
    return cond


def check_header(st: AdminStatus, rf: int = 3, balance: str = "on") -> None:
    assert len(st.cluster_id) == 16, st.lines[0]
    assert st.replication_factor == rf, st.lines[0]
    assert st.balance == balance, st.lines[0]
    assert st.down_after_ms == DOWN_AFTER_MS, st.lines[0]
    assert st.epoch >= 1, st.lines[0]
    assert len(st.shards) == SHARDS, st
    # the shards cover the 16384 slots exactly once, in order
    ranges = sorted(sh.slots for sh in st.shards)
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383, ranges
    for (a, b), (c2, _) in zip(ranges, ranges[1:]):
        assert a <= b and c2 == b + 1, ranges


def check_slots_agree(c: Cluster, st: AdminStatus, via: Sequence[int], timeout: float = 20.0):
    """CLUSTER SLOTS on each node in ``via`` names, for every shard, the leader
    and the voters SHOAL.ADMIN STATUS shows (bounded wait: routing catches up)."""
    by_range = {sh.slots: sh for sh in st.shards}
    deadline = time.monotonic() + timeout
    for i in via:
        last = None
        for _ in range(1000):
            last = []
            try:
                for a, b, nodes in c.slots(via=i):
                    sh = by_range.get((a, b))
                    if sh is None:
                        last.append(f"range {a}-{b} is no shard of STATUS")
                        continue
                    ids = [nid[:16] for _, _, nid in nodes]
                    if not ids or ids[0] != sh.leader or sorted(ids) != sorted(sh.voters):
                        last.append(f"{a}-{b}: SLOTS {ids}, STATUS leader {sh.leader} "
                                    f"voters {sh.voters}")
            except AssertionError as e:
                last.append(repr(e))
            if not last or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not last, f"CLUSTER SLOTS on node{i} disagrees with SHOAL.ADMIN STATUS: {last}"


# --------------------------------------------------------------------------
# 1. grow 3 -> 5 under writes
# --------------------------------------------------------------------------

def test_grow_3_to_5_under_writes(ecl):
    c = ecl
    t_begin = time.monotonic()
    st = grow(c, 3)
    check_header(st)
    for i in range(3):  # every node answers (a follower relays to the meta leader)
        assert AdminStatus(c.admin("STATUS", via=i)).nodes.keys() == st.nodes.keys()
    data = preload(c, "pre:grow", PRELOAD_KEYS)  # the new nodes must copy something

    wl = Workload(c, "grow", plain_nodes=[0, 1, 2])
    wl.start()
    before = wl.acked_count()
    for _ in range(2):
        node = c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)
        wl.retarget(range(len(c.nodes)))  # the plain client uses the new node too
        print(f"[grow] {node.name} joined ({node.node_id}) "
              f"{time.monotonic() - t_begin:.1f} s into the test")
    t_joined = time.monotonic()
    st = c.wait_status(settled(voters=3, up=ids_of(c, range(5)), meta_voters=5),
                       SETTLE_TIMEOUT_S, "5 nodes settled and balanced")
    print(f"[grow] settled {time.monotonic() - t_joined:.1f} s after the 5th node joined:\n{st}")
    check_header(st)
    for nid in ids_of(c, [3, 4]):
        assert st.nodes[nid].replicas >= 4 and st.nodes[nid].leaders >= 1, st
    check_slots_agree(c, st, via=range(5))
    assert wl.acked_count() > before + 20, "the writers stalled while the cluster grew"
    # The new nodes got their data as streamed snapshots (chunks beside Raft).
    for i in (3, 4):
        raft = parse_info(c.nodes[i].call("INFO", "raft"))
        assert int(raft["snapshot_bytes_received"]) > 0, raft
    sent = sum(int(parse_info(c.nodes[i].call("INFO", "raft"))["snapshots_sent"]) for i in range(3))
    assert sent >= 4, f"only {sent} snapshots streamed to the new nodes"
    # SHOAL.ADMIN STATUS sums the nodes' transfer counters (gossiped)
    st = c.admin_status()
    assert st.transfer_bytes_received > 0 and st.transfer_bytes_sent > 0, st

    wl.finish()
    wl.assert_no_failed_ops()
    acked = verify_all(c, wl, data)
    print(f"[grow] {len(acked)} acknowledged writes and {len(data)} preloaded keys verified; "
          f"test took {time.monotonic() - t_begin:.1f} s")


@pytest.fixture
def ecl_none(tmp_path):
    """As ecl, with --durability none: a one-node cluster's groups have one
    member, which applies and answers a write in the round that logs it."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=SHARDS, extra_args=ELASTIC_ARGS,
                               durability="none")


def test_grow_from_one_node_with_durability_none_under_writes(ecl_none):
    """Writes answered by one-member groups (durability none: committed as
    they are logged) while two nodes join and every group grows to three
    voters: none is lost, and the new nodes serve them."""
    c = ecl_none
    t_begin = time.monotonic()
    data = preload(c, "pre:none", PRELOAD_KEYS)
    wl = Workload(c, "none", plain_nodes=[0])
    wl.start()
    time.sleep(1.0)
    before = wl.acked_count()
    assert before > 20, "the writers made no progress on one node"
    st = grow(c, 3)
    wl.retarget(range(3))
    time.sleep(1.0)
    check_slots_agree(c, st, via=range(3))
    assert wl.acked_count() > before + 20, "the writers stalled while the cluster grew"
    wl.finish()
    wl.assert_no_failed_ops()
    acked = verify_all(c, wl, data)
    # Every node holds every shard now: READONLY reads on the new ones see it all.
    sample = dict(list(acked.items())[:: max(1, len(acked) // 1000)])
    sample.update(list(data.items())[::10])
    for i in (1, 2):
        verified, wrong = readonly_read_all(c, i, sample, timeout=30)
        assert not wrong, f"stale reads on node{i}:\n" + "\n".join(wrong[:20])
        assert verified == len(sample), f"node{i} served {verified} of {len(sample)} keys by READONLY reads"
    print(f"[none] {len(acked)} acknowledged writes ({before} on one node) and {len(data)} preloaded keys "
          f"verified ({len(sample)} also by READONLY reads on the new nodes); test took "
          f"{time.monotonic() - t_begin:.1f} s")


# --------------------------------------------------------------------------
# 2. kill -9 one node of 5 for good
# --------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["shard-leader", "meta-leader"])
def test_kill9_one_of_five_rebuilds_replicas(ecl, which):
    """``which``: the victim leads the most shards (not the meta shard), or it
    leads the meta shard (the placement driver then moves to another node, which
    must see the death by itself)."""
    c = ecl
    t_begin = time.monotonic()
    st = grow(c, 5)
    check_header(st)
    data = preload(c, "pre:kill", PRELOAD_KEYS)
    meta_leader = c.meta_leader()
    if which == "meta-leader":
        victim = meta_leader
    else:
        victim = max((i for i in range(5) if i != meta_leader),
                     key=lambda i: (st.nodes[c.nodes[i].node_id].leaders,
                                    st.nodes[c.nodes[i].node_id].replicas))
    vid = c.nodes[victim].node_id
    print(f"[kill] meta leader: node{meta_leader}; victim: node{victim} ({which})")
    held = [sh.id for sh in st.shards if vid in sh.members()]
    assert held, f"node{victim} holds no replica: {st}"
    others = [i for i in range(5) if i != victim]

    wl = Workload(c, "kill", plain_nodes=others)
    wl.start()
    t_kill = time.monotonic()
    c.kill9(victim)
    print(f"[kill] killed node{victim} ({vid}), which held shards {held} and led "
          f"{st.nodes[vid].leaders}")

    # "down" no sooner than --down-after-ms (polled every 0.25 s)
    seen_up_at = t_kill
    t_down = None
    for _ in range(2000):
        s2 = c.admin_status()
        now = time.monotonic()
        state = s2.nodes[vid].state
        if state == "up":
            seen_up_at = now
        elif state == "down":
            t_down = now
            break
        else:
            raise AssertionError(f"node{victim} is {state!r}, expected up or down:\n{s2}")
        if now - t_kill > DOWN_AFTER_S + 30:
            break
        time.sleep(0.25)
    assert t_down is not None, f"node{victim} never marked down:\n{c.admin_status()}"
    print(f"[kill] marked down between {seen_up_at - t_kill:.2f} and {t_down - t_kill:.2f} s "
          f"after the kill (down-after {DOWN_AFTER_S} s)")
    assert t_down - t_kill >= DOWN_AFTER_S - 0.3, (
        f"node{victim} was marked down {t_down - t_kill:.2f} s after its death, before "
        f"--down-after-ms {DOWN_AFTER_MS}")

    st = c.wait_status(settled(voters=3, up=ids_of(c, others), meta_voters=3),
                       REPAIR_TIMEOUT_S, "every shard rebuilt to 3 voters on up nodes")
    print(f"[kill] replicas rebuilt {time.monotonic() - t_kill:.1f} s after the kill:\n{st}")
    assert st.nodes[vid].state == "down", st
    assert st.nodes[vid].replicas == 0 and st.nodes[vid].leaders == 0, st
    assert not [sh for sh in st.shards if vid in sh.members()], st
    acked_at_repair = wl.acked_count()
    check_slots_agree(c, st, via=others)

    wl.finish(run_after=2.0)
    assert wl.acked_count() > acked_at_repair, "no write acknowledged after the repair"
    acked = verify_all(c, wl, data)
    print(f"[kill] {len(acked)} acknowledged writes and {len(data)} preloaded keys verified "
          f"(failed after retries: {(wl.plain.failed + wl.rc.failed)[:5]}); test took "
          f"{time.monotonic() - t_begin:.1f} s")


# --------------------------------------------------------------------------
# 3. the 2-node stage
# --------------------------------------------------------------------------

def test_two_node_stage_survives_a_death_and_a_join(ecl):
    c = ecl
    t_begin = time.monotonic()
    id0 = c.nodes[0].node_id
    st = c.wait_status(settled(voters=1, up=[id0]), SETTLE_TIMEOUT_S, "1 node settled")
    check_header(st)
    data = preload(c, "pre:two", PRELOAD_KEYS)  # the 2nd node copies it, and is killed

    wl = Workload(c, "two", plain_nodes=[0], monitor_nodes=[0])
    wl.start()

    # 2 nodes: every shard 1 voter + 1 learner, so losing either node never wedges it
    c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)
    id1 = c.nodes[1].node_id

    def two_nodes(s: AdminStatus) -> List[str]:
        out = []
        if sorted(s.ids_in("up")) != sorted([id0, id1]) or s.moves_in_flight != 0:
            out.append(f"up {s.ids_in('up')}, moves {s.moves_in_flight}")
        for sh in s.shards:
            if (sh.moving or len(sh.voters) != 1 or len(sh.learners) != 1
                    or sorted(sh.voters + sh.learners) != sorted([id0, id1])):
                out.append(f"shard {sh.id}: voters {sh.voters} learners {sh.learners}"
                           + (" (moving)" if sh.moving else ""))
            if sh.leader not in (id0, id1):
                out.append(f"shard {sh.id}: no leader")
        return out
    st = c.wait_status(two_nodes, SETTLE_TIMEOUT_S, "1 voter + 1 learner per shard on 2 nodes")
    print(f"[two] 2-node stage:\n{st}")

    t_kill = time.monotonic()
    acked_at_kill = wl.acked_count()
    c.kill9(1)
    c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)  # node2 joins through node0
    id2 = c.nodes[2].node_id
    live = [id0, id2]
    print(f"[two] killed node1 ({id1}); node2 ({id2}) joined "
          f"{time.monotonic() - t_kill:.1f} s later")

    def only_live(s: AdminStatus) -> List[str]:
        out = []
        if s.nodes[id1].state != "down":
            out.append(f"node1 is {s.nodes[id1].state}")
        if s.moves_in_flight != 0:
            out.append(f"moves-in-flight {s.moves_in_flight}")
        for sh in s.shards:
            if not sh.voters or any(v not in live for v in sh.voters):
                out.append(f"shard {sh.id}: voters {sh.voters}")
            if any(x not in live for x in sh.members()):
                out.append(f"shard {sh.id}: replicas on a dead node: {sh}")
            if sh.leader not in live:
                out.append(f"shard {sh.id}: leader {sh.leader}")
        return out
    st = c.wait_status(only_live, REPAIR_TIMEOUT_S,
                       "every shard's voters and learners on live nodes only")
    print(f"[two] {time.monotonic() - t_kill:.1f} s after the kill:\n{st}")
    assert wl.acked_count() > acked_at_kill + 20, "writes stalled after the kill"
    wl.assert_state_ok()  # from the start through the kill, the join and down-after
    phase1_samples = wl.monitor.samples
    wl.retarget([0, 2])

    # the dead node comes back: 3 up nodes, 3 voters per shard again
    t_restart = time.monotonic()
    c.restart(1)
    st = c.wait_status(settled(voters=3, up=[id0, id1, id2], meta_voters=3),
                       SETTLE_TIMEOUT_S, "3 voters per shard after node1's restart")
    assert sorted(st.nodes) == sorted([id0, id1, id2]), f"node1 came back as a new node?\n{st}"
    print(f"[two] settled {time.monotonic() - t_restart:.1f} s after node1's restart:\n{st}")
    wl.retarget([0, 1, 2])
    time.sleep(1.0)

    wl.finish()
    wl.assert_no_failed_ops()
    print(f"[two] after node1's restart (leaders rebalanced): "
          f"{wl.monitor.samples - phase1_samples} CLUSTER INFO samples, not ok: {wl.monitor.bad}")
    acked = verify_all(c, wl, data)
    # the restarted node holds every shard again: follower reads there see it all
    sample = dict(list(acked.items())[:: max(1, len(acked) // 1000)])
    sample.update(list(data.items())[::10])
    verified, wrong = readonly_read_all(c, 1, sample, timeout=30)
    assert not wrong, "stale reads on the restarted node:\n" + "\n".join(wrong[:20])
    assert verified == len(sample), (f"node1 served only {verified} of {len(sample)} "
                                     f"acknowledged keys by READONLY reads within 30 s")
    print(f"[two] {len(acked)} acknowledged writes and {len(data)} preloaded keys verified "
          f"({len(sample)} also by READONLY reads on node1); test took "
          f"{time.monotonic() - t_begin:.1f} s")


# --------------------------------------------------------------------------
# 4. drain, and the admin errors
# --------------------------------------------------------------------------

def _shape(st: AdminStatus):
    """What an admin command that fails must not change."""
    return (st.epoch, st.balance, {i: n.state for i, n in st.nodes.items()},
            sorted((sh.id, tuple(sh.want_voters), tuple(sh.want_learners)) for sh in st.shards))


def _expect_error(c: Cluster, prefix: str, *args, via: Optional[int] = None) -> str:
    v = c.admin(*args, via=via)
    assert isinstance(v, RespError), f"SHOAL.ADMIN {' '.join(args)} -> {v!r}, expected an error"
    assert v.startswith(prefix), f"SHOAL.ADMIN {' '.join(args)} -> {v!r}, expected {prefix!r}..."
    return str(v)


def _cli(c: Cluster, i: int, *args) -> str:
    assert REDIS_CLI, "redis-cli is not installed"
    n = c.nodes[i]
    r = subprocess.run([REDIS_CLI, "-h", n.host, "-p", str(n.port), *args],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r
    return r.stdout.decode()


def test_drain_and_admin_errors(ecl):
    c = ecl
    t_begin = time.monotonic()
    st = grow(c, 4)
    ids = ids_of(c, range(4))
    check_header(st)
    data = preload(c, "pre:drain", PRELOAD_KEYS)
    plan = c.admin("PLAN")
    assert plan == [], f"SHOAL.ADMIN PLAN on a settled cluster: {plan!r}"

    # errors on a settled cluster: exact prefixes, nothing changes
    shape = _shape(st)
    _expect_error(c, "ERR no such node", "DRAIN", "ffffffffffffffff")
    _expect_error(c, "ERR no such node", "DRAIN", "127.0.0.1:1")
    _expect_error(c, "ERR no such node", "REMOVE", "no-such-node", via=1)
    err = _expect_error(c, f"ERR node {ids[2]} is up and holds replicas: drain it first",
                        "REMOVE", ids[2])
    err2 = _expect_error(c, f"ERR node {ids[3]} is up and holds replicas: drain it first",
                         "REMOVE", c.nodes[3].address, via=2)
    for args in (["FROB"], ["DRAIN"], ["STATUS", "x"], ["BALANCE", "maybe"],
                 ["DRAIN", ids[3], ids[2]]):
        _expect_error(c, "ERR unknown SHOAL.ADMIN subcommand", *args)
    # redis-cli sees the same error
    out = _cli(c, 1, "SHOAL.ADMIN", "FROB")
    assert out.startswith("ERR unknown SHOAL.ADMIN subcommand"), out
    time.sleep(1.0)
    st = c.admin_status()
    assert _shape(st) == shape, f"failed admin commands changed the cluster:\n{st}"
    print(f"[drain] errors: {err!r}, {err2!r}")

    # BALANCE off / on
    assert c.admin("BALANCE", "off") == [b"balance off"]
    assert c.admin_status(via=3).balance == "off"
    assert c.admin("BALANCE", "ON", via=2) == [b"balance on"]
    assert c.admin_status().balance == "on"

    wl = Workload(c, "drain", plain_nodes=[0, 1, 2])
    wl.start()

    # drain node3 by host:port, through redis-cli on node0
    victim, vid = 3, ids[3]
    out = _cli(c, 0, "SHOAL.ADMIN", "DRAIN", c.nodes[victim].address).strip()
    assert out == f"draining node {vid}", out
    t_drain = time.monotonic()
    st = c.admin_status()
    assert st.nodes[vid].state in ("draining", "removed"), st
    # with node3 draining (or gone) only 2 other up nodes would be left
    err = _expect_error(c, "ERR cannot drain: ", "DRAIN", ids[2])
    _expect_error(c, "ERR cannot drain: ", "DRAIN", c.nodes[1].address)
    st2 = c.admin_status()
    assert st2.nodes[ids[2]].state == "up" and st2.nodes[ids[1]].state == "up", st2
    print(f"[drain] {err!r}")

    def drained(s: AdminStatus) -> List[str]:
        out = settled(voters=3, up=ids[:3], meta_voters=3)(s)
        if s.nodes[vid].state != "removed":
            out.append(f"node3 is {s.nodes[vid].state}")
        if s.nodes[vid].replicas or s.nodes[vid].leaders or s.nodes[vid].meta_voter:
            out.append(f"node3 still holds something: {s.nodes[vid]}")
        listed = [sh.id for sh in s.shards if vid in sh.members()]
        if listed:
            out.append(f"shards {listed} still list node3")
        return out
    st = c.wait_status(drained, SETTLE_TIMEOUT_S, "node3 drained and removed")
    print(f"[drain] node3 removed {time.monotonic() - t_drain:.1f} s after DRAIN:\n{st}")
    for sh in st.shards:  # 3 up nodes, 3 voters: every node holds every shard
        assert sorted(sh.voters) == sorted(ids[:3]) and not sh.learners, sh
    check_slots_agree(c, st, via=range(3))

    # a removed node stays removed; the 3 left cannot be drained below rf
    shape = _shape(st)
    _expect_error(c, f"ERR node {vid} is already removed", "DRAIN", vid)
    _expect_error(c, f"ERR node {vid} is already removed", "REMOVE", c.nodes[victim].address)
    _expect_error(c, "ERR cannot drain: 2 up nodes would remain", "DRAIN", ids[0])
    _expect_error(c, "ERR node ", "REMOVE", ids[1])
    time.sleep(1.0)
    st = c.admin_status()
    assert _shape(st) == shape, f"failed admin commands changed the cluster:\n{st}"

    wl.finish()
    wl.assert_no_failed_ops()
    acked = verify_all(c, wl, data)
    print(f"[drain] {len(acked)} acknowledged writes and {len(data)} preloaded keys verified; "
          f"test took {time.monotonic() - t_begin:.1f} s")


# --------------------------------------------------------------------------
# 5. MOVE and TRANSFER by hand (balance off keeps them), and their errors
# --------------------------------------------------------------------------

def test_move_and_transfer_by_hand(ecl):
    c = ecl
    st = grow(c, 4)
    ids = ids_of(c, range(4))
    data = preload(c, "pre:move", PRELOAD_KEYS)
    assert c.admin("BALANCE", "off") == [b"balance off"]
    st = c.admin_status()
    shard = next(s for s in st.shards if not s.moving and s.leader)
    src = next(v for v in shard.voters if v != shard.leader)
    dst = next(i for i in ids if i not in shard.members())
    other = next(i for i in shard.voters if i != src)

    # errors first: exact prefixes, nothing changes
    shape = _shape(st)
    _expect_error(c, "ERR no such shard", "MOVE", "9999", src, dst)
    _expect_error(c, "ERR no such shard", "MOVE", "x", src, dst)
    _expect_error(c, "ERR no such node", "MOVE", str(shard.id), "ffffffffffffffff", dst)
    _expect_error(c, f"ERR node {dst} holds no replica of shard {shard.id}", "MOVE", str(shard.id), dst, src)
    _expect_error(c, f"ERR node {other} already holds a replica of shard {shard.id}",
                  "MOVE", str(shard.id), src, other, via=2)
    _expect_error(c, f"ERR node {dst} is not a voter of shard {shard.id}", "TRANSFER", str(shard.id), dst)
    _expect_error(c, "ERR unknown SHOAL.ADMIN subcommand", "MOVE", str(shard.id), src)
    time.sleep(1.0)
    assert _shape(c.admin_status()) == shape, "failed MOVE/TRANSFER changed the cluster"

    wl = Workload(c, "move", plain_nodes=[0, 1, 2, 3])
    wl.start()
    # MOVE through the CLI, by host:port for the target
    out = _cli_admin(c, 1, "move", str(shard.id), src, c.nodes[ids.index(dst)].address)
    assert f"shard {shard.id}: moving its replica from {src} to {dst}" in out, out

    _wait_moved(c, shard.id, src, dst)

    out = _cli_admin(c, 2, "transfer", str(shard.id), dst)
    assert f"shard {shard.id}: leadership moving to {dst}" in out, out

    def led(s: AdminStatus) -> List[str]:
        sh = next(x for x in s.shards if x.id == shard.id)
        return [] if sh.leader == dst else [f"shard {shard.id} led by {sh.leader}"]
    c.wait_status(led, SETTLE_TIMEOUT_S, f"shard {shard.id} led by {dst}")
    # balance off: the driver leaves the hand-made placement alone
    time.sleep(2.0)
    st = c.admin_status()
    sh = next(x for x in st.shards if x.id == shard.id)
    assert sh.leader == dst and dst in sh.voters and src not in sh.members(), st
    assert sh.incarnations.get(dst, 0) >= 1, sh  # placed after the shard began

    # Back onto src, which held it before: a new incarnation there (a new
    # Raft member; its old one was deleted), caught up while writes go on.
    back_from = next(v for v in sh.voters if v not in (dst, src))
    out = _cli_admin(c, 3, "move", str(shard.id), back_from, src)
    assert f"shard {shard.id}: moving its replica from {back_from} to {src}" in out, out
    _wait_moved(c, shard.id, back_from, src)
    sh = next(x for x in c.admin_status().shards if x.id == shard.id)
    assert sh.incarnations.get(src, 0) > sh.incarnations[dst], sh

    wl.finish()
    wl.assert_no_failed_ops()
    verify_all(c, wl, data)
    assert c.admin("BALANCE", "on") == [b"balance on"]
    c.wait_status(settled(voters=3, up=ids), SETTLE_TIMEOUT_S, "balanced again")


def _wait_moved(c: Cluster, shard_id: int, src: str, dst: str) -> None:
    """Until shard ``shard_id``'s replica has moved from ``src`` to ``dst``:
    a leader known, no move in flight, ``dst`` a voter, ``src`` gone, three
    voters. With no leader known the status lists the voters the metadata
    wants, not the ones the group has (seen: a move that looked done right
    after an election, its image not yet sent)."""
    def moved(s: AdminStatus) -> List[str]:
        sh = next(x for x in s.shards if x.id == shard_id)
        if (not sh.leader_known or sh.moving or dst not in sh.voters or src in sh.members()
                or len(sh.voters) != 3):
            return [f"shard {shard_id}: {sh}"]
        return []
    c.wait_status(moved, SETTLE_TIMEOUT_S, f"shard {shard_id} moved to {dst}")


def _cli_admin(c: Cluster, i: int, *args, timeout: float = 30.0) -> str:
    """shoal admin on node i; asked again (bounded) while it answers TRYAGAIN,
    as it says to (another cluster change, e.g. the previous command's, is
    still being applied)."""
    n = c.nodes[i]
    deadline = time.monotonic() + timeout
    for _ in range(200):
        r = subprocess.run([SHOAL_BIN, "admin", "--host", n.host, "--port", str(n.port), *args],
                           capture_output=True, timeout=60)
        if r.returncode == 0 or b"TRYAGAIN" not in r.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.returncode == 0, r
    return r.stdout.decode()


# --------------------------------------------------------------------------
# 6. a partition in the middle of a move: nothing lost, it finishes after
# --------------------------------------------------------------------------

@pytest.fixture
def slow_snapshots_cl(tmp_path):
    """As ecl, with snapshots sent at 1 MB/s per node: moves last long enough
    to cut a node off in the middle of one."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=SHARDS,
                               extra_args=ELASTIC_ARGS + ["--snapshot-rate-mb", "1"])


def test_partition_in_the_middle_of_a_move(slow_snapshots_cl):
    c = slow_snapshots_cl
    grow(c, 3)
    ok, why = c.iptables_usable()
    if not ok:
        pytest.skip(why)
    big = load_random(c, "pre:part", 3000)  # about 0.75 MB per shard
    wl = Workload(c, "part", plain_nodes=[0, 1, 2])
    wl.start()
    node = c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)
    new = node.index
    # wait until a snapshot is on its way to the new node
    deadline = time.monotonic() + 30
    received = 0
    while time.monotonic() < deadline:
        received = int(parse_info(node.call("INFO", "raft"))["snapshot_bytes_received"])
        if received > 0:
            break
        time.sleep(0.05)
    assert received > 0, "no snapshot reached the new node"
    c.partition(new)
    t_cut = time.monotonic()
    time.sleep(2.0)  # under down-after-ms: the transfers stall, nothing is replanned
    during = int(parse_info(node.call("INFO", "raft"))["snapshot_bytes_received"])
    problems = c.heal()
    assert not problems, problems
    print(f"[part] cut {new} for {time.monotonic() - t_cut:.1f} s after {received} bytes "
          f"({during} when healed)")
    ids = ids_of(c, range(4))
    st = c.wait_status(settled(voters=3, up=ids), SETTLE_TIMEOUT_S + 30,
                       "the moves to finish after the partition healed")
    for sh in st.shards:
        assert len(sh.voters) == 3, sh
    assert st.nodes[ids[new]].replicas >= 5, st
    raft = parse_info(node.call("INFO", "raft"))
    total = int(raft["snapshot_bytes_received"])
    print(f"[part] settled; the new node received {total} snapshot bytes:\n{st}")
    wl.finish()
    wl.assert_no_failed_ops()
    verify_all(c, wl, big)
    # the copies on the new node hold the data: read it there (READONLY)
    held = [sh for sh in st.shards if ids[new] in sh.voters]
    assert held, st


@pytest.fixture
def slow_one_shard_cl(tmp_path):
    """One shard, snapshots sent at 1 MB/s per node (after a burst of two
    4 MiB chunks): a copy of 14 MB takes seconds, long enough to move the
    shard's leadership in the middle of it."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=1,
                               extra_args=ELASTIC_ARGS + ["--snapshot-rate-mb", "1"])


def _raft_counter(c: Cluster, i: int, name: str) -> int:
    return int(parse_info(c.nodes[i].call("INFO", "raft"))[name])


@pytest.mark.parametrize("how", ["stall", "kill9"])
def test_leader_change_in_the_middle_of_a_copy(slow_one_shard_cl, how):
    """A shard's leader stalls (SIGSTOP) for longer than an election timeout,
    or is killed (kill -9) and restarted, while its snapshot streams to a
    new replica: another voter is elected, and the copy is not started over.
    After a stall the former leader's transfer goes on (whether or not it
    leads again); after a restart the node takes its transfer up again from
    the bytes the receiver holds. The new replica takes the image as it
    arrives: a committed state, whoever sent it."""
    c = slow_one_shard_cl
    grow(c, 3)
    big = load_random(c, "pre:lc", 7000)  # about 14 MB
    data_bytes = sum(len(k) + len(v) for k, v in big.items())
    assert c.admin("BALANCE", "off") == [b"balance off"]
    node = c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)
    ids = ids_of(c, range(4))
    dst = ids[node.index]
    st = c.admin_status()
    shard = next(s for s in st.shards if not s.moving and s.leader)
    old = shard.leader
    src = next(v for v in shard.voters if v != old)
    o = ids.index(old)

    def term_on(i: int) -> int:
        g = str(parse_info(c.nodes[i].call("INFO", "raft"))[f"group{shard.id}"])
        return int(dict(kv.split("=", 1) for kv in g.split(","))["term"])
    term0 = term_on(o)
    sent0 = _raft_counter(c, o, "snapshot_bytes_sent")
    recalled0 = _raft_counter(c, o, "snapshots_recalled")

    wl = Workload(c, "lc", plain_nodes=[i for i in range(3) if i != o])
    wl.start()
    assert c.admin("MOVE", str(shard.id), src, dst)[0].startswith(b"shard")
    deadline = time.monotonic() + 30
    received = 0
    while time.monotonic() < deadline and received == 0:
        received = _raft_counter(c, node.index, "snapshot_bytes_received")
        time.sleep(0.05)
    assert received > 0, "no snapshot reached the new node"
    def elected() -> int:
        # the two other voters elect one of them (bounded wait)
        for _ in range(100):
            term = max(term_on(i) for i in range(3) if i != o)
            if term > term0:
                break
            time.sleep(0.1)
        return term
    if how == "stall":
        c.nodes[o].sigstop()
        at_stop = _raft_counter(c, node.index, "snapshot_bytes_received")
        time.sleep(1.5)
        term_during = elected()
        c.nodes[o].sigcont()
    else:
        c.kill9(o)
        at_stop = _raft_counter(c, node.index, "snapshot_bytes_received")
        term_during = elected()
        c.restart(o)
        sent0 = recalled0 = 0  # the counters start again with the process

    _wait_moved(c, shard.id, src, dst)
    total = _raft_counter(c, node.index, "snapshot_bytes_received")
    sent = _raft_counter(c, o, "snapshot_bytes_sent") - sent0
    recalled = _raft_counter(c, o, "snapshots_recalled") - recalled0
    taken = _raft_counter(c, node.index, "snapshots_taken_on_arrival")
    print(f"[lc:{how}] shard {shard.id}: leader {old} stopped after {at_stop} bytes had arrived (term {term0} -> "
          f"{term_during}); it sent {sent} bytes {'in all' if how == 'stall' else 'after its restart'} and "
          f"abandoned {recalled} transfer(s); the new replica received {total} bytes ({data_bytes} of data) "
          f"and took {taken} image(s) on arrival")
    assert term_during > term0, "no other leader was elected while the leader was stopped"
    assert recalled == 0, "the former leader abandoned its transfer"
    assert taken >= 1, "the new replica did not take the image on arrival"
    if how == "stall":
        assert at_stop < sent, "the image had all arrived before the leader stalled: nothing was tested"
        assert sent < 1.3 * data_bytes, "the former leader's copy started over"
    else:
        # it sent the rest after its restart, not the whole image again
        assert 0 < sent < data_bytes - at_stop + (4 << 20), "the restarted node did not go on from where it was"
    wl.finish()
    wl.assert_no_failed_ops(unknown_ok=how == "kill9")
    verify_all(c, wl, big)


# --------------------------------------------------------------------------
# 7. grow 3 -> 5 -> 7, then drain 7 -> 3, under writes
# --------------------------------------------------------------------------

def test_grow_to_seven_then_drain_to_three(ecl):
    c = ecl
    t_begin = time.monotonic()
    grow(c, 3)
    data = preload(c, "pre:g7", PRELOAD_KEYS)
    wl = Workload(c, "g7", plain_nodes=[0, 1, 2])
    wl.start()
    for n in (5, 7):
        for _ in range(len(c.nodes), n):
            c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)
        wl.retarget(range(n))
        st = c.wait_status(settled(voters=3, up=ids_of(c, range(n)), meta_voters=5),
                           SETTLE_TIMEOUT_S + 30, f"{n} nodes settled and balanced")
        check_header(st)
        print(f"[g7] {n} nodes balanced {time.monotonic() - t_begin:.1f} s into the test")
    # shrink by draining the four newest, one after another (through the CLI)
    wl.retarget([0, 1, 2])
    for victim in (6, 5, 4, 3):
        vid = c.nodes[victim].node_id
        out = _cli_admin(c, 0, "drain", vid, "--timeout", str(int(SETTLE_TIMEOUT_S)))
        assert f"drained and removed {vid}" in out, out
        print(f"[g7] shoal admin drain node{victim}:\n{out}")
        c.stop(victim)
    ids = ids_of(c, range(3))
    st = c.wait_status(settled(voters=3, up=ids, meta_voters=3), SETTLE_TIMEOUT_S,
                       "back to 3 nodes")
    for sh in st.shards:
        assert sorted(sh.voters) == sorted(ids) and not sh.learners, sh
    check_slots_agree(c, st, via=range(3))
    wl.finish()
    wl.assert_no_failed_ops()
    acked = verify_all(c, wl, data)
    print(f"[g7] {len(acked)} acknowledged writes and {len(data)} preloaded keys verified; "
          f"test took {time.monotonic() - t_begin:.1f} s")


# --------------------------------------------------------------------------
# 8. unsafe recovery of shards whose majority is lost for good
# --------------------------------------------------------------------------

def _writes_go_through(c: Cluster, prefix: str, n: int) -> None:
    """n fresh keys SET through RedisCluster are all acknowledged and read back."""
    rc = c.redis_cluster(decode_responses=False)
    try:
        fresh = {f"{prefix}:{i}": b"v%d" % i for i in range(n)}
        res = rc.mset_nonatomic(fresh)
        assert res and all(x is True for x in res), res
    finally:
        rc.close()
    assert not verify_acked(c, fresh)


def test_unsafe_recovery_after_losing_a_majority(ecl):
    c = ecl
    st = grow(c, 5)
    ids = ids_of(c, range(5))
    data = preload(c, "pre:rec", PRELOAD_KEYS)
    time.sleep(1.0)  # every voter has applied the preload
    # two nodes that share at least one shard die for good
    pair = next((a, b) for a in range(5) for b in range(a + 1, 5)
                if any(ids[a] in sh.voters and ids[b] in sh.voters for sh in st.shards))
    lost = [sh for sh in st.shards if ids[pair[0]] in sh.voters and ids[pair[1]] in sh.voters]
    survivors = [i for i in range(5) if i not in pair]
    print(f"[rec] killing node{pair[0]} and node{pair[1]}; shards {[s.id for s in lost]} lose "
          f"their majority")
    healthy = next(sh for sh in st.shards if sh not in lost)
    for i in pair:
        c.kill9(i)

    def down(s: AdminStatus) -> List[str]:
        return [f"node{i} is {s.nodes[ids[i]].state}" for i in pair if s.nodes[ids[i]].state != "down"]
    c.wait_status(down, DOWN_AFTER_S + 30, "the two nodes down")

    # refusals first
    sh0 = lost[0]
    keeper = next(v for v in sh0.voters if v not in (ids[pair[0]], ids[pair[1]]))
    _expect_error(c, "ERR RECOVER is unsafe and must say so", "RECOVER", str(sh0.id), keeper,
                  via=survivors[0])
    _expect_error(c, "ERR wrong number of arguments", "RECOVER", str(sh0.id), keeper, "UNSAFE", "extra",
                  via=survivors[0])
    _expect_error(c, f"ERR node {ids[pair[0]]} is not up", "RECOVER", str(sh0.id), ids[pair[0]], "UNSAFE",
                  via=survivors[0])
    if any(v not in (ids[pair[0]], ids[pair[1]]) for v in healthy.voters):
        live = next(v for v in healthy.voters if v not in (ids[pair[0]], ids[pair[1]]))
        _expect_error(c, f"ERR shard {healthy.id} still has a majority", "RECOVER", str(healthy.id), live,
                      "UNSAFE", via=survivors[0])
    r = subprocess.run([SHOAL_BIN, "admin", "--host", c.nodes[survivors[0]].host, "--port",
                        str(c.nodes[survivors[0]].port), "recover", str(sh0.id), keeper],
                       capture_output=True, timeout=60)
    assert r.returncode == 2 and b"--unsafe" in r.stderr, r

    for sh in lost:
        keep = next(v for v in sh.voters if v not in (ids[pair[0]], ids[pair[1]]))
        out = _cli_admin(c, survivors[0], "recover", str(sh.id), keep, "--unsafe")
        assert f"shard {sh.id}: UNSAFE recovery 1 on {keep}" in out, out
    st = c.wait_status(settled(voters=3, up=ids_of(c, survivors), meta_voters=3),
                       REPAIR_TIMEOUT_S, "every shard back at 3 voters on the survivors")
    print(f"[rec] recovered:\n{st}")
    for sh in st.shards:
        assert not set(sh.members()) & {ids[pair[0]], ids[pair[1]]}, sh
    # what the survivors held is all there, and the shards take writes again
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} preloaded keys lost, e.g. {bad[:5]}"
    _writes_go_through(c, "post:rec", 500)
    logs = "".join(c.nodes[i].log_path.read_text(errors="replace") for i in survivors)
    assert "UNSAFE RECOVERY" in logs  # loud, in the logs of the nodes involved


@pytest.fixture
def ecl_rf5(tmp_path):
    """A 1-node cluster of 4 shards that keeps 5 voters per shard (--replicas 5,
    --down-after-ms 8000: a node stopped for a few seconds is not replaced)."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=4, replicas=5, extra_args=["--down-after-ms", "8000"])


def test_unsafe_recovery_picks_the_survivor_furthest_ahead(ecl_rf5):
    """Six nodes, five voters per shard and in the meta shard. One voter of a
    shard is stopped (SIGSTOP) while writes go on, so its replica falls
    behind; then three other voters die for good (the meta shard keeps three
    of its five) and it resumes: the shard has two survivors, one of them
    behind. RECOVER on the one behind is refused and names the other (forcing
    it would lose acknowledged writes only the other holds); RECOVER on a
    node with no replica of the shard is refused; RECOVER on the survivor
    furthest ahead is taken, and every acknowledged write is there."""
    c = ecl_rf5
    for _ in range(5):
        c.add_node(ready=False, timeout=SETTLE_TIMEOUT_S)
    ids = ids_of(c, range(6))
    st = c.wait_status(settled(voters=5, up=ids, meta_voters=5), SETTLE_TIMEOUT_S,
                       "5 voters per shard on 6 nodes")
    meta_out = next(i for i in range(6) if ids[i] not in st.meta_voters())
    # A shard the node outside the meta voters votes in: it dies with two
    # more of the shard's voters (its leader among them), leaving the meta
    # shard three of its five.
    sh0 = next(sh for sh in st.shards if ids[meta_out] in sh.voters)
    outside = next(i for i in range(6) if ids[i] not in sh0.voters)
    voters = [ids.index(v) for v in sh0.voters]
    rest = [i for i in voters if i != meta_out and ids[i] != sh0.leader]
    behind, ahead = rest[0], rest[1]
    dead = [i for i in voters if i not in (behind, ahead)]
    assert meta_out in dead and len(dead) == 3
    print(f"[ahead] shard {sh0.id} voters {voters}: node{behind} stopped, writes, nodes {dead} die, "
          f"node{ahead} is ahead")
    lo, hi = sh0.slots
    keys = [k for k in (f"pre:ahead:{i}" for i in range(20000)) if lo <= key_slot(k) <= hi][:300]
    data = {k: b"v-" + k.encode() for k in keys}
    r = c.redis(ahead)
    c.sigstop(behind)
    t0 = time.monotonic()
    try:
        pipe = r.pipeline(transaction=False)
        for k, v in data.items():
            pipe.set(k, v)
        assert all(x is True for x in pipe.execute()), "SETs through node{ahead}"
    finally:
        r.close()
    time.sleep(1.0)  # every live voter holds the writes
    assert time.monotonic() - t0 < 6.0, "stopped so long that it may be declared down"
    for i in dead:
        c.kill9(i)
    c.sigcont(behind)
    lost = [sh for sh in st.shards if all(ids[i] in sh.voters for i in dead)]
    assert sh0 in lost

    def down(s: AdminStatus) -> List[str]:
        return [f"node{i} is {s.nodes[ids[i]].state}" for i in dead if s.nodes[ids[i]].state != "down"]
    c.wait_status(down, 8.0 + 30, "the three nodes down", via=ahead)
    err = ""
    for _ in range(60):  # bounded: the survivors report once they heard no leader for 3 s
        err = _expect_error(c, "ERR ", "RECOVER", str(sh0.id), ids[behind], "UNSAFE", via=ahead)
        if "is behind" in err:
            break
        assert "reports no replica" in err, err  # not yet: it still heard a leader lately
        time.sleep(0.25)
    assert f"is behind node {ids[ahead]}'s" in err and f"recover on node {ids[ahead]}" in err, err
    _expect_error(c, f"ERR node {ids[outside]} reports no replica of shard {sh0.id}", "RECOVER", str(sh0.id),
                  ids[outside], "UNSAFE", via=ahead)
    # STATUS lists the survivors, furthest ahead first
    line = next(sh for sh in c.admin_status(via=ahead).shards if sh.id == sh0.id)
    assert not line.leader_known and [s[0] for s in line.survivors] == [ids[ahead], ids[behind]], line
    out = _cli_admin(c, ahead, "recover", str(sh0.id), ids[ahead], "--unsafe")
    assert f"shard {sh0.id}: UNSAFE recovery 1 on {ids[ahead]}" in out, out
    for sh in lost:  # the other shards that lost their majority: on the survivor furthest ahead
        if sh.id == sh0.id:
            continue
        keep = next(v for v in sh.voters if v != ids[behind] and v not in ids_of(c, dead))
        r = c.admin("RECOVER", str(sh.id), keep, "UNSAFE", via=ahead)
        if isinstance(r, RespError) and "is behind node" in r:
            keep = r.split("recover on node ")[1].split()[0]
            r = c.admin("RECOVER", str(sh.id), keep, "UNSAFE", via=ahead)
        assert not isinstance(r, RespError) and f"UNSAFE recovery 1 on {keep}" in str(r), r
    live = [i for i in range(6) if i not in dead]
    st = c.wait_status(settled(voters=3, up=ids_of(c, live), meta_voters=3), REPAIR_TIMEOUT_S,
                       "every shard back at 3 voters on the live nodes", via=ahead)
    print(f"[ahead] recovered:\n{st}")
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} acknowledged keys lost, e.g. {bad[:5]}"
    _writes_go_through(c, "post:ahead", 300)


@pytest.mark.parametrize("survivor", ["leader", "follower"])
def test_unsafe_recovery_of_a_shard_in_a_split_under_way(ecl, survivor):
    """A shard splits while two of its three voters are stopped: the metadata
    records the split, but the parent cannot commit its split entry, and the
    stopped nodes then die for good. RECOVER of the new half is refused (it
    names the parent); RECOVER of the parent on the survivor recovers both
    halves in one change: the survivor, the only voter, applies the split
    (the entry its log holds, as the shard's leader; or, as a follower that
    never got it, one it proposes itself), and both shards are rebuilt to 3
    voters with nothing the survivor held lost."""
    c = ecl
    st = grow(c, 5)
    ids = ids_of(c, range(5))
    data = preload(c, "pre:rsplit", PRELOAD_KEYS)
    time.sleep(1.0)  # every voter has applied the preload
    # The survivor is the shard's leader or a follower; the two other voters
    # die. The meta leader is neither of them: the split is asked of it while
    # the shard's leader's report (fresh for a second) still counts.
    meta_i = ids.index(st.meta_leader)
    sh0, keeper = next((sh, k) for sh in st.shards if sh.leader in sh.voters and len(sh.voters) == 3
                       for k in sh.voters if (k == sh.leader) == (survivor == "leader") and
                       st.meta_leader not in [v for v in sh.voters if v != k])
    pair = [ids.index(v) for v in sh0.voters if v != keeper]
    survivors = [i for i in range(5) if i not in pair]
    lost = [sh for sh in st.shards if ids[pair[0]] in sh.voters and ids[pair[1]] in sh.voters]
    mid = (sh0.slots[0] + sh0.slots[1] + 1) // 2
    print(f"[rsplit] stopping node{pair[0]} and node{pair[1]}; shard {sh0.id} (slots {sh0.slots}) splits at {mid}")
    for i in pair:
        c.nodes[i].sigstop()
    reply = c.admin("SPLIT", str(sh0.id), str(mid), via=meta_i, timeout=3.0)
    assert not isinstance(reply, RespError), reply
    time.sleep(2.0)
    stuck = c.admin_status(via=meta_i)
    parent = next(sh for sh in stuck.shards if sh.id == sh0.id)
    child_id = parent.splitting_into
    assert child_id is not None, f"the split should wait for the stopped voters:\n{stuck}"
    for i in pair:
        c.kill9(i)

    def down(s: AdminStatus) -> List[str]:
        return [f"node{i} is {s.nodes[ids[i]].state}" for i in pair if s.nodes[ids[i]].state != "down"]
    c.wait_status(down, DOWN_AFTER_S + 30, "the two nodes down")
    _expect_error(c, f"ERR shard {child_id} is the new half of shard {sh0.id}", "RECOVER", str(child_id), keeper,
                  "UNSAFE", via=survivors[0])
    for sh in lost:
        keep = keeper if sh.id == sh0.id else next(v for v in sh.voters if v not in (ids[pair[0]], ids[pair[1]]))
        out = _cli_admin(c, survivors[0], "recover", str(sh.id), keep, "--unsafe")
        assert f"shard {sh.id}: UNSAFE recovery" in out, out
        if sh.id == sh0.id:
            assert f"and of shard {child_id}" in out, out
    st = c.wait_status(settled(voters=3, up=ids_of(c, survivors), meta_voters=3),
                       REPAIR_TIMEOUT_S, "both halves and every other shard back at 3 voters on the survivors")
    print(f"[rsplit] recovered:\n{st}")
    assert len(st.shards) == SHARDS + 1, st
    halves = {sh.id: sh for sh in st.shards if sh.id in (sh0.id, child_id)}
    assert halves[sh0.id].slots == (sh0.slots[0], mid - 1) and halves[child_id].slots == (mid, sh0.slots[1]), st
    assert all(sh.splitting_into is None for sh in st.shards), st
    for sh in st.shards:
        assert not set(sh.members()) & {ids[pair[0]], ids[pair[1]]}, sh
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} preloaded keys lost, e.g. {bad[:5]}"
    _writes_go_through(c, "post:rsplit", 500)
    assert "UNSAFE RECOVERY of shard" in "".join(c.nodes[i].log_path.read_text(errors="replace") for i in survivors)


@pytest.fixture
def ecl_slow_down(tmp_path):
    """As ecl, with --down-after-ms 8000: a node may be away for a few seconds
    without its replicas being rebuilt elsewhere."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=SHARDS, extra_args=["--down-after-ms", "8000"])


def test_unsafe_recovery_after_a_split_the_survivor_missed(ecl_slow_down):
    """A shard splits while one of its three voters is dead; the other two
    commit the split and the metadata records it as done. Then those two die
    for good and the one that missed the split comes back: its replica of
    the parent still holds the new half's slots, and the new half has no
    replica left anywhere. RECOVER of both shards on it: the survivor, forced
    as the parent's only voter, splits the new half off itself (its data is
    there), and both are rebuilt to 3 voters with nothing lost. (Before, the
    recovery was refused on the survivor for good: both halves wedged.)"""
    c = ecl_slow_down
    st = grow(c, 5)
    ids = ids_of(c, range(5))
    data = preload(c, "pre:missed", PRELOAD_KEYS)
    time.sleep(1.0)  # every voter has applied the preload
    meta_i = ids.index(st.meta_leader)
    # The survivor ("keeper") is a follower of a shard the meta leader has no voter of.
    sh0, keeper = next((sh, k) for sh in st.shards if sh.leader in sh.voters and len(sh.voters) == 3
                       and st.meta_leader not in sh.voters for k in sh.voters if k != sh.leader)
    keep_i = ids.index(keeper)
    pair = [ids.index(v) for v in sh0.voters if v != keeper]
    survivors = [i for i in range(5) if i not in pair]
    mid = (sh0.slots[0] + sh0.slots[1] + 1) // 2
    print(f"[missed] node{keep_i} dies; shard {sh0.id} (slots {sh0.slots}) splits at {mid} on node{pair[0]} "
          f"and node{pair[1]}, which then die; node{keep_i} comes back")
    assert not isinstance(c.admin("BALANCE", "off", via=meta_i), RespError)  # no move of the halves meanwhile
    c.kill9(keep_i)
    reply = c.admin("SPLIT", str(sh0.id), str(mid), via=meta_i, timeout=3.0)
    assert not isinstance(reply, RespError), reply

    def split_done(s: AdminStatus) -> List[str]:
        p = next(sh for sh in s.shards if sh.id == sh0.id)
        half = [sh for sh in s.shards if sh.slots[0] == mid]
        if len(s.shards) != SHARDS + 1 or p.splitting_into is not None or not half or half[0].leader is None:
            return [f"shard {sh0.id}: {p}; the new half: {half}"]
        return []
    st = c.wait_status(split_done, 6.0, "the split done by the two live voters, the new half led", via=meta_i)
    child = next(sh for sh in st.shards if sh.slots[0] == mid)
    lost = [sh for sh in st.shards if ids[pair[0]] in sh.voters and ids[pair[1]] in sh.voters]
    assert {sh0.id, child.id} <= {sh.id for sh in lost}, "\n".join(map(str, st.lines))
    for i in pair:
        c.kill9(i)
    c.nodes[keep_i].start(cluster_ready=False)  # shards without a leader: never "ok" before the recovery

    def down(s: AdminStatus) -> List[str]:
        return [f"node{i} is {s.nodes[ids[i]].state}" for i in pair if s.nodes[ids[i]].state != "down"]
    c.wait_status(down, 8.0 + 30, "the two nodes down", via=keep_i)
    for sh in lost:
        keep = keeper if keeper in sh.voters else next(v for v in sh.voters if v not in (ids[pair[0]], ids[pair[1]]))
        out = _cli_admin(c, survivors[0], "recover", str(sh.id), keep, "--unsafe")
        assert f"shard {sh.id}: UNSAFE recovery" in out, out
    assert not isinstance(c.admin("BALANCE", "on", via=keep_i), RespError)
    st = c.wait_status(settled(voters=3, up=ids_of(c, survivors), meta_voters=3),
                       REPAIR_TIMEOUT_S, "both halves and every other shard back at 3 voters on the survivors")
    print(f"[missed] recovered:\n{st}")
    halves = {sh.id: sh for sh in st.shards if sh.id in (sh0.id, child.id)}
    assert halves[sh0.id].slots == (sh0.slots[0], mid - 1) and halves[child.id].slots == (mid, sh0.slots[1]), st
    assert len(st.shards) == SHARDS + 1, st
    for sh in st.shards:
        assert not set(sh.members()) & {ids[pair[0]], ids[pair[1]]}, sh
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} preloaded keys lost, e.g. {bad[:5]}"
    _writes_go_through(c, "post:missed", 500)
    assert "a split this recovered replica missed" in c.nodes[keep_i].log_path.read_text(errors="replace")


def test_removed_nodes_restarted_with_their_old_data(ecl_slow_down):
    """REMOVE of a node cut off from the meta leader alone, which still leads
    shards, is refused; of a node killed a few seconds ago it works before
    down-after-ms has passed (it still counts as up, but has been silent, and
    its shards have other leaders); that node, restarted
    with its old data, learns from its peers that it was removed and serves
    nothing, with an error that says so; a node drained (and so removed)
    while it ran refuses to start again with its old data, or, if it stopped
    before its metadata showed its removal, is told by its peers the same way."""
    c = ecl_slow_down
    st = grow(c, 5)
    ids = ids_of(c, range(5))
    data = preload(c, "pre:zombie", 500)
    # A node cut off from the meta leader alone is silent to it, but still
    # leads shards its followers hear: REMOVE is refused, naming one.
    meta_i = ids.index(st.meta_leader)
    cut = next(i for i in range(5) if i != meta_i and st.nodes[ids[i]].leaders > 0)
    c.partition(cut, [meta_i])
    try:
        time.sleep(3.5)
        _expect_error(c, f"ERR node {ids[cut]} is silent, but shard ", "REMOVE", ids[cut], via=meta_i)
    finally:
        c.heal()
    st = c.wait_status(settled(voters=3, up=ids, meta_voters=5), SETTLE_TIMEOUT_S, "the cut healed")
    # The node to kill: a voter of a shard the meta leader leads, if one is
    # (its own leaderships are not gossiped to it), else any but the meta leader.
    meta_i = ids.index(st.meta_leader)
    led_by_meta = [v for sh in st.shards if sh.leader == st.meta_leader for v in sh.voters if v != st.meta_leader]
    gone = ids.index(led_by_meta[0]) if led_by_meta else next(i for i in (4, 3, 2, 1, 0) if i != meta_i)
    c.kill9(gone)
    t_kill = time.monotonic()
    time.sleep(0.5)
    _expect_error(c, f"ERR node {ids[gone]} is up and holds replicas", "REMOVE", ids[gone])
    reply = None
    for _ in range(60):  # silent for 3 s, its shards led elsewhere: removed before down-after-ms (8 s)
        reply = c.admin("REMOVE", ids[gone])
        if not isinstance(reply, RespError):
            break
        assert reply.startswith((f"ERR node {ids[gone]} is up and holds replicas",
                                 f"ERR node {ids[gone]} is silent, but shard ")), reply
        time.sleep(0.25)
    assert not isinstance(reply, RespError), reply
    assert time.monotonic() - t_kill < 8.0, "REMOVE waited for down-after-ms"
    assert c.admin_status().nodes[ids[gone]].state == "removed"
    left = [i for i in range(5) if i != gone]
    c.wait_status(settled(voters=3, up=[ids[i] for i in left], meta_voters=3), REPAIR_TIMEOUT_S,
                  "its replicas rebuilt on the 4 left")
    listed = c.nodes[0].call("CLUSTER", "NODES")
    assert ids[gone] not in listed.decode(), f"a removed node is listed to clients:\n{listed.decode()}"

    def told(i: int) -> List[str]:
        """Problems with node i serving as a removed node should (none: it does)."""
        out = []
        info = c.cluster_info(i)
        if info.get("cluster_state") != "fail":
            out.append(f"cluster_state {info.get('cluster_state')}")
        v = c.nodes[i].call("GET", "pre:zombie:1")
        if not (isinstance(v, RespError) and "this node was removed from the cluster" in v):
            out.append(f"GET -> {v!r}")
        return out

    def wait_told(i: int) -> None:
        problems: List[str] = []
        for _ in range(100):
            problems = told(i)
            if not problems:
                return
            time.sleep(0.2)
        raise AssertionError(f"node{i} restarted after its removal: {problems}\n{c.nodes[i].log_tail()}")

    # Restarted with its old data (removed while it was dead): its peers tell it.
    c.nodes[gone].start(cluster_ready=False)
    wait_told(gone)
    assert "was removed from the cluster while it was away" in c.nodes[gone].log_path.read_text(errors="replace")
    c.stop(gone)

    # Drained while it ran, then stopped: it refuses to start with its old data.
    drained = left[-1]
    out = _cli_admin(c, 0, "drain", ids[drained], "--timeout", str(int(SETTLE_TIMEOUT_S)))
    assert f"drained and removed {ids[drained]}" in out, out
    c.stop(drained)
    try:
        c.nodes[drained].start(cluster_ready=False)
    except RuntimeError as e:
        assert f"exited with 1" in str(e), e
        assert f"was removed from cluster" in c.nodes[drained].log_path.read_text(errors="replace"), e
    else:  # it stopped before it applied its removal: told by its peers
        wait_told(drained)
        c.stop(drained)

    # The same address, a new node (an empty --dir): host:port names the new one.
    addr = c.nodes[drained].address
    shutil.rmtree(c.nodes[drained].dir)
    c.nodes[drained].start(cluster_ready=False)

    def new_node_up(s: AdminStatus) -> List[str]:
        return [] if any(n.addr == addr and n.state == "up" and n.id != ids[drained] for n in s.nodes.values()) \
            else [f"no new node up at {addr}"]
    st = c.wait_status(new_node_up, SETTLE_TIMEOUT_S, f"a new node at {addr}")
    new_id = next(n.id for n in st.nodes.values() if n.addr == addr and n.state == "up")
    reply = c.admin("DRAIN", addr, via=0)
    assert not isinstance(reply, RespError), reply
    assert new_id in b" ".join(reply if isinstance(reply, list) else [reply]).decode(), reply
    st = c.wait_status(lambda s: [] if s.nodes[new_id].state == "removed" else [f"{new_id} is {s.nodes[new_id].state}"],
                       SETTLE_TIMEOUT_S, "the new node drained")
    c.stop(drained)
    st = c.wait_status(settled(voters=3, up=[ids[i] for i in left if i != drained], meta_voters=3), SETTLE_TIMEOUT_S,
                       "3 nodes left")
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} preloaded keys lost, e.g. {bad[:5]}"


# --------------------------------------------------------------------------
# 9. unsafe recovery of the meta shard itself
# --------------------------------------------------------------------------

def _recover_meta(c: Cluster, i: int, timeout: float = 20.0) -> str:
    """shoal admin recover meta --unsafe on node i, asked again (bounded) while
    the node still counts the lost voters as live or heard a leader lately."""
    n = c.nodes[i]
    deadline = time.monotonic() + timeout
    r = None
    for _ in range(100):
        r = subprocess.run([SHOAL_BIN, "admin", "--host", n.host, "--port", str(n.port), "recover", "meta",
                            "--unsafe"], capture_output=True, timeout=60)
        if r.returncode == 0:
            return r.stdout.decode()
        err = r.stderr.decode()
        # (this node may have won an election just before the other voters
        # died: it leads until check quorum makes it step down)
        if not any(x in err for x in ("still has a majority", "had a leader within", "TRYAGAIN",
                                      "this node leads the meta shard")):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise AssertionError(f"recover meta on node{i}: {r}")


def test_unsafe_recovery_of_the_meta_shard(ecl):
    """4 nodes: 3 meta voters and a meta learner. Two meta voters die for good,
    so the meta shard (and any shard both held) loses its majority: no change
    to the cluster can be made. RECOVER META UNSAFE on the surviving voter makes
    it the meta shard's only voter; the live learner's meta replica is started
    over (it may hold entries the survivor never had) and joins again; the data
    shards are then recovered as before, a new node joins, and the cluster
    settles on 3 voters per shard and 3 meta voters. Both dead voters then come
    back after all (a majority of the old meta shard): their meta replicas are
    fenced (started over, never appended to) and they rejoin, 5 meta voters. No
    preloaded key is lost, and the cluster takes writes again."""
    c = ecl
    st = grow(c, 4)
    ids = ids_of(c, range(4))
    idx = {ids[i]: i for i in range(4)}
    data = preload(c, "pre:mrec", PRELOAD_KEYS)
    time.sleep(1.0)  # every voter has applied the preload
    meta = st.meta_voters()
    assert len(meta) == 3 and sorted(st.meta_actual_voters) == sorted(meta), st
    leader_i = c.meta_leader()
    assert ids[leader_i] in meta
    voter_i = next(idx[m] for m in meta if idx[m] != leader_i)          # survives
    other_i = next(idx[m] for m in meta if idx[m] not in (leader_i, voter_i))
    learner_i = next(i for i in range(4) if ids[i] not in meta)
    dead = [leader_i, other_i]

    # refusals while the meta shard is whole; nothing changes
    _expect_error(c, "ERR RECOVER META is unsafe and must say so", "RECOVER", "META", via=voter_i)
    _expect_error(c, "ERR wrong number of arguments", "RECOVER", "META", "UNSAFE", "extra", via=voter_i)
    _expect_error(c, "ERR this node leads the meta shard", "RECOVER", "META", "UNSAFE", via=leader_i)
    _expect_error(c, "ERR the meta shard still has a majority of live voters", "RECOVER", "META", "UNSAFE",
                  via=voter_i)
    _expect_error(c, "ERR the meta shard still has a majority of live voters", "RECOVER", "META", "UNSAFE",
                  via=learner_i)
    assert c.admin_status().meta_recovery == 0

    print(f"[mrec] killing node{leader_i} (meta leader) and node{other_i}; node{voter_i} survives")
    lost = [sh for sh in st.shards if ids[leader_i] in sh.voters and ids[other_i] in sh.voters]
    for i in dead:
        c.kill9(i)
    t0 = time.monotonic()
    out = _recover_meta(c, voter_i)
    assert f"meta shard: UNSAFE recovery 1: node {ids[voter_i]} is its only voter" in out, out
    print(f"[mrec] meta recovered {time.monotonic() - t0:.1f} s after the kill: {out.strip()}")

    def meta_back(s: AdminStatus) -> List[str]:
        out = []
        if s.meta_recovery != 1 or s.meta_leader != ids[voter_i]:
            out.append(f"meta recovery {s.meta_recovery} led by {s.meta_leader}")
        if ids[learner_i] not in s.meta_actual_voters + s.meta_actual_learners:
            out.append(f"node{learner_i} not back in the meta shard: {s.meta_actual_voters} "
                       f"{s.meta_actual_learners}")
        if set(s.meta_actual_voters + s.meta_actual_learners) & {ids[i] for i in dead}:
            out.append("a dead node is a meta member")
        return out
    st = c.wait_status(meta_back, 30.0, "the meta shard recovered, its live learner back", via=voter_i)
    print(f"[mrec] meta shard whole again {time.monotonic() - t0:.1f} s after the kill")
    # a second recovery elsewhere while the first one's node is up is refused
    again = c.admin("RECOVER", "META", "UNSAFE", via=learner_i)
    assert isinstance(again, RespError) and again.startswith("ERR "), again
    print(f"[mrec] RECOVER META on node{learner_i} afterwards: {again}")
    st = c.admin_status(via=voter_i)
    assert st.meta_recovery == 1 and st.meta_leader == ids[voter_i], st

    def down(s: AdminStatus) -> List[str]:  # the new meta leader gives every node down-after first
        return [f"node{i} is {s.nodes[ids[i]].state}" for i in dead if s.nodes[ids[i]].state != "down"]
    c.wait_status(down, DOWN_AFTER_S + 30, "the two nodes down")
    for sh in lost:
        keep = next(v for v in sh.voters if v not in (ids[leader_i], ids[other_i]))
        o = _cli_admin(c, voter_i, "recover", str(sh.id), keep, "--unsafe")
        assert f"shard {sh.id}: UNSAFE recovery 1 on {keep}" in o, o
    c.add_node(ready=False, via=voter_i)
    ids = ids_of(c, range(5))
    up = [ids[i] for i in (voter_i, learner_i, 4)]
    st = c.wait_status(settled(voters=3, up=up, meta_voters=3), REPAIR_TIMEOUT_S + 30,
                       "3 voters per shard and 3 meta voters on the live nodes")
    print(f"[mrec] settled on the survivors and a new node {time.monotonic() - t0:.1f} s after the kill")

    # both lost voters come back after all, together a majority of the old
    # meta shard: fenced (their meta replicas started over), then members again
    c.restart(other_i)
    c.restart(leader_i)
    st = c.wait_status(settled(voters=3, up=up + [ids[i] for i in dead], meta_voters=5), SETTLE_TIMEOUT_S + 30,
                       "the returning nodes fenced and placed again")
    assert st.meta_recovery == 1 and st.meta_leader == ids[voter_i], st
    print(f"[mrec] the returning nodes rejoined:\n{st}")
    bad = verify_acked(c, data)
    assert not bad, f"{len(bad)} preloaded keys lost, e.g. {bad[:5]}"
    _writes_go_through(c, "post:mrec", 300)
    assert "UNSAFE RECOVERY 1 of the meta shard" in c.nodes[voter_i].log_path.read_text(errors="replace")
    for i in (learner_i, *dead):
        assert "was started over" in c.nodes[i].log_path.read_text(errors="replace"), f"node{i}"


@pytest.fixture
def ecl_down15(tmp_path):
    """As ecl, with --down-after-ms 15000: a node cut off for a few seconds is
    not declared down (nothing is moved off it meanwhile)."""
    yield from running_cluster(tmp_path / "cluster", n=1, shards=SHARDS, extra_args=["--down-after-ms", "15000"])


def test_a_split_an_unsafe_meta_recovery_lost_is_recorded_again(ecl_down15):
    """4 nodes. A meta voter that does not lead the meta shard is cut off
    (iptables) while a shard it and the meta learner hold splits: the split
    is committed in the metadata and in the shard without it. The other two
    meta voters then die for good and the cut is healed; RECOVER META UNSAFE
    on the cut node gives metadata that lacks the split, while the new half's
    group is led (its data there). The meta leader records the split again
    under the group's own id from the leaders' reports: both halves are
    listed with their slots, and the keys written to the new half are
    there."""
    c = ecl_down15
    grow(c, 4)
    ids = ids_of(c, range(4))
    st = c.admin_status()
    meta = st.meta_voters()
    leader_i = c.meta_leader()
    learner_i = next(i for i in range(4) if ids[i] not in meta)
    # The cut node: a meta follower; the shard: one it and the learner hold, led by neither if possible.
    cands = [(sh, i) for i in range(4) if ids[i] in meta and i != leader_i for sh in st.shards
             if ids[i] in sh.voters and ids[learner_i] in sh.voters]
    assert cands, st
    sh0, cut_i = next(((sh, i) for sh, i in cands if sh.leader not in (ids[i], ids[learner_i])), cands[0])
    dead = [i for i in range(4) if i not in (cut_i, learner_i)]
    lo, hi = sh0.slots
    mid = (lo + hi + 1) // 2
    print(f"[lost-split] node{cut_i} cut off; shard {sh0.id} ({lo}-{hi}) splits at {mid}; nodes {dead} then die")
    assert not isinstance(c.admin("BALANCE", "off", via=leader_i), RespError)
    t_cut = time.monotonic()
    c.partition(cut_i)
    reply = c.admin("SPLIT", str(sh0.id), str(mid), via=dead[0], timeout=10.0)
    assert not isinstance(reply, RespError), reply

    def split_done(s: AdminStatus) -> List[str]:
        p = next(sh for sh in s.shards if sh.id == sh0.id)
        half = [sh for sh in s.shards if sh.slots[0] == mid]
        if p.splitting_into is not None or not half or half[0].leader is None or p.slots != (lo, mid - 1):
            return [f"shard {sh0.id}: {p}; the new half: {half}"]
        return []
    st = c.wait_status(split_done, 6.0, "the split done without the cut node", via=dead[0])
    child = next(sh for sh in st.shards if sh.slots[0] == mid)
    keys = [k for k in (f"lost:{j}" for j in range(40000)) if mid <= key_slot(k) <= hi][:100]
    data = {k: b"v-" + k.encode() for k in keys}
    r = c.redis(learner_i)
    try:
        pipe = r.pipeline(transaction=False)
        for k, v in data.items():
            pipe.set(k, v)
        assert all(x is True for x in pipe.execute())
    finally:
        r.close()
    time.sleep(0.5)  # the learner node's replica of the new half holds them
    for i in dead:
        c.kill9(i)
    assert time.monotonic() - t_cut < 12.0, "cut off so long that it may have been declared down"
    # Only between the cut node and the live one: data the dead nodes' kernels
    # still hold for the cut node (their sockets outlive the processes) must
    # never reach it, or its metadata would have the split after all.
    c.heal_between(cut_i, learner_i)
    out = _recover_meta(c, cut_i, timeout=40.0)
    assert f"meta shard: UNSAFE recovery 1: node {ids[cut_i]} is its only voter" in out, out

    def both_halves(s: AdminStatus) -> List[str]:
        got = {sh.id: sh.slots for sh in s.shards}
        want = {sh0.id: (lo, mid - 1), child.id: (mid, hi)}
        out = [f"shard {k}: {got.get(k)}, want {v}" for k, v in want.items() if got.get(k) != v]
        return out + [f"shard {sh.id} still splitting into {sh.splitting_into}" for sh in s.shards
                      if sh.id == sh0.id and sh.splitting_into is not None]
    st = c.wait_status(both_halves, 40.0, "the lost split recorded again", via=cut_i)
    print(f"[lost-split] recorded again:\n{st}")
    log = c.nodes[cut_i].log_path.read_text(errors="replace")
    assert f"recording its split from shard {sh0.id} again" in log, "the recovered metadata had the split"
    r = c.redis(cut_i)
    try:
        bad = []
        for k, v in data.items():
            got = None
            for _ in range(50):  # bounded: the halves' leaders settle after the meta recovery
                try:
                    got = r.get(k)
                    break
                except redis.exceptions.ResponseError as e:
                    if "TRYAGAIN" not in str(e) and "CLUSTERDOWN" not in str(e):
                        raise
                    time.sleep(0.2)
            if got != v:
                bad.append(f"{k}: {got!r}")
        assert not bad, f"{len(bad)} keys of the new half lost, e.g. {bad[:5]}"
    finally:
        r.close()


def test_a_draining_node_stays_while_a_shard_has_no_leader(ecl_down15):
    """4 nodes. The node to drain and one other are stopped (SIGSTOP; not
    declared down for 15 s), so the shards that have voters on both lose their
    leaders. DRAIN of the stopped node is accepted, but the node is not removed
    while a shard has no leader known (its members are not known: the node may
    still hold one of its voters), REMOVE of it is refused naming such a shard,
    and `shoal admin drain` says which shard it waits for. Resumed, the drain
    finishes and the node is removed."""
    c = ecl_down15
    grow(c, 4)
    ids = ids_of(c, range(4))
    st = c.admin_status()
    meta = st.meta_voters()
    victim, vid = 3, ids[3]
    # The other stopped node: the meta shard keeps a majority without both.
    other = next(i for i in range(3) if sum(1 for m in meta if m not in (vid, ids[i])) >= 2)
    both = [sh.id for sh in st.shards if vid in sh.voters and ids[other] in sh.voters]
    assert both, st
    live = [i for i in range(3) if i != other]
    print(f"[leaderless-drain] stopping node{victim} and node{other}: shards {both} lose their leaders")
    c.nodes[victim].sigstop()
    c.nodes[other].sigstop()
    try:
        v = c.admin("DRAIN", vid, via=live[0])
        assert v == [f"draining node {vid}".encode()], v

        def leaderless(s: AdminStatus) -> List[str]:
            return [] if any(not sh.leader_known for sh in s.shards) else ["every shard has a leader known"]
        st = c.wait_status(leaderless, 12.0, "a shard with no leader known", via=live[0])
        assert st.nodes[vid].state == "draining", st
        err = _expect_error(c, "ERR shard ", "REMOVE", vid, via=live[1])
        assert "has no leader known" in err and f"node {vid} may hold one it needs" in err, err
        r = subprocess.run([SHOAL_BIN, "admin", "--host", c.nodes[live[0]].host, "--port",
                            str(c.nodes[live[0]].port), "drain", vid, "--timeout", "3"],
                           capture_output=True, timeout=60)
        out = r.stdout.decode()
        assert r.returncode == 1 and "still draining after" in out, r
        assert "(no leader known)" in out and "waiting for shard " in out, out
        st = c.admin_status(via=live[0])
        assert st.nodes[vid].state == "draining", f"removed while a shard had no leader known:\n{st}"
        print(f"[leaderless-drain] refused: {err!r}; drain progress: {out.splitlines()[-2:]!r}")
    finally:
        c.nodes[other].sigcont()
        c.nodes[victim].sigcont()

    def removed(s: AdminStatus) -> List[str]:
        out = settled(voters=3, up=ids[:3], meta_voters=3)(s)
        out += [] if s.nodes[vid].state == "removed" else [f"node3 is {s.nodes[vid].state}"]
        return out + [f"shard {sh.id} still lists node3" for sh in s.shards if vid in sh.members()]
    c.wait_status(removed, SETTLE_TIMEOUT_S, "node3 drained and removed once the shards have leaders")


def test_join_by_host_name(tmp_path):
    """--join takes a host name (resolved at start: `localhost`), and a name
    that does not resolve stops the start with an error naming it."""
    from conftest import HOST, free_port
    assert HOST == "127.0.0.1"
    ports = [free_port() for _ in range(4)]
    procs = []

    def start(i: int, *extra: str) -> subprocess.Popen:
        argv = [SHOAL_BIN, "server", "--bind", HOST, "--port", str(ports[2 * i]), "--peer-port",
                str(ports[2 * i + 1]), "--dir", str(tmp_path / f"n{i}"), "--workers", "1", "--shards", "2",
                *extra]
        log = open(tmp_path / f"n{i}.log", "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        procs.append(p)
        return p

    def call(i: int, *args: str) -> object:
        with RespConn(HOST, ports[2 * i], timeout=5.0) as c:
            return c.call(*args).value

    def wait(cond, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(600):
            try:
                if cond():
                    return
            except (OSError, ConnectionError, AssertionError):
                pass
            assert all(p.poll() is None for p in procs), f"a node exited while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    try:
        start(0)
        wait(lambda: call(0, "PING") == "PONG", "node 0")
        bad = subprocess.run([SHOAL_BIN, "server", "--bind", HOST, "--port", str(ports[2]), "--peer-port",
                              str(ports[3]), "--dir", str(tmp_path / "bad"), "--join", "no-such-host.invalid:" +
                              str(ports[0])], capture_output=True, timeout=60)
        out = (bad.stdout + bad.stderr).decode(errors="replace")
        assert bad.returncode != 0 and "cannot resolve 'no-such-host.invalid'" in out, out
        start(1, "--join", f"localhost:{ports[0]}")
        wait(lambda: b"cluster_known_nodes:2" in call(1, "CLUSTER", "INFO"), "node 1 to join by name")
        assert call(1, "SET", "{n}joined", "by-name") == "OK"
        assert call(0, "GET", "{n}joined") == b"by-name"  # a plain client's request is forwarded
        assert "--join localhost resolves to 127.0.0.1" in (tmp_path / "n1.log").read_text(errors="replace")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]


def test_a_node_of_one_cluster_refuses_to_join_another(tmp_path):
    """A node whose --dir belongs to one cluster, started with --join pointing
    at another cluster, refuses to start with a clear error (its data cannot
    move between clusters) and changes nothing in either; with --join at its
    own cluster it starts as before."""
    a = Cluster(tmp_path / "a", n=1, shards=2)
    b = Cluster(tmp_path / "b", n=1, shards=2)
    problems: List[str] = []
    try:
        a.start()
        b.start()
        node = b.node(0)
        node.stop()
        node.join = a.node(0).address
        argv = node._make_argv(node)
        r = subprocess.run(argv, capture_output=True, timeout=60, cwd=str(node.dir))
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode != 0, out
        assert "belongs to cluster" in out and "--join target" in out, out
        assert len(a.admin_status().nodes) == 1
        # Its own cluster as the target: it starts (the check passes).
        node.join = None
        b.restart(0)
        b.wait_ready()
    finally:
        problems = a.teardown() + b.teardown()
    assert not problems, problems
