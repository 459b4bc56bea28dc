"""Property tests: whatever the database holds in a label, the exposition parses; whatever the
configuration file holds, the answer is one line per problem naming its key, and exit code 2."""

from __future__ import annotations

import itertools
import re
import subprocess
from datetime import timedelta

import psycopg
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import main
from exporter.config import ConfigError, parse
from exporter.demo.traffic import Request

from .support.exporters import poll
from .support.tools import require

# PostgreSQL text holds any character but NUL; surrogates are not characters.
characters = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
label_values = st.one_of(
    st.text(characters, max_size=40),
    st.sampled_from(["", '"', "\\", "\n", "\\n", '\\"', '{a="b"}', "# HELP x", "\r\n", "\u2028", "é", "日本語", "😀"]),
    st.builds(lambda c: c * 10_000, st.sampled_from(["a", '"', "\\", "\n", "é"])),
)
counter = itertools.count()
PROFILE = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def labels_of(text: str, parser) -> list[dict[str, str]]:
    return [s.labels for f in parser(text) for s in f.samples]


@PROFILE
@given(
    team_alias=st.one_of(st.none(), label_values),
    key_alias=st.one_of(st.none(), label_values),
    tag=label_values,
    model_group=label_values,
    end_user=label_values,
)
def test_any_label_value_from_the_database_gives_a_parseable_exposition(
    make_exporter, entities, writer, clock, team_alias, key_alias, tag, model_group, end_user
):
    n = next(counter)
    team = entities.team(f"fuzz-team-{n}", team_alias)
    token = entities.key(f"sk-fuzz-{n}", key_alias, team_id=team)
    writer.record(
        Request(
            token,
            model_group,
            "m",
            "p",
            0.5,
            1,
            1,
            clock.now - timedelta(seconds=n),
            team_id=team,
            tags=(tag,),
            end_user=end_user or None,
        )
    )
    writer.flush(clock.now)
    exporter = make_exporter()
    poll(exporter)

    text = exporter.exposition.render("")[0].decode()
    parsed = labels_of(text, text_string_to_metric_families)
    assert {"team_id": team, "team_alias": team_alias or "", "model_group": model_group} in parsed
    assert {"tag": tag, "model_group": model_group} in parsed
    om = exporter.exposition.render("application/openmetrics-text; version=1.0.0")[0].decode()
    assert {
        "key_hash": token[:12],
        "key_alias": key_alias or "",
        "team_id": team,
        "model_group": model_group,
    } in labels_of(om, parse_openmetrics)


