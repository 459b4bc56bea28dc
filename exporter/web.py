"""The HTTP server: ``/metrics``, a landing page, and liveness and readiness endpoints."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

from . import __version__, status
from .exposition import Exposition
from .runner import Runner
from .webconfig import WebSecurity

log = logging.getLogger(__name__)

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

    def __init__(self, request: Any, client_address: Any, server: ExporterHTTPServer, head: bytes) -> None:
        self._head = head
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        # The request head was read by the server's waiting room; one request per connection.
        self.rfile = io.BytesIO(self._head)

    def handle(self) -> None:
        self.handle_one_request()

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
            page = status.render_html(self.server.status()).encode()
            self._send(200, "text/html; charset=utf-8", page, send_body)
        elif path == "/status":
            body = json.dumps(self.server.status(), indent=2).encode() + b"\n"
            self._send(200, "application/json", body, send_body)
        elif path == "/healthz":
            self._send(200, _TEXT, b"ok\n", send_body)
        elif path == "/ready":
            problems = self.server.runner.problems()
            if problems:
                self._send(503, _TEXT, "".join(f"{p}\n" for p in problems).encode(), send_body)
            elif self.server.runner.ready():
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
        self.send_header("Connection", "close")
        for name, value in {**_SECURITY_HEADERS, **self.server.security.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


class _Waiting:
    """A connection whose request has not fully arrived: it holds a socket, never a thread."""

    __slots__ = ("address", "buffer", "deadline", "handshaken", "sock")

    def __init__(self, sock: socket.socket, address: Any, deadline: float, handshaken: bool) -> None:
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.handshaken = handshaken
        self.buffer = bytearray()


class ExporterHTTPServer(socketserver.TCPServer):
    """An HTTP server that idle or slow clients cannot exhaust.

    Accepted connections wait in one selector, costing a socket each, until their whole request
    head (and, under TLS, the handshake) has arrived, read without blocking; only then does a
    worker from a small pool answer them, one request per connection. A connection whose request
    is not complete within ``request_timeout`` of its arrival is closed, and past
    ``max_connections`` held at once, new ones are refused at the door."""

    allow_reuse_address = True
    request_queue_size = 128
    _MAX_HEAD = 64 * 1024

    def __init__(
        self,
        address: tuple[str, int],
        exposition: Exposition,
        runner: Runner,
        security: WebSecurity | None = None,
        reload: Callable[[], tuple[bool, str]] | None = None,
        *,
        status: Callable[[], dict[str, Any]],
        max_connections: int = 1024,
        request_timeout: float = 10.0,
        workers: int = 8,
    ) -> None:
        self.address_family = _family_for(address[0])
        # Connections are answered by _answer, never by TCPServer's own request handling.
        super().__init__(address, socketserver.BaseRequestHandler)
        self.exposition = exposition
        self.runner = runner
        self.security = security or WebSecurity()
        self.reload = reload
        self.status = status  # the landing page's and /status's data
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http")
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._held = 0  # waiting and being answered
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._waiting_room = threading.Thread(target=self._wait_for_requests, name="http-wait", daemon=True)
        self._waiting_room.start()

    @property
    def held_connections(self) -> int:
        with self._lock:
            return self._held

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.security.ssl_context
        if context is not None:
            # The handshake happens in the waiting room, without blocking, never in accept().
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if self._held >= self.max_connections:
                full = True
            else:
                full = False
                self._held += 1
        if full:
            log.debug("refusing a connection from %s: %d held already", client_address, self.max_connections)
            self.shutdown_request(request)
            return
        request.setblocking(False)
        waiting = _Waiting(
            request,
            client_address,
            time.monotonic() + self.request_timeout,
            handshaken=not isinstance(request, ssl.SSLSocket),
        )
        self._selector.register(request, selectors.EVENT_READ, waiting)
        self._wake_write.send(b"\0")

    def _wait_for_requests(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_read.recv(4096)
                    continue
                self._progress(key.data)
            now = time.monotonic()
            for key in list(self._selector.get_map().values()):
                if key.data is not None and key.data.deadline < now:
                    log.debug("closing a connection from %s: no request within the deadline", key.data.address)
                    self._drop(key.data)

    def _progress(self, waiting: _Waiting) -> None:
        sock = waiting.sock
        try:
            if not waiting.handshaken:
                assert isinstance(sock, ssl.SSLSocket)
                sock.do_handshake()
                waiting.handshaken = True
            while True:
                chunk = sock.recv(16384)
                if not chunk:
                    self._drop(waiting)  # the client hung up
                    return
                waiting.buffer += chunk
                if b"\r\n\r\n" in waiting.buffer or len(waiting.buffer) > self._MAX_HEAD:
                    break
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    return  # wait for more
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except OSError:
            self._drop(waiting)  # a failed handshake, a reset: not the exporter's error
            return
        self._selector.unregister(sock)
        self._workers.submit(self._answer, waiting)

    def _answer(self, waiting: _Waiting) -> None:
        try:
            waiting.sock.setblocking(True)
            waiting.sock.settimeout(max(0.1, waiting.deadline - time.monotonic()))
            _Handler(waiting.sock, waiting.address, self, bytes(waiting.buffer))
        except Exception:  # a client that goes away mid-response is not the exporter's error
            log.debug("connection from %s ended with an error", waiting.address, exc_info=True)
        finally:
            self._close(waiting.sock)

    def _drop(self, waiting: _Waiting) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(waiting.sock)
        self._close(waiting.sock)

    def _close(self, sock: socket.socket) -> None:
        self.shutdown_request(sock)
        with self._lock:
            self._held -= 1

    def server_close(self) -> None:
        self._stopping.set()
        self._wake_write.send(b"\0")
        self._waiting_room.join(timeout=2)
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                self._drop(key.data)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()
        self._workers.shutdown(wait=False, cancel_futures=True)
        super().server_close()

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


def _family_for(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
