# ruff: noqa: E501 (log lines are data, and long)
"""Realistic gateway traffic for tests and the bench: whole sessions, interleaved in time.

`session_lines(count, seed)` gives the raw lines of `count` SMTP sessions spread over three
hosts: connect, resolve, envelope, attachment, msg, spam, av, dmarc, spf, dispose, send and
disconnect filter lines, and the sendmail lines of both queue ids (some deliveries deferred
first). Lines are ordered by time, so sessions overlap as they do on a busy gateway.
"""

import random
from datetime import UTC, datetime, timedelta

START = datetime(2022, 2, 20, 14, 0, tzinfo=UTC)
HOSTS = ("mx1", "mx2", "mx3")


def session_lines(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    timed: list[tuple[datetime, int, str]] = []
    for number in range(count):
        start = START + timedelta(milliseconds=5 * number)
        for offset, line in _session(rng, number, rng.choice(HOSTS)):
            timed.append((start + timedelta(milliseconds=offset), len(timed), line))
    timed.sort()
    return [f"{moment.isoformat(timespec='microseconds')} {line}" for moment, _, line in timed]


def _session(rng: random.Random, number: int, host: str) -> list[tuple[int, str]]:
    sid, qid_in, qid_out = f"s{number:08x}", f"21Q{number:09d}", f"21R{number:09d}"
    rcpts = [f"user{rng.randrange(500)}@example.com" for _ in range(rng.randint(1, 3))]
    action = "discard" if rng.random() < 0.1 else "accept"
    f = f"{host} filter_instance1[2107]: rprt s={sid}"
    mx = f"{f} m=1 x={sid}-1"
    lines = [
        f"{f} mod=session cmd=connect ip=203.0.113.{number % 250} country=us prot=smtp:esmtps",
        f"{f} mod=session cmd=resolve host=mail{number % 97}.example.org resolve=ok",
        f"{mx} mod=mail cmd=env_from value=sender{number}@example.org qid={qid_in} host=mail.example.org",
        *(
            f"{mx} mod=mail cmd=env_rcpt r={n} value={rcpt} verified= routes=default_inbound"
            for n, rcpt in enumerate(rcpts, 1)
        ),
        f'{mx} mod=mail cmd=attachment id=1 file="doc {number}.pdf" mime=application/pdf type=pdf omime=application/pdf oext=pdf corrupted=0 protected=0 size=4821 virtual=0 a=0',
        f'{mx} mod=mail cmd=msg module= rule= action=continue attachments=1 rcpts={len(rcpts)} routes=allow_relay,firewallsafe, size=5231 guid=G{number:012d} hdr_mid=<m{number}@example.org> qid={qid_in} subject="Report {number}" duration=0.01',
        f"{mx} mod=spam cmd=run rule=notspam policy=default score={number % 100} spamscore={number % 100} phishscore=0 bulkscore=0 engine=8.12.0",
        f"{mx} mod=av cmd=run name= cleaned=no vendor=Proofpoint",
        f"{mx} mod=dmarc cmd=run header.from=example.org policy=none",
        f"{mx} mod=spf cmd=run result=pass",
        f"{mx} mod=session cmd=dispose action={action}",
    ]
    timed = [(10 * n, line) for n, line in enumerate(lines)]
    end = 10 * len(lines)
    timed.append(
        (
            end,
            f"{host} sendmail[2165]: {qid_in}: from=<sender{number}@example.org>, size=5231, nrcpts={len(rcpts)}, proto=ESMTP, relay=mail.example.org [203.0.113.7]",
        )
    )
    if action == "accept":
        timed.append((end + 10, f"{mx} cmd=send profile=mail qid={qid_out} rcpts={','.join(rcpts)}"))
        for rcpt in rcpts:
            if rng.random() < 0.1:
                timed.append(
                    (
                        end + 30,
                        f"{host} sendmail[2166]: {qid_out}: to=<{rcpt}>, delay=00:00:01, mailer=esmtp, relay=mx.example.com. [192.0.2.25], dsn=4.0.0, stat=Deferred: Connection refused",
                    )
                )
            timed.append(
                (
                    end + 60,
                    f"{host} sendmail[2166]: {qid_out}: to=<{rcpt}>, delay=00:00:02, mailer=esmtp, relay=mx.example.com. [192.0.2.25], dsn=2.0.0, stat=Sent (ok)",
                )
            )
    timed.append((end + 20, f"{f} mod=session cmd=disconnect helo=mail.example.org msgs=1"))
    return timed
