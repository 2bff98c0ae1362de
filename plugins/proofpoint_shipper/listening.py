"""Where our servers listen: checked before a server's own thread binds, on IPv4 or IPv6.

`check_can_listen(host, port)` fails early with one clear ConfigError (`bound_socket` gives the
bound socket itself, to hold a port); `http_server` is the standard library's threading HTTP
server on either family; `url_host` writes an address as a URL's host (IPv6 in brackets).
"""

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from proofpoint_shipper.errors import ConfigError


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


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
