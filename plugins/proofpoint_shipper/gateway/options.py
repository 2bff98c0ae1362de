"""Flags and inputs the gateway commands share: `--reference-time`, `--host`, `--key`, and FILE
arguments, opened by `open_inputs` and read in turn by `read_each`."""

import argparse
import os
from collections.abc import Callable
from datetime import datetime

from proofpoint_shipper.errors import InputError
from proofpoint_shipper.lines import UnreadableInputs
from proofpoint_shipper.rawio import STDIN


def reference_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the zone too, e.g. {text}+00:00")
    if not 1900 <= moment.year <= 9998:  # a BSD line's year is inferred a year either side of it
        raise argparse.ArgumentTypeError(f"expected a time between the years 1900 and 9998, got {text!r}")
    return moment


def host_name(text: str) -> str:
    """--host: one word, as a syslog header's host field is; the text form would not read back."""
    if not text or not text.isprintable() or any(character.isspace() for character in text):
        raise argparse.ArgumentTypeError(f"expected a host name without white space, got {text!r}")
    return text


def record_key(text: str) -> str:
    """--key: a record key the line is under; "" names none, and every record would come back
    with an error."""
    if not text:
        raise argparse.ArgumentTypeError(f"expected the name of a record key, got {text!r}")
    return text


def open_inputs(files: list[str]) -> list[tuple[str, int]]:
    """(name, fd) of every input, all opened before any is read: a typo fails at once (exit 2)."""
    if not files or files == ["-"]:
        return [("<stdin>", STDIN)]
    inputs = []
    for path in files:
        if path == "-":
            inputs.append(("<stdin>", STDIN))
            continue
        if os.path.isdir(path):
            raise InputError(f"cannot read {path}: is a directory")
        try:
            inputs.append((path, os.open(path, os.O_RDONLY)))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return inputs


def read_each(inputs: list[tuple[str, int]], consume: Callable[[str, int], None]) -> UnreadableInputs:
    """`consume(name, fd)` each input in turn, closing the files; an input cut short ends that
    input only. The caller raises the faults kept (`raise_error()`) once it told what it read."""
    unreadable = UnreadableInputs()
    for name, fd in inputs:
        with unreadable:
            consume(name, fd)
        if fd != STDIN:
            os.close(fd)
    return unreadable
