"""A real Fluent forward receiver for tests: msgpack over TCP on 127.0.0.1, port 0.

It acks every chunk (unless told not to), can demand a shared key (HELO/PING/PONG), can be
stopped and started again on the same port, and keeps what it received for the test to check.
While stopped, its port stays bound without listening (tests/ports.py): connections are refused,
as by an agent that is down, and no other server of the test is handed that port meanwhile.
With keep=False it only counts the records, decoding in msgpack's C code alone: a stand-in for an
agent's own forward input (C in Fluent Bit, Rust in Vector) where a benchmark measures the sender.
"""

import contextlib
import hashlib
import os
import socket
import socketserver
import threading

import msgpack
from fluent.sender import EventTime

from tests import ports


def decode_ext(code: int, data: bytes):
    """Decode EventTime with fluent-logger's own type, as an interoperable peer would."""
    if code == 0:
        return EventTime(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big"))
    return msgpack.ExtType(code, data)


class ForwardReceiver:
    def __init__(self, shared_key: str | None = None, ack: bool = True, tls=None, keep: bool = True):
        self.shared_key = shared_key
        self.tls = tls  # an ssl.SSLContext for the server side, or None for plain TCP
        self.ack = ack
        self.keep = keep
        self.chunks: list[tuple[str, list, dict]] = []  # (tag, entries, options) as received
        self.counted = 0  # records received, kept or not
        self.lock = threading.Lock()
        self.port = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def entries(self) -> list[tuple[str, object, dict]]:
        with self.lock:
            return [(tag, t, record) for tag, entries, _ in self.chunks for t, record in entries]

    def start(self, port: int | None = None) -> "ForwardReceiver":
        """Listen on `port` (a restart on the same port), or on the last one, or a free one."""
        if port is not None:
            self.port = port
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                receiver._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(
            ("127.0.0.1", self.port), Handler, bind_and_activate=False
        )
        held = ports.take(self.port) if self.port else None
        if held is not None:  # listen on the very socket that kept the port while we were down
            self._server.socket.close()
            self._server.socket = held
        else:
            self._server.server_bind()
        self._server.server_activate()
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop like a restarting agent: no new connections, and every open one dropped."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            ports.hold(self.port)
        with self.lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def _serve(self, connection: socket.socket) -> None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        try:
            if self.tls is not None:
                connection.do_handshake()
            self._serve_messages(connection)
        except (ConnectionError, OSError):
            return
        finally:
            if self.tls is not None:
                connection.close()  # the TLS wrapper owns the descriptor now

    def _serve_messages(self, connection: socket.socket) -> None:
        with self.lock:
            self._connections.add(connection)
        hook = {"ext_hook": decode_ext} if self.keep else {}
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024, **hook)
        if self.shared_key is not None and not self._handshake(connection, unpacker):
            return
        while self._server is not None:
            for message in _messages(connection, unpacker):
                self._take(connection, message)

    def _take(self, connection: socket.socket, message: list) -> None:
        tag, entries, options = message[0], message[1], (message[2] if len(message) > 2 else {})
        with self.lock:
            self.counted += len(entries)
            if self.keep:
                self.chunks.append((tag, entries, options))
        if self.ack and "chunk" in options:
            connection.sendall(msgpack.packb({"ack": options["chunk"]}))

    def _handshake(self, connection: socket.socket, unpacker: msgpack.Unpacker) -> bool:
        nonce = os.urandom(16)
        connection.sendall(msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}]))
        ping = next(_messages(connection, unpacker))
        _, hostname, salt, digest, _, _ = ping
        expected = hashlib.sha512(salt + hostname.encode() + nonce + self.shared_key.encode()).hexdigest()
        if digest != expected:
            connection.sendall(msgpack.packb(["PONG", False, "shared key mismatch", "receiver", ""]))
            return False
        ours = hashlib.sha512(salt + b"receiver" + nonce + self.shared_key.encode()).hexdigest()
        connection.sendall(msgpack.packb(["PONG", True, "", "receiver", ours]))
        return True


def _messages(connection: socket.socket, unpacker: msgpack.Unpacker):
    while True:
        data = connection.recv(65536)
        if not data:
            raise ConnectionResetError("client closed")
        unpacker.feed(data)
        yield from unpacker
