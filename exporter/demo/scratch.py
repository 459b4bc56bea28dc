"""Scratch databases, for the demo and the tests: an embedded server, create, drop."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import install_hint


class EmbeddedUnavailable(Exception):
    """The pgserver package, which ships PostgreSQL's binaries, is not installed."""


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """A PostgreSQL server of our own in a temporary directory; yields its DSN."""
    try:
        import pgserver
    except ImportError:
        raise EmbeddedUnavailable(
            f"the embedded PostgreSQL (the pgserver package) is not installed ({install_hint('pgserver')})"
        ) from None
    with tempfile.TemporaryDirectory(prefix="litellm-exporter-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def with_database(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def create_database(admin: str, name: str, template: str | None = None) -> str:
    """Create a database on the server of ``admin``; returns its DSN."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(query)
    return with_database(admin, name)


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class ClusterUnavailable(Exception):
    """No PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) on this machine."""


def server_binaries(explicit: str | None = None) -> Path:
    """The newest local PostgreSQL's binaries directory (Debian's layout), or ``explicit``."""
    if explicit:
        return Path(explicit)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        raise ClusterUnavailable("no PostgreSQL server binaries under /usr/lib/postgresql (Debian package postgresql)")
    return Path(found[-1])


class LocalCluster:
    """A PostgreSQL cluster of its own in a temporary directory, on a free local port, run as the
    ``postgres`` user when we are root: a new one (``initdb``), or a streaming standby of
    ``primary`` (``pg_basebackup``)."""

    def __init__(self, settings: str = "", *, primary: LocalCluster | None = None, bindir: Path | None = None) -> None:
        self.bindir: Path = bindir or (primary.bindir if primary else server_binaries())
        self.dir = Path(tempfile.mkdtemp(prefix="litellm-exporter-cluster-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        if primary is None:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host replication postgres 127.0.0.1/32 trust\n")
        else:
            self._run(
                "pg_basebackup", "-D", str(self.data), "-h", "127.0.0.1", "-p", str(primary.port),
                "-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast",
            )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                f"{settings}\n"
            )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        self.admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def restart(self) -> None:
        """Stop the server (ending every session, as an operator's restart does) and start it again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
