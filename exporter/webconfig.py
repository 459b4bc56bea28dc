"""TLS and basic auth for the HTTP server, configured with Prometheus' exporter-toolkit format.

Operators reuse the ``web-config.yml`` they already write for node_exporter and friends::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hashes
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000

Relative paths are relative to the web config file.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from . import schema
from .config import ConfigError
from .schema import Field, SchemaError

# Python's ssl module verifies every client certificate it asks for, so exporter-toolkit's
# RequestClientCert and RequireAnyClientCert (ask without verifying) have no equivalent here.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Headers exporter-toolkit lets operators set; anything else is a configuration error.
ALLOWED_HEADERS = {
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
}


def _choice(options: dict[str, Any]) -> schema.Validator:
    def check(path: str, value: Any) -> Any:
        if value not in options:
            raise schema.invalid(path, f"expected one of {', '.join(options)}, got {value!r}")
        return options[value]

    return check


def _string_map(keys: set[str] | None = None) -> schema.Validator:
    def check(path: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise schema.invalid(path, "expected a mapping")
        result = {}
        for key, item in value.items():
            if keys is not None and key not in keys:
                raise schema.invalid(f"{path}.{key}", f"unknown header (expected one of: {', '.join(sorted(keys))})")
            if not isinstance(item, str) or not item:
                raise schema.invalid(f"{path}.{key}", "expected a non-empty string")
            result[str(key)] = item
        return result

    return check


ROOT = schema.section(
    {
        "tls_server_config": Field(
            schema.optional_section(
                {
                    "cert_file": Field(schema.string()),
                    "key_file": Field(schema.string()),
                    "client_auth_type": Field(_choice(CLIENT_AUTH), "NoClientCert"),
                    "client_ca_file": Field(schema.string(), None),
                    "min_version": Field(_choice(TLS_VERSIONS), "TLS12"),
                    "max_version": Field(_choice(TLS_VERSIONS), None),
                }
            ),
            None,
        ),
        "basic_auth_users": Field(_string_map(), {}),
        "http_server_config": Field(
            schema.section(
                {"headers": Field(_string_map(ALLOWED_HEADERS), {}), "http2": Field(schema.boolean(), True)}
            ),
            {},
        ),
    }
)


@dataclass(frozen=True)
class WebSecurity:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: dict[tuple[str, bytes], bool] = field(default_factory=dict, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries valid credentials (always true without users)."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            # Spend the same time on an unknown user as on a wrong password.
            bcrypt.checkpw(password.encode(), _DUMMY_HASH)
            return False
        # bcrypt costs tens of milliseconds: remember successful checks, as exporter-toolkit does.
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if self._verified.get(key):
                return True
        ok = bcrypt.checkpw(password.encode(), hashed)
        if ok:
            with self._lock:
                if len(self._verified) > 1024:
                    self._verified.clear()
                self._verified[key] = True
        return ok


_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=4))


def load(path: str | Path) -> WebSecurity:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except yaml.YAMLError:
        raise ConfigError([f"{path}: invalid YAML"]) from None
    try:
        raw = schema.validate(document, ROOT)
    except SchemaError as exc:
        raise ConfigError([f"{path}: {problem}" for problem in exc.problems]) from None
    users = {}
    for user, hashed in raw["basic_auth_users"].items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError([f"{path}: basic_auth_users.{user}: expected a bcrypt hash ($2y$...)"])
        users[user] = hashed.encode()
    context = None
    tls = raw["tls_server_config"]
    if tls is not None:
        context = _ssl_context(path, tls)
    return WebSecurity(context, users, raw["http_server_config"]["headers"])


def _ssl_context(path: Path, tls: dict[str, Any]) -> ssl.SSLContext:
    def resolve(name: str) -> str:
        return str((path.parent / name).resolve())

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls["min_version"]
    if tls["max_version"] is not None:
        context.maximum_version = tls["max_version"]
    try:
        context.load_cert_chain(resolve(tls["cert_file"]), resolve(tls["key_file"]))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"{path}: tls_server_config.cert_file: cannot load the certificate and key: {exc}"]
        ) from None
    context.verify_mode = tls["client_auth_type"]
    if tls["client_ca_file"]:
        try:
            context.load_verify_locations(resolve(tls["client_ca_file"]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"{path}: tls_server_config.client_ca_file: cannot load: {exc}"]) from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise ConfigError([f"{path}: tls_server_config.client_ca_file: is required to verify client certificates"])
    return context
