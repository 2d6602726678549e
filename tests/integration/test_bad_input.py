"""Malformed input: shoal must answer exactly like redis-server (error string
and whether the connection is closed), stay up, and keep its data.

Each case carries the reply redis-server 7.0.15 gives; the same bytes are also
sent to a live redis-server in the test so the table itself stays honest.
"""

from __future__ import annotations

import os
import random
import socket
import time

import pytest

from conftest import (REDIS_SERVER_BIN, SKIP_NO_SHOAL, ConnectionClosed, RespConn,
                      RespProtocolError, ServerPool, encode_command, make_redis, make_shoal,
                      shoal_available)

PE = b"-ERR Protocol error: "

# (id, bytes sent, expected first reply (None: no reply expected), closed?)
CLOSING = [
    ("mbulk-not-int", b"*abc\r\n", PE + b"invalid multibulk length\r\n"),
    ("mbulk-space", b"* 1\r\n$4\r\nPING\r\n", PE + b"invalid multibulk length\r\n"),
    ("mbulk-plus", b"*+1\r\n$4\r\nPING\r\n", PE + b"invalid multibulk length\r\n"),
    ("mbulk-leading-zero", b"*01\r\n$4\r\nPING\r\n", PE + b"invalid multibulk length\r\n"),
    ("mbulk-over-int-max", b"*2147483648\r\n", PE + b"invalid multibulk length\r\n"),
    ("mbulk-huge", b"*99999999999999999999\r\n", PE + b"invalid multibulk length\r\n"),
    ("bulk-negative", b"*1\r\n$-5\r\n", PE + b"invalid bulk length\r\n"),
    ("bulk-minus-one", b"*1\r\n$-1\r\n", PE + b"invalid bulk length\r\n"),
    ("bulk-not-int", b"*1\r\n$abc\r\n", PE + b"invalid bulk length\r\n"),
    ("bulk-space", b"*1\r\n$ 4\r\nPING\r\n", PE + b"invalid bulk length\r\n"),
    ("bulk-1e12", b"*1\r\n$1000000000000\r\n", PE + b"invalid bulk length\r\n"),
    ("bulk-512mb+1", b"*1\r\n$536870913\r\n", PE + b"invalid bulk length\r\n"),
    ("bulk-missing-dollar", b"*1\r\nfoo\r\n", PE + b"expected '$', got 'f'\r\n"),
    ("bulk-nested-array", b"*1\r\n*1\r\n", PE + b"expected '$', got '*'\r\n"),
    ("bulk-integer", b"*1\r\n:1\r\n", PE + b"expected '$', got ':'\r\n"),
    ("second-arg-bad", b"*2\r\n$4\r\nECHO\r\nxyz\r\n", PE + b"expected '$', got 'x'\r\n"),
    ("inline-unbalanced-double", b'SET "a b\r\n', PE + b"unbalanced quotes in request\r\n"),
    ("inline-unbalanced-single", b"SET 'a\r\n", PE + b"unbalanced quotes in request\r\n"),
    ("inline-quote-then-char", b'ECHO "a"b\r\n', PE + b"unbalanced quotes in request\r\n"),
    ("inline-too-big", b"x" * 70000, PE + b"too big inline request\r\n"),
    ("mbulk-count-too-long", b"*1" + b"1" * 70000, PE + b"too big mbulk count string\r\n"),
    ("bulk-count-too-long", b"*1\r\n$" + b"1" * 70000, PE + b"too big bulk count string\r\n"),
]

