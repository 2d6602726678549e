"""A healthy shoal cluster seen by real clients: redis-py's RedisCluster,
redis-cli (-c and plain), plain redis.Redis, redis-benchmark --cluster, and the
CLUSTER commands in Redis Cluster's formats.

One 3-node cluster is shared by the module (started once); the 5-node test
has its own. Needs SHOAL_BIN (skipped otherwise).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

from cluster_util import (HASH_SLOTS, Cluster, is_moved, key_for_every_slot, key_slot,
                          parse_info, running_cluster, stop_live_clusters)
from conftest import SELFTEST, SHOAL_BIN, SKIP_NO_SHOAL, RespConn, RespError

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
NODE = shutil.which("node") or shutil.which("nodejs")
NODE_PATH = "/usr/share/nodejs"  # where Debian's node-redis lives
NODE_REDIS = os.path.isfile(os.path.join(NODE_PATH, "redis", "package.json"))

pytestmark = pytest.mark.skipif(SELFTEST, reason="cluster tests need a real shoal binary")

CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("cluster3"), n=3)


@pytest.fixture
def cl(cluster3):
    """The shared cluster, checked alive after the test; node log tails are
    printed at the end of every test (pytest shows them only on failure)."""
    if cluster3.teardown_problems or not cluster3.alive_nodes():
        pytest.fail("the shared 3-node cluster was already stopped", pytrace=False)
    yield cluster3
    try:
        cluster3.check_alive()
    finally:
        cluster3.print_logs(2000)


def eventually(fn, timeout=10.0, interval=0.1, what="condition"):
    """Call fn() until it returns a truthy value (bounded); return it."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(100_000):
        try:
            last = fn()
            if last:
                return last
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def run_cli(*args, timeout=30, input=None):
    assert REDIS_CLI, "redis-cli is not installed"
    return subprocess.run([REDIS_CLI, *map(str, args)], capture_output=True, timeout=timeout,
                          input=input)


def slot_ranges_cover_all(ranges):
    """ranges: [(start, end)]; True if they cover 0..16383 exactly once."""
    seen = bytearray(HASH_SLOTS)
    for a, b in ranges:
        assert 0 <= a <= b < HASH_SLOTS, (a, b)
        for s in range(a, b + 1):
            seen[s] += 1
    bad = [s for s in range(HASH_SLOTS) if seen[s] != 1]
    assert not bad, (f"{len(bad)} slots not covered exactly once, e.g. slot {bad[0]} "
                     f"covered {seen[bad[0]]} times")
    return True


def key_led_elsewhere(cl, node_index, prefix):
    """A key whose shard leader is not node_index."""
    slots = cl.slots()
    for n in range(10_000):
        k = f"{prefix}:{n}"
        s = key_slot(k)
        for a, b, nodes in slots:
            if a <= s <= b and cl.node_by_addr(nodes[0][0], nodes[0][1]) != node_index:
                return k
    raise AssertionError(f"every slot is led by node{node_index}")


# --------------------------------------------------------------------------
# CLUSTER INFO / MYID / SLOTS / SHARDS / NODES / KEYSLOT
# --------------------------------------------------------------------------

def test_cluster_info_ready_on_every_node(cl):
    for n in cl.nodes:
        info = cl.cluster_info(n.index)
        assert info["cluster_state"] == "ok", info
        assert int(info["cluster_known_nodes"]) == 3, info
        assert int(info["cluster_slots_assigned"]) == HASH_SLOTS, info
        assert int(info["cluster_slots_ok"]) == HASH_SLOTS, info
        assert int(info["cluster_size"]) >= 1, info
        assert int(info["shoal_shards"]) == 16, info  # the default
        assert int(info["shoal_shards_replicated"]) == int(info["shoal_shards"]), info
        assert 0 <= int(info["shoal_shards_with_leader"]) <= int(info["shoal_shards"]), info
        assert 0 <= int(info["shoal_leaders_here"]) <= int(info["shoal_shards"]), info
    # every shard has one leader somewhere
    total = sum(int(cl.cluster_info(n.index)["shoal_leaders_here"]) for n in cl.nodes)
    assert total == 16 or eventually(
        lambda: sum(int(cl.cluster_info(n.index)["shoal_leaders_here"])
                    for n in cl.nodes) == 16, what="16 leaders in total")


def test_cluster_myid(cl):
    ids = [cl.myid(n.index) for n in cl.nodes]
    for i in ids:
        assert re.fullmatch(r"[0-9a-f]{40}", i), i
    assert len(set(ids)) == 3
    assert ids == [cl.myid(n.index) for n in cl.nodes]  # stable


def test_cluster_slots_cover_all_slots_with_three_replicas(cl):
    ids = {cl.myid(n.index): n.index for n in cl.nodes}
    for n in cl.nodes:
        slots = cl.slots(via=n.index)
        slot_ranges_cover_all([(a, b) for a, b, _ in slots])
        for a, b, nodes in slots:
            assert len(nodes) == 3, (a, b, nodes)
            addrs = {(h, p) for h, p, _ in nodes}
            assert len(addrs) == 3, f"range {a}-{b}: replicas not on distinct nodes: {nodes}"
            for h, p, nid in nodes:
                idx = cl.node_by_addr(h, p)
                assert idx is not None, f"unknown node address {h}:{p}"
                assert ids.get(nid) == idx, f"{h}:{p} reported with id {nid}"


def test_cluster_shards_parse_with_redis_py(cl):
    rc = cl.redis_cluster()
    try:
        ids = {cl.myid(n.index): n.index for n in cl.nodes}
        for n in cl.nodes:
            node = rc.get_node(host=n.host, port=n.port)
            assert node is not None
            shards = rc.cluster_shards(target_nodes=node)
            info = cl.cluster_info(n.index)
            assert len(shards) == int(info["shoal_shards"]), shards
            ranges = []
            for sh in shards:
                ranges += [(int(a), int(b)) for a, b in sh["slots"]]
                nodes = sh["nodes"]
                assert len(nodes) == 3, sh
                assert len({x["id"] for x in nodes}) == 3, sh
                assert all(x["id"] in ids for x in nodes), sh
                roles = sorted(x["role"] for x in nodes)
                assert roles == ["master", "replica", "replica"], sh
                for x in nodes:
                    idx = ids[x["id"]]
                    assert x["ip"] == cl.nodes[idx].host, x
                    assert int(x["port"]) == cl.nodes[idx].port, x
            slot_ranges_cover_all(ranges)
    finally:
        rc.close()


