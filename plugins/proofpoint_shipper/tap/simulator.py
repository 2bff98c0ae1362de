"""A local stand-in for the TAP SIEM API v2, faithful to what collectors meet in production.

`TapSimulator(events, principal, secret)` serves /v2/siem/{all,issues,messages/delivered,
messages/blocked,clicks/permitted,clicks/blocked} on 127.0.0.1 with Basic auth, the parameter
rules and their 400 texts, `queryEndTime`, a rolling 24-hour quota per pool (429), late indexing
(an event is returned only once indexed), arbitrary order, and faults a test can switch on.
"""

import base64
import bisect
import hmac
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

from proofpoint_shipper.listening import check_can_listen, http_server, url_host
from proofpoint_shipper.tap.events import TapEvent, parse_wire_time, wire_time

ENDPOINTS = {
    "all": ("messagesDelivered", "messagesBlocked", "clicksPermitted", "clicksBlocked"),
    "issues": ("clicksPermitted", "messagesDelivered"),
    "messages/delivered": ("messagesDelivered",),
    "messages/blocked": ("messagesBlocked",),
    "clicks/permitted": ("clicksPermitted",),
    "clicks/blocked": ("clicksBlocked",),
}
LOOKBACK = timedelta(days=7)
TOO_OLD = (
    "The requested start time is too far into the past. Requests for information up to 7.00d are accepted"
)


