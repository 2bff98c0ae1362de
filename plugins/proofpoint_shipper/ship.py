"""`ppship ship`: deliver records for one table from files or stdin through any output.

For backfills and re-sends: NDJSON records for the JSON tables, one text line per record for the
gateway text tables (or the records `gateway parse --format json` wrote, landed as their lines).
Flushes every --flush-records, --flush-seconds after the oldest record not yet flushed was read (a
pipe that brings a line now and then), and at the end; counts (of flushed records) go to stderr.
SIGTERM or SIGINT stop the reading after the current batch and what a pipe holds then: what was
read is delivered, and the command exits 0.
"""

import argparse
import contextlib
import sys
import time
from collections import Counter

from proofpoint_shipper.errors import DeliveryError, InputError
from proofpoint_shipper.gateway.record_text import gateway_record, text_of_gateway_record
from proofpoint_shipper.lines import LineReader, UnreadableInputs, stopped_early
from proofpoint_shipper.rawio import STDIN
from proofpoint_shipper.service import StopOnSignals, positive_int, positive_seconds
from proofpoint_shipper.sinks.options import add_output_arguments, open_sink
from proofpoint_shipper.sinks.records import (
    json_record,
    line_of_another_table,
    of_another_table,
    stream_for,
    text_line_problem,
)
from proofpoint_shipper.streams import BY_TABLE, Stream


def register(subcommands: argparse._SubParsersAction) -> None:
    ship = subcommands.add_parser(
        "ship",
        help="deliver records for one table to stdout, a forward input or S3",
        description="Read records for one table (NDJSON; for the gateway text tables, text lines or "
        "the records of `ppship gateway parse --format json`) from FILEs or stdin and deliver them "
        "through the chosen output.",
    )
    ship.add_argument(
        "files", nargs="*", metavar="FILE", help="input files, plain or gzip; none or '-' reads stdin"
    )
    ship.add_argument("--table", required=True, help="the data-lake table the records belong to")
    ship.add_argument(
        "--flush-records",
        type=positive_int,
        default=10_000,
        help="flush after this many records (default: %(default)s)",
    )
    ship.add_argument(
        "--flush-seconds",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="flush at the latest this long after a record was read, also while the input is "
        "idle (default: %(default)s)",
    )
    add_output_arguments(ship)
    ship.set_defaults(run=run)


WRITE_GROUP = 1000  # records handed to the sink at a time: it keeps them encoded, not as dicts
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a longer line is skipped: memory stays bounded
NOTES_SHOWN = 10  # lines told by number, per kind of fault: a file of bad lines must not flood stderr

# Each kind of fault a line can have: whether the line is still shipped, and how the summary counts it.
SKIPPED, EMPTY, NOT_UTF8, NOT_TEXT_FORM = "skipped", "empty", "not UTF-8", "not in the text form"
OTHER_TABLE, REPLACED = "of another table", "a lone surrogate replaced"
ROUTED_ELSEWHERE, AS_TEXT = "routed to another table", "a gateway record as its text line"
_Faults = tuple[tuple[str, str | None], ...]
_TOO_LONG = ((SKIPPED, f"longer than {MAX_RECORD_BYTES} bytes"),)
_SUMMARY = {
    EMPTY: "{} empty lines skipped",
    NOT_UTF8: "{} text lines with invalid UTF-8 (written with U+FFFD)",
    NOT_TEXT_FORM: "{} text lines not in the text tables' form, shipped as they are "
    "(`ppship gateway parse --format text` writes gateway lines in that form)",
    OTHER_TABLE: "{} lines of another table's program, shipped as they are "
    "(`ppship gateway parse --streams filter` or `--streams sendmail` writes one table's lines)",
    REPLACED: "{} records with a lone UTF-16 surrogate escape, shipped with U+FFFD in its place",
    ROUTED_ELSEWHERE: "{} records of another table (their `table` says so) skipped: ship each "
    "table's records with its own --table",
    AS_TEXT: "{} JSON records of `ppship gateway parse` shipped as their text lines",
}


