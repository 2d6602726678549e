"""The cluster secret (--cluster-secret-file): nodes prove it to each other,
by challenge and response, before any Raft frame is taken or a SHOAL.JOIN
served. On a real 3-node cluster started with a secret:

* it serves as any cluster does, and INFO says a secret is in use;
* a node started with another secret, or with none, cannot join: both it
  and the member it asked log why, and the cluster keeps its 3 nodes;
* a raw connection to a peer port that sends a forged answer, or frames
  without the handshake, is closed and counted, and the node keeps serving.

Needs SHOAL_BIN (skipped otherwise).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from cluster_util import ClusterNode, parse_info, running_cluster
from conftest import SELFTEST

pytestmark = pytest.mark.skipif(SELFTEST, reason="cluster tests need a real shoal binary")

SECRET = "correct-horse-battery-staple-0123456789"


def _secret_file(path, secret: str) -> str:
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="module")
def secure3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secret3")
    secret = _secret_file(tmp / "cluster.secret", SECRET)
    yield from running_cluster(tmp, n=3, extra_args=["--cluster-secret-file", secret])


def _raft_info(cl, i: int) -> dict:
    return parse_info(cl.nodes[i].call("INFO", "raft"))


def test_a_cluster_with_a_secret_serves(secure3):
    cl = secure3
    for i in range(3):
        assert cl.nodes[i].call("SET", f"sec:{i}", f"v{i}") in (b"OK", "OK")
    for i in range(3):
        for j in range(3):
            assert cl.nodes[j].call("GET", f"sec:{i}") == f"v{i}".encode()
    for i in range(3):
        info = _raft_info(cl, i)
        assert info["cluster_secret"] == "yes", info
        assert int(info["peer_connections_refused"]) == 0, info


def _outsider(cl, index: int, extra: list) -> ClusterNode:
    """A node that tries to join through node 0 with its own secret settings."""
    node = ClusterNode(cl, index, cl.nodes[0].address)

    def argv(n):
        a = ClusterNode._make_argv(n)
        cut = a.index("--cluster-secret-file")
        return a[:cut] + a[cut + 2:] + extra
    node._argv_fn = argv
    node._wait_ready = lambda: None  # it never joins, so never answers as a member
    return node


def _wait_log(node, text: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        try:
            if text in node.log_path.read_text(errors="replace"):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("kind", ["wrong secret", "no secret"])
def test_a_node_without_the_secret_cannot_join(secure3, tmp_path, kind):
    cl = secure3
    if kind == "wrong secret":
        extra = ["--cluster-secret-file", _secret_file(tmp_path / "wrong.secret", "not-the-cluster-secret-at-all")]
        says = "this cluster's secret differs from the joining node's"
        member_says = "its proof of the cluster secret is wrong"
    else:
        extra = []
        says = "this cluster requires the cluster secret"
        member_says = "it did not prove the cluster secret"
    index = 3 if kind == "wrong secret" else 4
    node = _outsider(cl, index, extra)
    node.start()
    try:
        assert _wait_log(node, says), node.log_tail()
        assert _wait_log(cl.nodes[0], member_says), cl.nodes[0].log_tail()
        time.sleep(1.0)
        assert node.alive(), node.log_tail()
        st = cl.admin_status()
        assert len(st.nodes) == 3, st
        assert "joined cluster" not in node.log_path.read_text(errors="replace")
    finally:
        node.stop()
    # The cluster serves on.
    assert cl.nodes[1].call("SET", "sec:after", kind) in (b"OK", "OK")
    assert cl.nodes[2].call("GET", "sec:after") == kind.encode()


def _peer_conn(node) -> socket.socket:
    s = socket.create_connection((node.host, node.peer_port), timeout=5)
    greeting = b""
    for _ in range(100):
        if len(greeting) >= 41:
            break
        chunk = s.recv(41 - len(greeting))
        if not chunk:
            break
        greeting += chunk
    assert greeting[:8] == b"SHOALPG1" and greeting[8] == 1, greeting
    return s


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True


def test_frames_without_the_proof_are_refused(secure3):
    cl = secure3
    n = cl.nodes[0]
    before = int(_raft_info(cl, 0)["peer_connections_refused"])
    # A forged answer to the challenge.
    s = _peer_conn(n)
    s.sendall(b"SHOALPA1" + os.urandom(64))
    assert _closed(s)
    s.close()
    # A frame sent at once, as a node without a secret would: a length and a
    # body in the shape of a PeerFrame (version 1, cluster id, from node).
    raw = n.call("SHOAL.CLUSTERID")
    cid = int(raw.decode() if isinstance(raw, bytes) else raw, 16)
    body = b"\x08\x01" + b"\x10" + _varint(cid) + b"\x18" + _varint(0x1234)
    s = _peer_conn(n)
    s.sendall(struct.pack(">I", len(body)) + body + os.urandom(64))
    assert _closed(s)
    s.close()
    deadline = time.monotonic() + 10
    for _ in range(100):
        if int(_raft_info(cl, 0)["peer_connections_refused"]) >= before + 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert int(_raft_info(cl, 0)["peer_connections_refused"]) >= before + 2
    assert n.call("PING") in (b"PONG", "PONG")
    assert n.call("SET", "sec:still", "1") in (b"OK", "OK")


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_ten_thousand_idle_and_slow_connections_leave_the_cluster_serving(secure3):
    """10k idle connections on node 0's ports (client and peer), some of the
    client ones sending a request a byte at a time (slowloris): the cluster
    keeps serving through every node, the unproved peer connections are cut
    by the handshake's bounds, and nothing is written by any of them."""
    import resource
    cl = secure3
    n = cl.nodes[0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10_000 + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    total = min(10_000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 512)
    assert total >= 5_000, f"the open-file limit ({hard}) allows only {total} connections"
    peer_n = total // 5
    client_n = total - peer_n
    before = int(_raft_info(cl, 0)["peer_connections_refused"])
    keys_before = int(n.call("DBSIZE"))
    socks = []
    try:
        for i in range(client_n):
            socks.append(socket.create_connection((n.host, n.port), timeout=5))
        for i in range(peer_n):
            try:
                socks.append(socket.create_connection((n.host, n.peer_port), timeout=5))
            except OSError:
                pass  # refused under the flood: fine, the point is the node
        slow = socks[:50]
        request = b"*3\r\n$3\r\nSET\r\n$8\r\nslow:key\r\n$1\r\nx\r\n"
        deadline = time.monotonic() + 60
        for k in range(len(request) - 1):  # all but the last byte, a byte at a time
            for s in slow:
                s.sendall(request[k:k + 1])
            time.sleep(0.01)
            # The cluster serves meanwhile, through every node.
            if k % 10 == 0:
                for j in range(3):
                    assert cl.nodes[j].call("SET", f"sec:flood:{k}:{j}", "1", timeout=10) in (b"OK", "OK")
            assert time.monotonic() < deadline
        for j in range(3):
            assert cl.nodes[j].call("GET", "sec:flood:0:0", timeout=10) == b"1"
        assert int(n.call("DBSIZE")) >= keys_before
        assert n.call("EXISTS", "slow:key") == 0  # no slow request completed
        # Unproved peer connections beyond the bounds were refused.
        deadline = time.monotonic() + 10
        for _ in range(100):
            if int(_raft_info(cl, 0)["peer_connections_refused"]) > before or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert int(_raft_info(cl, 0)["peer_connections_refused"]) > before
        info = parse_info(n.call("CLUSTER", "INFO"))
        assert info["cluster_state"] == "ok", info
    finally:
        for s in socks:
            s.close()
    # Everything still works once they are gone, and the nodes are alive.
    cl.check_alive()
    assert cl.nodes[1].call("SET", "sec:flood:after", "1") in (b"OK", "OK")
