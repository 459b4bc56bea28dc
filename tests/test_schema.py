"""The schema layer alone (exporter/schema.py): each validator's values and its one line per
problem, path first; the configuration's own keys are test_config.py's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import schema
from exporter.schema import Field, SchemaError


def problems(validator, value, path="a.b") -> list[str]:
    with pytest.raises(SchemaError) as raised:
        schema.validate_one(path, value, validator)
    return raised.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0), ("45", 45.0)]
)
def test_durations_take_a_unit_or_seconds(text, seconds):
    assert schema.validate_one("d", text, schema.duration()) == seconds
    assert schema.parse_duration(schema.format_duration(seconds)) == seconds


def test_a_duration_out_of_its_range_or_form_is_one_line():
    assert problems(schema.duration(), "5 parsecs") == [
        "a.b: invalid duration '5 parsecs' (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)"
    ]
    assert problems(schema.duration(minimum=1), "1s") == ["a.b: must be longer than 1s, got '1s'"]
    assert problems(schema.duration(maximum=60), "2m") == ["a.b: must be at most 60s, got '2m'"]
    assert problems(schema.duration(), True) == [
        "a.b: invalid duration a boolean (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)"
    ]


@given(st.integers(min_value=1, max_value=10**7))
def test_format_duration_reads_back(milliseconds):
    seconds = milliseconds / 1000
    assert schema.parse_duration(schema.format_duration(seconds)) == pytest.approx(seconds, abs=0.0005)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (":8748", ("0.0.0.0", 8748)),
        ("127.0.0.1:9", ("127.0.0.1", 9)),
        ("[::1]:8748", ("::1", 8748)),
        ("host.example:1", ("host.example", 1)),
        ("::1:8748", None),
        ("host:0", None),
        ("host:65536", None),
        ("host", None),
    ],
)
def test_listen_addresses(text, parsed):
    assert schema.parse_listen(text) == parsed
    if parsed is not None:
        assert schema.parse_listen(schema.format_listen(*parsed)) == parsed


def test_environment_references_resolve_or_name_the_missing_variable():
    environ = {"HOST": "db", "PASSWORD": "s3cret"}
    assert schema.expand_env("x", "os.environ/PASSWORD", environ) == "s3cret"
    assert schema.expand_env("x", "postgresql://u@${HOST}/l", environ) == "postgresql://u@db/l"
    with pytest.raises(Exception, match="x: environment variable NOPE is not set"):
        schema.expand_env("x", "${NOPE}", environ)


def test_buckets_are_sorted_distinct_positive_numbers():
    assert schema.validate_one("b", [5, 0.5, 1], schema.buckets()) == [0.5, 1.0, 5.0]
    assert problems(schema.buckets(), [1, 1]) == ["a.b: bucket bounds must be distinct"]
    assert problems(schema.buckets(), [1, -2]) == ["a.b[1]: expected a positive number of seconds, got the number -2"]


def test_url_lists_take_distinct_http_urls():
    assert schema.validate_one("t", ["http://a:4000/"], schema.url_list()) == ["http://a:4000"]
    assert problems(schema.url_list(), ["ftp://a"]) == ["a.b[0]: expected an http:// or https:// URL, got 'ftp://a'"]
    assert problems(schema.url_list(), ["http://a", "http://a/"]) == ["a.b: targets must be distinct"]


def test_a_section_reports_every_problem_by_its_path():
    root = schema.section(
        {
            "name": Field(schema.string()),
            "inner": Field(schema.section({"n": Field(schema.integer(minimum=1), 1)}), {}),
            "mode": Field(schema.choice("a", "b"), "a"),
        }
    )
    assert schema.validate({"name": "x"}, root) == {"name": "x", "inner": {"n": 1}, "mode": "a"}
    with pytest.raises(SchemaError) as raised:
        schema.validate({"inner": {"n": 0, "typo": 1}, "mode": "c", "odd\nkey": 1}, root)
    assert raised.value.problems == [
        '"odd\\nkey": unknown key (expected one of: inner, mode, name)',
        "name: is required",
        "inner.typo: unknown key (expected one of: n)",
        "inner.n: must be at least 1, got 0",
        "mode: expected one of a, b, got 'c'",
    ]
    with pytest.raises(SchemaError) as raised:
        schema.validate([1], root)
    assert raised.value.problems == ["top level: expected a mapping, got a list"]
