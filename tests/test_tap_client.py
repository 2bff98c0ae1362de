"""The TAP client against a server on 127.0.0.1 that answers slowly, a few bytes at a time, and
its reading of Retry-After."""

import contextlib
import socket
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from proofpoint_shipper.errors import ConfigError, FetchError
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.tap.client import TapClient, _retry_after

START = datetime(2022, 2, 20, 14, 0, tzinfo=UTC)
ONE_TRY = RetryPolicy(attempts=1)


def client(url: str, **settings) -> contextlib.closing[TapClient]:
    return contextlib.closing(TapClient(url, "principal", "secret", retry=ONE_TRY, **settings))


def download(client: TapClient, target) -> None:
    client.download(START, START + timedelta(hours=1), target)


@contextlib.contextmanager
def trickling_server(status: str, body: bytes, *, gap: float, held_open: bool = False, headers: str = ""):
    """Answers each request with `status`, `headers` ("Name: value\r\n" each) and a `body` of which
    one byte comes every `gap` seconds (with no gap: all of it at once); `held_open`: after the
    first byte, nothing more until the client hangs up."""
    stop = threading.Event()

    def answer(connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode())
            if not (gap or held_open):
                connection.sendall(body)  # all at once, as a server that does not trickle
                return
            for index in range(len(body)):
                connection.sendall(body[index : index + 1])
                if held_open:
                    connection.recv(1)  # until the client closes (or the test ends)
                    return
                if stop.wait(gap):
                    return

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)

        def serve() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    connection, _ = server.accept()
                    connection.settimeout(30)
                    threading.Thread(target=answer, args=(connection,), daemon=True).start()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}"
        finally:
            stop.set()
            thread.join()


def test_an_answer_trickling_in_is_given_up_at_the_deadline_as_a_failed_try(tmp_path):
    """The read timeout bounds each wait for bytes, not the answer: a proxy sending a byte now
    and then held the collector for as long as it liked."""
    body = b" " * 40  # at a byte per 0.1 s: 4 s whole, against a deadline of 1 s
    late = r"the answer was not whole after 1 s \(\d+ bytes had come\)"
    with (
        trickling_server("200 OK", body, gap=0.1) as url,
        client(url, answer_deadline=1.0) as tap,
        pytest.raises(FetchError, match=late),
    ):
        download(tap, tmp_path / "answer.json")


def test_a_refusal_is_told_from_the_start_of_its_page_without_waiting_for_the_rest(tmp_path):
    """A 403 whose page never ends: waiting for all of it timed out, and the refusal, which
    stops the collector with its reason, was retried as a timeout instead."""
    page = b"Forbidden: no SIEM access" + b" " * 100
    with (
        trickling_server("403 Forbidden", page, gap=0, held_open=True) as url,
        client(url, timeout=2.0) as tap,
        pytest.raises(ConfigError, match=r"refused our credentials \(403 F"),
    ):
        download(tap, tmp_path / "answer.json")


def test_an_answer_within_the_deadline_is_saved_whole(tmp_path):
    """The deadline's check, a clock read per chunk, leaves an answer that keeps to it alone."""
    body = b'{"messagesDelivered": []}'
    with trickling_server("200 OK", body, gap=0.01) as url, client(url, answer_deadline=60.0) as tap:
        download(tap, tmp_path / "answer.json")
    assert (tmp_path / "answer.json").read_bytes() == body


BROKEN_GZIP = b"\x1f\x8b\x08\x00" + b"not deflate data" * 4


@pytest.mark.parametrize(
    ("status", "error", "told"),
    [
        ("200 OK", FetchError, r"the answer's gzip encoding is broken \(.+\) \(gave up after 1 tries\)"),
        (
            "401 Unauthorized",
            ConfigError,
            r"refused our credentials \(401 a page whose gzip encoding is broken\)",
        ),
    ],
)
def test_an_answer_whose_gzip_is_broken_is_a_failed_try_or_its_refusal_not_a_crash(
    tmp_path, status, error, told
):
    """A Content-Encoding that lies (a proxy's fault, say): httpx's DecodingError is not a
    transport error, and it stopped the collector with a traceback."""
    with (
        trickling_server(status, BROKEN_GZIP, gap=0, headers="Content-Encoding: gzip\r\n") as url,
        client(url) as tap,
        pytest.raises(error, match=told),
    ):
        download(tap, tmp_path / "answer.json")


@pytest.mark.parametrize("media_type", ["text/html; charset=utf-8", "application/xhtml+xml"])
def test_a_web_page_for_an_answer_is_a_failed_try_not_a_malformed_answer(tmp_path, media_type):
    """A proxy's block or login page sent as a 200: read as a malformed answer, its window was
    skipped after three tries, and the poll went on past every window while the proxy stood."""
    page = b"<html><body>Access to this site is blocked by policy</body></html>"
    with (
        trickling_server("200 OK", page, gap=0, headers=f"Content-Type: {media_type}\r\n") as url,
        client(url) as tap,
        pytest.raises(FetchError, match=r"a web page, not the API's JSON: <html><body>Access to this site"),
    ):
        download(tap, tmp_path / "answer.json")


def test_an_answer_of_json_or_of_no_stated_type_is_saved(tmp_path):
    body = b'{"clicksBlocked": []}'
    for headers in ("Content-Type: application/json\r\n", ""):
        with trickling_server("200 OK", body, gap=0, headers=headers) as url, client(url) as tap:
            download(tap, tmp_path / "answer.json")
        assert (tmp_path / "answer.json").read_bytes() == body


NOW = datetime(2022, 2, 20, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("Sun, 20 Feb 2022 15:01:30 GMT", 90.0),  # an HTTP date, which RFC 9110 allows as well
        ("Sun, 20 Feb 2022 14:59:00 GMT", -60.0),  # passed: the policy waits none
        ("Sun, 20 Feb 2022 15:01:30 -0000", None),  # a date of unknown zone
        ("soon", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_as_a_date(header, seconds):
    """A date was read as no Retry-After at all, and the back-off's own delay used instead."""
    answer = httpx.Response(429, headers={"Retry-After": header})
    assert _retry_after(answer, now=NOW) == seconds
