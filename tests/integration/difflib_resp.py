"""Differential script parser and runner (see README.md for the format).

A script is run line by line against a reference server (real redis-server)
and a target server (shoal). By default the exact raw RESP bytes of the two
replies must be equal; directives relax that for non-deterministic replies.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from conftest import (ConnectionClosed, RespConn, RespMap, RespProtocolError, Reply,
                      encode_command)

MAX_SCAN_ITERATIONS = 100_000
MAX_SLEEP_MS = 3000


class ScriptSyntaxError(Exception):
    pass


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a", "0": "\0",
            "\\": "\\", '"': '"', "'": "'"}


def tokenize(line: str, lineno: int = 0) -> List[bytes]:
    """Split like redis-cli: whitespace-separated; "..." supports \\n \\r \\t
    \\b \\a \\0 \\\\ \\" \\xHH; '...' is literal except \\'."""
    out: List[bytes] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        cur = bytearray()
        while i < n and line[i] not in " \t":
            ch = line[i]
            if ch == '"':
                i += 1
                closed = False
                while i < n:
                    c = line[i]
                    if c == "\\" and i + 1 < n:
                        e = line[i + 1]
                        if e == "x" and i + 3 < n and re.fullmatch(r"[0-9a-fA-F]{2}", line[i + 2:i + 4]):
                            cur.append(int(line[i + 2:i + 4], 16))
                            i += 4
                            continue
                        cur += _ESCAPES.get(e, e).encode()
                        i += 2
                        continue
                    if c == '"':
                        closed = True
                        i += 1
                        break
                    cur += c.encode()
                    i += 1
                if not closed:
                    raise ScriptSyntaxError(f"line {lineno}: unbalanced double quote")
            elif ch == "'":
                i += 1
                closed = False
                while i < n:
                    c = line[i]
                    if c == "\\" and i + 1 < n and line[i + 1] == "'":
                        cur += b"'"
                        i += 2
                        continue
                    if c == "'":
                        closed = True
                        i += 1
                        break
                    cur += c.encode()
                    i += 1
                if not closed:
                    raise ScriptSyntaxError(f"line {lineno}: unbalanced single quote")
            else:
                cur += ch.encode()
                i += 1
        out.append(bytes(cur))
    return out


@dataclass
class Step:
    lineno: int
    text: str
    directive: str            # "" (exact), type, shape, sorted, range, scanall, fields,
    #                           errprefix, raw, closes, reconnect, sleep
    args: List[bytes] = field(default_factory=list)       # command arguments
    params: List[bytes] = field(default_factory=list)     # directive parameters
    raw: bytes = b""
    nreplies: int = 1


@dataclass
class Script:
    path: Path
    steps: List[Step]
    requires: List[List[bytes]] = field(default_factory=list)


def parse_script(path: Path) -> Script:
    steps: List[Step] = []
    requires: List[List[bytes]] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#!"):
            m = re.match(r"#!\s*requires\s+(.*)$", s)
            if not m:
                raise ScriptSyntaxError(f"{path}:{lineno}: unknown header {s!r}")
            requires.append(tokenize(m.group(1), lineno))
            continue
        if s.startswith("#"):
            continue
        toks = tokenize(s, lineno)
        if not toks[0].startswith(b"~"):
            steps.append(Step(lineno, s, "", toks))
            continue
        d = toks[0][1:].decode()
        rest = toks[1:]
        st = Step(lineno, s, d)
        if d in ("type", "shape", "sorted", "errprefix", "closes"):
            st.args = rest
        elif d == "range":
            if len(rest) < 3:
                raise ScriptSyntaxError(f"{path}:{lineno}: ~range A B CMD...")
            st.params, st.args = rest[:2], rest[2:]
            int(st.params[0]), int(st.params[1])
        elif d == "scanall":
            st.params = rest
        elif d == "fields":
            if b"--" not in rest:
                raise ScriptSyntaxError(f"{path}:{lineno}: ~fields k1 k2 -- CMD...")
            k = rest.index(b"--")
            st.params, st.args = rest[:k], rest[k + 1:]
        elif d == "raw":
            if len(rest) != 1:
                raise ScriptSyntaxError(f"{path}:{lineno}: ~raw takes one quoted string")
            st.raw = rest[0]
        elif d == "rawn":
            if len(rest) != 2:
                raise ScriptSyntaxError(f"{path}:{lineno}: ~rawn N \"bytes\"")
            st.directive = "raw"
            st.nreplies = int(rest[0])
            st.raw = rest[1]
        elif d == "reconnect":
            pass
        elif d == "sleep":
            if len(rest) != 1 or not 0 <= int(rest[0]) <= MAX_SLEEP_MS:
                raise ScriptSyntaxError(f"{path}:{lineno}: ~sleep MS (0..{MAX_SLEEP_MS})")
            st.params = rest
        else:
            raise ScriptSyntaxError(f"{path}:{lineno}: unknown directive ~{d}")
        if d in ("type", "shape", "sorted", "errprefix", "closes", "range", "fields") and not st.args:
            raise ScriptSyntaxError(f"{path}:{lineno}: directive ~{d} needs a command")
        steps.append(st)
    return Script(Path(path), steps, requires)


