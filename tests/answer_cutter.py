"""A TCP proxy on 127.0.0.1 that cuts an HTTP answer short: a network dropping a connection
while a body (or a websocket's frames) comes in, on real sockets.

Every connection is passed through to `port`; the answer to the first `times` requests whose
request line starts with `request_start` is cut after its headers and `body_bytes` more, and the
connection reset, as a load balancer or a flaky path does. Later answers pass whole.
"""

import contextlib
import socket
import struct
import threading


class AnswerCutter:
    def __init__(self, port: int, request_start: bytes, times: int = 1, body_bytes: int = 3):
        self.target = ("127.0.0.1", port)
        self.request_start = request_start
        self.body_bytes = body_bytes
        self.cuts_left = times
        self.cut = 0  # answers cut so far
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.target)
            to_cut = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, to_cut), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client, to_cut), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, to_cut: threading.Event) -> None:
        """Client to server; a request to cut marks its connection before it goes on."""
        while data := _received(client):
            if data.startswith(self.request_start) and self._take_a_cut():
                to_cut.set()
            try:
                server.sendall(data)
            except OSError:
                return
        _close(server)

    def _take_a_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            return True

    def _answers(self, server: socket.socket, client: socket.socket, to_cut: threading.Event) -> None:
        """Server to client, whole; or, once a request was marked, up to a few bytes of its body."""
        answer = b""
        while data := _received(server):
            if not to_cut.is_set():
                try:
                    client.sendall(data)
                except OSError:
                    return
                continue
            answer += data
            end_of_headers = answer.find(b"\r\n\r\n")
            if end_of_headers >= 0 and len(answer) > end_of_headers + 4 + self.body_bytes:
                client.sendall(answer[: end_of_headers + 4 + self.body_bytes])
                with self._lock:
                    self.cut += 1
                _reset(client)
                _close(server)
                return
        _close(client)


def _received(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except OSError:
        return b""


def _reset(connection: socket.socket) -> None:
    """Close with a reset (RST), not an orderly end: what a dropped connection looks like. The
    thread reading the client's requests is woken first: its blocked read holds the socket, and
    the reset goes out only once no call holds it."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RD)  # not SHUT_WR: that would send an orderly end first
    with contextlib.suppress(OSError):
        connection.close()


def _close(connection: socket.socket) -> None:
    """An orderly end, at once: shut down first, as the other direction's thread blocked in a read
    holds the socket, and a close alone would send nothing until that read ended."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()
