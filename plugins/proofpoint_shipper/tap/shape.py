"""From API events to data-lake records: canonical hashing and the click shape.

`event_key` hashes the whole canonical event (keys sorted, `messageParts` sorted: their order
changes between answers), so per-recipient events stay distinct. `to_record` keeps messages as
the API sends them and writes clicks in the data lake's snake_case form; both gain `eventType`.
"""

import hashlib
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson

CLICK_FIELDS = (  # data-lake name ← wire name, in the data lake's order
    ("url", "url"),
    ("classification", "classification"),
    ("click_time", "clickTime"),
    ("threat_time", "threatTime"),
    ("user_agent", "userAgent"),
    ("campaign_id", "campaignId"),
    ("id", "id"),
    ("click_ip", "clickIP"),
    ("sender", "sender"),
    ("recipient", "recipient"),
    ("sender_ip", "senderIP"),
    ("guid", "GUID"),
    ("threat_id", "threatID"),
    ("threat_url", "threatURL"),
    ("threat_status", "threatStatus"),
    ("message_id", "messageID"),
)
_WIRE_CLICK_NAMES = {wire for _, wire in CLICK_FIELDS}


def event_key(array: str, event: dict) -> str:
    canonical = dict(event)
    if isinstance(canonical.get("messageParts"), list):
        canonical["messageParts"] = sorted(canonical["messageParts"], key=_sort_key)
    data = orjson.dumps([array, canonical], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


def _sort_key(item: object) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)


def to_record(array: str, event: dict) -> dict:
    if array.startswith("messages"):
        return event if event.get("eventType") == array else {**event, "eventType": array}
    return _click_record(array, event)


def _click_record(array: str, event: dict) -> dict:
    record = {}
    for name, wire in CLICK_FIELDS:
        value = event.get(wire)
        record[name] = _click_time(value) if name in ("click_time", "threat_time") else value
    record["domain"] = domain_of(event.get("url"))
    for wire, value in event.items():  # anything the API adds later is kept, not dropped
        if wire not in _WIRE_CLICK_NAMES:
            record.setdefault(wire, value)
    record["eventType"] = array
    return record


def _click_time(value: object) -> object:
    """2021-12-06T08:43:36.000Z → 2021-12-06T08:43:36+00:00, the data lake's click time form."""
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved to UTC
        return value
    return moment.isoformat(timespec="seconds")


def domain_of(url: object) -> object:
    """The host of a clicked URL as written (userinfo and port removed; a bare host is kept)."""
    if not isinstance(url, str):
        return None
    try:
        netloc = urlsplit(url if "//" in url else "//" + url).netloc
    except ValueError:  # "http://[evil" and the like: a clicked URL is anyone's text
        return None
    host = netloc.rsplit("@", 1)[-1]
    host = host[1 : host.find("]")] if host.startswith("[") else host.split(":")[0]
    return host or None