def test_cluster_nodes_parse_with_redis_py(cl):
    rc = cl.redis_cluster()
    try:
        ids = [cl.myid(n.index) for n in cl.nodes]
        for n in cl.nodes:
            # raw text from that node: exactly one line has "myself"
            text = n.call("CLUSTER", "NODES").decode()
            lines = [ln for ln in text.splitlines() if ln.strip()]
            assert len(lines) == 3, text
            mine = [ln for ln in lines if "myself" in ln.split()[2].split(",")]
            assert len(mine) == 1 and mine[0].split()[0] == ids[n.index], text
            parsed = rc.cluster_nodes()  # redis-py's parser (dict addr -> fields)
            assert set(parsed) == {x.address for x in cl.nodes}, parsed
            ranges = []
            for addr, d in parsed.items():
                assert d["node_id"] in ids, d
                assert d["connected"], d
                flags = d["flags"].split(",")
                assert "master" in flags or "slave" in flags, d
                for s in d["slots"]:
                    a = int(s[0])
                    b = int(s[1]) if len(s) > 1 else a
                    ranges.append((a, b))
                    assert "master" in flags, f"slots listed on a non-master line: {d}"
            # Redis Cluster format: every slot on exactly one master line
            slot_ranges_cover_all(ranges)
    finally:
        rc.close()


def test_cluster_keyslot_matches_redis_py(cl):
    keys = ["", "a", "foo", "{user1000}.following", "{user1000}.followers", "foo{}{bar}",
            "foo{{bar}}zap", "foo{bar}{zap}", "{}", "{a", "a}", "{a}b", "\xe9t\xe9",
            "x" * 1000] + [f"k{i}" for i in range(300)]
    with cl.nodes[0].client() as c:
        for k in keys:
            v = c.execute("CLUSTER", "KEYSLOT", k)
            assert v == key_slot(k), (k, v)
        v = c.execute("CLUSTER", "KEYSLOT", b"\x00\xff{\x01}")
        assert v == key_slot(b"\x00\xff{\x01}")


