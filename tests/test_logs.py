"""Log lines: a flood of one kind becomes ten lines and a count per period; every event one line."""

import io
import logging

import httpx
import pytest

from proofpoint_shipper.errors import FetchError
from proofpoint_shipper.logs import TextFormatter, Throttled
from proofpoint_shipper.tap.client import TapClient


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_over_the_burst_are_counted_and_told_when_the_period_ends(caplog):
    clock = Clock()
    throttled = Throttled(
        logging.getLogger("test.throttled"), logging.ERROR, "{count} more in {seconds} s", 3, 60, clock
    )
    with caplog.at_level(logging.ERROR, "test.throttled"):
        for number in range(8):
            throttled.log("line %d", number)
        clock.now = 30.0
        throttled.tell_due()
        assert caplog.messages == ["line 0", "line 1", "line 2"]  # the period has not ended
        clock.now = 61.0
        throttled.tell_due()
        throttled.log("line %d", 8)  # a new period: told again
        throttled.close()
    assert caplog.messages == ["line 0", "line 1", "line 2", "5 more in 61 s", "line 8"]


def test_close_tells_what_is_held_and_nothing_when_nothing_is(caplog):
    clock = Clock()
    throttled = Throttled(logging.getLogger("test.throttled"), logging.ERROR, "{count} held", 1, 60, clock)
    with caplog.at_level(logging.ERROR, "test.throttled"):
        throttled.close()
        throttled.log("a")
        throttled.log("b")
        throttled.close()
        throttled.close()
    assert caplog.messages == ["a", "1 held"]


def test_a_text_log_line_stays_one_line_whatever_its_message_holds():
    """A log agent tailing stderr reads one event per line: a server's page must not split it."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(TextFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.one_line")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("server said: %s", "<html>\r\n<body>Bad</body>\n</html>")
    finally:
        logger.removeHandler(handler)
    assert written.getvalue() == "WARNING server said: <html>\\r\\n<body>Bad</body>\\n</html>\n"


def text_log_of(logger_name: str, level: int, message: str, exc: Exception) -> str:
    """What the text format writes for one record logged with an exception attached."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(TextFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise exc
        except type(exc):
            logger.log(level, message, exc_info=True)
    finally:
        logger.removeHandler(handler)
    return written.getvalue()


def test_a_librarys_warning_with_a_traceback_is_one_line():
    """urllib3 warns with the whole traceback when an answer's headers are cut (a proxy dropping
    the connection): eight lines in the relay's log for an upload that went on."""
    fault = ValueError("[MissingHeaderBodySeparatorDefect()], unparsed data: 'x-amz'\nmore")
    written = text_log_of("urllib3.connectionpool", logging.WARNING, "Failed to parse headers", fault)
    assert written == (
        "WARNING Failed to parse headers (ValueError: [MissingHeaderBodySeparatorDefect()], "
        "unparsed data: 'x-amz')\n"
    )
    said = text_log_of("urllib3", logging.WARNING, "Failed to parse headers: bad", ValueError("bad"))
    assert said == "WARNING Failed to parse headers: bad\n"  # what the message says already: once
    silent = text_log_of("urllib3", logging.WARNING, "read failed", TimeoutError())
    assert silent == "WARNING read failed (TimeoutError)\n"  # an exception that says nothing: its type


def test_an_error_keeps_its_traceback():
    """What no one foresaw (a fault that stops the relay's delivery) is worth its traceback."""
    written = text_log_of("proofpoint_shipper", logging.ERROR, "delivery stopped", RuntimeError("bug"))
    assert written.startswith("ERROR delivery stopped\nTraceback (most recent call last):")
    assert written.endswith("RuntimeError: bug\n")


def test_a_tap_refusal_with_a_page_of_text_is_told_in_one_line():
    page = "<html>\n  <body>\n    <h1>400 Bad Request</h1>\n  </body>\n</html>\n"
    with pytest.raises(FetchError) as refused:
        TapClient._check(httpx.Response(400, text=page))  # a real response, as a proxy answers
    assert str(refused.value) == (
        "the TAP API refused the request (400): <html> <body> <h1>400 Bad Request</h1> </body> </html>"
    )
