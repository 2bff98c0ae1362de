"""Turns one gateway log line into a record, never raising and never dropping the line.

`GatewayParser.parse(line)` tries the fast path and falls back to the Lark grammars; any part
that does not parse becomes an `error` note while the rest of the record is kept.
"""

from collections.abc import Callable
from datetime import datetime, tzinfo

from proofpoint_shipper.errors import ParseError
from proofpoint_shipper.gateway import fastpath, syntax
from proofpoint_shipper.gateway.record import (
    FILTER,
    SENDMAIL,
    TABLES,
    GatewayRecord,
    classify,
    collect_fields,
)
from proofpoint_shipper.gateway.syntax import FilterBody, Header, SendmailBody
from proofpoint_shipper.gateway.timestamps import (
    BsdClock,
    format_time,
    local_zone,
    split_onbox,
    split_rfc3339,
)

_BODY_SEPARATOR = {FILTER: " ", SENDMAIL: ", "}


class GatewayParser:
    """Parses gateway lines; one instance per input, as it caches BSD timestamp conversions.

    zone: the zone of BSD timestamps (default: the machine's). reference: the time BSD years
    are inferred against and header-less lines are stamped with (default: now). host: written
    for lines that name none. fast=False parses with the Lark grammars alone.
    """

    def __init__(self, *, zone: tzinfo | None = None, reference: datetime | None = None,
                 host: str | None = None, fast: bool = True):
        self.zone = zone or local_zone()
        self.now: Callable[[], datetime] = (
            (lambda: reference) if reference is not None else (lambda: datetime.now(self.zone))
        )
        self.bsd = BsdClock(self.zone, self.now)
        self.host = host
        self.fast = fast
        self._bodies = {
            FILTER: (fastpath.fast_filter_body, syntax.lark_filter_body),
            SENDMAIL: (fastpath.fast_sendmail_body, syntax.lark_sendmail_body),
        }

    def parse(self, line: str, *, problem: str | None = None) -> GatewayRecord:
        """The record for one line (without its line terminator); `problem` notes an input fault."""
        errors = [problem] if problem else []
        if "\x00" in line:
            errors.append("NUL byte in line")
        try:
            header = self._header(line)
        except ParseError as exc:
            errors.append(str(exc))
            return self._unreadable(line, errors)
        stream = classify(header)
        record = GatewayRecord(stream=stream, table=TABLES[stream])
        record.body = header.body
        self._add_header(record, header, errors)
        self._add_body(record, stream, header.body, errors)
        record["raw"] = line
        if errors:
            record["error"] = "; ".join(errors)
        return record

    def _header(self, line: str) -> Header:
        header = fastpath.fast_header(line) if self.fast else None
        return header if header is not None else syntax.lark_header(line)

    def _unreadable(self, line: str, errors: list[str]) -> GatewayRecord:
        record = GatewayRecord(stream="other", table=None)
        record.body = None
        record["time"], record["time_source"] = format_time(self.now()), "received"
        record.update(fields={}, raw=line, error="; ".join(errors))
        return record

    def _add_header(self, record: GatewayRecord, header: Header, errors: list[str]) -> None:
        record["time"] = self._time(header, errors)
        if header.time_kind is None or errors and errors[-1].startswith("timestamp"):
            record["time_source"] = "received"
        host = header.host or self.host
        for key, value in (("host", host), ("program", header.program), ("pid", header.pid),
                           ("msgid", header.msgid), ("structured_data", header.structured_data)):
            if value is not None:
                record[key] = value
        if header.pri is not None:
            record["pri"] = int(header.pri[1:-1])

    def _time(self, header: Header, errors: list[str]) -> str:
        kind, text = header.time_kind, header.time_text
        try:
            if kind == "rfc3339":
                return split_rfc3339(text)
            if kind == "bsd":
                return self.bsd.normalize(text)
            if kind == "onbox":
                return split_onbox(text)
        except ParseError as exc:
            errors.append(str(exc))
        return format_time(self.now())

    def _add_body(self, record: GatewayRecord, stream: str, body: str | None,
                  errors: list[str]) -> None:
        if not body:
            errors.append("no message after the header" if record.body is not None or "program" in record
                          else "empty line")
            record["fields"] = {}
            return
        if stream not in self._bodies:
            record["fields"], record["message"] = {}, body
            return
        parsed = self._parse_body(stream, body, errors)
        if parsed is None:
            record["fields"] = {}
        elif isinstance(parsed, FilterBody):
            record["severity"], record["fields"] = parsed.severity, collect_fields(parsed.pairs)
            if parsed.tail is not None:
                record["message"] = parsed.tail
        else:
            self._add_sendmail(record, parsed)

    @staticmethod
    def _add_sendmail(record: GatewayRecord, parsed: SendmailBody) -> None:
        if parsed.qid is not None:
            record["qid"] = parsed.qid
        record["fields"] = collect_fields(parsed.pairs)
        if parsed.text is not None:
            record["message"] = parsed.text

    def _parse_body(self, stream: str, body: str, errors: list[str]):
        fast, lark = self._bodies[stream]
        parsed = fast(body) if self.fast else None
        if parsed is not None:
            return parsed
        try:
            return lark(body)
        except ParseError as exc:
            errors.append(str(exc))
            return self._salvage(stream, body, exc.position)

    def _salvage(self, stream: str, body: str, position: int | None):
        """What parses before the pair the grammar stopped in: kept rather than thrown away."""
        cut = body.rfind(_BODY_SEPARATOR[stream], 0, position if position is not None else len(body))
        if cut <= 0:
            return None
        fast, lark = self._bodies[stream]
        try:
            return (fast(body[:cut]) if self.fast else None) or lark(body[:cut])
        except ParseError:
            return None


_DEFAULT: GatewayParser | None = None


def parse_line(line: str, **settings) -> GatewayRecord:
    """Parse one line; with no settings a shared parser in the machine's zone is used."""
    global _DEFAULT
    if settings:
        return GatewayParser(**settings).parse(line)
    if _DEFAULT is None:
        _DEFAULT = GatewayParser()
    return _DEFAULT.parse(line)
