"""PodStream: the PoD log stream into the data lake, every event once, across drops and restarts.

Frames are checked (bad ones go to a dead-letter file with the reason, counted, and the stream
goes on), de-duplicated by a hash of the whole event over a bounded recent window, and written
to the sink; every `flush_every` events or `flush_seconds` the sink is flushed and only then the
resume point (last `ts`, recent hashes) saved. Drops reconnect under the retry policy; an outage
longer than the API's one-hour live resume is reported as a gap to backfill from the archive, and
so is what a killed run had taken and not saved: a live run marks the resume file open until it
stops cleanly.

An archive backfill sends its range hour by hour. Dropped, or stopped and run again with the same
range, it goes on from the hour of the latest event it received (saved with the resume point),
not from the start of the range: the hours before are whole, and the hashes kept remove what the
replayed hour sent already.
"""

import base64
import itertools
import logging
import os
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import orjson
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from proofpoint_shipper import json_input
from proofpoint_shipper.checkpoint import refuse_foreign
from proofpoint_shipper.errors import ConfigError, DeliveryError, FetchError, ReaderGone, Stopped
from proofpoint_shipper.logs import Throttled
from proofpoint_shipper.metrics import CURSOR_LAG, PARSE_ERRORS, RECORDS_IN, RECORDS_OUT, WEBSOCKET_RECONNECTS
from proofpoint_shipper.pod import TYPES
from proofpoint_shipper.pod.shape import ID_KEY, BadFrame, check_frame, event_key, event_time, to_record
from proofpoint_shipper.rawio import write_all
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.service import StopEvent, start_daemon_thread, stop_signals_blocked
from proofpoint_shipper.trust import not_trusted

log = logging.getLogger("proofpoint_shipper")
LIVE_RESUME = timedelta(hours=1)
# Leaving a stream, the API's close reply comes after every event it sent before: thousands while
# it catches up, read and kept meanwhile. Past this, the connection is cut.
CLOSE_TIMEOUT_SECONDS = 10
# How long a session that brought no frame must have lasted to count as one that served: a back
# end that closes each session right after the handshake is retried under the policy's growing
# delays, not once a second for as long as it is down.
STEADY_SECONDS = 60
CLOSE_TOO_BIG = 1009  # the close code websockets sends for a frame over its max_size
# Saved while a live run is open: from when a kill would lose the events taken and not yet saved.
UNSAVED_FROM = "unsaved_from"


@dataclass
class StreamSettings:
    dead_letter_dir: Path = Path("ppship-state/dead-letter")
    max_frame_bytes: int = 4 * 1024 * 1024  # larger frames are dead-lettered (their start kept)
    # A frame is held whole in memory before it can be checked: past this, the connection is
    # closed (1009) without it, told, and opened again. Unbounded, one frame could take all memory.
    max_receive_bytes: int = 64 * 1024 * 1024
    flush_every: int = 1000  # events
    flush_seconds: float = 5.0
    dedupe_window: int = 10_000  # recent event hashes kept (and saved) for de-duplication
    ping_interval: float = 120.0  # seconds: the API drops idle sessions
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=8, base_delay=1.0, max_delay=60.0)
    )


@dataclass
class StreamSummary:
    events: int = 0
    duplicates: int = 0
    bad: int = 0
    replaced: int = 0  # events with a lone UTF-16 surrogate, kept with U+FFFD in its place
    reconnects: int = 0
    gap: tuple[str, str] | None = None


