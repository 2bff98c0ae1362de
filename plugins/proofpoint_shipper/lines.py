"""Reads lines from a file descriptor in batches, with every line's length bounded.

`LineReader(fd, max_line_bytes, name=...).batches()` yields `Batch`es; memory stays flat on
endless input, and a line over the bound keeps its first bytes while the batch says how many were
dropped. Stopped (`keep_going()` false), it reads what a pipe holds then and ends with it. An
input that opens as gzip is inflated; one that opens with a UTF-16 byte order mark is read as
UTF-16. A read that fails (EIO from a failing disk), or gzip that is not whole, is an InputError
naming the input; `UnreadableInputs` lets a command go on with its other inputs and deliver and
count what it read before raising it.
"""

import codecs
import fcntl
import itertools
import os
import select
import stat
import struct
import termios
from collections.abc import Callable, Iterator
from typing import NamedTuple

from proofpoint_shipper.errors import InputError
from proofpoint_shipper.gunzip import MAGIC as GZIP_MAGIC
from proofpoint_shipper.gunzip import Gunzip, GzipError, other_compression

CHUNK_BYTES = 64 * 1024
# What Windows tools put before UTF-8 text: kept, it hid the first line's header (a gateway line
# read as another program's) or made the first NDJSON record unreadable.
UTF8_BOM = b"\xef\xbb\xbf"
# UTF-16 with its byte order mark: what Windows PowerShell 5 writes with `>`. Read as bytes, every
# line was garbage between NUL bytes; it is read as text instead.
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
WAIT_SECONDS = 0.5
_NOTHING_DROPPED: dict[int, int] = {}


