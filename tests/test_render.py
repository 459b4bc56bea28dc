"""The text exposition as served, held against prometheus-client's parsers: any label value,
the omitted overflow label, histograms, and the cache that keeps a family's lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.families import Family, Histogram, build
from exporter.render import FamilyRenderer

from .support.exporters import parse_samples, samples_of


def served(families: list[Family], *, openmetrics: bool = False) -> str:
    text = b"".join(FamilyRenderer().render(families, openmetrics=openmetrics)).decode()
    return text + "# EOF\n" if openmetrics else text


OVERFLOW = ("team_id", "overflow_set")
FAMILIES = [
    build("litellm_spend_usd", "Spend.", "counter", OVERFLOW, [(("a", ""), 1.5), (("__other__", "d1"), 2.0)],
          omit_empty=("overflow_set",)),
    build("litellm_db_up", "Up.", "gauge", (), [((), 1.0)]),
    build("litellm_budget", "Budget.", "gauge", ("key",), [(("k",), float("inf")), (("j",), -0.0)]),
    build("litellm_request_duration_seconds", "Durations.", "histogram", ("model_group",),
          [(("g",), Histogram(((0.5, 1.0), (float("inf"), 3.0)), 4.25))]),
]  # fmt: skip


def test_the_served_text_says_what_the_families_hold():
    assert parse_samples(served(FAMILIES)) == samples_of(FAMILIES)
    text = served(FAMILIES)
    # An empty overflow label is left off: Prometheus reads it as absent anyway.
    assert 'litellm_spend_usd_total{team_id="a"} 1.5' in text
    assert 'litellm_spend_usd_total{overflow_set="d1",team_id="__other__"} 2.0' in text
    assert "# TYPE litellm_spend_usd_total counter" in text and 'litellm_budget{key="k"} +Inf' in text


def test_openmetrics_is_the_same_samples():
    families = {f.name: f for f in parse_openmetrics(served(FAMILIES, openmetrics=True))}
    assert families["litellm_spend_usd"].type == "counter"
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples}
    expected = {
        (name, labels): value for name, series in samples_of(FAMILIES).items() for labels, value in series.items()
    }
    assert samples == expected


def test_a_family_unchanged_is_not_rendered_again():
    renderer = FamilyRenderer()
    first = renderer.samples(FAMILIES[0])
    assert renderer.samples(FAMILIES[0]) is first
    changed = build("litellm_spend_usd", "Spend.", "counter", OVERFLOW, [(("a", ""), 9.0)])
    assert renderer.samples(changed) != first


characters = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(characters, max_size=30), min_size=1, max_size=5, unique=True), number=st.floats())
def test_any_label_value_parses_back_as_itself(values, number):
    family = build(
        "litellm_x", 'Help with "quotes", \\ and\nnewlines.', "gauge", ("v",), [((v,), number) for v in values]
    )
    parsed = {s.labels["v"]: s.value for f in text_string_to_metric_families(served([family])) for s in f.samples}
    want = {family.labels_of((v,))["v"]: number for v in values}
    assert parsed.keys() == want.keys()
    assert all(parsed[k] == want[k] or (parsed[k] != parsed[k] and want[k] != want[k]) for k in want)
