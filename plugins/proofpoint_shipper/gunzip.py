"""Inflates a gzip stream as it is read, in bounded pieces: rotated logs (`maillog-20261129.gz`)
and exported records come compressed, and a few kilobytes of gzip can hold gigabytes.

`Gunzip().inflate(data)` yields the inflated bytes, at most INFLATED_BYTES at a time; `end()` says
whether the stream stopped inside a member. Several members one after another (`cat a.gz b.gz`)
read as one stream, as gzip itself reads them. `other_compression(start)` names xz, zstd and
bzip2, which are not read: without it they came out as lines of binary garbage.
"""

import zlib
from collections.abc import Iterator

MAGIC = b"\x1f\x8b"  # no text line starts with these bytes: 0x1f is a control character
# Other compressions a log rotation may use, told by their first bytes (none of them text), with
# the command that inflates each: they are not read here.
OTHER_COMPRESSIONS = {
    b"\xfd7zXZ\x00": ("xz", "xzcat"),
    b"\x28\xb5\x2f\xfd": ("zstd", "zstdcat"),
    b"BZh91AY&SY": ("bzip2", "bzcat"),  # the block size digit varies: checked as 9 and below
}
INFLATED_BYTES = 1024 * 1024
_GZIP_ONLY = 16 + zlib.MAX_WBITS  # wbits that read the gzip header and trailer


def other_compression(start: bytes) -> str | None:
    """What to say of input that opens as xz, zstd or bzip2; None for anything else."""
    if start[:3] == b"BZh" and start[3:4].isdigit():
        start = start[:3] + b"9" + start[4:]
    for magic, (kind, inflater) in OTHER_COMPRESSIONS.items():
        if start.startswith(magic):
            return f"it is {kind}-compressed, which is not read here: pipe it in through `{inflater}`"
    return None


class GzipError(ValueError):
    """The bytes are not a whole gzip stream; the message says how."""


class Gunzip:
    def __init__(self):
        self._member = None  # the decompressor of the member being read; None between members

    def inflate(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._member is None:
                data = data.lstrip(b"\0")  # zeros padding the end of a stream, which gzip allows
                if not data:
                    return
                self._member = zlib.decompressobj(_GZIP_ONLY)
            try:
                inflated = self._member.decompress(data, INFLATED_BYTES)
            except zlib.error as exc:
                raise GzipError(f"not a gzip stream: {exc}") from None
            if inflated:
                yield inflated
            if self._member.eof:
                data, self._member = self._member.unused_data, None  # the next member, if any
            else:
                data = self._member.unconsumed_tail  # held back by the bound: inflate it next

    def end(self) -> None:
        """The input has ended: a GzipError if that was inside a member (a file cut short)."""
        if self._member is not None:
            raise GzipError("the gzip stream ends inside a member: the file was cut short")
