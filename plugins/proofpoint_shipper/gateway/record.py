"""The record a gateway line becomes, and its text form for the gateway text tables.

`classify` picks the stream from the program, `collect_fields` keeps repeated keys,
`render_text` rewrites only the header: `<time> <host> <program>[<pid>]: <body as it was>`.
"""

import functools
import re
from collections.abc import Sequence

from proofpoint_shipper.gateway.grammar import common_terminal, terminal
from proofpoint_shipper.streams import BY_NAME, OTHER

FILTER = "gateway_filter"
SENDMAIL = "gateway_sendmail"
TABLES: dict[str, str | None] = {
    FILTER: BY_NAME[FILTER].table,
    SENDMAIL: BY_NAME[SENDMAIL].table,
    OTHER: None,
}
# The host of a text line whose source line named none: syslog's nil value (RFC 5424), which
# `--host NAME` replaces.
NO_HOST = "-"


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Filter program, sendmail program, and a body opening with a severity: built on first use."""
    return (
        re.compile(common_terminal("FILTER_PROGRAM") + r"\Z"),
        re.compile(common_terminal("SENDMAIL_PROGRAM") + r"\Z"),
        re.compile(terminal("filter_instance", "SEVERITY") + r"(?: |\Z)"),
    )


# A line whose header the grammar does not read (a space before it, two after <PRI>, a space for
# the T of RFC 3339) but which holds a gateway program's tag goes to `other`: said, not silent.
UNREAD_GATEWAY_HEADER = (
    "a filter_instance or sendmail tag after text the syslog header grammar does not read; "
    "the line is not in the gateway tables"
)


@functools.cache
def _gateway_tag() -> re.Pattern[str]:
    programs = f"{common_terminal('FILTER_PROGRAM')}|{common_terminal('SENDMAIL_PROGRAM')}"
    return re.compile(f"(?:^|\\s)(?:{programs})(?:\\[{common_terminal('PID')}\\])?: ")


def gateway_tag_inside(body: str | None) -> bool:
    """Whether `body` holds a filter or sendmail program's tag (`sendmail[123]: `)."""
    return body is not None and _gateway_tag().search(body) is not None


def stream_of_program(program: str) -> str:
    filter_program, sendmail_program, _ = _patterns()
    if filter_program.match(program):
        return FILTER
    if sendmail_program.match(program):
        return SENDMAIL
    return OTHER


def classify(program: str | None, body: str | None) -> str:
    """Which stream a line belongs to; the on-box file form has no program but a filter body."""
    if program is not None:
        return stream_of_program(program)
    return FILTER if body is not None and _patterns()[2].match(body) else OTHER


def collect_fields(pairs: list[tuple[str, str]] | dict[str, str]) -> dict[str, str | list[str]]:
    """key → value as written; a key that repeats → the list of its values in order."""
    if isinstance(pairs, dict):
        return pairs  # read as a dict: no key repeats
    fields: dict[str, str | list[str]] = dict(pairs)
    if len(fields) == len(pairs):
        return fields
    fields = {}
    for key, value in pairs:
        earlier = fields.get(key)
        if earlier is None:
            fields[key] = value
        elif isinstance(earlier, list):
            earlier.append(value)
        else:
            fields[key] = [earlier, value]
    return fields


# An input's bytes that were not UTF-8 are read as U+FFFD, and the line's record says so.
INVALID_UTF8 = "invalid UTF-8 (replaced with U+FFFD)"


def agent_line(record: dict, keys: Sequence[str]) -> str | None:
    """The gateway line an agent's record carries under the first of `keys` that holds one: a
    string, or bytes (msgpack bin) read as UTF-8; without its line terminator."""
    for key in keys:
        value = record.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            return value.rstrip("\r\n")
    return None


# A syslog input (Fluent Bit's syslog parsers, Fluentd's in_syslog) takes a line apart: its
# program goes under `ident`, its time and host under keys of their own, and `message` keeps only
# the text after the header. Parsed alone, that text names no program: a sendmail line goes to
# `other`, a filter line to its table with the time it was received and no host.
TAKEN_APART = (
    "the agent's syslog input took the line apart (its program is under ident): send lines whole, "
    "as Fluent Bit's tcp input with format none or Fluentd's in_tcp with <parse> @type none do"
)


def mark_taken_apart(item: dict, parsed: dict) -> bool:
    """Whether the agent's record `item` is a syslog input's: its `ident` names a gateway program
    that its line, `parsed`, does not. The parsed record then says so in `error`."""
    ident = item.get("ident")
    if not isinstance(ident, str) or parsed.get("program") == ident or stream_of_program(ident) == OTHER:
        return False
    parsed.setdefault("error", TAKEN_APART)
    return True


def decoding_problem(line: str) -> str | None:
    """INVALID_UTF8 for a line read with U+FFFD in place of bytes that were not UTF-8."""
    return INVALID_UTF8 if "\ufffd" in line else None


def render_text(record: dict, body: str | None) -> str:
    """The line for a text table: normalised header, then `body` (the text after the header).

    A line whose header could not be read at all is passed on as it came. A line that names its
    program but no host (`sendmail[21652]: ...`, as a program hands it to syslog) gets NO_HOST in
    the host's place: without it, readers of the text tables take the program for the host.
    """
    if body is None and "program" not in record and "host" not in record:
        return record["raw"]
    parts = [record["time"]]
    if "host" in record:
        parts.append(record["host"])
    elif "program" in record:
        parts.append(NO_HOST)
    if "program" in record:
        pid = record.get("pid")
        parts.append(f"{record['program']}[{pid}]:" if pid else f"{record['program']}:")
    head = " ".join(parts)
    return head if body is None else f"{head} {body}"
