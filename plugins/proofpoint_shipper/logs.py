"""How commands log: one line per event on stderr, as text for people or JSON for log pipelines.

`setup_logging(log_format, text_format)` is called once by each command. JSON lines carry `time`
(UTC, RFC 3339 with microseconds), `level`, `logger` and `message`, plus `error` when an
exception is attached, so a log pipeline can index them without a grammar.
"""

import logging
import sys
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


def setup_logging(log_format: str = "text", text_format: str = TEXT_FORMAT) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
