"""Seeded TAP events in the SIEM API's wire shapes, for the simulator and the tests.

`generate(seed, start, end, rate_per_hour)` yields `TapEvent`s: one message to N recipients gives
N events that differ only in `recipient` and `id`; values vary as the real API's do (null,
string-or-array, "true" for true). `replay(path)` reads events from NDJSON instead.
"""

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.sinks.records import utc_time
from proofpoint_shipper.tap import ARRAYS

MAX_INDEXING_DELAY = timedelta(minutes=25)


@dataclass(frozen=True)
class TapEvent:
    array: str  # messagesDelivered, messagesBlocked, clicksPermitted or clicksBlocked
    created: datetime  # the later of the event's time and its threat's time: its window
    indexed: datetime  # when the API starts returning it
    wire: dict


def wire_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_wire_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def creation_time(array: str, wire: dict) -> datetime | None:
    """The later of the event's own time and its threat's time (the API files events by it);
    None for an event in which no time reads as one."""
    if array.startswith("clicks"):
        times = [wire.get("clickTime"), wire.get("threatTime")]
    else:
        threats = wire.get("threatsInfoMap")
        threats = threats if isinstance(threats, list) else []
        times = [wire.get("messageTime")] + [t.get("threatTime") for t in threats if isinstance(t, dict)]
    return max(filter(None, map(utc_time, times)), default=None)


def generate(seed: int, start: datetime, end: datetime, rate_per_hour: int = 60) -> Iterator[TapEvent]:
    rng = random.Random(seed)
    moment = start
    step = timedelta(seconds=3600 / max(rate_per_hour, 1))
    while True:
        moment += step * rng.uniform(0.2, 1.8)
        if moment >= end:
            return
        array = rng.choice(["messagesDelivered", "messagesBlocked", "clicksPermitted", "clicksBlocked"])
        if array.startswith("messages"):
            yield from _message_events(rng, array, moment)
        else:
            yield _event(rng, array, _click(rng, array, moment))


def _event(rng: random.Random, array: str, wire: dict) -> TapEvent:
    created = creation_time(array, wire)
    delay = timedelta(seconds=rng.uniform(0, MAX_INDEXING_DELAY.total_seconds()))
    return TapEvent(array, created, created + delay, wire)


