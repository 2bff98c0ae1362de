"""What every long-running command shares: stopping on SIGTERM/SIGINT, serving until stopped.

`stop_on_signals()` gives an Event set by SIGTERM or SIGINT; `serve_until_stopped(server, banner)`
runs a context-managed server, prints one line about it, and returns 0 once a signal came.
"""

import argparse
import signal
import threading
from collections.abc import Callable


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def serve_until_stopped(server, banner: Callable[[object], str]) -> int:
    stop = stop_on_signals()
    with server as running:
        print(banner(running), flush=True)
        stop.wait()
    return 0


def add_listen_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    if seed:
        parser.add_argument("--seed", type=int, default=7, help="event seed (default: %(default)s)")
