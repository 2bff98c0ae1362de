"""Writes to a file descriptor that neither lose nor mix bytes when a signal arrives.

Writing through `sys.stdout.buffer` lost and interleaved records when SIGTERM (what an agent sends
its exec child) arrived while a write to a full pipe was blocked; tests/test_rawio.py checks ours.
`write_all` loops `os.write` over the data instead, which delivers every byte once, in order.
"""

import io
import os
from typing import BinaryIO


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def descriptor(stream: BinaryIO) -> int | None:
    """The stream's file descriptor, or None for in-memory streams."""
    try:
        return stream.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None
