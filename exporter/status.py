"""What the landing page and ``/status`` say: is the exporter working, and if not, why.

Built from what the runner already holds (each collector's last poll and the families it
served), never from a query of its own, so that the page answers at once while the database is
away.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from . import __version__
from .families import Family, Histogram
from .runner import Runner


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _samples(families: list[Family], name: str) -> list[tuple[dict[str, str], float]]:
    for family in families:
        if family.name == name:
            return [
                (dict(zip(family.labels, labels, strict=True)), float(value))
                for labels, value in family.samples
                if not isinstance(value, Histogram)
            ]
    return []


def _value(families: list[Family], name: str) -> float | None:
    found = _samples(families, name)
    return found[0][1] if found else None


def series_count(families: list[Family]) -> int:
    """Series served: a histogram counts each bucket, its sum and its count."""
    return sum(
        len(value.buckets) + 2 if isinstance(value, Histogram) else 1
        for family in families
        for _, value in family.samples
    )


def collect(runner: Runner, database: str, otlp: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status as plain data (the JSON of ``/status``); ``otlp``: the pusher's, where a push
    is configured."""
    families = runner.families()
    collectors = runner.status()
    by_name = {c.name: c for c in collectors}
    up = _value(families, "litellm_db_up")
    problem = runner.database_problem
    tables = _value(families, "litellm_db_litellm_tables")
    database_status: dict[str, Any] = {
        "dsn": database,
        "up": None if up is None else up == 1.0,
        "problem": problem or (by_name["database"].error if up == 0.0 else None),
        "version": next((labels["version"] for labels, _ in _samples(families, "litellm_db_info")), None),
        "replica": _value(families, "litellm_db_in_recovery") == 1.0,
        "schema": {
            "migration": next(
                (labels["migration"] for labels, _ in _samples(families, "litellm_db_schema_migration_info")), None
            ),
            "litellm_tables": None if tables is None else int(tables),
            "sources": {
                labels["family"]: labels["source"] for labels, _ in _samples(families, "litellm_exporter_source_info")
            },
        },
        "findings": runner.problems(),
    }
    proxies: dict[str, dict[str, Any]] = {}
    for name in ("litellm_proxy_up", "litellm_proxy_ready", "litellm_proxy_db_connected"):
        for labels, value in _samples(families, name):
            proxies.setdefault(labels["target"], {})[name.removeprefix("litellm_proxy_")] = value == 1.0
    for labels, _ in _samples(families, "litellm_proxy_info"):
        proxies.setdefault(labels["target"], {})["version"] = labels["version"]
    over_cap = {
        labels["family"]: int(value) for labels, value in _samples(families, "litellm_exporter_entities_over_cap")
    }
    not_ready = runner.not_ready()
    return {
        "version": __version__,
        "ready": not not_ready,
        "not_ready": not_ready,
        "database": database_status,
        "collectors": [
            {
                "name": c.name,
                "enabled": c.enabled,
                "interval_seconds": c.interval,
                "last_poll": _when(c.last_poll),
                "last_success": _when(c.last_success),
                "duration_seconds": c.duration,
                "success": c.success,
                "last_error": c.error,
                "failed_polls": c.failures,
                "progress": c.progress,
            }
            for c in collectors
        ],
        "series": {"served": series_count(families), "entities_over_cap": over_cap},
        "proxies": [{"target": target, **state} for target, state in sorted(proxies.items())],
        "notes": _notes(families, by_name.get("usage"), database_status),
        "otlp": None if otlp is None else {**otlp, **{k: _when(otlp[k]) for k in ("last_push", "last_success")}},
    }


def _notes(families: list[Family], usage: Any, database: dict[str, Any]) -> list[str]:
    notes = []
    # Only where LiteLLM's tables are there: a database without them is a finding, not a quiet proxy.
    usable = not database["findings"] and (database["schema"]["litellm_tables"] or 0) > 0
    if usable and usage is not None and usage.success and not _samples(families, "litellm_requests"):
        notes.append(
            "LiteLLM has recorded no requests in this database yet: the usage families are empty until the"
            " proxy's first flush of spend (about 10 seconds after its first request)."
        )
    return notes


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.bad{color:#b00}.good{color:#070}"
)


