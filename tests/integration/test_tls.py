"""TLS (tls-port, tls-cluster), with certificates made here by the openssl
command line tool:

* one node with a tls-port: redis-cli --tls and redis-py with ssl=True read
  and write on it, and see what plain clients wrote on the plain port;
* what cannot prove itself is refused cleanly and writes nothing: a
  plain-text client on the TLS port, a client without a certificate, one
  whose certificate another CA signed; garbage, idle connections and
  handshakes that never finish leave the node serving;
* a cluster of 3 with tls-cluster: a cluster-aware redis-py client over TLS,
  plain clients forwarded between nodes over TLS, the TLS ports announced;
  a node whose certificate another CA signed cannot join, nor can a node
  without TLS, and plain text on a peer port is refused.

Needs SHOAL_BIN and openssl (skipped otherwise).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cluster_util import ClusterNode, parse_info, running_cluster
from conftest import (HOST, REDIS_CLI_BIN, SELFTEST, SHOAL_BIN, ServerPool, free_port, make_shoal)

try:
    import redis
    from redis.cluster import RedisCluster
except ImportError:  # pragma: no cover
    redis = None

pytestmark = [
    pytest.mark.skipif(SELFTEST, reason="TLS tests need a real shoal binary"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> tuple:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(crt),
             "-days", "2", "-subj", f"/CN={name}")
    return key, crt


def _signed(d: Path, name: str, ca: tuple) -> tuple:
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    _openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-out", str(crt), "-days", "2")
    return key, crt


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ca = _ca(d, "shoal-test-ca")
    other_ca = _ca(d, "some-other-ca")
    node = _signed(d, "node", ca)
    client = _signed(d, "client", ca)
    rogue = _signed(d, "rogue", other_ca)
    return {"ca": str(ca[1]), "node_key": str(node[0]), "node_crt": str(node[1]),
            "client_key": str(client[0]), "client_crt": str(client[1]),
            "rogue_key": str(rogue[0]), "rogue_crt": str(rogue[1]), "dir": d}


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory, certs):
    tmp = tmp_path_factory.mktemp("tls1")
    tls_port = socket.socket()
    tls_port.bind((HOST, 0))
    port = tls_port.getsockname()[1]
    tls_port.close()
    conf = tmp / "tls.toml"
    conf.write_text(f'tls-port = {port}\ntls-cert-file = "{certs["node_crt"]}"\n'
                    f'tls-key-file = "{certs["node_key"]}"\ntls-ca-cert-file = "{certs["ca"]}"\n')
    pool = ServerPool()
    try:
        srv = pool.add(make_shoal(tmp, "shoal-tls", durability="none", config=conf)).start()
        srv.tls_port = port
        yield srv
    finally:
        problems = pool.teardown()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _tls_client(certs, port: int, host: str = HOST, cert: str = "client", **kw):
    args = dict(host=host, port=port, ssl=True, ssl_ca_certs=certs["ca"], ssl_cert_reqs="required",
                ssl_check_hostname=False, socket_timeout=10, socket_connect_timeout=5)
    if cert:
        args.update(ssl_certfile=certs[f"{cert}_crt"], ssl_keyfile=certs[f"{cert}_key"])
    args.update(kw)
    return redis.Redis(**args)


def _redis_cli(certs, port: int, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([REDIS_CLI_BIN, "-h", HOST, "-p", str(port), "--tls", "--cacert", certs["ca"],
                           "--cert", certs["client_crt"], "--key", certs["client_key"], *cmd],
                          capture_output=True, timeout=30, text=True)


def _log_has(srv, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if text in srv.log_path.read_text(errors="replace"):
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return False


@pytest.mark.skipif(REDIS_CLI_BIN is None or redis is None, reason="needs redis-cli and python3-redis")
def test_redis_cli_and_redis_py_over_tls(tls_node, certs):
    srv = tls_node
    out = _redis_cli(certs, srv.tls_port, "SET", "tls:cli", "from redis-cli")
    assert out.returncode == 0 and out.stdout.strip() == "OK", out
    out = _redis_cli(certs, srv.tls_port, "GET", "tls:cli")
    assert out.stdout.strip() == "from redis-cli", out
    r = _tls_client(certs, srv.tls_port)
    try:
        assert r.set("tls:py", "from redis-py") is True
        assert r.get("tls:cli") == b"from redis-cli"
        pipe = r.pipeline(transaction=True)
        pipe.incr("tls:n").incr("tls:n").get("tls:n")
        assert pipe.execute() == [1, 2, b"2"]
    finally:
        r.close()
    # The plain port serves the same data.
    with srv.client() as c:
        assert c.execute("GET", "tls:py") == b"from redis-py"
        assert c.execute("CONFIG", "GET", "tls-port") == [b"tls-port", str(srv.tls_port).encode()]


@pytest.mark.skipif(redis is None, reason="needs python3-redis")
def test_a_blocking_pop_over_tls_wakes_and_keeps_the_pipeline(tls_node, certs):
    srv = tls_node
    waiter = _tls_client(certs, srv.tls_port)
    pusher = _tls_client(certs, srv.tls_port)
    got = []
    try:
        t = threading.Thread(target=lambda: got.append(waiter.blpop(["tls:q"], timeout=10)))
        t.start()
        time.sleep(0.5)  # the pop waits (and its client is watched) meanwhile
        assert pusher.rpush("tls:q", "a", "b") == 2
        t.join(15)
        assert not t.is_alive()
        assert got == [(b"tls:q", b"a")]
        # A request pipelined behind a waiting pop is answered after it.
        sock = waiter.connection_pool.get_connection("BLPOP")
        sock.send_packed_command(sock.pack_commands([["BLPOP", "tls:q2", "5"], ["GET", "tls:cli"]]))
        time.sleep(0.5)
        assert pusher.rpush("tls:q2", "z") == 1
        assert sock.read_response() == [b"tls:q2", b"z"]
        assert sock.read_response() == b"from redis-cli"
        waiter.connection_pool.release(sock)
    finally:
        waiter.close()
        pusher.close()


@pytest.mark.skipif(redis is None, reason="needs python3-redis")
def test_a_node_with_no_plain_text_port(tmp_path, certs):
    port, peer_port = (free_port() for _ in range(2))
    log = tmp_path / "tls-only.log"
    argv = [SHOAL_BIN, "server", "--bind", HOST, "--port", "0", "--tls-port", str(port), "--peer-port",
            str(peer_port), "--dir", str(tmp_path / "d"), "--workers", "1", "--durability", "none",
            "--tls-cert-file", certs["node_crt"], "--tls-key-file", certs["node_key"],
            "--tls-ca-cert-file", certs["ca"], "--tls-cluster", "yes"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        r = _tls_client(certs, port)
        deadline = time.monotonic() + 30
        for _ in range(300):
            try:
                if r.set("tls:only", "yes"):
                    break
            except (redis.exceptions.RedisError, OSError):
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert r.get("tls:only") == b"yes"
        assert r.execute_command("CLUSTER", "SLOTS")[0][2][1] == port
        r.close()
        assert "(no plain-text port)" in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, log.read_text()
    # Without tls-cluster, no plain port is refused at start, saying why.
    bad = subprocess.run(argv[:-2], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "needs tls-cluster yes" in bad.stdout + bad.stderr


def _closed_without_reply(s: socket.socket, timeout: float = 5.0) -> bool:
    """True if the other end closes (or resets) without sending a RESP reply."""
    s.settimeout(timeout)
    got = b""
    try:
        for _ in range(100):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return not got.startswith((b"+", b"-", b"$", b":", b"*"))


@pytest.mark.skipif(redis is None, reason="needs python3-redis")
def test_what_cannot_prove_itself_is_refused_and_writes_nothing(tls_node, certs):
    srv = tls_node
    # Plain text on the TLS port: closed, nothing written.
    s = socket.create_connection((HOST, srv.tls_port), timeout=5)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$9\r\ntls:plain\r\n$1\r\nx\r\n")
    assert _closed_without_reply(s)
    s.close()
    assert _log_has(srv, "TLS client"), srv.log_tail()
    # No client certificate (tls-auth-clients yes), or one another CA signed.
    for cert in (None, "rogue"):
        time.sleep(1.1)  # (one refusal logged a second)
        r = _tls_client(certs, srv.tls_port, cert=cert)
        with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError, OSError)):
            r.set("tls:refused", str(cert))
        r.close()
    # The server's certificate must verify too: a client trusting another CA leaves.
    r = _tls_client(certs, srv.tls_port, ssl_ca_certs=certs["dir"] / "some-other-ca.crt")
    with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError, OSError)):
        r.ping()
    r.close()
    with srv.client() as c:
        assert c.execute("EXISTS", "tls:plain") == 0 and c.execute("EXISTS", "tls:refused") == 0
    r = _tls_client(certs, srv.tls_port)
    try:
        assert r.ping() is True
    finally:
        r.close()


@pytest.mark.skipif(redis is None, reason="needs python3-redis")
def test_bad_input_on_the_tls_port_leaves_the_node_serving(tls_node, certs):
    srv = tls_node
    idle = []
    try:
        # Connections that never start (or never finish) a handshake.
        for i in range(200):
            s = socket.create_connection((HOST, srv.tls_port), timeout=5)
            if i % 2:
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
            idle.append(s)
        # Garbage, then a huge length, from a client that did prove itself.
        ctx = ssl.create_default_context(cafile=certs["ca"])
        ctx.check_hostname = False
        ctx.load_cert_chain(certs["client_crt"], certs["client_key"])
        with socket.create_connection((HOST, srv.tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as t:
                t.sendall(b"*99999999999999999999\r\n")
                reply = t.recv(4096)
                assert reply.startswith(b"-ERR"), reply
        r = _tls_client(certs, srv.tls_port)
        try:
            assert r.set("tls:after-garbage", "1") is True
        finally:
            r.close()
        # Unfinished handshakes are cut after 10 s.
        deadline = time.monotonic() + 20
        closed = 0
        for s in idle[:20]:
            if _closed_without_reply(s, timeout=max(0.1, deadline - time.monotonic())):
                closed += 1
        assert closed == 20
    finally:
        for s in idle:
            s.close()
    with srv.client() as c:
        assert c.execute("GET", "tls:after-garbage") == b"1"


# --------------------------------------------------------------------------
# a cluster of 3 with tls-cluster
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls3(tmp_path_factory, certs):
    tmp = tmp_path_factory.mktemp("tls3")
    yield from running_cluster(tmp, n=3, shards=4,
                               tls={"cert": certs["node_crt"], "key": certs["node_key"], "ca": certs["ca"]})


@pytest.mark.skipif(redis is None, reason="needs python3-redis")
def test_a_tls_cluster_serves_cluster_and_plain_clients(tls3, certs):
    cl = tls3
    tls_ports = {n.tls_port for n in cl.nodes}
    slots = cl.nodes[1].call("CLUSTER", "SLOTS")
    announced = {int(entry[2][1]) for entry in slots}
    assert announced <= tls_ports and len(announced) >= 2, slots
    rc = RedisCluster(host=cl.nodes[0].host, port=cl.nodes[0].tls_port, ssl=True, ssl_ca_certs=certs["ca"],
                      ssl_certfile=certs["client_crt"], ssl_keyfile=certs["client_key"],
                      ssl_check_hostname=False, socket_timeout=10)
    try:
        for i in range(200):
            assert rc.set(f"tlsc:{i}", f"v{i}") is True
        for i in range(0, 200, 7):
            assert rc.get(f"tlsc:{i}") == f"v{i}".encode()
    finally:
        rc.close()
    # Plain clients of every node: their requests reach each key's leader
    # over TLS links between the nodes.
    for n in cl.nodes:
        with n.client() as c:
            for i in range(0, 200, 11):
                assert c.execute("GET", f"tlsc:{i}") == f"v{i}".encode()
            assert c.execute("SET", f"tlsc:plain:{n.index}", "p") in (b"OK", "OK")
    for n in cl.nodes:
        info = parse_info(n.call("INFO", "raft"))
        assert int(info["peer_connections_refused"]) == 0, info


def test_shoal_admin_over_tls(tls3, certs):
    cl = tls3
    n = cl.nodes[1]
    argv = [SHOAL_BIN, "admin", "--host", n.host, "--port", str(n.tls_port), "--tls", "--cacert", certs["ca"],
            "--cert", certs["client_crt"], "--key", certs["client_key"], "status"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    assert out.stdout.count("node ") >= 3, out.stdout
    # Without a certificate the node (tls-auth-clients yes) refuses it, said plainly.
    bad = subprocess.run(argv[:-7] + ["--cacert", certs["ca"], "status"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "shoal admin: the node closed the TLS connection" in bad.stderr, bad


def _outsider(cl, index: int, argv_fn) -> ClusterNode:
    node = ClusterNode(cl, index, cl.nodes[0].join_address)
    node._argv_fn = argv_fn
    node._wait_ready = lambda: None  # it never joins, so never answers as a member
    return node


@pytest.mark.parametrize("kind", ["certificate of another CA", "no TLS"])
def test_a_node_that_cannot_prove_itself_cannot_join(tls3, certs, kind):
    cl = tls3

    def argv(n):
        a = ClusterNode._make_argv(n)
        cut = a.index("--tls-port")
        a = a[:cut]  # without the TLS settings
        if kind == "no TLS":
            a[a.index("--join") + 1] = cl.nodes[0].address  # the plain port, as it can only speak plain text
            return a
        return a + ["--tls-port", str(n.tls_port), "--tls-cert-file", certs["rogue_crt"], "--tls-key-file",
                    certs["rogue_key"], "--tls-ca-cert-file", certs["ca"], "--tls-cluster", "yes"]
    node = _outsider(cl, 3 if kind == "no TLS" else 4, argv)
    node.start()
    try:
        if kind == "no TLS":
            assert _log_has(node, "this cluster runs tls-cluster", 20), node.log_tail()
            assert _log_has(cl.nodes[0], "it came without TLS", 10), cl.nodes[0].log_tail()
        else:
            assert _log_has(node, "no answer over TLS", 20), node.log_tail()
            assert _log_has(cl.nodes[0], "TLS client", 10), cl.nodes[0].log_tail()
        time.sleep(1.0)
        assert node.alive(), node.log_tail()
        assert "joined cluster" not in node.log_path.read_text(errors="replace")
        assert len(cl.admin_status().nodes) == 3
    finally:
        node.stop()
    assert cl.nodes[1].call("SET", "tlsc:after", kind) in (b"OK", "OK")
    assert cl.nodes[2].call("GET", "tlsc:after") == kind.encode()


def test_plain_text_on_a_peer_port_is_refused(tls3):
    cl = tls3
    n = cl.nodes[0]
    before = int(parse_info(n.call("INFO", "raft"))["peer_connections_refused"])
    s = socket.create_connection((n.host, n.peer_port), timeout=5)
    s.sendall(b"SHOALPA1" + b"\0" * 64 + b"\0\0\0\x10" + b"x" * 16)
    assert _closed_without_reply(s)
    s.close()
    deadline = time.monotonic() + 10
    for _ in range(100):
        if int(parse_info(n.call("INFO", "raft"))["peer_connections_refused"]) > before:
            break
        assert time.monotonic() < deadline, "the refusal was not counted"
        time.sleep(0.1)
    assert cl.nodes[2].call("SET", "tlsc:peer", "ok") in (b"OK", "OK")


def test_a_killed_tls_peer_is_noticed_at_once(tls3):
    """A TLS connection closed without close_notify (kill -9) reads as the
    peer's end, so its groups elect at once (peers_seen_gone), as in plain text."""
    cl = tls3
    before = int(parse_info(cl.nodes[0].call("INFO", "raft"))["peers_seen_gone"])
    victim = cl.nodes[2]
    cl.kill9(2)
    try:
        deadline = time.monotonic() + 10
        for _ in range(100):
            if int(parse_info(cl.nodes[0].call("INFO", "raft"))["peers_seen_gone"]) > before:
                break
            assert time.monotonic() < deadline, cl.nodes[0].log_tail()
            time.sleep(0.1)
        assert cl.nodes[1].call("SET", "tlsc:killed", "1") in (b"OK", "OK")
    finally:
        cl.restart(2)
    cl.wait_ready()
    assert victim.call("GET", "tlsc:killed") == b"1"