# Bad-but-not-fatal input: an error reply, connection stays usable.
NONCLOSING = [
    ("inline-dollar", b"$-5\r\n", b"-ERR unknown command '$-5', with args beginning with: \r\n"),
    ("inline-resp-bulk", b"$5\r\n", b"-ERR unknown command '$5', with args beginning with: \r\n"),
    ("inline-colon", b":1\r\n", b"-ERR unknown command ':1', with args beginning with: \r\n"),
    ("inline-plus", b"+PING\r\n", b"-ERR unknown command '+PING', with args beginning with: \r\n"),
    ("empty-command-name", b"*1\r\n$0\r\n\r\n", b"-ERR unknown command '', with args beginning with: \r\n"),
    ("negative-mbulk-ignored", b"*-2147483649\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
    ("zero-mbulk-ignored", b"*0\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
]

# Incomplete requests: the server must wait for more (no reply, no close) and
# must not allocate the announced size up front in a way that kills it.
INCOMPLETE = [
    ("mbulk-2M", b"*2000000\r\n"),
    ("mbulk-1M+1", b"*1048577\r\n"),
    ("bulk-512mb", b"*1\r\n$536870912\r\n"),
    ("bulk-half", b"*2\r\n$3\r\nGET\r\n$10\r\nabc"),
]

SENTINEL = {b"sentinel:a": b"alpha", b"sentinel:bin": b"\x00\r\n\xff", b"sentinel:n": b"42"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(reference redis-server or None, shoal) with sentinel data loaded."""
    if not shoal_available():
        pytest.skip(SKIP_NO_SHOAL)
    tmp = tmp_path_factory.mktemp("badinput")
    pool = ServerPool()
    try:
        ref = pool.add(make_redis(tmp, "reference-redis")).start() if REDIS_SERVER_BIN else None
        tgt = pool.add(make_shoal(tmp, "shoal", durability="none")).start()
        for srv in filter(None, (ref, tgt)):
            with srv.client() as c:
                for k, v in SENTINEL.items():
                    assert c.call("SET", k, v).raw == b"+OK\r\n"
        yield ref, tgt
    finally:
        problems = pool.teardown()
    if problems:
        pytest.fail("server problems at teardown:\n" + "\n".join(problems), pytrace=False)


def send_and_observe(srv, data: bytes, reply_timeout: float = 3.0, close_timeout: float = 2.0):
    """Returns (first reply raw bytes or a marker, closed_after?)."""
    with RespConn(srv.host, srv.port, timeout=reply_timeout) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close while we are still sending a huge line
        try:
            raw = c.read_reply().raw
        except ConnectionClosed:
            return b"<closed without reply>", True
        except socket.timeout:
            raw = b"<no reply>"
        except RespProtocolError as e:
            return f"<invalid RESP from server: {e}>".encode(), c.wait_closed(close_timeout)
        return raw, c.wait_closed(close_timeout)


def assert_healthy(srv):
    srv.check_alive()
    with RespConn(srv.host, srv.port, timeout=5) as c:
        assert c.call("PING").raw == b"+PONG\r\n"
        for k, v in SENTINEL.items():
            got = c.call("GET", k).value
            assert got == v, f"data damaged: GET {k!r} = {got!r}, want {v!r}"


def _check_case(servers, data, expected, expect_closed, close_timeout=2.0):
    ref, tgt = servers
    if ref is not None:
        r = send_and_observe(ref, data, close_timeout=close_timeout)
        assert r == (expected, expect_closed), f"redis-server itself answered {r} (table is stale)"
    t = send_and_observe(tgt, data, close_timeout=close_timeout)
    assert t == (expected, expect_closed), (
        f"sent {data[:80]!r}: shoal replied {t[0][:200]!r} (closed={t[1]}), "
        f"redis-server replies {expected!r} (closed={expect_closed})")
    assert_healthy(tgt)


@pytest.mark.parametrize("data,expected", [c[1:] for c in CLOSING], ids=[c[0] for c in CLOSING])
def test_protocol_error_closes_connection(servers, data, expected):
    _check_case(servers, data, expected, True)


@pytest.mark.parametrize("data,expected", [c[1:] for c in NONCLOSING], ids=[c[0] for c in NONCLOSING])
def test_bad_input_keeps_connection(servers, data, expected):
    _check_case(servers, data, expected, False, close_timeout=0.3)
    ref, tgt = servers
    # and the same connection keeps working afterwards
    with tgt.client() as c:
        c.send(data)
        assert c.read_reply().raw == expected
        assert c.call("PING").raw == b"+PONG\r\n"


@pytest.mark.parametrize("data", [c[1] for c in INCOMPLETE], ids=[c[0] for c in INCOMPLETE])
def test_incomplete_request_waits(servers, data):
    ref, tgt = servers
    for srv in filter(None, (ref, tgt)):
        with RespConn(srv.host, srv.port, timeout=0.5) as c:
            c.send(data)
            with pytest.raises(socket.timeout):
                c.read_reply()  # no reply: waits for the rest of the request
            assert not c.wait_closed(0.2), f"{srv.name} closed the connection on {data!r}"
            # meanwhile other clients are served
            assert_healthy(srv)
        # after the client gives up, the server is still fine
        assert_healthy(srv)


def test_error_then_pipeline_continues(servers):
    """Errors inside a pipeline do not disturb the following commands."""
    ref, tgt = servers
    data = (b"GET\r\nNOSUCH x\r\n" + encode_command("SET", "pipe:k", "1") +
            encode_command("INCR", "pipe:k") + b"INCR sentinel:a\r\nGET pipe:k\r\n")
    outs = {}
    for srv in filter(None, (ref, tgt)):
        with srv.client() as c:
            c.send(data)
            outs[srv.name] = [c.read_reply().raw for _ in range(6)]
    want = [b"-ERR wrong number of arguments for 'get' command\r\n",
            b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n",
            b"+OK\r\n", b":2\r\n", b"-ERR value is not an integer or out of range\r\n",
            b"$1\r\n2\r\n"]
    for name, got in outs.items():
        assert got == want, f"{name}: {got}"
    assert_healthy(tgt)


def test_unauthenticated_limits(tmp_path, server_pool):
    """With requirepass, redis caps unauthenticated requests (multibulk > 10,
    bulk > 16384) with a closing protocol error."""
    if not shoal_available():
        pytest.skip(SKIP_NO_SHOAL)
    cases = [(b"*11\r\n", PE + b"unauthenticated multibulk length\r\n", True),
             (b"*2\r\n$16385\r\n", PE + b"unauthenticated bulk length\r\n", True),
             (b"*1\r\n$4\r\nPING\r\n", b"-NOAUTH Authentication required.\r\n", False)]
    servers = [server_pool.add(make_shoal(tmp_path, "shoal-auth", password="s3cret")).start()]
    if REDIS_SERVER_BIN:
        servers.append(server_pool.add(make_redis(tmp_path, "redis-auth", password="s3cret")).start())
    for srv in servers:
        for data, want, closed in cases:
            got = send_and_observe(srv, data, reply_timeout=3, close_timeout=1.0 if closed else 0.3)
            assert got == (want, closed), f"{srv.name}: sent {data!r} got {got}"
        srv.check_alive()


def _fuzz_inputs(rng: random.Random):
    """Yields garbage: random bytes, and mutated valid requests."""
    # the fuzzed commands keep their keys in one slot ({fz} hash tag), so that
    # mutated MSET/MGET still reach the multi-key code, not only CROSSSLOT
    corpus = [
        encode_command("SET", "{fz}a", "v"), encode_command("GET", "{fz}a"),
        encode_command("MSET", "{fz}b", "1", "{fz}c", "2"), encode_command("INCRBY", "{fz}b", "5"),
        encode_command("SET", "{fz}d", "x", "EX", "100", "NX"), encode_command("GETRANGE", "{fz}a", "0", "-1"),
        encode_command("SCAN", "0", "MATCH", "{fz}*", "COUNT", "10"), encode_command("HELLO", "3"),
        encode_command("HELLO", "2"), encode_command("EXPIRE", "{fz}a", "100"),
        encode_command("APPEND", "{fz}a", "yy"), encode_command("SELECT", "3"),
        encode_command("MGET", "{fz}a", "{fz}b", "{fz}c"), encode_command("CLIENT", "SETNAME", "fz"),
        b"PING\r\n", b'SET "{fz}q" "a\\x00b"\r\n', b"ECHO 'x y'\r\n", b"GETEX {fz}a PERSIST\r\n",
    ]
    specials = [b"\r\n", b"\n", b"\r", b"*", b"$", b"-1", b"0", b"99999999999", b"\x00", b'"', b"'",
                b"\\", b"*-1\r\n", b"$-1\r\n", b"2147483648", b"%", b"~", b"\xff"]
    while True:
        kind = rng.random()
        if kind < 0.2:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
        elif kind < 0.3:
            yield b"".join(rng.choice(specials) for _ in range(rng.randint(1, 30)))
        else:
            data = bytearray(b"".join(rng.choice(corpus) for _ in range(rng.randint(1, 4))))
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                if not data:
                    break
                pos = rng.randrange(len(data))
                if op < 0.3:
                    data[pos] = rng.getrandbits(8)
                elif op < 0.5:
                    del data[pos:pos + rng.randint(1, 5)]
                elif op < 0.7:
                    data[pos:pos] = rng.choice(specials)
                elif op < 0.85:
                    data = data[:pos]  # truncate
                else:
                    data[pos:pos] = str(rng.randint(-5, 10**rng.randint(1, 12))).encode()
            yield bytes(data)


def _drain(sock: socket.socket, budget_s: float, max_bytes: int = 1 << 20) -> bool:
    """Reads whatever comes within budget_s. Returns True if the peer closed."""
    deadline = time.monotonic() + budget_s
    got = 0
    while got < max_bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            return True
        if not chunk:
            return True
        got += len(chunk)
    return False


def test_random_garbage_fuzz(servers):
    ref, tgt = servers
    seed = int(os.environ.get("SHOAL_FUZZ_SEED", random.SystemRandom().randrange(1 << 32)))
    iterations = int(os.environ.get("SHOAL_FUZZ_ITERATIONS", "300"))
    print(f"fuzz seed: {seed} (rerun with SHOAL_FUZZ_SEED={seed}), iterations: {iterations}")
    rng = random.Random(seed)
    gen = _fuzz_inputs(rng)
    deadline = time.monotonic() + 40.0
    done = 0
    for i in range(iterations):
        if time.monotonic() > deadline:
            break
        data = next(gen)
        try:
            with socket.create_connection((tgt.host, tgt.port), timeout=5) as s:
                # sometimes split the input into several writes
                chunks = [data] if rng.random() < 0.7 else [data[j:j + 7] for j in range(0, len(data), 7)]
                for ch in chunks:
                    try:
                        s.sendall(ch)
                    except OSError:
                        break
                _drain(s, 0.02)
        except ConnectionRefusedError:
            pytest.fail(f"server refused connections after fuzz input #{i} {data!r} (seed {seed})")
        done += 1
        if i % 25 == 0 or i == iterations - 1:
            assert tgt.alive(), (f"server died after fuzz input #{i} {data!r} (seed {seed}); "
                                 f"log:\n{tgt.log_tail()}")
            assert_healthy(tgt)
    assert done >= 50, f"only {done} fuzz iterations ran in the time budget"
    assert_healthy(tgt)
