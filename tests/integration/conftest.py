"""Shared fixtures and helpers for shoal's integration tests.

Environment:
  SHOAL_BIN            path to the shoal binary (tests needing shoal are skipped
                       when it is unset, unless SHOAL_DIFF_SELFTEST=1).
  SHOAL_DIFF_SELFTEST  "1": the "shoal" side of every test is a second
                       redis-server instead (used to validate the harness itself
                       against a known-correct server).
  SHOAL_WORKERS        value for --workers (default 2).
  REDIS_SERVER_BIN     redis-server to use (default: redis-server on PATH).

Every process started here is stopped by PID in a finally/teardown path.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, List, Optional

import pytest

HOST = "127.0.0.1"
SELFTEST = os.environ.get("SHOAL_DIFF_SELFTEST") == "1"
SHOAL_BIN = os.environ.get("SHOAL_BIN") or None
REDIS_SERVER_BIN = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
REDIS_CLI_BIN = shutil.which("redis-cli")
WORKERS = int(os.environ.get("SHOAL_WORKERS", "2"))

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------

def free_port() -> int:
    """Pick a free loopback TCP port by binding port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# RESP client
# --------------------------------------------------------------------------

class ConnectionClosed(Exception):
    """The peer closed the connection before a complete reply arrived."""


class RespProtocolError(Exception):
    """The peer sent bytes that are not valid RESP."""


class SimpleString(str):
    """+OK style reply (distinct from a bulk string, which is bytes)."""


class RespError(str):
    """-ERR style reply (also used for RESP3 blob errors '!')."""


class RespDouble(float):
    pass


class RespBigNumber(int):
    pass


class RespVerbatim(bytes):
    fmt: bytes = b"txt"


class RespMap(list):
    """RESP3 map: list of (key, value) pairs (keys may be unhashable)."""

    def to_dict(self) -> dict:
        return {k: v for k, v in self}


class RespSet(list):
    """RESP3 set (kept as a list; order as sent)."""


class RespPush(list):
    """RESP3 push ('>')."""


class Reply:
    """One complete reply: parsed value, exact raw bytes and its type byte."""

    __slots__ = ("value", "raw")

    def __init__(self, value, raw: bytes):
        self.value = value
        self.raw = raw

    @property
    def type(self) -> str:
        return chr(self.raw[0]) if self.raw else ""

    @property
    def is_error(self) -> bool:
        return isinstance(self.value, RespError)

    def __repr__(self) -> str:
        return f"Reply({self.raw!r})"