def test_countkeysinslot_and_getkeysinslot(cl):
    tag = "{cks-test}"
    slot = key_slot(tag)
    r = cl.redis(0)

    def leader_call(*args):
        i = cl.slot_owner(slot)
        return cl.nodes[i].call(*args)

    before = leader_call("CLUSTER", "COUNTKEYSINSLOT", slot)
    assert isinstance(before, int), before
    keys = [f"{tag}:k{i}" for i in range(25)]
    for k in keys:
        assert r.set(k, "x") is True
    eventually(lambda: leader_call("CLUSTER", "COUNTKEYSINSLOT", slot) == before + 25,
               what="COUNTKEYSINSLOT to grow by 25")
    got = leader_call("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    got = {x.decode() for x in got}
    assert set(keys) <= got, sorted(set(keys) - got)
    assert len(got) == before + 25
    assert all(key_slot(k) == slot for k in got)
    limited = leader_call("CLUSTER", "GETKEYSINSLOT", slot, 3)
    assert len(limited) == 3
    assert r.delete(*keys[:5]) == 5
    eventually(lambda: leader_call("CLUSTER", "COUNTKEYSINSLOT", slot) == before + 20,
               what="COUNTKEYSINSLOT to shrink by 5")
    # an empty slot (keys of this test only ever land in `slot`)
    other = (slot + 1) % HASH_SLOTS
    assert isinstance(leader_call("CLUSTER", "COUNTKEYSINSLOT", other), int)
    bad = cl.nodes[0].call("CLUSTER", "COUNTKEYSINSLOT", HASH_SLOTS)
    assert isinstance(bad, RespError), bad
    r.close()


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------

def test_redis_cluster_client_all_slots(cl):
    """One key in every one of the 16384 slots through RedisCluster, read back."""
    rc = cl.redis_cluster()
    try:
        keys = key_for_every_slot("allslots")
        vals = {k: f"val-{i}" for i, k in enumerate(keys)}
        pipe = rc.pipeline(transaction=False)
        for n, k in enumerate(keys):
            pipe.set(k, vals[k])
            if n % 1000 == 999:
                assert all(x is True for x in pipe.execute())
        assert all(x is True for x in pipe.execute())
        got = rc.mget_nonatomic(keys)
        wrong = [(k, v) for k, v in zip(keys, got) if v != vals[k]]
        assert not wrong, f"{len(wrong)} wrong values, e.g. {wrong[:5]}"
        # single-key commands through the client
        assert rc.incr("allslots:ctr") == 1
        assert rc.incrby("allslots:ctr", 41) == 42
        assert rc.get("allslots:ctr") == "42"
        assert rc.delete(keys[0]) == 1
        assert rc.get(keys[0]) is None
        assert rc.exists(keys[1]) == 1
    finally:
        rc.close()


@pytest.mark.skipif(not REDIS_CLI, reason="redis-cli is not installed")
def test_redis_cli_cluster_mode_follows_redirects(cl):
    """redis-cli -c: set/get through node 0 of keys led elsewhere."""
    n0 = cl.nodes[0]
    for j in range(5):
        k = key_led_elsewhere(cl, 0, f"cli-c-{j}")
        r = run_cli("-c", "-h", n0.host, "-p", n0.port, "SET", k, f"v{j}")
        assert r.returncode == 0 and r.stdout.strip() == b"OK", (r.stdout, r.stderr)
        r = run_cli("-c", "-h", n0.host, "-p", n0.port, "GET", k)
        assert r.returncode == 0 and r.stdout.strip() == f"v{j}".encode(), (r.stdout, r.stderr)
    # redis-cli never says it is cluster-aware, so the above may have been
    # forwarded; after READONLY the connection is, and a write led elsewhere gets
    # MOVED, which redis-cli -c must follow
    redirected = []
    for attempt in range(5):  # (a leader may move between the lookup and the SET)
        k = key_led_elsewhere(cl, 0, f"cli-moved-{attempt}")
        r = run_cli("-c", "-h", n0.host, "-p", n0.port,
                    input=f"READONLY\nSET {k} moved\n".encode())
        assert r.returncode == 0, r.stderr
        lines = r.stdout.decode().splitlines()
        assert [ln for ln in lines if not ln.startswith("-> Redirected")] == ["OK", "OK"], lines
        assert cl.nodes[1].call("GET", k) == b"moved"
        redirected = [ln for ln in lines
                      if ln.startswith(f"-> Redirected to slot [{key_slot(k)}]")]
        if redirected:
            break
    assert redirected, "redis-cli -c was never redirected after READONLY"
    # several commands on stdin, keys on every node
    script = "".join(f"SET cli-batch:{i} b{i}\nGET cli-batch:{i}\n" for i in range(30))
    r = run_cli("-c", "-h", n0.host, "-p", n0.port, input=script.encode())
    assert r.returncode == 0, r.stderr
    out = [ln for ln in r.stdout.decode().splitlines() if not ln.startswith("-> Redirected")]
    assert [x for x in out if x != "OK"] == [f"b{i}" for i in range(30)], out


@pytest.mark.skipif(not REDIS_CLI, reason="redis-cli is not installed")
def test_plain_redis_cli_reads_writes_forwarded(cl):
    """Without -c: any node serves any key (the request is forwarded to the leader)."""
    for j, reader in enumerate(cl.nodes):
        writer = cl.nodes[(j + 1) % 3]
        for t in range(6):
            k = f"plain-cli:{j}:{t}"
            r = run_cli("-h", writer.host, "-p", writer.port, "SET", k, f"w{j}-{t}")
            assert r.returncode == 0 and r.stdout.strip() == b"OK", (k, r.stdout, r.stderr)
            r = run_cli("-h", reader.host, "-p", reader.port, "GET", k)
            assert r.stdout.strip() == f"w{j}-{t}".encode(), (k, r.stdout, r.stderr)
            assert b"MOVED" not in r.stdout + r.stderr
        # a key whose leader is neither the writer nor the reader, if there is one
        k = None
        for n in range(2000):
            cand = f"plain-cli-third:{j}:{n}"
            owner = cl.leader_of_key(cand)
            if owner not in (reader.index, writer.index):
                k = cand
                break
        if k is not None:
            r = run_cli("-h", writer.host, "-p", writer.port, "SET", k, "third")
            assert r.stdout.strip() == b"OK", (r.stdout, r.stderr)
            r = run_cli("-h", reader.host, "-p", reader.port, "GET", k)
            assert r.stdout.strip() == b"third", (r.stdout, r.stderr)


def test_plain_redis_py_against_one_node(cl):
    r = cl.redis(1, decode_responses=True)
    try:
        keys = [f"plainpy:{i}" for i in range(300)]
        leaders = {cl.slot_owner(key_slot(k)) for k in keys[:60]}
        assert len(leaders) > 1, "the keys should span several leaders"
        for i, k in enumerate(keys):
            assert r.set(k, str(i)) is True
        for i, k in enumerate(keys):
            assert r.get(k) == str(i)
        assert r.incr("plainpy:ctr") == 1
        assert r.append(keys[0], "x") == 2
        assert r.get(keys[0]) == "0x"
        assert r.delete(keys[1]) == 1
        assert r.exists(keys[1]) == 0
        assert r.mset({"{pp}a": "1", "{pp}b": "2"}) is True
        assert r.mget(["{pp}a", "{pp}b"]) == ["1", "2"]
        p = r.pipeline(transaction=False)
        for k in keys[10:60]:
            p.get(k)
        assert p.execute() == [str(i) for i in range(10, 60)]
    finally:
        r.close()
    # and through node 2, what node 1 wrote
    r2 = cl.redis(2, decode_responses=True)
    try:
        assert r2.get("plainpy:299") == "299"
    finally:
        r2.close()


def test_hashes_sets_and_lists_through_cluster_and_plain_clients(cl):
    """Hashes, sets and lists spread over every shard: written through
    RedisCluster, read back through a plain client on another node
    (forwarded), changed and removed; a big hash's DEL and a RENAME carry
    every field; lists used as queues give each element once, in order."""
    rc = cl.redis_cluster()
    plain = cl.redis(2, decode_responses=True)
    try:
        keys = [f"hash:{i}" for i in range(200)]
        assert len({cl.slot_owner(key_slot(k)) for k in keys}) > 1, "keys should span several leaders"
        pipe = rc.pipeline(transaction=False)
        for i, k in enumerate(keys):
            pipe.hset(k, mapping={"name": f"n{i}", "n": i, "tag": "x" * (i % 7)})
        assert pipe.execute() == [3] * len(keys)
        for i, k in enumerate(keys):
            assert plain.hgetall(k) == {"name": f"n{i}", "n": str(i), "tag": "x" * (i % 7)}
        assert plain.hincrby(keys[5], "n", 10) == 15
        assert rc.hget(keys[5], "n") == "15"
        assert plain.hdel(keys[6], "name", "missing") == 1
        assert sorted(rc.hkeys(keys[6])) == ["n", "tag"]
        assert rc.hlen(keys[7]) == 3
        assert plain.type(keys[7]) == "hash"
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            plain.get(keys[7])
        # a big hash: its fields go with it, and RENAME moves them
        big = {f"f{i}": f"v{i}" for i in range(2000)}
        assert plain.hset("{big}h", mapping=big) == 2000
        assert plain.rename("{big}h", "{big}g") is True
        assert plain.hlen("{big}g") == 2000
        assert plain.hgetall("{big}g") == big
        assert dict(plain.hscan_iter("{big}g", count=100)) == big
        assert plain.delete("{big}g") == 1
        assert plain.hset("{big}g", "f1", "fresh") == 1
        assert plain.hgetall("{big}g") == {"f1": "fresh"}
        # sets: spread over shards, combined within one slot, popped
        for i, k in enumerate(keys[:50]):
            assert rc.sadd(f"set:{k}", *[f"m{j}" for j in range(i % 5 + 1)]) == i % 5 + 1
        for i, k in enumerate(keys[:50]):
            assert plain.smembers(f"set:{k}") == {f"m{j}" for j in range(i % 5 + 1)}
        assert plain.sadd("{s}a", *range(100)) == 100
        assert plain.sadd("{s}b", *range(50, 150)) == 100
        assert plain.sinter("{s}a", "{s}b") == {str(i) for i in range(50, 100)}
        assert rc.sunionstore("{s}u", "{s}a", "{s}b") == 150
        popped = plain.spop("{s}u", 40)
        assert len(set(popped)) == 40 and plain.scard("{s}u") == 110
        assert not set(popped) & plain.smembers("{s}u")
        assert plain.smove("{s}a", "{s}b", "0") is True
        assert plain.sismember("{s}b", "0") == 1 and plain.scard("{s}a") == 99
        assert set(plain.sscan_iter("{s}b", count=7)) == {str(i) for i in range(50, 150)} | {"0"}
        # lists: queues on every shard, each element popped once, in order
        queues = [f"queue:{i}" for i in range(20)]
        for q in queues:
            assert rc.rpush(q, *[f"{q}:{j}" for j in range(30)]) == 30
        got = {q: [] for q in queues}
        for _ in range(3):
            for q in queues:
                got[q] += plain.lpop(q, 10)
        assert got == {q: [f"{q}:{j}" for j in range(30)] for q in queues}
        assert all(plain.exists(q) == 0 for q in queues)
        assert plain.rpush("{l}a", "x", "y", "z") == 3
        assert rc.lmove("{l}a", "{l}b", "LEFT", "RIGHT") == "x"
        assert plain.lrange("{l}a", 0, -1) == ["y", "z"] and plain.lrange("{l}b", 0, -1) == ["x"]
        assert plain.linsert("{l}a", "BEFORE", "z", "mid") == 3
        assert plain.lpos("{l}a", "z") == 2
    finally:
        rc.close()
        plain.close()


def test_sorted_sets_through_cluster_and_plain_clients(cl):
    """Sorted sets spread over every shard: leaderboards written through
    RedisCluster and read through a plain client on another node; a big one
    ranged from both ends, popped, scanned and deleted; commands that count
    their keys (ZUNIONSTORE, ZMPOP) routed by those keys, CROSSSLOT when they
    span slots."""
    rc = cl.redis_cluster()
    plain = cl.redis(1, decode_responses=True)
    try:
        boards = [f"board:{i}" for i in range(60)]
        assert len({cl.slot_owner(key_slot(b)) for b in boards}) > 1, "keys should span several leaders"
        pipe = rc.pipeline(transaction=False)
        for i, b in enumerate(boards):
            pipe.zadd(b, {f"p{j}": (j * 7 + i) % 10 for j in range(5)})
        assert pipe.execute() == [5] * len(boards)
        for i, b in enumerate(boards):
            want = sorted(((f"p{j}", float((j * 7 + i) % 10)) for j in range(5)), key=lambda e: (e[1], e[0]))
            assert plain.zrange(b, 0, -1, withscores=True) == want
            assert plain.zrevrank(b, want[-1][0]) == 0
        assert plain.zincrby(boards[3], 100, "p0") == 100 + (0 * 7 + 3) % 10
        assert rc.zrevrange(boards[3], 0, 0) == ["p0"]
        assert plain.type(boards[3]) == "zset"
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            plain.lpush(boards[3], "x")
        # a big one: 3000 members, ties broken by member
        big = {f"m{i:04d}": i // 3 for i in range(3000)}
        assert plain.zadd("{big}z", big) == 3000
        assert plain.zcard("{big}z") == 3000
        assert plain.zrange("{big}z", -2, -1) == ["m2998", "m2999"]
        assert plain.zrange("{big}z", 1500, 1501) == ["m1500", "m1501"]
        assert plain.zrank("{big}z", "m2500") == 2500 and plain.zrevrank("{big}z", "m2500") == 499
        assert plain.zrangebyscore("{big}z", 500, "+inf", start=2, num=2) == ["m1502", "m1503"]
        assert plain.zrevrangebyscore("{big}z", "(900", "-inf", start=0, num=1) == ["m2699"]
        assert plain.zcount("{big}z", "(10", 20) == 30
        assert plain.zpopmin("{big}z", 2) == [("m0000", 0.0), ("m0001", 0.0)]
        assert plain.zpopmax("{big}z") == [("m2999", 999.0)]
        assert dict(plain.zscan_iter("{big}z", count=200)) == {m: float(s) for m, s in big.items()
                                                               if m not in ("m0000", "m0001", "m2999")}
        assert plain.zremrangebyscore("{big}z", 100, 199) == 300
        assert plain.zcard("{big}z") == 2997 - 300
        assert plain.delete("{big}z") == 1
        assert plain.zadd("{big}z", {"fresh": 1}) == 1
        assert plain.zrange("{big}z", 0, -1) == ["fresh"]
        # commands that count their keys: routed by them, from any node
        assert rc.zadd("{u}a", {"x": 1, "y": 2}) == 2
        assert rc.zadd("{u}b", {"y": 10, "z": 20}) == 2
        assert rc.zunionstore("{u}dst", ["{u}a", "{u}b"]) == 3
        assert plain.zrange("{u}dst", 0, -1, withscores=True) == [("x", 1.0), ("y", 12.0), ("z", 20.0)]
        assert plain.execute_command("ZINTERCARD", 2, "{u}a", "{u}b") == 1
        assert plain.execute_command("ZMPOP", 2, "{u}none", "{u}dst", "MAX", "COUNT", 2) == \
            ["{u}dst", [["z", "20"], ["y", "12"]]]
        with cl.nodes[2].client() as c:
            assert c.execute("COMMAND", "GETKEYS", "ZUNIONSTORE", "d", "2", "s1", "s2", "WEIGHTS", "1", "2") == \
                [b"d", b"s1", b"s2"]
        with pytest.raises(redis.exceptions.ResponseError, match="CROSSSLOT"):
            plain.execute_command("ZUNIONSTORE", "d", 2, "s1", "s2")
    finally:
        rc.close()
        plain.close()


def test_transactions_from_plain_clients_on_every_node(cl):
    """redis-py's default pipeline is MULTI ... EXEC: from a plain client on
    every node, on keys led by every shard (forwarded whole to the leader
    when it is elsewhere), the commands run in order, reads see the writes
    before them, run-time errors are replies, and CROSSSLOT aborts."""
    tags = [f"tx{i}" for i in range(12)]
    assert len({cl.slot_owner(key_slot("{" + t + "}")) for t in tags}) > 1, "tags should span several leaders"
    for n in range(3):
        r = cl.redis(n, decode_responses=True)
        try:
            for t in tags:
                k = "{" + t + "}" + str(n)
                p = r.pipeline()  # transaction=True: MULTI ... EXEC
                p.set(k + "a", 5).incrby(k + "a", 10).get(k + "a")
                p.zadd(k + "z", {"x": 1, "y": 2}).zincrby(k + "z", 5, "x").zrange(k + "z", 0, -1, withscores=True)
                p.rpush(k + "l", "a", "b").lpop(k + "l").lrange(k + "l", 0, -1)
                assert p.execute() == [True, 15, "15", 2, 6.0, [("y", 2.0), ("x", 6.0)], 2, "a", ["b"]]
                p = r.pipeline()
                p.set(k + "s", "text").incr(k + "s").append(k + "s", "!")
                out = p.execute(raise_on_error=False)
                assert out[0] is True and out[2] == 5
                assert isinstance(out[1], redis.exceptions.ResponseError)
                assert r.get(k + "s") == "text!"
            p = r.pipeline()
            p.set("{a}x", 1).set("{b}y", 2)
            with pytest.raises(redis.exceptions.ResponseError):
                p.execute()
            assert r.exists("{a}x") == 0 and r.exists("{b}y") == 0
        finally:
            r.close()


def test_watch_retry_loops_from_every_node_lose_no_update(cl):
    """Optimistic locking as redis-py's transaction() does it (WATCH, GET,
    MULTI, SET, EXEC, retry on a null EXEC), by clients on every node at
    once, on one counter and on a hash field: every increment lands once."""
    import threading
    per_client, errors = 25, []

    def work(n):
        r = cl.redis(n, decode_responses=True)
        try:
            for _ in range(per_client):
                def bump(pipe):
                    v = int(pipe.get("{cas}n") or 0)
                    f = int(pipe.hget("{cas}h", "f") or 0)
                    pipe.multi()
                    pipe.set("{cas}n", v + 1)
                    pipe.hset("{cas}h", "f", f + 1)
                r.transaction(bump, "{cas}n", "{cas}h")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            r.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client did not finish in time"
    assert not errors, errors
    r = cl.redis(0, decode_responses=True)
    try:
        assert r.get("{cas}n") == str(3 * per_client)
        assert r.hget("{cas}h", "f") == str(3 * per_client)
    finally:
        r.close()


def test_crossslot_and_hash_tags(cl):
    assert key_slot("a") != key_slot("b")
    for n in cl.nodes:
        with n.client() as c:
            v = c.execute("MSET", "a", "1", "b", "2")
            assert isinstance(v, RespError) and v == CROSSSLOT, v
            v = c.execute("MGET", "a", "b")
            assert isinstance(v, RespError) and v == CROSSSLOT, v
            v = c.execute("DEL", "a", "b")
            assert isinstance(v, RespError) and v == CROSSSLOT, v
            assert c.call("MSET", "{tag}a", "1", "{tag}b", "2").raw == b"+OK\r\n"
            assert c.execute("MGET", "{tag}a", "{tag}b") == [b"1", b"2"]
            assert c.execute("DEL", "{tag}a", "{tag}b") == 2
        # a cluster-aware connection gets CROSSSLOT too (checked before MOVED)
        with n.client() as c:
            c.execute("CLUSTER", "SLOTS")
            v = c.execute("MSET", "a", "1", "b", "2")
            assert isinstance(v, RespError) and v == CROSSSLOT, v
    rc = cl.redis_cluster()
    try:
        assert rc.mset({"{u1}x": "1", "{u1}y": "2"}) is True
        assert rc.mget("{u1}x", "{u1}y") == ["1", "2"]
    finally:
        rc.close()


def test_cluster_aware_connection_gets_moved(cl):
    for n in cl.nodes:
        with n.client() as c:
            assert isinstance(c.execute("CLUSTER", "SLOTS"), list)  # now cluster-aware
            k = key_led_elsewhere(cl, n.index, f"moved-{n.index}")
            v = c.execute("SET", k, "x")
            assert is_moved(v), v
            _, slot, addr = v.split()
            assert int(slot) == key_slot(k)
            host, port = addr.rsplit(":", 1)
            owner = cl.node_by_addr(host, port)
            assert owner is not None and owner != n.index, v
            # the node it points at takes the write
            with cl.nodes[owner].client() as c2:
                c2.execute("CLUSTER", "SLOTS")
                r = c2.call("SET", k, "x")
                assert r.raw == b"+OK\r\n" or is_moved(r.value), r  # moved meanwhile
            # a key this node leads is served here
            for m in range(2000):
                k2 = f"mine-{n.index}-{m}"
                if cl.leader_of_key(k2, via=n.index) == n.index:
                    r = c.call("SET", k2, "y")
                    assert r.raw == b"+OK\r\n" or is_moved(r.value), r
                    break


def test_readonly_reads_from_replicas(cl):
    rc = cl.redis_cluster()
    try:
        keys = [f"ro:{i}" for i in range(60)]
        for k in keys:
            assert rc.set(k, k + "-v") is True
    finally:
        rc.close()
    checked = 0
    for k in keys:
        slot = key_slot(k)
        for ri in cl.slot_replicas(slot):
            assert ri is not None
            with cl.nodes[ri].client() as c:
                assert c.call("READONLY").raw == b"+OK\r\n"
                v = c.execute("GET", k)
                assert v == (k + "-v").encode(), (k, ri, v)
                checked += 1
                # READWRITE: back to the leader-only behaviour -> MOVED (cluster-aware)
                assert c.call("READWRITE").raw == b"+OK\r\n"
                v = c.execute("GET", k)
                if cl.slot_owner(slot) != ri:  # unless it became the leader meanwhile
                    assert is_moved(v) or v == (k + "-v").encode(), v
    assert checked >= len(keys)  # two replicas per key, barring leader moves
    # redis-py with read_from_replicas
    rc = cl.redis_cluster(read_from_replicas=True)
    try:
        for k in keys:
            assert rc.get(k) == k + "-v"
    finally:
        rc.close()


def test_readonly_reads_see_latest_write(cl):
    """A follower read right after a write acknowledged by the leader sees it."""
    k = "ro-latest"
    slot = key_slot(k)
    replicas = cl.slot_replicas(slot)
    assert replicas
    conns = []
    try:
        for ri in replicas:
            c = cl.nodes[ri].client()
            assert c.call("READONLY").raw == b"+OK\r\n"
            conns.append(c)
        w = cl.redis(0)
        for i in range(50):
            assert w.set(k, str(i)) is True
            for c in conns:
                v = c.execute("GET", k)
                assert v == str(i).encode(), (i, v)
        w.close()
    finally:
        for c in conns:
            c.close()


def test_resp3_replies_keep_their_shape_when_forwarded(cl):
    """A RESP3 plain client on a node that does not lead the key's shard gets
    the same bytes as on the leader: maps, doubles, nulls and RESP3 EXEC, not
    the RESP2 shapes of the forwarding link. The link switches back for a
    RESP2 client."""
    k = key_led_elsewhere(cl, 0, "resp3")
    z, missing = f"{{{k}}}:z", f"{{{k}}}:missing"
    leader = cl.leader_of_key(k)
    assert leader is not None and leader != 0
    with cl.nodes[0].client() as here, cl.nodes[leader].client() as there:
        for conn in (here, there):
            assert conn.call("HELLO", "3").raw.startswith(b"%"), conn
        assert here.call("DEL", k, z).raw in (b":0\r\n", b":1\r\n", b":2\r\n")
        assert here.call("HSET", k, "f", "v").raw == b":1\r\n"
        assert here.call("ZADD", z, "1.5", "m").raw == b":1\r\n"
        expect = {
            ("HGETALL", k): b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n",
            ("ZSCORE", z, "m"): b",1.5\r\n",
            ("GET", missing): b"_\r\n",
            ("ZRANGE", z, "0", "-1", "WITHSCORES"): b"*1\r\n*2\r\n$1\r\nm\r\n,1.5\r\n",
        }
        for cmd, raw in expect.items():
            assert there.call(*cmd).raw == raw, (cmd, "on the leader")
            assert here.call(*cmd).raw == raw, (cmd, "forwarded")
        for conn in (here, there):
            assert conn.call("MULTI").raw == b"+OK\r\n"
            assert conn.call("ZSCORE", z, "m").raw == b"+QUEUED\r\n"
            assert conn.call("HGETALL", k).raw == b"+QUEUED\r\n"
        assert here.call("EXEC").raw == there.call("EXEC").raw == \
            b"*2\r\n,1.5\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    # a RESP2 client after it, through the same pooled links, gets RESP2
    with cl.nodes[0].client() as here:
        assert here.call("HGETALL", k).raw == b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
        assert here.call("ZSCORE", z, "m").raw == b"$3\r\n1.5\r\n"
        assert here.call("GET", missing).raw == b"$-1\r\n"


@pytest.fixture
def fresh3(tmp_path):
    """A 3-node cluster of its own (no forwarding link opened yet)."""
    yield from running_cluster(tmp_path / "fresh3", n=3)


def test_forwarded_request_does_not_run_when_its_link_setup_is_refused(fresh3):
    """A forwarding link says SHOAL.ROUTED, AUTH, HELLO and SELECT before the
    request; if the other node refuses one (here AUTH: the password was set on
    one node only), the request must not run there while the client is told it
    failed. Either it failed and did not run, or it ran and says so."""
    c = fresh3
    n0 = c.nodes[0]
    keys = [key_led_elsewhere(c, 0, f"auth-setup-{j}") for j in range(8)]
    with n0.client() as conn:
        assert conn.call("CONFIG", "SET", "requirepass", "only-here").raw == b"+OK\r\n"
    replies = [None] * len(keys)
    try:
        def incr(j):
            with n0.client() as conn:
                assert conn.call("AUTH", "only-here").raw == b"+OK\r\n"
                replies[j] = conn.call("INCR", keys[j]).raw
        threads = [threading.Thread(target=incr, args=(j,)) for j in range(len(keys))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    finally:
        with n0.client() as conn:
            assert conn.call("AUTH", "only-here").raw == b"+OK\r\n"
            assert conn.call("CONFIG", "SET", "requirepass", "").raw == b"+OK\r\n"
    refused = 0
    for k, rep in zip(keys, replies):
        with c.nodes[1].client() as conn:
            value = conn.call("GET", k).raw  # (forwarded if not led there)
        if rep.startswith(b"-"):
            refused += 1
            assert value == b"$-1\r\n", (k, rep, value, "told it failed, but it ran")
        else:
            assert rep == b":1\r\n" and value == b"$1\r\n1\r\n", (k, rep, value)
    assert refused > 0, f"no link was set up after CONFIG SET: {replies}"
    print(f"{refused} of {len(keys)} forwarded INCRs refused at link setup, none ran: {replies[0]!r}")


def test_leadership_transfers_are_invisible_to_clients(cl):
    """Leadership moves the balancer or an operator asks for must not reach
    clients as errors: a write or read the old leader turns away while it hands
    off is tried again by the node, where the key is led by then. Pipelined
    plain clients on every node and a READONLY reader see no error (no
    TRYAGAIN) through several transfers of their shard, and every write reads
    back; MULTI/EXEC transactions from plain clients on every node run exactly
    once each. A cluster client's GET on every node is answered with the value
    or MOVED, never CLUSTERDOWN: while leadership is on its way, the node waits
    for the new leader to be named (it answered CLUSTERDOWN in that window)."""
    assert cl.admin("BALANCE", "off") == [b"balance off"]
    try:
        def quiet(s):
            return [str(sh) for sh in s.shards if sh.moving or not sh.leader or len(sh.voters) != 3]
        st = cl.wait_status(quiet, 60.0, "no move in flight")
        shard = st.shards[0]
        lo, hi = shard.slots
        in_shard = (k for k in (f"tr:{i}" for i in range(200_000)) if lo <= key_slot(k) <= hi)
        keys = [next(in_shard) for _ in range(16 * len(cl.nodes))]
        counters = [next(in_shard) for _ in cl.nodes]
        for k in counters:
            cl.nodes[0].call("DEL", k)
        stop = threading.Event()
        deadline = time.monotonic() + 120.0
        errors = []
        rounds = [0] * len(cl.nodes)
        reads = [0]
        txns = [0] * len(cl.nodes)

        def writer(i):
            mine = keys[16 * i:16 * (i + 1)]
            r = redis.Redis(host=cl.nodes[i].host, port=cl.nodes[i].port, socket_timeout=15)
            try:
                for rnd in range(1, 1_000_000):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    p = r.pipeline(transaction=False)
                    for k in mine:
                        p.set(k, f"{i}:{rnd}")
                    for k in mine:
                        p.get(k)
                    out = p.execute(raise_on_error=False)
                    want = [True] * len(mine) + [f"{i}:{rnd}".encode()] * len(mine)
                    if out != want:
                        errors.append(f"node{i} round {rnd}: {out}")
                        return
                    rounds[i] = rnd
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"node{i}: {e!r}")
            finally:
                r.close()

        def transactions(i):
            r = redis.Redis(host=cl.nodes[i].host, port=cl.nodes[i].port, socket_timeout=15)
            try:
                for n in range(1, 1_000_000):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    p = r.pipeline(transaction=True)
                    p.incr(counters[i])
                    p.get(counters[i])
                    out = p.execute()
                    if out != [n, str(n).encode()]:
                        errors.append(f"node{i} transaction {n}: {out}")
                        return
                    txns[i] = n
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"node{i} transactions: {e!r}")
            finally:
                r.close()

        def reader():
            followers = [v for v in st.shards[0].voters if v != shard.leader]
            idx = next(j for j in range(len(cl.nodes)) if cl.nodes[j].node_id == followers[0])
            try:
                with cl.nodes[idx].client(timeout=15.0) as c:
                    assert c.call("READONLY").raw == b"+OK\r\n"
                    for _ in range(1_000_000):
                        if stop.is_set() or time.monotonic() > deadline:
                            return
                        v = c.execute("GET", keys[0])
                        if isinstance(v, RespError):
                            errors.append(f"READONLY GET on node{idx}: {v}")
                            return
                        reads[0] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"reader: {e!r}")

        aware = [0] * len(cl.nodes)

        def cluster_reader(i):
            try:
                with cl.nodes[i].client(timeout=15.0) as c:
                    c.call("CLUSTER", "SLOTS")  # a cluster-aware connection from here on
                    for _ in range(1_000_000):
                        if stop.is_set() or time.monotonic() > deadline:
                            return
                        raw = c.call("GET", keys[0]).raw
                        if raw.startswith(b"-") and not raw.startswith(b"-MOVED "):
                            errors.append(f"cluster client on node{i}: {raw!r}")
                            return
                        aware[i] += 1
                        time.sleep(0.001)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"cluster reader on node{i}: {e!r}")

        threads = [threading.Thread(target=writer, args=(i,), name=f"writer{i}") for i in range(len(cl.nodes))]
        threads.append(threading.Thread(target=reader, name="reader"))
        threads += [threading.Thread(target=cluster_reader, args=(i,), name=f"aware{i}") for i in range(len(cl.nodes))]
        threads += [threading.Thread(target=transactions, args=(i,), name=f"txn{i}") for i in range(len(cl.nodes))]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            leader = shard.leader
            for _ in range(6):
                to = shard.voters[(shard.voters.index(leader) + 1) % len(shard.voters)]
                out = cl.admin("TRANSFER", str(shard.id), to)
                assert not isinstance(out, RespError), out

                def led(s, to=to):
                    sh = next(x for x in s.shards if x.id == shard.id)
                    return [] if sh.leader == to else [f"led by {sh.leader}"]
                cl.wait_status(led, 20.0, f"shard {shard.id} led by {to}", interval=0.1)
                leader = to
                time.sleep(0.3)
                assert not errors, errors
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "client threads did not stop"
        assert not errors, "\n".join(errors[:10])
        assert min(rounds) > 0 and reads[0] > 0 and min(txns) > 0 and min(aware) > 0, (rounds, reads, txns, aware)
        for i, k in enumerate(counters):
            assert cl.nodes[0].call("GET", k) == str(txns[i]).encode(), (i, txns)
        print(f"transfers: 6; pipelined rounds per node {rounds}; READONLY reads {reads[0]}; "
              f"transactions per node {txns}; cluster-client GETs per node {aware}")
    finally:
        assert cl.admin("BALANCE", "on") == [b"balance on"]


