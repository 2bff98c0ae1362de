"""What every long-running command shares: stopping on SIGTERM/SIGINT/SIGHUP, serving until stopped.

`stop_on_signals()` gives a StopEvent set by one of STOP_SIGNALS; `stop_signals_blocked()` and
`start_daemon_thread()` keep those signals from other threads, so they reach the main thread;
`serve_until_stopped(server, banner)` runs a context-managed server, prints one line about it, and
returns 0 once a signal came.
`add_operability_arguments` and `operate(args)` give the collectors and the relay their
`--log-format` and `--metrics-port`; `read_secret` reads a secret from a file, never echoing it.
`tune_gc_for_long_lived_state()` (every command) suits the garbage collector to holding many objects.
"""

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from proofpoint_shipper.errors import ConfigError, Stopped
from proofpoint_shipper.logs import LOG_FORMATS, setup_logging

# The signals that end a command cleanly: what was read is delivered, the cursor saved, exit 0.
# SIGHUP too: a closed terminal or SSH session would otherwise end it at once, losing what it
# had read but not yet delivered (a pipe into `ppship ship` cannot send it again).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopEvent(threading.Event):
    """Set by a stop signal. Inside `interrupting(what)`, the signal also raises Stopped in the
    main thread: a blocking read there (a request whose answer does not come, with a read timeout
    minutes long) ends at once, instead of outlasting the wait of a service manager for the exit.
    Only once: the cleanup after it is not cut short by a second signal."""

    def __init__(self):
        super().__init__()
        self._interrupting: str | None = None  # what the main thread is doing that a stop ends

    def signalled(self, *_) -> None:
        self.set()
        if (what := self._interrupting) is not None:
            self._interrupting = None
            raise Stopped(f"stopped during {what}")

    @contextlib.contextmanager
    def interrupting(self, what: str):
        if self.is_set():
            raise Stopped(f"stopped before {what}")
        self._interrupting = what
        try:
            yield
        finally:
            self._interrupting = None


def stop_on_signals() -> StopEvent:
    stop = StopEvent()
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.signalled)
    return stop


@contextlib.contextmanager
def stop_signals_blocked():
    """Block STOP_SIGNALS in this thread while inside; threads started inside inherit the block
    for good, so the kernel hands those signals to the main thread. A stop signal another thread
    takes interrupts nothing: Python runs its handler in the main thread only once that thread
    runs again, after the read it waits in (an API that never answers) ended on its own."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def start_daemon_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread that leaves the stop signals to the main thread (`stop_signals_blocked`)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    with stop_signals_blocked():
        thread.start()
    return thread


class StopOnSignals:
    """`with StopOnSignals(job):` the STOP_SIGNALS set `job.stopping` (the job finishes its
    batch, reports and exits 0); the previous handlers come back on exit."""

    def __init__(self, job):
        self.job = job
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignals":
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._stop)
        return self

    def _stop(self, signum, frame) -> None:
        self.job.stopping = True

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


# Tracked objects allocated, net, between two young collections (CPython's default: 700).
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_gc_for_long_lived_state() -> None:
    """Collect cyclic garbage less often: every command keeps many objects alive.

    The assembler holds thousands of open messages for minutes; the relay, thousands of records
    between their parse and upstream's ack; the collectors, the keys of events already seen. At
    CPython's default threshold a collection runs every few hundred records, and every tenth of
    those re-scans the older generations, those objects included, finding no garbage: their
    structures hold no cycles. That took over a third of the assembler's time, a tenth of the
    relay's and of `tap fetch`'s, a twentieth of `pod stream`'s. A higher threshold leaves at
    most that many more objects waiting for a collection.
    """
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def ending_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` for children that must not outlive this process: each gets SIGTERM when it
    ends, even killed outright (SIGKILL, the OOM killer), which no `finally` sees. Linux only
    (None elsewhere); the caller forks from its main thread, whose end is what the kernel watches.
    """
    if sys.platform != "linux":
        return None
    parent = os.getpid()

    import ctypes  # here, not at the top: only the commands that start children need it

    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it ended before the request was in place
            os._exit(0)

    return arrange


def serve_until_stopped(server, banner: Callable[[object], str]) -> int:
    stop = stop_on_signals()
    with contextlib.ExitStack() as serving:
        with stop_signals_blocked():  # the server's threads: the wait below must get the signal
            running = serving.enter_context(server)
        print(banner(running), flush=True)
        stop.wait()
    return 0


def add_listen_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=0, help="port (default: a free one, printed)")
    if seed:
        parser.add_argument("--seed", type=int, default=7, help="event seed (default: %(default)s)")


METRICS_HOST = "127.0.0.1"


def add_operability_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operability")
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="stderr log lines as text, or one JSON object each (default: %(default)s)",
    )
    group.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (0: a free port, logged; "
        "relay workers use PORT, PORT+1, ...; default: no endpoint)",
    )
    group.add_argument(
        "--metrics-host",
        help=f"address of the metrics endpoint, with --metrics-port (default: {METRICS_HOST}; "
        "0.0.0.0 to be scraped from other hosts)",
    )


