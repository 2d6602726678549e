"""Server behaviour that has no redis-server counterpart to diff against:
active expiry, INFO, the memory budget, configuration, maxclients."""
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
import redis

from conftest import encode_command, shoal_available

pytestmark = pytest.mark.skipif(not shoal_available(), reason="SHOAL_BIN not set")


def test_active_expiry_removes_keys_without_access(shoal):
    r = redis.Redis(host=shoal.host, port=shoal.port)
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"short:{i}", "v", px=1500)  # long enough to count them first, even on a loaded machine
    pipe.set("long", "v", ex=3600)
    pipe.execute()
    assert r.dbsize() == 301
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and r.dbsize() > 1:  # bounded wait, never touching the keys
        time.sleep(0.1)
    assert r.dbsize() == 1, "active expiry did not remove expired keys"
    info = r.info()
    assert info["expired_keys"] == 300
    assert info["db0"]["keys"] == 1 and info["db0"]["expires"] == 1
    assert r.get("long") == b"v"


def test_info_sections_and_counters(shoal):
    r = redis.Redis(host=shoal.host, port=shoal.port)
    r.set("a", "1")
    r.get("a")
    info = r.info("all")
    for field in ("redis_version", "tcp_port", "connected_clients", "used_memory",
                  "storage_block_cache_bytes", "durability", "total_commands_processed"):
        assert field in info, field
    assert info["tcp_port"] == shoal.port
    assert info["durability"] == "fsync"
    assert info["total_commands_processed"] >= 2
    assert info["durable_seq"] >= 1, "an acknowledged write in fsync mode must be synced"
    r.config_resetstat()
    assert r.info("stats")["total_commands_processed"] <= 2
    assert set(r.info("keyspace")) == {"db0"}


def test_watch_counts_as_one_command(shoal):
    """WATCH reads each key's fingerprint the way a keyed read runs; those
    reads are part of the WATCH, not commands of their own: the counter
    grows by one for it, and CLIENT LIST shows it as the last command."""
    a = redis.Redis(host=shoal.host, port=shoal.port, single_connection_client=True)
    b = redis.Redis(host=shoal.host, port=shoal.port, single_connection_client=True)
    a_id = a.client_id()
    before = b.info("stats")["total_commands_processed"]
    assert a.execute_command("WATCH", "{w}1", "{w}2", "{w}3") in (b"OK", "OK", True)
    after = b.info("stats")["total_commands_processed"]
    assert after - before == 2, "WATCH and the INFO that read the counter, nothing else"
    mine = [c for c in b.client_list() if int(c["id"]) == a_id]
    assert len(mine) == 1 and mine[0]["cmd"] == "watch", mine
    a.close()
    b.close()


def test_config_set_changes_limits_at_run_time(shoal):
    r = redis.Redis(host=shoal.host, port=shoal.port)
    assert r.config_get("proto-max-bulk-len") == {"proto-max-bulk-len": str(512 * 1024 * 1024)}
    assert r.config_set("proto-max-bulk-len", "1mb")
    r.set("k", "")
    with pytest.raises(redis.ResponseError, match="string exceeds maximum allowed size"):
        r.setrange("k", 1024 * 1024, "x")
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.config_set("port", "1")
    with pytest.raises(redis.ResponseError, match="CONFIG SET failed"):
        r.config_set("maxclients", "abc")


