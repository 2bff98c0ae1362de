"""Turns one gateway log line into a record, never raising and never dropping the line.

`GatewayParser.parse(line)` gives the record; `parse_with_body(line)` also gives the text after
the header, for `render_text`; `parse_with_text(line)` adds that rendered line as `text`. Any
part that does not parse becomes an `error` note while the rest of the record is kept.
"""

from collections.abc import Callable
from datetime import datetime, tzinfo

from proofpoint_shipper.errors import ParseError
from proofpoint_shipper.gateway import fastpath, syntax
from proofpoint_shipper.gateway.record import (
    FILTER,
    SENDMAIL,
    TABLES,
    UNREAD_GATEWAY_HEADER,
    classify,
    collect_fields,
    gateway_tag_inside,
    render_text,
    stream_of_program,
)
from proofpoint_shipper.gateway.syntax import FilterBody, Header, SendmailBody
from proofpoint_shipper.gateway.timestamps import (
    BsdClock,
    format_time,
    local_zone,
    split_onbox,
    split_rfc3339,
)
from proofpoint_shipper.streams import OTHER

_BODY_SEPARATOR = {FILTER: " ", SENDMAIL: ", "}
_FAST_BODY_PARSERS = {
    FILTER: (fastpath.token_filter_fields, fastpath.fast_filter_body),
    SENDMAIL: (fastpath.token_sendmail_fields, fastpath.fast_sendmail_body),
}
_BODY_PARSERS = {
    FILTER: (fastpath.fast_filter_body, syntax.lark_filter_body),
    SENDMAIL: (fastpath.fast_sendmail_body, syntax.lark_sendmail_body),
}


