"""Configuration: every bad input gives one exact line naming the key, and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, parse
from exporter.config_file import DSN_VARIABLES, load
from exporter.config_schema import DEFAULT_PORT

REPO = Path(__file__).resolve().parent.parent
DSN = "postgresql://exporter@db.invalid:5432/litellm"

BAD = [
    ({}, "database.dsn: is required"),
    ({"database": []}, "database: expected a mapping, got a list"),
    ({"database": {"dsn": DSN, "max_conns": "many"}}, "database.max_conns: expected an integer, got 'many'"),
    ({"database": {"dsn": DSN, "max_conns": 0}}, "database.max_conns: must be at least 1, got 0"),
    ({"database": {"dsn": DSN, "max_conns": True}}, "database.max_conns: expected an integer, got a boolean"),
    (
        {"database": {"dsn": DSN, "min_conns": 5, "max_conns": 2}},
        "database.min_conns: must not exceed database.max_conns (2), got 5",
    ),
    (
        {"database": {"dsn": DSN, "bogus": 1}},
        "database.bogus: unknown key (expected one of: connect_timeout, dsn, is_required, max_conns, min_conns,"
        " statement_timeout)",
    ),
    (
        {"database": {"dsn": DSN, "connect_timeout": "5 parsecs"}},
        "database.connect_timeout: invalid duration '5 parsecs' (use a number of seconds or a unit: 500ms, 30s, 5m,"
        " 1h, 1d)",
    ),
    (
        {"database": {"dsn": DSN, "statement_timeout": "2h"}},
        "database.statement_timeout: must be at most 3600s, got '2h'",
    ),
    ({"database": {"dsn": DSN, "is_required": "yes"}}, "database.is_required: expected true or false, got 'yes'"),
    ({"database": {"dsn": 5432}}, "database.dsn: expected a string, got the number 5432"),
    ({"database": {"dsn": ""}}, "database.dsn: must not be empty"),
    (
        {"database": {"dsn": "os.environ/LITELLM_EXPORTER_UNSET"}},
        "database.dsn: environment variable LITELLM_EXPORTER_UNSET is not set",
    ),
    (
        {"database": {"dsn": "postgresql://u:${LITELLM_EXPORTER_UNSET}@db/x"}},
        "database.dsn: environment variable LITELLM_EXPORTER_UNSET is not set",
    ),
    (
        {"database": {"dsn": "host=db password=s3cret nonsense"}},
        "database.dsn: not a valid PostgreSQL connection string (expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        " or key=value pairs)",
    ),
    (
        {"database": {"dsn": DSN}, "web": {"listen": "nohost"}},
        "web.listen: expected HOST:PORT with a port from 1 to 65535, got 'nohost'",
    ),
    (
        {"database": {"dsn": DSN}, "web": {"listen": "0.0.0.0:70000"}},
        "web.listen: expected HOST:PORT with a port from 1 to 65535, got '0.0.0.0:70000'",
    ),
    (
        {"database": {"dsn": DSN}, "web": {"port": 1}},
        "web.port: unknown key (expected one of: config_file, enable_lifecycle, listen, max_connections,"
        " request_timeout)",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"usage": {"interval": 0}}},
        "collectors.usage.interval: must be longer than 0s, got the number 0",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"usage": {"interval": "soon"}}},
        "collectors.usage.interval: invalid duration 'soon'"
        " (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"usage": {"late_margin": "8d"}}},
        "collectors.usage.late_margin: must be at most 604800s, got '8d'",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"usage": {"entities": {"keys": {}}}}},
        "collectors.usage.entities.keys: unknown key (expected one of: agent, end_user, guardrail, key,"
        " organization, policy, tag, task, team, tool, user)",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"usage": {"entities": {"team": {"model_group": "no"}}}}},
        "collectors.usage.entities.team.model_group: expected true or false, got 'no'",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"budget": {}}},
        "collectors.budget: unknown key (expected one of: budgets, database, latency, max_gauge_age, proxy,"
        " proxy_state, usage)",
    ),
    (
        {"database": {"dsn": DSN}, "collectors": {"budgets": {"entities": {"team_member": {"only_with_limits": 1}}}}},
        "collectors.budgets.entities.team_member.only_with_limits: expected true or false, got the number 1",
    ),
]


@pytest.mark.parametrize(("document", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_config_is_one_line_naming_the_key(document, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LITELLM_EXPORTER_UNSET", raising=False)
    for variable in DSN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError) as raised:
        parse(document)
    assert raised.value.problems == [message]

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["--config", str(path), "--check-config"]) == 2
    out, err = capsys.readouterr()
    if message == "database.dsn: is required":
        # The command looks in the environment too, and says where it looked.
        message = (
            "database.dsn: no database given: pass --dsn URL, set LITELLM_DATABASE_URL or DATABASE_URL,"
            " or name it in a --config file"
        )
    assert err == f"litellm-exporter: {message}\n"
    assert "Traceback" not in out + err
    assert "s3cret" not in out + err


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("database:\n  dsn: postgresql://db/x\n  max_conns: lots\n  extra: 1\nweb:\n  listen: x\n")
    assert main(["--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "litellm-exporter: database.extra: unknown key (expected one of: connect_timeout, dsn, is_required, "
        "max_conns, min_conns, statement_timeout)",
        "litellm-exporter: database.max_conns: expected an integer, got 'lots'",
        "litellm-exporter: web.listen: expected HOST:PORT with a port from 1 to 65535, got 'x'",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("database: [unclosed\n", "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
        ("- a list\n", "the top level must be a mapping"),
        ("\tdatabase: {}\n", "invalid YAML at line 1, column 1: found character '\\t' that cannot start any token"),
    ],
)
def test_unreadable_files_are_one_line(text, message, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["--config", str(path), "--check-config"]) == 2
    assert capsys.readouterr().err == f"litellm-exporter: {path}: {message}\n"


def test_missing_file(tmp_path, capsys):
    path = tmp_path / "absent.yaml"
    assert main(["--config", str(path)]) == 2
    assert capsys.readouterr().err == f"litellm-exporter: {path}: no such file\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "localhost"], "--listen: expected HOST:PORT with a port from 1 to 65535, got 'localhost'"),
        (
            ["--poll-interval", "-1"],
            "--poll-interval: invalid duration '-1' (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)",
        ),
        (["--poll-interval", "0"], "--poll-interval: must be longer than 0s, got '0'"),
        (
            ["--poll-interval", "fast"],
            "--poll-interval: invalid duration 'fast' (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)",
        ),
    ],
)
def test_bad_flags(flags, message, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(f"database:\n  dsn: {DSN}\n")
    assert main(["--config", str(path), "--check-config", *flags]) == 2
    assert capsys.readouterr().err == f"litellm-exporter: {message}\n"


def test_shipped_config_is_valid_and_reads_the_dsn_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("LITELLM_DATABASE_URL", "postgresql://litellm:pw@db:5432/litellm")
    config = load(REPO / "config.yaml")
    assert config.database.dsn == "postgresql://litellm:pw@db:5432/litellm"
    assert main(["--config", str(REPO / "config.yaml"), "--check-config"]) == 0
    assert "configuration is valid" in capsys.readouterr().out


def test_defaults_and_environment_forms(monkeypatch):
    monkeypatch.setenv("PGPASS_FOR_TEST", "pw")
    config = parse({"database": {"dsn": "postgresql://u:${PGPASS_FOR_TEST}@db/x"}})
    assert config.database.dsn == "postgresql://u:pw@db/x"
    assert config.database.connect_timeout == 5.0
    assert config.database.is_required is False
    assert (config.web.host, config.web.port) == ("127.0.0.1", DEFAULT_PORT)
    assert config.usage.entity("end_user").model_group is False
    assert config.usage.entity("team").model_group is True


def test_flags_override_the_file():
    config = parse({"database": {"dsn": DSN}}).with_overrides(listen=":9999", poll_interval="2s")
    assert (config.web.host, config.web.port) == ("0.0.0.0", 9999)
    assert config.usage.interval == 2.0
    assert config.database_probe.interval == 2.0
    ipv6 = parse({"database": {"dsn": DSN}, "web": {"listen": "[::1]:8748"}})
    assert (ipv6.web.host, ipv6.web.port) == ("::1", 8748)


def test_durations_accept_units_and_plain_seconds():
    config = parse(
        {
            "database": {"dsn": DSN, "connect_timeout": 2, "statement_timeout": "750ms"},
            "collectors": {"usage": {"interval": "1m", "resync_interval": "1d"}},
        }
    )
    assert config.database.connect_timeout == 2.0
    assert config.database.statement_timeout == 0.75
    assert config.usage.interval == 60.0
    assert config.usage.resync_interval == 86400.0


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    from exporter import __version__

    assert capsys.readouterr().out == f"litellm-exporter {__version__}\n"


def test_shipped_config_spells_out_the_defaults(monkeypatch):
    monkeypatch.setenv("LITELLM_DATABASE_URL", DSN)
    assert load(REPO / "config.yaml") == parse({"database": {"dsn": DSN}})


def _keys(document: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in document.items():
        path = f"{prefix}.{key}" if prefix else key
        found |= _keys(value, path) if isinstance(value, dict) else {path}
    return found


def test_shipped_config_states_every_key_at_its_schema_default():
    from exporter import schema
    from exporter.config_docs import leaves
    from exporter.config_schema import ROOT

    document = yaml.safe_load((REPO / "config.yaml").read_text())
    stated = dict(leaves(ROOT))
    assert _keys(document) == set(stated)
    for path, field in stated.items():
        if field.required:
            continue
        value = document
        for part in path.split("."):
            value = value[part]
        if field.default is None:
            assert value is None, path
        else:
            want = schema.validate_one(path, field.default, field.validate)
            assert schema.validate_one(path, value, field.validate) == want, path


def test_readme_configuration_table_is_the_one_the_schema_generates():
    from exporter.config_docs import replace_in

    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert replace_in(text) == text, "run: python -m exporter.config_docs --write"
