"""The OTLP push's cost, against the OpenTelemetry SDK's (by hand, seconds):

    python bench/otlp.py       # the SDK's part needs opentelemetry-sdk and
                               # opentelemetry-exporter-otlp-proto-http installed

48,000 points, the busy deployment's size (60 counter families of 800 series, four labels each),
pushed three times to a receiver on loopback: by the exporter's pusher (``exporter.otlp``), and
by the SDK's periodic reader and OTLP/HTTP exporter fed by observable counters, the way the
exporter would have to feed it. Each in a process of its own: CPU and wall time of the last
push, and what it added to RSS (after, and at its peak).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAMILIES, SERIES = 60, 800


def rss_mb(field: str = "VmRSS") -> float:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) / 1024


def receiver() -> str:
    """The metrics URL of a sink that answers 200 to every push (the benchmark's own)."""
    from run import OtlpSink

    return OtlpSink().environ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]


def labels(i: int) -> dict[str, str]:
    return {"key_hash": f"hash{i:06d}", "key_alias": f"alias-{i}", "team_id": f"team-{i % 200}", "model_group": "m"}


def measure(push) -> str:
    before, peak = rss_mb(), rss_mb("VmHWM")
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        push()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return (
        f"{1000 * cpu:.0f} ms CPU ({1000 * wall:.0f} ms wall) a push;"
        f" RSS +{rss_mb() - before:.1f} MB, peak +{rss_mb('VmHWM') - peak:.1f} MB"
    )


def own() -> str:
    sys.path.insert(0, str(REPO))
    from exporter.config import parse
    from exporter.families import build
    from exporter.otlp.push import Pusher

    families = [
        build(
            f"litellm_family_{f}",
            "help",
            "counter",
            tuple(labels(0)),
            [(tuple(labels(i).values()), i * 1.5) for i in range(SERIES)],
        )
        for f in range(FAMILIES)
    ]
    config = parse({"database": {"dsn": "postgresql://db/x"}, "otlp": {"endpoint": receiver()}}).otlp
    pusher = Pusher(config, lambda: families)
    return measure(lambda: pusher.push(threading.Event(), time.monotonic() + 60))


def sdk() -> str:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError:
        return "not installed (pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http)"
    data = [[(labels(i), i * 1.5) for i in range(SERIES)] for _ in range(FAMILIES)]
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=receiver()), export_interval_millis=10**9)
    meter = MeterProvider(metric_readers=[reader]).get_meter("litellm-exporter")
    for f in range(FAMILIES):
        meter.create_observable_counter(
            f"litellm_family_{f}", callbacks=[lambda options, f=f: [Observation(v, a) for a, v in data[f]]]
        )
    return measure(reader.force_flush)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print({"own": own, "sdk": sdk}[sys.argv[1]]())
    else:
        for part in ("own", "sdk"):
            out = subprocess.run([sys.executable, __file__, part], capture_output=True, text=True, check=True)
            print(f"{part}: {out.stdout.strip()}")