def set_up_operability(args: argparse.Namespace) -> None:
    """Logging as --log-format says, and the metrics flags checked: --metrics-host alone would be
    ignored, and a scraper would find nothing, so it is a ConfigError. Serving is `operate`'s."""
    setup_logging(args.log_format)
    if args.metrics_host is not None and args.metrics_port is None:
        raise ConfigError("--metrics-host is for --metrics-port, which is not given")


def operate(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Set up logging now; the returned context serves metrics while the command runs."""
    set_up_operability(args)
    if args.metrics_port is None:
        return contextlib.nullcontext()
    from proofpoint_shipper.metrics import MetricsServer  # an HTTP server: only when asked for

    host = args.metrics_host if args.metrics_host is not None else METRICS_HOST
    try:
        return MetricsServer(host, args.metrics_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{args.metrics_port}: {exc.strerror or exc}"
        ) from exc


def url_of(*schemes: str):
    """An argparse type for a URL with one of `schemes`, e.g. url_of("https", "http")."""

    def check(text: str) -> str:
        try:
            parts = urlsplit(text)
            readable = parts.scheme.lower() in schemes and parts.hostname and (parts.port or True)
        except ValueError:  # a bad port, an unclosed [IPv6 bracket
            readable = False
        if not readable:
            raise argparse.ArgumentTypeError(f"not a {' or '.join(s + '://' for s in schemes)} URL: {text!r}")
        return text

    return check


def filesystem_path(text: str) -> Path:
    """An argparse type for a file or folder. An empty value (an unset variable in an agent's
    command line) named the working folder, where spools and dead letters went unseen."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return Path(text)


def positive_int(text: str) -> int:
    """An argparse type for a count or a size: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


INF = float("inf")


def seconds(text: str) -> float:
    """An argparse type for a duration in seconds: a number, 0 or more."""
    return _number_in(text, "a number of seconds (0 or more)", 0, INF)


def positive_seconds(text: str) -> float:
    """An argparse type for a timeout or a period: seconds above 0."""
    return _number_in(text, "a number of seconds above 0", 0, INF, low_allowed=False)


def whole_number(text: str) -> int:
    """An argparse type for a count that may be 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number (0 or more), got {text!r}")
    return int(text)


def share(text: str) -> float:
    """An argparse type for a share of something: a number from 0 to 1."""
    return _number_in(text, "a share from 0 to 1", 0, 1, high_allowed=True)


def positive_number(text: str) -> float:
    """An argparse type for a rate or an amount: a finite number above 0."""
    return _number_in(text, "a number above 0", 0, INF, low_allowed=False)


def _number_in(
    text: str, what: str, low: float, high: float, low_allowed: bool = True, high_allowed: bool = False
) -> float:
    """`text` as a number between `low` and `high`, each bound itself allowed or not; never NaN."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    above = low <= value if low_allowed else low < value  # NaN fails every comparison
    below = value <= high if high_allowed else value < high
    if not (above and below):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def days(text: str) -> float:
    """An argparse type for a span of history: days above 0, at most ten years."""
    value = positive_number(text)
    if value > 3650:
        raise argparse.ArgumentTypeError(f"expected at most 3650 days, got {text!r}")
    return value


def host_and_port(text: str, flag: str, lowest_port: int = 0) -> tuple[str, int]:
    """A flag's HOST:PORT (port `lowest_port` to 65535), or a ConfigError naming the flag."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:24224, an IPv6 address as URLs write it
    elif ":" in host:  # ::1:24224 reads as two addresses: [::1]:24224 and [::1:24224]:<none>
        raise ConfigError(f"{flag} wants an IPv6 address in brackets, as in [::1]:24224, got {text!r}")
    if not host or not port.isdigit() or not lowest_port <= int(port) <= 65535:
        raise ConfigError(f"{flag} wants HOST:PORT (port {lowest_port}-65535), got {text!r}")
    return host, int(port)


def peer_address(text: str, flag: str) -> tuple[str, int]:
    """A flag's HOST:PORT to connect to: port 0 means "any free one" only to a listener."""
    return host_and_port(text, flag, lowest_port=1)


def port_number(text: str) -> int:
    """An argparse type for a TCP port: 0 (any free one) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return int(text)


def writable_dir(path: Path, what: str) -> Path:
    """`path`, created if need be; a ConfigError now when it cannot be written to, rather than
    when the first write comes, in the middle of a run."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path} is a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to {what} {path}: permission denied")
    return path


MAX_SECRET_BYTES = 64 * 1024  # a token or key is far smaller: a bigger file is the wrong file


def env_value(name: str) -> str:
    """A credential or id from the environment, without the white space around it, as
    `read_secret` reads a file: one made with `echo` (a Kubernetes secret from a file, an .env
    file) keeps its newline, which no API takes, and which the error would not show."""
    return os.environ.get(name, "").strip()


def read_secret(path: Path, what: str) -> str:
    """The secret in `path` (`what` names it in the error, e.g. "the token file").

    An empty file is refused: a secret not mounted yet must stop the command, not become "".
    The byte order mark Windows Notepad writes before UTF-8, and a CRLF, are not part of it.
    The errors never quote the file's content.
    """
    try:
        with path.open("rb") as source:
            data = source.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{what} {path} is over {MAX_SECRET_BYTES // 1024} KiB: not a secret")
    try:
        secret = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{what} {path} is empty")
    return secret
