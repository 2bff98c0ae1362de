"""Writes to a file descriptor that neither lose nor mix bytes when a signal arrives.

Writing through `sys.stdout.buffer` lost and interleaved records when SIGTERM (what an agent sends
its exec child) arrived while a write to a full pipe was blocked; tests/test_rawio.py checks ours.
`write_all` loops `os.write` over the data instead, which delivers every byte once, in order.
`write_stdout` is that for stdout, for commands whose reader (an agent) may go away.
`occupy_closed_standard_streams`, `forgiving_stderr` and `stdout_fd` cover a command started with
stdin, stdout or stderr closed, or whose stderr reader goes away; `stop_when_reader_goes` stops a
collector whose stdout reader went away.
`write_file_durably` replaces a file whole or not at all (cursors, spooled objects).
"""

import contextlib
import io
import logging
import os
import select
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from proofpoint_shipper.errors import ConfigError, DeliveryError, ReaderGone
from proofpoint_shipper.service import start_daemon_thread

STDIN = 0  # read by number: sys.stdin is None when the command was started with it closed
READER_CHECK_SECONDS = 1.0
log = logging.getLogger("proofpoint_shipper")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_file_durably(path: Path, data: bytes, mode: int = 0o666) -> None:
    """`path` holds `data` whole, or stays as it was: written to a temporary file beside it (named
    by our pid), fsynced, renamed over it, the folder fsynced. A failure (a full disk) raises the
    OSError and leaves no temporary file behind. `mode` is before the umask."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_stdout(data: bytes) -> bool:
    """Write all of `data` to stdout; False once the reader went away (EPIPE). Stdout then points
    at /dev/null, so the interpreter's final flush has nothing to complain about. Any other
    failure (a full disk under a redirect) is a DeliveryError."""
    fd = stdout_fd()
    try:
        write_all(fd, data)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return False
    except OSError as exc:
        raise stdout_failed(exc) from exc
    return True


def stdout_failed(exc: OSError) -> DeliveryError:
    """The one-line error for a write to stdout that failed: it names stdout, as a bare
    "No space left on device" would not. A reader gone (EPIPE) is final: ReaderGone."""
    error = ReaderGone if isinstance(exc, BrokenPipeError) else DeliveryError
    return error(f"cannot write to stdout: {exc.strerror or exc}")


def stdout_fd() -> int:
    """Stdout's descriptor; a ConfigError when the command was started with stdout closed."""
    if sys.stdout is None:
        raise ConfigError("stdout is closed: there is nowhere to write the records")
    return sys.stdout.fileno()


def occupy_closed_standard_streams() -> None:
    """Put /dev/null where stdin, stdout or stderr was closed at start: otherwise the next file
    opened takes that number, and what is meant for stdout could land in it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _devnull_at(fd)


def _devnull_at(fd: int) -> None:
    """/dev/null under descriptor `fd`, whatever was there (a closed one, a pipe with no reader)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    if devnull != fd:
        os.dup2(devnull, fd)
        os.close(devnull)


def forgiving_stderr() -> None:
    """Make `sys.stderr` a stream on fd 2 whose writes never fail the command.

    Started with stderr closed, Python set `sys.stderr` to None, and `print(file=None)` writes to
    stdout: the last line of counts landed among the records. And a reader of stderr that went
    away (a log pipe) made that last line fail a run whose records were all written. Once a
    write finds no reader, /dev/null takes fd 2. A stream replaced already (a test's capture)
    is left as it is.
    """
    if sys.stderr is not None and sys.stderr is not sys.__stderr__:
        return
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            sys.stderr.flush()
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(_Stderr()), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )


class _Stderr(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 2

    def isatty(self) -> bool:
        return os.isatty(2)

    def write(self, data) -> int:
        try:
            return os.write(2, data)
        except BrokenPipeError:
            _devnull_at(2)
            return len(data)


def descriptor(stream: BinaryIO) -> int | None:
    """The stream's file descriptor, or None for in-memory streams."""
    try:
        return stream.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None


def stop_when_reader_goes(stop: threading.Event) -> None:
    """Set `stop` once the reader of our stdout pipe went away (an exec input's agent stopped).

    A collector that writes nothing for a while (a quiet source, an outage it outlives) would
    otherwise only find out at its next write, and hold its cursor's lock meanwhile: the agent,
    started again, could not start the collector again.
    """

    def watch() -> None:
        while not stop.wait(READER_CHECK_SECONDS):
            if _reader_gone(stdout_fd()):
                log.info("the reader of stdout went away: stopping")
                stop.set()

    start_daemon_thread(watch, "stdout-reader")


def _reader_gone(fd: int) -> bool:
    """Whether `fd` is the write end of a pipe whose read end is closed: poll says POLLERR."""
    poller = select.poll()
    poller.register(fd, 0)  # errors and hang-ups are reported whatever the mask
    return any(events & select.POLLERR for _, events in poller.poll(0))
