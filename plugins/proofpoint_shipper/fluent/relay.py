"""ForwardRelay: forward traffic in, gateway lines parsed and re-tagged, forward traffic out.

Clients (Fluent Bit or Fluentd `forward` outputs, fluent-logger) send any of the four modes; each
record's gateway line (under `log`, then `message`) is parsed and the record re-tagged by stream
(`proofpoint.gateway.filter|sendmail|other`) with its original time (a float as the EventTime it
stands for: the protocol has no floats), then delivered upstream; filter and sendmail records
gain `text`, their line as the gateway text tables hold it. A client's chunk is acked only after
upstream acked it. While delivery waits, that connection is not read (back-pressure), and a
bound on the memory of records in flight over all connections caps memory; frames still
arriving, over all connections, are held to the same bound apart. A garbage or oversized frame
closes only its own connection, with a logged reason.
"""

import asyncio
import logging
import os
import socket
import ssl
from collections import Counter
from dataclasses import dataclass
from time import monotonic
from time import time as epoch_seconds
from typing import TYPE_CHECKING

import msgpack

from proofpoint_shipper.errors import ConfigError, DeliveryAbandoned, DeliveryError
from proofpoint_shipper.fluent import codec, protocol
from proofpoint_shipper.fluent.delivery_thread import DeliveryThread
from proofpoint_shipper.gateway.record import TAKEN_APART, agent_line, decoding_problem, mark_taken_apart
from proofpoint_shipper.logs import Throttled
from proofpoint_shipper.metrics import PARSE_ERRORS, RECORDS_IN, RECORDS_OUT, RETRIES
from proofpoint_shipper.sinks.records import record_time
from proofpoint_shipper.streams import BY_NAME, OTHER, OTHER_TAG

if TYPE_CHECKING:  # the command builds them: importing the parser here would build its grammars
    from proofpoint_shipper.gateway.assembler import Assembler
    from proofpoint_shipper.gateway.parser import GatewayParser

log = logging.getLogger("proofpoint_shipper")
# A frame's records take about 17 bytes of memory per byte they had on the wire: 5 once decoded,
# 8 more once parsed, 3 more packed for upstream (measured on the bench's mixed lines). In-flight
# room is charged at this rate.
MEMORY_PER_WIRE_BYTE = 17
# A frame still arriving is held twice: in the splitter's unpacker, and in the copy it is cut from.
ARRIVING_MEMORY_PER_WIRE_BYTE = 2
TAGS = {name: BY_NAME[name].tag for name in ("gateway_filter", "gateway_sendmail")} | {OTHER: OTHER_TAG}
TABLES = {name: BY_NAME[name].table for name in ("gateway_filter", "gateway_sendmail")} | {OTHER: OTHER}
MESSAGE = BY_NAME["gateway_message"]  # the extra table of assembled messages (--assemble)
TABLE_OF_TAG = {TAGS[name]: TABLES[name] for name in TAGS} | {MESSAGE.tag: MESSAGE.table}
# After the drain, how long a delivery under way may take to end once given up (a forward
# upstream's wait ends at once; an S3 upload cannot be cut short, and is left unfinished).
GIVE_UP_SECONDS = 2.0


@dataclass
class RelaySettings:
    host: str = "127.0.0.1"
    port: int = 24224
    keys: tuple[str, ...] = ("log", "message")
    shared_key: str | None = None
    tls: ssl.SSLContext | None = None
    max_frame_bytes: int = 16 * 1024 * 1024
    max_in_flight_bytes: int = 64 * 1024 * 1024  # memory, estimated: see MEMORY_PER_WIRE_BYTE
    reuse_port: bool = False
    retry_seconds: float = 1.0  # between upstream attempts while it is down
    drain_seconds: float = 30.0  # on SIGTERM: how long chunks in delivery may take to finish
    handshake_seconds: float = 30.0  # a client that never answers our HELO does not hold on


