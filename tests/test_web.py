"""The HTTP server under hostile clients: idle and slow sockets, floods of short connections,
oversized and malformed heads, resets mid-response, arbitrary bytes. It never answers 500, never
stops answering, and afterwards holds no more threads or sockets than before."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.app import Exporter
from exporter.config import parse
from exporter.web import accepts_gzip

from .support.exporters import parse_samples
from .support.process import fetch, free_port, serving


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=0.001", True),
        ("deflate, gzip;q=0.5", True),
        ("deflate", False),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("identity", False),
        ("gzip;q=bogus", False),
        (",,;;=", False),
    ],
)
def test_gzip_follows_the_q_values(header, expected):
    assert accepts_gzip(header) is expected


@pytest.fixture
def served(litellm_dsn):
    with serving(litellm_dsn, request_timeout="1s", max_connections=600) as (exporter, port):
        deadline = time.monotonic() + 20
        while fetch(f"http://127.0.0.1:{port}/ready")[0] != 200:
            assert time.monotonic() < deadline, fetch(f"http://127.0.0.1:{port}/ready")
            time.sleep(0.1)
        yield exporter, port


def test_gzip_is_sent_only_where_the_client_admits_it(served):
    _, port = served
    status, headers, body = fetch(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip;q=0"})
    assert status == 200 and "Content-Encoding" not in headers and b"litellm_exporter_build_info" in body
    status, headers, body = fetch(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    import gzip

    assert b"litellm_exporter_build_info" in gzip.decompress(body)


def test_head_answers_the_headers_without_a_body(served):
    _, port = served
    head = raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split(head)
    assert status == 200 and int(headers["content-length"]) > 100 and body == b""
    assert headers["x-content-type-options"] == "nosniff"


def raw(port: int, data: bytes, *, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """What the server sends back for ``data``, until it closes the connection."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close first (a head it refused)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(match.group(1)), headers, body


def server_sockets(port: int) -> int:
    """Sockets of this process on the exporter's port (the listener and its connections)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


def exporter_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("http"))


def test_hostile_clients_never_stop_the_server_and_leave_nothing_behind(served):
    exporter, port = served
    base = f"http://127.0.0.1:{port}"
    # Every worker thread of the server started (its loop's and its pool's, which stay), so
    # that the counts compare like with like.
    deadline = time.monotonic() + 10
    while exporter_threads() < 1 + exporter._server.workers:
        assert time.monotonic() < deadline, exporter_threads()
        warm = [threading.Thread(target=fetch, args=(f"{base}/status",)) for _ in range(16)]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join()
    threads_before, sockets_before = exporter_threads(), server_sockets(port)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]

    def slow_head() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n":
                    if stop.is_set():
                        return
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                return  # closed at the deadline, as it should be

    def short_connections(paths: list[str]) -> None:
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            status = fetch(f"{base}{rng.choice(paths)}")[0]
            with lock:
                statuses[status] += 1

    def reset_mid_response() -> None:
        while not stop.is_set():
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, with the response still coming

    def bad_heads() -> None:
        heads = [
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
            b"GET /" + b"p" * 70_000 + b" HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
            b"GET /metrics HTTP/9.9\r\n\r\n",
            b"GET\r\n\r\n",
            b"\r\n\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /-/reload HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nabc",
        ]
        while not stop.is_set():
            for head in heads:
                answer = raw(port, head)
                if answer:
                    with lock:
                        statuses[split(answer)[0]] += 1

    workers = [threading.Thread(target=slow_head) for _ in range(20)]
    workers += [threading.Thread(target=short_connections, args=(["/healthz", "/ready", "/status"],)) for _ in range(8)]
    workers += [threading.Thread(target=short_connections, args=(["/metrics", "/", "/nope"],)) for _ in range(4)]
    workers += [threading.Thread(target=reset_mid_response) for _ in range(2)]
    workers += [threading.Thread(target=bad_heads) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(8)
        # Through all of it, a scrape is answered at once.
        started = time.monotonic()
        assert fetch(f"{base}/metrics")[0] == 200
        assert time.monotonic() - started < 2
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=20)
        for sock in idle:
            sock.close()
    assert 500 not in statuses, statuses
    assert statuses[200] > 200, statuses
    assert statuses[400] > 0 or statuses[431] > 0, statuses  # the bad heads were answered, not ignored

    # Everything the clients opened is gone again; the server runs as before.
    deadline = time.monotonic() + 10
    while (exporter_threads(), server_sockets(port), exporter._server.held_connections) != (
        threads_before,
        sockets_before,
        0,
    ):
        assert time.monotonic() < deadline, (exporter_threads(), threads_before, server_sockets(port), sockets_before)
        time.sleep(0.2)
    status, _, body = fetch(f"{base}/metrics")
    assert status == 200
    samples = parse_samples(body.decode())
    assert samples["litellm_exporter_internal_errors_total"][frozenset({("component", "http")})] == 0.0


# Request heads: arbitrary bytes, and heads built from the parts a request has, some broken.
tokens = st.sampled_from(
    [b"GET", b"HEAD", b"POST", b"PUT", b"BREW", b"", b" ", b"/", b"/metrics", b"/status", b"/-/reload", b"/ready",
     b"/%00", b"/%zz", b"//", b"/?a=b&&", b"*", b"http://x/metrics", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2",
     b"\r\n", b"\n", b"\r", b":", b"Host: x", b"Accept: application/openmetrics-text; version=1.0.0",
     b"Accept-Encoding: gzip;q=0", b"Accept-Encoding: *", b"Authorization: Basic !!!", b"Content-Length: 3",
     b"Content-Length: x", b"Transfer-Encoding: chunked", b"Connection: keep-alive", b"\x00", b"\xff\xfe",
     b"\xc3\x28", b"\t"]
)  # fmt: skip
heads = st.one_of(
    st.binary(max_size=600),
    st.lists(tokens, max_size=24).map(b"".join),
    st.tuples(st.sampled_from([b"GET", b"HEAD", b"POST"]), st.binary(max_size=80), st.lists(tokens, max_size=8)).map(
        lambda t: t[0] + b" /" + t[1] + b" HTTP/1.1\r\n" + b"\r\n".join(t[2]) + b"\r\n\r\n"
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=heads)
def test_arbitrary_request_bytes_never_get_a_500_nor_stop_the_server(served, head):
    _, port = served
    answer = raw(port, head)
    if answer:
        assert answer.startswith(b"HTTP/1."), answer[:80]
        assert split(answer)[0] != 500, answer[:300]
    assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("listen", [":{port}", "0.0.0.0:{port}", "[::]:{port}"])
def test_every_interface_means_ipv6_and_ipv4(litellm_dsn, listen):
    port = free_port()
    config = parse({"database": {"dsn": litellm_dsn}, "web": {"listen": listen.format(port=port)}})
    exporter = Exporter(config)
    exporter.start()
    try:
        for host in ("127.0.0.1", "::1"):
            assert split(raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", host=host))[0] == 200, host
    finally:
        exporter.stop()


def test_the_servers_own_answers_to_bad_requests_carry_the_same_headers(served):
    _, port = served
    for head in (b"BREW\x00 / HTTP/1.1\r\n\r\n", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"):
        status, headers, _ = split(raw(port, head))
        assert status == 400
        assert headers["server"].startswith("litellm-exporter/")
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
