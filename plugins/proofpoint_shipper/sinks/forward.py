"""ForwardSink: records to a Fluent forward input (Fluent Bit, Fluentd, Vector) with acks.

Records are sent as Forward-mode chunks tagged with their stream's tag and EventTime times;
`flush()` returns once every chunk was acknowledged. A lost connection is re-opened under the
retry policy and unacknowledged chunks are sent again (at-least-once: the receiver may see a
chunk twice if only its ack was lost). Optional TLS and shared-key handshake.
"""

import contextlib
import logging
import socket
import ssl
from collections import defaultdict

from proofpoint_shipper.errors import ConfigError, DeliveryAbandoned, DeliveryError
from proofpoint_shipper.fluent import protocol
from proofpoint_shipper.listening import url_host
from proofpoint_shipper.retry import DEFAULT_RETRY, RetryPolicy
from proofpoint_shipper.sinks.records import record_time, stream_for

log = logging.getLogger("proofpoint_shipper")
DEFAULT_CHUNK_RECORDS = 1000
# Fluent Bit's forward input closes the connection on a message over its Buffer_Max_Size (6,144,000
# bytes by default), and the chunk would be sent again for ever: stay well below it.
DEFAULT_CHUNK_BYTES = 4_000_000


class ForwardSink:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        shared_key: str | None = None,
        hostname: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        chunk_records: int = DEFAULT_CHUNK_RECORDS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        ca_flag: str = "--forward-ca",
    ):
        self.address = (host, port)
        self.tls = tls
        self.ca_flag = ca_flag  # named when the receiver's certificate is not trusted
        self.shared_key = shared_key
        self.hostname = hostname or socket.gethostname()
        self.timeout = timeout
        self.retry = retry
        self.chunk_records = chunk_records
        self.chunk_bytes = chunk_bytes
        self._entries: dict[str, list[list]] = defaultdict(list)
        self._unacked: dict[str, bytes] = {}  # chunk id → packed chunk, in sending order
        self._socket: socket.socket | None = None
        self._unpacker = protocol.unpacker()
        self._abandoned = False

    def write(self, table: str, records: list[dict], name: str | None = None) -> None:
        tag = stream_for(table).tag
        self.write_entries(tag, [[protocol.event_time(record_time(record)), record] for record in records])

    def write_entries(self, tag: str, entries: list[list]) -> None:
        """Entries [time, record] under any tag, their times kept as given (a relay's case)."""
        self._entries[tag].extend(entries)

    def stage(self, tag: str, entries: list[list]) -> None:
        """`write_entries` and pack them into chunks now, in the caller's thread (the relay's
        event loop), so that `flush` in another thread only sends and waits."""
        self.write_entries(tag, entries)
        self._cut_chunks()

    def flush(self) -> None:
        self._cut_chunks()
        if not self._unacked:
            return
        try:
            self.retry.run(
                self._send_and_confirm,
                f"forward to {self._where()}",
                (OSError, DeliveryError),
                operation="forward",
            )
        except (OSError, DeliveryError) as exc:
            self._disconnect()
            raise DeliveryError(
                f"forward receiver {self._where()} did not acknowledge {len(self._unacked)} chunks: {exc}"
            ) from exc

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._disconnect()

    def _cut_chunks(self) -> None:
        for tag, entries in self._entries.items():
            for start in range(0, len(entries), self.chunk_records):
                self._pack(tag, entries[start : start + self.chunk_records])
        self._entries.clear()

    def _pack(self, tag: str, batch: list[list]) -> None:
        """One chunk of `batch`, or, when it packs larger than `chunk_bytes`, chunks of its halves
        (large records are rare: packing first and splitting then is the cheap way)."""
        chunk_id = protocol.new_chunk_id()
        chunk = protocol.forward_chunk(tag, batch, chunk_id)
        if len(chunk) > self.chunk_bytes and len(batch) > 1:
            middle = len(batch) // 2
            self._pack(tag, batch[:middle])
            self._pack(tag, batch[middle:])
            return
        if len(chunk) > self.chunk_bytes:
            log.warning(
                "forward: one record of %d bytes is over the %d-byte chunk size; sent alone",
                len(chunk),
                self.chunk_bytes,
            )
        self._unacked[chunk_id] = chunk

    def _send_and_confirm(self) -> None:
        if self._abandoned:
            raise DeliveryAbandoned(f"delivery to {self._where()} was given up at shutdown")
        try:
            connection = self._connection()
            for payload in self._unacked.values():
                connection.sendall(payload)
            while self._unacked:
                reply = self._receive(connection)
                chunk_id = reply.get("ack") if isinstance(reply, dict) else None
                if chunk_id not in self._unacked:
                    raise DeliveryError(f"unexpected reply {str(reply)[:80]!r}")
                del self._unacked[chunk_id]
        except BaseException as exc:
            self._disconnect()  # start the next attempt on a fresh connection
            if self._abandoned:
                raise DeliveryAbandoned(f"delivery to {self._where()} was given up at shutdown") from exc
            raise

    def _connection(self) -> socket.socket:
        if self._socket is None:
            raw = socket.create_connection(self.address, timeout=self.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # acks are tiny: no Nagle delay
            self._socket = self._secure(raw) if self.tls else raw
            self._unpacker = protocol.unpacker()
            if self.shared_key is not None:
                self._handshake(self._socket)
        return self._socket

    def _secure(self, raw: socket.socket) -> socket.socket:
        try:
            return self.tls.wrap_socket(raw, server_hostname=self.address[0])
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise ConfigError(
                f"forward receiver {self._where()} presented a certificate we do not "
                f"trust: {exc.verify_message}; give the CA that signed it with {self.ca_flag}"
            ) from exc
        except BaseException:
            raw.close()
            raise

    def _handshake(self, connection: socket.socket) -> None:
        message, salt, nonce = protocol.ping(self._receive(connection), self.hostname, self.shared_key)
        connection.sendall(message)
        protocol.check_pong(self._receive(connection), salt, nonce, self.shared_key)

    def _receive(self, connection: socket.socket) -> object:
        """The next message from the receiver; raises on a closed connection or a timeout."""
        while True:
            for message in self._unpacker:
                return message
            data = connection.recv(65536)
            if not data:
                raise ConnectionResetError("forward receiver closed the connection")
            self._unpacker.feed(data)

    def abandon(self) -> None:
        """From another thread: make a blocked or later flush fail at once, without retries."""
        self._abandoned = True
        connection = self._socket
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _disconnect(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    def _where(self) -> str:
        return f"{url_host(self.address[0])}:{self.address[1]}"
