"""Writes to a file descriptor that neither lose nor mix bytes when a signal arrives.

Writing through `sys.stdout.buffer` lost and interleaved records when SIGTERM (what an agent sends
its exec child) arrived while a write to a full pipe was blocked; tests/test_rawio.py checks ours.
`write_all` loops `os.write` over the data instead, which delivers every byte once, in order.
`write_stdout` is that for stdout, for commands whose reader (an agent) may go away.
"""

import io
import os
import sys
from typing import BinaryIO


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_stdout(data: bytes) -> bool:
    """Write all of `data` to stdout; False once the reader went away (EPIPE). Stdout then points
    at /dev/null, so the interpreter's final flush has nothing to complain about."""
    try:
        write_all(sys.stdout.fileno(), data)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True


def descriptor(stream: BinaryIO) -> int | None:
    """The stream's file descriptor, or None for in-memory streams."""
    try:
        return stream.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None
