"""Reads a SIEM API answer event by event (ijson), so memory does not grow with the window.

`read_answer(path)` yields (array name, event) pairs and raises MalformedAnswer, naming what is
wrong, for invalid or truncated JSON, an event that is not an object or nests too deep, or an
unknown array.
"""

from collections.abc import Iterator
from pathlib import Path

import ijson

from proofpoint_shipper.tap import ARRAYS

_CONTAINERS = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}
# How deep an event may nest: real ones go five levels down. orjson, which writes the records,
# refuses 255 levels, and an event it cannot write would stop the fetch on every run.
MAX_DEPTH = 200


class MalformedAnswer(Exception):
    """The API's answer is not the JSON document it should be."""


def read_answer(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open("rb") as source:
        if not source.read(1):
            return  # 204: no content, no events
        source.seek(0)
        try:
            yield from _events(ijson.parse(source, use_float=True))
        except ijson.JSONError as exc:
            raise MalformedAnswer(f"not valid JSON ({exc})") from exc


def _events(parser) -> Iterator[tuple[str, dict]]:
    first = next(parser, None)
    if first is None or first[1] != "start_map":
        raise MalformedAnswer("the answer is not a JSON object")
    for prefix, event, value in parser:
        if prefix == "" and event == "map_key" and value != "queryEndTime" and value not in ARRAYS:
            raise MalformedAnswer(f"unknown array {value!r}")
        if "." not in prefix or event == "end_array":
            continue
        array = prefix.split(".", 1)[0]
        if event != "start_map":
            raise MalformedAnswer(f"an event in {array} is not an object: {value!r}")
        yield array, _build(parser, event, value)


def _build(parser, event: str, value) -> dict:
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
