"""Latency histograms from LiteLLM_SpendLogs: each row counted once, late rows included."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from exporter.config_schema import DEFAULT_BUCKETS, DEFAULT_TTFT_BUCKETS
from exporter.demo.traffic import random_requests

from .support.exporters import poll, scrape


def expected_buckets(conn: psycopg.Connection, expression: str, bounds, where: str = "TRUE"):
    """Cumulative counts per model group and bound, and the sums, computed by PostgreSQL."""
    rows = conn.execute(
        f"""SELECT coalesce(model_group, ''), {expression} AS v FROM "LiteLLM_SpendLogs" WHERE {where}"""
    ).fetchall()
    counts: dict[tuple[str, str], float] = {}
    sums: dict[str, float] = {}
    for model_group, value in rows:
        value = max(0.0, float(value))
        sums[model_group] = sums.get(model_group, 0.0) + value
        for bound in (*bounds, float("inf")):
            key = (model_group, "+Inf" if bound == float("inf") else repr(float(bound)))
            counts[key] = counts.get(key, 0.0) + (1.0 if value <= bound else 0.0)
    return counts, sums


DURATION = """coalesce("request_duration_ms" / 1000.0, extract(epoch FROM ("endTime" - "startTime")))::float8"""
TTFT = """extract(epoch FROM ("completionStartTime" - "startTime"))::float8"""
STREAMED = """"completionStartTime" IS NOT NULL AND "completionStartTime" < "endTime\""""


def histogram(samples, name: str):
    buckets = {
        (dict(labels)["model_group"], dict(labels)["le"]): value
        for labels, value in samples.get(f"{name}_bucket", {}).items()
    }
    sums = {dict(labels)["model_group"]: value for labels, value in samples.get(f"{name}_sum", {}).items()}
    return buckets, sums


def assert_matches(conn, samples):
    for name, expression, bounds, where in (
        ("litellm_request_duration_seconds", DURATION, DEFAULT_BUCKETS, "TRUE"),
        ("litellm_time_to_first_token_seconds", TTFT, DEFAULT_TTFT_BUCKETS, STREAMED),
    ):
        want_buckets, want_sums = expected_buckets(conn, expression, bounds, where)
        got_buckets, got_sums = histogram(samples, name)
        assert got_buckets == want_buckets, name
        assert got_sums.keys() == want_sums.keys()
        for group, value in want_sums.items():
            assert abs(got_sums[group] - value) < 1e-6, (name, group)


def test_histograms_count_every_row_once_including_late_ones(make_exporter, writer, rng, world, clock, conn):
    exporter = make_exporter()
    batch = random_requests(rng, world, 120, clock.now - timedelta(minutes=4), clock.now)
    # Some rows carry no request_duration_ms: endTime - startTime stands in.
    batch[0] = type(batch[0])(**{**batch[0].__dict__, "duration_ms": None})
    writer.record(*batch)
    writer.flush(clock.now)
    poll(exporter)
    assert_matches(conn, scrape(exporter))

    for _ in range(3):
        clock.advance(minutes=1)
        # A flush with fresh rows and rows that started minutes ago (long streams, a held-back pod).
        writer.record(*random_requests(rng, world, 30, clock.now - timedelta(seconds=30), clock.now))
        writer.record(
            *random_requests(rng, world, 10, clock.now - timedelta(minutes=8), clock.now - timedelta(minutes=6))
        )
        writer.flush(clock.now)
        poll(exporter)
        poll(exporter)  # polling again counts nothing twice
        assert_matches(conn, scrape(exporter))


def test_rows_older_than_the_margin_when_the_exporter_starts_are_not_counted(
    make_exporter, writer, rng, world, clock, conn
):
    writer.record(*random_requests(rng, world, 20, clock.now - timedelta(hours=3), clock.now - timedelta(hours=2)))
    writer.flush(clock.now)
    exporter = make_exporter()
    poll(exporter)
    buckets, _ = histogram(scrape(exporter), "litellm_request_duration_seconds")
    assert buckets == {}
    margin = exporter.config.latency.late_margin
    recent = random_requests(rng, world, 15, clock.now - timedelta(seconds=margin / 2), clock.now)
    writer.record(*recent)
    writer.flush(clock.now)
    poll(exporter)
    buckets, _ = histogram(scrape(exporter), "litellm_request_duration_seconds")
    assert sum(v for (group, le), v in buckets.items() if le == "+Inf") == 15.0