@pytest.mark.skipif(not (NODE and NODE_REDIS) and not os.environ.get("CI"),
                    reason="nodejs and Debian's node-redis are not installed (scripts/install-deps.sh)")
def test_node_redis_client_plain_and_cluster(cl):
    """node-redis (the `redis` package for Node.js, Debian's node-redis) as an
    application uses it: plain clients on every node and a cluster client;
    hashes, lists, sets, sorted sets, MULTI/EXEC, a WATCH retry loop from all
    nodes at once, BLPOP with a timeout and woken from another node. The
    script checks every reply (tests/integration/node_redis_client.js)."""
    assert NODE and NODE_REDIS, "CI needs nodejs and node-redis (scripts/install-deps.sh)"
    script = os.path.join(os.path.dirname(__file__), "node_redis_client.js")
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    out = subprocess.run([NODE, script] + [f"{n.host}:{n.port}" for n in cl.nodes],
                         capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, f"node-redis script failed:\n{out.stdout}\n{out.stderr}"
    assert "WATCH loop 60 increments" in out.stdout, out.stdout
    print(out.stdout.strip())


@pytest.mark.skipif(not REDIS_BENCHMARK, reason="redis-benchmark is not installed")
def test_redis_benchmark_cluster(cl):
    n = cl.nodes[0]
    r = subprocess.run([REDIS_BENCHMARK, "--cluster", "-h", n.host, "-p", str(n.port),
                        "-n", "2000", "-t", "set,get", "-q"],
                       capture_output=True, timeout=180)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    print(out)
    assert r.returncode == 0, out
    assert not re.search(r"error", out, re.I), out
    for t in ("SET", "GET"):  # final figures (progress lines end in \r)
        assert re.search(rf"(^|\r){t}: [0-9.]+ requests per second", out, re.M), out


def test_parse_info_helper():
    """cluster_util.parse_info on a CLUSTER INFO sample (no shoal needed)."""
    sample = (b"cluster_state:ok\r\ncluster_slots_assigned:16384\r\n"
              b"shoal_shards:16\r\nshoal_shards_replicated:16\r\n")
    d = parse_info(sample)
    assert d["cluster_state"] == "ok" and d["shoal_shards"] == "16"


# --------------------------------------------------------------------------
# five nodes
# --------------------------------------------------------------------------

@pytest.fixture
def cluster5(tmp_path):
    stop_live_clusters()  # the 3-node cluster is done: do not run 8 nodes at once
    yield from running_cluster(tmp_path / "cluster5", start_timeout=120, n=5)


@pytest.mark.slow
def test_five_nodes_three_replicas_per_shard(cluster5):
    c = cluster5
    ids = {c.myid(n.index): n.index for n in c.nodes}
    assert len(ids) == 5
    # Nodes 4 and 5 joined last: replicas and leaders are still moving onto
    # them (a shard whose leadership moves is briefly without one on some
    # node). Once placement is settled, every node is ok.
    c.wait_status(lambda st: st.placement_problems(voters=3), 120.0, "5-node placement settled")
    for n in c.nodes:
        info = c.cluster_info(n.index)
        assert int(info["cluster_known_nodes"]) == 5, info
        assert info["cluster_state"] == "ok", info
    rc = c.redis_cluster()
    try:
        per_node = {i: 0 for i in range(5)}
        for n in c.nodes:
            shards = rc.cluster_shards(target_nodes=rc.get_node(host=n.host, port=n.port))
            assert len(shards) == int(c.cluster_info(n.index)["shoal_shards"])
            ranges = []
            for sh in shards:
                ranges += [(int(a), int(b)) for a, b in sh["slots"]]
                nodes = sh["nodes"]
                assert len(nodes) == 3, sh
                members = {ids.get(x["id"]) for x in nodes}
                assert None not in members and len(members) == 3, sh
                assert sorted(x["role"] for x in nodes) == ["master", "replica", "replica"], sh
                if n.index == 0:
                    for m in members:
                        per_node[m] += 1
            slot_ranges_cover_all(ranges)
        print(f"replicas per node: {per_node}")
        for s in c.slots():
            assert len({(h, p) for h, p, _ in s[2]}) == 3, s
        keys = [f"five:{i}" for i in range(1000)]
        pipe = rc.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, k[::-1])
        assert all(x is True for x in pipe.execute())
        assert rc.mget_nonatomic(keys) == [k[::-1] for k in keys]
    finally:
        rc.close()
    # plain clients on every node see the same data
    for n in c.nodes:
        with n.client() as conn:
            assert conn.execute("GET", "five:7") == b"7:evif"
    c.check_alive()


