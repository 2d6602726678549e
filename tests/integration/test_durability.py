"""Durability: acknowledged writes survive kill -9 in both modes (fsync: on
disk; none: written to the kernel before the reply, and a lone replica logs
and applies a write in one storage write); a clean SIGTERM restart keeps
everything (values, TTLs, dbs) in both modes."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import ConnectionClosed, RespConn

N_WRITERS = 4
OPS_TOTAL = 2000


class Writer(threading.Thread):
    """Cycles SET new key / INCR counter / SET overwrite on its own connection,
    recording each acknowledged write; stops at the first connection error (the kill), a time limit, or
    after max_ops."""

    def __init__(self, srv, wid: int, round_no: int, max_ops: int, deadline: float):
        super().__init__(daemon=True)
        self.srv, self.wid, self.round = srv, wid, round_no
        self.max_ops, self.deadline = max_ops, deadline
        self.counter_key = f"ctr:{wid}:r{round_no}"
        self.acked_sets = {}      # key -> value
        self.acked_counter = 0    # last acknowledged INCR result
        self.last_key = f"last:{wid}:r{round_no}"
        self.acked_last = -1      # last acknowledged value of last_key
        self.attempted_last = -1
        self.attempted_incrs = 0
        self.error = None
        self.unexpected = []
        self.db = wid % 3         # spread over dbs 0..2

    @property
    def acked(self) -> int:
        return len(self.acked_sets) + self.acked_counter + (self.acked_last + 1) // 3

    def run(self):
        try:
            c = RespConn(self.srv.host, self.srv.port, timeout=20)
        except OSError as e:
            self.error = e
            return
        try:
            if c.call("SELECT", self.db).raw != b"+OK\r\n":
                self.unexpected.append("SELECT failed")
                return
            for i in range(self.max_ops):
                if time.monotonic() > self.deadline:
                    return
                if i % 3 == 0:
                    key = f"w{self.wid}:r{self.round}:{i}"
                    val = f"val-{self.wid}-{self.round}-{i}-" + "x" * (i % 50)
                    rep = c.call("SET", key, val)
                    if rep.raw != b"+OK\r\n":
                        self.unexpected.append(f"SET {key} -> {rep.raw!r}")
                        return
                    self.acked_sets[key] = val.encode()
                elif i % 3 == 1:
                    self.attempted_incrs += 1
                    rep = c.call("INCR", self.counter_key)
                    if not isinstance(rep.value, int):
                        self.unexpected.append(f"INCR -> {rep.raw!r}")
                        return
                    self.acked_counter = rep.value
                else:  # overwrite one key again and again: the newest acked value must win
                    self.attempted_last = i
                    rep = c.call("SET", self.last_key, str(i))
                    if rep.raw != b"+OK\r\n":
                        self.unexpected.append(f"SET {self.last_key} -> {rep.raw!r}")
                        return
                    self.acked_last = i
        except (OSError, ConnectionClosed) as e:
            self.error = e  # expected once the server is killed
        except Exception as e:  # e.g. invalid RESP: must not vanish with the thread
            self.unexpected.append(repr(e))
        finally:
            c.close()


def _verify(srv, writers):
    missing, wrong = [], []
    with RespConn(srv.host, srv.port, timeout=20) as c:
        for w in writers:
            assert c.call("SELECT", w.db).raw == b"+OK\r\n"
            for k, v in w.acked_sets.items():
                got = c.call("GET", k).value
                if got is None:
                    missing.append(k)
                elif got != v:
                    wrong.append((k, got, v))
            got = c.call("GET", w.counter_key).value
            n = int(got) if got is not None else 0
            assert w.acked_counter <= n <= w.attempted_incrs, (
                f"{w.counter_key} = {n} after recovery; acknowledged {w.acked_counter}, "
                f"{w.attempted_incrs} INCRs were sent")
            got = c.call("GET", w.last_key).value
            last = int(got) if got is not None else -1
            assert w.acked_last <= last <= w.attempted_last, (
                f"{w.last_key} = {last} after recovery; last acknowledged SET was "
                f"{w.acked_last}, last sent {w.attempted_last}")
    assert not missing, f"{len(missing)} acknowledged SETs lost after kill -9, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} keys have wrong values, e.g. {wrong[:3]}"


def _run_round(srv, round_no, kill_after):
    deadline = time.monotonic() + 60
    per = OPS_TOTAL // N_WRITERS
    # each writer could do 4x its share: the kill comes long before they finish
    writers = [Writer(srv, w, round_no, per * 4, deadline) for w in range(N_WRITERS)]
    for w in writers:
        w.start()
    for _ in range(6000):  # bounded: <= 60 s
        done = sum(w.acked for w in writers)
        if done >= kill_after or time.monotonic() > deadline or not any(w.is_alive() for w in writers):
            break
        time.sleep(0.01)
    still_running = sum(w.is_alive() for w in writers)
    srv.kill9()
    for w in writers:
        w.join(timeout=30)
        assert not w.is_alive(), "writer thread did not stop"
        assert not w.unexpected, w.unexpected
    total = sum(w.acked for w in writers)
    assert total >= min(kill_after, 200), f"only {total} writes acknowledged before the kill"
    assert still_running, "all writers had finished before the kill: not a mid-stream kill"
    return writers, total


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_kill9_keeps_acknowledged_writes(shoal_factory, durability):
    srv = shoal_factory(durability=durability)
    with srv.client() as c:
        assert c.call("SET", "before", "crash").raw == b"+OK\r\n"
    all_writers = []
    for round_no in range(2):  # second round: crash again after recovering
        writers, total = _run_round(srv, round_no, kill_after=OPS_TOTAL // 2)
        print(f"round {round_no}: {total} acknowledged writes before kill -9")
        srv.start()  # same port, same --dir
        all_writers += writers
        _verify(srv, all_writers)
        with srv.client() as c:
            assert c.call("GET", "before").value == b"crash"
    # the recovered server still accepts and keeps writes
    with srv.client() as c:
        assert c.call("SET", "after", "recovery").raw == b"+OK\r\n"
    srv.restart()
    with srv.client() as c:
        assert c.call("GET", "after").value == b"recovery"
        assert c.call("GET", "before").value == b"crash"
    _verify(srv, all_writers)


def _populate(c):
    t0 = time.monotonic()
    ok = b"+OK\r\n"
    assert c.call("SET", "plain", "v1").raw == ok
    assert c.call("SET", "overwritten", "old").raw == ok
    assert c.call("SET", "overwritten", "new").raw == ok
    assert c.call("SET", "deleted", "x").raw == ok
    assert c.call("DEL", "deleted").value == 1
    assert c.call("SET", "long-ttl", "v", "EX", "10000").raw == ok
    # keys used together in one command share a hash tag (one slot):
    # {short-ttl}2 hashes like short-ttl; {ren}src/{ren}dst; {m}1/{m}2
    assert c.call("SET", "short-ttl", "v", "PX", "1500").raw == ok
    assert c.call("SET", "{short-ttl}2", "v").raw == ok
    assert c.call("PEXPIRE", "{short-ttl}2", "1500").value == 1
    t_short = time.monotonic()  # both short TTLs end by t_short + 1.5 s
    assert c.call("SET", "abs-ttl", "v", "EXAT", "4102444800").raw == ok
    assert c.call("SET", "persisted", "v", "EX", "1").raw == ok
    assert c.call("PERSIST", "persisted").value == 1
    assert c.call("SET", "bin\x00key", b"\x00\r\n\xff").raw == ok
    assert c.call("SET", "big", b"B" * (1 << 20)).raw == ok
    for _ in range(7):
        c.call("INCR", "counter")
    assert c.call("INCRBYFLOAT", "float", "2.5").value == b"2.5"
    assert c.call("APPEND", "appended", "ab").value == 2
    assert c.call("APPEND", "appended", "cd").value == 4
    assert c.call("SETRANGE", "ranged", "3", "xy").value == 5
    assert c.call("SET", "{ren}src", "moved").raw == ok
    assert c.call("RENAME", "{ren}src", "{ren}dst").raw == ok
    assert c.call("MSET", "{m}1", "1", "{m}2", "2").raw == ok
    assert c.call("GETDEL", "{m}2").value == b"2"
    assert c.call("SELECT", "1").raw == ok
    assert c.call("SET", "plain", "db1").raw == ok
    assert c.call("SET", "db1-ttl", "v", "EX", "5000").raw == ok
    assert c.call("SELECT", "15").raw == ok
    assert c.call("SET", "plain", "db15").raw == ok
    assert c.call("SELECT", "2").raw == ok
    assert c.call("SET", "gone", "x").raw == ok
    assert c.call("FLUSHDB").raw == ok
    return t0, t_short


def _check(c, elapsed_s):
    def get(k):
        return c.call("GET", k).value
    assert c.call("SELECT", "0").raw == b"+OK\r\n"
    assert get("plain") == b"v1"
    assert get("overwritten") == b"new"
    assert get("deleted") is None
    assert get("long-ttl") == b"v"
    ttl = c.call("TTL", "long-ttl").value
    assert 10000 - elapsed_s - 2 <= ttl <= 10000, f"TTL of long-ttl after restart: {ttl}"
    assert get("short-ttl") is None, "key whose TTL passed while the server was down came back"
    assert get("{short-ttl}2") is None, "key whose TTL passed while the server was down came back"
    assert c.call("EXISTS", "short-ttl", "{short-ttl}2").value == 0
    assert c.call("PEXPIRETIME", "abs-ttl").value == 4102444800000
    assert c.call("TTL", "persisted").value == -1 and get("persisted") == b"v"
    assert get("bin\x00key") == b"\x00\r\n\xff"
    assert get("big") == b"B" * (1 << 20)
    assert get("counter") == b"7"
    assert c.call("INCR", "counter").value == 8
    assert get("float") == b"2.5"
    assert get("appended") == b"abcd"
    assert get("ranged") == b"\x00\x00\x00xy"
    assert get("{ren}src") is None and get("{ren}dst") == b"moved"
    assert c.call("MGET", "{m}1", "{m}2").value == [b"1", None]
    keys = sorted(c.call("KEYS", "*").value)
    assert keys == sorted([b"plain", b"overwritten", b"long-ttl", b"abs-ttl", b"persisted",
                           b"bin\x00key", b"big", b"counter", b"float", b"appended", b"ranged",
                           b"{ren}dst", b"{m}1"]), keys
    assert c.call("SELECT", "1").raw == b"+OK\r\n"
    assert get("plain") == b"db1"
    assert 5000 - elapsed_s - 2 <= c.call("TTL", "db1-ttl").value <= 5000
    assert c.call("DBSIZE").value == 2
    assert c.call("SELECT", "15").raw == b"+OK\r\n"
    assert get("plain") == b"db15" and c.call("DBSIZE").value == 1
    assert c.call("SELECT", "2").raw == b"+OK\r\n"
    assert c.call("DBSIZE").value == 0
    for db in (3, 4, 14):
        c.call("SELECT", db)
        assert c.call("DBSIZE").value == 0


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_clean_restart_keeps_everything(shoal_factory, durability):
    srv = shoal_factory(durability=durability)
    with srv.client() as c:
        t0, t_short = _populate(c)
    idle = srv.client()  # an idle client must not block a clean shutdown
    try:
        rc = srv.stop()
    finally:
        idle.close()
    assert rc == 0, f"shoal exited with {rc} on SIGTERM; log:\n{srv.log_tail()}"
    # let the short TTLs (1.5 s) pass while the server is down
    remaining = 1.7 - (time.monotonic() - t_short)
    if remaining > 0:
        time.sleep(remaining)
    srv.start()
    with srv.client() as c:
        _check(c, time.monotonic() - t0)
    # and a second clean restart (recovery output is itself durable)
    srv.restart()
    with srv.client() as c:
        assert c.call("GET", "counter").value == b"8"
        assert c.call("GET", "plain").value == b"v1"
        c.call("SELECT", "1")
        assert c.call("GET", "plain").value == b"db1"


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_restart_empty_dir_and_flushall(shoal_factory, durability):
    """FLUSHALL is durable too: nothing comes back after a restart."""
    srv = shoal_factory(durability=durability)
    with srv.client() as c:
        for db in range(3):
            c.call("SELECT", db)
            assert c.call("SET", "k", f"v{db}").raw == b"+OK\r\n"
        assert c.call("FLUSHALL").raw == b"+OK\r\n"
        c.call("SELECT", 1)
        assert c.call("SET", "after-flush", "yes").raw == b"+OK\r\n"
    srv.restart()
    with srv.client() as c:
        for db in (0, 2):
            c.call("SELECT", db)
            assert c.call("DBSIZE").value == 0
        c.call("SELECT", 1)
        assert c.call("KEYS", "*").value == [b"after-flush"]


def test_a_second_server_on_a_running_servers_dir_is_refused(shoal_factory):
    """A second shoal started on the data directory of one that runs stops
    before it changes anything there (RocksDB's lock on the directory, taken
    also around the cut of a crashed WAL's gap): the first goes on serving,
    and its writes survive a kill -9."""
    import subprocess
    from conftest import HOST, SHOAL_BIN, free_port
    srv = shoal_factory(durability="fsync")
    with srv.client() as c:
        for i in range(300):
            assert c.call("SET", f"k{i}", f"v{i}").value == "OK"
    argv = [SHOAL_BIN, "server", "--bind", HOST, "--port", str(free_port()), "--peer-port",
            str(free_port()), "--dir", str(srv.dir), "--durability", "fsync"]
    second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    text = out.decode("utf-8", "replace")
    assert second.returncode != 0, text
    assert "lock" in text.lower(), text
    with srv.client() as c:
        for i in range(300):
            assert c.call("GET", f"k{i}").value == f"v{i}".encode()
        for i in range(300, 400):
            assert c.call("SET", f"k{i}", f"v{i}").value == "OK"
    srv.kill9()
    srv.start()
    with srv.client() as c:
        for i in range(400):
            assert c.call("GET", f"k{i}").value == f"v{i}".encode(), i
