"""JSON written by others, read whole even where a string holds half a UTF-16 surrogate pair.

JSON text may escape a lone surrogate (`"\\ud83d"`: an emoji cut in half by a length limit, as
JavaScript's JSON.stringify writes it). orjson refuses the whole text for it, and could not write
such a string again either. `loads(text)` gives the value and whether a lone surrogate was read
as U+FFFD, the one change made: the rest of the event is kept as it came.
"""

import json
import re

import orjson

REPLACED = "a lone UTF-16 surrogate escape, read as U+FFFD"
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # an escaped UTF-16 surrogate, alone or paired


def loads(text: bytes | str) -> tuple[object, bool]:
    """The JSON value of `text`, and whether a lone surrogate in it was replaced with U+FFFD.

    ValueError (orjson.JSONDecodeError) for text that is not JSON, or that nests too deep to read.
    """
    try:
        return orjson.loads(text), False
    except orjson.JSONDecodeError as refused:
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        if not SURROGATE_ESCAPE.search(raw):
            raise
        try:
            return _replaced(json.loads(text, parse_constant=_refuse_constant)), True
        except (ValueError, RecursionError):
            raise refused from None  # not JSON after all, or too deep: orjson's words stand


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")  # NaN and Infinity: orjson refuses them too


def _replaced(value):
    """`value` with every lone surrogate in its strings (keys too) as U+FFFD; pairs stay whole."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replaced(item) for item in value]
    if isinstance(value, dict):
        return {_replaced(key): _replaced(item) for key, item in value.items()}
    return value