# --------------------------------------------------------------------------
# comparison helpers
# --------------------------------------------------------------------------

class Outcome:
    """Either a Reply or a failure marker ('<closed>', '<timeout>', ...)."""

    def __init__(self, reply: Optional[Reply] = None, marker: str = ""):
        self.reply = reply
        self.marker = marker

    @property
    def raw(self) -> bytes:
        return self.reply.raw if self.reply else self.marker.encode()

    def __repr__(self):
        return repr(self.reply.raw) if self.reply else self.marker


def shape(v):
    """Structure of a parsed reply: types and aggregate sizes, no scalar values."""
    if isinstance(v, RespMap):
        return ("map", tuple((shape(k), shape(x)) for k, x in v))
    if isinstance(v, list):
        return (type(v).__name__, tuple(shape(x) for x in v))
    if v is None:
        return "null"
    return type(v).__name__


def as_pairs(v) -> Optional[List[Tuple[object, object]]]:
    if isinstance(v, RespMap):
        return list(v)
    if isinstance(v, list) and len(v) % 2 == 0:
        return [(v[i], v[i + 1]) for i in range(0, len(v), 2)]
    return None


def _sort_key(x):
    return repr(x)


class Side:
    def __init__(self, name: str, host: str, port: int, timeout: float = 10.0):
        self.name = name
        self.host = host
        self.port = port
        self.timeout = timeout
        self.conn: Optional[RespConn] = None

    def connect(self):
        self.close()
        self.conn = RespConn(self.host, self.port, timeout=self.timeout)

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def _roundtrip(self, data: bytes, n: int = 1) -> List[Outcome]:
        if self.conn is None:
            self.connect()
        outs: List[Outcome] = []
        try:
            self.conn.send(data)
        except OSError as e:
            self.connect()
            return [Outcome(marker=f"<send failed: {e.__class__.__name__}>")]
        for _ in range(n):
            try:
                outs.append(Outcome(self.conn.read_reply()))
            except ConnectionClosed:
                outs.append(Outcome(marker="<connection closed>"))
                self.connect()
                break
            except socket.timeout:
                outs.append(Outcome(marker="<timeout>"))
                self.connect()
                break
            except RespProtocolError as e:
                outs.append(Outcome(marker=f"<invalid RESP: {e}>"))
                self.connect()
                break
        return outs

    def command(self, args: List[bytes]) -> Outcome:
        return self._roundtrip(encode_command(*args))[0]

    def raw(self, data: bytes, n: int) -> List[Outcome]:
        return self._roundtrip(data, n)

    def scan_all(self, params: List[bytes]) -> Tuple[Optional[Outcome], Optional[set]]:
        cursor = b"0"
        keys = set()
        for _ in range(MAX_SCAN_ITERATIONS):
            o = self.command([b"SCAN", cursor] + params)
            v = o.reply.value if o.reply else None
            if (o.reply is None or o.reply.is_error or not isinstance(v, list) or len(v) != 2
                    or not isinstance(v[0], bytes) or not isinstance(v[1], list)):
                return o, None
            keys.update(v[1])
            cursor = v[0]
            if cursor == b"0":
                return None, keys
        return Outcome(marker="<SCAN did not finish>"), None