class ForwardRelay:
    def __init__(
        self,
        parser: "GatewayParser",
        upstream,
        settings: RelaySettings,
        assembler: "Assembler | None" = None,
    ):
        self.parser = parser
        self.assembler = assembler  # with --assemble: message records beside the line records
        self._last_line = monotonic()
        self._expiry_task: asyncio.Task | None = None
        # stage(tag, entries) on this event loop (CPU work: packing), then flush() in the delivery
        # thread (I/O, back once confirmed): a ForwardSink or a TableUpstream. Packing in the
        # thread that waits on sockets made the two threads fight over the GIL: 15 % slower.
        self.upstream = upstream
        self.settings = settings
        self.in_flight = 0
        self.arriving = 0  # wire bytes of frames not yet whole, over all connections
        self.relayed = 0
        self._room = asyncio.Condition()
        self._deliveries = DeliveryThread("upstream")
        self.delivery_left_running = False  # at the stop: a delivery that did not end, left to die
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._in_delivery: set[asyncio.Future] = set()  # done once upstream acked their records
        self._between_frames: set[asyncio.Task] = set()  # handlers waiting for a frame to begin
        self._giving_back: set[asyncio.Task] = set()  # room given back after a delivery
        self._closing = False
        self._queue: asyncio.Queue | None = None  # (retagged entries, future) waiting for upstream
        self._delivery_task: asyncio.Task | None = None
        self.broken: asyncio.Event | None = None  # set when delivery stopped on an unexpected error
        # A client refused in a loop (garbage, a wrong shared key) would fill the log: ten lines a minute.
        self._refusals = Throttled(log, logging.WARNING, "relay: {count} more clients refused in {seconds} s")
        self._odd_times = Throttled(
            log,
            logging.WARNING,
            "relay: {count} more frames with records whose time is no time in {seconds} s",
        )
        self.failure: ConfigError | None = None  # why, when it was a setting: the command's error
        self._taken_apart_told = False

    async def start(self) -> tuple[str, int]:
        self._queue = asyncio.Queue()
        self.broken = asyncio.Event()
        self._delivery_task = asyncio.create_task(self._deliver_batches())
        self._delivery_task.add_done_callback(self._task_ended)
        if self.assembler is not None:
            self._expiry_task = asyncio.create_task(self._expire_idle_messages())
            self._expiry_task.add_done_callback(self._task_ended)
        self._server = await asyncio.start_server(
            self._connection,
            self.settings.host,
            self.settings.port,
            reuse_port=self.settings.reuse_port or None,  # TLS is started per connection: see _secure
            limit=2**16,  # read-ahead per connection while delivery waits
        )
        return self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Stop accepting; give chunks in delivery `drain_seconds` to be acked, then close. A
        connection waiting for its next frame is closed at once. When delivery itself stopped
        (`broken`), close at once: no chunk can be acked any more.

        A chunk not acked by then is not lost: its client never got our ack and sends it again.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()  # no new connections
        for handler in self._between_frames:
            handler.cancel()  # nothing of theirs to drain; their deliveries are in _in_delivery
        draining = (self._handlers - self._between_frames) | self._in_delivery  # unwaited frames too
        if draining and not self.broken.is_set():  # broken: nothing in delivery can be acked
            await asyncio.wait(draining, timeout=self.settings.drain_seconds)
        for handler in self._handlers:
            handler.cancel()
        if self._server is not None:
            await self._connections_closed()
        self._refusals.close()  # the refusals not told yet
        self._odd_times.close()
        if self.assembler is not None:
            await self._deliver_open_messages()
        self.upstream.abandon()  # unblock a delivery still waiting for upstream
        if self._delivery_task is not None:
            self._delivery_task.cancel()
        await self._end_deliveries()

    async def _end_deliveries(self) -> None:
        """The delivery thread ends, or is left to end with the process: what it delivers was not
        acked (an upload whose answer never comes cannot be cut short)."""
        self._deliveries.shutdown(wait=False, cancel_futures=True)
        if not await asyncio.to_thread(self._deliveries.finished_within, GIVE_UP_SECONDS):
            self.delivery_left_running = True
            log.warning(
                "relay: a delivery still under way after the drain (upstream or S3 not answering) is "
                "left unfinished; its chunks were not acked, so their clients send them again"
            )

    async def _connections_closed(self) -> None:
        """Since Python 3.12 the server's wait_closed() waits for every client connection to
        close: only once their handlers ended, and bounded, as a client may never read its last
        bytes."""
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)
        try:
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        except TimeoutError:
            log.warning("relay: stopping with client connections still closing")

    # -- one client connection ----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        self._refusals.tell_due()
        peer = writer.get_extra_info("peername")
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.settings.tls is not None:
                await self._secure(writer)
            if self.settings.shared_key is None or await self._handshake(reader, writer):
                await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ssl.SSLEOFError):
            pass
        except codec.ProtocolError as exc:
            self._refusals.log("relay: closing the connection from %s: %s", peer, exc)
        except ssl.SSLError as exc:  # a TLS record that does not decrypt, after the handshake
            self._refusals.log(
                "relay: closing the connection from %s: TLS error: %s", peer, exc.reason or exc
            )
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        frames, counted = FrameSplitter(self.settings.max_frame_bytes), 0  # counted: in self.arriving
        first = True
        try:
            while not self._closing and (data := await self._next_bytes(reader, frames)):
                if first and (protocol_named := _another_protocol(data)):
                    raise codec.ProtocolError(protocol_named)
                first = False
                for frame in frames.feed(data):
                    options, delivered = await self._relay(frame, len(frame) * MEMORY_PER_WIRE_BYTE, peer)
                    if _asks_for_ack(options):
                        await delivered  # upstream acked these records
                        writer.write(msgpack.packb({"ack": options["chunk"]}, use_bin_type=True))
                        await writer.drain()
                self.arriving += frames.pending_bytes - counted
                counted = frames.pending_bytes
                if self._too_much_arriving(counted):
                    raise codec.ProtocolError(
                        "frames still arriving on all connections take over "
                        f"{self.settings.max_in_flight_bytes} bytes (--max-in-flight-bytes); "
                        "its chunk is left for its client to send again"
                    )
        finally:
            self.arriving -= counted

    async def _next_bytes(self, reader: asyncio.StreamReader, frames: "FrameSplitter") -> bytes:
        """The connection's next bytes. Between frames (an agent keeps its connection open between
        chunks) the connection has nothing to drain: a stop closes it at once."""
        task = asyncio.current_task()
        if frames.pending_bytes == 0:
            self._between_frames.add(task)
        try:
            return await reader.read(65536)
        finally:
            self._between_frames.discard(task)

    def _too_much_arriving(self, mine: int) -> bool:
        """Whether a connection's partial frame of `mine` bytes takes those of all connections past
        the in-flight bound (a bound of their own).

        Without it, many clients each sending a frame just under --max-frame-bytes, slowly, would
        hold memory without bound. A partial frame alone (no other connection holds part of one)
        is let in whatever its size (up to --max-frame-bytes), as a lone frame is let in flight.
        """
        others = self.arriving - mine
        return (
            mine > 0
            and others > 0
            and self.arriving * ARRIVING_MEMORY_PER_WIRE_BYTE > self.settings.max_in_flight_bytes
        )

    async def _secure(self, writer: asyncio.StreamWriter) -> None:
        """The TLS handshake, here rather than in the server: asyncio drops a failed one without a
        word, and a client sending plain forward traffic to a TLS relay would be closed unseen.
        A peer that leaves before its hello (a TCP health check), or sends none within the
        handshake time (asyncio aborts it: a ConnectionError), is not worth a line."""
        try:
            await writer.start_tls(self.settings.tls, ssl_handshake_timeout=self.settings.handshake_seconds)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise ConnectionResetError("gone before the TLS handshake") from None
        except ssl.SSLError as exc:
            hint = NOT_TLS.get(exc.reason, "")
            raise codec.ProtocolError(f"TLS handshake failed: {exc.reason or exc}{hint}") from None

    async def _handshake(self, reader, writer) -> bool:
        nonce = os.urandom(16)
        writer.write(msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}]))
        await writer.drain()
        unpacker = protocol.unpacker()
        try:
            async with asyncio.timeout(self.settings.handshake_seconds):
                while data := await reader.read(4096):
                    unpacker.feed(data)
                    for ping in unpacker:
                        return await self._answer_ping(ping, nonce, writer)
        except TimeoutError:
            raise codec.ProtocolError(
                f"no PING within {self.settings.handshake_seconds:g} s of our HELO"
            ) from None
        except (msgpack.BufferFull, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
            raise codec.ProtocolError(f"not a PING: {protocol.msgpack_fault(exc)}") from None
        return False  # gone before its PING

    async def _answer_ping(self, ping, nonce: bytes, writer) -> bool:
        key = self.settings.shared_key
        ok = (
            isinstance(ping, list)
            and len(ping) == 6
            and ping[0] == "PING"
            and isinstance(ping[1], str)  # the client's hostname
            and isinstance(ping[2], bytes | str)  # its salt
            and protocol.digest_matches(ping[3], protocol.as_bytes(ping[2]), ping[1], nonce, key)
        )
        hostname = socket.gethostname()
        digest = protocol.shared_key_digest(protocol.as_bytes(ping[2]), hostname, nonce, key) if ok else ""
        writer.write(msgpack.packb(["PONG", ok, "" if ok else "shared key mismatch", hostname, digest]))
        await writer.drain()
        if not ok:
            self._refusals.log("relay: refused a client whose shared key does not match")
        return ok

    # -- delivery -----------------------------------------------------------------------------

    async def _relay(self, frame: bytes, size: int, peer: object) -> tuple[dict, asyncio.Future]:
        """Queue one frame's records for delivery once there is room for them; returns the frame's
        options, and a future done once upstream acked the records.

        Room is taken before the frame is decoded and parsed, which is where memory grows: a
        connection waiting for room holds only the frame's bytes. It is given back on delivery.
        A frame whose client asks for no ack (fluent-logger's Message mode: one record a frame)
        is not waited for: the connection reads on, and its frames go upstream together, in
        order, within the in-flight bound. Waited for one by one, each was a delivery of its
        own: with --output s3, an object per record.
        """
        async with self._room:
            await self._room.wait_for(
                lambda: self.in_flight == 0 or self.in_flight + size <= self.settings.max_in_flight_bytes
            )
            self.in_flight += size
        try:
            options, entries, count = self._retagged(frame, peer)
        except BaseException:
            await self._give_back(size)
            raise
        return options, self._queued(entries, count, size)

    def _retagged(self, frame: bytes, peer: object) -> tuple[dict, dict[str, list], int]:
        """The frame's options, its entries parsed and grouped by their new tag, and their count."""
        _, entries, options = codec.decode(_unpacked(frame))
        entries, no_time = codec.spec_times(entries, epoch_seconds())
        if no_time:
            self._odd_times.log(
                "relay: a frame from %s held %d float times that are no time (NaN, infinite "
                "or outside 1970 to 2106): those records are stamped with the time received",
                peer,
                no_time,
            )
        return options, self._retag(entries), len(entries)

    def _queued(self, entries: dict[str, list], count: int, size: int) -> asyncio.Future:
        """The records queued for delivery; the future is done once upstream acked them."""
        done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((entries, done))  # unbounded: the room taken bounds it
        self._in_delivery.add(done)
        done.add_done_callback(lambda _: self._delivered(done, size, count))
        return done

    def _delivered(self, done: asyncio.Future, size: int, count: int) -> None:
        self._in_delivery.discard(done)
        if not done.cancelled():  # cancelled: its client's handler was, at a stop, while it waited
            self.relayed += count
        giving_back = asyncio.get_running_loop().create_task(self._give_back(size))
        self._giving_back.add(giving_back)  # held: the loop keeps only a weak reference to a task
        giving_back.add_done_callback(self._giving_back.discard)

    async def _give_back(self, size: int) -> None:
        async with self._room:
            self.in_flight -= size
            self._room.notify_all()

    async def _deliver_batches(self) -> None:
        """One delivery at a time, of every chunk waiting: a single upstream round trip for all."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            unwritten: dict[str, list[list]] = {}
            for retagged, _ in batch:
                for tag, entries in retagged.items():
                    unwritten.setdefault(tag, []).extend(entries)
            for tag, entries in unwritten.items():
                self.upstream.stage(tag, entries)  # once: the upstream keeps them until confirmed
            while True:
                try:
                    await loop.run_in_executor(self._deliveries, self.upstream.flush)  # a retry: again
                    break
                except DeliveryAbandoned:
                    return  # shutting down: these chunks stay unacked, their clients send them again
                except DeliveryError as exc:
                    RETRIES.inc(label="relay_upstream")
                    log.warning(
                        "relay: upstream did not take %d chunks (%s); trying again in %.0f s",
                        len(batch),
                        exc,
                        self.settings.retry_seconds,
                    )
                    await asyncio.sleep(self.settings.retry_seconds)
            for retagged, _ in batch:
                _count(RECORDS_OUT, retagged)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _task_ended(self, task: asyncio.Task) -> None:
        """Delivery and message expiry end only at shutdown. Ended by a fault, nothing would be
        acked (or expired) again while clients kept sending: say so, and let the command stop
        (a supervisor restarts it)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        what = "delivery" if task is self._delivery_task else "message expiry"
        if isinstance(exc, ConfigError):  # upstream refused our shared key, say: no retry fixes it
            log.error("relay: %s stopped: %s", what, exc)
            self.failure = exc
        else:
            log.error("relay: %s stopped on an unexpected error: %r", what, exc, exc_info=exc)
        self.broken.set()

    def _retag(self, entries: list) -> dict[str, list[list]]:
        by_tag: dict[str, list[list]] = {tag: [] for tag in TAGS.values()}
        keys, parse = self.settings.keys, self.parser.parse_with_text
        errors: Counter[str] = Counter()
        messages: list[dict] = []
        for time, record in entries:
            line = agent_line(record, keys)
            if line is not None:
                parsed = parse(line, problem=decoding_problem(line))
                if "ident" in record and mark_taken_apart(record, parsed):
                    self._tell_taken_apart()
            else:
                parsed = {"stream": OTHER, "error": f"no gateway line under {' or '.join(keys)}"}
            record.update(parsed)  # the record is ours: decoded from this frame alone
            by_tag[TAGS[parsed["stream"]]].append([time, record])
            if "error" in parsed:
                errors[TABLES[parsed["stream"]]] += 1
            if self.assembler is not None:
                self.assembler.feed(record, messages)
        for table, count in errors.items():
            PARSE_ERRORS.inc(count, table)
        by_tag[MESSAGE.tag] = _message_entries(messages)
        self._last_line = monotonic()
        retagged = {tag: tagged for tag, tagged in by_tag.items() if tagged}
        _count(RECORDS_IN, retagged)
        return retagged

    def _tell_taken_apart(self) -> None:
        """Once: a pipeline that takes every line apart sends nothing to the tables."""
        if not self._taken_apart_told:
            self._taken_apart_told = True
            log.warning("relay: %s (each such record says so in its error)", TAKEN_APART)

    async def _expire_idle_messages(self) -> None:
        """While no lines come, run the assembler's clock on: idle messages still come out."""
        while True:
            await asyncio.sleep(1.0)
            idle = monotonic() - self._last_line
            if idle >= 1.0 and self.assembler.clock:
                self._send_messages(self.assembler.expire(self.assembler.clock + idle))

    def _send_messages(self, messages: list[dict]) -> asyncio.Future | None:
        """Queue message records no client waits for; returns the future of their delivery."""
        if not messages:
            return None
        done = asyncio.get_running_loop().create_future()
        retagged = {MESSAGE.tag: _message_entries(messages)}
        _count(RECORDS_IN, retagged)
        self._queue.put_nowait((retagged, done))
        return done

    async def _deliver_open_messages(self) -> None:
        """At shutdown, messages still open go out with complete=false, within the drain time."""
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        done = self._send_messages(self.assembler.finish())
        if done is not None:
            await asyncio.wait({done}, timeout=self.settings.drain_seconds)
            if not done.done():
                log.warning("relay: upstream did not take the still open message records in time")


# OpenSSL's reasons for a hello that is no TLS at all, and what they mean here.
NOT_TLS = {
    "WRONG_VERSION_NUMBER": " (no TLS: the client's TLS is off)",
    "HTTP_REQUEST": " (an HTTP request, not a forward client)",
}
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"DELETE ", b"PATCH ", b"PRI * HTTP/2")


