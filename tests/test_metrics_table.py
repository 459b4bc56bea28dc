"""METRICS.md lists exactly the families a live exposition holds, with their types, labels and help."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from exporter.demo.entities import add_budgets
from exporter.demo.metrics_table import table
from exporter.demo.proxy_records import ProxyRecords
from exporter.demo.traffic import random_requests

from .support.exporters import make_config, parse_samples, poll, samples_of
from .support.fake_proxy import FakeProxy
from .support.otlp_receiver import OtlpReceiver

METRICS = Path(__file__).resolve().parent.parent / "METRICS.md"


def test_metrics_md_is_what_the_exposition_serves(make_exporter, writer, rng, world, clock, conn, litellm_dsn):
    writer.record(*random_requests(rng, world, 400, clock.now - timedelta(days=3), clock.now))
    writer.reject(clock.now, "/chat/completions", 401)
    writer.flush(clock.now)
    add_budgets(conn, world, clock.now)
    records = ProxyRecords(conn)
    records.beat("worker-1", "litellm-0")
    records.health_check("gpt-4o", "dep-1", healthy=True, checked_at=clock.now)
    records.window_spend("team", "team-1", "1h", clock.now, 1.0)
    proxy = FakeProxy("old")  # an older proxy reports its version: litellm_proxy_info
    receiver = OtlpReceiver()  # a push made: the OTLP pusher's own metrics
    try:
        config = make_config(litellm_dsn)
        # Tight caps, so that the overflow entities and their label are in the exposition too.
        entities = {name: dataclasses.replace(e, max_series=2) for name, e in config.usage.entities.items()}
        config = dataclasses.replace(
            config,
            usage=dataclasses.replace(config.usage, entities=entities),
            proxy=dataclasses.replace(config.proxy, targets=(proxy.url,)),
            otlp=dataclasses.replace(config.otlp, endpoint=receiver.url),
        )
        exporter = make_exporter(config)
        poll(exporter)
        assert exporter.pusher.push(threading.Event(), time.monotonic() + 30)
        families = exporter.runner.families()
        healthy = parse_samples(exporter.exposition.render("")[0].decode())
        reference = samples_of(families)
        # A failed poll, for the failure counter.
        exporter.db.close()
        database = next(c for c in exporter.runner.collectors if c.name == "database")
        assert not exporter.runner.poll_once(database)
        names = {f.name for f in families}
        families += [f for f in exporter.runner.families() if f.name not in names]
    finally:
        proxy.close()
        receiver.close()
    generated = table(families)
    if os.environ.get("LITELLM_EXPORTER_WRITE_METRICS"):
        METRICS.write_text(generated, encoding="utf-8")
    assert METRICS.read_text(encoding="utf-8") == generated, (
        "METRICS.md is out of date: LITELLM_EXPORTER_WRITE_METRICS=1 python -m pytest tests/test_metrics_table.py"
    )
    # The served text, read by prometheus-client's parser, says what the families hold, sample
    # by sample, overflow label included.
    served = healthy
    assert {n: s for n, s in served.items() if n.startswith("litellm_")} == {
        n: s for n, s in reference.items() if n.startswith("litellm_")
    }
    assert any(
        dict(labels).get("key_hash") == "__other__" and "overflow_set" in dict(labels)
        for labels in served["litellm_key_spend_usd_total"]
    )
