"""Differential tests: each tests/testdata/differential/*.txt script is run
against a real redis-server and against shoal; replies must match (exact raw
RESP bytes unless a directive says otherwise). See README.md.

SHOAL_DIFF_SELFTEST=1 replaces shoal by a second redis-server (harness check).
SHOAL_DIFF_DUMP=DIR writes a transcript per script into DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import (REDIS_SERVER_BIN, SELFTEST, SKIP_NO_SHOAL, RespConn, ServerPool,
                      make_redis, make_shoal, shoal_available)
from difflib_resp import parse_script, run_script, tokenize

SCRIPT_DIR = Path(__file__).resolve().parent.parent / "testdata" / "differential"
SCRIPTS = sorted(SCRIPT_DIR.glob("*.txt"))


@pytest.fixture(scope="module")
def diff_servers(tmp_path_factory):
    if not REDIS_SERVER_BIN:
        pytest.skip("redis-server is not installed (needed as the reference)")
    if not shoal_available():
        pytest.skip(SKIP_NO_SHOAL)
    tmp = tmp_path_factory.mktemp("diff")
    pool = ServerPool()
    try:
        ref = pool.add(make_redis(tmp, "reference-redis")).start()
        tgt = pool.add(make_shoal(tmp, "shoal", durability="fsync")).start()
        yield ref, tgt
    finally:
        problems = pool.teardown()
    if problems:
        pytest.fail("server problems at teardown:\n" + "\n".join(problems), pytrace=False)


def test_scripts_exist():
    assert len(SCRIPTS) >= 5, f"no differential scripts found in {SCRIPT_DIR}"
    for p in SCRIPTS:
        s = parse_script(p)  # syntax check even without servers
        assert s.steps, f"{p.name} is empty"


def test_tokenizer():
    assert tokenize('SET "a b" \'c d\' "\\r\\n\\x00\\"" x') == [b"SET", b"a b", b"c d", b'\r\n\x00"', b"x"]
    assert tokenize('GET ""') == [b"GET", b""]


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_differential(path, diff_servers):
    ref, tgt = diff_servers
    script = parse_script(path)
    for req in script.requires:
        # "#! requires CMD args...": skip the script if the target does not know CMD.
        with RespConn(tgt.host, tgt.port) as c:
            r = c.call(*req)
        if r.is_error and r.value.startswith("ERR unknown command"):
            pytest.skip(f"target does not implement {req[0].decode()} (script needs it): {r.value}")
    transcript = []
    mismatches = run_script(script, ref.addr, tgt.addr, transcript)
    dump = os.environ.get("SHOAL_DIFF_DUMP")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        (Path(dump) / (path.stem + ".out")).write_text("".join(transcript))
    tgt.check_alive(f" while running {path.name}")
    ref.check_alive(f" while running {path.name}")
    if mismatches:
        shown = mismatches[:40]
        more = len(mismatches) - len(shown)
        pytest.fail(f"{len(mismatches)} mismatching replies in {path.name} "
                    f"({'selftest: redis vs redis' if SELFTEST else 'redis vs shoal'}):\n"
                    + "\n".join(shown) + (f"\n... and {more} more" if more > 0 else ""),
                    pytrace=False)


def test_directive_helpers():
    from conftest import RespMap
    from difflib_resp import as_pairs, shape
    assert shape([b"1", [b"a", b"b"]]) == shape([b"22", [b"c", b"d"]])
    assert shape([b"1", [b"a"]]) != shape([b"1", [b"a", b"b"]])
    assert shape(None) != shape(b"")
    assert as_pairs([b"k", 1, b"j", 2]) == [(b"k", 1), (b"j", 2)]
    assert as_pairs(RespMap([(b"k", 1)])) == [(b"k", 1)]
    assert as_pairs([b"odd"]) is None


# ---- randomized sequences (seeded): sorted sets and lists, whose replies are
# deterministic, grown past Redis's small encodings (128 elements) so that
# both of its representations are compared.

def _random_collection_script(seed: int, n: int = 600) -> "Script":
    import random
    from difflib_resp import Script, Step
    rnd = random.Random(seed)
    members = [f"m{i:03d}" for i in range(300)] + ["", "a", "b", "\x00x", "zz"]
    zkeys = ["{z}1", "{z}2", "{z}3"]

    def score():
        r = rnd.random()
        if r < 0.5:
            return str(rnd.randint(-5, 20))
        if r < 0.8:
            return repr(round(rnd.uniform(-100, 100), rnd.randint(0, 3)) + 0.0)  # never -0.0 (see WEIGHTS)
        return rnd.choice(["inf", "-inf", "0", "1e10", "2.5"])

    def bound():
        r = rnd.random()
        b = rnd.choice(["-inf", "+inf", str(rnd.randint(-5, 20)), f"({rnd.randint(-5, 20)}",
                        repr(round(rnd.uniform(-100, 100), 1))])
        return b if r < 0.9 else "(" + str(rnd.randint(-5, 20))

    def lexb():
        c = rnd.random()
        if c < 0.15:
            return rnd.choice(["-", "+"])
        return rnd.choice("[(") + rnd.choice(members)

    def rank():
        return str(rnd.randint(-40, 320) if rnd.random() < 0.8 else rnd.randint(-400, 400))

    steps = []

    def add(*args):
        steps.append(Step(len(steps) + 1, " ".join(args), "", [a.encode() for a in args]))

    for i in range(n):
        if i == n // 2:
            steps.append(Step(len(steps) + 1, "HELLO 3", "fields", [b"HELLO", b"3"], [b"server", b"proto"]))
        k = rnd.choice(zkeys)
        c = rnd.random()
        if c < 0.22:
            flags = rnd.sample(["NX", "XX", "GT", "LT", "CH"], rnd.randint(0, 2)) if rnd.random() < 0.3 else []
            pairs = []
            for _ in range(rnd.randint(1, 40)):
                pairs += [score(), rnd.choice(members)]
            add("ZADD", k, *flags, *pairs)
        elif c < 0.27:
            add("ZADD", "{z}lex", *sum([["0", rnd.choice(members)] for _ in range(rnd.randint(1, 30))], []))
        elif c < 0.31:
            add("ZINCRBY", k, score(), rnd.choice(members))
        elif c < 0.35:
            add("ZREM", k, *[rnd.choice(members) for _ in range(rnd.randint(1, 5))])
        elif c < 0.47:
            opts = []
            by = rnd.choice(["", "BYSCORE", "BYLEX"])
            rev = rnd.random() < 0.4
            if by == "":
                lo, hi = rank(), rank()
            elif by == "BYSCORE":
                lo, hi = bound(), bound()
            else:
                lo, hi, k = lexb(), lexb(), "{z}lex"
            if by:
                opts.append(by)
            if rev:
                opts.append("REV")
            if by and rnd.random() < 0.4:
                opts += ["LIMIT", str(rnd.randint(-1, 20)), str(rnd.randint(-1, 30))]
            if by != "BYLEX" and rnd.random() < 0.5:
                opts.append("WITHSCORES")
            add("ZRANGE", k, lo, hi, *opts)
        elif c < 0.52:
            cmd = rnd.choice(["ZRANGEBYSCORE", "ZREVRANGEBYSCORE"])
            extra = ["WITHSCORES"] if rnd.random() < 0.5 else []
            if rnd.random() < 0.3:
                extra += ["LIMIT", str(rnd.randint(0, 10)), str(rnd.randint(-1, 10))]
            add(cmd, k, bound(), bound(), *extra)
        elif c < 0.56:
            add(rnd.choice(["ZRANGEBYLEX", "ZREVRANGEBYLEX", "ZLEXCOUNT"]), "{z}lex", lexb(), lexb())
        elif c < 0.60:
            add("ZREVRANGE", k, rank(), rank(), *(["WITHSCORES"] if rnd.random() < 0.5 else []))
        elif c < 0.68:
            add(rnd.choice(["ZRANK", "ZREVRANK", "ZSCORE"]), k, rnd.choice(members))
        elif c < 0.71:
            add("ZMSCORE", k, *[rnd.choice(members) for _ in range(3)])
        elif c < 0.74:
            add("ZCOUNT", k, bound(), bound())
        elif c < 0.76:
            add("ZCARD", k)
        elif c < 0.79:
            add(rnd.choice(["ZPOPMIN", "ZPOPMAX"]), k, *([str(rnd.randint(0, 5))] if rnd.random() < 0.6 else []))
        elif c < 0.81:
            add("ZREMRANGEBYRANK", k, rank(), rank())
        elif c < 0.83:
            add("ZREMRANGEBYSCORE", k, bound(), bound())
        elif c < 0.84:
            add("ZREMRANGEBYLEX", "{z}lex", lexb(), lexb())
        elif c < 0.89:
            op = rnd.choice(["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"])
            srcs = rnd.sample(zkeys, rnd.randint(1, 3))
            extra = []
            if op != "ZDIFFSTORE" and rnd.random() < 0.5:
                # Positive weights: a negative one times a score of 0 is -0, which
                # Redis keeps only in its big encoding (shoal keeps 0 as 0, as
                # Redis's small encoding does).
                extra = ["WEIGHTS", *[str(rnd.choice([1, 2, 3])) for _ in srcs]]
            if op != "ZDIFFSTORE" and rnd.random() < 0.5:
                extra += ["AGGREGATE", rnd.choice(["SUM", "MIN", "MAX"])]
            add(op, rnd.choice(zkeys + ["{z}d"]), str(len(srcs)), *srcs, *extra)
        elif c < 0.92:
            srcs = rnd.sample(zkeys, rnd.randint(1, 3))
            add(rnd.choice(["ZUNION", "ZINTER", "ZDIFF"]), str(len(srcs)), *srcs, "WITHSCORES")
        elif c < 0.94:
            add("ZINTERCARD", "2", *rnd.sample(zkeys, 2))
        elif c < 0.96:
            add("ZRANGESTORE", "{z}d", k, rank(), rank())
        else:
            add("ZMPOP", "2", *rnd.sample(zkeys, 2), rnd.choice(["MIN", "MAX"]), "COUNT", str(rnd.randint(1, 4)))
    return Script(Path(f"random-zset-{seed}"), steps)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_random_sorted_sets(seed, diff_servers):
    ref, tgt = diff_servers
    with RespConn(ref.host, ref.port) as c:
        c.call(b"FLUSHALL")
    with RespConn(tgt.host, tgt.port) as c:
        c.call(b"FLUSHALL")
    script = _random_collection_script(seed)
    mismatches = run_script(script, ref.addr, tgt.addr, [])
    tgt.check_alive(f" while running seed {seed}")
    if mismatches:
        pytest.fail(f"{len(mismatches)} mismatching replies (seed {seed}):\n" + "\n".join(mismatches[:20]),
                    pytrace=False)


def _run_random_script(script, seed, diff_servers):
    """Runs a generated script on both servers from empty; fails on any mismatch."""
    ref, tgt = diff_servers
    for s in (ref, tgt):
        with RespConn(s.host, s.port) as c:
            c.call(b"FLUSHALL")
    mismatches = run_script(script, ref.addr, tgt.addr, [])
    tgt.check_alive(f" while running seed {seed}")
    if mismatches:
        pytest.fail(f"{len(mismatches)} mismatching replies (seed {seed}):\n" + "\n".join(m[:600] for m in mismatches[:10]),
                    pytrace=False)


def _random_hll_script(seed: int, n: int = 300) -> "Script":
    """PFADD of random elements (some adds change nothing), PFMERGE of
    random sources (sparse runs split and merged, sparse into dense), GET of
    the bytes and PFCOUNT, on both servers."""
    import random
    from difflib_resp import Script, Step
    rnd = random.Random(seed)
    keys = ["{p}1", "{p}2", "{p}3", "{p}4"]
    steps = []

    def add(*words):
        steps.append(Step(len(steps) + 1, " ".join(words), "", [w.encode() for w in words], []))

    for _ in range(n):
        c = rnd.random()
        k = rnd.choice(keys)
        if c < 0.55:
            pool = rnd.choice([20, 500, 50_000])  # repeats, then many distinct
            add("PFADD", k, *[f"x{rnd.randrange(pool)}" for _ in range(rnd.randint(1, 40))])
        elif c < 0.65:
            add("PFMERGE", k, *rnd.sample(keys, rnd.randint(1, 3)))
        elif c < 0.85:
            add("GET", k)
        elif c < 0.95:
            add("PFCOUNT", k)
        else:
            add("PFCOUNT", *rnd.sample(keys, rnd.randint(2, 4)))
    return Script(Path(f"random-hll-{seed}"), steps)


@pytest.mark.parametrize("seed", [1, 2])
def test_differential_random_hyperloglogs(seed, diff_servers):
    _run_random_script(_random_hll_script(seed), seed, diff_servers)


def _dump_fixtures():
    """(key, commands that make it) for every type and Redis encoding."""
    big_text = "abc" * 200  # LZF-compressed in a redis-server DUMP
    return [
        ("{d}s1", [["SET", "{d}s1", "hello"]]),
        ("{d}s2", [["SET", "{d}s2", "12345"]]),  # an integer encoding
        ("{d}s3", [["SET", "{d}s3", "-7"]]),
        ("{d}s4", [["SET", "{d}s4", big_text]]),
        ("{d}s5", [["SET", "{d}s5", "\x00\xff binary \r\n"]]),
        ("{d}s6", [["SET", "{d}s6", ""]]),
        ("{d}h1", [["HSET", "{d}h1", "a", "1", "b", "two", "c", "-300000"]]),  # listpack
        ("{d}h2", [["HSET", "{d}h2", *[x for i in range(200) for x in (f"f{i}", f"v{i}")]]]),  # hashtable
        ("{d}l1", [["RPUSH", "{d}l1", "a", "1", "-2", "70000", "x" * 100, "5000000000"]]),  # quicklist listpacks
        ("{d}l2", [["RPUSH", "{d}l2", *[f"e{i}" for i in range(1000)]]]),
        ("{d}l3", [["RPUSH", "{d}l3", *[f"element{i:05d}" for i in range(3000)]]]),  # many quicklist nodes
        ("{d}l4", [["RPUSH", "{d}l4", "a", "y" * 16378, "b", "z" * 70000]]),  # listpack entries of 16383 bytes and more
        ("{d}t1", [["SADD", "{d}t1", "1", "2", "-3", "100000"]]),  # intset
        ("{d}t2", [["SADD", "{d}t2", "a", "b", "c"]]),  # hashtable
        ("{d}t3", [["SADD", "{d}t3", *[str(i * 7) for i in range(600)]]]),
        ("{d}z1", [["ZADD", "{d}z1", "1", "a", "2.5", "b", "-3", "c", "inf", "d", "-inf", "e"]]),  # listpack
        ("{d}z2", [["ZADD", "{d}z2", *[x for i in range(200) for x in (str(i / 3), f"m{i}")]]]),  # skiplist
    ]


def _read_back(conn, key):
    t = conn.execute("TYPE", key)
    if t == "string":
        return t, conn.execute("GET", key)
    if t == "hash":
        return t, sorted(zip(*[iter(conn.execute("HGETALL", key))] * 2))
    if t == "list":
        return t, conn.execute("LRANGE", key, 0, -1)
    if t == "set":
        return t, sorted(conn.execute("SMEMBERS", key))
    if t == "zset":
        return t, conn.execute("ZRANGE", key, 0, -1, "WITHSCORES")
    return t, None


def test_dump_restore_both_ways(diff_servers):
    """A DUMP from redis-server RESTOREs on shoal, and a DUMP from shoal
    RESTOREs on redis-server, with the same contents, for every type and
    every encoding redis-server 7.0 writes (integer and LZF strings,
    listpacks, intsets, quicklists, plain types); TTL, REPLACE, ABSTTL and
    refusals as Redis gives them."""
    ref, tgt = diff_servers
    with RespConn(ref.host, ref.port) as r, RespConn(tgt.host, tgt.port) as s:
        for c in (r, s):
            c.call(b"FLUSHALL")
        for key, cmds in _dump_fixtures():
            for cmd in cmds:
                r.execute(*cmd)
                s.execute(*cmd)
            want = _read_back(r, key)
            assert _read_back(s, key) == want, key
            from_redis = r.execute("DUMP", key)
            from_shoal = s.execute("DUMP", key)
            assert isinstance(from_redis, bytes) and isinstance(from_shoal, bytes)
            # redis-server's payload restores on shoal ...
            assert s.execute("RESTORE", key + "r", 0, from_redis) == "OK", key
            assert _read_back(s, key + "r") == want, key
            # ... and shoal's on redis-server
            assert r.execute("RESTORE", key + "s", 0, from_shoal) == "OK", key
            assert _read_back(r, key + "s") == want, key
            # and shoal's on shoal
            assert s.execute("RESTORE", key + "x", 0, from_shoal) == "OK", key
            assert _read_back(s, key + "x") == want, key
        payload = s.execute("DUMP", "{d}s1")
        for c in (r, s):
            assert c.execute("RESTORE", "{d}s1", 0, payload) == "BUSYKEY Target key name already exists."
            assert c.execute("RESTORE", "{d}s1", 5000, payload, "REPLACE") == "OK"
            assert 0 < c.execute("PTTL", "{d}s1") <= 5000
            assert c.execute("RESTORE", "{d}gone", 1000, payload, "ABSTTL") == "OK"  # long past: not made
            assert c.execute("EXISTS", "{d}gone") == 0
            bad = payload[:-1] + bytes([payload[-1] ^ 1])
            assert c.execute("RESTORE", "{d}bad", 0, bad) == "ERR DUMP payload version or checksum are wrong"
            assert c.execute("RESTORE", "{d}bad", -1, payload) == "ERR Invalid TTL value, must be >= 0"
            assert c.execute("RESTORE", "{d}bad", 0, payload, "FREQ", 300) == \
                "ERR Invalid FREQ value, must be >= 0 and <= 255"
            assert c.execute("RESTORE", "{d}bad", 0, payload, "BOGUS") == "ERR syntax error"
            assert c.execute("DUMP", "{d}none") is None


def _random_hash_set_list_script(seed: int, n: int = 500) -> "Script":
    """Random commands on hashes, sets and lists (and on each other's keys:
    WRONGTYPE exactly where Redis gives it); replies whose order Redis does
    not define are compared as multisets, random picks are left out."""
    import random
    from difflib_resp import Script, Step
    rnd = random.Random(seed)
    hashes, sets, lists = ["{r}h1", "{r}h2"], ["{r}s1", "{r}s2", "{r}s3"], ["{r}l1", "{r}l2"]
    keys = hashes + sets + lists + ["{r}none"]
    fields = [f"f{i}" for i in range(12)] + ["", "x y"]
    members = [str(i) for i in range(10)] + ["a", "b", "c", "", "-1"]
    steps = []

    def add(*words, directive=""):
        steps.append(Step(len(steps) + 1, " ".join(words), directive, [w.encode() for w in words], []))

    def num():
        return str(rnd.choice([0, 1, 2, -1, -2, 3, 10, -10, 100]))

    for i in range(n):
        if i == n // 2:
            steps.append(Step(len(steps) + 1, "HELLO 3", "fields", [b"HELLO", b"3"], [b"server", b"proto"]))
        c = rnd.random()
        k = rnd.choice(keys) if rnd.random() < 0.15 else None  # now and then the wrong type
        if c < 0.30:
            h = k or rnd.choice(hashes)
            op = rnd.choice(["HSET", "HSET", "HDEL", "HGET", "HMGET", "HLEN", "HEXISTS", "HINCRBY", "HSTRLEN",
                             "HSETNX", "HGETALL", "HKEYS", "HVALS"])
            f = rnd.choice(fields)
            if op == "HSET":
                add(op, h, *[x for _ in range(rnd.randint(1, 3)) for x in (rnd.choice(fields), rnd.choice(members))])
            elif op in ("HDEL", "HMGET"):
                add(op, h, *rnd.sample(fields, rnd.randint(1, 3)))
            elif op in ("HGET", "HEXISTS", "HSTRLEN"):
                add(op, h, f)
            elif op == "HINCRBY":
                add(op, h, f, num())
            elif op == "HSETNX":
                add(op, h, f, rnd.choice(members))
            elif op == "HLEN":
                add(op, h)
            else:
                add(op, h, directive="sorted")
        elif c < 0.60:
            s = k or rnd.choice(sets)
            op = rnd.choice(["SADD", "SADD", "SREM", "SISMEMBER", "SMISMEMBER", "SCARD", "SMEMBERS", "SINTER",
                             "SUNION", "SDIFF", "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "SMOVE", "SINTERCARD"])
            if op in ("SADD", "SREM"):
                add(op, s, *rnd.sample(members, rnd.randint(1, 4)))
            elif op == "SISMEMBER":
                add(op, s, rnd.choice(members))
            elif op == "SMISMEMBER":
                add(op, s, *rnd.sample(members, 3))
            elif op in ("SCARD",):
                add(op, s)
            elif op == "SMEMBERS":
                add(op, s, directive="sorted")
            elif op in ("SINTER", "SUNION", "SDIFF"):
                add(op, s, *rnd.sample(sets, rnd.randint(1, 3)), directive="sorted")
            elif op.endswith("STORE"):
                add(op, rnd.choice(sets), s, *rnd.sample(sets, rnd.randint(0, 2)))
            elif op == "SMOVE":
                add(op, s, rnd.choice(sets), rnd.choice(members))
            else:
                add(op, "2", s, rnd.choice(sets), *(["LIMIT", str(rnd.randint(0, 3))] if rnd.random() < 0.5 else []))
        elif c < 0.92:
            lst = k or rnd.choice(lists)
            op = rnd.choice(["LPUSH", "RPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "LINDEX", "LSET", "LINSERT",
                             "LREM", "LTRIM", "LPOS", "LMOVE", "LMPOP", "LLEN", "LPUSHX", "RPUSHX"])
            m = rnd.choice(members)
            if op in ("LPUSH", "RPUSH", "LPUSHX", "RPUSHX"):
                add(op, lst, *[rnd.choice(members) for _ in range(rnd.randint(1, 4))])
            elif op in ("LPOP", "RPOP"):
                add(op, lst, *([str(rnd.randint(0, 3))] if rnd.random() < 0.5 else []))
            elif op == "LRANGE":
                add(op, lst, num(), num())
            elif op == "LINDEX":
                add(op, lst, num())
            elif op == "LSET":
                add(op, lst, num(), m)
            elif op == "LINSERT":
                add(op, lst, rnd.choice(["BEFORE", "AFTER"]), rnd.choice(members), m)
            elif op == "LREM":
                add(op, lst, num(), m)
            elif op == "LTRIM":
                add(op, lst, num(), num())
            elif op == "LPOS":
                add(op, lst, m, *(["RANK", rnd.choice(["1", "-1", "2"])] if rnd.random() < 0.5 else []),
                    *(["COUNT", str(rnd.randint(0, 3))] if rnd.random() < 0.5 else []))
            elif op == "LMOVE":
                add(op, lst, rnd.choice(lists), rnd.choice(["LEFT", "RIGHT"]), rnd.choice(["LEFT", "RIGHT"]))
            elif op == "LMPOP":
                add(op, "2", lst, rnd.choice(lists), rnd.choice(["LEFT", "RIGHT"]), "COUNT", str(rnd.randint(1, 3)))
            else:
                add(op, lst)
        else:
            op = rnd.choice(["TYPE", "EXISTS", "DEL", "COPY", "RENAME"])
            a = rnd.choice(keys)
            if op in ("TYPE", "EXISTS", "DEL"):
                if op != "DEL" or rnd.random() < 0.3:
                    add(op, a)
            elif op == "COPY":
                add(op, a, rnd.choice(keys), *(["REPLACE"] if rnd.random() < 0.5 else []))
            else:
                add(op, a, rnd.choice(keys))
    return Script(Path(f"random-hsl-{seed}"), steps)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_random_hashes_sets_lists(seed, diff_servers):
    _run_random_script(_random_hash_set_list_script(seed), seed, diff_servers)


def _random_bitmap_string_script(seed: int, n: int = 500) -> "Script":
    """Random bitmap commands (SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD
    BITFIELD_RO) and string commands (SET APPEND SETRANGE GETRANGE STRLEN GET
    DEL) on the same few keys, bad arguments now and then, and a list key
    for WRONGTYPE (BITOP may overwrite it with a string). Keys share {b}
    (BITOP is multi-key); offsets stay small but for a few of 2**16..2**20
    bits, so no value grows past 128 KiB."""
    import random
    from difflib_resp import Script, Step
    rnd = random.Random(seed)
    keys = ["{b}1", "{b}2", "{b}3", "{b}4"]
    lst, none = "{b}list", "{b}none"
    steps = []

    def show(w):
        if isinstance(w, str):
            return w or '""'
        return '"' + "".join(chr(c) if 32 <= c < 127 and c not in b'"\\' else f"\\x{c:02x}" for c in w) + '"'

    def add(*words):
        steps.append(Step(len(steps) + 1, " ".join(show(w) for w in words), "",
                          [w if isinstance(w, bytes) else w.encode() for w in words], []))

    def key():
        r = rnd.random()
        return none if r < 0.08 else lst if r < 0.14 else rnd.choice(keys)

    def value():
        r = rnd.random()
        if r < 0.35:
            return bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 12)))
        if r < 0.5:
            return b"\xff" * rnd.randint(1, 5)  # BITPOS 0 without an end: the bit after the string
        if r < 0.6:
            return b"\x00" * rnd.randint(1, 5)
        if r < 0.7:
            return b""
        if r < 0.85:
            return str(rnd.choice([0, 7, 255, -1, 12345, 2 ** 63 - 1])).encode()  # integer encodings
        return rnd.choice([b"foobar", b"a", b"\x80", b"\x01\x00\x80"])

    def bit_offset():
        r = rnd.random()
        if r < 0.8:
            return str(rnd.randint(0, 300))
        if r < 0.9:
            return str(rnd.choice([2 ** 20, 2 ** 16 + rnd.randint(0, 15), 1000 + rnd.randint(0, 100)]))
        return rnd.choice(["-1", "x", "1.5", "", "4294967296", "99999999999999999999", "+3"])

    def index(bits=False):
        r = rnd.random()
        if r < 0.85:
            return str(rnd.randint(-350, 350) if bits else rnd.randint(-45, 45))
        if r < 0.95:
            return str(rnd.choice([0, -1, 10 ** 6, -(10 ** 6), 2 ** 63 - 1, -(2 ** 63)]))
        return rnd.choice(["a", "1.5", ""])

    def unit():
        r = rnd.random()
        return [] if r < 0.4 else ["BYTE"] if r < 0.55 else ["BIT"] if r < 0.85 else \
            [rnd.choice(["bit", "byte", "WORD"])]

    def bf_type(signed=None):
        r = rnd.random()
        if r < 0.02:
            return rnd.choice(["u64", "i65", "i0", "u0", "x8", "I8", "u"])
        if signed is None:
            signed = rnd.random() < 0.5
        hi = 64 if signed else 63
        w = rnd.choice([1, 2, 3, 4, 5, 7, 8, 8, 8, 13, 16, 31, 32, 33, 63, hi])
        return ("i" if signed else "u") + str(min(w, hi))

    def bf_offset():
        r = rnd.random()
        if r < 0.62:
            return str(rnd.randint(0, 200))
        if r < 0.95:
            return "#" + str(rnd.randint(0, 30))
        if r < 0.98:
            return rnd.choice([str(2 ** 20 - 8), "#" + str(2 ** 14)])
        return rnd.choice(["-1", "#-1", "x", "#", "4294967296"])

    def bf_value(t):
        w = int(t[1:]) if t[1:].isdigit() and t[0] in "iu" and 0 < int(t[1:]) <= 64 else 8  # else: a bad type
        r = rnd.random()
        if r < 0.4:
            return str(rnd.randint(-(2 ** (w - 1)), 2 ** (w - 1) - 1) if t[0] == "i" else rnd.randint(0, 2 ** w - 1))
        if r < 0.7:
            return str(rnd.choice([-1, 1, 0, 2 ** w, -(2 ** w), 2 ** (w - 1), -(2 ** (w - 1)) - 1, 100, -100]))
        if r < 0.97:
            return str(rnd.choice([2 ** 63 - 1, -(2 ** 63), 2 ** 62, -(2 ** 62), 12345678901]))
        return rnd.choice(["x", "1.5", str(2 ** 64), ""])

    def bitfield(read_only=False):
        ops = []
        for _ in range(rnd.randint(1, 4)):
            r = rnd.random()
            if read_only:  # SET and INCRBY are refused there
                sub = "GET" if r < 0.8 else "OVERFLOW" if r < 0.9 else "SET" if r < 0.95 else "INCRBY"
            else:
                sub = "GET" if r < 0.35 else "SET" if r < 0.6 else "INCRBY" if r < 0.85 else \
                    "OVERFLOW" if r < 0.98 else "bad"
            t = bf_type()
            if sub == "GET":
                ops += ["GET", t, bf_offset()]
            elif sub == "OVERFLOW":
                ops += ["OVERFLOW", rnd.choice(["WRAP", "SAT", "FAIL", "wrap", "sat", "fail"])]
            elif sub == "bad":
                ops += rnd.choice([["OVERFLOW", "bad"], ["BOGUS", "u8", "0"], ["GET", "u8"], ["SET", "u8", "0"]])
            else:
                ops += [sub, t, bf_offset(), bf_value(t)]
        return ops

    for i in range(n):
        if i == n // 2:
            steps.append(Step(len(steps) + 1, "HELLO 3", "fields", [b"HELLO", b"3"], [b"server", b"proto"]))
        k = key()
        c = rnd.random()
        if c < 0.16:
            v = rnd.choice(["0", "1"]) if rnd.random() < 0.93 else rnd.choice(["2", "-1", "x", ""])
            add("SETBIT", k, bit_offset(), v)
        elif c < 0.23:
            add("GETBIT", k, bit_offset())
        elif c < 0.32:
            r = rnd.random()
            if r < 0.2:
                add("BITCOUNT", k)
            elif r < 0.96:
                u = unit()
                add("BITCOUNT", k, index("BIT" in u), index("BIT" in u), *u)
            else:
                add("BITCOUNT", k, *rnd.choice([["0"], ["0", "1", "BIT", "x"]]))
        elif c < 0.42:
            b = rnd.choice(["0", "1"]) if rnd.random() < 0.95 else rnd.choice(["2", "-1", "x"])
            r = rnd.random()
            if r < 0.2:
                add("BITPOS", k, b)
            elif r < 0.45:
                add("BITPOS", k, b, index())  # no end: BITPOS 0 may answer the bit just past the string
            elif r < 0.95:
                u = unit()
                add("BITPOS", k, b, index("BIT" in u), index("BIT" in u), *u)
            else:
                add("BITPOS", k, b, *rnd.choice([["0", "BIT"], ["0", "1", "BIT", "x"]]))
        elif c < 0.50:
            op = rnd.choice(["AND", "OR", "XOR", "NOT", "and", "xor"]) if rnd.random() < 0.97 else "NAND"
            nsrc = 1 if op == "NOT" and rnd.random() < 0.9 else rnd.randint(1, 4)
            srcs = [rnd.choice(keys + [none, none] + ([lst] if rnd.random() < 0.1 else [])) for _ in range(nsrc)]
            add("BITOP", op, key(), *srcs)
        elif c < 0.60:
            add("BITFIELD", k, *bitfield())
        elif c < 0.64:
            add("BITFIELD_RO", k, *bitfield(read_only=True))
        elif c < 0.72:
            add("SET", rnd.choice(keys) if rnd.random() < 0.9 else k, value())
        elif c < 0.76:
            add("APPEND", k, value())
        elif c < 0.82:
            r = rnd.random()
            off = str(rnd.randint(0, 40)) if r < 0.85 else rnd.choice(["0", "-1", str(2 ** 17), "536870912", "x"])
            add("SETRANGE", k if rnd.random() < 0.85 else none, off, value())
        elif c < 0.87:
            add("GETRANGE", k, index(), index())
        elif c < 0.90:
            add("STRLEN", k)
        elif c < 0.95:
            add("GET", k)
        elif c < 0.98:
            add("DEL", *rnd.sample(keys + [lst], rnd.randint(1, 2)))
        else:
            add("LPUSH", lst, "x")
    return Script(Path(f"random-bitmap-{seed}"), steps)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_random_bitmaps_and_strings(seed, diff_servers):
    _run_random_script(_random_bitmap_string_script(seed), seed, diff_servers)


def _random_transaction_script(seed: int, n: int = 300, outcomes: "list | None" = None) -> "Script":
    """Random MULTI ... EXEC / DISCARD blocks of string, counter, hash and
    list commands (errors at run time land inside EXEC's array, errors while
    queuing make EXEC answer EXECABORT), nested MULTI, WATCH inside MULTI,
    EXEC and DISCARD without MULTI, and WATCH / UNWATCH of keys this
    connection then changes (or not) before EXEC. All keys share {t}.

    A model of the keys keeps the script off shoal's documented WATCH
    difference (compare-by-value): between WATCH and MULTI no write may leave
    a watched key, that Redis would count as modified, looking as it did at
    WATCH, that is a string with the same value and TTL or a key absent at
    WATCH and absent again (collections carry a version that every element
    write raises, so only their TTL and their absence can come back). With
    `outcomes`, (step number, "exec" | "null" | "execabort") of every EXEC
    inside MULTI is appended, as the model predicts it."""
    import copy
    import random
    from difflib_resp import Script, Step
    rnd = random.Random(seed)
    strs, counters, hashes, lists = ["{t}a", "{t}b"], ["{t}n"], ["{t}h"], ["{t}l"]
    keys = strs + counters + hashes + lists + ["{t}x"]
    values = ["1", "2", "10", "-5", "0", "abc", "", "x y", "9223372036854775806", "007", "1.5"]
    fields = ["f1", "f2", "f3"]
    i64 = (-(2 ** 63), 2 ** 63 - 1)
    steps = []
    state = {}  # key -> {"t": "s" | "h" | "l", "v": str | dict | list, "x": expiry ms or None, "ver": int}
    version = [0]

    def add(*words):
        steps.append(Step(len(steps) + 1, " ".join(w or '""' for w in words), "", [w.encode() for w in words], []))

    def as_int(s):  # Redis's string2ll
        if s == "0":
            return 0
        d = s[1:] if s[:1] == "-" else s
        if not d.isascii() or not d.isdigit() or d[0] == "0" or len(d) > 19:
            return None
        v = -int(d) if s[:1] == "-" else int(d)
        return v if i64[0] <= v <= i64[1] else None

    def fingerprint(st, k):
        e = st.get(k)
        if e is None:
            return None
        return ("s", e["v"], e["x"]) if e["t"] == "s" else ("c", e["ver"], e["x"])

    def collection(st, k, t):
        """The key's collection (of type t: the caller checked), made if absent."""
        if k not in st:
            version[0] += 1
            st[k] = {"t": t, "v": {} if t == "h" else [], "x": None, "ver": version[0]}
        return st[k]

    def touched(e):
        version[0] += 1
        e["ver"] = version[0]

    def apply(st, w):
        """Runs command w on model st as Redis does; returns the keys Redis
        signals as modified (what WATCH sees)."""
        op, k = w[0].upper(), (w[1] if len(w) > 1 else None)
        e = st.get(k)
        if op in ("SET", "SETNX", "GETSET", "MSET"):
            pairs = list(zip(w[1::2], w[2::2])) if op == "MSET" else [(k, w[2])]
            opts = [o.upper() for o in w[3:]] if op == "SET" else []
            if "EX" in opts or (op == "GETSET" or "GET" in opts) and e is not None and e["t"] != "s":
                return set()  # EX with a bad number / WRONGTYPE
            if ("NX" in opts or op == "SETNX") and e is not None or "XX" in opts and e is None:
                return set()
            for kk, v in pairs:
                old = st.get(kk)
                x = int(opts[opts.index("PXAT") + 1]) if "PXAT" in opts else \
                    (old["x"] if old and "KEEPTTL" in opts else None)
                st[kk] = {"t": "s", "v": v, "x": x, "ver": 0}
            return {kk for kk, _ in pairs}
        if op in ("INCR", "DECR", "INCRBY", "DECRBY"):
            by = {"INCR": 1, "DECR": -1}.get(op)
            if by is None:
                by = as_int(w[2])
                if by is None:
                    return set()
                by = -by if op == "DECRBY" else by
            if e is not None and e["t"] != "s":
                return set()
            cur = as_int(e["v"]) if e else 0
            if cur is None or not i64[0] <= cur + by <= i64[1]:
                return set()
            st[k] = {"t": "s", "v": str(cur + by), "x": e["x"] if e else None, "ver": 0}
            return {k}
        if op == "APPEND":
            if e is not None and e["t"] != "s":
                return set()
            st[k] = {"t": "s", "v": (e["v"] if e else "") + w[2], "x": e["x"] if e else None, "ver": 0}
            return {k}
        if op == "DEL":
            gone = {kk for kk in w[1:] if kk in st}
            for kk in gone:
                del st[kk]
            return gone
        if op == "EXPIREAT":
            if e is None:
                return set()
            e["x"] = int(w[2]) * 1000
            return {k}
        if op == "PERSIST":
            if e is None or e["x"] is None:
                return set()
            e["x"] = None
            return {k}
        if op == "HSET":
            if len(w) % 2 or (e is not None and e["t"] != "h"):
                return set()
            h = collection(st, k, "h")
            h["v"].update(zip(w[2::2], w[3::2]))
            touched(h)
            return {k}
        if op == "HDEL":
            if e is None or e["t"] != "h" or not any(f in e["v"] for f in w[2:]):
                return set()
            for f in w[2:]:
                e["v"].pop(f, None)
            touched(e)
            if not e["v"]:
                del st[k]
            return {k}
        if op == "HINCRBY":
            by = as_int(w[3])
            if by is None or e is not None and e["t"] != "h":
                return set()
            cur = as_int(e["v"].get(w[2], "0")) if e else 0
            if cur is None or not i64[0] <= cur + by <= i64[1]:
                return set()
            h = collection(st, k, "h")
            h["v"][w[2]] = str(cur + by)
            touched(h)
            return {k}
        if op in ("RPUSH", "LPUSH"):
            if e is not None and e["t"] != "l":
                return set()
            lst = collection(st, k, "l")
            lst["v"] = lst["v"] + w[2:] if op == "RPUSH" else list(reversed(w[2:])) + lst["v"]
            touched(lst)
            return {k}
        if op in ("LPOP", "RPOP"):
            count = int(w[2]) if len(w) > 2 else 1
            if e is None or e["t"] != "l" or count == 0:
                return set()
            e["v"] = e["v"][count:] if op == "LPOP" else e["v"][:max(0, len(e["v"]) - count)]
            touched(e)
            if not e["v"]:
                del st[k]
            return {k}
        if op == "LSET":
            i = int(w[2])
            if e is None or e["t"] != "l" or not -len(e["v"]) <= i < len(e["v"]):
                return set()
            e["v"][i] = w[3]
            touched(e)
            return {k}
        return set()  # reads, PING, ECHO, errors while queuing

    def value():
        return rnd.choice(values) if rnd.random() < 0.7 else f"v{rnd.randrange(1000)}"

    focus = []  # the watched keys, between WATCH and MULTI

    def pick(own):
        if focus and rnd.random() < 0.5:
            return rnd.choice(focus)
        return rnd.choice(keys) if rnd.random() < 0.15 else rnd.choice(own)  # now and then the wrong type

    def command():
        c = rnd.random()
        if c < 0.30:
            k = pick(strs + counters)
            r = rnd.random()
            if r < 0.35:
                opts = rnd.choice([[], [], ["NX"], ["XX"], ["KEEPTTL"], ["GET"], ["EX", "abc"],
                                   ["PXAT", str(4102444800000 + rnd.randint(0, 3))]])
                return ["SET", k, value(), *opts]
            if r < 0.45:
                return ["APPEND", k, rnd.choice(["!", "1", "", "xy"])]
            if r < 0.6:
                return ["GET", k]
            if r < 0.7:
                return [rnd.choice(["STRLEN", "EXISTS", "TYPE", "EXPIRETIME"]), k]
            if r < 0.8:
                return ["MGET", k, rnd.choice(keys)]
            if r < 0.87:
                return ["MSET", k, value(), rnd.choice(strs + counters), value()]
            if r < 0.93:
                return [rnd.choice(["SETNX", "GETSET"]), k, value()]
            return ["DEL", k, *(rnd.sample(keys, 1) if rnd.random() < 0.3 else [])]
        if c < 0.50:
            k = pick(counters + strs[:1])
            r = rnd.random()
            if r < 0.5:
                return [rnd.choice(["INCR", "DECR"]), k]
            return [rnd.choice(["INCRBY", "DECRBY"]), k,
                    rnd.choice(["1", "5", "-3", "0", "100", "9223372036854775807", "x", "1.5"])]
        if c < 0.68:
            k = pick(hashes)
            r = rnd.random()
            if r < 0.35:
                return ["HSET", k, *[x for _ in range(rnd.randint(1, 2)) for x in (rnd.choice(fields), value())],
                        *(["odd"] if rnd.random() < 0.05 else [])]
            if r < 0.5:
                return ["HDEL", k, *rnd.sample(fields, rnd.randint(1, 2))]
            if r < 0.7:
                return ["HINCRBY", k, rnd.choice(fields), rnd.choice(["1", "-2", "0", "10", "x"])]
            return [rnd.choice(["HGET", "HEXISTS"]), k, rnd.choice(fields)] if r < 0.85 else \
                ["HLEN", k] if r < 0.9 else ["HMGET", k, *fields]
        if c < 0.86:
            k = pick(lists)
            r = rnd.random()
            if r < 0.35:
                return [rnd.choice(["RPUSH", "LPUSH"]), k, *[value() for _ in range(rnd.randint(1, 3))]]
            if r < 0.55:
                return [rnd.choice(["LPOP", "RPOP"]), k, *([str(rnd.randint(0, 3))] if rnd.random() < 0.3 else [])]
            if r < 0.65:
                return ["LSET", k, str(rnd.randint(-3, 3)), value()]
            if r < 0.85:
                return ["LRANGE", k, "0", "-1"]
            return ["LLEN", k] if r < 0.9 else ["LINDEX", k, rnd.choice(["0", "-1", "5"])]
        if c < 0.94:
            k = pick(keys)
            return ["EXPIREAT", k, str(4102444800 + rnd.randint(0, 3))] if rnd.random() < 0.6 else ["PERSIST", k]
        return rnd.choice([["PING"], ["ECHO", value()]])

    def queue_error():
        k = rnd.choice(keys)
        return rnd.choice([["GET"], ["SET", k], ["NOSUCHCMD", k], ["HSET", k, "f"], ["LPUSH", k], ["INCRBY", k]])

    watched = {}    # key -> fingerprint at (first) WATCH
    dirty = set()   # watched keys Redis saw modified since
    in_multi, queued, aborted, left = False, [], False, 0
    hello_at = n // 2
    while len(steps) < n or in_multi:
        if len(steps) >= hello_at and not in_multi and not watched:
            steps.append(Step(len(steps) + 1, "HELLO 3", "fields", [b"HELLO", b"3"], [b"server", b"proto"]))
            hello_at = n * 10
        if in_multi:
            if left > 0:
                left -= 1
                r = rnd.random()
                if r < 0.04:
                    w = queue_error()
                    aborted = True
                elif r < 0.07:
                    w = ["MULTI"]  # an error that does not abort
                elif r < 0.1:
                    w = ["WATCH", rnd.choice(keys)]  # likewise
                else:
                    w = command()
                    queued.append(w)
                add(*w)
                continue
            if rnd.random() < 0.2:
                add("DISCARD")
                result = "discard"
            else:
                add("EXEC")
                result = "execabort" if aborted else "null" if dirty else "exec"
                if result == "exec":
                    for w in queued:
                        apply(state, w)
                if outcomes is not None:
                    outcomes.append((len(steps), result))
            in_multi, watched, dirty = False, {}, set()
            continue
        r = rnd.random()
        if r < 0.18:
            ks = rnd.sample(keys, rnd.randint(1, 3))
            for k in ks:
                watched.setdefault(k, fingerprint(state, k))  # watching again changes nothing
            add("WATCH", *ks)
        elif r < 0.2:
            add("UNWATCH")
            watched, dirty = {}, set()
        elif r < 0.42:
            add("MULTI")
            in_multi, queued, aborted = True, [], False
            left = rnd.choice([0, 1, 2, 3, 4, 5, 6, 8])
        elif r < 0.45:
            add(rnd.choice(["EXEC", "DISCARD"]))  # without MULTI: an error, the watches stay
        else:
            # Between WATCH and MULTI: no write that would bring a watched
            # key Redis counts as modified back to how it was at WATCH.
            focus[:] = watched
            for _ in range(30):
                bad = rnd.random() < 0.03
                w = queue_error() if bad else command()
                trial = copy.deepcopy(state)
                saved = version[0]
                mod = ((set() if bad else apply(trial, w)) & set(watched)) | dirty
                if all(fingerprint(trial, k) != watched[k] for k in mod):
                    break
                version[0] = saved
            else:
                w, trial, mod = ["GET", "{t}a"], state, dirty
            focus.clear()
            state, dirty = trial, mod
            add(*w)
    return Script(Path(f"random-transaction-{seed}"), steps)


@pytest.mark.parametrize("seed", [1, 2])
def test_differential_random_transactions(seed, diff_servers):
    _run_random_script(_random_transaction_script(seed), seed, diff_servers)
