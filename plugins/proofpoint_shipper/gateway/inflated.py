"""A rotated log that logrotate compressed with gzip, read as the follower reads a plain one.

logrotate's `compress` (with `delaycompress`, at the rotation after) turns `maillog.1` into
`maillog.2.gz`: a follower stopped over two rotations finds the rest of its file there. The file
is finished; its offsets, first bytes and lines are those of its inflated bytes, the same as the
plain file's, so a position saved in one resumes in the other.

`InflatedFile(path, offset, max_line_bytes, head_limit)` reads from `offset` in the inflated bytes;
`inflated_start(path, length)` gives a file's first bytes, inflated when it is gzip.
"""

import hashlib
import logging
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.gunzip import MAGIC as GZIP_MAGIC
from proofpoint_shipper.gunzip import Gunzip, GzipError
from proofpoint_shipper.lines import UTF8_BOM, Batch, LineReader

log = logging.getLogger("proofpoint_shipper")
_READ_BYTES = 64 * 1024


def is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    except OSError:
        return False


def inflated_start(path: Path, length: int) -> bytes:
    """The first `length` bytes of the file, inflated when it is gzip (fewer if it holds fewer, or
    its gzip is broken there); b"" when it cannot be read."""
    try:
        with open(path, "rb") as file:
            start = file.read(length)
            if not start.startswith(GZIP_MAGIC):
                return start
            file.seek(0)
            return _inflated_start(file, length)
    except OSError:
        return b""


def _inflated_start(file, length: int) -> bytes:
    gunzip, start = Gunzip(), b""
    try:
        while len(start) < length and (chunk := file.read(_READ_BYTES)):
            for piece in gunzip.inflate(chunk):
                start += piece
                if len(start) >= length:
                    break
    except GzipError:
        pass  # what was inflated before the fault
    return start[:length]


class InflatedFile:
    """A finished gzip file, read from `offset` in its inflated bytes: the follower's view of a
    rotated file (identity, read, rest, consumed, head_digest, modified, close)."""

    def __init__(self, path: Path, offset: int, max_line_bytes: int, head_limit: int):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        status = os.fstat(self.fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(self.fd)
            raise ConfigError(f"cannot follow {path}: not a regular file")
        self.identity = (status.st_dev, status.st_ino)
        self.lines = LineReader(self.fd, max_line_bytes, name=str(path))
        self.read_to = 0  # inflated bytes read, those passed over included
        self.head = b""  # the first inflated bytes, up to head_limit
        self._head_limit = head_limit
        self._pass_over = offset  # inflated bytes before the offset, still to pass over
        self._pieces = self._inflated()

    def _inflated(self) -> Iterator[bytes]:
        gunzip = Gunzip()
        while chunk := self.lines.read_chunk():
            yield from gunzip.inflate(chunk)
        gunzip.end()

    @property
    def consumed(self) -> int:
        """Inflated bytes up to the end of the last whole line handed out."""
        return self.read_to - self.lines.pending_bytes

    def read(self) -> Batch | None:
        """The lines of the next inflated piece; None at the end (or where the gzip is broken,
        which is told: the lines after the fault cannot be read)."""
        try:
            piece = next(self._pieces, None)
        except GzipError as exc:
            log.warning("follow: %s: %s; its lines after the fault are not read", self.path, exc)
            piece = None
        if piece is None:
            return None
        if len(self.head) < self._head_limit:
            self.head += piece[: self._head_limit - len(self.head)]
        at_start, self.read_to = self.read_to == 0, self.read_to + len(piece)
        passed = min(self._pass_over, len(piece))
        self._pass_over -= passed
        return self.lines.split(piece.removeprefix(UTF8_BOM) if at_start and not passed else piece[passed:])

    def rest(self) -> Batch:
        """The unterminated last line, if the file ends in one."""
        return self.lines.finish()

    def unchanged_for(self) -> float:
        """A compressed file is not written to again: done at its end."""
        return math.inf

    def head_digest(self) -> tuple[int, str]:
        """How many of the first inflated bytes up to the last whole line handed out, and their
        digest: those of the plain file it was compressed from."""
        length = min(self.consumed, len(self.head))
        return length, hashlib.sha256(self.head[:length]).hexdigest()

    def modified(self) -> int:
        """The file's time, which gzip and logrotate keep from the plain file."""
        return os.fstat(self.fd).st_mtime_ns

    def close(self) -> None:
        self.modified_ns = self.modified()
        os.close(self.fd)