class PodStream:
    def __init__(
        self,
        url: str,
        token: str,
        cluster_id: str,
        kind: str,
        sink,
        store,
        settings: StreamSettings,
        stop: StopEvent | None = None,
        progress=None,
    ):
        self.url, self.token, self.cluster_id, self.kind = url, token, cluster_id, kind
        self.table = TYPES[kind][0]
        self.sink, self.store, self.settings = sink, store, settings
        self.stop = stop or StopEvent()
        self.progress = progress  # a stream for progress lines during an archive backfill, or None
        self.summary = StreamSummary()
        self._pending: list[dict] = []
        self._recent: deque[str] = deque(maxlen=settings.dedupe_window)
        self._recent_set: set[str] = set()
        self._last_ts: str | None = None
        self._last_time: datetime | None = None  # `_last_ts` as a time: the latest event's
        self._backfill_range: dict[str, str | None] | None = None  # this run's --since/--until
        self._reached: datetime | None = None  # the latest event time this backfill received
        self._flushed_at = time.monotonic()
        self._backfill = False  # an archive backfill (run with `since`), which can be run again
        self._sessions = 0  # opened this run
        self._open_since: str | None = None  # a live run's start, less the hour the API replays
        self._left_open: str | None = None  # what a backfill found of a killed live run, kept
        self._dead_letter_path = settings.dead_letter_dir / f"pod-{kind}.ndjson"
        self._kept_told, self._unkept_told = (  # a flood of bad frames: ten lines a minute of each
            Throttled(log, logging.ERROR, f"PoD {kind}: {{count}} more bad frames in {{seconds}} s, {how}")
            for how in (f"kept in {self._dead_letter_path}", f"not kept: {self._dead_letter_path} failed")
        )

    def run(
        self,
        max_events: int | None = None,
        duration: float | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> StreamSummary:
        state = _checked_state(self.store.load() or {}, self.kind, self.store.where)
        for key in state.get("recent", []):
            self._remember(key)
        self._last_ts = state.get("last_ts")
        self._last_time = event_time({"ts": self._last_ts}) if self._last_ts else None
        if since is None:
            self._report_gap()
            self._report_unclean_stop(state.get(UNSAVED_FROM))
            self._open_since = (datetime.now(UTC) - LIVE_RESUME).isoformat()  # the first session's start
            self.store.save(self._state())  # marked open: a kill from now on is told at the next start
        else:
            self._backfill_range = {"since": since.isoformat(), "until": until and until.isoformat()}
            self._reached = _reached(state.get("backfill"), self._backfill_range)
            self._left_open = state.get(UNSAVED_FROM)  # a killed live run's, for the next live start
        deadline = time.monotonic() + duration if duration else None
        self._backfill = since is not None
        try:
            self._connect_and_consume(max_events, deadline, since, until)
        except ConfigError:
            self._close_cleanly()  # a refusal at a reconnect comes after the drop's flush
            raise
        finally:
            self._kept_told.close()  # the bad frames not told yet, also when the stream gives up
            self._unkept_told.close()
        self._close_cleanly()
        return self.summary

    def _close_cleanly(self) -> None:
        """Everything taken was confirmed by the output and saved: no longer marked open."""
        if self._open_since is not None and not self._pending:
            self._open_since = None
            self.store.save(self._state())

    # -- connection ---------------------------------------------------------------------------

    def _connect_and_consume(
        self, max_events: int | None, deadline: float | None, since: datetime | None, until: datetime | None
    ) -> None:
        failures = 0
        while not self._done(max_events, deadline):
            in_session = False
            try:
                with self._connect(self._archive_start(since), until) as websocket:
                    in_session = True
                    self._sessions += 1
                    if failures >= self.settings.retry.attempts:
                        self._report_gap()  # back after a long outage: what the API no longer replays
                    opened, taken = time.monotonic(), self._frames_taken()
                    try:
                        self._consume(websocket, max_events, deadline)
                    finally:
                        if self._frames_taken() > taken or time.monotonic() - opened >= STEADY_SECONDS:
                            failures = 0  # a session that served: the next drop starts the count again
                break  # told to stop, or the archive was sent whole
            except Stopped:
                break  # told to stop during the handshake
            except InvalidStatus as exc:
                if not self._may_pass(exc):
                    raise refusal(exc) from None
                failures += 1
                self._reconnect_or_give_up(exc, failures, deadline)
            except ssl.SSLCertVerificationError as exc:
                raise not_trusted(f"the PoD log API at {self.url}", exc) from None
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
                if isinstance(exc, ConnectionClosedOK) and since is not None:
                    break  # an archive backfill ends with a normal close once all is sent; live, it
                    # is a server going away (a restart's 1001) and we come back, as after a drop
                self._flush()  # what arrived before the drop is good: keep it
                self._tell_if_too_big(exc)
                if self.stop.is_set():
                    break  # the stop came first (websockets closes a connection a stop cut short)
                if in_session and since is None and _cut_off(exc):
                    self._tell_cut_off(exc)  # a backfill's next session replays its hour instead
                failures += 1
                self._reconnect_or_give_up(exc, failures, deadline)
        self._flush()

    def _may_pass(self, exc: InvalidStatus) -> bool:
        """Whether a refused handshake is tried again: the API busy or restarting (429, or a 5xx
        as its load balancer answers meanwhile) at any time; once this run had a session, any
        answer but a refused token (401, 403), as the settings that served cannot be wrong: a 409
        while the API has not noticed yet that the session dropped is gone, a proxy's page. At
        the first handshake, anything else is a refusal."""
        status = exc.response.status_code
        if status in (401, 403):
            return False
        return status == 429 or status >= 500 or self._sessions > 0

    def _tell_if_too_big(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionClosed) and exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG:
            self._count_bad_frame()
            log.error(
                "PoD %s: a frame over %d bytes came (a frame is read whole before it is checked); "
                "the connection was closed without it, and is opened again",
                self.kind,
                self.settings.max_receive_bytes,
            )

    def _count_bad_frame(self) -> None:
        self.summary.bad += 1
        PARSE_ERRORS.inc(label=self.table)

    def _frames_taken(self) -> int:
        summary = self.summary
        return summary.events + summary.duplicates + summary.bad

    def _connect(self, since: datetime | None, until: datetime | None):
        """The stream, opened; a stop during the handshake (up to 30 s) ends it at once."""
        websocket = None
        try:
            with self.stop.interrupting("the connection to the API"):
                websocket = connect(
                    self._address(since, until),
                    create_connection=_Connection,
                    additional_headers=self._headers(),
                    ping_interval=self.settings.ping_interval,
                    max_size=self.settings.max_receive_bytes,
                    open_timeout=30,
                    close_timeout=CLOSE_TIMEOUT_SECONDS,
                )
        except Stopped:
            if websocket is not None:  # the stop came as the handshake ended
                self._close_with_in_flight(websocket, keep=True)
            raise
        return websocket

    def _archive_start(self, since: datetime | None) -> datetime | None:
        """Where a backfill (re)starts: `since`, or the time of the latest event it received; the
        archive rounds it down to the hour, whose replay the hashes kept remove."""
        if since is None or self._reached is None:
            return since
        return max(since, self._reached)

    def _address(self, since: datetime | None, until: datetime | None) -> str:
        return stream_address(self.url, self.cluster_id, self.kind, since, until)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _reconnect_or_give_up(self, exc: Exception, failures: int, deadline: float | None) -> None:
        """Wait before the next try; past the retry bound an archive backfill stops (FetchError),
        while the live stream, which nothing may restart (an agent's exec input), keeps trying at
        the policy's longest delay, an error logged each time. The wait ends at --duration's end."""
        policy = self.settings.retry
        if failures >= policy.attempts and self._backfill:
            raise FetchError(f"the PoD stream dropped {failures} times in a row, last: {exc}")
        wait = policy.delay(min(failures, policy.attempts))
        if deadline is not None and deadline - time.monotonic() < wait:
            log.warning(
                "PoD %s stream dropped (%s); --duration ends before the next try",
                self.kind,
                _failure(exc),
            )
            self.stop.wait(max(0.0, deadline - time.monotonic()))
            return
        if failures < policy.attempts:
            log.warning(
                "PoD %s stream dropped (%s); reconnect %d of %d in %.1f s",
                self.kind,
                _failure(exc),
                failures,
                policy.attempts - 1,
                wait,
            )
        else:
            log.error(
                "PoD %s stream: no working connection after %d tries (last: %s); trying again in %.1f s",
                self.kind,
                failures,
                _failure(exc),
                wait,
            )
        self.summary.reconnects += 1
        WEBSOCKET_RECONNECTS.inc(label=self.kind)
        self.stop.wait(wait)

    def _report_gap(self) -> None:
        if not self._last_ts:
            return
        last = event_time({"ts": self._last_ts})  # a time: the saved one was checked at start
        oldest_live = datetime.now(UTC) - LIVE_RESUME
        if last < oldest_live:
            self.summary.gap = (last.isoformat(), oldest_live.isoformat())
            log.warning(
                "!!! PoD %s events from %s to %s can no longer be replayed live (the API "
                "resumes only within an hour). Backfill them from the archive: %s",
                self.kind,
                last.isoformat(),
                oldest_live.isoformat(),
                self._backfill_command(last.isoformat(), oldest_live.isoformat()),
            )

    def _tell_cut_off(self, exc: Exception) -> None:
        """A live session ended without the API's close: what it had sent and the connection had
        not delivered is lost, as its next session resumes after the last event it sent."""
        since = self._last_ts or (datetime.now(UTC) - LIVE_RESUME).isoformat()
        log.warning(
            "!!! PoD %s stream dropped without the API closing it (%s): the API resumes after the "
            "last event it sent, so what it had sent after %s and the drop cut off is not sent again "
            "live. Once 30 minutes old, backfill it from the archive: %s",
            self.kind,
            _failure(exc),
            since,
            self._backfill_command(since, datetime.now(UTC).isoformat()),
        )

    def _report_unclean_stop(self, unsaved_from: str | None) -> None:
        """The last live run ended without its last save (killed, or its machine went down): the
        events the API had sent it and it had not stored are not sent again live."""
        if unsaved_from is None or self.summary.gap is not None:
            return  # a gap told already spans them
        log.warning(
            "!!! the last PoD %s stream stopped without saving its place (killed, or its machine "
            "went down): the events the API sent it after %s and it had not stored are not sent "
            "again live. Once 30 minutes old, backfill them from the archive: %s",
            self.kind,
            unsaved_from,
            self._backfill_command(unsaved_from, datetime.now(UTC).isoformat()),
        )

    def _backfill_command(self, since: str, until: str) -> str:
        """The command that fetches this stream's events from `since` to `until` from the archive."""
        return f"ppship pod stream --type {self.kind} --since {since} --until {until}"

    # -- frames -------------------------------------------------------------------------------

    def _consume(self, websocket, max_events: int | None, deadline: float | None) -> None:
        """Read until told to stop, then close, taking the events on their way (but past
        --max-events, which takes no more); a close by the API is the caller's to handle."""
        self._read_until_done(websocket, max_events, deadline)
        stopped = self.stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
        self._close_with_in_flight(websocket, keep=stopped or max_events is None)

    def _read_until_done(self, websocket, max_events: int | None, deadline: float | None) -> None:
        while not self._done(max_events, deadline):
            try:
                frame = websocket.recv(timeout=0.5)
            except TimeoutError:
                self._flush_if_due()
                continue
            self._take(frame)
            self._flush_if_due()
            if self.progress is not None and self.summary.events % 1000 == 0:
                print(
                    f"\rPoD {self.kind} archive: {self.summary.events} events, at {self._last_ts}",
                    end="",
                    file=self.progress,
                    flush=True,
                )

    def _close_with_in_flight(self, websocket, keep: bool) -> None:
        """Close the session and take the events the API sent before its close reply. It resumes
        the next session after the last event it sent, so those, in the socket's buffers and the
        library's queue, would never come again: thousands while it catches up on an hour. Not
        kept (a run of --max-events), they are counted and told."""
        closing = start_daemon_thread(websocket.close, f"pod-{self.kind}-close")
        left = 0
        try:
            while True:
                frame = websocket.recv(timeout=2 * CLOSE_TIMEOUT_SECONDS)  # a bound of our own too
                if keep:
                    self._take(frame)
                else:
                    left += 1
        except (ConnectionClosed, TimeoutError):
            pass  # the close reply, or the connection cut past CLOSE_TIMEOUT_SECONDS
        finally:
            closing.join()
        if left:
            log.warning(
                "PoD %s: stopped at --max-events; %d more frames the API had sent were not taken, "
                "and its next session resumes after them",
                self.kind,
                left,
            )

    def _take(self, frame: str | bytes) -> None:
        RECORDS_IN.inc(label=self.table)
        try:
            event, replaced = check_frame(self.kind, frame, self.settings.max_frame_bytes)
            key = event_key(event)
        except BadFrame as exc:
            self._count_bad_frame()
            self._dead_letter(frame, str(exc))
            return
        if key in self._recent_set:
            self.summary.duplicates += 1
            return
        self._remember(key)
        if replaced:
            self._tell_replaced(event)
        self._pending.append(to_record(self.kind, event))
        moment = event_time(event)
        if moment is not None and (self._last_time is None or moment > self._last_time):
            self._last_ts, self._last_time = event["ts"], moment  # a replayed hour does not go back
        if moment is not None and self._backfill and (self._reached is None or moment > self._reached):
            self._reached = moment
        self.summary.events += 1

    def _tell_replaced(self, event: dict) -> None:
        """Kept, with U+FFFD for the half surrogate: the first one told, all of them counted."""
        self.summary.replaced += 1
        if self.summary.replaced == 1:
            log.warning(
                "PoD %s: event %s holds %s; kept so, and counted",
                self.kind,
                event.get(ID_KEY[self.kind]),
                json_input.REPLACED,
            )

    def _remember(self, key: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(key)
        self._recent_set.add(key)

    def _dead_letter(self, frame: str | bytes, reason: str) -> None:
        folder = self.settings.dead_letter_dir
        folder.mkdir(parents=True, exist_ok=True)
        kept = frame[:65536]
        entry = {
            "time": datetime.now(UTC).isoformat(),
            "type": self.kind,
            "reason": reason,
            "bytes": len(frame),
            "frame": kept if isinstance(kept, str) else None,
            "frame_base64": base64.b64encode(kept).decode() if isinstance(kept, bytes) else None,
        }
        path = self._dead_letter_path
        try:
            _append_whole_line(path, orjson.dumps(entry) + b"\n")
        except OSError as exc:  # a full disk: say so here, or the stream would take it for a drop
            self._unkept_told.log(
                "PoD %s: %s; could not be kept in %s: %s", self.kind, reason, path, exc.strerror
            )
            return
        self._kept_told.log("PoD %s: %s; kept in %s", self.kind, reason, path)

    # -- delivery -----------------------------------------------------------------------------

    def _flush_if_due(self) -> None:
        self._kept_told.tell_due()
        self._unkept_told.tell_due()
        due = time.monotonic() - self._flushed_at >= self.settings.flush_seconds
        if len(self._pending) >= self.settings.flush_every or (due and self._pending):
            self._flush()

    def _flush(self) -> None:
        written = len(self._pending)
        for failures in itertools.count(1):
            try:
                self._hand_to_output()
                break
            except DeliveryError as exc:
                self._hold(exc, failures, written)
        RECORDS_OUT.inc(written, self.table)
        self.store.save(self._state())  # only after the flush
        self._flushed_at = time.monotonic()
        if (resumes_at := event_time({"ts": self._last_ts})) is not None:
            CURSOR_LAG.set((datetime.now(UTC) - resumes_at).total_seconds(), self.table)

    def _state(self) -> dict:
        """The resume point; while a live run is open, also where what a kill loses would start."""
        state = {"type": self.kind, "last_ts": self._last_ts, "recent": list(self._recent)}
        if self._backfill_range is not None:
            reached = self._reached and self._reached.isoformat()
            state["backfill"] = {**self._backfill_range, "reached": reached}
        if self._open_since is not None:
            state[UNSAVED_FROM] = self._last_ts or self._open_since
        elif self._left_open is not None:
            state[UNSAVED_FROM] = self._left_open
        return state

    def _hand_to_output(self) -> None:
        if self._pending:
            self.sink.write(self.table, self._pending)
            self._pending = []  # the sink holds them now, until it confirms them
        self.sink.flush()

    def _hold(self, exc: DeliveryError, failures: int, events: int) -> None:
        """The output did not confirm past its own retries (an agent restarting, S3 and the spool
        out of reach). The live API never sends these events again: hold them and try again, at
        the retry policy's delays, until a stop, which ends the run with the error. An archive
        backfill, which can be run again, stops past the policy's bound; a reader of stdout gone
        away at once."""
        policy = self.settings.retry
        wait = policy.delay(min(failures, policy.attempts))
        final = isinstance(exc, ReaderGone) or (self._backfill and failures >= policy.attempts)
        if final or self.stop.is_set():
            raise exc
        log.error(
            "PoD %s: the output did not confirm %d events (%s); holding them, trying again in %.1f s",
            self.kind,
            events,
            exc,
            wait,
        )
        if self.stop.wait(wait):
            raise exc

    def _done(self, max_events: int | None, deadline: float | None) -> bool:
        return (
            self.stop.is_set()
            or (max_events is not None and self.summary.events >= max_events)
            or (deadline is not None and time.monotonic() >= deadline)
        )


class _Connection(ClientConnection):
    """websockets' connection, whose threads (reader, keepalive) leave the stop signals to the
    main thread: taken there, a stop ends the handshake it waits for (stop_signals_blocked)."""

    def __init__(self, *args, **kwargs):
        with stop_signals_blocked():
            super().__init__(*args, **kwargs)

    def start_keepalive(self) -> None:
        with stop_signals_blocked():
            super().start_keepalive()


def stream_address(
    url: str, cluster_id: str, kind: str, since: datetime | None = None, until: datetime | None = None
) -> str:
    """The stream's URL for one event type: live, or the archive from `since` (to `until`)."""
    query = {"cid": cluster_id, "type": kind}
    if since is not None:
        query["sinceTime"] = since.isoformat()
        if until is not None:
            query["toTime"] = until.isoformat()
    return f"{url}?{urlencode(query)}"


def _cut_off(exc: Exception) -> bool:
    """Whether a session ended with events the API had sent maybe still on their way: any end but
    a close the API began, whose close frame follows everything it sent."""
    if isinstance(exc, ConnectionClosed):
        return exc.rcvd is None or not exc.rcvd_then_sent
    return True


def _failure(exc: Exception) -> str:
    """A failed try in a word or two: the exception's class, or the handshake's refusal."""
    if isinstance(exc, InvalidStatus):
        return f"handshake refused with {exc.response.status_code}"
    return type(exc).__name__


def refusal(exc: InvalidStatus) -> ConfigError:
    """The one-line error for a handshake the log API refused."""
    status = exc.response.status_code
    text = bytes(exc.response.body or b"").decode("utf-8", "replace").strip()[:200]
    if status == 409:
        return ConfigError(
            "the PoD log API refused a second session for this token (409: "
            + text
            + "): another consumer, for example your SIEM vendor, holds the token's "
            "live session; stop it or use a separate token"
        )
    if status in (401, 403):
        return ConfigError(f"the PoD log API refused the token ({status}); check POD_TOKEN")
    if status < 400:  # a proxy's page, or a redirect: no refusal of the API's
        return ConfigError(
            f"the handshake was answered {status}, not with a websocket: a proxy in the way? {text}"
        )
    return ConfigError(f"the PoD log API refused the request ({status}): {text}")


def _checked_state(state: dict, kind: str, where: str) -> dict:
    """The saved resume point, its fields as this stream writes them; else one clear ConfigError.

    The message and maillog streams write the same fields: `type` tells their files apart (a file
    saved before it was written is taken for either).
    """
    refuse_foreign(
        state, frozenset({"type", "last_ts", "recent", "backfill", UNSAVED_FROM}), where, "--cursor"
    )
    if state.get("type", kind) != kind:
        raise ConfigError(
            f"{where} is the resume point of the {state['type']!r} stream, not of {kind!r}: "
            "give each type its own --cursor"
        )
    recent, last_ts = state.get("recent", []), state.get("last_ts")
    backfill, unsaved_from = state.get("backfill"), state.get(UNSAVED_FROM)
    if (
        not (isinstance(recent, list) and all(isinstance(key, str) for key in recent))
        or not all(when is None or event_time({"ts": when}) is not None for when in (last_ts, unsaved_from))
        or not (backfill is None or _backfill_well_formed(backfill))
    ):
        raise ConfigError(
            "the PoD resume file holds what this version does not write; move it aside to start over"
        )
    return state


def _backfill_well_formed(backfill: object) -> bool:
    if not isinstance(backfill, dict) or set(backfill) != {"since", "until", "reached"}:
        return False
    return all(value is None or event_time({"ts": value}) is not None for value in backfill.values())


def _reached(saved: dict | None, backfill_range: dict[str, str | None]) -> datetime | None:
    """How far a backfill of this very range got, as saved; None for another range's, or none."""
    if saved is None or {"since": saved["since"], "until": saved["until"]} != backfill_range:
        return None
    return saved["reached"] and event_time({"ts": saved["reached"]})


def _append_whole_line(path: Path, line: bytes) -> None:
    """Append `line`, or leave the file as it was: a cut line would run into the next entry."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)  # mail data: ours only
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, line)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