def _another_protocol(opening: bytes) -> str | None:
    """What a connection's first bytes are when they open a TLS handshake or an HTTP request: read
    as msgpack, they were "not a forward message: '22'" (a TLS record's first byte), no clue."""
    if opening[:1] == b"\x16" and opening[1:2] == b"\x03":
        return (
            "a TLS handshake: the client has TLS on and this relay serves plain forward traffic "
            "(give it --tls-cert and --tls-key, or turn the client's TLS off)"
        )
    if opening.startswith(HTTP_METHODS):
        return "an HTTP request: this port takes the Fluent forward protocol, not HTTP"
    return None


def _unpacked(frame: bytes) -> object:
    try:
        return protocol.unpack_frame(frame)
    except (ValueError, msgpack.UnpackException) as exc:  # a map key that is not a string, for one
        raise codec.ProtocolError(f"undecodable frame: {exc}") from exc


def _message_entries(messages: list[dict]) -> list[list]:
    """Message records as forward entries, stamped with the message's first line time."""
    return [[protocol.event_time(record_time(message)), message] for message in messages]


def _count(family, retagged: dict[str, list[list]]) -> None:
    """Add records by tag to a per-table counter (`other` for lines of no table)."""
    for tag, entries in retagged.items():
        family.inc(len(entries), TABLE_OF_TAG[tag])


