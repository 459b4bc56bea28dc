"""The OTLP push: the standard variables, the encoding read back with the official protobuf
definitions, and a receiver that answers errors or hangs; then every pushed value against what
/metrics serves, on a real database."""

from __future__ import annotations

import builtins
import dataclasses
import logging
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from exporter import cli
from exporter.app import Exporter
from exporter.config import ConfigError, parse
from exporter.config_file import resolve
from exporter.demo.traffic import random_requests
from exporter.families import Histogram, build
from exporter.otlp import encode
from exporter.otlp.push import Pusher
from exporter.otlp.settings import apply_environment

from .support.exporters import parse_samples, poll, samples_of, scrape
from .support.otlp_receiver import OtlpReceiver, samples_of_request
from .support.process import fetch, serving

DSN = "postgresql://exporter@db.example/litellm"


@pytest.fixture
def receiver():
    found = OtlpReceiver()
    yield found
    found.close()


def otlp_config(**settings):
    return parse({"database": {"dsn": DSN}, "otlp": settings}).otlp


FAMILIES = [
    build(
        "litellm_team_spend_usd",
        "Spend",
        "counter",
        ("team_id", "overflow_set"),
        [(("t1", ""), 1.25), (("__other__", "abc"), 7.5)],
        omit_empty=("overflow_set",),
    ),
    build("litellm_db_up", "Up", "gauge", (), [((), 1.0)]),
    build(
        "litellm_request_duration_seconds",
        "Durations",
        "histogram",
        ("model_group",),
        [(("gpt-4o",), Histogram(((0.5, 2.0), (1.0, 5.0), (float("inf"), 6.0)), 4.75))],
    ),
]


def test_the_standard_variables_configure_the_push():
    config, problems = apply_environment(
        otlp_config(),
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x-tenant = team-a",
            "OTEL_METRIC_EXPORT_INTERVAL": "15000",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.namespace=ai",
            "OTEL_SERVICE_NAME": "llm-spend",
        },
    )
    assert problems == []
    assert config.endpoint == "http://collector:4318/v1/metrics"
    assert config.headers == (("api-key", "s=cret"), ("x-tenant", "team-a"))
    assert (config.interval, config.timeout, config.compression) == (15.0, 2.5, "none")
    assert dict(config.resource_attributes) == {
        "deployment.environment": "prod",
        "service.namespace": "ai",
        "service.name": "llm-spend",
    }
    # The signal's own URL is taken as it is, and wins over the base URL.
    config, _ = apply_environment(
        otlp_config(),
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://b/otlp"},
    )
    assert config.endpoint == "https://b/otlp"
    # Off unless something names an endpoint; turned off by the SDK's own switches.
    assert not apply_environment(otlp_config(), {})[0].enabled
    assert apply_environment(otlp_config(endpoint="http://c/v1/metrics"), {})[0].enabled
    for off in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_METRICS_EXPORTER": "none"}):
        assert not apply_environment(otlp_config(endpoint="http://c/v1/metrics"), off)[0].enabled
    on = {"OTEL_METRICS_EXPORTER": "prometheus, otlp"}
    assert apply_environment(otlp_config(endpoint="http://c/v1/metrics"), on)[0].enabled


