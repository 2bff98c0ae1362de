"""A deterministic PoD timeline: event i of a type always has the same time and content.

`Timeline(seed, origin, rate)` gives `event(kind, i)` and `index_at(moment)`, so a simulator can
serve live and archive sessions from any point. Shapes follow the PoD message and maillog events;
`ts` is written with microseconds and an offset spelt `-0600` or `-06:00`; maillog `data` is a
realistic sendmail line with its own time and host.
"""

import math
import random
from datetime import UTC, datetime, timedelta, timezone

ZONES = [timezone(timedelta(hours=-6)), timezone(timedelta(hours=-7)), UTC]


def spell_ts(moment: datetime, colon: bool) -> str:
    text = moment.isoformat(timespec="microseconds")
    return text if colon else text[:-3] + text[-2:]  # -06:00 → -0600


class Timeline:
    def __init__(self, seed: int, origin: datetime, rate: float):
        self.seed = seed
        self.origin = origin
        self.rate = rate  # events per second, per type

    def time_of(self, index: int) -> datetime:
        return self.origin + timedelta(seconds=index / self.rate)

    def index_at(self, moment: datetime) -> int:
        """The first event at or after `moment`."""
        return max(0, math.ceil((moment - self.origin).total_seconds() * self.rate))

    def event(self, kind: str, index: int) -> dict:
        rng = random.Random(f"{self.seed}-{kind}-{index}")
        moment = self.time_of(index).astimezone(rng.choice(ZONES))
        ts = spell_ts(moment, colon=rng.random() < 0.5)
        return _message(rng, index, ts) if kind == "message" else _maillog(rng, index, moment, ts)


def _message(rng: random.Random, index: int, ts: str) -> dict:
    sender, rcpt = f"sender{rng.randrange(300)}@example.com", f"user{rng.randrange(5000)}@example.org"
    qid = f"{rng.getrandbits(40):010x}"[:10] + f"{index % 10000:04d}"
    return {
        "guid": f"{rng.getrandbits(96):024x}",
        "ts": ts,
        "connection": {
            "ip": f"203.0.113.{rng.randrange(1, 255)}",
            "country": rng.choice(["us", "de", "**"]),
            "helo": "mail.example.com",
            "host": "mail.example.com",
            "protocol": "smtp:smtp",
            "resolveStatus": "ok",
            "sid": f"{rng.getrandbits(40):010x}",
            "tls": {"inbound": {"cipher": "ECDHE-RSA-AES256-GCM-SHA384", "version": "TLSv1.2"}},
        },
        "envelope": {"from": sender, "rcpts": [rcpt]},
        "filter": {
            "actions": [
                {
                    "action": rng.choice(["accept", "quarantine"]),
                    "isFinal": True,
                    "module": "spam",
                    "rule": rng.choice(["notspam", "spamsafe", "phish"]),
                }
            ],
            "disposition": rng.choice(["continue", "discard", "reject"]),
            "qid": qid,
            "routeDirection": "inbound",
            "routes": ["allow_relay", "firewallsafe"],
            "modules": {
                "spam": {
                    "scores": {
                        "overall": rng.randrange(100),
                        "engine": rng.randrange(100),
                        "classifiers": {"phish": 0, "malware": 0, "spam": rng.randrange(100)},
                    },
                    "version": {"engine": "8.19.0", "definitions": "2022-02-20_03"},
                },
                "dmarc": {
                    "authResults": [
                        {
                            "emailIdentities": {"header.from": "example.com"},
                            "method": "dmarc",
                            "result": "pass",
                        }
                    ]
                },
                "av": {"virusNames": []},
                "zerohour": {"score": "neutral"},
            },
        },
        "msg": {
            "header": {
                "subject": [f"Invoice {index}"],
                "from": [f"<{sender}>"],
                "message-id": [f"<{rng.getrandbits(48):x}@example.com>"],
            },
            "normalizedHeader": {"subject": [f"Invoice {index}"]},
            "parsedAddresses": {"from": [sender], "to": [rcpt]},
            "sizeBytes": rng.randrange(2000, 90000),
        },
        "msgParts": [
            {
                "contentType": "text/plain",
                "sizeBytes": rng.randrange(100, 5000),
                "md5": f"{rng.getrandbits(128):032x}",
                "detectedName": "text.txt",
                "labeledName": "text.txt",
            }
        ],
        "metadata": {
            "origin": {"data": {"agent": "m0000001.ppops.net", "cid": "hosted_cid", "version": "8.19.0.1234"}}
        },
        "pps": {"agent": "m0000001.ppops.net", "cid": "hosted_cid", "version": "8.19.0.1234"},
    }


def _maillog(rng: random.Random, index: int, moment: datetime, ts: str) -> dict:
    qid = f"2{rng.getrandbits(40):010X}"[:9] + f"{index % 100000:05d}"
    host, pid = "m0000001.ppops.net", rng.randrange(1000, 40000)
    rcpt, relay = f"user{rng.randrange(5000)}@example.org", f"mx{rng.randrange(9)}.example.org."
    stamp = moment.isoformat(timespec="microseconds")
    delay = f"00:00:{rng.randrange(10):02d}"
    if rng.random() < 0.7:
        data = (
            f"{stamp} {host} sendmail[{pid}]: {qid}: to=<{rcpt}>, delay={delay}, xdelay={delay}, "
            f"mailer=esmtp, pri={rng.randrange(30000, 200000)}, "
            f"relay={relay} [198.51.100.{rng.randrange(1, 255)}], "
            f"dsn=2.0.0, stat=Sent (ok:  Message {rng.randrange(10**7)} accepted)"
        )
        sm = {
            "qid": qid,
            "to": [f"<{rcpt}>"],
            "delay": delay,
            "xdelay": delay,
            "mailer": "esmtp",
            "relay": relay,
            "dsn": "2.0.0",
            "stat": "Sent",
            "pri": rng.choice([30318, "30318"]),
        }
    else:
        sender = f"sender{rng.randrange(300)}@example.com"
        data = (
            f"{stamp} {host} sendmail[{pid}]: {qid}: from=<{sender}>, size={rng.randrange(2000, 90000)}, "
            f"class=0, nrcpts=1, msgid=<{rng.getrandbits(48):x}@example.com>, proto=ESMTP, daemon=MTA, "
            f"relay=mail.example.com [203.0.113.{rng.randrange(1, 255)}]"
        )
        sm = {
            "qid": qid,
            "from": f"<{sender}>",
            "class": "0",
            "nrcpts": "1",
            "proto": "ESMTP",
            "daemon": "MTA",
        }
    return {
        "id": f"{rng.getrandbits(64):016x}",
        "ts": ts,
        "data": data,
        "pps": {"agent": host, "cid": "hosted_cid"},
        "sm": sm,
        "tls": {"cipher": "ECDHE-RSA-AES256-GCM-SHA384", "verify": "NONE", "version": "TLSv1.2"},
    }
