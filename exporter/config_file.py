"""The configuration as a file and a process see it: the YAML read and checked, the
database taken from a flag, the file or the environment, and the configuration written back
(``--print-config``) with its passwords redacted. What the keys mean is ``config``'s."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import schema
from .config import Config, ConfigError, parse, value_at
from .config_schema import ROOT
from .otlp.settings import apply_environment

# Where the database comes from when neither --dsn nor a configuration file names it, in this
# order: the exporter's own variable, then the one LiteLLM itself reads.
DSN_VARIABLES = ("LITELLM_DATABASE_URL", "DATABASE_URL")
# The settings people change most, from the environment (containers, Kubernetes), each with the
# flag it stands for and what it means. A flag wins over its variable; both win over the file.
ENVIRONMENT = {
    "LITELLM_EXPORTER_CONFIG": ("--config", "a configuration file to read (none by default: built-in defaults)"),
    "LITELLM_EXPORTER_LISTEN": ("--listen", "address to serve on, `HOST:PORT` (`web.listen`)"),
    "LITELLM_EXPORTER_POLL_INTERVAL": ("--poll-interval", "every collector's poll interval, such as `30s`"),
    "LITELLM_EXPORTER_LOG_LEVEL": ("--log-level", "`debug`, `info`, `warning` or `error`"),
    "LITELLM_EXPORTER_LOG_FORMAT": ("--log-format", "`text` or `json`"),
    "LITELLM_EXPORTER_WEB_CONFIG": ("--web-config", "TLS and basic auth file (`web.config_file`)"),
}
REDACTED = "REDACTED"


def load(path: str | Path) -> Config:
    """Read and validate a configuration file."""
    return parse(read(path))


def resolve(path: str | Path | None, *, dsn: str | None = None) -> tuple[Config, str]:
    """The configuration from a file (or none: every default), with the database from ``dsn``
    (--dsn), else the file, else the first of DSN_VARIABLES that is set. Returns it with the
    database as written where it came from (a variable is named, never expanded), for
    --print-config."""
    document = read(path) if path is not None else None
    document = dict(document) if isinstance(document, dict) else ({} if document is None else document)
    missing: list[str] = []
    if isinstance(document, dict):
        database = document.get("database")
        database = dict(database) if isinstance(database, dict) else ({} if database is None else database)
        if isinstance(database, dict):
            if dsn is not None:
                database["dsn"] = dsn
            elif "dsn" not in database:
                variable = next((name for name in DSN_VARIABLES if os.environ.get(name)), None)
                if variable is None:
                    missing.append(
                        "database.dsn: no database given: pass --dsn URL, set "
                        + " or ".join(DSN_VARIABLES)
                        + ", or name it in a --config file"
                    )
                    # Read the rest all the same, so that every problem is told at once.
                    database["dsn"] = "postgresql://"
                else:
                    database["dsn"] = f"os.environ/{variable}"
        document["database"] = database
    try:
        config = parse(document)
    except ConfigError as exc:
        raise ConfigError(missing + exc.problems) from None
    otlp, problems = apply_environment(config.otlp, os.environ)
    if missing or problems:
        raise ConfigError(missing + problems)
    config = dataclasses.replace(config, otlp=otlp)
    written = document["database"]["dsn"] if isinstance(document, dict) else ""
    return config, str(written)


def read(path: str | Path) -> Any:
    """A configuration file's YAML document (None when it is empty)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    if document is not None and not isinstance(document, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    return document


def redact(dsn: str) -> str:
    """A connection string as written, its password replaced by REDACTED: the same shape, so
    that a configuration printed with it is still accepted (environment references are kept)."""
    if dsn.startswith("os.environ/") or "${" in dsn:
        return dsn
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.split(':', 1)[0]}:{REDACTED}@{host}"
        query = urllib.parse.urlencode(
            [
                (k, REDACTED if k == "password" else v)
                for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ]
        )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return REDACTED
    if "password" in params:
        params["password"] = REDACTED
    return make_conninfo("", **params)


def _each(redactor: Callable[[str], str]) -> Callable[[Any], Any]:
    return lambda values: [redactor(value) for value in values]


def _names_only(pairs: str) -> str:
    """Header values are often credentials: their names are kept, their values never shown."""
    return ",".join(f"{item.partition('=')[0]}={REDACTED}" for item in pairs.split(",") if item)


# The keys that may hold a secret, and how --print-config hides it (the database's is written as
# it was given: a variable is named, never expanded).
SECRETS: dict[str, Callable[[Any], Any]] = {
    "collectors.proxy.targets": _each(redact),
    "otlp.headers": _names_only,
}


def to_document(config: Config, dsn: str) -> dict[str, Any]:
    """The configuration as a YAML document that ``parse`` turns back into it: every key of the
    schema, each as its validator writes it, with the database as written where it came from
    and every secret redacted."""

    def walk(section: schema.Section, path: tuple[str, ...]) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for key, field in section.fields.items():
            at = (*path, key)
            if isinstance(field.validate, schema.Section):
                document[key] = walk(field.validate, at)
                continue
            value = schema.show(field.validate, value_at(config, at))
            hide = SECRETS.get(".".join(at))
            document[key] = hide(value) if hide is not None and value is not None else value
        return document

    document = walk(ROOT, ())
    document["database"]["dsn"] = redact(dsn)
    return document
