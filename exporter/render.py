"""The text exposition of the snapshots, fast enough to run on every scrape.

prometheus-client renders about 50,000 samples a second, so a 25k-series snapshot would take
half a second per scrape. Here a family's lines are kept until the family changes, and the
label part of a line is kept while its series exists, so a poll that moves a few counters costs
a dictionary lookup and a float format per sample. Counters and gauges are rendered here,
histograms (a few dozen series) by prometheus-client.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .families import Family

_EOF = b"# EOF\n"


def _number(value: float) -> str:
    """A sample value as the text format writes it: repr, which both parsers read, is much
    faster than prometheus-client's Go-style formatting; infinities and NaN as Go spells them."""
    text = repr(float(value))
    return text if text[-1].isdigit() else str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _One(Collector):
    def __init__(self, family: Family) -> None:
        self._family = family

    def collect(self):  # type: ignore[no-untyped-def]
        yield self._family.to_metric()


class FamilyRenderer:
    """Renders families by name, keeping what it rendered last for each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (family rendered, sample lines)
        self._cache: dict[str, tuple[Family, bytes]] = {}
        # The label part of each series' lines, by label names: the families of one group (a
        # key's spend, requests, tokens, ...) share their label sets, and so these strings.
        self._texts: dict[tuple[tuple[str, ...], frozenset[str]], dict[tuple[str, ...], str]] = {}

    def samples(self, family: Family) -> bytes:
        """The family's sample lines, the same in both formats."""
        with self._lock:
            cached = self._cache.get(family.name)
        if cached is not None and (cached[0] is family or cached[0] == family):
            return cached[1]
        schema = (family.labels, family.omit_empty)
        with self._lock:
            old = self._texts.get(schema, {})
        texts: dict[tuple[str, ...], str] = {}
        sample = family.sample_name
        lines = []
        for values, value in family.samples:
            text = old.get(values)
            if text is None:
                parts = [f'{name}="{_escape(label)}"' for name, label in sorted(family.labels_of(values).items())]
                text = f"{{{','.join(parts)}}} " if parts else " "
            texts[values] = text
            lines.append(sample + text + _number(value))  # type: ignore[arg-type]
        body = ("\n".join(lines) + "\n").encode() if lines else b""
        with self._lock:
            self._cache[family.name] = (family, body)
            self._texts[schema] = texts
        return body

    def warm(self, families: Sequence[Family]) -> None:
        """Render the sample lines of new families ahead of the scrape that will want them."""
        for family in families:
            if family.kind != "histogram":
                self.samples(family)

    def render(self, families: list[Family], *, openmetrics: bool) -> list[bytes]:
        """The document's parts, in order: joined by the caller, so that the whole document is
        not held beside the families' parts between scrapes."""
        parts: list[bytes] = []
        names = set()
        for family in families:
            names.add(family.name)
            if family.kind == "histogram":
                registry = CollectorRegistry(auto_describe=False)
                registry.register(_One(family))
                body = (openmetrics_latest if openmetrics else text_latest)(registry)
                parts.append(body[: -len(_EOF)] if openmetrics and body.endswith(_EOF) else body)
                continue
            help_name = family.name if openmetrics or family.kind != "counter" else f"{family.name}_total"
            doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
            if openmetrics:
                doc = doc.replace('"', r"\"")
            parts.append(f"# HELP {help_name} {doc}\n# TYPE {help_name} {family.kind}\n".encode())
            parts.append(self.samples(family))
        with self._lock:
            for gone in self._cache.keys() - names:
                del self._cache[gone]
            schemas = {(family.labels, family.omit_empty) for family in families}
            for unused in self._texts.keys() - schemas:
                del self._texts[unused]
        return parts
