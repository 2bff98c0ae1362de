"""Assembler: parsed gateway lines in, one record per message out.

Filter lines are grouped by host and session (`s=`), and within a session by message (`m=`);
session lines (`mod=session cmd=connect|resolve|disconnect`) give the connection every message
of the session shares. A queue id that a message's line names (`mod=mail cmd=env_from|msg`,
`cmd=send`) joins that host's sendmail lines to the message; sendmail lines whose queue id no
message has named yet wait on their own, and join the message that names it later.

A message comes out `complete` once its session disconnected (and `settle` seconds of log time
passed, for lines that arrive a little late) and its deliveries are final. Anything idle for
`idle_timeout` seconds comes out with `complete: false`, and so does the least recently active
session (to the second) when `max_open` are open: memory is bounded and nothing is held
forever. Time is the lines' own (the newest seen), so a file replayed gives the same records as
the live stream. A line dated more than `max_ahead` after this machine's clock (a gateway whose
clock jumped) is assembled but does not move the time: believed, it would time out every open
message at once and leave later ones waiting for a time that is years away.
"""

import time as wall
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from proofpoint_shipper.gateway.message import Message, _get, _text
from proofpoint_shipper.gateway.record import FILTER, SENDMAIL

SESSION, QUEUE = "s", "q"  # the two kinds of open entries: a session, or sendmail lines alone
EXPIRY_STEP = 0.25  # seconds of log time between settle and timeout checks while lines come


@dataclass
class AssemblySettings:
    idle_timeout: float = 600.0  # seconds of log time without a line
    max_open: int = 50_000  # sessions and lone queue ids held at once
    settle: float = 2.0  # seconds after a disconnect in which late lines still join
    max_ahead: float = 86_400.0  # seconds a line's time may be after this machine's clock


@dataclass(slots=True)
class Session:
    host: str
    sid: str | None  # None: sendmail lines whose queue id no message named (yet)
    connection: dict = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    closed_at: float | None = None
    settled: bool = False
    last_active: float = 0.0


