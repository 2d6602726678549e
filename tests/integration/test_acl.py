"""ACL users (ACL SETUSER/DELUSER/GETUSER/LIST/USERS/WHOAMI/CAT, AUTH user
pass), kept in the meta shard so every node enforces the same users.

* one node against a real redis-server in the same run: ACL WHOAMI, AUTH,
  the NOPERM refusals and ACL's errors, byte for byte;
* a 3-node cluster: a user limited to `~app:*` and `+@read`, created on one
  node, can GET app:* keys on every node (forwarded or not, plain and
  cluster-aware clients) and gets NOPERM for SET or other:* keys everywhere;
  a forwarded request runs on the leader's node as that user; a user
  deleted on one node can log in nowhere.

Needs SHOAL_BIN (skipped otherwise).
"""

from __future__ import annotations

import time

import pytest

from cluster_util import key_slot, running_cluster
from conftest import (REDIS_SERVER_BIN, SELFTEST, RespError, ServerPool, make_redis, make_shoal)

try:
    import redis
except ImportError:  # pragma: no cover
    redis = None

pytestmark = pytest.mark.skipif(SELFTEST, reason="ACL tests need a real shoal binary")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    if not REDIS_SERVER_BIN:
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("acl1")
    pool = ServerPool()
    try:
        ref = pool.add(make_redis(tmp, "reference-redis")).start()
        tgt = pool.add(make_shoal(tmp, "shoal", durability="none")).start()
        yield ref, tgt
    finally:
        problems = pool.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# (command, ...) sent in order on one connection to each server; every raw
# reply must match. Later steps run as whoever AUTH made the connection.
SCRIPT = [
    ("ACL", "WHOAMI"),
    ("AUTH", "nopass-configured"),
    ("ACL", "SETUSER", "app", "on", ">app-password", "~app:*", "+@read"),
    ("ACL", "SETUSER", "app", "+nosuchcommand"),
    ("ACL", "SETUSER", "app", "bogus-rule"),
    ("ACL", "SETUSER", "app", "#notahash"),
    ("ACL", "SETUSER", "bad name", "on"),
    ("ACL", "DELUSER", "default"),
    ("ACL", "USERS"),
    ("ACL", "GETUSER", "nosuchuser"),
    ("ACL", "CAT"),
    ("ACL", "CAT", "nosuchcategory"),
    ("AUTH", "app", "wrong"),
    ("AUTH", "nosuchuser", "x"),
    ("AUTH", "app", "app-password"),
    ("ACL", "WHOAMI"),
    ("GET", "app:1"),
    ("SET", "app:1", "v"),
    ("GET", "other:1"),
    ("MGET", "app:{t}1", "app:{t}2"),
    ("DEL", "app:1"),
    ("ACL", "WHOAMI"),
    ("AUTH", "default", "anything"),
    ("ACL", "WHOAMI"),
]


def test_acl_replies_match_redis(pair):
    ref, tgt = pair
    with ref.client() as r, tgt.client() as t:
        for cmd in SCRIPT:
            want = r.call(*cmd).raw
            got = t.call(*cmd).raw
            assert got == want, f"{cmd}: shoal {got!r} != redis {want!r}"
    with ref.client() as r, tgt.client() as t:  # a new connection starts as default
        for cmd in [("ACL", "WHOAMI"), ("ACL", "DELUSER", "app", "nosuchuser"), ("ACL", "USERS"),
                    ("AUTH", "app", "app-password")]:
            want = r.call(*cmd).raw
            got = t.call(*cmd).raw
            assert got == want, f"{cmd}: shoal {got!r} != redis {want!r}"


