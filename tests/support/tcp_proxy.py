"""A loopback TCP forwarder the tests control, to cut the exporter off from PostgreSQL."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a TCP address or a PostgreSQL socket directory.

    Modes: ``up`` forwards; ``down`` closes every connection and refuses new ones; ``hang``
    closes every connection, then accepts and never answers (a black hole); ``silent`` keeps
    every connection open but forwards nothing more either way, with no reset (a route that
    drops packets). ``cut_after(n)`` cuts every connection once ``n`` more bytes have come
    back from the server: connections lost in the middle of a result set."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.mode = "up"
        self._cut_after: int | None = None
        self.from_server = 0  # bytes forwarded from the server, in all
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode: str) -> None:
        assert mode in ("up", "down", "hang", "silent")
        self.mode = mode
        if mode in ("down", "hang"):
            self._cut()

    def cut_after(self, count: int | None) -> None:
        """Cut every connection once ``count`` more bytes have come from the server (None: never)."""
        self._cut_after = count

    def _cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "down":
                client.close()
                continue
            with self._lock:
                self._sockets.add(client)
            if self.mode in ("hang", "silent"):
                continue
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        host, port = self._target
        if host.startswith("/"):  # a PostgreSQL socket directory
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection((host, port), timeout=5)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        # a: the client; b: the server.
        try:
            while True:
                if self.mode == "silent":
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is b:
                        self.from_server += len(data)
                    if sock is b and self._cut_after is not None:
                        if len(data) >= self._cut_after:
                            a.sendall(data[: self._cut_after])
                            self._cut_after = None
                            self._cut()
                            return
                        self._cut_after -= len(data)
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._cut()
