"""Reads a SIEM API answer event by event (ijson), so memory does not grow with the window.

`read_answer(path)` yields (array name, event) pairs, the items of arrays no table takes among
them, and raises MalformedAnswer, naming what is wrong, for invalid or truncated JSON, a known
array that is not one, or an event that is not an object or nests too deep.
`mend_lone_surrogates(path)` first rewrites what ijson cannot read right.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import ijson

from proofpoint_shipper.json_input import SURROGATE_ESCAPE
from proofpoint_shipper.tap import ARRAYS

# At each backslash of the answer: an escaped backslash (a "u" after it is text), a surrogate
# pair (an emoji, whole), or a lone half of one (group 1), as JavaScript escapes a string cut in
# the middle of an emoji. ijson reads a lone high half as "?", in silence, and stops at a lone
# low half with UnicodeDecodeError.
_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)
_LONGEST_ESCAPE = 12  # bytes of a pair: a buffer's last ones are read again with the next
_REPLACEMENT = rb"\ufffd"  # as long as the escape it replaces: the answer is mended in place
_CHUNK_BYTES = 1024 * 1024

_CONTAINERS = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}
_OPENING = ("start_map", "start_array")
# How deep an event may nest: real ones go five levels down. orjson, which writes the records,
# refuses 255 levels, and an event it cannot write would stop the fetch on every run.
MAX_DEPTH = 200


class MalformedAnswer(Exception):
    """The API's answer is not the JSON document it should be."""


def mend_lone_surrogates(path: Path) -> int:
    """Rewrite each lone UTF-16 surrogate escape of the answer as U+FFFD's, in place; how many.

    PoD events and `ship` records read such halves as U+FFFD too (json_input). An answer without
    a surrogate escape is only read.
    """
    mended, start = 0, 0
    with path.open("r+b") as answer:
        while True:
            answer.seek(start)
            buffer = answer.read(_CHUNK_BYTES)
            final = len(buffer) < _CHUNK_BYTES
            cutoff = len(buffer) if final else len(buffer) - _LONGEST_ESCAPE
            resume = cutoff
            if SURROGATE_ESCAPE.search(buffer):
                for escape in _ESCAPES.finditer(buffer):
                    if escape.start() >= cutoff:
                        break
                    resume = max(resume, escape.end())
                    if escape[1]:
                        answer.seek(start + escape.start())
                        answer.write(_REPLACEMENT)
                        mended += 1
            elif _ends_inside_an_escape(buffer[:cutoff]):
                resume = cutoff - 1  # its last backslash opens an escape: read it with the next
            if final:
                return mended
            start += resume


def _ends_inside_an_escape(text: bytes) -> bool:
    """Whether `text` ends with an odd run of backslashes: the last one opens an escape."""
    return (len(text) - len(text.rstrip(b"\\"))) % 2 == 1


def read_answer(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open("rb") as source:
        if not source.read(1):
            return  # 204: no content, no events
        source.seek(0)
        try:
            yield from _events(ijson.parse(source, use_float=True))
        except ijson.JSONError as exc:
            raise MalformedAnswer(f"not valid JSON ({_first_line(exc)})") from exc
        except UnicodeDecodeError as exc:  # a surrogate written as UTF-8 bytes, which no JSON has
            raise MalformedAnswer(f"not valid UTF-8 ({exc.reason} at byte {exc.start} of a string)") from exc


def _first_line(exc: ijson.JSONError) -> str:
    """yajl's reason without the lines after it, which quote the answer around the fault."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _events(parser) -> Iterator[tuple[str, object]]:
    """The events of each known array, and the items of any other array, read from the answer's
    top level down.

    A key the API adds (an array of a new kind of event, a field) made the answer malformed: its
    window was skipped with every event in it, and so was every window after, until an upgrade.
    The items of an unknown array are yielded under its name for the caller to keep aside;
    `queryEndTime` and any other value are passed over, whatever they hold: windows are ours,
    and a change in a value not read must not cost the events beside it.
    """
    first = next(parser, None)
    if first is None or first[1] != "start_map":
        raise MalformedAnswer("the answer is not a JSON object")
    for _, event, key in parser:
        if event != "map_key":
            break  # the answer's closing brace
        if key in ARRAYS:
            yield from _array(parser, key)
        elif key == "queryEndTime":
            _pass_over(parser, _next(parser)[1])
        else:
            yield from _unknown(parser, key)
    for _ in parser:  # read on, for ijson to refuse anything after the closing brace
        raise MalformedAnswer("more after the answer's closing brace")


def _array(parser, name: str) -> Iterator[tuple[str, dict]]:
    _, event, value = _next(parser)
    if event != "start_array":
        raise MalformedAnswer(f"{name} is not an array but {_kind(event, value)}")
    while True:
        _, event, value = _next(parser)
        if event == "end_array":
            return
        if event != "start_map":
            raise MalformedAnswer(f"an event in {name} is not an object but {_kind(event, value)}")
        yield name, _build(parser, event, value)


def _unknown(parser, name: str) -> Iterator[tuple[str, object]]:
    """The items of an array no table takes, whatever they are; any other value passed over."""
    _, event, value = _next(parser)
    if event != "start_array":
        _pass_over(parser, event)
        return
    while True:
        _, event, value = _next(parser)
        if event == "end_array":
            return
        yield name, _build(parser, event, value) if event in _OPENING else value


def _pass_over(parser, first_event: str) -> None:
    """Reads past one value, however deep it nests, from its first event on."""
    depth = _CONTAINERS.get(first_event, 0)
    while depth:
        _, event, _ = _next(parser)
        depth += _CONTAINERS.get(event, 0)


def _next(parser) -> tuple[str, str, object]:
    item = next(parser, None)
    if item is None:  # ijson tells a cut answer first; this is the guard behind it
        raise MalformedAnswer("the answer ends early")
    return item


def _kind(event: str, value) -> str:
    """What a JSON value is, for a message: `an array`, `an object`, or the value itself."""
    if event in _OPENING:
        return "an array" if event == "start_array" else "an object"
    return repr(value)


def _build(parser, event: str, value) -> dict | list:
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for _, event, value in parser:
        builder.event(event, value)
        depth += _CONTAINERS.get(event, 0)
        if depth == 0:
            return builder.value
        if depth > MAX_DEPTH:
            raise MalformedAnswer(f"an event nests deeper than {MAX_DEPTH} levels")
    raise MalformedAnswer("the answer ends inside an event")
