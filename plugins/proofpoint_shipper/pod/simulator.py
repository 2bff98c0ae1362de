"""A local stand-in for the PoD log stream (websocket) on 127.0.0.1.

`PodSimulator(timeline, token, cluster_id)`: Bearer-token check (401), `cid` and `type` required
(400), one live session per token (409), live sessions that resume where they dropped within an
hour and otherwise start with the last hour, archive sessions (`sinceTime`/`toTime`, rounded to the
hour, at least 30 minutes stale, at most 30 days back, 409 beside a live session), occasional
resent events, and faults a test can switch on: abrupt closes (1006), sessions closed at once
(1011), handshakes refused with a given status (a load balancer's 503), a dropped session that
holds its token for a few more handshakes (409), stalls, bad frames.
"""

import asyncio
import random
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.listening import check_can_listen, url_host
from proofpoint_shipper.pod.events import Timeline

RESUME_WINDOW = timedelta(hours=1)
ARCHIVE_STALENESS = timedelta(minutes=30)
ARCHIVE_REACH = timedelta(days=30)
YIELD_EVERY = 100  # events sent in a row before other sessions get their turn
BAD_FRAMES = {
    "not_json": "{not json",
    "binary": b"\x00\x01binary",
    "no_id": '{"ts": "2022-02-20T08:35:00.000000-0600"}',
    "too_deep": '{"id": "deep", "x": ' + "[" * 300 + "]" * 300 + "}",  # read, but not written again
    # Not bad: an event whose text was cut inside a surrogate pair, escaped as JavaScript does.
    "lone_surrogate": '{"id": "half-emoji", "ts": "2022-02-20T08:35:00.000000-0600", '
    '"data": "Offer \\ud83d"}',
}