def encode_command(*args) -> bytes:
    """Encode args as a RESP multibulk request."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        elif isinstance(a, float):
            a = repr(a).encode()
        elif not isinstance(a, (bytes, bytearray)):
            raise TypeError(f"cannot encode {type(a)}")
        parts.append(b"$%d\r\n" % len(a))
        parts.append(bytes(a))
        parts.append(b"\r\n")
    return b"".join(parts)


class RespConn:
    """Minimal raw RESP2/RESP3 client on one TCP connection.

    All reads are bounded: every recv has a timeout derived from a per-reply
    deadline, a single reply may not exceed ``max_reply_bytes``, and nesting
    depth is bounded.
    """

    MAX_DEPTH = 64
    RECV_CHUNK = 1 << 16

    def __init__(self, host: str = HOST, port: int = 6379, timeout: float = 10.0,
                 max_reply_bytes: int = 64 << 20, connect_timeout: float = 5.0):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self._deadline = 0.0
        self._start = 0
        self.eof = False

    # -- plumbing ----------------------------------------------------------
    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        if self.eof:
            raise ConnectionClosed("connection closed by peer")
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for a complete reply")
        if len(self.buf) - self._start > self.max_reply_bytes:
            raise RespProtocolError(f"reply exceeds {self.max_reply_bytes} bytes")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(self.RECV_CHUNK)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed by peer")
        self.buf += chunk

    def _readline(self) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n", self.pos)
            if idx >= 0:
                line = bytes(self.buf[self.pos:idx])
                self.pos = idx + 2
                return line
            if len(self.buf) - self.pos > 1 << 20:
                raise RespProtocolError("header line too long")
            self._fill()

    def _readexact(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            self._fill()
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def _int(self, line: bytes) -> int:
        try:
            return int(line)
        except ValueError:
            raise RespProtocolError(f"bad integer {line!r}") from None

    def _parse(self, depth: int):
        if depth > self.MAX_DEPTH:
            raise RespProtocolError("reply nested too deeply")
        line = self._readline()
        if not line:
            raise RespProtocolError("empty reply line")
        t, rest = line[:1], line[1:]
        if t == b"+":
            return SimpleString(rest.decode("utf-8", "surrogateescape"))
        if t == b"-":
            return RespError(rest.decode("utf-8", "surrogateescape"))
        if t == b":":
            return self._int(rest)
        if t in (b"$", b"!", b"="):
            n = self._int(rest)
            if n < 0:
                if t == b"$" and n == -1:
                    return None
                raise RespProtocolError(f"bad length {line!r}")
            if n > self.max_reply_bytes:
                raise RespProtocolError(f"bulk too large {n}")
            data = self._readexact(n)
            if self._readexact(2) != b"\r\n":
                raise RespProtocolError("bulk not terminated by CRLF")
            if t == b"!":
                return RespError(data.decode("utf-8", "surrogateescape"))
            if t == b"=":
                v = RespVerbatim(data[4:])
                v.fmt = data[:3]
                return v
            return data
        if t in (b"*", b"~", b">", b"%", b"|"):
            n = self._int(rest)
            if n < 0:
                if t == b"*" and n == -1:
                    return None
                raise RespProtocolError(f"bad length {line!r}")
            if n > 10_000_000:
                raise RespProtocolError(f"aggregate too large {n}")
            if t in (b"%", b"|"):
                pairs = RespMap()
                for _ in range(n):
                    k = self._parse(depth + 1)
                    v = self._parse(depth + 1)
                    pairs.append((k, v))
                if t == b"|":
                    # attribute: followed by the actual reply
                    return self._parse(depth + 1)
                return pairs
            items = [self._parse(depth + 1) for _ in range(n)]
            if t == b"~":
                return RespSet(items)
            if t == b">":
                return RespPush(items)
            return items
        if t == b"_":
            if rest:
                raise RespProtocolError(f"bad null {line!r}")
            return None
        if t == b",":
            try:
                return RespDouble(float(rest))
            except ValueError:
                raise RespProtocolError(f"bad double {line!r}") from None
        if t == b"#":
            if rest == b"t":
                return True
            if rest == b"f":
                return False
            raise RespProtocolError(f"bad boolean {line!r}")
        if t == b"(":
            return RespBigNumber(self._int(rest))
        raise RespProtocolError(f"unknown reply type {line!r}")

    # -- public API ----------------------------------------------------------
    def read_reply(self, timeout: Optional[float] = None) -> Reply:
        """Read one complete reply. Raises ConnectionClosed / socket.timeout."""
        self._deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._start = self.pos
        start = self.pos
        try:
            value = self._parse(0)
        except Exception:
            self.pos = start  # leave the partial reply in the buffer
            raise
        raw = bytes(self.buf[start:self.pos])
        del self.buf[:self.pos]
        self.pos = 0
        return Reply(value, raw)

    def call(self, *args, timeout: Optional[float] = None) -> Reply:
        self.send(encode_command(*args))
        return self.read_reply(timeout)

    def execute(self, *args, timeout: Optional[float] = None):
        """Like call() but returns the parsed value only."""
        return self.call(*args, timeout=timeout).value

    def pending(self) -> bytes:
        return bytes(self.buf[self.pos:])

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the peer closes the connection within ``timeout`` seconds
        (any further bytes received before the close are discarded but make
        the result False only if the connection stays open)."""
        deadline = time.monotonic() + timeout
        if self.eof:
            return True
        for _ in range(10_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(self.RECV_CHUNK)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                self.eof = True
                return True
            if not chunk:
                self.eof = True
                return True
            self.buf += chunk
        return False


def resp_conn(server, **kw) -> RespConn:
    return RespConn(server.host, server.port, **kw)


def ping_ok(host: str, port: int, password: Optional[str] = None, timeout: float = 2.0) -> bool:
    try:
        with RespConn(host, port, timeout=timeout, connect_timeout=timeout) as c:
            if password is not None:
                c.call("AUTH", password)
            return c.call("PING").raw == b"+PONG\r\n"
    except (OSError, ConnectionClosed, RespProtocolError):
        return False


def cluster_ok(host: str, port: int, password: Optional[str] = None, timeout: float = 2.0) -> bool:
    """Whether a shoal node reports cluster_state:ok (every shard has a leader):
    until then a FLUSHALL, say, answers TRYAGAIN."""
    try:
        with RespConn(host, port, timeout=timeout, connect_timeout=timeout) as c:
            if password is not None:
                c.call("AUTH", password)
            return b"cluster_state:ok" in c.call("CLUSTER", "INFO").raw
    except (OSError, ConnectionClosed, RespProtocolError):
        return False


# --------------------------------------------------------------------------
# server processes
# --------------------------------------------------------------------------

class ServerProcess:
    """A server child process (shoal, or redis-server) managed by PID."""

    def __init__(self, name: str, argv_fn, port: int, data_dir: Path, log_path: Path,
                 password: Optional[str] = None, cluster: bool = False):
        self.name = name
        self.cluster = cluster  # a shoal node: ready once its shards have leaders
        self.host = HOST
        self.port = port
        self.dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.password = password
        self._argv_fn = argv_fn
        self.proc: Optional[subprocess.Popen] = None
        self._expected_dead = True
        self.unexpected_exits: List[str] = []

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def addr(self):
        return (self.host, self.port)

    def argv(self) -> List[str]:
        return self._argv_fn(self)

    def log_tail(self, n: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "<no log>"
        return data[-n:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, cluster_ready: bool = True) -> "ServerProcess":
        """Start the process and wait until it answers (a shoal node of a
        cluster: until cluster_state is ok, unless ``cluster_ready`` is False)."""
        assert not self.alive(), "already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            log.write(("\n==== start: %s\n" % " ".join(argv)).encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(self.dir))
        self._expected_dead = False
        try:
            if cluster_ready:
                self._wait_ready()  # (a test may replace it: an outsider that never joins)
            else:
                self._wait_ready(cluster_ready=False)
        except BaseException:
            self._expected_dead = True  # the exception reports it
            self._terminate()
            raise
        return self

    def _wait_ready(self, cluster_ready: bool = True) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for _ in range(2000):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during "
                                   f"startup; log:\n{self.log_tail()}")
            if ping_ok(self.host, self.port, self.password, timeout=1.0) and (
                    not self.cluster or not cluster_ready or
                    cluster_ok(self.host, self.port, self.password, timeout=1.0)):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready on port {self.port} after "
                           f"{READY_TIMEOUT_S}s; log:\n{self.log_tail()}")

    def _terminate(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
                self.unexpected_exits.append(f"did not exit within {timeout}s of {sig!r}; SIGKILLed")
        return self.proc.returncode

    def check_alive(self, what: str = "") -> None:
        """Record (and raise) if the process died without a test asking for it."""
        if not self._expected_dead and self.proc is not None and self.proc.poll() is not None:
            self._expected_dead = True
            msg = (f"{self.name} (pid {self.proc.pid}) died unexpectedly{what} with exit code "
                   f"{self.proc.returncode}; log tail:\n{self.log_tail()}")
            self.unexpected_exits.append(msg)
            raise AssertionError(msg)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> Optional[int]:
        """SIGTERM, wait (bounded), SIGKILL fallback. Returns the exit code."""
        self.check_alive(" before stop()")
        self._expected_dead = True
        return self._terminate(signal.SIGTERM, timeout)

    def kill9(self) -> None:
        self.check_alive(" before kill9()")
        self._expected_dead = True
        self._terminate(signal.SIGKILL, 10)

    def restart(self) -> "ServerProcess":
        if self.alive():
            self.stop()
        return self.start()

    def client(self, **kw) -> RespConn:
        return RespConn(self.host, self.port, **kw)

    def __repr__(self):
        return f"<{self.name} pid={self.pid} port={self.port} dir={self.dir}>"


def _redis_argv(port: int, data_dir: Path, extra: Iterable[str] = ()) -> List[str]:
    return [REDIS_SERVER_BIN, "--port", str(port), "--bind", HOST, "--dir", str(data_dir),
            "--daemonize", "no", "--logfile", ""] + list(extra)


def make_redis(tmp: Path, name: str = "redis", password: Optional[str] = None,
               extra: Iterable[str] = ("--save", "", "--appendonly", "no")) -> ServerProcess:
    port = free_port()
    extra = list(extra)
    if password is not None:
        extra += ["--requirepass", password]
    d = Path(tmp) / name
    return ServerProcess(name, lambda s: _redis_argv(s.port, s.dir, extra), port, d,
                         Path(tmp) / f"{name}.log", password)


def shoal_available() -> bool:
    return SELFTEST or bool(SHOAL_BIN)


SKIP_NO_SHOAL = "SHOAL_BIN is not set (set it to the shoal binary, or SHOAL_DIFF_SELFTEST=1)"


def make_shoal(tmp: Path, name: str = "shoal", durability: str = "fsync",
               workers: int = WORKERS, password: Optional[str] = None,
               config: Optional[Path] = None, data_dir: Optional[Path] = None,
               cpus: Optional[str] = None) -> ServerProcess:
    """Build (not start) a shoal server; under SHOAL_DIFF_SELFTEST=1 a redis-server
    configured to the closest equivalent durability. workers=0 leaves --workers
    out (shoal's default); cpus runs it under `taskset -c cpus`."""
    if not shoal_available():
        pytest.skip(SKIP_NO_SHOAL)
    if not SELFTEST and not (os.path.isfile(SHOAL_BIN) and os.access(SHOAL_BIN, os.X_OK)):
        pytest.fail(f"SHOAL_BIN={SHOAL_BIN!r} is not an executable file", pytrace=False)
    assert durability in ("fsync", "none")
    port = free_port()
    d = Path(data_dir) if data_dir else Path(tmp) / name
    if SELFTEST:
        if not REDIS_SERVER_BIN:
            pytest.skip("SHOAL_DIFF_SELFTEST=1 but redis-server is not installed")
        if durability == "fsync":
            extra = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        else:  # write on clean shutdown only
            extra = ["--save", "3600 1", "--appendonly", "no"]
        if password is not None:
            extra += ["--requirepass", password]
        fn = lambda s: _redis_argv(s.port, s.dir, extra)  # noqa: E731
        return ServerProcess(name + "(selftest-redis)", fn, port, d, Path(tmp) / f"{name}.log",
                             password)

    # Every shoal is a (one-node) cluster with a Raft peer port; its default,
    # port + 10000, is out of range for most ephemeral ports. Picked once, so a
    # restart reuses it.
    peer_port = free_port()
    for _ in range(100):
        if peer_port != port:
            break
        peer_port = free_port()

    def fn(s):
        argv = [SHOAL_BIN, "server", "--bind", HOST, "--port", str(s.port), "--peer-port",
                str(peer_port), "--dir", str(s.dir), "--durability", durability]
        if workers:
            argv += ["--workers", str(workers)]
        if cpus is not None:
            argv = ["taskset", "-c", cpus] + argv  # taskset execs shoal: the PID stays shoal's
        if password is not None:
            argv += ["--requirepass", password]
        if config is not None:
            argv += ["--config", str(config)]
        return argv
    return ServerProcess(name, fn, port, d, Path(tmp) / f"{name}.log", password, cluster=True)


class ServerPool:
    """Tracks servers started by a fixture and stops them all at teardown."""

    def __init__(self):
        self.servers: List[ServerProcess] = []

    def add(self, s: ServerProcess) -> ServerProcess:
        self.servers.append(s)
        return s

    def teardown(self) -> List[str]:
        problems = []
        for s in reversed(self.servers):
            try:
                s.check_alive(" during the test")
            except AssertionError as e:
                problems.append(str(e))
            try:
                s._expected_dead = True
                s._terminate()
            except Exception as e:  # keep stopping the others
                problems.append(f"stopping {s}: {e!r}")
            problems.extend(m for m in s.unexpected_exits if m not in problems)
        return problems


@pytest.fixture
def server_pool():
    pool = ServerPool()
    try:
        yield pool
    finally:
        problems = pool.teardown()
    if problems:
        pytest.fail("server problems at teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def shoal_factory(tmp_path, server_pool):
    """Call with make_shoal() keyword args; returns a started server. Every server
    is stopped (by PID) at teardown, even if the test fails."""
    counter = [0]

    def factory(**kw) -> ServerProcess:
        counter[0] += 1
        kw.setdefault("name", f"shoal{counter[0]}")
        s = server_pool.add(make_shoal(tmp_path, **kw))
        return s.start()
    return factory


@pytest.fixture
def shoal(shoal_factory) -> ServerProcess:
    """A running shoal (--durability fsync). Has host, port, pid, dir,
    restart(), kill9(), stop(), client()."""
    return shoal_factory()


@pytest.fixture
def redis_server(tmp_path, server_pool) -> ServerProcess:
    if not REDIS_SERVER_BIN:
        pytest.skip("redis-server is not installed")
    return server_pool.add(make_redis(tmp_path, "redis")).start()


@pytest.fixture
def redis_factory(tmp_path, server_pool):
    if not REDIS_SERVER_BIN:
        pytest.skip("redis-server is not installed")
    counter = [0]

    def factory(**kw) -> ServerProcess:
        counter[0] += 1
        kw.setdefault("name", f"redis{counter[0]}")
        return server_pool.add(make_redis(tmp_path, **kw)).start()
    return factory


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower tests (deselect with -m 'not slow')")