def _cell(value: Any) -> str:
    if value is None:
        return "<td>-</td>"
    if value is True:
        return '<td class="good">yes</td>'
    if value is False:
        return '<td class="bad">no</td>'
    if isinstance(value, float):
        return f"<td>{value:.3g}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(status: dict[str, Any]) -> str:
    """The landing page: the same data as ``/status``, as plain HTML with no script."""
    db = status["database"]
    if status["ready"] and db["up"]:
        verdict = '<p class="good">Working: every collector has polled successfully.</p>'
    else:
        reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in status["not_ready"])
        verdict = f'<p class="bad">Not working yet:</p><ul class="bad">{reasons}</ul>' if reasons else ""
        verdict = verdict or '<p class="bad">Not working: the database does not answer.</p>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>litellm-exporter</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>litellm-exporter {html.escape(status['version'])}</h1>",
        verdict,
        '<p><a href="metrics">/metrics</a> &middot; <a href="status">/status</a> (this page as JSON) &middot;'
        ' <a href="healthz">/healthz</a> &middot; <a href="ready">/ready</a></p>',
    ]
    parts += [f"<p>{html.escape(note)}</p>" for note in status["notes"]]
    schema = db["schema"]
    parts += [
        "<h2>Database</h2>",
        _table(
            ["database", "up", "server", "role", "LiteLLM migration", "LiteLLM tables", "problem"],
            [
                [
                    db["dsn"],
                    db["up"],
                    db["version"],
                    None if db["up"] is None else ("standby (read replica)" if db["replica"] else "primary"),
                    schema["migration"] or "unknown",
                    None if schema["litellm_tables"] is None else int(schema["litellm_tables"]),
                    db["problem"],
                ]
            ],
        ),
    ]
    if schema["sources"]:
        parts += [
            "<h3>Where the usage families come from</h3>",
            _table(["family", "source"], [[f, s] for f, s in sorted(schema["sources"].items())]),
        ]
    parts += [
        "<h2>Collectors</h2>",
        _table(
            [
                "collector",
                "enabled",
                "every (s)",
                "last poll",
                "last success",
                "took (s)",
                "ok",
                "failed polls",
                "last error",
                "under way",
            ],
            [
                [
                    c["name"],
                    "on" if c["enabled"] else "off",
                    c["interval_seconds"],
                    c["last_poll"],
                    c["last_success"],
                    c["duration_seconds"],
                    c["success"],
                    c["failed_polls"],
                    c["last_error"],
                    c["progress"],
                ]
                for c in status["collectors"]
            ],
        ),
        "<h2>Series</h2>",
        f"<p>{status['series']['served']} series served.</p>",
    ]
    over = {family: count for family, count in status["series"]["entities_over_cap"].items() if count}
    if over:
        parts.append(
            _table(
                ["capped family", "entities left out (summed into __other__)"],
                [[family, count] for family, count in sorted(over.items())],
            )
        )
    else:
        parts.append("<p>No family's cap leaves an entity out.</p>")
    if status["proxies"]:
        parts += [
            "<h2>Proxies</h2>",
            _table(
                ["target", "live", "ready", "its database", "version"],
                [
                    [p["target"], p.get("up"), p.get("ready"), p.get("db_connected"), p.get("version")]
                    for p in status["proxies"]
                ],
            ),
        ]
    otlp = status.get("otlp")
    if otlp:
        parts += [
            "<h2>OTLP push</h2>",
            _table(
                [
                    "endpoint",
                    "every (s)",
                    "pushes",
                    "last push",
                    "last success",
                    "ok",
                    "failures",
                    "retries",
                    "data points",
                    "last error",
                ],
                [
                    [
                        otlp["endpoint"],
                        otlp["interval_seconds"],
                        otlp["exports"],
                        otlp["last_push"],
                        otlp["last_success"],
                        otlp["success"],
                        ", ".join(f"{reason}: {n}" for reason, n in otlp["failures"].items()) or 0,
                        otlp["retries"],
                        otlp["data_points"],
                        otlp["last_error"],
                    ]
                ],
            ),
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)
