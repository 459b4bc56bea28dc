"""Plain, immutable metric data that collectors hand to the exposition layer.

Collectors never touch prometheus-client objects: they return ``Family`` values, which
``render.FamilyRenderer`` serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import HistogramMetricFamily, Metric

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound, count) ending with +Inf, and the sum."""

    buckets: tuple[tuple[float, float], ...]
    total: float


Value = float | Histogram


@dataclass(frozen=True)
class Family:
    """One metric family: its name (without ``_total`` for counters), help, labels and samples."""

    name: str
    documentation: str
    kind: Kind
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], Value], ...] = field(default=())
    # Labels left off a sample where their value is empty (Prometheus reads an empty label as
    # an absent one): the overflow series' identity label, which only ``__other__`` carries.
    omit_empty: frozenset[str] = frozenset()

    @property
    def sample_name(self) -> str:
        """The name its samples are served under (counters end in ``_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def labels_of(self, values: tuple[str, ...]) -> dict[str, str]:
        """A sample's labels as served: the one place that says which are left off and how a
        value is made valid UTF-8."""
        return {n: clean_label(v) for n, v in zip(self.labels, values, strict=True) if v or n not in self.omit_empty}

    def to_metric(self) -> Metric:
        """As prometheus-client's metric family: how a histogram is rendered."""
        assert self.kind == "histogram", "counters and gauges are rendered by render.FamilyRenderer"
        histogram = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labels))
        for values, value in self.samples:
            assert isinstance(value, Histogram)
            buckets = [(_bound(le), count) for le, count in value.buckets]
            labels = self.labels_of(values)
            histogram.add_metric([labels.get(n, "") for n in self.labels], buckets, value.total)
        return histogram


def clean_label(value: str) -> str:
    """A label value as valid UTF-8: bytes that were not (kept as surrogates when read from a
    SQL_ASCII database, so that they go back to it unchanged) become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(float(le))


def gauge(name: str, documentation: str, value: float, **labels: str) -> Family:
    names = tuple(labels)
    return Family(name, documentation, "gauge", names, ((tuple(labels[n] for n in names), value),))


def build(
    name: str,
    documentation: str,
    kind: Kind,
    labels: Iterable[str],
    samples: Iterable[tuple[tuple[str, ...], Value]],
    *,
    omit_empty: Iterable[str] = (),
) -> Family:
    return Family(name, documentation, kind, tuple(labels), tuple(samples), frozenset(omit_empty))
