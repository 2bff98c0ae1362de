"""PoD events to data-lake records: validation, the de-duplication key, maillog enrichment.

`check_frame` names what is wrong with a frame (binary, oversized, not JSON, not an object, no
`guid`/`id`); `event_key` hashes the whole canonical event (the API resends identical events, and
`guid`/`id` alone are reused across different events); `to_record` adds `eventType` and, for
maillog, the `data` line parsed by the gateway's sendmail grammar under `data_parsed`.
"""

import hashlib
from datetime import UTC, datetime

import orjson

from proofpoint_shipper import json_input
from proofpoint_shipper.gateway.parser import GatewayParser
from proofpoint_shipper.pod import TYPES

ID_KEY = {"message": "guid", "maillog": "id"}
_DATA_PARSER = GatewayParser(zone=UTC)


class BadFrame(Exception):
    """A frame that is not a PoD event; the message is the reason written to the dead letters."""


def check_frame(kind: str, frame: str | bytes, max_bytes: int) -> tuple[dict, bool]:
    """The event, and whether a lone UTF-16 surrogate in it was read as U+FFFD (json_input)."""
    if isinstance(frame, bytes):
        raise BadFrame("binary frame")
    if len(frame) > max_bytes:
        raise BadFrame(f"frame of {len(frame)} bytes is over the {max_bytes}-byte limit")
    try:
        event, replaced = json_input.loads(frame)
    except ValueError as exc:
        raise BadFrame(f"not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise BadFrame("not a JSON object")
    if not event.get(ID_KEY[kind]):
        raise BadFrame(f"{kind} event without {ID_KEY[kind]}")
    return event, replaced


def event_key(event: dict) -> str:
    """The de-duplication key; BadFrame for an event that nests too deep to be written again
    (orjson reads 1024 levels but writes 254)."""
    try:
        canonical = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise BadFrame(f"an event that cannot be written as JSON: {exc}") from exc
    return hashlib.sha256(canonical).hexdigest()[:32]


def event_time(event: dict) -> datetime | None:
    """`ts` in either offset spelling (-0600 or -06:00), as UTC."""
    try:
        return datetime.fromisoformat(str(event.get("ts", ""))).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved to UTC
        return None


def to_record(kind: str, event: dict) -> dict:
    record = {**event, "eventType": TYPES[kind][1]}
    if kind == "maillog" and isinstance(event.get("data"), str):
        record["data_parsed"] = _DATA_PARSER.parse(event["data"])
    return record
