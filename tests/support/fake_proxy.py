"""A LiteLLM-like proxy answering its health endpoints, on a real local HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READINESS_1_106 = {"status": "healthy", "db": "connected"}
READINESS_OLD = {
    "status": "connected",
    "db": "connected",
    "cache": None,
    "litellm_version": "1.55.8",
    "success_callbacks": ["langfuse"],
    "last_updated": "2026-11-24T10:00:00",
}


class FakeProxy:
    """A LiteLLM-like proxy: ``behaviour`` picks how /health/readiness answers."""

    def __init__(self, behaviour: str, delay: float = 0.0) -> None:
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.paths.append(self.path)
                if delay:
                    time.sleep(delay)
                if self.path in ("/health/liveliness", "/health/liveness"):
                    self._reply(200, json.dumps("I'm alive!").encode())
                elif self.path == "/health/readiness":
                    if behaviour == "healthy":
                        self._reply(200, json.dumps(READINESS_1_106).encode())
                    elif behaviour == "old":
                        self._reply(200, json.dumps(READINESS_OLD).encode())
                    elif behaviour == "db_down":
                        self._reply(503, json.dumps({"status": "unhealthy", "db": "Not connected"}).encode())
                    elif behaviour == "garbage":
                        self._reply(200, b"<html>\x00\xff not json")
                else:
                    self._reply(404, b"{}")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
