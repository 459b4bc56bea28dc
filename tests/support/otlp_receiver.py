"""An OTLP/HTTP metrics receiver for the tests: decodes every ExportMetricsServiceRequest with
the official protobuf definitions (opentelemetry-proto), and can answer errors or hang."""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from .exporters import Samples


class OtlpReceiver:
    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, str], ExportMetricsServiceRequest]] = []
        self.answered: list[int] = []
        # How to answer the next requests: (status, count) pairs, used up in order; then 200.
        self.script: list[int] = []
        self.retry_after: str | None = None
        self.hang = threading.Event()  # set: accept and never answer, until released
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.hang.is_set():
                    receiver._release.wait(60)
                    return
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.answered.append(status)
                if status != 200:
                    self.send_response(status)
                    if receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                message = ExportMetricsServiceRequest()
                message.ParseFromString(body)
                with receiver._lock:
                    receiver.requests.append((time.monotonic(), dict(self.headers.items()), message))
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} pushes received, {count} awaited"
            time.sleep(0.05)

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def samples_of_request(message: ExportMetricsServiceRequest) -> Samples:
    """The pushed values by the name and labels /metrics serves them under: a monotonic sum
    gains ``_total``, a histogram its ``_bucket`` (cumulative, with ``le``), ``_sum``, ``_count``."""
    samples: Samples = {}
    for resource in message.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind == "histogram":
                    for point in metric.histogram.data_points:
                        labels = {a.key: a.value.string_value for a in point.attributes}
                        running = 0
                        bounds = [*point.explicit_bounds, float("inf")]
                        for bound, count in zip(bounds, point.bucket_counts, strict=True):
                            running += count
                            le = "+Inf" if bound == float("inf") else repr(float(bound))
                            key = frozenset({**labels, "le": le}.items())
                            samples.setdefault(f"{metric.name}_bucket", {})[key] = float(running)
                        samples.setdefault(f"{metric.name}_sum", {})[frozenset(labels.items())] = point.sum
                        samples.setdefault(f"{metric.name}_count", {})[frozenset(labels.items())] = float(point.count)
                    continue
                assert kind in ("sum", "gauge"), kind
                data = getattr(metric, kind)
                name = f"{metric.name}_total" if kind == "sum" else metric.name
                for point in data.data_points:
                    labels = frozenset((a.key, a.value.string_value) for a in point.attributes)
                    samples.setdefault(name, {})[labels] = point.as_double
    return samples
