"""`ppship gateway exec-filter`: Fluentd's exec_filter co-process, msgpack in and msgpack out.

Reads a stream of msgpack maps on stdin and writes one map per input, in order, on stdout: the
input's keys plus the parsed record of the gateway line found under --key (default `log`, then
`message`), with `text`, the line as the gateway text tables hold it. Output is flushed after
every read; EOF on stdin ends the run with exit code 0, and so does SIGTERM or SIGINT once what
was read, and what the pipe held then, is written, with counts per stream on stderr. Bytes that
are not msgpack, or an object cut off by EOF, give one error line and exit code 2 (what came
before is written first).
"""

import argparse
import os
import sys
from typing import TYPE_CHECKING

import msgpack

from proofpoint_shipper.errors import InputError
from proofpoint_shipper.gateway.counts import StreamCounts
from proofpoint_shipper.gateway.options import record_key
from proofpoint_shipper.gateway.record import TAKEN_APART, agent_line, decoding_problem, mark_taken_apart
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.lines import held_in_pipe, wait_readable
from proofpoint_shipper.logs import setup_logging
from proofpoint_shipper.rawio import STDIN, stdout_failed, stdout_fd, write_all
from proofpoint_shipper.service import StopOnSignals

if TYPE_CHECKING:
    from proofpoint_shipper.gateway.parser import GatewayParser

READ_BYTES = 64 * 1024
MAX_OBJECT_BYTES = 16 * 1024 * 1024


def register(actions: argparse._SubParsersAction) -> None:
    exec_filter = actions.add_parser(
        "exec-filter",
        help="Fluentd exec_filter co-process: msgpack maps in, parsed maps out",
        description="Read msgpack maps on stdin; write each one back, in order, with the parsed "
        "record of its gateway line added. For Fluentd's exec_filter with msgpack format and parse.",
    )
    exec_filter.add_argument(
        "--key",
        action="append",
        type=record_key,
        help="record key holding the line; repeat for fallbacks (default: log, message)",
    )
    exec_filter.add_argument("--timezone", default="local", help="zone of BSD timestamps (default: local)")
    exec_filter.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from proofpoint_shipper.gateway.parser import GatewayParser  # builds the grammars: only when run

    setup_logging(text_format="ppship gateway exec-filter: %(message)s")
    coprocess = CoProcess(args.key or ["log", "message"], GatewayParser(zone=resolve_zone(args.timezone)))
    with StopOnSignals(coprocess):
        coprocess.run()
    coprocess.report()
    return 0


class CoProcess:
    """Reads stdin to its end, or until a stop (SIGTERM) between two reads; each read's maps are
    parsed and written before the next read."""

    def __init__(self, keys: list[str], parser: "GatewayParser"):
        self.keys, self.parser = keys, parser
        self.unpacker = msgpack.Unpacker(  # strings that are not UTF-8 read with U+FFFD, as in the relay
            raw=False, max_buffer_size=MAX_OBJECT_BYTES, strict_map_key=False, unicode_errors="replace"
        )
        self.pack = msgpack.Packer(use_bin_type=True).pack
        self.stdout = stdout_fd()
        self.fed = self.taken = 0  # bytes read from stdin; bytes of the whole objects among them
        self.stopping = False
        self.counts = StreamCounts()
        self.not_maps = self.without_line = 0
        self.taken_apart_told = False

    def run(self) -> None:
        while wait_readable(STDIN, lambda: not self.stopping) and (chunk := os.read(STDIN, READ_BYTES)):
            self._take(chunk)
        if self.stopping:
            self._take_what_the_pipe_holds()
        if self.taken == self.fed:
            return
        unread = f"{self.fed - self.taken} bytes not read"  # iteration stops before an unfinished object
        if not self.stopping:
            raise InputError(f"stdin ended in the middle of a msgpack object ({unread})")
        print(
            f"ppship gateway exec-filter: stopped in the middle of a msgpack object ({unread})",
            file=sys.stderr,
        )

    def _take_what_the_pipe_holds(self) -> None:
        """Fluentd, shutting down, closes our stdin and sends SIGTERM at once: what its writer had
        put in the pipe is no longer its to send again, so it is read and written too. Only that:
        a writer that goes on is not waited for, and a file's rest stays in the file."""
        for chunk in held_in_pipe(STDIN, lambda held: os.read(STDIN, min(held, READ_BYTES))):
            self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        try:
            self.unpacker.feed(chunk)
        except msgpack.BufferFull as exc:
            raise InputError(f"a msgpack object on stdin is over {MAX_OBJECT_BYTES} bytes") from exc
        self.fed += len(chunk)
        out: list[bytes] = []
        try:
            for item in self.unpacker:
                out.append(self.pack(self._filtered(item)))
                self.taken = self.unpacker.tell()
        except ValueError as exc:  # msgpack's FormatError and StackError
            # imported here, on the way out: every gateway command's start-up imports this module
            from proofpoint_shipper.fluent.protocol import msgpack_fault

            _write(self.stdout, out)  # what came before the fault goes out
            raise InputError(f"stdin is not a msgpack stream: {msgpack_fault(exc)}") from exc
        _write(self.stdout, out)

    def _filtered(self, item: object) -> dict:
        if not isinstance(item, dict):
            self.not_maps += 1
            return {"error": "input is not a map", "input": repr(item)[:200]}
        line = agent_line(item, self.keys)
        if line is None:
            self.without_line += 1
            return {**item, "error": f"no gateway line under {' or '.join(self.keys)}"}
        record = self.parser.parse_with_text(line, problem=decoding_problem(line))
        if "ident" in item and mark_taken_apart(item, record) and not self.taken_apart_told:
            self.taken_apart_told = True  # once: a pipeline that does it does it to every line
            print(f"ppship gateway exec-filter: {TAKEN_APART}", file=sys.stderr, flush=True)
        self.counts.add(record)
        return {**item, **record}

    def report(self) -> None:
        total = self.counts.total() + self.not_maps + self.without_line
        parts = [self.counts.summary()]
        if self.not_maps:
            parts.append(f"{self.not_maps} not maps")
        if self.without_line:
            parts.append(f"{self.without_line} without a line under {' or '.join(self.keys)}")
        ending = " (stopped early)" if self.stopping else ""
        print(f"ppship gateway exec-filter: {total} inputs{ending}: " + "; ".join(parts), file=sys.stderr)


def _write(stdout: int, packed: list[bytes]) -> None:
    try:
        write_all(stdout, b"".join(packed))
    except OSError as exc:
        raise stdout_failed(exc) from exc