def test_config_set_while_other_workers_read_the_setting(shoal_factory):
    """CONFIG SET on one connection while connections on other workers read
    the same setting (#9 item 10). A new copy of the settings is published,
    never changed under a reader: every read sees one of the values set,
    whole, and the node lives (changed in place, a reader copies a string
    that the writer frees: under ASan the node aborts)."""
    s = shoal_factory(workers=4)
    values = [chr(ord("a") + i) * n for i, n in enumerate((3000, 20000, 9000, 40000))]
    allowed = set(values) | {""}
    stop = threading.Event()
    seen_bad: list = []
    reads = [0]

    def reader() -> None:
        r = redis.Redis(host=s.host, port=s.port, socket_timeout=10)
        r.ping()  # connected (and authenticated) before the first password is set
        for _ in range(200000):  # bounded; stops with the writer
            if stop.is_set():
                return
            v = r.config_get("requirepass").get("requirepass", "")
            reads[0] += 1
            if v not in allowed:
                seen_bad.append(v[:40])
                return

    w = redis.Redis(host=s.host, port=s.port, socket_timeout=10)
    w.ping()
    threads = [threading.Thread(target=reader, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    sets = 0
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and sets < 100000:
            assert w.config_set("requirepass", values[sets % len(values)])
            sets += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        w.config_set("requirepass", "")  # the writer's connection is authenticated
    print(f"[config] {sets} CONFIG SET while {reads[0]} reads ran on other workers")
    assert not seen_bad, f"a read saw a value never set: {seen_bad}"
    assert reads[0] > 100 and sets > 100
    with s.client() as conn:
        assert conn.call("PING").raw == b"+PONG\r\n"


def test_maxclients_refuses_extra_connections(shoal):
    r = redis.Redis(host=shoal.host, port=shoal.port)
    r.config_set("maxclients", "3")
    # The fixture's readiness probes may not be counted out yet: wait (a
    # bounded while) until this connection is the only one.
    deadline = time.time() + 10
    while r.info("clients")["connected_clients"] > 1 and time.time() < deadline:
        time.sleep(0.05)
    assert r.info("clients")["connected_clients"] == 1
    held = [redis.Redis(host=shoal.host, port=shoal.port) for _ in range(2)]
    for h in held:
        assert h.ping()
    # A raw socket: redis-py may report "Connection not ready" when the
    # refusal arrives before its own readiness check (a real redis-server
    # shows the same race), so read what the server says directly.
    with socket.create_connection((shoal.host, shoal.port), timeout=5) as s:
        data = b""
        deadline = time.time() + 5
        while b"\r\n" not in data and time.time() < deadline:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"-ERR max number of clients reached"), data
    for h in held:
        h.close()
    r.config_set("maxclients", "10000")


def test_bad_configuration_is_refused_clearly(tmp_path):
    binary = os.environ["SHOAL_BIN"]
    cfg = tmp_path / "bad.toml"
    cfg.write_text('prot = 7000\n')
    out = subprocess.run([binary, "server", "--config", str(cfg), "--dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "unknown setting 'prot'" in out.stderr
    out = subprocess.run([binary, "server", "--durability", "sometimes"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0 and "durability" in out.stderr


def test_data_larger_than_the_memory_budget(shoal_factory, tmp_path):
    # 32 MiB budget, ~80 MiB of values: everything must read back.
    cfg = tmp_path / "small.toml"
    cfg.write_text('maxmemory = "32mb"\n')
    s = shoal_factory(config=cfg, durability="none")
    r = redis.Redis(host=s.host, port=s.port)
    import random
    rng = random.Random(7)  # incompressible values, reproducible
    kept = {}
    for start in range(0, 20000, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, start + 1000):
            v = rng.randbytes(4096)
            if i % 997 == 0:
                kept[i] = v
            pipe.set(f"big:{i}", v)
        pipe.execute()
    assert r.dbsize() == 20000
    for i, v in kept.items():
        assert r.get(f"big:{i}") == v
    mem = r.info("memory")
    assert mem["maxmemory"] == 32 * 1024 * 1024
    assert mem["storage_block_cache_capacity"] <= 24 * 1024 * 1024
    assert mem["storage_disk_bytes"] > 32 * 1024 * 1024, "the data should have gone to disk"


def test_two_thousand_concurrent_connections(shoal):
    import resource
    import socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2200:
        pytest.skip("this process may not open 2000 sockets")
    socks = []
    try:
        for _ in range(2000):
            socks.append(socket.create_connection((shoal.host, shoal.port), timeout=10))
        for i, s in enumerate(socks):
            s.sendall(b"*3\r\n$3\r\nSET\r\n$6\r\nconn%02d\r\n$1\r\nv\r\n" % (i % 100) if i < 100
                      else b"PING\r\n")
        for i, s in enumerate(socks):
            want = b"+OK\r\n" if i < 100 else b"+PONG\r\n"
            got = b""
            for _ in range(100):  # bounded: a reply is a few bytes
                if len(got) >= len(want):
                    break
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            assert got == want, (i, got)
        r = redis.Redis(host=shoal.host, port=shoal.port)
        assert r.info("clients")["connected_clients"] >= 2000
    finally:
        for s in socks:
            s.close()


def send_and_read_until_closed(shoal, payload):
    """Sends `payload` on a new connection and returns all it gets until
    the server closes it (bounded in reads and time)."""
    got = b""
    with socket.create_connection((shoal.host, shoal.port), timeout=10) as s:
        s.sendall(payload)
        for _ in range(1000):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def test_pipelined_writes_answer_before_a_protocol_error(shoal):
    got = send_and_read_until_closed(
        shoal, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n+bad\r\n")
    assert got == b"+OK\r\n:1\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    r = redis.Redis(host=shoal.host, port=shoal.port)
    assert r.get("a") == b"1" and r.get("n") == b"1"


def test_pipelined_gets_answer_in_order_among_other_commands(shoal):
    """GETs in a pipeline are read together (one MultiGet): each still gets
    GET's reply, in request order, around writes, other reads, MULTI, SELECT
    and a protocol error, and past a batch's 64 keys."""
    r = redis.Redis(host=shoal.host, port=shoal.port)
    big = b"x" * 100_000
    r.set("s", "v")
    r.set("big", big)
    r.hset("h", "f", "v")
    r.set("gone", "v", px=1)
    time.sleep(0.05)
    many = [f"k{i}" for i in range(150)]
    with redis.Redis(host=shoal.host, port=shoal.port, db=2).pipeline(transaction=False) as p:
        for k in many[::2]:  # every other one exists
            p.set(k, f"v{k}")
        p.execute()
    pipeline = [("GET", "s"), ("GET", "missing"), ("GET", "h"), ("GET", "gone"), ("GET", "big"),
                ("SET", "s", "changed"), ("GET", "s"), ("STRLEN", "s"), ("GET", "s"),
                ("INCR", "n"), ("GET", "n"), ("SELECT", "2"), ("GET", "s")]
    pipeline += [("GET", k) for k in many]
    pipeline += [("SELECT", "0"), ("MULTI",), ("GET", "s"), ("EXEC",), ("GET", "s"), ("MGET", "s", "s")]
    want = [b"$1\r\nv\r\n", b"$-1\r\n",
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", b"$-1\r\n",
            b"$100000\r\n" + big + b"\r\n", b"+OK\r\n", b"$7\r\nchanged\r\n", b":7\r\n",
            b"$7\r\nchanged\r\n", b":1\r\n", b"$1\r\n1\r\n", b"+OK\r\n", b"$-1\r\n"]
    want += [(b"$%d\r\nv%s\r\n" % (len(k) + 1, k.encode())) if i % 2 == 0 else b"$-1\r\n" for i, k in enumerate(many)]
    want += [b"+OK\r\n", b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n$7\r\nchanged\r\n", b"$7\r\nchanged\r\n",
             b"*2\r\n$7\r\nchanged\r\n$7\r\nchanged\r\n"]
    expected = b"".join(want) + b"-ERR Protocol error: expected '$', got '+'\r\n"
    payload = b"".join(encode_command(*c) for c in pipeline) + b"*2\r\n$3\r\nGET\r\n+s\r\n"
    assert send_and_read_until_closed(shoal, payload) == expected


def test_repeated_reads_hit_the_value_cache_and_see_every_write(shoal):
    """GETs of a key already read come from the engine's value cache
    (INFO's storage_value_cache_hits grows), and every kind of write, on
    any connection, is seen by the next read."""
    r = redis.Redis(host=shoal.host, port=shoal.port)
    w = redis.Redis(host=shoal.host, port=shoal.port)

    def hits():
        return r.info("memory")["storage_value_cache_hits"]

    w.set("vc", "1")
    assert r.get("vc") == b"1"
    before = hits()
    for _ in range(5):
        assert r.get("vc") == b"1"
    assert hits() >= before + 5
    w.set("vc", "2")
    assert r.get("vc") == b"2"
    w.append("vc", "3")
    assert r.get("vc") == b"23"
    w.incr("vc")
    assert r.get("vc") == b"24"
    w.delete("vc")
    assert r.get("vc") is None
    w.hset("vc", "f", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.get("vc")
    w.delete("vc")
    w.set("vc", "short-lived", px=200)
    assert r.get("vc") == b"short-lived"
    assert r.get("vc") == b"short-lived"
    time.sleep(0.3)
    assert r.get("vc") is None  # the cached value carries its expiry
    keys = [f"vc{i}" for i in range(200)]
    def write(items, delete=()):  # keys of many slots: one pipeline, not MSET
        with w.pipeline(transaction=False) as p:
            for k, v in items:
                p.set(k, v)
            for k in delete:
                p.delete(k)
            p.execute()

    write([(k, k) for k in keys])
    for _ in range(2):
        with r.pipeline(transaction=False) as p:
            for k in keys:
                p.get(k)
            assert p.execute() == [k.encode() for k in keys]
    write([(k, k + "-new") for k in keys[::2]], delete=keys[1::4])
    with r.pipeline(transaction=False) as p:
        for k in keys:
            p.get(k)
        got = p.execute()
    for i, k in enumerate(keys):
        want = (k + "-new").encode() if i % 2 == 0 else (None if i % 4 == 1 else k.encode())
        assert got[i] == want, k
    # A collection deleted whole (over 1024 elements: its elements go by a
    # range deletion) leaves the other keys' cached values be.
    w.hset("vc-big", mapping={f"f{i}": "v" for i in range(1100)})
    assert r.get(keys[0]) == (keys[0] + "-new").encode()
    before = hits()
    assert w.delete("vc-big") == 1
    assert r.get(keys[0]) == (keys[0] + "-new").encode()
    assert hits() == before + 1
    assert r.hlen("vc-big") == 0
    # FLUSHALL erases every cached value and gives their memory back.
    assert r.info("memory")["storage_value_cache_bytes"] > 0
    w.flushall()
    assert r.info("memory")["storage_value_cache_bytes"] == 0
    assert r.get(keys[0]) is None
    w.set(keys[0], "after flush")
    assert r.get(keys[0]) == b"after flush"
    mem = r.info("memory")
    assert 0 < mem["storage_value_cache_bytes"] <= mem["storage_value_cache_capacity"]
    assert mem["storage_value_cache_misses"] > 0


def test_client_list_kill_and_setinfo_across_workers(shoal):
    import socket
    admin = redis.Redis(host=shoal.host, port=shoal.port)
    others = [redis.Redis(host=shoal.host, port=shoal.port) for _ in range(6)]
    for i, o in enumerate(others):  # six connections land on both workers
        o.client_setname(f"peer{i}")
    assert admin.execute_command("CLIENT", "SETINFO", "lib-name", "shoal-test") == b"OK"
    assert "lib-name=shoal-test" in admin.execute_command("CLIENT", "INFO").decode()
    names = {c["name"] for c in admin.client_list()}
    assert {f"peer{i}" for i in range(6)} <= names
    with socket.create_connection((shoal.host, shoal.port), timeout=10) as victim:
        victim.sendall(b"CLIENT SETNAME victim\r\nCLIENT ID\r\n")
        reply = b""
        for _ in range(100):  # bounded: two short replies
            if reply.count(b"\r\n") >= 2:
                break
            reply += victim.recv(256)
        victim_id = int(reply.split(b"\r\n")[1][1:])
        assert admin.client_kill_filter(_id=victim_id) == 1
        assert victim.recv(256) == b"", "a killed client's connection is closed"
    assert admin.client_kill_filter(_id=victim_id) == 0
    names_after = {c["name"] for c in admin.client_list()}
    assert "victim" not in names_after and "peer4" in names_after
    with pytest.raises(redis.ResponseError, match="No such client"):
        admin.execute_command("CLIENT", "KILL", "127.0.0.1:1")
    with pytest.raises(redis.ResponseError, match="Unrecognized option"):
        admin.execute_command("CLIENT", "SETINFO", "lib-color", "x")
    for o in others:
        o.close()


def test_transactions_refuse_what_shoal_cannot_run_in_one(shoal):
    """Inside MULTI, commands that a one-entry transaction cannot hold are
    refused at once (and EXEC aborts): keyless ones, connection state
    changes, keys of two slots; SHOAL.EXEC is for forwarding nodes only."""
    from conftest import RespConn, RespError

    def refused(v, text):
        return isinstance(v, RespError) and text in v

    with RespConn(shoal.host, shoal.port) as c:
        for bad in (["DBSIZE"], ["HELLO", "3"], ["CLIENT", "SETNAME", "x"], ["FLUSHALL"]):
            assert c.execute("MULTI") == "OK"
            assert c.execute("SET", "{m}a", "1") == "QUEUED"
            assert refused(c.execute(*bad), "inside MULTI is not supported"), bad
            assert refused(c.execute("EXEC"), "EXECABORT")
            assert c.execute("GET", "{m}a") is None
        assert c.execute("MULTI") == "OK"
        assert c.execute("SET", "{m}a", "1") == "QUEUED"
        assert refused(c.execute("SET", "{other}b", "1"), "CROSSSLOT")
        assert refused(c.execute("EXEC"), "EXECABORT")
        # WATCH of a key of another slot than the transaction's
        assert c.execute("WATCH", "{w}k") == "OK"
        assert c.execute("MULTI") == "OK"
        assert c.execute("SET", "{m}a", "1") == "QUEUED"
        assert refused(c.execute("EXEC"), "CROSSSLOT")
        assert c.execute("GET", "{m}a") is None
        assert refused(c.execute("SHOAL.EXEC", "0", "1", "PING"), "not by clients")
        # SELECT inside a transaction that runs: the connection stays there
        assert c.execute("MULTI") == "OK"
        assert c.execute("SELECT", "2") == "QUEUED"
        assert c.execute("SET", "{m}db2", "x") == "QUEUED"
        assert c.execute("EXEC") == ["OK", "OK"]
        assert c.execute("GET", "{m}db2") == b"x"


def test_default_workers_follow_the_cpu_affinity(shoal_factory):
    # One worker per core the process may run on (taskset, a container's
    # cpuset), not per core of the machine, but one left for the node's
    # other threads: at least one worker.
    if not shutil.which("taskset"):
        pytest.skip("taskset (util-linux) is not installed")
    usable = sorted(os.sched_getaffinity(0))
    sets = [usable[:1]] + [usable[:n] for n in (2, 3) if len(usable) >= n]
    for cpus in sets:
        s = shoal_factory(workers=0, cpus=",".join(map(str, cpus)))
        assert os.sched_getaffinity(s.pid) == set(cpus)  # shoal itself, not a wrapper
        r = redis.Redis(host=s.host, port=s.port)
        assert r.info("server")["workers"] == max(1, len(cpus) - 1)
        assert r.set("k", "v") and r.get("k") == b"v"
        s.stop()


@pytest.mark.parametrize("how", ["del", "flushall"])
def test_keys_and_scan_after_many_deletes(shoal, how):
    # KEYS and SCAN seek each of the 16384 slots. A seek used to step over
    # every deleted key after its slot (point deletes), or every key under a
    # FLUSHALL's range delete still in the memtable, up to the next live key:
    # after 20k deleted keys KEYS * took 14.6 s (Release), far longer here.
    r = redis.Redis(host=shoal.host, port=shoal.port, socket_timeout=10)
    n = 10000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"gone:{i}", "v")
    pipe.execute()
    if how == "del":
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.delete(f"gone:{i}")
        assert pipe.execute() == [1] * n
    else:
        assert r.flushall() is True
    live = [f"live{i}{{la2}}" for i in range(8)]
    for k in live:
        r.set(k, "v")
    assert sorted(r.keys("*")) == sorted(k.encode() for k in live)
    assert sorted(r.scan_iter(count=1000)) == sorted(k.encode() for k in live)
    assert r.randomkey() in {k.encode() for k in live}
