"""Where our servers listen: checked before a server's own thread binds, on IPv4 or IPv6.

`check_can_listen(host, port)` fails early with one clear ConfigError (`bound_socket` gives the
bound socket itself, to hold a port); `http_server` is the standard library's threading HTTP
server on either family; `url_host` writes an address as a URL's host (IPv6 in brackets);
`is_loopback` says whether only this host can reach an address. Each connection holds a file
descriptor: `raise_open_file_limit` lifts the soft limit a service manager sets (systemd: 1024)
to the hard one, and `AcceptFailures` tells an asyncio server that ran out of them in one line a
minute.
"""

import ipaddress
import logging
import resource
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from proofpoint_shipper.errors import ConfigError

log = logging.getLogger("proofpoint_shipper")


def check_can_listen(host: str, port: int) -> None:
    """A ConfigError now when host:port is taken, not ours, or a name that does not resolve (port
    0 included): servers that bind in a thread of their own fail there with a traceback, or
    (moto) wait for good for a start that never comes."""
    bound_socket(host, port, socket.SO_REUSEADDR).close()  # as the servers bind


def bound_socket(host: str, port: int, reuse: int) -> socket.socket:
    """A TCP socket bound to host:port (not listening) with the `reuse` option set
    (SO_REUSEADDR, SO_REUSEPORT); a ConfigError naming the address when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:  # gaierror: its errno is the resolver's, not the OS's
        raise ConfigError(f"cannot listen on {url_host(host)}:{port}: {exc.strerror or exc}") from None
    bound = socket.socket(family, kind, proto)
    try:
        bound.setsockopt(socket.SOL_SOCKET, reuse, 1)
        bound.bind(address)
    except OSError as exc:
        bound.close()
        raise ConfigError(f"cannot listen on {url_host(host)}:{port}: {exc.strerror or exc}") from None
    return bound


def http_server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer on host:port; OSError (gaierror too) when it cannot bind.

    The standard library's binds IPv4 only: `--metrics-host ::1` failed with "Address family for
    hostname not supported".
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server = type("HTTPServer", (ThreadingHTTPServer,), {"address_family": family})((host, port), handler)
    server.daemon_threads = True
    return server


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1): only this host
    can reach a server there. False for a name that does not resolve."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return False
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def raise_open_file_limit() -> None:
    """The soft limit on open files up to the hard one, where the system lets it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # a container that caps it below the hard limit, say
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)


class AcceptFailures:
    """An asyncio exception handler for servers: asyncio meets an accept() that finds no file
    descriptor (or memory) left with a traceback each time, up to a hundred at once, and tries
    again a second later. Here: told at once in one line, then at most once a minute with the
    count. Any other context goes to asyncio's own handler."""

    MESSAGE = "socket.accept() out of system resource"
    EVERY = 60.0  # seconds between two lines

    def __init__(self, server: str):
        self.server = server
        self.count = 0
        self.told_at: float | None = None

    def __call__(self, loop, context: dict) -> None:
        if context.get("message") != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if self.told_at is not None and now - self.told_at < self.EVERY:
            return
        exc = context.get("exception")
        reason = getattr(exc, "strerror", None) or str(exc)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        log.error(
            "%s: cannot accept new connections (%s, open-file limit %d): they wait until "
            "connections close; %d %s since the last such line",
            self.server,
            reason,
            limit,
            self.count,
            "refusal" if self.count == 1 else "refusals",
        )
        self.told_at, self.count = now, 0