def compare_step(st: Step, ref: Side, tgt: Side) -> Tuple[bool, str, str]:
    """Runs one step on both sides. Returns (ok, ref_text, tgt_text)."""
    d = st.directive
    if d == "reconnect":
        ref.connect()
        tgt.connect()
        return True, "<reconnected>", "<reconnected>"
    if d == "sleep":
        time.sleep(int(st.params[0]) / 1000.0)
        return True, "<slept>", "<slept>"
    if d == "scanall":
        re_err, rk = ref.scan_all(st.params)
        te_err, tk = tgt.scan_all(st.params)
        if re_err is not None or te_err is not None:
            ok = (re_err is not None and te_err is not None and re_err.raw == te_err.raw)
            return ok, repr(re_err if re_err else sorted(rk)), repr(te_err if te_err else sorted(tk))
        return rk == tk, repr(sorted(rk)), repr(sorted(tk))
    if d == "raw":
        ro = ref.raw(st.raw, st.nreplies)
        to = tgt.raw(st.raw, st.nreplies)
        ok = [o.raw for o in ro] == [o.raw for o in to]
        return ok, repr(ro), repr(to)

    ro = ref.command(st.args)
    to = tgt.command(st.args)
    rtxt, ttxt = repr(ro), repr(to)
    if d == "closes":
        rc = ref.conn.wait_closed(5.0) if ro.reply else True
        tc = tgt.conn.wait_closed(5.0) if to.reply else True
        ok = ro.raw == to.raw and rc and tc
        rtxt += "" if rc else " <connection NOT closed>"
        ttxt += "" if tc else " <connection NOT closed>"
        ref.connect()
        tgt.connect()
        return ok, rtxt, ttxt
    if ro.reply is None or to.reply is None:
        return ro.raw == to.raw, rtxt, ttxt
    rv, tv = ro.reply.value, to.reply.value
    # errors must always match exactly unless ~errprefix
    if d != "errprefix" and (ro.reply.is_error or to.reply.is_error):
        return ro.raw == to.raw, rtxt, ttxt
    if d == "":
        return ro.raw == to.raw, rtxt, ttxt
    if d == "type":
        return ro.reply.type == to.reply.type, rtxt, ttxt
    if d == "shape":
        return ro.reply.type == to.reply.type and shape(rv) == shape(tv), rtxt, ttxt
    if d == "sorted":
        if not isinstance(rv, list) or not isinstance(tv, list):
            return ro.raw == to.raw, rtxt, ttxt
        ok = ro.reply.type == to.reply.type and sorted(rv, key=_sort_key) == sorted(tv, key=_sort_key)
        return ok, rtxt, ttxt
    if d == "range":
        lo, hi = int(st.params[0]), int(st.params[1])
        ok = (isinstance(rv, int) and isinstance(tv, int) and ro.reply.type == to.reply.type
              and lo <= rv <= hi and lo <= tv <= hi)
        return ok, rtxt + f" (want {lo}..{hi})", ttxt + f" (want {lo}..{hi})"
    if d == "fields":
        rp, tp = as_pairs(rv), as_pairs(tv)
        if rp is None or tp is None or ro.reply.type != to.reply.type:
            return False, rtxt, ttxt
        rd, td = dict((repr(k), v) for k, v in rp), dict((repr(k), v) for k, v in tp)
        ok = set(rd) == set(td)
        for k in st.params:
            kk = repr(k)
            ok = ok and kk in rd and kk in td and rd[kk] == td[kk]
        return ok, rtxt, ttxt
    if d == "errprefix":
        if ro.reply.is_error and to.reply.is_error:
            return rv.split(" ", 1)[0] == tv.split(" ", 1)[0], rtxt, ttxt
        return ro.raw == to.raw, rtxt, ttxt
    raise AssertionError(f"unhandled directive {d}")


def run_script(script: Script, ref_addr, tgt_addr, transcript: Optional[list] = None) -> List[str]:
    """Runs a script; returns a list of mismatch descriptions (empty = pass)."""
    ref = Side("redis", *ref_addr)
    tgt = Side("shoal", *tgt_addr)
    mismatches: List[str] = []
    try:
        ref.connect()
        tgt.connect()
        pre = Step(0, "FLUSHALL (implicit)", "", [b"FLUSHALL"])
        steps = [pre] + script.steps
        for st in steps:
            ok, rtxt, ttxt = compare_step(st, ref, tgt)
            if transcript is not None:
                transcript.append(f"{st.lineno:4d} {'  ' if ok else '!!'} {st.text}\n"
                                  f"       redis: {rtxt}\n" + ("" if ok else f"       shoal: {ttxt}\n"))
            if not ok:
                # Long replies: shown from a little before where they differ.
                same = next((i for i, (a, b) in enumerate(zip(rtxt, ttxt)) if a != b), min(len(rtxt), len(ttxt)))
                cut = max(0, same - 120) if same > 400 else 0
                at = f"[from char {cut}] " if cut else ""
                mismatches.append(f"{script.path.name}:{st.lineno}: {st.text[:300]}\n"
                                  f"    redis: {at}{rtxt[cut:cut + 600]}\n    shoal: {at}{ttxt[cut:cut + 600]}")
    finally:
        ref.close()
        tgt.close()
    return mismatches
