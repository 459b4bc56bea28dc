"""The HTTP server: ``/metrics``, a landing page, and liveness and readiness endpoints."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import __version__
from .exposition import Exposition
from .runner import Runner
from .webconfig import WebSecurity

log = logging.getLogger(__name__)

_LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>litellm-exporter</title></head>
<body><h1>litellm-exporter {version}</h1>
<p>Prometheus metrics from the LiteLLM proxy's database.</p>
<ul>
<li><a href="metrics">/metrics</a>: the metrics</li>
<li><a href="healthz">/healthz</a>: the process is alive</li>
<li><a href="ready">/ready</a>: every collector has completed a poll</li>
</ul></body></html>
"""


_TEXT = "text/plain; charset=utf-8"
# Sent on every response; operators can add or override them in the web config file.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    server_version = f"litellm-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    # A client that sends its request slower than this is dropped (slowloris).
    timeout = 10

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/-/reload" and self.server.reload is not None:
            if not self._authorized():
                return
            ok, message = self.server.reload()
            self._send(200 if ok else 500, _TEXT, f"{message}\n".encode(), True)
        else:
            self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_PUT  # noqa: N815 - http.server dispatches by name

    def _not_allowed(self) -> None:
        self._send(405, _TEXT, b"method not allowed\n", True, extra={"Allow": "GET, HEAD"})

    def _authorized(self) -> bool:
        if self.server.security.authorized(self.headers.get("Authorization")):
            return True
        self._send(401, _TEXT, b"unauthorized\n", True, extra={"WWW-Authenticate": 'Basic realm="litellm-exporter"'})
        return False

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        # /healthz says only that the process is alive, so orchestrators may ask without credentials.
        if path != "/healthz" and not self._authorized():
            return
        if path == "/metrics":
            body, content_type = self.server.exposition.render(self.headers.get("Accept", ""))
            gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
            if gzipped:
                body = gzip.compress(body, compresslevel=5)
            self._send(200, content_type, body, send_body, extra={"Content-Encoding": "gzip"} if gzipped else None)
        elif path == "/":
            page = _LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, "text/html; charset=utf-8", page, send_body)
        elif path == "/healthz":
            self._send(200, _TEXT, b"ok\n", send_body)
        elif path == "/ready":
            if self.server.runner.ready():
                self._send(200, _TEXT, b"ready\n", send_body)
            else:
                self._send(503, _TEXT, b"waiting for the first poll of every collector\n", send_body)
        else:
            self._send(404, _TEXT, b"not found\n", send_body)

    def _send(
        self, status: int, content_type: str, body: bytes, send_body: bool, *, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_SECURITY_HEADERS, **self.server.security.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        exposition: Exposition,
        runner: Runner,
        security: WebSecurity | None = None,
        reload: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self.address_family = _family_for(address[0])
        super().__init__(address, _Handler)
        self.exposition = exposition
        self.runner = runner
        self.security = security or WebSecurity()
        self.reload = reload

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.security.ssl_context
        if context is not None:
            # The handshake happens on the handler's thread, on first read, never in accept().
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that fails its TLS handshake or hangs up is not the exporter's error.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


def _family_for(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