class PodSimulator:
    def __init__(
        self,
        timeline: Timeline,
        token: str,
        cluster_id: str,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ):
        self.timeline = timeline
        self.token, self.cluster_id = token, cluster_id
        self.now = now
        self.address = (host, port)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.live: dict[str, str] = {}  # token → type of its live session
        self.resume: dict[tuple[str, str], tuple[int, datetime]] = {}  # (token, type) → (next, when)
        self.sent: dict[str, int] = {"message": 0, "maillog": 0}
        # Faults, switchable while running.
        self.resend_rate = 0.0  # share of events sent twice
        self.drop_every: int | None = None  # close abruptly after this many events of a session
        self.refuse_sessions = 0  # this many next sessions close right after the handshake (1011)
        self.refuse_handshakes: deque[int] = deque()  # statuses answered to the next handshakes
        self.refuse_after_drop: deque[int] = deque()  # the same, once a live session has dropped
        self._dropped = False  # whether a live session has dropped abruptly
        self.linger_after_drop = 0  # handshakes a dropped live session still holds its token for
        self._lingering = 0  # handshakes left that the last dropped session is held for
        self.stall_seconds = 0.0  # pause before each event
        self.bad_frames: deque[str] = deque()  # BAD_FRAMES names, or oversized:<bytes>
        self._delivered: dict[int, int] = {}  # connection id → index after its last sent event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._ready = threading.Event()
        self._failure: OSError | None = None  # why the server's thread could not serve

    @property
    def url(self) -> str:
        host, port = self.address
        return f"ws://{url_host(host)}:{port}/v1/stream"

    def start(self) -> "PodSimulator":
        check_can_listen(*self.address)  # its bind fails in the server's thread, not here
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(10):
            raise ConfigError("the PoD simulator did not start within 10 s")
        if self._failure is not None:
            raise ConfigError(f"the PoD simulator cannot listen on {self.address[0]}: {self._failure}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop = None

    def __enter__(self) -> "PodSimulator":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except OSError as exc:  # a bind that check_can_listen let pass: told by start()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with serve(
            self._session, *self.address, process_request=self._check, max_size=None, ping_interval=None
        ) as server:
            self._server = server
            self.address = server.sockets[0].getsockname()[:2]
            self._ready.set()
            await server.wait_closed()

    # -- the handshake rules -----------------------------------------------------------------

    def _check(self, connection, request):
        query = parse_qs(urlsplit(request.path).query)
        refusals = (
            self.refuse_after_drop if self._dropped and self.refuse_after_drop else self.refuse_handshakes
        )
        if refusals:  # a load balancer whose back end restarts, a busy API, a proxy's page
            status = refusals.popleft()
            return connection.respond(status, f"{HTTPStatus(status).phrase}\n")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return connection.respond(401, "Unauthorized\n")
        kind = query.get("type", [""])[0]
        if query.get("cid", [""])[0] != self.cluster_id or kind not in ("message", "maillog"):
            return connection.respond(400, "cid and type=message|maillog are required\n")
        archive = "sinceTime" in query
        with self.lock:
            if self.token in self.live:
                self._let_go_when_lingered()
                return connection.respond(409, "Exceeded maximum number of sessions per token\n")
            if archive:
                problem = self._archive_problem(query)
                if problem:
                    return connection.respond(400, problem + "\n")
            else:
                self.live[self.token] = kind
        connection.pod = (kind, query if archive else None)
        return None

    def _let_go_when_lingered(self) -> None:
        """A dropped session held past its drop is let go after `linger_after_drop` handshakes."""
        if self._lingering:
            self._lingering -= 1
            if not self._lingering:
                self.live.pop(self.token, None)

    def _archive_problem(self, query: dict) -> str | None:
        try:
            since = datetime.fromisoformat(query["sinceTime"][0])
            until = datetime.fromisoformat(query.get("toTime", [self.now().isoformat()])[0])
        except ValueError:
            return "sinceTime and toTime must be ISO 8601 times"
        if since < self.now() - ARCHIVE_REACH:
            return "sinceTime is older than 30 days"
        if until <= since:
            return "toTime must be after sinceTime"
        return None

    # -- sessions ------------------------------------------------------------------------------

    async def _session(self, connection) -> None:
        kind, archive = connection.pod
        if self.refuse_sessions:
            self.refuse_sessions -= 1
            with self.lock:
                self.live.pop(self.token, None)
            await connection.close(1011, "internal error")  # a back end that is down
            return
        if archive is not None:
            await self._archive(connection, kind, archive)
            return
        start = self._live_start(kind)
        index, dropped = start, False
        try:
            index = await self._stream_live(connection, kind, start)
            dropped = True  # it returns only after an abrupt close
        except ConnectionClosed:
            index = self._delivered.pop(id(connection), start)
        finally:
            with self.lock:
                self._dropped = self._dropped or dropped
                if dropped and self.linger_after_drop:
                    self._lingering = self.linger_after_drop  # the API has not noticed the drop yet
                else:
                    self.live.pop(self.token, None)
                self.resume[self.token, kind] = (index, self.now())

    def _live_start(self, kind: str) -> int:
        now = self.now()
        previous = self.resume.get((self.token, kind))
        if previous and now - previous[1] <= RESUME_WINDOW:
            return max(0, previous[0] - self.rng.choice([0, 0, 1, 2]))  # resumes, resending a few
        return self.timeline.index_at(now - RESUME_WINDOW)

    async def _stream_live(self, connection, kind: str, index: int) -> int:
        sent_here = 0
        while True:
            wait = (self.timeline.time_of(index) - self.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.5))
                continue
            await self._send_bad_frames(connection)
            await self._send_event(connection, kind, index)
            index += 1
            sent_here += 1
            self._delivered[id(connection)] = index
            if self.drop_every and sent_here % self.drop_every == 0:
                await _abrupt_close(connection)
                return index

    async def _send_event(self, connection, kind: str, index: int) -> None:
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        frame = orjson.dumps(self.timeline.event(kind, index)).decode()
        await connection.send(frame)
        self.sent[kind] += 1
        if self.sent[kind] % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a send that needs no wait never yields: let other sessions run
        if self.rng.random() < self.resend_rate:
            await connection.send(frame)  # the API sometimes sends an event again

    async def _send_bad_frames(self, connection) -> None:
        while self.bad_frames:
            name = self.bad_frames.popleft()
            if name.startswith("oversized:"):
                await connection.send('{"id": "big", "pad": "' + "x" * int(name.split(":")[1]) + '"}')
            else:
                await connection.send(BAD_FRAMES[name])

    async def _archive(self, connection, kind: str, query: dict) -> None:
        since = datetime.fromisoformat(query["sinceTime"][0]).astimezone(UTC)
        until = datetime.fromisoformat(query.get("toTime", [self.now().isoformat()])[0]).astimezone(UTC)
        since = since.replace(minute=0, second=0, microsecond=0)  # rounded down to the hour
        if until.minute or until.second or until.microsecond:
            until = until.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)  # up
        until = min(until, self.now() - ARCHIVE_STALENESS)
        start = self.timeline.index_at(since)
        for index in range(start, self.timeline.index_at(until)):
            await self._send_event(connection, kind, index)
            if self.drop_every and (index + 1 - start) % self.drop_every == 0:
                await _abrupt_close(connection)  # archive sessions drop too
                return
        await connection.close(1000, "archive complete")


async def _abrupt_close(connection) -> None:
    """Drop the TCP connection without a close frame (the client sees 1006), after what was sent
    has left: the events are delivered, the session is not closed cleanly."""
    transport = connection.transport
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.001)
    transport.close()