class ApiError(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


class TapSimulator:
    def __init__(
        self,
        events: list[TapEvent],
        principal: str,
        secret: str,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        quota: int = 1800,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ):
        self.events = sorted(events, key=lambda e: e.created)
        self._created = [e.created for e in self.events]
        self.credentials = f"{principal}:{secret}".encode()
        self.now = now
        self.quota = quota
        self.address = (host, port)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.pools: dict[str, deque[datetime]] = {"main": deque(), "clicks_permitted": deque()}
        self.requests: list[tuple[str, int]] = []  # (path with query, status) of every request
        # Faults, switchable while running.
        self.fail_rate = 0.0  # share of requests answered 500
        self.fail_after: int | None = None  # answer 500 to every request after this many
        self.drop_rate = 0.0  # share of connections closed without an answer
        self.slow_seconds = 0.0  # delay before each answer
        self.retry_after: int | str | None = None  # sent with 429 when set, as written
        self.throttle_next = 0  # answer this many coming requests with 429 (a 429 storm)
        # Answers to spoil, one per request: invalid_json, truncated, not_object, too_deep; or
        # valid JSON: lone_surrogates (the first event's subject holds half an emoji),
        # unknown_array (a newer API's: an array and a field no collector knows beside the rest).
        self.corruptions: deque[str] = deque()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2] if self._server else self.address
        return f"http://{url_host(host)}:{port}"

    def start(self) -> "TapSimulator":
        check_can_listen(*self.address)
        self._server = http_server(*self.address, _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "TapSimulator":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- the API's rules ---------------------------------------------------------------------

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        parts = urlsplit(path)
        endpoint = parts.path.removeprefix("/v2/siem/")
        if not parts.path.startswith("/v2/siem/") or endpoint not in ENDPOINTS:
            raise ApiError(404, "Not Found")
        self._authenticate(authorization)
        start, end = self._window(parse_qs(parts.query, keep_blank_values=True))
        self._count(endpoint)
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise ApiError(500, "Internal Server Error")
        if self.rng.random() < self.fail_rate:
            raise ApiError(500, "Internal Server Error")
        arrays = {name: self._visible(name, start, end) for name in ENDPOINTS[endpoint]}
        if not any(arrays.values()) and self.rng.random() < 0.5:
            return 204, b""
        return 200, self._body(wire_time(end), arrays)

    def _authenticate(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True) if scheme.lower() == "basic" else b""
        except ValueError:
            given = b""
        if not hmac.compare_digest(given, self.credentials):
            raise ApiError(401, "The credentials are invalid")

    def _window(self, query: dict[str, list[str]]) -> tuple[datetime, datetime]:
        given = [name for name in ("interval", "sinceTime", "sinceSeconds") if name in query]
        if len(given) != 1:
            raise ApiError(400, "Exactly one of interval, sinceTime or sinceSeconds must be given")
        if query.get("format", ["json"])[0] != "json":
            raise ApiError(400, "The simulator serves format=json only")
        for name, allowed in (
            ("threatType", {"url", "attachment", "messageText"}),
            ("threatStatus", {"active", "cleared", "falsePositive"}),
        ):
            for value in query.get(name, []):
                if value not in allowed:
                    raise ApiError(400, f"The {name} parameter is invalid")
        now = self.now()
        start, end = self._bounds(given[0], query[given[0]][0], now)
        if start < now - LOOKBACK:
            raise ApiError(400, TOO_OLD)
        return start, end

    @staticmethod
    def _bounds(name: str, value: str, now: datetime) -> tuple[datetime, datetime]:
        minute = now.replace(second=0, microsecond=0)
        try:
            if name == "sinceSeconds":
                seconds = int(value)
                if not 0 < seconds <= 3600:
                    raise ApiError(400, "The sinceSeconds parameter must be between 1 and 3600")
                return minute - timedelta(seconds=seconds), minute
            if name == "sinceTime":
                return parse_wire_time(value), minute
            start_text, end_text = value.split("/")
            start, end = parse_wire_time(start_text), parse_wire_time(end_text)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"The {name} parameter is malformed") from exc
        if end - start < timedelta(seconds=30):
            raise ApiError(400, "The requested interval is too short")
        if end - start > timedelta(hours=1):
            raise ApiError(400, "The requested interval is too long")
        return start, end

    def _count(self, endpoint: str) -> None:
        pool = self.pools["clicks_permitted" if endpoint == "clicks/permitted" else "main"]
        now = self.now()
        with self.lock:
            if self.throttle_next > 0:
                self.throttle_next -= 1
                raise ApiError(429, "Too Many Requests")
            while pool and pool[0] <= now - timedelta(hours=24):
                pool.popleft()
            if len(pool) >= self.quota:
                raise ApiError(429, "Too Many Requests")
            pool.append(now)

    def _visible(self, array: str, start: datetime, end: datetime) -> list[dict]:
        now = self.now()
        low, high = bisect.bisect_left(self._created, start), bisect.bisect_left(self._created, end)
        found = [
            self._shuffled(e.wire) for e in self.events[low:high] if e.array == array and e.indexed <= now
        ]
        self.rng.shuffle(found)  # the API promises no order
        return found

    def _shuffled(self, wire: dict) -> dict:
        if "messageParts" not in wire:
            return wire
        parts = list(wire["messageParts"])
        self.rng.shuffle(parts)  # messageParts come in a different order from one answer to the next
        return {**wire, "messageParts": parts}

    def _body(self, query_end: str, arrays: dict[str, list[dict]]) -> bytes:
        corruption = self.corruptions.popleft() if self.corruptions else None
        if corruption == "not_object":
            next(iter(arrays.values())).insert(0, "not an object")
        if corruption == "unknown_array":
            arrays = {**arrays, "messagesQuarantined": [{"id": "x"}, 7], "tenant": {"name": "t"}}
        if corruption == "too_deep":  # JSON, but nested deeper than a record can be written
            next(iter(arrays.values())).insert(0, DEEP_MARK)
        if corruption == "lone_surrogates" and (events := next(filter(None, arrays.values()), None)):
            events[0] = {**events[0], "subject": HALVES_MARK}
        body = orjson.dumps({"queryEndTime": query_end, **arrays})
        if corruption == "lone_surrogates":  # as JavaScript's JSON.stringify escapes them
            body = body.replace(orjson.dumps(HALVES_MARK), rb'"cut \ud83d, \\ud83d, \ude00 and \ud83d\ude00"')
        if corruption == "too_deep":
            body = body.replace(
                orjson.dumps(DEEP_MARK), b'{"GUID":"deep","x":' + b"[" * 300 + b"]" * 300 + b"}"
            )
        if corruption == "invalid_json":
            return body.replace(b"{", b"{,", 1)
        if corruption == "truncated":
            return body[: max(1, len(body) // 2)]
        return body


DEEP_MARK = "deeply nested event goes here"
HALVES_MARK = "a subject with lone surrogates goes here"


def _handler(simulator: TapSimulator):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if simulator.rng.random() < simulator.drop_rate:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if simulator.slow_seconds:
                time.sleep(simulator.slow_seconds)
            try:
                status, body = simulator.answer(self.path, self.headers.get("Authorization"))
            except ApiError as exc:
                status, body = exc.status, exc.text.encode()
            simulator.requests.append((self.path, status))
            self.send_response(status)
            if status == 429 and simulator.retry_after is not None:
                self.send_header("Retry-After", str(simulator.retry_after))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="tap-api"')
            self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # requests are kept in simulator.requests instead
            return

    return Handler