def test_acl_getuser_and_list_describe_the_user(pair):
    _, tgt = pair
    with tgt.client() as c:
        assert c.execute("ACL", "SETUSER", "reader", "on", ">pw", "~r:*", "+@read", "-keys") in (b"OK", "OK")
        got = c.execute("ACL", "GETUSER", "reader")
        fields = dict(zip(got[0::2], got[1::2]))
        assert fields[b"flags"] == [b"on"]
        assert len(fields[b"passwords"]) == 1 and len(fields[b"passwords"][0]) == 64
        assert fields[b"commands"] == b"-@all +@read -keys"
        assert fields[b"keys"] == b"~r:*"
        lines = c.execute("ACL", "LIST")
        assert any(line.startswith(b"user reader on #") and line.endswith(b"~r:* resetchannels -@all +@read -keys")
                   for line in lines), lines
        assert b"user default on nopass ~* &* +@all" in lines
        assert c.execute("ACL", "DELUSER", "reader") == 1


# --------------------------------------------------------------------------
# a cluster of 3
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def acl3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acl3")
    yield from running_cluster(tmp, n=3, shards=6)


def _wait(cond, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _as_user(node, user: str, password: str):
    c = node.client()
    assert c.execute("AUTH", user, password) in (b"OK", "OK")
    return c


def test_a_user_made_on_one_node_is_enforced_on_every_node(acl3):
    cl = acl3
    keys = [f"app:{i}" for i in range(40)]
    assert len({key_slot(k) for k in keys}) > 10  # spread over the shards and nodes
    for k in keys + ["other:1"]:
        assert cl.nodes[0].call("SET", k, "v-" + k) in (b"OK", "OK")
    # (+cluster +info +command: what a cluster-aware client asks on connecting)
    assert cl.nodes[1].call("ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "+@read", "+cluster", "+info",
                            "+command") in (b"OK", "OK")
    for n in cl.nodes:
        def logged_in():
            with n.client() as c:
                return c.execute("AUTH", "app", "app-pw") in (b"OK", "OK")
        _wait(logged_in, f"{n.name} to know the user")
        with _as_user(n, "app", "app-pw") as c:
            for k in keys:  # most are led elsewhere: forwarded
                assert c.execute("GET", k) == ("v-" + k).encode()
            set_reply = c.execute("SET", "app:1", "x")
            assert isinstance(set_reply, RespError) and set_reply.startswith("NOPERM"), set_reply
            other = c.execute("GET", "other:1")
            assert isinstance(other, RespError) and other.startswith("NOPERM"), other
    # A cluster-aware client as that user.
    rc = cl.redis_cluster(username="app", password="app-pw")
    try:
        for k in keys[:10]:
            assert rc.get(k) == "v-" + k
        with pytest.raises(redis.exceptions.NoPermissionError):
            rc.set("app:2", "x")
    finally:
        rc.close()
    for k in keys[:3]:
        assert cl.nodes[2].call("GET", k) == ("v-" + k).encode()  # nothing was written


def test_forwarded_requests_run_as_the_clients_user(acl3):
    cl = acl3
    assert cl.nodes[0].call("ACL", "SETUSER", "fwd", "on", ">fwd-pw", "~fwd:*", "+@all") in (b"OK", "OK")
    _wait(lambda: all(n.call("ACL", "GETUSER", "fwd") is not None for n in cl.nodes), "every node to know fwd")
    # A key each node does not lead, written through that node as fwd: the
    # link to the leader's node logs in as fwd (CLIENT LIST there says so).
    for n in cl.nodes:
        with _as_user(n, "fwd", "fwd-pw") as c:
            for i in range(30):
                assert c.execute("SET", f"fwd:{n.index}:{i}", "1") in (b"OK", "OK")
    seen = 0
    for n in cl.nodes:
        listing = n.call("CLIENT", "LIST")
        seen += listing.count(b"user=fwd")
    assert seen >= 1
    # Losing the right on one node takes it away on all: writes are refused
    # through any node, for keys led anywhere.
    assert cl.nodes[2].call("ACL", "SETUSER", "fwd", "-@write") in (b"OK", "OK")
    for n in cl.nodes:
        # Each node applies the change on its own (within a moment): until
        # it has, a write led there is still allowed, one forwarded is not.
        def applied():
            user = n.call("ACL", "GETUSER", "fwd")
            fields = dict(zip(user[0::2], user[1::2]))
            return fields[b"commands"].endswith(b"-@write")
        _wait(applied, f"{n.name} to apply the change")
        with _as_user(n, "fwd", "fwd-pw") as c:
            for i in range(30):  # led here and elsewhere
                r = c.execute("SET", f"fwd:{n.index}:{i}", "2")
                assert isinstance(r, RespError) and r.startswith("NOPERM"), r
    for n in cl.nodes:
        for i in range(30):
            assert cl.nodes[0].call("GET", f"fwd:{n.index}:{i}") == b"1"


def test_a_deleted_user_can_log_in_nowhere(acl3):
    cl = acl3
    assert cl.nodes[2].call("ACL", "SETUSER", "gone", "on", ">gone-pw", "~*", "+@all") in (b"OK", "OK")
    for n in cl.nodes:
        _wait(lambda: n.call("AUTH", "gone", "gone-pw") in (b"OK", "OK"), f"{n.name} to know gone")
    held = _as_user(cl.nodes[1], "gone", "gone-pw")
    try:  # (closed below)
        assert cl.nodes[0].call("ACL", "DELUSER", "gone") == 1
        for n in cl.nodes:
            _wait(lambda: isinstance(n.call("AUTH", "gone", "gone-pw"), RespError), f"{n.name} to forget gone")
        # A connection still logged in as the deleted user may do nothing.
        r = held.execute("GET", "app:1")
        assert isinstance(r, RespError) and r.startswith("NOPERM"), r
    except BaseException:
        held.close()
        raise
    # Made again under the same name: the old session is still not it.
    assert cl.nodes[0].call("ACL", "SETUSER", "gone", "on", ">new-pw", "~*", "+@all") in (b"OK", "OK")
    _wait(lambda: cl.nodes[1].call("AUTH", "gone", "new-pw") in (b"OK", "OK"), "node1 to know the new gone")
    r = held.execute("GET", "app:1")
    assert isinstance(r, RespError) and r.startswith("NOPERM"), r
    held.close()
    assert cl.nodes[1].call("ACL", "DELUSER", "gone") == 1
    assert cl.nodes[1].call("ACL", "DELUSER", "gone") == 0
    users = cl.nodes[1].call("ACL", "USERS")
    assert b"gone" not in users and b"default" in users


def test_transactions_and_watch_as_a_limited_user(acl3):
    """MULTI/EXEC and WATCH are judged as the client's commands on every node
    (a forwarded transaction arrives as SHOAL.EXEC); WATCH of a key outside
    the user's patterns is refused, as in Redis."""
    cl = acl3
    assert cl.nodes[0].call("ACL", "SETUSER", "tx", "on", ">tx-pw", "~tx:*", "+@read", "+@write", "+multi",
                            "+exec", "+watch", "+unwatch") in (b"OK", "OK")
    _wait(lambda: all(n.call("AUTH", "tx", "tx-pw") in (b"OK", "OK") for n in cl.nodes), "every node to know tx")
    for n in cl.nodes:
        with _as_user(n, "tx", "tx-pw") as c:
            for i in range(6):  # keys led here and elsewhere
                k = f"tx:{{{n.index}-{i}}}"
                assert c.execute("WATCH", k) in (b"OK", "OK")
                assert c.execute("MULTI") in (b"OK", "OK")
                assert c.execute("INCR", k) in (b"QUEUED", "QUEUED")
                assert c.execute("EXEC") == [1]
            r = c.execute("WATCH", "notx:1")
            assert isinstance(r, RespError) and r.startswith("NOPERM"), r
            assert c.execute("MULTI") in (b"OK", "OK")
            r = c.execute("SET", "notx:1", "x")
            assert isinstance(r, RespError) and r.startswith("NOPERM"), r
            r = c.execute("EXEC")
            assert isinstance(r, RespError) and r.startswith("EXECABORT"), r
    assert cl.nodes[1].call("EXISTS", "notx:1") == 0
