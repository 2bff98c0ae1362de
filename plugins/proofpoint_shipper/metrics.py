"""Prometheus metrics: the counters every command keeps, and the endpoint that serves them.

The metric families are defined here, once, so that an operator finds the whole list in one
place. Components update them whether or not anyone scrapes; `MetricsServer` serves the
Prometheus text format (version 0.0.4) on `/metrics` when a command is given `--metrics-port`.
Updates happen per batch, not per record, so they cost nothing on the hot path.
"""

import logging
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler

from proofpoint_shipper.listening import http_server, url_host
from proofpoint_shipper.service import start_daemon_thread

log = logging.getLogger("proofpoint_shipper")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family:
    """One metric name with one label (or none); values kept per label value."""

    def __init__(self, name: str, kind: str, help_text: str, label: str | None = None):
        self.name, self.kind, self.help_text, self.label = name, kind, help_text, label
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1, label: str = "") -> None:
        if amount:
            with self._lock:
                self._values[label] = self._values.get(label, 0) + amount

    def set(self, value: float, label: str = "") -> None:
        with self._lock:
            self._values[label] = value

    def value(self, label: str = "") -> float:
        with self._lock:
            return self._values.get(label, 0)

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            values = sorted(self._values.items())
        for label, value in values:
            labels = f'{{{self.label}="{_escape(label)}"}}' if self.label else ""
            lines.append(f"{self.name}{labels} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def counter(name: str, help_text: str, label: str | None = None) -> Family:
    return _register(Family(name, "counter", help_text, label))


def gauge(name: str, help_text: str, label: str | None = None) -> Family:
    return _register(Family(name, "gauge", help_text, label))


FAMILIES: list[Family] = []


def _register(family: Family) -> Family:
    FAMILIES.append(family)
    return family


def render() -> str:
    return "".join(family.render() for family in FAMILIES)


# -- the families -------------------------------------------------------------------------------

RECORDS_IN = counter(
    "ppship_records_in_total",
    "Records received from the source (API answer, stream or forward client), per table.",
    "table",
)
RECORDS_OUT = counter(
    "ppship_records_out_total",
    "Records the output confirmed (S3 stored them, upstream acked them), per table.",
    "table",
)
PARSE_ERRORS = counter(
    "ppship_parse_errors_total",
    "Records passed on with an error field, or kept as dead letters, per table.",
    "table",
)
RETRIES = counter(
    "ppship_retries_total",
    "Retries of a failed operation (each one also logged), per operation.",
    "operation",
)
CURSOR_LAG = gauge(
    "ppship_cursor_lag_seconds",
    "Seconds between now and the point the saved cursor stands at, per table.",
    "table",
)
TAP_QUOTA_USED = gauge(
    "ppship_tap_quota_used",
    "TAP SIEM API requests this process made in the last 24 hours (the API allows 1800).",
)
WEBSOCKET_RECONNECTS = counter(
    "ppship_websocket_reconnects_total",
    "Reconnects of the PoD log stream after a drop, per event type.",
    "type",
)


class RequestLog:
    """Times of requests over the last 24 hours, for the TAP quota gauge."""

    def __init__(self, period: float = 86400.0, clock=time.monotonic):
        self.period, self.clock = period, clock
        self._times: deque[float] = deque()

    def add(self) -> int:
        now = self.clock()
        self._times.append(now)
        while self._times[0] <= now - self.period:
            self._times.popleft()
        return len(self._times)


# -- the endpoint -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    # Seconds a connection may wait to send its request: each holds a thread, and with
    # --metrics-host 0.0.0.0 anyone who reaches the port could open them by the thousand.
    timeout = 30

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404, "metrics are at /metrics")
            return
        body = render().encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # one line per scrape would drown the command's own log


class MetricsServer:
    """Serves `/metrics` from a daemon thread; `with MetricsServer(host, port) as server:`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._http = http_server(host, port, _Handler)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{url_host(host)}:{port}/metrics"

    def __enter__(self) -> "MetricsServer":
        start_daemon_thread(self._http.serve_forever, "metrics")  # its requests' threads inherit its mask
        log.info("metrics at %s", self.url)
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
