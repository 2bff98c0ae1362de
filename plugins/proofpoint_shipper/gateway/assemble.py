"""`ppship gateway assemble`: gateway lines (raw, or NDJSON records from `gateway parse`) in, one
NDJSON record per message out, for the extra table `proofpoint_gateway_messages`.

Entry point: `register(actions)`. Counts go to stderr at exit. SIGTERM stops reading (after
what a pipe holds then); the messages still open are written with `complete: false` and the
exit code is 0. While input is idle, the assembler's clock runs on with the wall clock, so idle
messages still come out.
"""

import argparse
import sys
import time
from typing import TYPE_CHECKING

import orjson

from proofpoint_shipper.gateway.assembler import Assembler, AssemblySettings
from proofpoint_shipper.gateway.options import host_name, open_inputs, read_each, reference_time
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.lines import LineReader, stopped_early
from proofpoint_shipper.logs import setup_logging
from proofpoint_shipper.rawio import stdout_fd, write_stdout
from proofpoint_shipper.service import StopOnSignals, positive_int, positive_seconds
from proofpoint_shipper.sinks.records import json_record

if TYPE_CHECKING:
    from proofpoint_shipper.gateway.parser import GatewayParser

MAX_LINE_BYTES = 1024 * 1024  # an NDJSON record carries its raw line and more


def register(actions: argparse._SubParsersAction) -> None:
    assemble = actions.add_parser(
        "assemble",
        help="join filter and sendmail lines into one record per message",
        description="Read gateway lines (raw, or the NDJSON records of `ppship gateway parse`; "
        "mixed is fine) from FILEs or stdin, in order per host, and write one NDJSON record per "
        "message: connection, envelope, filter verdicts, message header, attachments and the "
        "sendmail deliveries joined by queue id. A message comes out when its session ended and its "
        "deliveries are final, or with complete=false after --idle-timeout or when --max-open "
        "sessions are open. Counts go to stderr at exit.",
    )
    assemble.add_argument(
        "files", nargs="*", metavar="FILE", help="input files, plain or gzip; none or '-' reads stdin"
    )
    assemble.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=600.0,
        help="seconds (of log time) a message may go without a line before it is written with "
        "complete=false (default: %(default)s)",
    )
    assemble.add_argument(
        "--max-open",
        type=positive_int,
        default=AssemblySettings.max_open,
        help="sessions held open at once; beyond it the least recently active is written with "
        "complete=false (default: %(default)s)",
    )
    assemble.add_argument(
        "--timezone", default="local", help="zone of BSD timestamps in raw lines (default: local)"
    )
    assemble.add_argument(
        "--reference-time",
        type=reference_time,
        metavar="ISO8601",
        help="time BSD years in raw lines are inferred against (default: now)",
    )
    assemble.add_argument("--host", type=host_name, help="host name for raw lines that carry none")
    assemble.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from proofpoint_shipper.gateway.parser import GatewayParser  # builds the grammars: only when run

    setup_logging(text_format="ppship gateway assemble: %(message)s")
    stdout_fd()  # started with stdout closed: say so now, not at the first message
    sources = open_inputs(args.files)
    job = AssembleJob(
        Assembler(AssemblySettings(idle_timeout=args.idle_timeout, max_open=args.max_open)),
        GatewayParser(zone=resolve_zone(args.timezone), reference=args.reference_time, host=args.host),
    )
    with StopOnSignals(job):
        unreadable = read_each(sources, job.consume)
        job.write(job.assembler.finish())
    job.report()
    unreadable.raise_error()  # an input cut short: after the messages and counts of what was read
    return 0


class AssembleJob:
    def __init__(self, assembler: Assembler, parser: "GatewayParser"):
        self.assembler = assembler
        self.parser = parser
        self.stopping = False
        self.output_closed = False
        self.bad_records = 0
        self.cut_lines = 0  # over MAX_LINE_BYTES: read with their first bytes only
        self.unfinished_bytes = 0  # of lines left out at a stop
        self._last_input = time.monotonic()

    def keep_going(self) -> bool:
        """Asked while input is idle: run the clock on, so idle messages still come out."""
        idle = time.monotonic() - self._last_input
        if self.assembler.clock:
            self.write(self.assembler.expire(self.assembler.clock + idle))
        return not (self.stopping or self.output_closed)

    def consume(self, name: str, fd: int) -> None:
        reader = LineReader(fd, MAX_LINE_BYTES, self.keep_going, name=name)
        for batch in reader.batches():
            self._last_input = time.monotonic()
            self.cut_lines += len(batch.dropped)
            out: list[dict] = []
            feed, parse = self.assembler.feed, self.parser.parse_with_body  # looked up once a batch
            for line in b"\n".join(batch.lines).decode("utf-8", "replace").split("\n"):
                feed(self.ndjson_record(line) if line[:1] == "{" else parse(line)[0], out)
            self.write(out)
            if self.output_closed:
                return  # stopped, the reader ends with what a pipe holds then
        self.unfinished_bytes += reader.unfinished_bytes

    def ndjson_record(self, line: str) -> dict:
        """The NDJSON record of `gateway parse` a line holds, else the line parsed as a raw line."""
        record, _ = json_record(line)
        if record is not None and "stream" in record:
            return record
        self.bad_records += 1  # not one of our records: parse it as a line, it may be one
        return self.parser.parse(line)

    def write(self, records: list[dict]) -> None:
        if not records or self.output_closed:
            return
        if not write_stdout(b"".join(orjson.dumps(record) + b"\n" for record in records)):
            self.output_closed = True  # the reader went away: stop

    def report(self) -> None:
        counts = self.assembler.counts
        parts = [f"{counts[name]} {name}" for name in sorted(counts)]
        if self.cut_lines:
            parts.append(
                f"{self.cut_lines} lines over {MAX_LINE_BYTES} bytes, read with their first bytes only"
            )
        if self.bad_records:
            parts.append(f"{self.bad_records} JSON lines that are not gateway records (parsed as lines)")
        ending = stopped_early(self.unfinished_bytes) if self.stopping or self.output_closed else ""
        print(
            f"ppship gateway assemble: {self.assembler.lines} lines{ending}: " + "; ".join(parts),
            file=sys.stderr,
        )
