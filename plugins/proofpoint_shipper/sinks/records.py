"""What every sink needs to know about a record: its stream, its time, its line in a table.

`stream_for(table)` refuses unknown tables; `record_time` finds an event's own time (`utc_time`
reads one); `json_record` reads an NDJSON line into a record a sink can write; `table_line` is
the bytes that land in S3 for one record (NDJSON or the text line); `text_line_problem` says
why a line is not in the gateway text tables' form, `line_of_another_table` why it is in the
wrong one, `of_another_table` why a record whose `table` names another is.
"""

import re
from datetime import UTC, datetime

import orjson

from proofpoint_shipper import json_input
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.streams import BY_NAME, BY_TABLE, Stream

# Where each source keeps the event's own time, in the order they are tried.
TIME_KEYS = ("time", "eventTime", "clickTime", "click_time", "messageTime", "ts")
# The times a record can be filed and sent under: Fluent's EventTime holds unsigned 32-bit
# seconds. A time outside (year 1, year 9999: a bad clock or a forged line) is no event time.
EARLIEST = datetime.fromtimestamp(0, UTC)
LATEST = datetime.fromtimestamp(2**32 - 1, UTC)
# A gateway text-table line opens with its time in this form, then a space.
GATEWAY_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"
_TIME_AT_START = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:?\d\d) ")


def stream_for(table: str) -> Stream:
    try:
        return BY_TABLE[table]
    except KeyError:
        known = ", ".join(sorted(BY_TABLE))
        raise ConfigError(f"unknown table {table!r}; known tables: {known}") from None


def record_time(record: dict, default: datetime | None = None) -> datetime:
    """The event's own time (aware, UTC) when it is one we can carry, else `default`, else now."""
    for key in TIME_KEYS:
        moment = utc_time(record.get(key))
        if moment is not None and EARLIEST <= moment <= LATEST:
            return moment
    return default or datetime.now(UTC)


def utc_time(value: object) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone) moved to UTC; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved to UTC
        return None


def json_record(text: bytes | str) -> tuple[dict | None, str | None]:
    """One NDJSON line as a record that can be written again, else None and why not. A record
    comes with a remark too when a lone UTF-16 surrogate in it was read as U+FFFD (json_input).

    orjson reads 1024 levels deep but writes only 254: such a record is refused here, where its
    line is known, rather than in a sink, where it would stop the run.
    """
    try:
        record, replaced = json_input.loads(text)
    except ValueError:
        return None, "not a JSON object"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    try:
        orjson.dumps(record)
    except orjson.JSONEncodeError:
        return None, "a JSON object nested too deep to be written"
    return record, json_input.REPLACED if replaced else None


def of_another_table(table: str, stream: Stream) -> str:
    """Why a record whose `table` names `table` is not shipped to `stream`'s."""
    return f"a record of {table} (its `table`), not of {stream.table}"


def table_line(stream: Stream, record: dict) -> bytes:
    """One line of a table's object: the JSON record, or for a text table the line itself."""
    if stream.format == "text":
        text = record.get("text", record.get("raw"))
        if not isinstance(text, str):
            raise ValueError("a text-table record needs a 'text' (or 'raw') string")
        return text.encode() + b"\n"
    return orjson.dumps(record) + b"\n"


# After the time: host, program, maybe [pid], a colon; the on-box form names no program.
_TAG_AFTER_TIME = re.compile(r"\S+ \S+ ([^\s\[\]:]+)(?:\[[^\]\s]*\])?: ")


def line_of_another_table(line: str, stream: Stream) -> str | None:
    """Why a text line does not belong in `stream`'s table (its program is another stream's, a
    sendmail line in the filter table, say: an agent routing lines wrong), or None."""
    tag = _TAG_AFTER_TIME.match(line)
    if tag is None:
        return None  # no program named: nothing to hold the line to
    from proofpoint_shipper.gateway.record import stream_of_program  # the grammars' program names

    owner = stream_of_program(tag[1])
    if owner == stream.name:
        return None
    belongs = f"belongs in {BY_NAME[owner].table}" if owner in BY_NAME else "belongs in no gateway table"
    return f"a line of {tag[1]}, which {belongs}, not in {stream.table}"


def text_line_problem(line: str) -> str | None:
    """Why `line` is not in the gateway text tables' form (time as GATEWAY_TIME, a space, the
    rest), or None when it is."""
    if line.startswith("{"):
        return "JSON where text is expected"
    found = _TIME_AT_START.match(line)
    if found is None:
        return f"{line[:32]!r} does not start with a {GATEWAY_TIME} time"
    try:
        datetime.strptime(found[1], GATEWAY_TIME)
    except ValueError:
        return f"{found[1]!r} is not a real time"
    return None
