"""The OTLP pusher: the latest families pushed every ``otlp.interval`` on a thread of its own.

A push that fails for a reason OTLP calls transient (no answer, 429, 5xx) is sent again after a
pause that doubles (or what ``Retry-After`` asks), until it goes through or the next push is due:
values are cumulative, so the next push carries everything a lost one held. Nothing here waits
on polling or scraping, nor they on it. A failure is logged once per cause, its recovery once.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..causes import Causes
from ..errors import PushFailure, classify_push
from ..families import Family, build, gauge
from .settings import SERVICE_NAME, OtlpConfig

log = logging.getLogger(__name__)

FIRST_PAUSE = 0.5
LONGEST_PAUSE = 30.0


@dataclass
class _Outcome:
    failure: PushFailure | None
    detail: str = ""
    retry_after: float | None = None
    body: bytes = b""


def endpoint_text(url: str) -> str:
    """The endpoint as logs and the status page show it: no user, password or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Pusher:
    def __init__(
        self,
        config: OtlpConfig,
        families: Callable[[], list[Family]],
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._families = families
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._start_ns = int(wall_clock() * 1e9)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.exports = 0
        self.retries = 0
        self.rejected_points = 0
        self.failures: Counter[PushFailure] = Counter()
        self.success: bool | None = None
        self.duration = 0.0
        self.points = 0
        self.last_push: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self._causes = Causes()

    @property
    def config(self) -> OtlpConfig:
        return self._config

    @property
    def active(self) -> bool:
        """Whether there is a push to report: one is configured, or one was made before a reload."""
        return self._config.enabled or self.exports > 0

    def reconfigure(self, config: OtlpConfig) -> None:
        with self._lock:
            self._config = config
        self._wake.set()

    def interrupt(self) -> None:
        """End the wait for the next push now (the exporter is stopping)."""
        self._wake.set()

    def resource(self) -> list[tuple[str, str]]:
        given = dict(self._config.resource_attributes)
        return list(
            {
                "service.name": SERVICE_NAME,
                "service.version": __version__,
                # The pod's name under Kubernetes: what tells two replicas apart.
                "service.instance.id": socket.gethostname(),
                **given,
            }.items()
        )

    def run(self, stop: threading.Event) -> None:
        """Push every interval until ``stop`` is set (the supervised thread's body)."""
        due = self._monotonic() + self._config.interval
        while not stop.is_set():
            self._wake.wait(max(0.0, due - self._monotonic()))
            if stop.is_set():
                return
            if self._wake.is_set():  # reconfigured: the new interval counts from now
                self._wake.clear()
                due = self._monotonic() + self._config.interval
                continue
            due = self._monotonic() + self._config.interval
            if self._config.endpoint is not None:
                self.push(stop, due)

    def push(self, stop: threading.Event, due: float) -> bool:
        """One push of the latest families, retried while the failure is transient and the next
        push is not yet due; True when it went through."""
        from . import encode  # the otlp extra: imported only where a push is configured

        config = self._config
        assert config.endpoint is not None
        started = self._monotonic()
        now = self._wall_clock()
        pieces, points = encode.request(self._families(), self.resource(), self._start_ns, int(now * 1e9))
        headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"{SERVICE_NAME}/{__version__}",
            **dict(config.headers),
        }
        if config.compression == "gzip":
            compressor = zlib.compressobj(5, zlib.DEFLATED, 31)  # 31: the gzip format
            body = b"".join([*map(compressor.compress, pieces), compressor.flush()])
            headers["Content-Encoding"] = "gzip"
        else:
            body = b"".join(pieces)
        del pieces
        pause = FIRST_PAUSE
        while True:
            outcome = self._send(config.endpoint, body, headers, config.timeout)
            if outcome.failure is None or not outcome.failure.retryable:
                break
            wait = outcome.retry_after if outcome.retry_after is not None else pause
            if self._monotonic() + wait + config.timeout > due or stop.wait(wait):
                break  # the next push carries newer values than this one
            with self._lock:
                self.retries += 1
            pause = min(LONGEST_PAUSE, pause * 2)
        rejected, why = (0, "") if outcome.failure is not None else encode.rejected_points(outcome.body)
        self._record(outcome, points, rejected, why, self._monotonic() - started, now)
        return outcome.failure is None

    def _send(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> _Outcome:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _Outcome(None, body=response.read(1 << 20))
        except urllib.error.HTTPError as exc:
            failure = classify_push(exc.code)
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            try:
                after = float(retry_after) if retry_after is not None else None
            except ValueError:
                after = None  # an HTTP date: the doubling pause instead
            return _Outcome(failure, f"HTTP {exc.code} {exc.reason}", after)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            cause = reason if isinstance(reason, BaseException) else exc
            return _Outcome(classify_push(None, cause), " ".join(str(reason).split()) or type(reason).__name__)

    def _record(self, outcome: _Outcome, points: int, rejected: int, why: str, duration: float, when: float) -> None:
        where = endpoint_text(self._config.endpoint or "")
        with self._lock:
            self.exports += 1
            self.duration = duration
            self.points = points
            self.last_push = when
            self.success = outcome.failure is None
            self.rejected_points += rejected
            if outcome.failure is None:
                self.last_success = when
                self.last_error = None
            else:
                self.failures[outcome.failure] += 1
                self.last_error = f"{outcome.failure.value}: {outcome.detail}"
            error = self.last_error
        if error is not None:
            if self._causes.failing("otlp", error):
                log.warning("otlp: push to %s failed: %s", where, error)
        elif self._causes.recovered("otlp") is not None:
            log.info("otlp: push to %s works again", where)
        if rejected:
            log.warning("otlp: %s rejected %d of %d data points: %s", where, rejected, points, why or "no reason given")

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "endpoint": endpoint_text(self._config.endpoint) if self._config.endpoint else None,
                "interval_seconds": self._config.interval,
                "exports": self.exports,
                "success": self.success,
                "last_push": self.last_push,
                "last_success": self.last_success,
                "last_error": self.last_error,
                "failures": {reason.value: count for reason, count in sorted(self.failures.items())},
                "retries": self.retries,
                "data_points": self.points,
            }

    def families(self) -> list[Family]:
        if not self.active:
            return []
        with self._lock:
            failures = [((reason.value,), float(self.failures[reason])) for reason in PushFailure]
            result = [
                build(
                    "litellm_exporter_otlp_exports",
                    "OTLP pushes made (each after its retries).",
                    "counter",
                    (),
                    [((), float(self.exports))],
                ),
                build(
                    "litellm_exporter_otlp_export_failures",
                    "OTLP pushes that failed after their retries, by reason.",
                    "counter",
                    ("reason",),
                    failures,
                ),
                build(
                    "litellm_exporter_otlp_retries",
                    "OTLP requests sent again after a transient failure (no answer, 429, 5xx).",
                    "counter",
                    (),
                    [((), float(self.retries))],
                ),
                build(
                    "litellm_exporter_otlp_rejected_data_points",
                    "Data points an OTLP receiver said it rejected (partial success).",
                    "counter",
                    (),
                    [((), float(self.rejected_points))],
                ),
                gauge(
                    "litellm_exporter_otlp_data_points",
                    "Data points in the last OTLP push.",
                    float(self.points),
                ),
            ]
            if self.success is not None:
                result += [
                    gauge(
                        "litellm_exporter_otlp_export_success",
                        "Whether the last OTLP push went through (1) or not (0).",
                        1.0 if self.success else 0.0,
                    ),
                    gauge(
                        "litellm_exporter_otlp_export_duration_seconds",
                        "How long the last OTLP push took, its retries included.",
                        self.duration,
                    ),
                ]
            if self.last_success is not None:
                result.append(
                    gauge(
                        "litellm_exporter_otlp_last_success_timestamp_seconds",
                        "When the last OTLP push that went through was made, as a Unix time.",
                        self.last_success,
                    )
                )
        return result