class _Notes:
    """Faults of the lines read, counted by kind; the first few of each kind told by line."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.untold = False  # a line of a kind that is told by line went untold

    def add(self, kind: str, where: str, detail: str | None) -> None:
        self.counts[kind] += 1
        if detail is None:
            return
        if self.counts[kind] > NOTES_SHOWN:
            self.untold = True
            return
        shipped = {SKIPPED: "skipped", ROUTED_ELSEWHERE: "skipped", REPLACED: "shipped so"}.get(
            kind, "shipped as it is"
        )
        print(f"ppship ship: {where}: {detail}; {shipped}", file=sys.stderr)

    def summary(self, shipment: "_Shipment", table: str, *, failed: bool = False) -> str:
        """What was shipped and what not; `failed`: the output failed past its retries."""
        ending = stopped_early(shipment.unfinished_bytes) if shipment.stopping else ""
        parts = [f"{shipment.shipped} records delivered to {table}{ending}"]
        if failed and shipment.undelivered:
            parts.append(f"{shipment.undelivered} read but not confirmed delivered")
        parts.append(f"{self.counts[SKIPPED]} not readable")
        parts += [text.format(self.counts[kind]) for kind, text in _SUMMARY.items() if self.counts[kind]]
        if self.untold:
            parts.append(f"only the first {NOTES_SHOWN} lines of each kind were told")
        return "ppship ship: " + ", ".join(parts)


class _Shipment:
    """Records on their way to the sink: handed over in groups, flushed by count or by age."""

    def __init__(self, sink, table: str, flush_records: int, flush_seconds: float):
        self.sink, self.table = sink, table
        self.flush_records, self.flush_seconds = flush_records, flush_seconds
        self.group: list[dict] = []
        self.unflushed = self.shipped = 0
        self.oldest: float | None = None  # when the oldest record not yet flushed was read
        self.stopping = False  # set by SIGTERM or SIGINT: read no more, deliver what was read
        self.unfinished_bytes = 0  # of lines left out at a stop

    def add(self, record: dict) -> None:
        self.group.append(record)
        if self.oldest is None:
            self.oldest = time.monotonic()
        if len(self.group) >= WRITE_GROUP:
            self._hand_over()
        if self.undelivered >= self.flush_records:  # the group not handed over yet counts too
            self.flush()

    def flush_if_due(self) -> bool:
        """Flush when the oldest record waits too long; asked after each read and while idle.
        Whether to read on: until the input ends or a stop was asked for."""
        if self.oldest is not None and time.monotonic() - self.oldest >= self.flush_seconds:
            self.flush()
        return not self.stopping

    def flush(self) -> None:
        self._hand_over()
        self.sink.flush()
        self.shipped, self.unflushed, self.oldest = self.shipped + self.unflushed, 0, None

    def close(self) -> None:
        self._hand_over()
        self.sink.close()
        self.shipped, self.unflushed = self.shipped + self.unflushed, 0

    @property
    def undelivered(self) -> int:
        """Records read whose delivery no flush confirmed."""
        return self.unflushed + len(self.group)

    def _hand_over(self) -> None:
        if self.group:
            self.sink.write(self.table, self.group)
            self.unflushed += len(self.group)
            self.group = []


def run(args: argparse.Namespace) -> int:
    stream = stream_for(args.table)  # an unknown table fails before anything is opened
    with contextlib.ExitStack() as inputs:
        sources = _open_inputs(args.files, inputs)
        shipment = _Shipment(open_sink(args), args.table, args.flush_records, args.flush_seconds)
        notes = _Notes()
        with StopOnSignals(shipment):  # without it, a stop would lose the records not yet flushed
            unreadable = UnreadableInputs()
            try:
                for source in sources:
                    if shipment.stopping:
                        break
                    with unreadable:
                        _ship_lines(source, stream, shipment, notes)
                shipment.close()
            except DeliveryError:
                # Past the output's retries: say how far it got, then the error (exit code 2).
                summary = notes.summary(shipment, args.table, failed=True)
                print(summary + _resend_hint(args), file=sys.stderr)
                raise
    print(notes.summary(shipment, args.table), file=sys.stderr)
    unreadable.raise_error()  # an input cut short: after the summary of what was read
    return 0


def _resend_hint(args: argparse.Namespace) -> str:
    hint = "; ship them again once the output is back"
    if args.output == "s3" and args.spool_dir is None:
        hint += " (--spool-dir keeps them on disk through an S3 outage)"
    return hint


def _ship_lines(source, stream: Stream, shipment: _Shipment, notes: _Notes) -> None:
    number, name = 0, _name(source)
    reader = LineReader(source.fileno(), MAX_RECORD_BYTES, shipment.flush_if_due, name=name)
    for batch in reader.batches():
        for index, line in enumerate(batch.lines):
            number += 1
            record, faults = (None, _TOO_LONG) if index in batch.dropped else _record(stream, line)
            for kind, detail in faults:
                notes.add(kind, f"{name}:{number}", detail)
            if record is not None:
                shipment.add(record)
        shipment.flush_if_due()  # stopped, the reader ends with what a pipe holds then
    shipment.unfinished_bytes += reader.unfinished_bytes


def _record(stream: Stream, line: bytes) -> tuple[dict | None, _Faults]:
    """The line's record (None: skipped) and its faults, each (kind, a word on it or None)."""
    text = line.rstrip(b"\r\n")
    if not text.strip():
        return None, ((EMPTY, None),)
    if stream.format == "ndjson":
        return _json_table_record(stream, text)
    return _text_table_record(stream, text)


