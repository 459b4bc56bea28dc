"""The ``otlp:`` configuration section, and the standard OpenTelemetry variables that override it.

The variables are the ones every OpenTelemetry SDK reads, so that a deployment configured for
OTLP needs nothing of this exporter's own: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, to
which ``/v1/metrics`` is added), ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` (the URL as it is),
``OTEL_EXPORTER_OTLP[_METRICS]_HEADERS``, ``OTEL_EXPORTER_OTLP[_METRICS]_TIMEOUT`` and
``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds), ``OTEL_EXPORTER_OTLP[_METRICS]_COMPRESSION``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``; ``OTEL_SDK_DISABLED=true`` or
``OTEL_METRICS_EXPORTER=none`` turn the push off. As with the exporter's flags, a variable wins
over the file.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import schema
from ..schema import Field

SERVICE_NAME = "litellm-exporter"
# The path of the metrics signal under an OTLP/HTTP base URL.
METRICS_PATH = "/v1/metrics"


def parse_pairs(text: str) -> tuple[tuple[str, str], ...] | None:
    """``key=value,key2=value2`` with percent-encoded values (the W3C baggage form the
    OpenTelemetry variables use); None where it is not of that form."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            return None
        pairs.append((key.strip(), urllib.parse.unquote(value.strip())))
    return tuple(pairs)


def _pairs() -> schema.Validator:
    def check(path: str, value: Any) -> tuple[tuple[str, str], ...]:
        text = schema.string(non_empty=False)(path, value)
        pairs = parse_pairs(text)
        if pairs is None:
            raise schema.invalid(path, "expected key=value pairs separated by commas")
        return pairs

    return schema.Check(check, format_pairs)


def format_pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    """What ``parse_pairs`` reads back."""
    return ",".join(f"{key}={urllib.parse.quote(value, safe='')}" for key, value in pairs)


SECTION = schema.section(
    {
        "endpoint": Field(
            schema.url(),
            None,
            "OTLP/HTTP metrics URL to push every family to, as it is (a collector's"
            " `http://HOST:4318/v1/metrics`); null: no push, unless `OTEL_EXPORTER_OTLP_ENDPOINT` or"
            " `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` names one",
        ),
        "headers": Field(
            _pairs(),
            "",
            "request headers, `key=value` pairs separated by commas, values percent-encoded (a vendor's"
            " API key: `os.environ/NAME` keeps it out of the file)",
        ),
        "interval": Field(schema.duration(minimum=0.1, maximum=86400), 60.0, "how often the families are pushed"),
        "timeout": Field(
            schema.duration(minimum=0.1, maximum=300),
            10.0,
            "how long one request may take; failed requests are retried with backoff until the next push is due",
        ),
        "compression": Field(schema.choice("gzip", "none"), "gzip", "the request body's encoding"),
        "resource_attributes": Field(
            _pairs(),
            "",
            "attributes of the resource beside `service.name` and `service.instance.id`, `key=value` pairs",
        ),
    }
)


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str | None
    headers: tuple[tuple[str, str], ...]
    interval: float
    timeout: float
    compression: str
    resource_attributes: tuple[tuple[str, str], ...]

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


def _milliseconds(name: str, text: str, problems: list[str]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86_400_000:
        problems.append(f"{name}: expected a number of milliseconds, got {text!r}")
        return None
    return value / 1000


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def apply_environment(config: OtlpConfig, environ: Mapping[str, str]) -> tuple[OtlpConfig, list[str]]:
    """The section with the standard variables applied; and one line per variable that cannot
    be read, naming it."""
    problems: list[str] = []
    changes: dict[str, Any] = {}
    # The signal's own URL as it is, else the base URL with the signal's path; each checked as
    # the user wrote it, so that a problem names what was given.
    found = _first(environ, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if found is not None:
        try:
            url = schema.validate_one(found[0], found[1], schema.url())
            changes["endpoint"] = url if found[0].endswith("METRICS_ENDPOINT") else url.rstrip("/") + METRICS_PATH
        except schema.SchemaError as exc:
            problems.extend(exc.problems)
    protocol = _first(environ, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is not None and protocol[1] != "http/protobuf":
        problems.append(f"{protocol[0]}: only http/protobuf is supported, got {protocol[1]!r}")
    headers = _first(environ, "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    if headers is not None:
        pairs = parse_pairs(headers[1])
        if pairs is None:
            problems.append(f"{headers[0]}: expected key=value pairs separated by commas")
        else:
            changes["headers"] = pairs
    for key, names in (
        ("timeout", ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")),
        ("interval", ("OTEL_METRIC_EXPORT_INTERVAL",)),
    ):
        given = _first(environ, *names)
        if given is not None:
            seconds = _milliseconds(given[0], given[1], problems)
            if seconds is not None:
                changes[key] = seconds
    compression = _first(environ, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
    if compression is not None:
        if compression[1] not in ("gzip", "none"):
            problems.append(f"{compression[0]}: expected gzip or none, got {compression[1]!r}")
        else:
            changes["compression"] = compression[1]
    attributes = dict(config.resource_attributes)
    given = _first(environ, "OTEL_RESOURCE_ATTRIBUTES")
    if given is not None:
        pairs = parse_pairs(given[1])
        if pairs is None:
            problems.append("OTEL_RESOURCE_ATTRIBUTES: expected key=value pairs separated by commas")
        else:
            attributes.update(pairs)
    service = _first(environ, "OTEL_SERVICE_NAME")
    if service is not None:
        attributes["service.name"] = service[1]
    changes["resource_attributes"] = tuple(attributes.items())
    # OTEL_METRICS_EXPORTER lists the exporters an SDK runs: this push is its "otlp".
    chosen = {name.strip().lower() for name in environ.get("OTEL_METRICS_EXPORTER", "otlp").split(",")}
    off = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not chosen & {"otlp", ""}
    if off:
        changes["endpoint"] = None
    return dataclasses.replace(config, **changes), problems