def test_promtool_accepts_an_exposition_full_of_hostile_labels(make_exporter, entities, writer, clock):
    for n, value in enumerate(['"quoted"', "back\\slash", "new\nline", "", "é😀", "x" * 10_000, "\r", 'a="b",c']):
        team = entities.team(f"hostile-{n}", value)
        token = entities.key(f"sk-hostile-{n}", value, team_id=team)
        writer.record(Request(token, value or "g", value, value, 0.1, 1, 1, clock.now, team_id=team, tags=(value,)))
    writer.flush(clock.now)
    exporter = make_exporter()
    poll(exporter)
    text = exporter.exposition.render("")[0]
    result = subprocess.run(
        [require("promtool", "prometheus"), "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# Configuration documents: known keys with values of every type, and unknown keys.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["5s", "0s", "-1m", "1h", "x", "os.environ/NOPE_UNSET"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
KEYS = [
    "database",
    "web",
    "collectors",
    "dsn",
    "min_conns",
    "max_conns",
    "connect_timeout",
    "statement_timeout",
    "is_required",
    "listen",
    "usage",
    "budgets",
    "latency",
    "proxy",
    "interval",
    "entities",
    "key",
    "team",
    "targets",
    "buckets",
    "max_series",
    "late_margin",
    "bogus",
]
documents = st.recursive(values, lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)
# "path: message" on one line; a path part that is not a plain word is quoted.
PROBLEM = re.compile(r'^(top level|("([^"\\]|\\.)*"|[A-Za-z0-9_\[\]-]+)(\.("([^"\\]|\\.)*"|[A-Za-z0-9_\[\]-]+))*): .+$')


@settings(max_examples=300, deadline=None)
@given(document=documents)
def test_any_config_document_is_valid_or_one_line_per_problem(document):
    try:
        parse(document)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert "\n" not in problem and "\r" not in problem and PROBLEM.match(problem), problem


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_any_config_file_exits_0_or_2_without_a_traceback(document, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    code = main(["--config", str(path), "--check-config"])
    out, err = capsys.readouterr()
    assert code in (0, 2)
    assert "Traceback" not in out + err
    if code == 2:
        assert err and all(line.startswith("litellm-exporter: ") for line in err.splitlines())


def test_invalid_utf8_in_a_sql_ascii_database(admin_dsn, clock):
    # PostgreSQL stores any bytes in a SQL_ASCII database; LiteLLM's tables work there too.
    from exporter.app import Exporter
    from exporter.demo.schema import apply_migrations

    from .support import pg

    name = pg.unique_name("litellm_exporter_ascii")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    dsn = pg.with_database(admin_dsn, name)
    try:
        apply_migrations(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, max_budget, updated_at)"""
                """ VALUES (E'team-\\xff', E'caf\\xe9 \\xc3\\x28', 10, now())"""
            )
            conn.execute(
                """INSERT INTO "LiteLLM_DailyTeamSpend" (id, team_id, date, api_key, model_group, spend,"""
                """ api_requests, failed_requests, prompt_tokens, completion_tokens, updated_at)"""
                """ VALUES ('1', E'team-\\xff', %s, 'k', E'gr\\xfcp', 2.5, 1, 0, 1, 1, now())""",
                (clock.now.date().isoformat(),),
            )
        exporter = Exporter(parse({"database": {"dsn": dsn}}), clock=clock)
        exporter.db.open(wait=True)
        try:
            poll(exporter)
            text = exporter.exposition.render("")[0].decode()
        finally:
            exporter.db.close()
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert (
            samples[
                (
                    "litellm_team_spend_usd_total",
                    frozenset(
                        {("team_id", "team-\ufffd"), ("team_alias", "caf\ufffd \ufffd("), ("model_group", "gr\ufffdp")}
                    ),
                )
            ]
            == 2.5
        )
        assert (
            samples[
                (
                    "litellm_team_max_budget_usd",
                    frozenset({("team_id", "team-\ufffd"), ("team_alias", "caf\ufffd \ufffd(")}),
                )
            ]
            == 10.0
        )
        result = subprocess.run(
            [require("promtool", "prometheus"), "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    finally:
        pg.drop_database(admin_dsn, name)


def leaf_paths(section, prefix=()):
    """Every key of the configuration schema, as a path of keys."""
    from exporter.schema import Section

    for key, field in section.fields.items():
        path = (*prefix, key)
        yield path
        if isinstance(field.validate, Section):
            yield from leaf_paths(field.validate, path)


def with_value(path, value) -> dict:
    document: dict = {"database": {"dsn": "postgresql://u@db/x"}}
    node = document
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return document
    node[path[-1]] = value
    return document


def test_every_key_of_the_schema_is_fuzzed():
    from exporter.config_schema import ROOT

    paths = list(leaf_paths(ROOT))
    assert ("collectors", "usage", "entities", "team", "max_series") in paths
    assert len(paths) > 60, len(paths)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_value_for_any_key_is_valid_or_one_line_naming_it(data):
    from exporter.config_schema import ROOT

    path = data.draw(st.sampled_from(list(leaf_paths(ROOT))))
    value = data.draw(values)
    try:
        parse(with_value(path, value))
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert "\n" not in problem and PROBLEM.match(problem), problem
        # A problem names the key the value was given to, a key under it, or a section above it.
        key = ".".join(path)

        def related(problem: str) -> bool:
            where = problem.split(": ", 1)[0]
            return where == key or where.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{where}.")

        assert any(related(p) for p in exc.problems), (key, exc.problems)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_for_any_key_in_a_file_exits_0_or_2_in_lines_without_a_traceback(data, tmp_path_factory, capsys):
    from exporter.config_schema import ROOT

    path = data.draw(st.sampled_from(list(leaf_paths(ROOT))))
    document = with_value(path, data.draw(values))
    file = tmp_path_factory.mktemp("cfg") / "config.yaml"
    file.write_text(yaml.safe_dump(document, allow_unicode=True))
    code = main(["--config", str(file), "--check-config"])
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in out + err
    if code == 2:
        assert err and all(line.startswith("litellm-exporter: ") for line in err.splitlines())
