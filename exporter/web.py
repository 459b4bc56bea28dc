"""The HTTP server: ``/metrics``, a landing page, and liveness and readiness endpoints.

aiohttp's server on an asyncio loop of its own thread: an idle or slow connection costs a socket,
never a thread, and the request parser is aiohttp's. Around it, what an exporter facing hostile
networks needs: a deadline per connection (``web.request_timeout`` from its arrival, the TLS
handshake included), a cap on connections held at once (past it, new ones are closed at the
door), one request per connection, and the answers computed on a small pool of threads, so that
a bcrypt check or a large status page never holds the loop. Every answer is read from the
runner's memory: a scrape never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import __version__, listen, status
from .exposition import Exposition
from .runner import Runner
from .supervise import Supervisor
from .webconfig import WebSecurity

log = logging.getLogger(__name__)
# aiohttp reports a client's malformed request at debug level and answers it 400 by itself; an
# exception in our handler never reaches it (it is caught and counted below).
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL)

COMPONENT = "http"
_TEXT = "text/plain; charset=utf-8"
# Sent on every response; operators can add or override them in the web config file.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SERVER = f"litellm-exporter/{__version__}"
# aiohttp's limits on a request head: a line, a header field, and the number of fields.
_MAX_LINE = 8190
_MAX_FIELDS = 100


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header admits gzip, by its q-values (RFC 9110, 12.5.3)."""
    named: float | None = None
    wildcard: float | None = None
    for part in header.split(","):
        coding, _, parameters = part.partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            named = max(named or 0.0, quality)
        elif coding == "*":
            wildcard = quality
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


class _Connection(asyncio.Protocol):
    """One client connection: counted against the cap, closed at its deadline, and otherwise
    handed to aiohttp's protocol."""

    def __init__(self, front: WebServer, inner: RequestHandler) -> None:
        self._front = front
        self._inner: RequestHandler | None = inner
        self._deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._head_seen = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) and self._inner is not None
        self._transport = transport
        if not self._front._admit(self):
            self._inner = None
            transport.abort()
            return
        self._deadline = asyncio.get_running_loop().call_later(self._front.request_timeout, transport.abort)
        self._inner.connection_made(transport)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._head_seen:
            window = self._tail + data
            self._head_seen = b"\r\n\r\n" in window or b"\n\n" in window
            self._tail = window[-3:]
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool:
        # A client may close its side once its request is sent: the answer is still written
        # (then aiohttp closes). A head that can no longer complete is closed at once.
        return self._head_seen and self._inner is not None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None
            self._front._release(self)


class _Request(web.BaseRequest):
    """aiohttp's request, whose hook before every answer's head is sent (aiohttp's own answers
    to a malformed request included) adds the headers every answer carries."""

    front: WebServer  # set on the subclass each server makes

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers["Server"] = _SERVER
        for name, value in {**_SECURITY_HEADERS, **self.front.security.headers}.items():
            response.headers.setdefault(name, value)


