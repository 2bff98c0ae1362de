"""`ppship gateway parse`: gateway log lines in, one record per line out, for an agent's exec input.

Entry points: `register(subcommands)` adds the command, `run(args)` runs it. Counts go to
stderr at exit; EPIPE, SIGTERM and a vanished parent end the run cleanly with exit code 0.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack
import orjson

from proofpoint_shipper.checkpoint import FileCursorStore
from proofpoint_shipper.errors import InputError
from proofpoint_shipper.gateway import assemble, exec_filter
from proofpoint_shipper.gateway.counts import StreamCounts, outcome
from proofpoint_shipper.gateway.follow import DEFAULT_ROTATE_WAIT_SECONDS, FollowedFile, PositionSaver
from proofpoint_shipper.gateway.options import host_name, open_inputs, read_each, reference_time
from proofpoint_shipper.gateway.record import FILTER, INVALID_UTF8, SENDMAIL, render_text
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.lines import Batch, LineReader, stopped_early
from proofpoint_shipper.logs import setup_logging
from proofpoint_shipper.rawio import write_stdout
from proofpoint_shipper.service import StopOnSignals, filesystem_path, positive_int, seconds, writable_dir
from proofpoint_shipper.streams import OTHER

if TYPE_CHECKING:
    from proofpoint_shipper.gateway.parser import GatewayParser

log = logging.getLogger("proofpoint_shipper")
STREAM_CHOICES = {"filter": FILTER, "sendmail": SENDMAIL, "other": OTHER}
DEFAULT_MAX_LINE_BYTES = 64 * 1024


def _encode_json(record: dict, body: str | None) -> bytes:
    return orjson.dumps(record) + b"\n"


def _encode_text(record: dict, body: str | None) -> bytes:
    return render_text(record, body).encode() + b"\n"


def _msgpack_encoder() -> Callable[[dict, str | None], bytes]:
    pack = msgpack.Packer().pack
    return lambda record, body: pack(record)


ENCODERS: dict[str, Callable[[dict, str | None], bytes]] = {
    "json": _encode_json,
    "text": _encode_text,
    "msgpack": _msgpack_encoder(),
}


def register(subcommands: argparse._SubParsersAction) -> None:
    gateway = subcommands.add_parser(
        "gateway",
        help="on-prem gateway syslog (filter_instance and sendmail lines)",
        description="Commands for the on-prem Proofpoint gateway's syslog lines.",
    )
    actions = gateway.add_subparsers(dest="action", required=True, metavar="ACTION")
    parse = actions.add_parser(
        "parse",
        help="parse gateway log lines into records (for an agent's exec input)",
        description="Read gateway log lines from FILEs (or stdin) and write one record per line to "
        "stdout. Lines that do not parse are written too, with their raw text and an `error` field. "
        "Counts per stream go to stderr at exit.",
    )
    parse.add_argument(
        "files", nargs="*", metavar="FILE", help="input files, plain or gzip; none or '-' reads stdin"
    )
    parse.add_argument(
        "--format",
        choices=sorted(ENCODERS),
        default="json",
        help="json: NDJSON records; text: the line with its header normalised, for the "
        "gateway text tables; msgpack: one msgpack map per record (default: %(default)s)",
    )
    parse.add_argument(
        "--streams",
        default="filter,sendmail,other",
        type=_streams,
        help="comma list of the streams to write (filter, sendmail, other); "
        "the others are counted and skipped (default: all)",
    )
    parse.add_argument(
        "--timezone",
        default="local",
        help="zone of BSD timestamps (no zone of their own): IANA name, UTC, ±HH:MM "
        "or local (default: %(default)s, the machine's zone)",
    )
    parse.add_argument(
        "--reference-time",
        type=reference_time,
        default=None,
        metavar="ISO8601",
        help="time that BSD years are inferred against and header-less lines are "
        "stamped with (default: now); set it to re-process old files",
    )
    parse.add_argument(
        "--host",
        type=host_name,
        default=None,
        help="host name written for lines that carry none (on-box and header-less lines)",
    )
    parse.add_argument(
        "--max-line-bytes",
        type=positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="longer lines keep this many bytes and carry an error saying how many "
        "were dropped (default: %(default)s)",
    )
    parse.add_argument(
        "--follow",
        action="store_true",
        help="follow the one FILE as tail -F does (rotation by rename or truncation, a file that "
        "appears later) until SIGTERM; the read position of what was written is saved at most "
        "once a second and at the end, and resumed on the next start",
    )
    parse.add_argument(
        "--rotate-wait",
        type=seconds,
        metavar="SECONDS",
        help="with --follow: after a rotation by rename, read the old file on until it stayed quiet "
        "this long, as syslog writes to it until it reopens the path; a rotated file found at a "
        "restart, neither written nor renamed for this long, is done at its end "
        f"(default: {DEFAULT_ROTATE_WAIT_SECONDS})",
    )
    parse.add_argument(
        "--rotated-dir",
        type=filesystem_path,
        metavar="DIR",
        help="with --follow: the folder logrotate's olddir moves rotated files to, looked in for "
        "them beside the file's own (default: none)",
    )
    parse.add_argument(
        "--position-file",
        type=filesystem_path,
        help="with --follow: where the read position is kept; one follower at a time may use it "
        "(default: ppship-state/follow-<FILE name>.json, with -<streams> before .json when "
        "--streams names not all three)",
    )
    parse.set_defaults(run=run)
    exec_filter.register(actions)
    assemble.register(actions)


def _streams(text: str) -> frozenset[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STREAM_CHOICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stream {', '.join(unknown) or '(none)'}: choose from filter, sendmail, other"
        )
    return frozenset(STREAM_CHOICES[name] for name in names)


def run(args: argparse.Namespace) -> int:
    setup_logging(text_format="ppship gateway parse: %(message)s")
    if args.follow:
        return _run_follow(args)
    for flag, value in (
        ("--position-file", args.position_file),
        ("--rotate-wait", args.rotate_wait),
        ("--rotated-dir", args.rotated_dir),
    ):
        if value is not None:
            raise InputError(f"{flag} needs --follow")
    sources = open_inputs(args.files)
    job = _job(args)
    with job.signals_handled():
        unreadable = read_each(sources, job.consume)
    job.report()
    unreadable.raise_error()  # an input cut short: after the counts of what was read
    return 0


def _job(args: argparse.Namespace) -> "ParseJob":
    from proofpoint_shipper.gateway.parser import GatewayParser  # builds the grammars: only when run

    parser = GatewayParser(zone=resolve_zone(args.timezone), reference=args.reference_time, host=args.host)
    return ParseJob(parser, ENCODERS[args.format], args.streams, args.max_line_bytes)


def _run_follow(args: argparse.Namespace) -> int:
    if len(args.files) != 1 or args.files[0] == "-":
        raise InputError("--follow takes exactly one FILE (not stdin)")
    path = Path(args.files[0])
    if path.is_dir():
        raise InputError(f"cannot follow {path}: is a directory")
    position_file = args.position_file or _default_position_file(path, args.streams)
    writable_dir(position_file.parent, "the folder of the position file")  # not at the first save
    positions = FileCursorStore(position_file, kind="position file")
    positions.claim()  # a second follower on this position would write every line again
    rotate_wait = DEFAULT_ROTATE_WAIT_SECONDS if args.rotate_wait is None else args.rotate_wait
    _check_rotated_dir(args.rotated_dir)
    job = _job(args)
    with job.signals_handled():
        job.follow(
            FollowedFile(path, positions, args.max_line_bytes, job.keep_going, rotate_wait, args.rotated_dir)
        )
    job.report()
    return 0


def _check_rotated_dir(folder: Path | None) -> None:
    """A file given for the folder is refused; a folder not made yet (logrotate's createolddir
    makes it at the first rotation) is told, as a typo would be looked in for ever."""
    if folder is None:
        return
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--rotated-dir {folder} is not a directory")
    if not folder.exists():
        log.warning(
            "follow: the rotated folder %s does not exist (yet): rotated files are looked for in "
            "it once it does",
            folder,
        )


def _default_position_file(path: Path, streams: frozenset[str]) -> Path:
    """ppship-state/follow-<FILE name>.json, with the streams when not all: a filter follower and
    a sendmail follower of one file each keep their own position."""
    chosen = [name for name, stream in STREAM_CHOICES.items() if stream in streams]
    suffix = "" if len(chosen) == len(STREAM_CHOICES) else "-" + "-".join(chosen)
    return Path("ppship-state") / f"follow-{path.name}{suffix}.json"


class ParseJob:
    """One run: reads batches, parses, writes and flushes per batch, counts per stream."""

    def __init__(
        self,
        parser: "GatewayParser",
        encode: Callable[[dict, str | None], bytes],
        streams: frozenset[str],
        max_line_bytes: int,
    ):
        self.parser = parser
        self.encode = encode
        self.streams = streams
        self.max_line_bytes = max_line_bytes
        self.counts = StreamCounts()
        self.stopping = False
        self.output_closed = False
        self.unfinished_bytes = 0  # of lines left out at a stop
        self._parent = os.getppid()
        self._between_reads: Callable[[], None] = lambda: None  # following: save a due position

    def signals_handled(self) -> StopOnSignals:
        return StopOnSignals(self)

    def keep_going(self) -> bool:
        self._between_reads()
        if os.getppid() != self._parent:
            self.stopping = True  # our parent (the agent) is gone: nobody reads our output
        return not (self.stopping or self.output_closed)

    def consume(self, name: str, fd: int) -> None:
        reader = LineReader(fd, self.max_line_bytes, self.keep_going, name=name)
        for batch in reader.batches():  # stopped, it ends with what a pipe holds then
            self._write(b"".join(self._records(batch)))
            if self.output_closed:
                return
        self.unfinished_bytes += reader.unfinished_bytes

    def follow(self, followed: FollowedFile) -> None:
        """Write each batch, then note the position after it: never saved before it was written."""
        saver = PositionSaver(followed.positions)
        self._between_reads = saver.save_if_due
        try:
            for batch, position in followed.batches():
                self._write(b"".join(self._records(batch)))
                if self.output_closed:
                    return  # this batch may be cut short: the position before it is saved
                saver.written(position)
        finally:
            saver.flush()

    def _records(self, batch: Batch):
        parse, encode, streams = self.parser.parse_with_body, self.encode, self.streams
        parsed, others = self.counts.parsed, self.counts.others
        texts, undecodable = _decode_lines(batch.lines)
        for index, text in enumerate(texts):
            problem = None
            if undecodable or batch.dropped:
                problem = _problem(index in undecodable, batch.dropped.get(index, 0), self.max_line_bytes)
            record, body = parse(text, problem=problem)
            stream = record["stream"]
            if "error" in record:
                others[stream, outcome(record)] += 1
            else:
                parsed[stream] += 1  # not counts.add(record): a call a line costs 1 % here
            if stream in streams:
                yield encode(record, body)
            else:
                others[stream, "skipped"] += 1

    def _write(self, data: bytes) -> None:
        if not data or self.output_closed:
            return
        if not write_stdout(data):  # not through sys.stdout.buffer: see rawio
            self.output_closed = True  # the reader went away: stop

    def report(self) -> None:
        ending = stopped_early(self.unfinished_bytes) if self.stopping or self.output_closed else ""
        print(
            f"ppship gateway parse: {self.counts.total()} lines{ending}: {self.counts.summary()}",
            file=sys.stderr,
            flush=True,
        )


def _decode_lines(lines: list[bytes]) -> tuple[list[str], set[int]]:
    """The batch as text, and which lines held invalid UTF-8 (replaced with U+FFFD).

    Decoded in one call where it is valid: a line break never occurs inside a multi-byte UTF-8
    sequence, so that equals decoding line by line.
    """
    try:
        return b"\n".join(lines).decode("utf-8").split("\n"), set()
    except UnicodeDecodeError:
        pass
    texts, undecodable = [], set()
    for index, line in enumerate(lines):
        try:
            texts.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(line.decode("utf-8", "replace"))
            undecodable.add(index)
    return texts, undecodable


def _problem(undecodable: bool, dropped: int, limit: int) -> str | None:
    problems = []
    if undecodable:
        problems.append(INVALID_UTF8)
    if dropped:
        problems.append(
            f"line of {limit + dropped} bytes cut to its first {limit} "
            f"(--max-line-bytes); {dropped} bytes dropped"
        )
    return "; ".join(problems) or None
