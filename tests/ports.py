"""Ports where nothing listens, kept bound so that no other server is handed them meanwhile.

A test that plays "the agent is down" needs a port that refuses connections, and often starts a
server there later. Closing a socket leaves its port free for the next bind(0) in the test or in
a child process (a relay, a simulator), which turns "upstream is down" into "upstream is that
server". A socket bound to the port without listening refuses connections just as well and keeps
the port; `take(port)` hands that socket to the server that listens there next.
"""

import atexit
import contextlib
import socket

_HELD: dict[int, socket.socket] = {}  # port -> a bound socket that does not listen


def refused_port() -> int:
    """A port of 127.0.0.1 where connections are refused until a server takes it."""
    holder = _bound(0)
    port = holder.getsockname()[1]
    _HELD[port] = holder
    return port


def hold(port: int) -> None:
    """Keep `port` bound, not listening, after its listener closed; nothing when it is taken."""
    with contextlib.suppress(OSError):  # another socket took it in the moment since the close
        _HELD[port] = _bound(port)


def take(port: int) -> socket.socket | None:
    """The socket that holds `port`, for a server to listen on; None when it is not held."""
    return _HELD.pop(port, None)


def _bound(port: int) -> socket.socket:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", port))
    except OSError:
        holder.close()
        raise
    return holder


@atexit.register
def _release() -> None:
    for holder in _HELD.values():
        holder.close()
    _HELD.clear()