def _json_table_record(stream: Stream, text: bytes) -> tuple[dict | None, _Faults]:
    record, remark = json_record(text)
    if record is None:
        return None, ((SKIPPED, remark),)
    if (elsewhere := _drop_route(record, stream)) is not None:
        return None, ((ROUTED_ELSEWHERE, elsewhere),)
    return record, ((REPLACED, remark),) if remark else ()


def _text_table_record(stream: Stream, text: bytes) -> tuple[dict | None, _Faults]:
    """A text line; a gateway record (`gateway parse --format json`) becomes its text line."""
    try:
        line, faults = text.decode("utf-8"), ()
    except UnicodeDecodeError:
        line, faults = text.decode("utf-8", "replace"), ((NOT_UTF8, None),)
    if line.startswith("{") and (record := gateway_record(line)) is not None:
        line, elsewhere = text_of_gateway_record(record, stream)
        if line is None:
            return None, (*faults, (ROUTED_ELSEWHERE, elsewhere))
        faults += ((AS_TEXT, None),)
    problem = text_line_problem(line)
    if problem is not None:
        faults += ((NOT_TEXT_FORM, problem),)
    elif (elsewhere := line_of_another_table(line, stream)) is not None:
        faults += ((OTHER_TABLE, elsewhere),)
    return {"text": line}, faults


def _drop_route(record: dict, stream: Stream) -> str | None:
    """Drop the record's `table` key when it names `stream`'s table; else why the record is
    another table's, or None. A record the collectors wrote to stdout names its table in `table`,
    which only routes it (the shipped agent configs drop it): dropped here too, a record shipped
    from such a capture lands as a direct run lands it."""
    table = record.get("table")
    if table.__class__ is not str or table not in BY_TABLE:
        return None  # not our routing key: the event's own data, kept
    if table != stream.table:
        return of_another_table(table, stream)
    del record["table"]
    return None


def _open_inputs(files: list[str], inputs: contextlib.ExitStack) -> list:
    """The inputs in order; the files among them are closed when `inputs` ends."""
    if not files or files == ["-"]:
        return [_stdin()]
    try:
        return [_stdin() if path == "-" else inputs.enter_context(open(path, "rb")) for path in files]
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def _name(source) -> str:
    """A file's path; stdin (opened by descriptor where it was closed) as Python names it."""
    return source.name if isinstance(source.name, str) else "<stdin>"


def _stdin():
    """stdin's bytes; started with stdin closed, an empty stream (it was put on /dev/null)."""
    return sys.stdin.buffer if sys.stdin is not None else open(STDIN, "rb", closefd=False)
