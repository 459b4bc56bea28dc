"""The strict schema for the YAML configuration.

This layer only checks shape and types and returns plain, validated values; the
immutable runtime objects are built from them in ``config.py``. Every problem is
reported as ``path.to.key: message`` so that a user can find it in the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Validator = Callable[[str, Any], Any]


class Check:
    """A validator that also says how a value it validated is written in a document again
    (``--print-config``): a duration as ``30s``, an address as ``HOST:PORT``, ..."""

    def __init__(self, check: Validator, show: Callable[[Any], Any]) -> None:
        self._check = check
        self.show = show

    def __call__(self, path: str, value: Any) -> Any:
        return self._check(path, value)


def show(validator: Validator, value: Any) -> Any:
    """A validated value as a document writes it; None (a key left unset) stays None."""
    if value is None or not isinstance(validator, Check):
        return value
    return validator.show(value)


class SchemaError(Exception):
    """One or more problems in a configuration document."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Invalid(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    validate: Validator
    default: Any = _REQUIRED
    # What the key means, for the generated documentation.
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_ENV_PREFIX = "os.environ/"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(path: str, value: str, environ: Mapping[str, str] | None = None) -> str:
    """Resolve ``os.environ/NAME`` (LiteLLM's convention) and ``${NAME}`` references."""
    env = os.environ if environ is None else environ
    if value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :]
        if name not in env:
            raise _Invalid(path, f"environment variable {name} is not set")
        return env[name]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise _Invalid(path, f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(substitute, value)


def string(*, non_empty: bool = True) -> Validator:
    def check(path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(path, f"expected a string, got {_describe(value)}")
        value = expand_env(path, value)
        if non_empty and not value:
            raise _Invalid(path, "must not be empty")
        return str(value)

    return check


def boolean() -> Validator:
    def check(path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(path, f"expected true or false, got {_describe(value)}")
        return value

    return check


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(path, f"expected an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise _Invalid(path, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise _Invalid(path, f"must be at most {maximum}, got {value}")
        return value

    return check


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a duration such as ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, or ``30`` (seconds)."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def duration(*, minimum: float = 0.0, maximum: float | None = None) -> Validator:
    """A duration in seconds: a number of seconds or a string with a unit."""

    def check(path: str, value: Any) -> float:
        if isinstance(value, bool):
            seconds = None
        elif isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = parse_duration(value)
        else:
            seconds = None
        if seconds is None or not math.isfinite(seconds):
            raise _Invalid(
                path,
                f"invalid duration {_describe(value)} (use a number of seconds or a unit: 500ms, 30s, 5m, 1h, 1d)",
            )
        if seconds <= minimum:
            raise _Invalid(path, f"must be longer than {_format_seconds(minimum)}, got {_describe(value)}")
        if maximum is not None and seconds > maximum:
            raise _Invalid(path, f"must be at most {_format_seconds(maximum)}, got {_describe(value)}")
        return seconds

    return Check(check, format_duration)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def format_duration(seconds: float) -> str:
    """A duration as the configuration writes it, in the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def choice(*options: str) -> Validator:
    def check(path: str, value: Any) -> str:
        if value not in options:
            raise _Invalid(path, f"expected one of {', '.join(options)}, got {_describe(value)}")
        return str(value)

    return check


def buckets() -> Validator:
    """Histogram upper bounds: a non-empty list of distinct positive numbers."""

    def check(path: str, value: Any) -> list[float]:
        if not isinstance(value, list) or not value:
            raise _Invalid(path, f"expected a non-empty list of numbers, got {_describe(value)}")
        result = []
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item) or item <= 0:
                raise _Invalid(f"{path}[{index}]", f"expected a positive number of seconds, got {_describe(item)}")
            result.append(float(item))
        if len(set(result)) != len(result):
            raise _Invalid(path, "bucket bounds must be distinct")
        return sorted(result)

    return Check(check, list)


def url() -> Validator:
    """An http:// or https:// URL, as it is written."""

    def check(path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(path, f"expected a URL, got {_describe(value)}")
        text = expand_env(path, value).strip()
        parsed = urllib.parse.urlsplit(text)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise _Invalid(path, f"expected an http:// or https:// URL, got {_describe(text)}")
        return text

    return check


def url_list() -> Validator:
    """A list of http:// or https:// base URLs."""
    one = url()

    def check(path: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise _Invalid(path, f"expected a list of URLs, got {_describe(value)}")
        result = [one(f"{path}[{index}]", item).rstrip("/") for index, item in enumerate(value)]
        if len(set(result)) != len(result):
            raise _Invalid(path, "targets must be distinct")
        return result

    return Check(check, list)


def listen_address() -> Validator:
    def check(path: str, value: Any) -> tuple[str, int]:
        if not isinstance(value, str):
            raise _Invalid(path, f"expected HOST:PORT, got {_describe(value)}")
        parsed = parse_listen(value)
        if parsed is None:
            raise _Invalid(path, f"expected HOST:PORT with a port from 1 to 65535, got {_describe(value)}")
        return parsed

    return Check(check, lambda address: format_listen(*address))


def parse_listen(text: str) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface: the same as ``0.0.0.0``)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit():
        return None
    number = int(port)
    if not 1 <= number <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host and not text.strip().startswith("["):
        return None
    return host or "0.0.0.0", number


def format_listen(host: str, port: int) -> str:
    """What ``parse_listen`` reads back: IPv6 in brackets, every interface as ``:PORT``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Section:
    """A mapping with exactly these keys; unknown keys are errors, missing ones take defaults.

    Its ``fields`` are what the generated documentation walks."""

    def __init__(self, fields: Mapping[str, Field]) -> None:
        self.fields = fields

    def __call__(self, path: str, value: Any) -> dict[str, Any]:
        fields = self.fields
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected a mapping, got {_describe(value)}")
        problems: list[_Invalid] = []
        result: dict[str, Any] = {}
        for key in value:
            if key not in fields:
                known = ", ".join(sorted(fields))
                problems.append(_Invalid(_join(path, str(key)), f"unknown key (expected one of: {known})"))
        for key, field in fields.items():
            child = _join(path, key)
            if key not in value:
                if field.default is _REQUIRED:
                    problems.append(_Invalid(child, "is required"))
                    continue
                raw = field.default
            else:
                raw = value[key]
            if raw is None and field.default is None:
                result[key] = None  # an optional value, left unset
                continue
            try:
                result[key] = field.validate(child, raw)
            except _Invalid as exc:
                problems.append(exc)
            except _Many as exc:
                problems.extend(exc.problems)
        if problems:
            if len(problems) == 1:
                raise problems[0]
            raise _Many(problems)
        return result


def section(fields: Mapping[str, Field]) -> Section:
    return Section(fields)


def subsection(root: Section, *path: str) -> Section:
    """The section at a dotted path under ``root``."""
    for key in path:
        found = root.fields[key].validate
        assert isinstance(found, Section), key
        root = found
    return root


def optional_section(fields: Mapping[str, Field]) -> Validator:
    """Like section(), but an absent or null value stays None instead of taking defaults."""
    inner = section(fields)

    def check(path: str, value: Any) -> dict[str, Any] | None:
        return None if value is None else inner(path, value)

    return check


def invalid(path: str, message: str) -> Exception:
    """The exception a custom validator raises for ``path``."""
    return _Invalid(path, message)


class _Many(Exception):
    def __init__(self, problems: list[_Invalid]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    # A key that is not a plain word is quoted, so a newline in it cannot break the line.
    if not _PLAIN_KEY.fullmatch(key):
        key = json.dumps(key)
    return f"{path}.{key}" if path else key


def validate(document: Any, root: Section) -> dict[str, Any]:
    """Validate a whole document, raising SchemaError with every problem found."""
    try:
        return root("", document)
    except _Invalid as exc:
        raise SchemaError([_line(exc)]) from None
    except _Many as exc:
        raise SchemaError([_line(p) for p in exc.problems]) from None


def _line(problem: _Invalid) -> str:
    return f"{problem.path or 'top level'}: {problem.message}"


def validate_one(path: str, value: Any, validator: Validator) -> Any:
    """Validate one value from outside the document, such as a command-line flag."""
    try:
        return validator(path, value)
    except _Invalid as exc:
        raise SchemaError([_line(exc)]) from None
