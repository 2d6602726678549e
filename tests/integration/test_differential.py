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
