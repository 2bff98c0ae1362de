"""How commands log: one line per event on stderr, as text for people or JSON for log pipelines.

`setup_logging(log_format, text_format)` is called once by each command; `Throttled` keeps a flood
of one kind of line (bad input at thousands a second) from flooding the log. JSON lines carry `time`
(UTC, RFC 3339 with microseconds), `level`, `logger` and `message`, plus `error` when an
exception is attached, so a log pipeline can index them without a grammar.
"""

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["error"] = f"{type(exc).__name__}: {exc}"
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """One line per event: a line break inside a message (a server's error page, a client's bytes)
    is written as \\n, so a log agent tailing stderr never splits an event or reads a forged one.
    An error's traceback still follows on lines of its own; a warning's exception (urllib3 warns
    with the whole traceback of headers a proxy cut short) is told in the line, as its type and
    first line."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_info[1] is not None and record.levelno < logging.ERROR:
            told, exc = record.getMessage(), record.exc_info[1]
            said = str(exc).strip()
            if not said or said not in told:  # where the message says it already (urllib3's): once
                told += f" ({one_line(exc)})"
            fields = {**record.__dict__, "msg": told, "args": None, "exc_info": None, "exc_text": None}
            record = logging.makeLogRecord(fields)
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).replace("\r", "\\r").replace("\n", "\\n")


def one_line(exc: BaseException) -> str:
    """An exception as its type and the first line of what it says (if anything), at most 200
    characters."""
    text = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:200]


def setup_logging(log_format: str = "text", text_format: str = TEXT_FORMAT) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(text_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise


class Throttled:
    """Logs the first `burst` lines of one kind in each `period` seconds; the rest are counted,
    and `tell_due()` (called often) or `close()` says how many in one line, `summary`, formatted
    with {count} and {seconds}."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        summary: str,
        burst: int = 10,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger, self.level, self.summary = logger, level, summary
        self.burst, self.period, self.clock = burst, period, clock
        self._began = clock()
        self._shown = 0
        self._held = 0

    def log(self, message: str, *args) -> None:
        self.tell_due()
        if self._shown < self.burst:
            self._shown += 1
            self.logger.log(self.level, message, *args)
        else:
            self._held += 1

    def tell_due(self) -> None:
        """At the end of a period: the count of the lines held back, then a new period."""
        now = self.clock()
        if now - self._began >= self.period:
            self._tell(now - self._began)
            self._began, self._shown = now, 0

    def close(self) -> None:
        self._tell(self.clock() - self._began)

    def _tell(self, seconds: float) -> None:
        if self._held:
            self.logger.log(self.level, self.summary.format(count=self._held, seconds=round(seconds)))
            self._held = 0