def test_unreadable_variables_are_one_line_each_and_exit_2(monkeypatch, capsys):
    bad = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
        "OTEL_METRIC_EXPORT_INTERVAL": "1m",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign",
    }
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        resolve(None, dsn=DSN)
    problems = raised.value.problems
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == set(bad)
    assert cli.main(["--dsn", DSN, "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 4


def test_print_config_keeps_header_names_and_hides_their_values(monkeypatch, capsys):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20secret")
    assert cli.main(["--dsn", DSN, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "authorization=REDACTED" in out and "secret" not in out


def test_the_encoding_reads_back_as_what_metrics_serves():
    pieces, points = encode.request(FAMILIES, [("service.name", "litellm-exporter")], 1_000, 2_000)
    body = b"".join(pieces)
    assert points == 4
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    message = ExportMetricsServiceRequest.FromString(body)
    assert samples_of_request(message) == samples_of(FAMILIES)
    metrics = {m.name: m for m in message.resource_metrics[0].scope_metrics[0].metrics}
    spend = metrics["litellm_team_spend_usd"].sum
    assert spend.is_monotonic and spend.aggregation_temporality == encode.CUMULATIVE
    assert {p.start_time_unix_nano for p in spend.data_points} == {1_000}
    # The overflow identity label only where /metrics has it.
    assert [len(p.attributes) for p in spend.data_points] == [1, 2]
    histogram = metrics["litellm_request_duration_seconds"].histogram.data_points[0]
    assert list(histogram.bucket_counts) == [2, 3, 1] and list(histogram.explicit_bounds) == [0.5, 1.0]
    assert metrics["litellm_db_up"].WhichOneof("data") == "gauge"


def pusher_for(receiver: OtlpReceiver, **settings) -> Pusher:
    return Pusher(otlp_config(endpoint=receiver.url, **settings), lambda: list(FAMILIES))


def test_a_receiver_that_answers_503_for_a_while_gets_the_push(receiver, caplog):
    receiver.script = [503, 503, 429]
    pusher = pusher_for(receiver)
    with caplog.at_level(logging.INFO):
        assert pusher.push(threading.Event(), time.monotonic() + 30)
    assert receiver.answered == [503, 503, 429, 200]
    assert pusher.retries == 3 and pusher.success and not pusher.failures
    assert samples_of_request(receiver.requests[-1][2]) == samples_of(FAMILIES)
    assert receiver.requests[-1][1]["Content-Encoding"] == "gzip"
    assert caplog.messages == []  # retried within the push: nothing failed


def test_a_push_that_cannot_go_through_is_counted_and_said_once(receiver, caplog):
    receiver.script = [400, 400]
    pusher = pusher_for(receiver)
    stop = threading.Event()
    with caplog.at_level(logging.INFO):
        assert not pusher.push(stop, time.monotonic() + 30)
        assert not pusher.push(stop, time.monotonic() + 30)
        assert pusher.push(stop, time.monotonic() + 30)
    assert receiver.answered == [400, 400, 200]  # a request refused as such is not sent again
    assert pusher.retries == 0 and pusher.failures["rejected"] == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"otlp: push to {receiver.url} failed: rejected: HTTP 400 Bad Request",
        f"otlp: push to {receiver.url} works again",
    ]
    served = samples_of(pusher.families())
    assert served["litellm_exporter_otlp_export_failures_total"][frozenset({("reason", "rejected")})] == 2
    assert served["litellm_exporter_otlp_exports_total"][frozenset()] == 3
    assert served["litellm_exporter_otlp_export_success"][frozenset()] == 1


def test_retries_stop_when_the_next_push_is_due(receiver):
    receiver.script = [503] * 100
    pusher = pusher_for(receiver, timeout="1s")
    started = time.monotonic()
    assert not pusher.push(threading.Event(), started + 3)
    assert time.monotonic() - started < 3
    assert pusher.failures["server_error"] == 1 and 1 <= pusher.retries <= 3


def test_a_hanging_receiver_and_a_closed_port_are_named(receiver):
    receiver.hang.set()
    pusher = pusher_for(receiver, timeout="0.5s")
    started = time.monotonic()
    assert not pusher.push(threading.Event(), started + 1)
    assert time.monotonic() - started < 2.5
    assert pusher.last_error.startswith("timeout: ")
    closed = Pusher(otlp_config(endpoint="http://127.0.0.1:9/v1/metrics", timeout="0.5s"), lambda: list(FAMILIES))
    assert not closed.push(threading.Event(), time.monotonic() + 0.5)
    assert closed.last_error.startswith("unreachable: ")
    # A peer that answers, but not in HTTP.
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1/metrics"

        def garbage() -> None:
            peer, _ = server.accept()
            with peer:
                peer.recv(65536)
                peer.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        threading.Thread(target=garbage, daemon=True).start()
        babbling = Pusher(otlp_config(endpoint=url, timeout="0.5s"), lambda: list(FAMILIES))
        assert not babbling.push(threading.Event(), time.monotonic() + 0.5)
    assert babbling.last_error.startswith("server_error: ")


def test_every_pushed_value_equals_what_metrics_serves(make_exporter, litellm_dsn, writer, world, rng, receiver):
    now = datetime.now(timezone.utc)
    writer.record(*random_requests(rng, world, 300, now - timedelta(days=2), now))
    writer.flush(now)
    config = parse({"database": {"dsn": litellm_dsn}, "otlp": {"endpoint": receiver.url}})
    exporter = make_exporter(config)
    stop = threading.Event()
    starts = set()
    before: dict = {}
    for _ in range(2):
        poll(exporter)
        assert exporter.pusher.push(stop, time.monotonic() + 30)
        pushed = samples_of_request(receiver.requests[-1][2])
        served = scrape(exporter)
        own = {n for n in served if n.startswith(("process_", "python_", "litellm_exporter_otlp_"))}
        assert {n: v for n, v in pushed.items() if n not in own} == {n: v for n, v in served.items() if n not in own}
        assert len(pushed["litellm_spend_usd_total"]) > 1
        metrics = receiver.requests[-1][2].resource_metrics[0].scope_metrics[0].metrics
        starts |= {p.start_time_unix_nano for m in metrics if m.WhichOneof("data") == "sum" for p in m.sum.data_points}
        # Cumulative: what the first push said is never more than the second says.
        for name, series in before.items():
            if name.endswith("_total") and not name.startswith("litellm_exporter_"):
                for labels, value in series.items():
                    assert pushed[name][labels] >= value, (name, labels)
        before = pushed
        writer.record(*random_requests(rng, world, 50, now - timedelta(hours=1), now))
        writer.flush(now)
    assert len(starts) == 1
    resource = {a.key: a.value.string_value for a in receiver.requests[-1][2].resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "litellm-exporter" and resource["service.instance.id"]


def test_a_hanging_receiver_delays_neither_scrapes_nor_polls(litellm_dsn, writer, world, rng, receiver):
    now = datetime.now(timezone.utc)
    writer.record(*random_requests(rng, world, 100, now - timedelta(days=1), now))
    writer.flush(now)
    receiver.hang.set()
    with serving(litellm_dsn, "0.5s", otlp={"endpoint": receiver.url, "interval": "1s", "timeout": "5s"}) as (
        exporter,
        port,
    ):
        deadline = time.monotonic() + 30
        while not exporter.runner.ready():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        usage = next(c for c in exporter.runner.status() if c.name == "usage")
        first = usage.last_poll
        worst = 0.0
        for _ in range(20):
            started = time.monotonic()
            status, _, body = fetch(f"http://127.0.0.1:{port}/metrics")
            worst = max(worst, time.monotonic() - started)
            assert status == 200 and b"litellm_spend_usd_total" in body
            time.sleep(0.15)
        assert worst < 1.0
        usage = next(c for c in exporter.runner.status() if c.name == "usage")
        assert usage.last_poll > first  # the collectors went on polling
        # Released, the receiver gets the pushes that follow, and /status says so.
        receiver.hang.clear()
        receiver.wait_for(1, timeout=30)
        deadline = time.monotonic() + 15
        while not exporter.status()["otlp"]["success"]:
            assert time.monotonic() < deadline, exporter.status()["otlp"]
            time.sleep(0.2)
        assert exporter.status()["otlp"]["endpoint"] == receiver.url
        page = fetch(f"http://127.0.0.1:{port}/")[2].decode()
        assert "OTLP push" in page and receiver.url in page
        served = parse_samples(fetch(f"http://127.0.0.1:{port}/metrics")[2].decode())
        assert served["litellm_exporter_otlp_export_failures_total"][frozenset({("reason", "timeout")})] >= 1


def test_a_push_configured_without_its_extra_is_refused_at_start(monkeypatch):
    real = builtins.__import__

    def no_proto(name, *args, **kwargs):
        if name.startswith("opentelemetry") or (args and args[2] and "encode" in args[2]):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "exporter.otlp.encode")
    monkeypatch.setattr(builtins, "__import__", no_proto)
    config = parse({"database": {"dsn": DSN}, "otlp": {"endpoint": "http://c:4318/v1/metrics"}})
    with pytest.raises(ConfigError) as raised:
        Exporter(config)
    assert raised.value.problems == [
        "otlp.endpoint: the OTLP push needs the otlp extra (pip install 'litellm-exporter[otlp]')"
    ]
    assert dataclasses.replace(config.otlp, endpoint=None).enabled is False


def test_the_collector_configuration_scrapes_the_exporter_and_sends_otlp():
    repo = Path(__file__).resolve().parent.parent
    config = yaml.safe_load((repo / "deploy" / "otel-collector.yaml").read_text())
    pipeline = config["service"]["pipelines"]["metrics"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    scrape = config["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())["services"]
    port = compose["exporter"]["ports"][0].split(":")[-1]
    assert scrape["static_configs"][0]["targets"] == [f"exporter:{port}"]
    assert list(config["exporters"]) == ["otlphttp"]