@pytest.mark.skipif(redis is None, reason="needs python3-redis")
def test_ten_thousand_idle_connections_on_tls_ports_leave_the_cluster_serving(tls3, certs):
    """10k connections that never start TLS on node 0's TLS port and its
    (TLS) peer port: the handshake deadlines cut them, the cluster serves TLS
    and plain clients through every node meanwhile, and nothing is written."""
    import resource
    cl = tls3
    n = cl.nodes[0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 10_512:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(10_512, hard), hard))
    total = min(10_000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 512)
    assert total >= 5_000, f"the open-file limit ({hard}) allows only {total} connections"
    peer_n = total // 5
    socks = []
    try:
        for _ in range(total - peer_n):
            socks.append(socket.create_connection((n.host, n.tls_port), timeout=5))
        for _ in range(peer_n):
            try:
                socks.append(socket.create_connection((n.host, n.peer_port), timeout=5))
            except OSError:
                pass  # refused under the flood: fine, the point is the node
        for s in socks[:100]:
            s.sendall(b"\x16\x03\x01")  # a ClientHello that never ends
        for round_ in range(3):
            for m in cl.nodes:
                r = _tls_client(certs, m.tls_port, host=m.host)
                try:
                    assert r.set(f"tls:flood:{round_}:{m.index}", "1") is True
                finally:
                    r.close()
                assert m.call("GET", f"tls:flood:{round_}:{m.index}") == b"1"
        # The server cuts handshakes that never finish (10 s for clients).
        deadline = time.monotonic() + 20
        closed = sum(_closed_without_reply(s, timeout=max(0.1, deadline - time.monotonic())) for s in socks[:100])
        assert closed == 100
    finally:
        for s in socks:
            s.close()
    cl.check_alive()
    assert cl.nodes[1].call("SET", "tls:flood:after", "1") in (b"OK", "OK")