class Assembler:
    def __init__(self, settings: AssemblySettings | None = None, wall_clock: Callable[[], float] = wall.time):
        self.settings = settings or AssemblySettings()
        self.clock = 0.0  # the newest line time seen, epoch seconds
        self._wall_clock = wall_clock
        self._believable_until = 0.0  # line times up to this move the clock; refreshed when passed
        self.counts: Counter[str] = Counter()
        self.lines = 0
        self._open: OrderedDict[tuple, Session] = OrderedDict()  # least recently active first
        self._queue_ids: dict[tuple[str, str], tuple[tuple, str]] = {}  # (host, qid) → (key, m)
        self._settling: deque[tuple[float, tuple]] = deque()  # (disconnect time, key)
        self._expired_at = 0.0  # the clock at the last expire() from feed()
        self._second_of: dict[str, float] = {}  # "YYYY-mm-ddTHH:MM:SS±zz:zz" → epoch seconds
        self._second, self._next_second, self._clock_zone = "", "", ""  # see _take_time

    @property
    def open_count(self) -> int:
        return len(self._open)

    def feed(self, record: dict, out: list[dict] | None = None) -> list[dict]:
        """Take one parsed line; the message records it completed or pushed out are appended to
        `out` (a new list when none is given), which is returned."""
        if out is None:
            out = []
        time = record.get("time")
        clock_moved = False
        if time.__class__ is not str:
            time = None  # records read as NDJSON may hold anything: only a string is a time
        elif not (self._second <= time < self._next_second and time.endswith(self._clock_zone)):
            clock_moved = self._take_time(time)  # else: in the clock's second, read as text
        self.lines += 1
        stream = record.get("stream")
        if stream == FILTER:
            self._filter(record, time, out)
        elif stream == SENDMAIL:
            self._sendmail(record, time, out)
        else:
            self.counts["lines of other programs"] += 1
        if clock_moved and self.clock - self._expired_at >= EXPIRY_STEP:  # not per line: costly
            self._expired_at = self.clock
            out += self.expire(self.clock)
        return out

    def _take_time(self, time: str) -> bool:
        """Move the clock to a line's time when it is later; True when it moved.

        When it moves, the text of its second and of the next one are kept with its zone: a time
        of that zone that sorts between the two starts with the first, and so lies in the clock's
        second, which `feed` sees without parsing the time (most lines of a busy gateway share the
        second of the line before).
        """
        moment = self._seconds(time)
        if moment is None or moment <= self.clock or not self._believable(moment):
            return False
        self.clock = moment
        self._second, self._next_second, self._clock_zone = _second_bounds(time)
        return True

    def _believable(self, moment: float) -> bool:
        if moment > self._believable_until:
            self._believable_until = self._wall_clock() + self.settings.max_ahead
            if moment > self._believable_until:
                self.counts["lines dated ahead of this machine's clock (time not used)"] += 1
                return False
        return True

    def _seconds(self, time: str) -> float | None:
        """Epoch seconds of a line's time, to the whole second (all the clock needs), parsed
        once per second of log time."""
        if len(time) != 32:  # not YYYY-mm-ddTHH:MM:SS.ffffff±zz:zz
            return _seconds(time)
        second = time[:19] + time[26:]
        base = self._second_of.get(second)
        if base is None:
            if len(self._second_of) > 4096:
                self._second_of.clear()
            base = _seconds(second)
            if base is not None:
                self._second_of[second] = base
        return base

    def expire(self, now: float) -> list[dict]:
        """Settle disconnected sessions and time out idle ones, as of `now` (epoch seconds)."""
        out: list[dict] = []
        while self._settling and self._settling[0][0] + self.settings.settle <= now:
            closed_at, key = self._settling.popleft()
            session = self._open.get(key)
            if session is not None and session.closed_at == closed_at and not session.settled:
                session.settled = True
                self._emit_ready(key, session, out)
        while self._open:
            key, session = next(iter(self._open.items()))
            if session.last_active > now - self.settings.idle_timeout:
                break
            self.counts["timed out"] += 1
            self._close(key, out)
        return out

    def finish(self) -> list[dict]:
        """The end of the input: every open message, complete where it is."""
        out: list[dict] = []
        for key in list(self._open):
            session = self._open[key]
            if session.closed_at is not None:
                session.settled = True
                self._emit_ready(key, session, out)
            if key in self._open:
                self._close(key, out)
        return out

    # -- filter lines --------------------------------------------------------------------------

    def _filter(self, record: dict, time: str | None, out: list[dict]) -> None:
        # _fields(record) and _host(record), spelled out: most lines are filter lines
        fields = record.get("fields")
        sid = fields.get("s") if fields.__class__ is dict else None
        if not sid or sid.__class__ is not str:
            self.counts["filter lines without a session id"] += 1
            return
        host = record.get("host")
        if host.__class__ is not str:
            host = ""
        key = (SESSION, host, sid)
        session = self._open.get(key)
        if session is None:
            session = self._add(key, Session(host, sid, last_active=self.clock), out)
        elif session.last_active != self.clock:
            self._touch(key, session)
        number = fields.get("m")
        if not number or number.__class__ is not str:
            if fields.get("mod") == "session":
                self._session_line(key, session, fields, time)
                return
            number = _message_number(fields, session)
        message = session.messages.get(number)
        if message is None:
            message = session.messages[number] = Message(host, sid, number, connection=session.connection)
        message.count_line(time)
        message.take_filter(fields)
        if "qid" in fields:
            for qid in message.qids:
                if self._queue_ids.get((host, qid)) != (key, number):
                    self._claim(host, qid, key, number, message)
        if session.settled:
            self._emit_ready(key, session, out)

    def _session_line(self, key: tuple, session: Session, fields: dict, time: str | None) -> None:
        cmd = fields.get("cmd")
        connection = session.connection
        if cmd == "connect":
            for name, key in (("ip", "ip"), ("country", "country"), ("protocol", "prot")):
                if value := _get(fields, key):
                    connection[name] = value
        elif cmd == "resolve" and (host := _get(fields, "host")):
            connection["host"] = host
        elif cmd == "disconnect":
            if helo := _get(fields, "helo"):
                connection.setdefault("helo", helo)
            session.closed_at = self.clock
            self._settling.append((self.clock, key))
        for message in session.messages.values() or [self._session_message(session)]:
            message.count_line(time)

    def _session_message(self, session: Session) -> Message:
        """Session lines before any message line go to the session's first message."""
        return session.messages.setdefault(
            "1", Message(session.host, session.sid, "1", connection=session.connection)
        )

    def _claim(self, host: str, qid: str, key: tuple, number: str, message: Message) -> None:
        previous = self._queue_ids.get((host, qid))
        if previous is not None and previous != (key, number):
            self.counts["queue ids named by two messages"] += 1  # the later one gets its deliveries
        self._queue_ids[host, qid] = (key, number)
        alone = self._open.pop((QUEUE, host, qid), None)
        if alone is not None:  # sendmail lines that came before the line naming their queue id
            waiting = alone.messages[""]
            message.deliveries.update(waiting.deliveries)
            message.expected_deliveries = message.expected_deliveries or waiting.expected_deliveries
            message.line_count += waiting.line_count
            for time in (waiting.first, waiting.last):
                if time is not None:
                    message.first = min(message.first or time, time)
                    message.last = max(message.last or time, time)
            self.counts["sendmail lines joined late"] += waiting.line_count

    # -- sendmail lines ------------------------------------------------------------------------

    def _sendmail(self, record: dict, time: str | None, out: list[dict]) -> None:
        qid = record.get("qid")
        if not qid or qid.__class__ is not str:
            self.counts["sendmail lines without a queue id"] += 1
            return
        host = _host(record)
        target = self._queue_ids.get((host, qid))
        session = self._open.get(target[0]) if target else None
        if session is not None and target[1] in session.messages:
            key, message = target[0], session.messages[target[1]]
            if session.last_active != self.clock:
                self._touch(key, session)
        else:
            key = (QUEUE, host, qid)
            session = self._open.get(key)
            if session is None:
                session = self._add(key, _waiting_alone(host, qid, self.clock), out)
            elif session.last_active != self.clock:
                self._touch(key, session)
            message = session.messages[""]
        message.count_line(time)
        message.take_sendmail(qid, _fields(record), time)
        if session.settled:
            self._emit_ready(key, session, out)

    # -- open entries --------------------------------------------------------------------------

    def _touch(self, key: tuple, session: Session) -> None:
        """A line of an open entry at a later second than its last: it becomes the most recently
        active. Callers skip lines of the same second (the clock counts whole seconds), so the
        order within a second is that of each entry's first line in it: moving the entry at
        every line would be a step a line that the timeouts, in whole seconds, do not need."""
        session.last_active = self.clock
        self._open.move_to_end(key)

    def _add(self, key: tuple, session: Session, out: list[dict]) -> Session:
        """Open a new entry; at the bound, the least recently active one goes out first."""
        if len(self._open) >= self.settings.max_open:
            self.counts["flushed early (--max-open)"] += 1
            self._close(next(iter(self._open)), out)
        self._open[key] = session
        return session

    def _emit_ready(self, key: tuple, session: Session, out: list[dict]) -> None:
        for number, message in list(session.messages.items()):
            if message.deliveries_final():
                self._emit(key, session, number, True, out)
        if not session.messages:
            del self._open[key]

    def _close(self, key: tuple, out: list[dict]) -> None:
        session = self._open[key]
        for number in list(session.messages):
            self._emit(key, session, number, False, out)
        del self._open[key]

    def _emit(self, key: tuple, session: Session, number: str, complete: bool, out: list[dict]) -> None:
        message = session.messages.pop(number)
        for qid in message.qids:
            if self._queue_ids.get((session.host, qid)) == (key, number):
                del self._queue_ids[session.host, qid]
        if not message.has_content:
            self.counts["sessions without a message"] += 1  # connect and disconnect, no mail
            self.counts["lines of sessions without a message"] += message.line_count
            return
        self.counts["messages complete" if complete else "messages incomplete"] += 1
        out.append(message.record(complete))