def _asks_for_ack(options: dict) -> bool:
    """Whether the client asked for an ack: a `chunk` of any value but nil and false, echoed as
    it came, as Fluentd's in_forward does (a chunk sent as a number was relayed, never acked,
    and sent again by its client for ever)."""
    chunk = options.get("chunk")
    return chunk is not None and chunk is not False


class FrameSplitter:
    """Cuts a connection's bytes into whole msgpack frames without decoding them.

    msgpack's `skip` finds where a frame ends (and rejects garbage); the frame's bytes are kept
    as they came, to be decoded only when there is room in flight for what they become.
    """

    def __init__(self, max_frame_bytes: int):
        self.max_frame_bytes = max_frame_bytes
        self._unpacker = protocol.unpacker(max_frame_bytes)
        self._pending = bytearray()  # bytes fed since the last whole frame
        self._told = 0  # the unpacker's position after that frame

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes):
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise codec.ProtocolError(f"a frame over {self.max_frame_bytes} bytes") from None
        self._pending += data
        while True:
            try:
                self._unpacker.skip()
            except msgpack.OutOfData:
                return
            except (msgpack.FormatError, msgpack.StackError, ValueError) as exc:
                raise codec.ProtocolError(f"not msgpack: {protocol.msgpack_fault(exc)}") from exc
            size, self._told = self._unpacker.tell() - self._told, self._unpacker.tell()
            frame = bytes(self._pending[:size])
            del self._pending[:size]
            yield frame
