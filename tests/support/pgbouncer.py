"""A real PgBouncer in front of the test server, in transaction or session pooling mode."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .process import free_port
from .tools import require


@contextmanager
def pgbouncer(server_dsn: str, mode: str) -> Iterator[str]:
    """Start PgBouncer for every database of the server at ``server_dsn``; yields the same DSN
    pointed at PgBouncer. Started as the server's own user would: as ``postgres`` when root."""
    binary = require("pgbouncer", "pgbouncer")
    params = conninfo_to_dict(server_dsn)
    user = str(params.get("user") or "postgres")
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="litellm-exporter-pgbouncer-"))
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={params.get('host') or '127.0.0.1'} port={params.get('port') or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        f"pool_mode = {mode}\ndefault_pool_size = 4\nmax_client_conn = 100\n"
        f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        for child in directory.iterdir():
            shutil.chown(child, "postgres")
        command = [binary, "-u", "postgres", str(directory / "pgbouncer.ini")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (directory / "pgbouncer.log").read_text() if (directory / "pgbouncer.log").exists() else ""
                    raise RuntimeError(f"pgbouncer did not start: {process.stderr.read()!r} {log}") from None
                time.sleep(0.05)
        yield make_conninfo(server_dsn, host="127.0.0.1", port=port)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
