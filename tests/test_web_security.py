"""TLS, basic auth and headers from an exporter-toolkit web config; methods, paths, slow clients."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from exporter.app import Exporter
from exporter.cli import main
from exporter.config import parse

from .support.process import free_port, serving

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def web_config(tmp_path: Path, certificate, *, users: bool = True) -> Path:
    cert, key = certificate
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web-config.yml"
    text = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS12\n"
    if users:
        text += f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    text += "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
    path.write_text(text)
    return path


@pytest.fixture
def secured(tmp_path, certificate, litellm_dsn):
    port = free_port()
    config = parse({"database": {"dsn": litellm_dsn}}).with_overrides(
        listen=f"127.0.0.1:{port}", poll_interval="0.5s", web_config=str(web_config(tmp_path, certificate))
    )
    exporter = Exporter(config)
    exporter.start()
    context = ssl.create_default_context(cafile=str(certificate[0]))
    yield f"https://127.0.0.1:{port}", context
    exporter.stop()


def request(url: str, context, *, user: str | None = None, password: str = PASSWORD, method: str = "GET"):
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, context=context, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_tls_and_basic_auth(secured):
    base, context = secured
    status, headers, _ = request(f"{base}/metrics", context)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="litellm-exporter"'
    assert request(f"{base}/metrics", context, user="prometheus", password="wrong")[0] == 401
    assert request(f"{base}/metrics", context, user="nobody")[0] == 401
    status, headers, body = request(f"{base}/metrics", context, user="prometheus")
    assert status == 200 and "litellm_exporter_build_info" in body
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    # Orchestrators' liveness probe needs no credentials; it tells nothing.
    assert request(f"{base}/healthz", context)[0] == 200
    assert request(f"{base}/ready", context)[0] == 401
    assert request(f"{base}/nope", context, user="prometheus")[0] == 404
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = request(f"{base}/metrics", context, user="prometheus", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    # Plain HTTP on the TLS port gets nothing.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(base.replace("https", "http") + "/healthz", timeout=5).read()


def test_slow_clients_do_not_starve_scrapes_or_pollers(secured):
    base, context = secured
    host, port = base.removeprefix("https://").split(":")
    # Fifty clients that open a connection and never finish their request.
    slow = [socket.create_connection((host, int(port)), timeout=5) for _ in range(50)]
    try:
        for sock in slow[:25]:
            sock.sendall(b"\x16\x03\x01")  # the first bytes of a TLS handshake, then nothing
        results: list[int] = []

        def scrape() -> None:
            results.append(request(f"{base}/metrics", context, user="prometheus")[0])

        threads = [threading.Thread(target=scrape) for _ in range(40)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert results == [200] * 40
        assert time.monotonic() - started < 30
        # The pollers kept polling through it.
        _, _, first = request(f"{base}/metrics", context, user="prometheus")
        time.sleep(1.5)
        _, _, second = request(f"{base}/metrics", context, user="prometheus")
        stamp = [line for line in first.splitlines() if line.startswith("litellm_exporter_collector_last_success")]
        later = [line for line in second.splitlines() if line.startswith("litellm_exporter_collector_last_success")]
        assert stamp and stamp != later
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config.key_file: is required"),
        ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: expected a bcrypt hash ($2y$...)"),
        (
            "tls_config: {}\n",
            "tls_config: unknown key (expected one of: basic_auth_users, http_server_config, tls_server_config)",
        ),
        (
            "http_server_config:\n  headers:\n    Server: evil\n",
            "http_server_config.headers.Server: unknown header (expected one of: Content-Security-Policy, "
            "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection)",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n  min_version: TLS9\n",
            "tls_server_config.min_version: expected one of TLS10, TLS11, TLS12, TLS13, got 'TLS9'",
        ),
    ],
)
def test_bad_web_config_is_one_line_and_exit_2(text, message, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("database:\n  dsn: postgresql://db/x\n")
    web = tmp_path / "web.yml"
    web.write_text(text)
    assert main(["--config", str(config), "--web-config", str(web), "--check-config"]) == 2
    assert capsys.readouterr().err == f"litellm-exporter: {web}: {message}\n"


def test_missing_certificate_is_a_config_error(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("database:\n  dsn: postgresql://db/x\n")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    assert main(["--config", str(config), "--web-config", str(web), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"litellm-exporter: {web}: tls_server_config.cert_file: cannot load the certificate and key")
    assert err.count("\n") == 1


@pytest.fixture
def plain(litellm_dsn):
    """The exporter over plain HTTP with a short request deadline and a small connection cap."""
    with serving(litellm_dsn, request_timeout="2s", max_connections=600) as (exporter, port):
        yield exporter, f"http://127.0.0.1:{port}"


def test_idle_connections_cost_no_thread_and_scrapes_go_on(plain):
    exporter, base = plain
    host, port = base.removeprefix("http://").split(":")
    threads_before = threading.active_count()
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(500)]
    try:
        # A few clients send half a request and stop.
        for sock in idle[:20]:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for _ in range(20):
            status, _, body = request(f"{base}/metrics", None)
            assert status == 200 and "litellm_exporter_build_info" in body
        assert time.monotonic() - started < 10
        # 500 held connections, and the exporter runs no more threads than before them.
        assert exporter._server is not None and exporter._server.held_connections >= 500
        assert threading.active_count() <= threads_before + 8  # at most the worker pool
        # The cap: past 600 held connections, new ones are closed at once.
        extra = [socket.create_connection((host, int(port)), timeout=5) for _ in range(120)]
        try:
            refused = extra[-1]
            refused.settimeout(1.0)  # well before the deadline would close it
            assert refused.recv(1) == b""  # closed without a word
        finally:
            for sock in extra:
                sock.close()
        # The deadline: two seconds on, the server has closed every idle connection.
        time.sleep(2.5)
        for sock in idle[:5] + idle[-5:]:
            sock.settimeout(5)
            assert sock.recv(1) == b""
        assert exporter._server.held_connections == 0
        assert request(f"{base}/metrics", None)[0] == 200
    finally:
        for sock in idle:
            sock.close()


def test_garbage_on_the_tls_port_costs_nothing_lasting(secured):
    base, context = secured
    host, port = base.removeprefix("https://").split(":")
    assert request(f"{base}/metrics", context, user="prometheus")[0] == 200
    threads_before = sum(1 for t in threading.enumerate() if t.name.startswith("http"))
    rng = __import__("random").Random(7)
    for n in range(30):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            if n % 3 == 0:
                sock.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))))
            elif n % 3 == 1:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the TLS port
            else:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40))  # a broken ClientHello
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    # A handshake begun (a real ClientHello) and abandoned, then a reset.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.sendall(outgoing.read())
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()
    status, _, body = request(f"{base}/metrics", context, user="prometheus")
    assert status == 200 and 'litellm_exporter_internal_errors_total{component="http"} 0.0' in body
    # Nothing the garbage started stays; the server's own pool may have started its remaining
    # workers (the loop's thread and four at most), which it keeps.
    assert sum(1 for t in threading.enumerate() if t.name.startswith("http")) <= max(threads_before, 1 + 4)


def test_a_reload_serves_a_renewed_certificate_to_new_connections(tmp_path, certificate, litellm_dsn):
    renewed_dir = tmp_path / "renewed"
    renewed_dir.mkdir()
    cert, key = renewed_dir / "server.crt", renewed_dir / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "3", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()

    def config(pair, folder: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        web = web_config(tmp_path / folder, pair, users=False)
        return parse({"database": {"dsn": litellm_dsn}}).with_overrides(listen=f"127.0.0.1:{port}", web_config=str(web))

    exporter = Exporter(config(certificate, "first"))
    exporter.start()
    try:

        def served_certificate() -> bytes:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
                context.wrap_socket(sock) as tls,
            ):
                return tls.getpeercert(binary_form=True) or b""

        first = served_certificate()
        assert ssl.DER_cert_to_PEM_cert(first).strip() == certificate[0].read_text().strip()
        ok, message = exporter.reload(config((cert, key), "renewed"))
        assert ok, message
        deadline = time.monotonic() + 5
        while served_certificate() == first:
            assert time.monotonic() < deadline, "the old certificate is still served"
            time.sleep(0.05)
        assert ssl.DER_cert_to_PEM_cert(served_certificate()).strip() == cert.read_text().strip()
    finally:
        exporter.stop()
