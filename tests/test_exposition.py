"""The served exposition: the cached snapshot part is never staler than the last poll."""

from __future__ import annotations

import dataclasses
import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.traffic import Request

from .support.exporters import make_config, parse_samples, poll, samples_of


def usage_samples(text: str, parser=text_string_to_metric_families) -> dict:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in parser(text)
        for s in f.samples
        if s.name.startswith("litellm_") and not s.name.startswith("litellm_exporter_collector_duration")
    }


def test_rendered_exposition_follows_every_poll(make_exporter, writer, world, clock, litellm_dsn):
    config = dataclasses.replace(make_config(litellm_dsn), max_gauge_age=0.5)
    exporter = make_exporter(config)
    poll(exporter)
    first, _ = exporter.exposition.render("")
    again, _ = exporter.exposition.render("")
    assert usage_samples(first.decode()) == usage_samples(again.decode())

    caller = world.callers[0]
    writer.record(Request(caller.api_key, "gpt-4o", "gpt-4o", "openai", 3.0, 1, 1, clock.now))
    writer.flush(clock.now)
    poll(exporter)
    second, _ = exporter.exposition.render("")
    text = second.decode()
    # The served bytes say exactly what the families hold, read with prometheus-client's parser.
    served = {
        (name, labels): value
        for name, series in parse_samples(text).items()
        for labels, value in series.items()
        if name.startswith("litellm_")
    }
    assert served == {
        (name, labels): value
        for name, series in samples_of(exporter.runner.families()).items()
        for labels, value in series.items()
        if name.startswith("litellm_")
    }
    assert usage_samples(text) != usage_samples(first.decode())
    assert "process_cpu_seconds_total" in text or "python_info" in text

    openmetrics, content_type = exporter.exposition.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    body = openmetrics.decode()
    assert body.endswith("# EOF\n") and body.count("# EOF") == 1
    assert usage_samples(body, parse_openmetrics) == {
        (name, labels): value for (name, labels), value in usage_samples(text).items()
    }

    # Gauges going stale change the exposition without any poll.
    assert "litellm_db_up" in text
    time.sleep(0.6)
    stale, _ = exporter.exposition.render("")
    assert "litellm_db_probe_duration_seconds" not in stale.decode()
    assert "litellm_spend_usd_total" in stale.decode()
