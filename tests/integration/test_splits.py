"""Shard splits seen from outside: real ``shoal server`` processes on loopback,
real clients (redis-py's RedisCluster, plain connections), splits asked for
with SHOAL.ADMIN SPLIT or made by the placement driver on load.

* a split by hand under writes: the shard's upper slots become a new shard
  with the same voters (no data copied), the admin errors return their exact
  prefixes and change nothing, no client operation fails after the clients'
  usual redirect/retry handling, every acknowledged write is readable, the
  shards still cover every slot exactly once, CLUSTER SLOTS agrees, and the
  split survives a kill -9 and restart of a node;
* a hot slot range splits by itself (--split-ops) while clients write, and
  the shards that hold the hot slots end up led from different nodes.

Each test has its own 3-node cluster (4 shards). Every wait is bounded;
every process is stopped by PID (cluster_util). Needs SHOAL_BIN. Run with
-s to see timings and the final SHOAL.ADMIN STATUS.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List

import pytest

from cluster_util import AdminStatus, Cluster, key_slot, readonly_read_all, running_cluster, verify_acked
from conftest import SELFTEST, RespError
from test_elastic import SETTLE_TIMEOUT_S, Workload, check_slots_agree, preload, settled, verify_all

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SELFTEST, reason="cluster tests need a real shoal binary")]

SHARDS = 4
SPLIT_OPS = 30  # ops/s, sustained, that make a shard split by itself (second test; a debug build is slow)


@pytest.fixture
def scl(tmp_path):
    """3 nodes, 4 shards; size-based splits off (tests split by hand)."""
    yield from running_cluster(tmp_path / "cluster", n=3, shards=SHARDS,
                               extra_args=["--down-after-ms", "3000", "--split-size-mb", "0"])


@pytest.fixture
def hot_cl(tmp_path):
    """3 nodes, 4 shards; a shard busier than SPLIT_OPS ops/s splits by itself."""
    yield from running_cluster(tmp_path / "cluster", n=3, shards=SHARDS,
                               extra_args=["--down-after-ms", "3000", "--split-size-mb", "0",
                                           "--split-ops", str(SPLIT_OPS)])


def check_cover(st: AdminStatus) -> None:
    """The shards cover the 16384 slots exactly once."""
    ranges = sorted(sh.slots for sh in st.shards)
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383, ranges
    for (a, b), (c2, _) in zip(ranges, ranges[1:]):
        assert a <= b and c2 == b + 1, ranges


def split_settled(n_shards: int):
    """A wait_status condition: ``n_shards`` shards, no split under way, and
    placement settled and even with 3 voters per shard."""
    def cond(st: AdminStatus) -> List[str]:
        out = st.placement_problems(voters=3)
        if len(st.shards) != n_shards:
            out.append(f"{len(st.shards)} shards, want {n_shards}")
        out += [f"shard {sh.id} still splitting into {sh.splitting_into}"
                for sh in st.shards if sh.splitting_into is not None]
        return out
    return cond


def shard_of_slot(st: AdminStatus, slot: int):
    return next(sh for sh in st.shards if sh.slots[0] <= slot <= sh.slots[1])


def expect_error(c: Cluster, prefix: str, *args) -> str:
    try:
        v = c.admin(*args, retry=False)
    except RespError as e:
        v = e
    assert isinstance(v, RespError) and str(v).startswith(prefix), f"SHOAL.ADMIN {args}: {v!r}"
    return str(v)


def test_split_by_hand_under_writes(scl):
    c = scl
    t0 = time.monotonic()
    st = c.wait_status(split_settled(SHARDS), SETTLE_TIMEOUT_S, "3 nodes settled")
    data = preload(c, "pre:split", 2000)
    wl = Workload(c, "split", plain_nodes=[0, 1, 2])
    wl.start()

    # Bad input: a clear error, and nothing changes.
    epoch = st.epoch
    expect_error(c, "ERR no such shard", "SPLIT", "99")
    expect_error(c, "ERR no such shard", "SPLIT", "x")
    first = shard_of_slot(st, 0)
    expect_error(c, "ERR the split slot must be inside", "SPLIT", str(first.id), "0")
    expect_error(c, "ERR the split slot 'abc' is not a number", "SPLIT", str(first.id), "abc")
    expect_error(c, "ERR the split slot must be inside", "SPLIT", str(first.id), str(first.slots[1] + 1))
    expect_error(c, "ERR unknown SHOAL.ADMIN subcommand", "SPLIT")
    st = c.admin_status()
    assert len(st.shards) == SHARDS and st.epoch == epoch, st

    # By hand at a given slot, through a follower of the meta shard (it relays).
    target = shard_of_slot(st, 5000)
    lo, hi = target.slots
    at = (lo + hi + 1) // 2
    reply = c.admin("SPLIT", str(target.id), str(at), via=1)
    assert f"splitting at slot {at}" in str(reply), reply
    # At once, the parent is in a split under way: a second split waits.
    try:
        v = c.admin("SPLIT", str(target.id), retry=False)
    except RespError as e:
        v = e
    assert isinstance(v, RespError) or "splitting at slot" in str(v), v
    # And where the leader says the size halves (no slot given), another shard.
    other = shard_of_slot(st, 12000)
    reply = c.admin("SPLIT", str(other.id))
    assert "splitting at slot" in str(reply), reply
    want = SHARDS + 2 + (0 if isinstance(v, RespError) else 1)
    st = c.wait_status(split_settled(want), SETTLE_TIMEOUT_S, f"{want} shards settled after the splits")
    print(f"[split] {want} shards settled {time.monotonic() - t0:.1f} s into the test:\n{st}")
    check_cover(st)
    parent = next(sh for sh in st.shards if sh.id == target.id)
    child = shard_of_slot(st, at)
    assert parent.slots == (lo, at - 1) and child.slots == (at, hi) and child.id > SHARDS, st
    # The child started with the parent's replicas: nothing was copied.
    assert sorted(child.voters) == sorted(parent.voters), st
    check_slots_agree(c, st, via=range(3))

    wl.finish()
    wl.assert_no_failed_ops()
    acked = verify_all(c, wl, data)
    # The key counters moved with the slots: once the writers stopped, DBSIZE
    # (each node sums the counters of the shards it holds: all of them) is
    # the same on every node, and counts every key written.
    sizes = set()
    for _ in range(100):
        sizes = {c.nodes[i].call("DBSIZE") for i in range(3)}
        if len(sizes) == 1:
            break
        time.sleep(0.1)
    assert len(sizes) == 1 and sizes.pop() >= len(data) + len(acked), sizes
    # The split is each replica's own state: it survives a crash and restart.
    c.kill9(2)
    c.restart(2)
    st = c.wait_status(split_settled(want), SETTLE_TIMEOUT_S, "settled after node2 restarted")
    check_cover(st)
    assert c.nodes[2].call("DBSIZE") >= len(data) + len(acked)
    # Follower reads on the restarted node see the split shards' data too.
    sample = dict(list(data.items())[:300])
    verified, wrong = readonly_read_all(c, 2, sample)
    assert verified == len(sample) and not wrong, (verified, wrong[:10])
    print(f"[split] {len(acked)} acknowledged writes and {len(data)} preloaded keys verified; "
          f"test took {time.monotonic() - t0:.1f} s")


def hot_keys(lo: int, hi: int, n: int) -> List[str]:
    """``n`` keys whose slots lie in [lo, hi), spread over that range."""
    out: List[str] = []
    i = 0
    while len(out) < n and i < 2_000_000:
        k = f"hot:{i}"
        if lo <= key_slot(k) < hi:
            out.append(k)
        i += 1
    assert len(out) == n, f"found only {len(out)} keys in slots {lo}-{hi}"
    return out


class HotLoad(threading.Thread):
    """Pipelined SETs and GETs on keys of one slot range, through RedisCluster
    (so the load follows the shards as they split). Bounded in time."""

    def __init__(self, c: Cluster, keys: List[str], stop: threading.Event, deadline: float):
        super().__init__(name="hot-load", daemon=True)
        self.c, self.keys, self.stop_ev, self.deadline = c, keys, stop, deadline
        self.ops = 0
        self.errors: List[str] = []
        self.acked: Dict[str, bytes] = {}

    def run(self):
        rc = self.c.redis_cluster(decode_responses=False)
        try:
            n = 0
            while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
                batch = self.keys[n % len(self.keys):][:50] or self.keys[:50]
                try:
                    for k in batch:
                        v = f"{k}:{n}".encode()
                        rc.set(k, v)
                        self.acked[k] = v
                        rc.get(k)
                        self.ops += 2
                except Exception as e:  # noqa: BLE001 -- redis-py retries first; what is left counts
                    self.errors.append(repr(e))
                    time.sleep(0.05)
                n += 50
        finally:
            rc.close()


def test_hot_range_splits_by_itself_and_leaders_spread(hot_cl):
    c = hot_cl
    t0 = time.monotonic()
    st = c.wait_status(split_settled(SHARDS), SETTLE_TIMEOUT_S, "3 nodes settled")
    hot = shard_of_slot(st, 1000)
    lo, hi = 900, 1100  # a hot range inside one shard
    assert hot.slots[0] <= lo and hi <= hot.slots[1], st
    wl = Workload(c, "hot", plain_nodes=[0, 1, 2])
    wl.start()
    stop = threading.Event()
    load = HotLoad(c, hot_keys(lo, hi, 400), stop, time.monotonic() + 150)
    c.add_cleanup(stop.set)
    load.start()

    def spread(st: AdminStatus) -> List[str]:
        out = [f"shard {sh.id} still splitting" for sh in st.shards if sh.splitting_into is not None]
        holders = [sh for sh in st.shards if sh.slots[0] <= hi - 1 and lo <= sh.slots[1]]
        if len(holders) < 2:
            out.append(f"hot slots {lo}-{hi - 1} in {len(holders)} shard(s): {holders}")
        elif len({sh.leader for sh in holders}) < 2:
            out.append(f"the hot shards are all led from one node: {holders}")
        if not load.is_alive():
            out.append("the hot load ended")
        return out
    st = c.wait_status(spread, 120.0, "the hot range to split and its leaders to spread")
    print(f"[hot] split and spread {time.monotonic() - t0:.1f} s into the test, "
          f"{load.ops} hot ops so far:\n{st}")
    check_cover(st)
    stop.set()
    load.join(timeout=30)
    assert not load.is_alive(), "the hot load did not stop"
    assert not load.errors, f"hot-load operations failed after redis-py's retries: {load.errors[:10]}"
    wl.finish()
    wl.assert_no_failed_ops()
    wl.verify()
    bad = verify_acked(c, load.acked)
    assert not bad, f"{len(bad)} hot writes lost or wrong: {bad[:10]}"
    print(f"[hot] {len(load.acked)} hot keys verified; test took {time.monotonic() - t0:.1f} s")