def _message_events(rng: random.Random, array: str, moment: datetime) -> Iterator[TapEvent]:
    message = _message(rng, array, moment)
    recipients = [f"user{rng.randrange(10_000)}@example.org" for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    delay = timedelta(seconds=rng.uniform(0, MAX_INDEXING_DELAY.total_seconds()))
    for recipient in recipients:  # per-recipient events: same message, other recipient and id
        wire = {
            **message,
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "recipient": recipient if rng.random() < 0.2 else [recipient],
        }
        created = creation_time(array, wire)
        yield TapEvent(array, created, created + delay, wire)


def _threat(rng: random.Random, moment: datetime) -> dict:
    return {
        "threatID": f"{rng.getrandbits(256):064x}",
        "threatStatus": rng.choice(["active", "cleared"]),
        "classification": rng.choice(["phish", "malware", "spam", "impostor"]),
        "threatUrl": f"https://threatinsight.proofpoint.com/threat/{rng.getrandbits(64):016x}",
        "threatTime": wire_time(moment + timedelta(minutes=rng.choice([-30, 0, 5, 20]))),
        "threat": f"http://bad{rng.randrange(100)}.example/login",
        "campaignID": None if rng.random() < 0.7 else str(uuid.UUID(int=rng.getrandbits(128))),
        "threatType": rng.choice(["url", "attachment", "messageText"]),
    }


def _message(rng: random.Random, array: str, moment: datetime) -> dict:
    sender = f"sender{rng.randrange(500)}@example.com"
    parts = [
        {
            "disposition": rng.choice(["inline", "attached"]),
            "sha256": f"{rng.getrandbits(256):064x}",
            "md5": f"{rng.getrandbits(128):032x}",
            "filename": rng.choice(["text.txt", "text.html", "invoice.pdf"]),
            "sandboxStatus": rng.choice([None, "NOT_SUPPORTED", "clean", "threat"]),
            "oContentType": "text/plain",
            "contentType": rng.choice(["text/plain", "text/html"]),
        }
        for _ in range(rng.choice([1, 2, 3]))
    ]
    blocked = array == "messagesBlocked"
    return {
        "spamScore": rng.choice([0, 35, 100]),
        "phishScore": rng.choice([0, 100]),
        "threatsInfoMap": [_threat(rng, moment) for _ in range(rng.choice([1, 1, 2]))],
        "messageTime": wire_time(moment),
        "impostorScore": rng.choice([0.0, 0.5, 0]),
        "malwareScore": rng.choice([0, 100]),
        "cluster": "pharmtech_hosted",
        "subject": rng.choice(["Invoice", 'Re: "hi"', None, "NewFaxReceived-12/2/2021"]),
        "quarantineFolder": "Phish" if blocked else rng.choice(["Audit", None]),
        "quarantineRule": "inbound_phish" if blocked else rng.choice(["audit", None]),
        "policyRoutes": ["default_inbound"],
        "modulesRun": ["av", "zerohour", "spf", "spam", "urldefense"],
        "messageSize": rng.randrange(2000, 90000),
        "headerFrom": f'"Sender" <{sender}>',
        "headerReplyTo": None,
        "fromAddress": sender if rng.random() < 0.2 else [sender],
        "ccAddresses": [],
        "replyToAddress": [],
        "toAddresses": [],
        "xmailer": None,
        "messageParts": parts,
        "completelyRewritten": rng.choice([True, False, "true"]),
        "QID": f"r{rng.getrandbits(40):010x}",
        "GUID": f"{rng.getrandbits(128):032x}",
        "sender": sender,
        "senderIP": f"192.0.2.{rng.randrange(1, 255)}",
        "messageID": f"<{rng.getrandbits(64):x}@example.com>",
        **({"eventType": "messagesBlocked"} if blocked and rng.random() < 0.5 else {}),
    }


def _click(rng: random.Random, array: str, moment: datetime) -> dict:
    host = f"site{rng.randrange(100)}.example"
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "GUID": f"{rng.getrandbits(128):032x}",
        "messageID": f"<{rng.getrandbits(64):x}@example.com>",
        "url": f"https://{host}/path?q={rng.randrange(99)}",
        "classification": rng.choice(["phish", "malware", "spam"]),
        "clickTime": wire_time(moment),
        "clickIP": f"198.51.100.{rng.randrange(1, 255)}",
        "userAgent": "Mozilla/5.0",
        "recipient": f"user{rng.randrange(10_000)}@example.org",
        "sender": f"sender{rng.randrange(500)}@example.com",
        "senderIP": f"192.0.2.{rng.randrange(1, 255)}",
        "threatID": f"{rng.getrandbits(256):064x}",
        "threatStatus": rng.choice(["active", "cleared"]),
        "threatTime": wire_time(moment - timedelta(hours=rng.choice([0, 1, 30]))),
        "threatURL": f"https://threatinsight.proofpoint.com/threat/{rng.getrandbits(64):016x}",
        "campaignId": rng.choice(["", None, str(uuid.UUID(int=rng.getrandbits(128)))]),
    }


def replay(path: Path, indexing_delay: timedelta = timedelta(0)) -> Iterator[TapEvent]:
    """Events from NDJSON lines `{"array": ..., "event": {...}}` (or bare events with `eventType`).

    A line that is no such event stops the replay with a ConfigError naming it.
    """
    try:
        source = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                event = _replayed(orjson.loads(line), indexing_delay)
            except ValueError as exc:  # orjson's JSONDecodeError among them
                raise ConfigError(f"{path}:{number}: {exc}") from None
            yield event


def _replayed(item: object, indexing_delay: timedelta) -> TapEvent:
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    array = item.get("array") or item.get("eventType")
    if array not in ARRAYS:
        raise ValueError(f"'array' (or 'eventType') is {array!r}, not one of {', '.join(ARRAYS)}")
    wire = item.get("event", item)
    if not isinstance(wire, dict):
        raise ValueError("'event' is not a JSON object")
    created = creation_time(array, wire)
    if created is None:
        raise ValueError("the event has no readable time (messageTime, clickTime or threatTime)")
    return TapEvent(array, created, created + indexing_delay, wire)
