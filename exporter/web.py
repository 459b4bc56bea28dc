"""The HTTP server: ``/metrics``, a landing page, and liveness and readiness endpoints."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .exposition import Exposition
from .runner import Runner

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


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    server_version = f"litellm-exporter/{__version__}"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = self.server.exposition.render(self.headers.get("Accept", ""))
            gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
            if gzipped:
                body = gzip.compress(body)
            self._send(200, content_type, body, send_body, gzip_encoded=gzipped)
        elif path == "/":
            page = _LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, "text/html; charset=utf-8", page, send_body)
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n", send_body)
        elif path == "/ready":
            if self.server.runner.ready():
                self._send(200, "text/plain; charset=utf-8", b"ready\n", send_body)
            else:
                self._send(
                    503, "text/plain; charset=utf-8", b"waiting for the first poll of every collector\n", send_body
                )
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n", send_body)

    def _send(
        self, status: int, content_type: str, body: bytes, send_body: bool, *, gzip_encoded: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzip_encoded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], exposition: Exposition, runner: Runner) -> None:
        self.address_family = _family_for(address[0])
        super().__init__(address, _Handler)
        self.exposition = exposition
        self.runner = runner

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


def _family_for(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