class WebServer:
    """Serves the exporter on sockets already bound (``listen.bind``), on a thread of its own
    that the supervisor restarts if it ever fails."""

    def __init__(
        self,
        sockets: list[socket.socket],
        exposition: Exposition,
        runner: Runner,
        security: WebSecurity | None = None,
        reload: Callable[[], tuple[bool, str]] | None = None,
        *,
        status: Callable[[], dict[str, Any]],
        supervisor: Supervisor,
        max_connections: int = 1024,
        request_timeout: float = 10.0,
        workers: int = 4,
    ) -> None:
        self.sockets = sockets
        self.exposition = exposition
        self.runner = runner
        self.security = security or WebSecurity()
        self.reload = reload
        self.status = status  # the landing page's and /status's data
        self.supervisor = supervisor
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-worker")
        # Only ever changed on the loop's thread.
        self._connections: set[_Connection] = set()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_loop: asyncio.Event | None = None
        self._serving = threading.Event()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    @property
    def held_connections(self) -> int:
        return len(self._connections)

    def _admit(self, connection: _Connection) -> bool:
        if len(self._connections) >= self.max_connections:
            log.debug("refusing a connection: %d held already", self.max_connections)
            return False
        self._connections.add(connection)
        return True

    def _release(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    # -- the loop ----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self.supervisor.start(COMPONENT, self._serve, self._stopping)
        self._serving.wait(timeout)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            with contextlib.suppress(Exception):
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
            self._loop = None
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop_loop = asyncio.Event()
        # A loop that failed may have left connections it never saw closed: they are gone with it.
        self._connections = set()
        request_class = type("Request", (_Request,), {"front": self})

        def request(*args: Any) -> web.BaseRequest:
            return request_class(*args, loop)  # type: ignore[no-any-return]

        server = web.Server(
            self._handle,
            request_factory=request,
            max_line_size=_MAX_LINE,
            max_field_size=_MAX_LINE,
            max_headers=_MAX_FIELDS,
            access_log=None,
        )
        listeners: list[asyncio.Server] = []
        try:
            self._loop = loop
            # stop() sets _stopping before it looks for the loop: one of the two sees the other.
            while not self._stopping.is_set():
                listeners = await self._listen(loop, server)
                self._serving.set()
                await self._stop_loop.wait()
                self._stop_loop.clear()
                # Stopping, or new TLS settings: connections already made go on with the old
                # ones; new ones wait in the kernel's queue for the new listeners.
                for listener in listeners:
                    listener.close()
        finally:
            for listener in listeners:
                listener.close()
            await server.shutdown(timeout=1.0)
            for connection in list(self._connections):
                connection.abort()

    async def _listen(self, loop: asyncio.AbstractEventLoop, server: web.Server) -> list[asyncio.Server]:
        context = self.security.ssl_context
        # Duplicates of the bound sockets, which the loop closes when they stop being served:
        # the sockets themselves stay open for a restart, or a reload, to serve again.
        return [
            await loop.create_server(
                lambda: _Connection(self, server()),
                sock=sock.dup(),
                backlog=listen.BACKLOG,
                ssl=context,
                ssl_handshake_timeout=self.request_timeout if context else None,
            )
            for sock in self.sockets
        ]

    def set_security(self, security: WebSecurity) -> None:
        """Take a reloaded web config: credentials and headers at once, TLS settings (a renewed
        certificate) for the connections made from now on."""
        renewed = security.ssl_context is not self.security.ssl_context
        self.security = security
        if renewed:
            self._signal()

    def _signal(self) -> None:
        loop, event = self._loop, self._stop_loop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What asyncio would print: an exception no callback caught."""
        exc = context.get("exception")
        if exc is None:
            log.warning("http: %s", context.get("message"))
        elif not isinstance(exc, OSError):  # a client going away, a failed handshake: not ours
            self.supervisor.internal_error(COMPONENT, exc)

    def stop(self) -> None:
        self._stopping.set()
        self._signal()
        thread = self.supervisor.thread(COMPONENT)
        if thread is not None:
            thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    # -- requests ----------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            status_code, content_type, body, extra = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._answer, request.method, request.path, request.headers
            )
        except Exception as exc:  # a bug of ours: counted, logged once, answered 500
            self.supervisor.internal_error(COMPONENT, exc)
            status_code, content_type, body, extra = 500, _TEXT, b"internal error\n", {}
        # (The headers every answer carries are added by _Request.)
        response = web.Response(status=status_code, body=body, headers={"Content-Type": content_type, **extra})
        response.force_close()
        return response

    def _answer(self, method: str, path: str, headers: Any) -> tuple[int, str, bytes, dict[str, str]]:
        """Status, content type, body and extra headers for one request (on a worker thread)."""
        if method == "POST" and path == "/-/reload" and self.reload is not None:
            denied = self._denied(headers)
            if denied is not None:
                return denied
            ok, message = self.reload()
            return 200 if ok else 500, _TEXT, f"{message}\n".encode(), {}
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path == "/healthz":
            # Says only whether the process should be restarted, so orchestrators may ask
            # without credentials.
            problems = self.supervisor.problems()
            if problems:
                return 503, _TEXT, "".join(f"{p}\n" for p in problems).encode(), {}
            return 200, _TEXT, b"ok\n", {}
        denied = self._denied(headers)
        if denied is not None:
            return denied
        if path == "/metrics":
            body, content_type = self.exposition.render(headers.get("Accept", ""))
            if accepts_gzip(headers.get("Accept-Encoding", "")):
                return 200, content_type, gzip.compress(body, compresslevel=5), {"Content-Encoding": "gzip"}
            return 200, content_type, body, {}
        if path == "/":
            return 200, "text/html; charset=utf-8", status.render_html(self.status()).encode(), {}
        if path == "/status":
            return 200, "application/json", json.dumps(self.status(), indent=2).encode() + b"\n", {}
        if path == "/ready":
            problems = self.runner.not_ready()
            if problems:
                return 503, _TEXT, "".join(f"{p}\n" for p in problems).encode(), {}
            return 200, _TEXT, b"ready\n", {}
        return 404, _TEXT, b"not found\n", {}

    def _denied(self, headers: Any) -> tuple[int, str, bytes, dict[str, str]] | None:
        if self.security.authorized(headers.get("Authorization")):
            return None
        return 401, _TEXT, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="litellm-exporter"'}
