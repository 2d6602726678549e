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
