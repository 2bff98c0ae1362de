"""`ppship ship`: deliver records for one table from files or stdin through any output.

For backfills and re-sends: NDJSON records for the JSON tables, one text line per record for the
gateway text tables. Flushes every --flush-records and at the end; counts (of flushed records) go to stderr.
"""

import argparse
import sys

from proofpoint_shipper.errors import InputError
from proofpoint_shipper.rawio import STDIN
from proofpoint_shipper.service import positive_int
from proofpoint_shipper.sinks.options import add_output_arguments, open_sink
from proofpoint_shipper.sinks.records import json_record, stream_for


def register(subcommands: argparse._SubParsersAction) -> None:
    ship = subcommands.add_parser(
        "ship",
        help="deliver records for one table to stdout, a forward input or S3",
        description="Read records for one table (NDJSON, or text lines for the gateway text tables) "
        "from FILEs or stdin and deliver them through the chosen output.",
    )
    ship.add_argument("files", nargs="*", metavar="FILE", help="input files; none or '-' reads stdin")
    ship.add_argument("--table", required=True, help="the data-lake table the records belong to")
    ship.add_argument(
        "--flush-records",
        type=positive_int,
        default=10_000,
        help="flush after this many records (default: %(default)s)",
    )
    add_output_arguments(ship)
    ship.set_defaults(run=run)


WRITE_GROUP = 1000  # records handed to the sink at a time: it keeps them encoded, not as dicts


def run(args: argparse.Namespace) -> int:
    stream = stream_for(args.table)  # an unknown table fails before anything is opened
    sources = _open_inputs(args.files)
    sink = open_sink(args)
    shipped = bad = replaced = unflushed = 0
    group: list[dict] = []
    for source in sources:
        for number, line in enumerate(source, 1):
            record, note = _record(stream.format, line)
            if record is None:
                bad += 1
                print(f"ppship ship: {source.name}:{number}: {note}; skipped", file=sys.stderr)
                continue
            replaced += note is not None
            group.append(record)
            if len(group) >= WRITE_GROUP:
                unflushed += _hand_over(sink, args.table, group)
            if unflushed >= args.flush_records:
                sink.flush()
                shipped, unflushed = shipped + unflushed, 0
    unflushed += _hand_over(sink, args.table, group)
    sink.close()
    shipped += unflushed
    summary = f"ppship ship: {shipped} records delivered to {args.table}, {bad} not readable"
    if replaced:
        summary += f", {replaced} text lines with invalid UTF-8 (written with U+FFFD)"
    print(summary, file=sys.stderr)
    return 0


def _record(table_format: str, line: bytes) -> tuple[dict | None, str | None]:
    """The line's record and a note: no record, and why not; or a text line that is not UTF-8."""
    text = line.rstrip(b"\r\n")
    if table_format == "text":
        try:
            return {"text": text.decode("utf-8")}, None
        except UnicodeDecodeError:
            return {"text": text.decode("utf-8", "replace")}, "not UTF-8"
    return json_record(text)


def _hand_over(sink, table: str, group: list[dict]) -> int:
    count = len(group)
    if group:
        sink.write(table, group)
        group.clear()
    return count


def _open_inputs(files: list[str]):
    if not files or files == ["-"]:
        return [_stdin()]
    try:
        return [_stdin() if path == "-" else open(path, "rb") for path in files]
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def _stdin():
    """stdin's bytes; started with stdin closed, an empty stream (it was put on /dev/null)."""
    return sys.stdin.buffer if sys.stdin is not None else open(STDIN, "rb", closefd=False)