class GatewayParser:
    """Parses gateway lines; one instance per input, as it caches BSD timestamp conversions.

    zone: the zone of BSD timestamps (default: the machine's). reference: the time BSD years
    are inferred against and header-less lines are stamped with (default: now). host: written
    for lines that name none. fast=False parses with the Lark grammars alone.
    """

    def __init__(
        self,
        *,
        zone: tzinfo | None = None,
        reference: datetime | None = None,
        host: str | None = None,
        fast: bool = True,
    ):
        self.zone = zone or local_zone()
        self.now: Callable[[], datetime] = (
            (lambda: reference) if reference is not None else (lambda: datetime.now(self.zone))
        )
        self.bsd = BsdClock(self.zone, self.now, live=reference is None)
        self.host = host
        self.fast = fast
        self._program_streams: dict[str, str] = {}

    def parse(self, line: str, *, problem: str | None = None) -> dict:
        """The record for one line (without its line terminator); `problem` notes an input fault."""
        return self.parse_with_body(line, problem=problem)[0]

    def parse_with_body(self, line: str, *, problem: str | None = None) -> tuple[dict, str | None]:
        if self.fast and problem is None:
            common = self._common_line(line)
            if common is not None:
                return common
        return self._any_line(line, problem)

    def parse_with_text(self, line: str, *, problem: str | None = None) -> dict:
        """The record plus `text`, the line as the gateway text tables hold it (not for `other`).

        For agents that write the text tables from the record (an S3 output's `log_key`).
        """
        record, body = self.parse_with_body(line, problem=problem)
        if record["stream"] != OTHER:
            record["text"] = render_text(record, body)
        return record

    # -- the common shape, in one pass ---------------------------------------------------------

    def _common_line(self, line: str) -> tuple[dict, str] | None:
        """[<PRI>] RFC 3339 or BSD time, host, prog[pid]:, a body the fast path reads.

        Gives exactly the record `_any_line` would, in far fewer steps; None for anything else.
        """
        match = fastpath.COMMON_HEADER.match(line)
        if match is None or "\x00" in line:
            return None
        pri, rfc3339, bsd, host, program, pid, body = match.groups()
        stream = self._program_streams.get(program) or self._remember_program(program)
        if stream == OTHER:
            return None
        try:
            time = split_rfc3339(rfc3339) if rfc3339 else self.bsd.normalize(bsd)
        except ParseError:
            return None
        body_parts = _fast_body_parts(stream, body)
        if body_parts is None:
            return None
        record = {"stream": stream, "table": TABLES[stream], "time": time, "host": host, "program": program}
        if pid is not None:
            record["pid"] = pid
        if pri is not None:
            record["pri"] = int(pri[1:-1])
        record.update(body_parts)
        record["raw"] = line
        return record, body

    def _remember_program(self, program: str) -> str:
        if len(self._program_streams) > 1024:
            self._program_streams.clear()  # bounded: hosts run a handful of programs
        stream = self._program_streams[program] = stream_of_program(program)
        return stream

    # -- any line, step by step ----------------------------------------------------------------

    def _any_line(self, line: str, problem: str | None) -> tuple[dict, str | None]:
        errors = [problem] if problem else []
        if "\x00" in line:
            errors.append("NUL byte in line")
        try:
            header = self._header(line)
        except ParseError as exc:
            errors.append(_located(exc, 0))
            return self._unreadable(line, errors), None
        stream = classify(header.program, header.body)
        if stream == OTHER and header.program is None and gateway_tag_inside(header.body):
            errors.append(UNREAD_GATEWAY_HEADER)  # else it would leave the gateway tables unseen
        record = {"stream": stream, "table": TABLES[stream]}
        self._add_header(record, header, errors)
        self._add_body(record, stream, header, len(line), errors)
        record["raw"] = line
        if errors:
            record["error"] = "; ".join(errors)
        return record, header.body

    def _header(self, line: str) -> Header:
        header = fastpath.fast_header(line) if self.fast else None
        return header if header is not None else syntax.lark_header(line)

    def _unreadable(self, line: str, errors: list[str]) -> dict:
        return {
            "stream": OTHER,
            "table": None,
            "time": format_time(self.now()),
            "time_source": "received",
            "fields": {},
            "raw": line,
            "error": "; ".join(errors),
        }

    def _add_header(self, record: dict, header: Header, errors: list[str]) -> None:
        record["time"], from_line = self._time(header, errors)
        if not from_line:
            record["time_source"] = "received"
        host = header.host or self.host
        for key, value in (
            ("host", host),
            ("program", header.program),
            ("pid", header.pid),
            ("msgid", header.msgid),
            ("structured_data", header.structured_data),
        ):
            if value is not None:
                record[key] = value
        if header.pri is not None:
            record["pri"] = int(header.pri[1:-1])

    def _time(self, header: Header, errors: list[str]) -> tuple[str, bool]:
        """The normalised time and whether it came from the line (else: the reference time)."""
        kind, text = header.time_kind, header.time_text
        try:
            if kind == "rfc3339":
                return split_rfc3339(text), True
            if kind == "bsd":
                return self.bsd.normalize(text), True
            if kind == "onbox":
                return split_onbox(text), True
        except ParseError as exc:
            errors.append(str(exc))
        return format_time(self.now()), False

    def _add_body(
        self, record: dict, stream: str, header: Header, line_length: int, errors: list[str]
    ) -> None:
        body = header.body
        if not body:
            has_header = body is not None or any(part is not None for part in header[:-1])
            errors.append("no message after the header" if has_header else "empty line")
            record["fields"] = {}
        elif stream == OTHER:
            record["fields"], record["message"] = {}, body
        else:
            parsed = self._parse_body(stream, body, line_length - len(body), errors)
            if parsed is None:
                record["fields"] = {}
            else:
                record.update(_body_parts(parsed))

    def _parse_body(self, stream: str, body: str, offset: int, errors: list[str]):
        """The parsed body; `offset` is where it starts in the line, for the error's column."""
        fast, lark = _BODY_PARSERS[stream]
        parsed = fast(body) if self.fast else None
        if parsed is not None:
            return parsed
        try:
            return lark(body)
        except ParseError as exc:
            errors.append(_located(exc, offset))
            return self._salvage(stream, body, exc.position)

    def _salvage(self, stream: str, body: str, position: int | None):
        """What parses before the pair the grammar stopped in: kept rather than thrown away."""
        end = position if position is not None else len(body)
        cut = body.rfind(_BODY_SEPARATOR[stream], 0, end)
        if cut <= 0:
            return None
        fast, lark = _BODY_PARSERS[stream]
        try:
            return (fast(body[:cut]) if self.fast else None) or lark(body[:cut])
        except ParseError:
            return None


def _located(exc: ParseError, offset: int) -> str:
    """The error's one line, with the column in the whole line where the grammar stopped."""
    if exc.position is None:
        return str(exc)
    return f"{exc} at column {offset + exc.position + 1}"


def _fast_body_parts(stream: str, body: str) -> dict | None:
    """What a body adds to its record, read by the token path, else by the fast expressions."""
    token_path, expressions = _FAST_BODY_PARSERS[stream]
    parsed = token_path(body) or expressions(body)
    return None if parsed is None else _body_parts(parsed)


def _body_parts(parsed: FilterBody | SendmailBody) -> dict:
    """What a parsed body adds to its record, in record order: severity or qid, fields, message."""
    parts = {}
    if isinstance(parsed, FilterBody):
        parts["severity"] = parsed.severity
        extra = parsed.tail
    else:
        if parsed.qid is not None:
            parts["qid"] = parsed.qid
        extra = parsed.text
    parts["fields"] = collect_fields(parsed.pairs)
    if extra is not None:
        parts["message"] = extra
    return parts


_DEFAULT: GatewayParser | None = None


def parse_line(line: str, **settings) -> dict:
    """Parse one line; with no settings a shared parser in the machine's zone is used."""
    global _DEFAULT
    if settings:
        return GatewayParser(**settings).parse(line)
    if _DEFAULT is None:
        _DEFAULT = GatewayParser()
    return _DEFAULT.parse(line)
