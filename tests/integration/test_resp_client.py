"""Self-tests of the raw RESP client in conftest.py (no server needed): a tiny
loopback peer sends canned bytes, possibly split into small pieces."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import (HOST, ConnectionClosed, RespBigNumber, RespConn, RespDouble, RespError,
                      RespMap, RespProtocolError, RespPush, RespSet, RespVerbatim, SimpleString,
                      encode_command)


class Peer:
    """Accepts one connection and writes `data` in `chunk`-byte pieces, then
    optionally closes."""

    def __init__(self, data: bytes, chunk: int = 0, close: bool = True):
        self.lsock = socket.socket()
        self.lsock.bind((HOST, 0))
        self.lsock.listen(1)
        self.lsock.settimeout(5)
        self.port = self.lsock.getsockname()[1]
        self.data, self.chunk, self.close = data, chunk, close
        self.received = b""
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        conn, _ = self.lsock.accept()
        with conn:
            conn.settimeout(2)
            step = self.chunk or len(self.data) or 1
            for i in range(0, len(self.data), step):
                conn.sendall(self.data[i:i + step])
                if self.chunk:
                    time.sleep(0.001)
            if not self.close:
                try:
                    self.received = conn.recv(1 << 16)
                except socket.timeout:
                    pass
                time.sleep(1.0)

    def done(self):
        self.t.join(timeout=5)
        self.lsock.close()


RESP3_SAMPLE = (b"%2\r\n+a\r\n,3.5\r\n$1\r\nb\r\n~2\r\n#t\r\n#f\r\n"
                b">2\r\n$7\r\nmessage\r\n(12345678901234567890\r\n"
                b"=8\r\ntxt:abcd\r\n"
                b"|1\r\n+ttl\r\n:3\r\n:42\r\n"
                b"_\r\n!5\r\nERR x\r\n*-1\r\n$-1\r\n*0\r\n")


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_parse_resp3_types(chunk):
    p = Peer(RESP3_SAMPLE, chunk=chunk)
    try:
        with RespConn(HOST, p.port, timeout=5) as c:
            m = c.read_reply()
            assert isinstance(m.value, RespMap) and m.type == "%"
            (k1, v1), (k2, v2) = m.value
            assert k1 == "a" and isinstance(k1, SimpleString)
            assert isinstance(v1, RespDouble) and v1 == 3.5
            assert k2 == b"b" and isinstance(v2, RespSet) and v2 == [True, False]
            push = c.read_reply().value
            assert isinstance(push, RespPush) and push[0] == b"message"
            assert isinstance(push[1], RespBigNumber) and push[1] == 12345678901234567890
            v = c.read_reply().value
            assert isinstance(v, RespVerbatim) and v == b"abcd" and v.fmt == b"txt"
            attr = c.read_reply()
            assert attr.value == 42 and attr.raw == b"|1\r\n+ttl\r\n:3\r\n:42\r\n"
            assert c.read_reply().value is None
            e = c.read_reply().value
            assert isinstance(e, RespError) and e == "ERR x"
            assert c.read_reply().value is None
            assert c.read_reply().value is None
            assert c.read_reply().value == []
            with pytest.raises(ConnectionClosed):
                c.read_reply()
    finally:
        p.done()


def test_raw_bytes_are_exact():
    data = b"$5\r\na\r\nbc\r\n*2\r\n:1\r\n-ERR oops\r\n"
    p = Peer(data, chunk=2)
    try:
        with RespConn(HOST, p.port, timeout=5) as c:
            r1 = c.read_reply()
            assert r1.raw == b"$5\r\na\r\nbc\r\n" and r1.value == b"a\r\nbc"
            r2 = c.read_reply()
            assert r2.raw == b"*2\r\n:1\r\n-ERR oops\r\n" and r2.value == [1, "ERR oops"]
            assert r2.value[1].startswith("ERR") and isinstance(r2.value[1], RespError)
    finally:
        p.done()


def test_timeout_and_partial_reply():
    p = Peer(b"$10\r\nabc", close=False)
    try:
        with RespConn(HOST, p.port, timeout=0.3) as c:
            t0 = time.monotonic()
            with pytest.raises(socket.timeout):
                c.read_reply()
            assert time.monotonic() - t0 < 2
    finally:
        p.done()


@pytest.mark.parametrize("data", [b"?what\r\n", b":12x\r\n", b"$3\r\nabcXY", b"#x\r\n", b"$-2\r\n"])
def test_invalid_resp_detected(data):
    p = Peer(data)
    try:
        with RespConn(HOST, p.port, timeout=2) as c:
            with pytest.raises((RespProtocolError, ConnectionClosed)):
                c.read_reply()
    finally:
        p.done()


def test_size_limit():
    p = Peer(b"$100000000\r\n")
    try:
        with RespConn(HOST, p.port, timeout=2, max_reply_bytes=1000) as c:
            with pytest.raises(RespProtocolError):
                c.read_reply()
    finally:
        p.done()


def test_encode_and_wait_closed():
    assert encode_command("SET", b"k\x00", 5) == b"*3\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$1\r\n5\r\n"
    p = Peer(b"+OK\r\n", close=True)
    try:
        with RespConn(HOST, p.port, timeout=2) as c:
            assert c.read_reply().raw == b"+OK\r\n"
            assert c.wait_closed(2)
    finally:
        p.done()
    p = Peer(b"+OK\r\n", close=False)
    try:
        with RespConn(HOST, p.port, timeout=2) as c:
            assert c.read_reply().raw == b"+OK\r\n"
            assert not c.wait_closed(0.2)
    finally:
        p.done()
