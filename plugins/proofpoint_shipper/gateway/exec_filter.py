"""`ppship gateway exec-filter`: Fluentd's exec_filter co-process, msgpack in and msgpack out.

Reads a stream of msgpack maps on stdin and writes one map per input, in order, on stdout: the
input's keys plus the parsed record of the gateway line found under --key (default `log`, then
`message`), with `text`, the line as the gateway text tables hold it. Output is flushed after
every read; EOF on stdin ends the run with exit code 0. Bytes that are not msgpack, or an object
cut off by EOF, give one error line and exit code 2 (what came before is written first).
"""

import argparse
import os
from typing import TYPE_CHECKING

import msgpack

from proofpoint_shipper.errors import InputError
from proofpoint_shipper.gateway.record import agent_line, decoding_problem
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.rawio import STDIN, stdout_failed, stdout_fd, write_all

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
        help="record key holding the line; repeat for fallbacks (default: log, message)",
    )
    exec_filter.add_argument("--timezone", default="local", help="zone of BSD timestamps (default: local)")
    exec_filter.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from proofpoint_shipper.gateway.parser import GatewayParser  # builds the grammars: only when run

    keys = args.key or ["log", "message"]
    parser = GatewayParser(zone=resolve_zone(args.timezone))
    unpacker = msgpack.Unpacker(  # strings that are not UTF-8 read with U+FFFD, as in the relay
        raw=False, max_buffer_size=MAX_OBJECT_BYTES, strict_map_key=False, unicode_errors="replace"
    )
    pack = msgpack.Packer(use_bin_type=True).pack
    stdin, stdout = STDIN, stdout_fd()
    fed = taken = 0  # bytes read from stdin; bytes of the whole objects among them
    while chunk := os.read(stdin, READ_BYTES):
        try:
            unpacker.feed(chunk)
        except msgpack.BufferFull as exc:
            raise InputError(f"a msgpack object on stdin is over {MAX_OBJECT_BYTES} bytes") from exc
        fed += len(chunk)
        out: list[bytes] = []
        try:
            for item in unpacker:
                out.append(pack(_filtered(item, keys, parser)))
                taken = unpacker.tell()
        except ValueError as exc:  # msgpack's FormatError and StackError
            _write(stdout, out)  # what came before the fault goes out
            raise InputError(f"stdin is not a msgpack stream: {str(exc) or type(exc).__name__}") from exc
        _write(stdout, out)
    if taken != fed:  # the iteration stops quietly before an object that is not whole
        raise InputError(f"stdin ended in the middle of a msgpack object ({fed - taken} bytes not read)")
    return 0


def _write(stdout: int, packed: list[bytes]) -> None:
    try:
        write_all(stdout, b"".join(packed))
    except OSError as exc:
        raise stdout_failed(exc) from exc


def _filtered(item: object, keys: list[str], parser: "GatewayParser") -> dict:
    if not isinstance(item, dict):
        return {"error": "input is not a map", "input": repr(item)[:200]}
    line = agent_line(item, keys)
    if line is None:
        return {**item, "error": f"no gateway line under {' or '.join(keys)}"}
    return {**item, **parser.parse_with_text(line, problem=decoding_problem(line))}
