"""StdoutSink: one record per line for an agent's exec input, each carrying its table.

NDJSON (records gain a `table` key when they lack one, so the agent can route), the plain line
for text tables (`--format text`, one table per process), or msgpack maps. A line over the limit
is refused, counted and reported on stderr, never split.
"""

import sys
from typing import BinaryIO

import msgpack
import orjson

from proofpoint_shipper.rawio import descriptor, stdout_failed, stdout_fd, write_all
from proofpoint_shipper.sinks.records import stream_for, table_line

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
WRITE_THROUGH_BYTES = 1024 * 1024  # written before flush() past this much


class StdoutSink:
    def __init__(
        self,
        output: BinaryIO | None = None,
        *,
        format: str = "json",
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        errors=None,
    ):
        if format not in ("json", "text", "msgpack"):
            raise ValueError(f"unknown format {format!r}")
        if output is None:
            stdout_fd()  # a ConfigError when stdout was closed at start
            output = sys.stdout.buffer
        self.output = output
        self.format = format
        self.max_line_bytes = max_line_bytes
        self.errors = errors or sys.stderr
        self.refused = 0
        self._buffer = bytearray()
        self._pack = msgpack.Packer().pack

    def write(self, table: str, records: list[dict], name: str | None = None) -> None:
        stream = stream_for(table)
        for record in records:
            line = self._encode(stream, table, record)
            if len(line) > self.max_line_bytes:
                self.refused += 1
                print(
                    f"ppship: refused a {len(line)}-byte record for {table}: over the "
                    f"{self.max_line_bytes}-byte line limit",
                    file=self.errors,
                    flush=True,
                )
                continue
            self._buffer += line
            if len(self._buffer) >= WRITE_THROUGH_BYTES:
                self._write_buffer()  # no need to hold a whole window: flush() still confirms

    def _encode(self, stream, table: str, record: dict) -> bytes:
        if self.format == "text":
            return table_line(stream, record)
        routed = record if "table" in record else {**record, "table": table}
        if self.format == "msgpack":
            return self._pack(routed)
        return orjson.dumps(routed) + b"\n"

    def flush(self) -> None:
        self._write_buffer()
        try:
            self.output.flush()
        except OSError as exc:  # the reader went away, the disk is full: nothing was confirmed
            raise stdout_failed(exc) from exc

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        fd = descriptor(self.output)
        try:
            if fd is None:
                self.output.write(data)
            else:
                self.output.flush()  # anything written through the stream itself goes first
                write_all(fd, data)  # not through the buffered stream: see rawio
        except OSError as exc:
            raise stdout_failed(exc) from exc

    def close(self) -> None:
        self.flush()