class UnreadableInputs:
    """`with unreadable:` around the reading of one input: an InputError inside (a gzip file cut
    short, a failing disk) ends that input only and is kept. The command goes on with the next
    input, delivers and counts what it read, then `raise_error()` raises them all in one line:
    neither the lines read before the fault nor the inputs after it are dropped with it."""

    def __init__(self):
        self.errors: list[InputError] = []

    def __enter__(self) -> "UnreadableInputs":
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if isinstance(exc, InputError):
            self.errors.append(exc)
            return True
        return False

    def raise_error(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise InputError("; ".join(str(error) for error in self.errors))


def wait_readable(fd: int, keep_going: Callable[[], bool]) -> bool:
    """True once `fd` has input (or its end) to read; False once `keep_going()`, asked every
    WAIT_SECONDS while it idles, says stop."""
    while keep_going():
        try:
            readable, _, _ = select.select([fd], [], [], WAIT_SECONDS)
        except (OSError, ValueError):
            return True  # not selectable: a plain read will block or answer
        if readable:
            return True
    return False


def held_in_pipe(fd: int, read: Callable[[int], bytes]) -> Iterator[bytes]:
    """What a pipe or socket holds now, written and not yet read, in `read(bytes still held)`s;
    nothing for any other input. A writer that goes on is not waited for, and a file's rest stays
    in the file."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    while waiting > 0 and (chunk := read(waiting)):
        yield chunk
        waiting -= len(chunk)


class Batch(NamedTuple):
    lines: list[bytes]  # without their line terminators
    dropped: dict[int, int]  # index in `lines` → bytes cut off a line longer than the bound


class LineReader:
    """Splits a byte stream into lines; `keep_going()` is asked whenever input is idle."""

    def __init__(
        self, fd: int, max_line_bytes: int, keep_going: Callable[[], bool] = lambda: True, *, name: str
    ):
        self.fd = fd
        self.name = name  # for the error when a read fails
        self.limit = max_line_bytes
        self.keep_going = keep_going
        self._head = bytearray()  # the start of a line whose end has not arrived yet (grown in place)
        self._head_dropped = 0
        self.stopped = False  # keep_going() said stop before the input ended

    def batches(self) -> Iterator[Batch]:
        """The input's lines; a gzip stream (a rotated log, `maillog-20261129.gz`) is inflated.
        Stopped, a line whose end had not come is left out (`unfinished_bytes` says how long):
        handed on, its first part would read as a whole line."""
        for chunk in self._input():
            batch = self.split(chunk)
            if batch.lines:
                yield batch
        if self.stopped:
            return
        rest = self.finish()
        if rest.lines:
            yield rest

    def _input(self) -> Iterator[bytes]:
        """The input's bytes as UTF-8 text, told by how the first chunk opens: gzip inflated,
        UTF-16 decoded, a UTF-8 byte order mark dropped; other compressions refused."""
        chunks = self._chunks()
        first = next(chunks, b"")
        if refusal := other_compression(first):
            raise InputError(f"cannot read {self.name}: {refusal}")
        chunks = itertools.chain([first.removeprefix(UTF8_BOM)], chunks)
        if first.startswith(GZIP_MAGIC):
            chunks = _inflated(chunks, lambda: not self.stopped)
        elif first.startswith(UTF16_BOMS):
            chunks = _utf16_as_utf8(chunks)
        try:
            yield from chunks
        except GzipError as exc:
            raise InputError(f"cannot read {self.name}: {exc}") from None

    def _chunks(self) -> Iterator[bytes]:
        while wait_readable(self.fd, self.keep_going):
            chunk = self.read_chunk()
            if not chunk:
                return
            yield chunk
        # Stopped: what a pipe holds then is read too, as its writer counts it sent (a writer
        # stopped with us sends it no more).
        self.stopped = True
        yield from held_in_pipe(self.fd, lambda _: self.read_chunk())

    @property
    def pending_bytes(self) -> int:
        """Bytes of the line whose end has not arrived yet (dropped ones included)."""
        return len(self._head) + self._head_dropped

    @property
    def unfinished_bytes(self) -> int:
        """Stopped: the bytes of the line left out, whose end had not come."""
        return self.pending_bytes if self.stopped else 0

    def finish(self) -> Batch:
        """The line whose end never came, if any, as the input's last line."""
        if not (self._head or self._head_dropped):
            return Batch([], _NOTHING_DROPPED)
        line, dropped = self._take_head(b"")
        return Batch([line], {0: dropped} if dropped else _NOTHING_DROPPED)

    def read_chunk(self) -> bytes:
        """Up to CHUNK_BYTES of the input; b"" at its end."""
        try:
            return os.read(self.fd, CHUNK_BYTES)
        except OSError as exc:
            raise InputError(f"cannot read {self.name}: {exc.strerror or exc}") from exc

    def split(self, chunk: bytes) -> Batch:
        """The whole lines that `chunk` completes; the unfinished rest is kept for the next."""
        lines = chunk.split(b"\n")
        rest = lines.pop()
        # A CRLF cut between two reads leaves the CR at the end of the line begun in the last one.
        crlf = b"\r" in chunk or self._head.endswith(b"\r")
        dropped: dict[int, int] = _NOTHING_DROPPED
        if lines and (self._head or self._head_dropped):
            lines[0], first_dropped = self._take_head(lines[0])
            if first_dropped:
                dropped = {0: first_dropped}
        if any(len(line) > self.limit for line in lines):
            dropped = dict(dropped)
            for index, line in enumerate(lines):
                if len(line) > self.limit:
                    dropped[index] = dropped.get(index, 0) + len(line) - self.limit
                    lines[index] = line[: self.limit]
        if crlf:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        self._extend_head(rest)
        return Batch(lines, dropped)

    def _extend_head(self, part: bytes) -> None:
        room = self.limit - len(self._head)
        if len(part) > room:
            self._head_dropped += len(part) - room
            part = part[:room]
        self._head += part

    def _take_head(self, part: bytes) -> tuple[bytes, int]:
        self._extend_head(part)
        line, dropped = bytes(self._head), self._head_dropped
        self._head, self._head_dropped = bytearray(), 0
        return line, dropped


def stopped_early(unfinished_bytes: int) -> str:
    """How a command's summary says that it stopped before its input ended."""
    if not unfinished_bytes:
        return " (stopped early)"
    return f" (stopped early; the {unfinished_bytes} bytes of a line whose end had not come left out)"


def _inflated(chunks: Iterator[bytes], ended: Callable[[], bool]) -> Iterator[bytes]:
    """The chunks inflated; `ended()`: whether the input ended (not a stop) after the last, so the
    gzip stream must be whole."""
    gunzip = Gunzip()
    for chunk in chunks:
        yield from gunzip.inflate(chunk)
    if ended():
        gunzip.end()


def _utf16_as_utf8(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """As UTF-8, the text every reader after this one expects; a byte cut off at the end: U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-16")("replace")
    for chunk in chunks:
        yield decoder.decode(chunk).encode()
    yield decoder.decode(b"", final=True).encode()
