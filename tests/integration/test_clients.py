"""Real clients against shoal: redis-cli (args, stdin, --pipe, -3), redis-py,
raw sockets (inline commands, RESP3), many connections, AUTH, big and
binary-safe values. Where output formatting matters, the same redis-cli
invocation is also run against a real redis-server and compared."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from conftest import (REDIS_CLI_BIN, REDIS_SERVER_BIN, SELFTEST, SHOAL_BIN, SKIP_NO_SHOAL,
                      RespConn, RespMap, ServerPool, encode_command, make_redis, make_shoal,
                      shoal_available)

redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(shoal, reference redis-server or None), shared by the module; tests
    FLUSHALL first."""
    if not shoal_available():
        pytest.skip(SKIP_NO_SHOAL)
    tmp = tmp_path_factory.mktemp("clients")
    pool = ServerPool()
    try:
        tgt = pool.add(make_shoal(tmp, "shoal", durability="fsync")).start()
        ref = pool.add(make_redis(tmp, "reference-redis")).start() if REDIS_SERVER_BIN else None
        yield tgt, ref
    finally:
        problems = pool.teardown()
    if problems:
        pytest.fail("server problems at teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def srv(pair):
    tgt, ref = pair
    for s in filter(None, (tgt, ref)):
        with s.client() as c:
            assert c.call("FLUSHALL").raw == b"+OK\r\n"
    yield tgt
    tgt.check_alive(" during the test")


@pytest.fixture
def r(srv):
    client = redis.Redis(host=srv.host, port=srv.port, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


def cli(server, *args, stdin: bytes = None, timeout: float = 30, check: bool = True):
    if not REDIS_CLI_BIN:
        pytest.skip("redis-cli is not installed")
    argv = [REDIS_CLI_BIN, "-h", server.host, "-p", str(server.port)] + [str(a) for a in args]
    p = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, f"{argv} exited {p.returncode}: {p.stderr!r} {p.stdout!r}"
    return p


def cli_both(pair, *args, stdin: bytes = None):
    """Runs redis-cli against shoal and (if available) redis; asserts equal stdout."""
    tgt, ref = pair
    out = cli(tgt, *args, stdin=stdin).stdout
    if ref is not None:
        want = cli(ref, *args, stdin=stdin).stdout
        assert out == want, f"redis-cli {args} differs:\nshoal: {out!r}\nredis: {want!r}"
    return out


# --------------------------------------------------------------------------
# redis-cli
# --------------------------------------------------------------------------

def test_redis_cli_args(srv, pair):
    assert cli_both(pair, "PING") == b"PONG\n"
    assert cli_both(pair, "SET", "k", "hello world") == b"OK\n"
    assert cli_both(pair, "GET", "k") == b"hello world\n"
    assert cli_both(pair, "INCR", "n") == b"1\n"
    assert cli_both(pair, "GET", "nokey") == b"\n"
    assert cli_both(pair, "--no-raw", "GET", "nokey") == b"(nil)\n"
    assert cli_both(pair, "--no-raw", "INCR", "n") == b"(integer) 2\n"
    # {k}nokey hashes to k's slot (multi-key commands need keys in one slot)
    assert cli_both(pair, "--no-raw", "MGET", "k", "{k}nokey") == b'1) "hello world"\n2) (nil)\n'
    assert cli_both(pair, "-n", "2", "SET", "k", "in-db2") == b"OK\n"
    assert cli_both(pair, "-n", "2", "GET", "k") == b"in-db2\n"
    assert cli_both(pair, "GET", "k") == b"hello world\n"
    err = cli_both(pair, "NOSUCHCMD", "x")
    assert err.startswith(b"ERR unknown command 'NOSUCHCMD'"), err


def test_redis_cli_stdin(srv, pair):
    script = b"SET a 1\nINCR a\nINCRBY a 10\nGET a\nGET nokey\nMGET a {a}nokey\nDEL a\nEXISTS a\n"
    out = cli_both(pair, stdin=script)
    assert out == b"OK\n2\n12\n12\n\n12\n\n1\n0\n", out


def test_redis_cli_resp3(srv, pair):
    assert cli_both(pair, "-3", "SET", "k", "v") == b"OK\n"
    assert cli_both(pair, "-3", "GET", "k") == b"v\n"
    assert cli_both(pair, "-3", "--no-raw", "GET", "nokey") == b"(nil)\n"
    assert cli_both(pair, "-3", "--no-raw", "INCR", "i") == b"(integer) 1\n"
    assert cli_both(pair, "-3", "--no-raw", "CONFIG", "GET", "databases") == b'1# "databases" => "16"\n'
    # the HELLO reply itself is a map in RESP3
    with RespConn(srv.host, srv.port) as c:
        rep = c.call("HELLO", "3")
        assert rep.raw.startswith(b"%"), rep.raw
        d = rep.value.to_dict()
        assert d[b"proto"] == 3 and d[b"role"] == b"master" and d[b"mode"] == b"standalone"


def test_redis_cli_pipe_mass_insert(srv, pair):
    n = 5000
    payload = b"".join(encode_command("SET", f"mass:{i}", f"value-{i}") for i in range(n))
    payload += b"".join(encode_command("INCR", "mass:counter") for _ in range(n))
    p = cli(srv, "--pipe", stdin=payload, timeout=120)
    text = p.stdout.decode() + p.stderr.decode()
    assert f"errors: 0, replies: {2 * n}" in text, text
    with srv.client() as c:
        assert c.call("DBSIZE").value == n + 1
        assert c.call("GET", "mass:4321").value == b"value-4321"
        assert c.call("GET", "mass:counter").value == str(n).encode()
    out = cli(srv, "--scan", "--pattern", "mass:12*").stdout.split()
    assert sorted(out) == sorted([b"mass:12"] + [f"mass:12{i}".encode() for i in range(10)]
                                 + [f"mass:12{i:02d}".encode() for i in range(100)])


def test_inline_commands_raw_socket(srv):
    """telnet-style: plain text lines, LF or CRLF."""
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        f = s.makefile("rwb")
        f.write(b"PING\r\nSET inline \"two words\"\nGET inline\r\nECHO 'a b'\r\nINCR cnt\nQUIT\r\n")
        f.flush()
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data == b"+PONG\r\n+OK\r\n$9\r\ntwo words\r\n$3\r\na b\r\n:1\r\n+OK\r\n", data


# --------------------------------------------------------------------------
# redis-py
# --------------------------------------------------------------------------

def test_redis_py_basics(r):
    assert r.ping() is True
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == b"v"
    assert r.incr("c") == 1
    assert r.incrby("c", 41) == 42
    assert r.decr("c") == 41
    assert r.incrbyfloat("f", 2.5) == 2.5
    # keys used together in one command share a hash tag ({t}: one slot)
    assert r.mset({"{t}a": "1", "{t}b": "2", "{t}c3": "3"}) is True
    assert r.mget("{t}a", "{t}b", "{t}nokey", "{t}c3") == [b"1", b"2", None, b"3"]
    assert r.msetnx({"{t}a": "x", "{t}new": "y"}) is False
    assert r.get("{t}new") is None
    assert r.append("{t}a", "23") == 3 and r.get("{t}a") == b"123"
    assert r.strlen("{t}a") == 3
    assert r.getrange("{t}a", 1, -1) == b"23"
    assert r.setrange("{t}a", 5, "z") == 6 and r.get("{t}a") == b"123\x00\x00z"
    assert r.expire("k", 100) is True
    assert 99 <= r.ttl("k") <= 100
    assert 99000 <= r.pttl("k") <= 100000
    assert r.persist("k") is True and r.ttl("k") == -1
    assert r.pexpire("k", 50) is True
    time.sleep(0.15)
    assert r.get("k") is None and r.exists("k") == 0
    assert r.setex("s", 100, "v") is True and 99 <= r.ttl("s") <= 100
    assert r.getdel("s") == b"v" and r.get("s") is None
    assert r.type("{t}a") == b"string" and r.type("nokey") == b"none"
    assert r.rename("{t}a", "{t}a2") is True and r.get("{t}a2") == b"123\x00\x00z"
    assert r.delete("{t}a2", "{t}b", "{t}nokey") == 2
    assert r.set("c3x", "abc") is True
    with pytest.raises(redis.exceptions.ResponseError, match="value is not an integer or out of range"):
        r.incr("c3x")
    with pytest.raises(redis.exceptions.ResponseError, match="no such key"):
        r.rename("{t}nokey", "{t}x")


def test_redis_py_scan_iter(r):
    with r.pipeline(transaction=False) as p:
        for i in range(300):
            p.set(f"scan:{i}", i)
        for i in range(50):
            p.set(f"other:{i}", i)
        p.execute()
    keys = set(r.scan_iter(match="scan:*", count=17))
    assert keys == {f"scan:{i}".encode() for i in range(300)}
    assert len(set(r.scan_iter(count=1000))) == 350
    assert sorted(r.keys("other:1*")) == sorted([b"other:1"] + [f"other:1{i}".encode() for i in range(10)])
    assert r.dbsize() == 350


def test_redis_py_pipeline_1000(r):
    with r.pipeline(transaction=False) as p:
        for i in range(1000):
            if i % 4 == 0:
                p.set(f"p:{i}", f"v{i}")
            elif i % 4 == 1:
                p.incr("p:counter")
            elif i % 4 == 2:
                p.get(f"p:{i - 2}")
            else:
                p.exists(f"p:{i - 3}", f"{{p:{i - 3}}}none")  # same slot as p:{i - 3}
        res = p.execute()
    assert len(res) == 1000
    for i, v in enumerate(res):
        if i % 4 == 0:
            assert v is True
        elif i % 4 == 1:
            assert v == i // 4 + 1
        elif i % 4 == 2:
            assert v == f"v{i - 2}".encode()
        else:
            assert v == 1
    assert r.get("p:counter") == b"250"


def test_select_and_db_isolation(srv):
    clients = [redis.Redis(host=srv.host, port=srv.port, db=db, socket_timeout=10) for db in range(4)]
    try:
        for db, c in enumerate(clients):
            c.set("shared", f"db{db}")
            for i in range(db):
                c.set(f"only{db}:{i}", i)
        for db, c in enumerate(clients):
            assert c.get("shared") == f"db{db}".encode()
            assert c.dbsize() == db + 1
        clients[2].flushdb()
        assert clients[2].dbsize() == 0 and clients[3].dbsize() == 4 and clients[0].get("shared") == b"db0"
        with RespConn(srv.host, srv.port) as c:
            assert c.call("SELECT", "3").raw == b"+OK\r\n"
            assert c.call("GET", "shared").value == b"db3"
            assert c.call("SELECT", "15").raw == b"+OK\r\n"
            assert c.call("DBSIZE").value == 0
            assert c.call("SELECT", "16").raw == b"-ERR DB index is out of range\r\n"
            assert c.call("DBSIZE").value == 0  # still on 15
        clients[0].flushall()
        assert all(c.dbsize() == 0 for c in clients)
    finally:
        for c in clients:
            c.close()


def test_many_concurrent_connections(srv):
    n = 500
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((srv.host, srv.port), timeout=10))
        for i, s in enumerate(socks):  # all open at once; now each pings
            s.sendall(b"*1\r\n$4\r\nPING\r\n" if i % 2 else b"PING\r\n")
        for i, s in enumerate(socks):
            got = b""
            deadline = time.monotonic() + 10
            while len(got) < 7 and time.monotonic() < deadline:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            assert got == b"+PONG\r\n", f"connection {i}: {got!r}"
        # and they are independent clients: a SET on one is seen on another
        socks[0].sendall(encode_command("SET", "conn", "x"))
        assert socks[0].recv(64) == b"+OK\r\n"
        socks[-1].sendall(encode_command("GET", "conn"))
        assert socks[-1].recv(64) == b"$1\r\nx\r\n"
    finally:
        for s in socks:
            s.close()
    with srv.client() as c:
        assert c.call("PING").raw == b"+PONG\r\n"


def test_large_raw_pipeline(srv):
    """20000 commands written in one go while replies are read concurrently:
    every reply arrives, in order."""
    import threading
    n = 20000
    payload = b"".join(encode_command("INCR", "pipe") if i % 2 else b"PING\r\n" for i in range(n))
    with RespConn(srv.host, srv.port, timeout=30) as c:
        sender = threading.Thread(target=c.send, args=(payload,), daemon=True)
        sender.start()
        try:
            for i in range(n):
                rep = c.read_reply()
                want = b":%d\r\n" % ((i + 1) // 2) if i % 2 else b"+PONG\r\n"
                assert rep.raw == want, f"reply #{i}: {rep.raw!r} want {want!r}"
        finally:
            sender.join(timeout=30)
        assert not sender.is_alive()
        assert c.call("GET", "pipe").value == str(n // 2).encode()


def test_resp3_raw_socket(srv):
    with RespConn(srv.host, srv.port) as c:
        rep = c.call("HELLO", "3")
        assert rep.type == "%" and isinstance(rep.value, RespMap)
        d = rep.value.to_dict()
        assert set(d) >= {b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"}
        assert d[b"proto"] == 3 and isinstance(d[b"id"], int) and d[b"modules"] == []
        assert c.call("GET", "nokey").raw == b"_\r\n"
        assert c.call("SET", "k", "v").raw == b"+OK\r\n"
        assert c.call("MGET", "k", "{k}nokey").raw == b"*2\r\n$1\r\nv\r\n_\r\n"
        assert c.call("CONFIG", "GET", "databases").raw == b"%1\r\n$9\r\ndatabases\r\n$2\r\n16\r\n"
        assert c.call("HELLO", "2").type == "*"
        assert c.call("GET", "nokey").raw == b"$-1\r\n"


def test_redis_py_resp3_hello(srv):
    with RespConn(srv.host, srv.port) as c:
        assert c.call("HELLO", "4").raw == b"-NOPROTO unsupported protocol version\r\n"
        rep = c.call("HELLO", "2")
        assert rep.type == "*" and len(rep.value) == 14


def test_big_values(r):
    for size in (1 << 20, 4 << 20):
        val = os.urandom(size)
        assert r.set(f"big{size}", val) is True
        assert r.get(f"big{size}") == val
        assert r.strlen(f"big{size}") == size
    big = b"x" * (1 << 20)
    assert r.append("big-app", big) == len(big)
    assert r.append("big-app", big) == 2 * len(big)
    assert r.getrange("big-app", (1 << 20) - 2, (1 << 20) + 1) == b"xxxx"
    assert r.mget("big1048576", "{big1048576}nokey")[0] is not None
    # a 1 MB value through a raw socket
    with RespConn(r.connection_pool.connection_kwargs["host"], r.connection_pool.connection_kwargs["port"]) as c:
        rep = c.call("GET", "big-app")
        assert rep.raw[:12] == b"$2097152\r\nxx" and len(rep.value) == 2 << 20


def test_binary_safe(r):
    # MGET/EXISTS/DEL below take them all at once, so they share one slot: that
    # of the empty key, slot 0, which the hash tag {la2} also hashes to
    keys = [b"\x00", b"a\x00b", b"\r\n", b"k\r\nv", b"\xff\xfe\x00", b" ", b"", b"*1\r\n$4\r\nPING\r\n"]
    keys = [k and k + b"{la2}" for k in keys]
    for i, k in enumerate(keys):
        val = k + b"|\x00\r\n|" + bytes([i])
        assert r.set(k, val) is True
        assert r.get(k) == val
    assert r.dbsize() == len(keys)
    assert r.mget(keys) == [k + b"|\x00\r\n|" + bytes([i]) for i, k in enumerate(keys)]
    assert set(r.keys("*")) == set(keys)
    assert set(r.scan_iter(count=3)) == set(keys)
    assert r.exists(*keys) == len(keys)
    assert r.append(keys[1], b"\x00") == len(keys[1]) + 6 + 1
    assert r.delete(*keys) == len(keys)


# --------------------------------------------------------------------------
# AUTH
# --------------------------------------------------------------------------

AUTH_SEQUENCE = [
    # (command args, expected reply) before authenticating
    (("PING",), b"-NOAUTH Authentication required.\r\n"),
    (("GET", "k"), b"-NOAUTH Authentication required.\r\n"),
    (("SET", "k", "v"), b"-NOAUTH Authentication required.\r\n"),
    (("SELECT", "1"), b"-NOAUTH Authentication required.\r\n"),
    (("CLIENT", "SETNAME", "x"), b"-NOAUTH Authentication required.\r\n"),
    (("HELLO", "3"), b"-NOAUTH HELLO must be called with the client already authenticated, otherwise "
                     b"the HELLO AUTH <user> <pass> option can be used to authenticate the client and "
                     b"select the RESP protocol version at the same time\r\n"),
    (("HELLO", "4"), b"-NOPROTO unsupported protocol version\r\n"),
    (("AUTH",), b"-ERR wrong number of arguments for 'auth' command\r\n"),
    (("AUTH", "wrong"), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (("AUTH", "default", "wrong"), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (("AUTH", "nouser", "s3cret"), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (("HELLO", "3", "AUTH", "default", "wrong"),
     b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (("PING",), b"-NOAUTH Authentication required.\r\n"),
    (("AUTH", "s3cret"), b"+OK\r\n"),
    (("PING",), b"+PONG\r\n"),
    (("SET", "k", "v"), b"+OK\r\n"),
    (("AUTH", "wrong"), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (("GET", "k"), b"$1\r\nv\r\n"),  # a failed re-AUTH keeps the earlier authentication
    (("AUTH", "default", "s3cret"), b"+OK\r\n"),
]


@pytest.fixture
def auth_servers(tmp_path, server_pool):
    if not shoal_available():
        pytest.skip(SKIP_NO_SHOAL)
    out = [server_pool.add(make_shoal(tmp_path, "shoal-auth", password="s3cret")).start()]
    if REDIS_SERVER_BIN:
        out.append(server_pool.add(make_redis(tmp_path, "redis-auth", password="s3cret")).start())
    return out


def test_requirepass_auth(auth_servers):
    for srv in auth_servers:  # shoal, then redis-server to keep the table honest
        with RespConn(srv.host, srv.port) as c:
            for args, want in AUTH_SEQUENCE:
                got = c.call(*args).raw
                assert got == want, f"{srv.name}: {args} -> {got!r}, want {want!r}"
        with RespConn(srv.host, srv.port) as c:
            rep = c.call("HELLO", "3", "AUTH", "default", "s3cret")
            assert rep.type == "%", rep.raw
            assert rep.value.to_dict()[b"proto"] == 3
            assert c.call("GET", "k").raw == b"$1\r\nv\r\n"
            assert c.call("GET", "nokey").raw == b"_\r\n"
        with RespConn(srv.host, srv.port) as c:
            rep = c.call("HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "authed")
            assert rep.type == "*", rep.raw
            assert c.call("CLIENT", "GETNAME").raw == b"$6\r\nauthed\r\n"
        # redis-py with a password; and without one it is refused
        ok = redis.Redis(host=srv.host, port=srv.port, password="s3cret", socket_timeout=10)
        bad = redis.Redis(host=srv.host, port=srv.port, socket_timeout=10)
        try:
            assert ok.get("k") == b"v"
            assert ok.incr("n") == 1
            with pytest.raises(redis.exceptions.AuthenticationError):
                bad.get("k")
        finally:
            ok.close()
            bad.close()
        if REDIS_CLI_BIN:
            assert cli(srv, "-a", "s3cret", "--no-auth-warning", "GET", "k").stdout == b"v\n"
            out = cli(srv, "GET", "k", check=False).stdout
            assert out.startswith(b"NOAUTH Authentication required"), out


# --------------------------------------------------------------------------
# the binary itself
# --------------------------------------------------------------------------

@pytest.mark.skipif(SELFTEST or not SHOAL_BIN, reason="needs the real shoal binary (SHOAL_BIN)")
def test_version_flag():
    p = subprocess.run([SHOAL_BIN, "--version"], capture_output=True, timeout=10)
    assert p.returncode == 0, p
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert out.strip(), "--version printed nothing"
    assert any(ch.isdigit() for ch in out), f"--version has no version number: {out!r}"
