"""The listening sockets, bound before anything else starts, so that a bad address is one line.

Bound here rather than by the HTTP library, so that every way a bind can fail (a port in use, an
address that is not this machine's, a name that does not resolve) is caught at start-up and
named, and so that a restarted HTTP server serves the same sockets.
"""

from __future__ import annotations

import contextlib
import errno
import socket

from .schema import format_listen

# Connections the kernel queues before the loop accepts them: a burst of them (a reconnecting
# fleet of scrapers, a hostile client) must not overflow into SYN retries of a second or more.
BACKLOG = 1024


class ListenError(Exception):
    """The exporter cannot listen where it was told to; the message names the address and why."""


# The wildcard addresses: every interface, IPv6 and IPv4 alike, as Go's exporters listen on them.
EVERY_INTERFACE = ("", "0.0.0.0", "::")


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host`` and ``port``; a wildcard host (``:PORT``, ``0.0.0.0``,
    ``[::]``) listens on every interface, IPv6 and IPv4."""
    where = format_listen(host, port)
    if host in EVERY_INTERFACE:
        return [_every_interface(port, where)]
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ListenError(f"cannot listen on {where}: the host name {host!r} does not resolve ({_why(exc)})") from None
    # A name may resolve to several addresses (localhost: 127.0.0.1 and ::1); each is bound, and
    # the first failure is the answer, so that "listening" never means "on half of them".
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in found:
            if (family, address[:2]) in seen:
                continue
            seen.add((family, address[:2]))
            sockets.append(_bound(family, kind, proto, address, where, v6only=True))
    except ListenError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _every_interface(port: int, where: str) -> socket.socket:
    if socket.has_ipv6:
        try:
            # One IPv6 socket that takes IPv4 too (mapped addresses): every interface, both families.
            return _bound(socket.AF_INET6, socket.SOCK_STREAM, 0, ("::", port), where, v6only=False)
        except ListenError as exc:
            if not isinstance(exc.__cause__, OSError) or exc.__cause__.errno not in (
                errno.EAFNOSUPPORT,
                errno.EADDRNOTAVAIL,
            ):
                raise
    # A machine with IPv6 turned off.
    return _bound(socket.AF_INET, socket.SOCK_STREAM, 0, ("0.0.0.0", port), where, v6only=False)


def _bound(
    family: socket.AddressFamily | int,
    kind: socket.SocketKind | int,
    proto: int,
    address: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
    where: str,
    *,
    v6only: bool,
) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {where}: {_why(exc)}") from exc
    return sock


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "the port is in use (is another exporter running?)"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's"
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