# --------------------------------------------------------------------------
# shoal demo
# --------------------------------------------------------------------------

DEMO_IP = "127.0.0.20"


def _demo_ports_free(ip, p):
    socks = []
    try:
        for q in (p, p + 1, p + 2, p + 10000, p + 10001, p + 10002):
            s = socket.socket()
            s.bind((ip, q))
            socks.append(s)
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _proc_start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[1]), rest[19]  # (ppid, start time)
    except (OSError, IndexError, ValueError):
        return None


def _alive_same(pid, start_time):
    """pid is still the process we saw (same start time) and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return rest[0] != "Z" and rest[19] == start_time
    except (OSError, IndexError):
        return False


def _children_of(pid):
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_start_time(int(d))
            if st and st[0] == pid:
                out[int(d)] = st[1]
    return out


def test_shoal_demo(tmp_path):
    """`shoal demo` starts 3 nodes on P..P+2, they form a working cluster, and
    SIGINT stops all of them with exit code 0."""
    if not SHOAL_BIN:
        pytest.skip(SKIP_NO_SHOAL)
    stop_live_clusters()
    port = next((p for p in range(21000, 29000, 7) if _demo_ports_free(DEMO_IP, p)), None)
    assert port, "no free port range for the demo"
    log_path = tmp_path / "demo.log"
    children = {}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([SHOAL_BIN, "demo", "--dir", str(tmp_path / "demo"),
                                 "--bind", DEMO_IP, "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ready = False
        for _ in range(1000):
            children.update(_children_of(proc.pid))
            assert proc.poll() is None, f"demo exited with {proc.returncode}:\n" \
                                        f"{log_path.read_text(errors='replace')[-3000:]}"
            infos = []
            for q in (port, port + 1, port + 2):
                try:
                    with RespConn(DEMO_IP, q, timeout=2, connect_timeout=1) as c:
                        infos.append(parse_info(c.execute("CLUSTER", "INFO")))
                except Exception:
                    infos.append({})
            ready = all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == "3"
                        and i.get("shoal_shards_replicated") == i.get("shoal_shards")
                        for i in infos)
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not ready:
            nodes = "".join(f"\n--- {p.name}:\n{p.read_text(errors='replace')[-2500:]}"
                            for p in sorted((tmp_path / "demo").glob("*.log")))
            pytest.fail(f"demo cluster not ready: {infos}\n{log_path.read_text(errors='replace')[-3000:]}{nodes}",
                        pytrace=False)
        # Its nodes prove a cluster secret made for it, kept private.
        secret = tmp_path / "demo" / "cluster.secret"
        assert len(secret.read_text().strip()) == 64 and (secret.stat().st_mode & 0o077) == 0
        with RespConn(DEMO_IP, port, timeout=2, connect_timeout=1) as c:
            assert parse_info(c.execute("INFO", "raft"))["cluster_secret"] == "yes"
        from redis.cluster import ClusterNode as RCNode
        from redis.cluster import RedisCluster
        rc = RedisCluster(startup_nodes=[RCNode(DEMO_IP, port)], decode_responses=True,
                          socket_timeout=10)
        try:
            for i in range(100):
                assert rc.set(f"demo:{i}", str(i)) is True
            assert rc.mget_nonatomic([f"demo:{i}" for i in range(100)]) == \
                [str(i) for i in range(100)]
        finally:
            rc.close()
        proc.send_signal(signal.SIGINT)
        rc_exit = proc.wait(timeout=30)
        out = log_path.read_text(errors="replace")
        assert rc_exit == 0, out[-3000:]
        assert str(port) in out, f"the demo should print how to connect:\n{out[-3000:]}"
        left = list(children)
        for _ in range(100):  # (children may take a moment to be reaped)
            left = [pid for pid, st in children.items() if _alive_same(pid, st)]
            if not left:
                break
            time.sleep(0.1)
        assert not left, f"demo left server processes running: {left}"
        for q in (port, port + 1, port + 2):
            with pytest.raises(OSError):
                socket.create_connection((DEMO_IP, q), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid, st in children.items():  # only our own children (same start time)
            if _alive_same(pid, st):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass



def _info_field(node, field: str) -> str:
    v = node.call("INFO", "cluster")
    assert not isinstance(v, RespError), v
    return parse_info(v).get(field, "")


def test_write_hints_come_on_once_every_node_reads_them(tmp_path, monkeypatch):
    """A rolling upgrade: node0 acts as a build that cannot read write hints
    (SHOAL_TEST_BUILD_FEATURES=0) and bootstraps the cluster, so its metadata
    starts without them; the other nodes read them. No leader sends hints
    until node0 is restarted as a build that reads them too; then the cluster
    switches them on by itself, followers apply blind writes on them, and
    every write reads back."""
    cl_ = Cluster(tmp_path / "upgrade", n=3)
    try:
        monkeypatch.setenv("SHOAL_TEST_BUILD_FEATURES", "0")
        cl_.nodes[0].start()
        monkeypatch.delenv("SHOAL_TEST_BUILD_FEATURES")
        cl_.start()
        rc = redis.RedisCluster(host=cl_.nodes[1].host, port=cl_.nodes[1].port, decode_responses=True)
        try:
            for i in range(200):
                assert rc.set(f"up:{i}", f"a{i}")
            time.sleep(1.5)  # several gossip rounds: nothing switches on while node0 cannot read hints
            for n in cl_.nodes:
                assert _info_field(n, "cluster_features") == "none", n.name
                assert _info_field(n, "write_hints_applied") == "0", n.name
            cl_.restart(0)  # upgraded
            cl_.wait_ready()
            eventually(lambda: all(_info_field(n, "cluster_features") == "write-hints,split-child" for n in cl_.nodes),
                       timeout=30, what="every node to see write hints switched on")
            for i in range(200, 600):
                assert rc.set(f"up:{i}", f"b{i}")
            for i in range(0, 600, 2):  # overwrites: keys that exist
                assert rc.set(f"up:{i}", f"c{i}")
            hinted = eventually(lambda: sum(int(_info_field(n, "write_hints_applied")) for n in cl_.nodes) or None,
                                timeout=20, what="writes applied on hints")
            assert hinted > 0
            for i in range(600):
                assert rc.get(f"up:{i}") == (f"c{i}" if i % 2 == 0 else (f"a{i}" if i < 200 else f"b{i}")), i
            # Every replica counted the keys alike, hinted or not: each node
            # sums the counters of the shards it holds (all of them).
            eventually(lambda: all(n.call("DBSIZE") == 600 for n in cl_.nodes), timeout=20,
                       what="DBSIZE 600 on every node")
        finally:
            rc.close()
    finally:
        problems = cl_.teardown()
    assert not problems, problems


def test_idle_heartbeats_share_one_frame_per_peer(tmp_path):
    """Every group a worker holds ticks at once: the heartbeats of all the
    groups it leads leave in one frame to each peer, and the answers to a
    peer's frame in one frame back (node::Groups::Drive). Idle, a node of a
    48-shard cluster then sends a few frames a tick, not one a group (some
    64 a tick when each group's round sent its own)."""
    shards, tick_s = 48, 0.05
    cl_ = Cluster(tmp_path / "idle", n=3, shards=shards)
    try:
        cl_.start()
        cl_.wait_stable_leaders()
        workers = max(1, cl_.workers)

        def frames_sent():
            return [int(parse_info(n.call("INFO", "raft"))["peer_frames_sent"]) for n in cl_.nodes]

        # Snapshots of the new replicas and the leaders' moves may still be
        # under way: take the quietest of up to ten windows of one second.
        best = None
        for _ in range(10):
            before, t0 = frames_sent(), time.monotonic()
            time.sleep(1.0)
            after, dt = frames_sent(), time.monotonic() - t0
            per_tick = max(a - b for a, b in zip(after, before)) / (dt / tick_s)
            best = per_tick if best is None else min(best, per_tick)
            if best <= 6 * workers:
                break
        # Each worker: a frame of heartbeats to each of two peers, a frame
        # of answers to each peer's heartbeats; gossip is 2 frames a 100 ms.
        assert best <= 6 * workers, f"{best:.1f} peer frames a tick from the busiest node"
    finally:
        problems = cl_.teardown()
    assert not problems, problems
