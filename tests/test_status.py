"""The landing page and /status: the same causes as the log, and nothing a new user would misread."""

from __future__ import annotations

import logging

from exporter.config import parse
from exporter.status import render_html

from .support import pg
from .support.exporters import poll


def test_a_database_without_litellm_tables_is_named_once_and_not_called_quiet(admin_dsn, make_exporter, caplog):
    name = pg.unique_name("litellm_exporter_empty")
    dsn = pg.create_database(admin_dsn, name)
    try:
        exporter = make_exporter(parse({"database": {"dsn": dsn}}))
        caplog.set_level(logging.INFO, logger="exporter")
        for _ in range(3):
            for collector in exporter.runner.collectors:
                exporter.runner.poll_once(collector)
        # The cause, once; and the one collector that cannot poll at all without it.
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2, lines
        assert "has none of LiteLLM's tables" in lines[0] or "has none of LiteLLM's tables" in lines[1]
        status = exporter.status()
        assert status["ready"] is False
        assert status["database"]["schema"]["litellm_tables"] == 0
        assert isinstance(status["database"]["schema"]["litellm_tables"], int)
        # The cause, and not the "no requests yet" note meant for a quiet proxy.
        assert status["notes"] == []
        assert len(status["not_ready"]) == 1 and "has none of LiteLLM's tables" in status["not_ready"][0]
        page = render_html(status)
        assert page.count("has none of LiteLLM&#x27;s tables") == 1
    finally:
        exporter.db.close()
        pg.drop_database(admin_dsn, name)


def test_the_page_shows_what_is_off_as_off_and_no_table_of_zeros(make_exporter):
    exporter = make_exporter()
    poll(exporter)
    status = exporter.status()
    proxy = next(c for c in status["collectors"] if c["name"] == "proxy")
    assert proxy["enabled"] is False
    assert status["series"]["entities_over_cap"] and not any(status["series"]["entities_over_cap"].values())
    page = render_html(status)
    row = next(line for line in page.split("<tr>") if line.startswith("<td>proxy</td>"))
    assert "<td>off</td>" in row and 'class="bad"' not in row
    assert "capped family" not in page and "No family's cap leaves an entity out." in page
    assert "Working: every collector has polled successfully." in page
