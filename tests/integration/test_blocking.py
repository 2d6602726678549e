"""Blocking pops (BLPOP BRPOP BLMOVE BLMPOP BZPOPMIN ...) and WAIT on a real
3-node shoal cluster, driven by real clients (redis-py, plain and cluster).

* a blocked pop wakes when another client, on any node, pushes;
* blocked clients are served in the order they came;
* timeouts are honoured; a client that leaves while blocked takes nothing;
* when the shard's leadership moves away a blocked client gets an error
  (MOVED for a cluster client, UNBLOCKED for a plain one connected to the
  old leader), never a hang; a plain client forwarded from another node is
  carried over to the new leader;
* a list used as a queue by producers and blocking consumers survives
  kill -9 of the shard's leader: no element is delivered twice, and every
  acknowledged element is delivered or still queued, unless a pop whose
  answer was lost took it.

One module cluster for the quick tests; the kill -9 test has its own.
Needs SHOAL_BIN (skipped otherwise).
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Set

import pytest
import redis

from cluster_util import NET_ERRORS, key_slot, parse_info, running_cluster
from conftest import SELFTEST, RespError, encode_command

pytestmark = pytest.mark.skipif(SELFTEST, reason="cluster tests need a real shoal binary")


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("blocking3"), n=3)


@pytest.fixture
def cl(cluster3):
    if cluster3.teardown_problems or not cluster3.alive_nodes():
        pytest.fail("the shared 3-node cluster was already stopped", pytrace=False)
    yield cluster3
    try:
        cluster3.check_alive()
    finally:
        cluster3.print_logs(2000)


def _leader(cl, key) -> int:
    return cl.wait_leader(key, timeout=15)


def _other(cl, i: int) -> int:
    return (i + 1) % len(cl.nodes)


class Popper(threading.Thread):
    """Runs one blocking command on its own connection; keeps the reply."""

    def __init__(self, conn, *args):
        super().__init__(daemon=True)
        self.conn, self.args = conn, args
        self.reply = None
        self.error: Optional[BaseException] = None
        self.done_at: Optional[float] = None

    def run(self):
        try:
            self.reply = self.conn.execute(*self.args)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.done_at = time.monotonic()


def _blocked_clients(cl, i: int) -> int:
    return int(parse_info(cl.nodes[i].call("INFO", "clients"))["blocked_clients"])


def _wait_blocked(cl, i: int, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        if _blocked_clients(cl, i) >= n:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"node{i} never had {n} blocked clients (has {_blocked_clients(cl, i)})")


def test_blpop_wakes_on_push_from_every_node(cl):
    """A plain client blocked on the leader, and one forwarded from another
    node, are woken by pushes sent to a third; BLMOVE and BZPOPMIN too."""
    key = "{bq1}list"
    leader = _leader(cl, key)
    other = _other(cl, leader)
    pusher = cl.nodes[(leader + 2) % 3].client()
    direct, forwarded = cl.nodes[leader].client(timeout=20), cl.nodes[other].client(timeout=20)
    try:
        for conn in (direct, forwarded):
            p = Popper(conn, "BLPOP", key, "{bq1}nothing", "10")
            t0 = time.monotonic()
            p.start()
            _wait_blocked(cl, leader, 1)
            time.sleep(0.2)
            assert p.is_alive(), "BLPOP returned before anything was pushed"
            assert pusher.execute("RPUSH", key, "v1", "v2") == 2
            p.join(10)
            assert not p.is_alive() and p.error is None, p.error
            assert p.reply == [key.encode(), b"v1"], p.reply
            assert p.done_at - t0 < 8
            assert pusher.execute("LRANGE", key, 0, -1) == [b"v2"]
            assert pusher.execute("DEL", key) == 1
        # BLMOVE onto another list, BZPOPMIN on a sorted set
        p = Popper(forwarded, "BLMOVE", "{bq1}src", "{bq1}dst", "LEFT", "RIGHT", "10")
        p.start()
        _wait_blocked(cl, leader, 1)
        pusher.execute("LPUSH", "{bq1}src", "m")
        p.join(10)
        assert p.reply == b"m" and p.error is None
        assert pusher.execute("LRANGE", "{bq1}dst", 0, -1) == [b"m"]
        p = Popper(direct, "BZPOPMIN", "{bq1}z", "10")
        p.start()
        _wait_blocked(cl, leader, 1)
        pusher.execute("ZADD", "{bq1}z", "2", "b", "1", "a")
        p.join(10)
        assert p.reply == [b"{bq1}z", b"a", b"1"] and p.error is None
        assert _blocked_clients(cl, leader) == 0
    finally:
        for c in (pusher, direct, forwarded):
            c.close()


def test_blocked_clients_served_in_arrival_order(cl):
    key = "{bq2}list"
    leader = _leader(cl, key)
    conns = [cl.nodes[leader].client(timeout=20) for _ in range(4)]
    pusher = cl.nodes[_other(cl, leader)].client()
    poppers = []
    try:
        for i, conn in enumerate(conns):
            p = Popper(conn, "BLPOP", key, "15")
            p.start()
            _wait_blocked(cl, leader, i + 1)  # strictly one after the other
            poppers.append(p)
        for i in range(4):
            pusher.execute("RPUSH", key, f"e{i}")
            time.sleep(0.05)
        for p in poppers:
            p.join(10)
            assert p.error is None, p.error
        assert [p.reply for p in poppers] == [[key.encode(), f"e{i}".encode()] for i in range(4)]
        # one push of many elements serves every waiter, in order, at once
        poppers = []
        for i, conn in enumerate(conns):
            p = Popper(conn, "BRPOP", key, "15")
            p.start()
            _wait_blocked(cl, leader, i + 1)
            poppers.append(p)
        pusher.execute("LPUSH", key, "a", "b", "c", "d", "e")  # list: e d c b a
        for p in poppers:
            p.join(10)
            assert p.error is None, p.error
        assert [p.reply[1] for p in poppers] == [b"a", b"b", b"c", b"d"]
        assert pusher.execute("LRANGE", key, 0, -1) == [b"e"]
    finally:
        for c in conns + [pusher]:
            c.close()


def test_timeouts_and_a_client_that_leaves(cl):
    key = "{bq3}list"
    leader = _leader(cl, key)
    other = _other(cl, leader)
    for node in (leader, other):
        with cl.nodes[node].client(timeout=10) as c:
            t0 = time.monotonic()
            assert c.execute("BLPOP", key, "0.3") is None
            took = time.monotonic() - t0
            assert 0.25 <= took < 5, took
            assert c.execute("BLMOVE", key, "{bq3}d", "LEFT", "LEFT", "0.2") is None
            assert c.execute("BZMPOP", "0.2", "1", "{bq3}z", "MIN") is None
            # the connection goes on working after a timeout
            assert c.execute("PING") == "PONG"
    # clients that leave while blocked (direct and forwarded) take nothing
    for node in (leader, other):
        c = cl.nodes[node].client(timeout=10)
        c.send(encode_command("BLPOP", key, "0"))
        _wait_blocked(cl, leader, 1)
        c.close()
        deadline = time.monotonic() + 10
        while _blocked_clients(cl, leader) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _blocked_clients(cl, leader) == 0, "the leader still blocks a client that left"
        with cl.nodes[leader].client() as p:
            assert p.execute("RPUSH", key, "kept") == 1
            time.sleep(0.2)
            assert p.execute("LRANGE", key, 0, -1) == [b"kept"]
            p.execute("DEL", key)


def test_pipelined_commands_after_a_blocking_pop_wait_for_it(cl):
    key = "{bq4}list"
    leader = _leader(cl, key)
    with cl.nodes[leader].client(timeout=15) as c, cl.nodes[leader].client() as pusher:
        c.send(encode_command("BLPOP", key, "10") + encode_command("PING") + encode_command("LLEN", key))
        _wait_blocked(cl, leader, 1)
        time.sleep(0.1)
        pusher.execute("RPUSH", key, "x", "y")
        assert c.read_reply().value == [key.encode(), b"x"]
        assert c.read_reply().value == "PONG"
        assert c.read_reply().value == 1


def test_wakes_reach_the_client_that_can_use_them(cl):
    """A BLMOVE does not wait on its destination, and a client waiting for a
    list is not woken by a sorted set at its key (as Redis 7.0): the push
    reaches the client that can take it."""
    key_a, key_b, key_k = "{bq7}a", "{bq7}b", "{bq7}k"
    leader = _leader(cl, key_a)
    conns = [cl.nodes[leader].client(timeout=20) for _ in range(4)]
    pusher = cl.nodes[_other(cl, leader)].client()
    try:
        mover = Popper(conns[0], "BLMOVE", key_a, key_b, "LEFT", "RIGHT", "5")
        mover.start()
        _wait_blocked(cl, leader, 1)
        popper = Popper(conns[1], "BLPOP", key_b, "10")
        popper.start()
        _wait_blocked(cl, leader, 2)
        pusher.execute("RPUSH", key_b, "x")
        popper.join(8)
        assert popper.reply == [key_b.encode(), b"x"], (popper.reply, popper.error)
        lister = Popper(conns[2], "BLPOP", key_k, "1")
        lister.start()
        _wait_blocked(cl, leader, 2)
        zpopper = Popper(conns[3], "BZPOPMIN", key_k, "10")
        zpopper.start()
        _wait_blocked(cl, leader, 3)
        pusher.execute("ZADD", key_k, "1", "m")
        zpopper.join(8)
        assert zpopper.reply == [key_k.encode(), b"m", b"1"], (zpopper.reply, zpopper.error)
        lister.join(8)
        assert lister.reply is None and lister.error is None, (lister.reply, lister.error)  # timed out
        mover.join(8)
        assert mover.reply is None
    finally:
        for c in conns + [pusher]:
            c.close()


def test_leadership_moving_away_unblocks(cl):
    """Leadership of the key's shard moves while clients are blocked: a
    cluster client gets MOVED to the new leader, a plain client connected to
    the old leader gets UNBLOCKED, a plain client on another node is carried
    over and still served. None hangs."""
    key = "{bq5}list"
    leader = _leader(cl, key)
    st = cl.admin_status()
    slot = key_slot(key)
    shard = next(s for s in st.shards if s.slots[0] <= slot <= s.slots[1])
    old_id = cl.myid(leader)
    target = next(v for v in shard.voters if not (v.startswith(old_id) or old_id.startswith(v)))
    rc = cl.nodes[leader].client(timeout=20)
    rc.execute("READONLY")  # asks about the cluster: a cluster-aware connection
    rc.execute("READWRITE")
    plain = cl.nodes[leader].client(timeout=20)
    forwarded_node = next(i for i in range(3) if i != leader)
    forwarded = cl.nodes[forwarded_node].client(timeout=20)
    try:
        pops = [Popper(rc, "BLPOP", key, "15"), Popper(plain, "BLPOP", key, "15"),
                Popper(forwarded, "BLPOP", key, "15")]
        for i, p in enumerate(pops):
            p.start()
            _wait_blocked(cl, leader, i + 1)
        cl.admin("TRANSFER", str(shard.id), target)
        new_leader = cl.wait_leader(key, not_on=[leader], timeout=15)
        for p in pops[:2]:
            p.join(10)
            assert not p.is_alive(), "a blocked client hung after its leader moved"
        assert isinstance(pops[0].reply, RespError) and pops[0].reply.startswith("MOVED"), pops[0].reply
        assert isinstance(pops[1].reply, RespError) and pops[1].reply.startswith("UNBLOCKED"), pops[1].reply
        _wait_blocked(cl, new_leader, 1)
        with cl.nodes[new_leader].client() as pusher:
            pusher.execute("RPUSH", key, "after")
        pops[2].join(10)
        assert pops[2].error is None and pops[2].reply == [key.encode(), b"after"], (pops[2].error, pops[2].reply)
    finally:
        for c in (rc, plain, forwarded):
            c.close()


def test_redis_py_clients_blpop_with_timeout(cl):
    """redis-py as applications use it: plain and RedisCluster, BLPOP with a
    timeout, a producer thread."""
    rc = cl.redis_cluster(decode_responses=True)
    plain = cl.redis(0, decode_responses=True)
    try:
        assert rc.blpop(["{bq6}jobs"], timeout=1) is None
        t = threading.Timer(0.3, lambda: plain.rpush("{bq6}jobs", "job1"))
        t.start()
        assert rc.blpop(["{bq6}jobs"], timeout=10) == ("{bq6}jobs", "job1") or \
            rc.blpop(["{bq6}jobs"], timeout=10) == ["{bq6}jobs", "job1"]
        t.join()
        t = threading.Timer(0.3, lambda: rc.zadd("{bq6}z", {"m": 5}))
        t.start()
        assert plain.bzpopmax("{bq6}z", timeout=10) in (("{bq6}z", "m", 5.0), ["{bq6}z", "m", 5.0])
        t.join()
        assert plain.brpoplpush("{bq6}none", "{bq6}d", timeout=1) is None
    finally:
        rc.close()
        plain.close()


def test_wait_counts_replicas_holding_the_last_write(cl):
    for i in range(3):
        with cl.nodes[i].client() as c:
            assert c.execute("WAIT", 0, 0) == 0  # no write yet on this connection
            for k in range(5):
                assert c.execute("SET", f"wait:{i}:{k}", "v") == "OK"
            n = c.execute("WAIT", 2, 5000)
            assert n == 2, n  # both followers of a 3-replica shard
            assert c.execute("WAIT", 5, 200) == 2  # more than there are: the timeout
            assert c.execute("WAIT", 1, -1) == "ERR timeout is negative"
    rc = cl.redis_cluster()
    try:
        rc.set("wait:rc", "v")
        assert rc.execute_command("WAIT", 1, 5000, target_nodes=rc.get_node_from_key("wait:rc")) >= 1
    finally:
        rc.close()


# --------------------------------------------------------------------------
# a queue through kill -9 of its leader
# --------------------------------------------------------------------------

@pytest.fixture
def kcluster(tmp_path):
    yield from running_cluster(tmp_path / "cluster", n=3, durability="fsync")


@pytest.mark.slow
def test_queue_survives_kill9_of_its_leader(kcluster):
    c = kcluster
    key = "{queue}jobs"
    victim = c.wait_leader(key, timeout=15)
    survivors = [i for i in range(3) if i != victim]
    stop = threading.Event()
    deadline = time.monotonic() + 90
    lock = threading.Lock()
    acked: Set[bytes] = set()         # pushes answered with a length
    unsure_push: Set[bytes] = set()   # pushes whose answer was lost
    delivered: Dict[bytes, int] = {}  # element -> answered pops that returned it
    unsure_pops = [0]                 # pops whose answer was lost (may have taken one)

    def producer(pid: int) -> None:
        n = 0
        nodes = list(range(3))
        conn = None
        while not stop.is_set() and time.monotonic() < deadline and n < 100_000:
            v = f"p{pid}:{n}".encode()
            n += 1
            node = nodes[n % 3]
            try:
                if conn is None:
                    conn = c.nodes[node].client(timeout=10)
                got = conn.execute("RPUSH", key, v)
                with lock:
                    if isinstance(got, RespError):
                        unsure_push.add(v)  # refused (TRYAGAIN) or of unknown outcome
                    else:
                        acked.add(v)
                if isinstance(got, RespError):
                    time.sleep(0.05)
            except NET_ERRORS:
                with lock:
                    unsure_push.add(v)
                if conn is not None:
                    conn.close()
                conn = None
                nodes = survivors
                time.sleep(0.05)
            time.sleep(0.005)
        if conn is not None:
            conn.close()

    def consumer(cid: int) -> None:
        conn = None
        node = cid % 3
        for _ in range(100_000):
            if time.monotonic() > deadline:
                break
            if stop.is_set() and conn is None:
                break
            try:
                if conn is None:
                    conn = c.nodes[node].client(timeout=10)
                got = conn.execute("BLPOP", key, "0.5")
                if got is None:
                    if stop.is_set():
                        break
                    continue
                if isinstance(got, RespError):
                    with lock:
                        unsure_pops[0] += 1  # UNBLOCKED/TRYAGAIN/unknown outcome: may have taken one
                    time.sleep(0.05)
                    continue
                with lock:
                    delivered[got[1]] = delivered.get(got[1], 0) + 1
            except NET_ERRORS:
                with lock:
                    unsure_pops[0] += 1
                if conn is not None:
                    conn.close()
                conn = None
                node = survivors[cid % 2]
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(3)]
    threads += [threading.Thread(target=consumer, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    c.kill9(victim)
    new_leader = c.wait_leader(key, not_on=[victim], via=survivors[0], timeout=20)
    print(f"[queue] killed node{victim}; node{new_leader} leads the queue now")
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    with c.nodes[new_leader].client(timeout=10) as conn:
        left = conn.execute("LRANGE", key, 0, -1)
    twice = {v: n for v, n in delivered.items() if n > 1}
    assert not twice, f"elements delivered to more than one answered pop: {list(twice.items())[:10]}"
    remaining = set(left)
    assert len(remaining) == len(left), "an element is queued twice"
    assert not (remaining & set(delivered)), "an element both delivered and still queued"
    missing = acked - set(delivered) - remaining
    print(f"[queue] pushed {len(acked)} acknowledged (+{len(unsure_push)} unsure), delivered "
          f"{len(delivered)}, still queued {len(remaining)}, unsure pops {unsure_pops[0]}, "
          f"missing {len(missing)}")
    assert len(acked) > 100 and len(delivered) > 100, "the queue barely moved"
    # an acknowledged element is gone only if a pop whose answer was lost took it
    assert len(missing) <= unsure_pops[0], sorted(missing)[:20]
    strays = (set(delivered) | remaining) - acked - unsure_push
    assert not strays, f"elements nobody pushed: {sorted(strays)[:10]}"