def _fields(record: dict) -> dict:
    fields = record.get("fields")
    return fields if fields.__class__ is dict else {}


def _host(record: dict) -> str:
    host = record.get("host")
    return host if host.__class__ is str else ""


def _waiting_alone(host: str, qid: str, now: float) -> Session:
    message = Message(host, None, "", qids=[qid])
    return Session(host, None, message.connection, {"": message}, last_active=now)


def _message_number(fields: dict, session: Session) -> str:
    """m=, else the number after the dash in x=, else the session's latest message."""
    number = _text(fields.get("m"))
    if number is None and (x := _text(fields.get("x"))):
        number = x.rpartition("-")[2] or None
    if number is None:
        number = next(reversed(session.messages), "1")
    return number


def _second_bounds(time: str) -> tuple[str, str, str]:
    """`time`'s second as "YYYY-mm-ddTHH:MM:SS", the next second so, and its zone "±zz:zz", for a
    time written as YYYY-mm-ddTHH:MM:SS.ffffff±zz:zz; empty texts, which no time sorts between,
    for any other."""
    if len(time) != 32:
        return "", "", ""
    try:
        second = datetime.fromisoformat(time[:19])
        return time[:19], (second + timedelta(seconds=1)).isoformat(), time[26:]
    except (ValueError, OverflowError):  # year 9999's last second has none after it
        return "", "", ""


def _seconds(time: str) -> float | None:
    try:
        return datetime.fromisoformat(time).timestamp()
    except ValueError:
        return None
