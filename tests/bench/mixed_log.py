"""A seeded, realistic mix of gateway lines for benchmarks, built from the golden lines.

Bodies come from every clean golden filter and sendmail line. A gateway writes the header form
its syslog is configured for, so headers are drawn as a site would see them: 75 % RFC 3339 with
microseconds, 20 % BSD, 5 % the other forms (<PRI>, RFC 5424, on-box, header-less). Of all lines,
4 % are unrelated programs and 1 % bad or truncated lines. Ids and times vary per line.
"""

import random
from datetime import datetime, timedelta
from pathlib import Path

from tests.conftest import GOLDEN, golden_parser, read_lines

CLEAN = [
    "gateway_filter/seed",
    "gateway_filter/modules",
    "gateway_filter/values",
    "gateway_sendmail/seed",
    "gateway_sendmail/programs",
    "gateway_sendmail/special",
]
OTHER = ["other/unrelated"]
BAD = ["gateway_filter/bad", "gateway_sendmail/bad", "other/broken"]


def _lines(cases: list[str]) -> list[str]:
    return [line for case in cases for line in read_lines(GOLDEN / f"{case}.log") if line]


def _bodies() -> list[tuple[str, str, str | None]]:
    """(program, pid, body) of every clean golden line."""
    parser, out = golden_parser(), []
    for line in _lines(CLEAN):
        record, body = parser.parse_with_body(line)
        if "error" not in record and body:
            out.append((record["program"], record.get("pid") or "4242", body))
    return out


def _header(rng: random.Random, moment: datetime, program: str, pid: str) -> str:
    roll = rng.random()
    if roll < 0.75:
        return f"{moment.isoformat(timespec='microseconds')} mx1 {program}[{pid}]: "
    if roll < 0.95:
        return f"{moment:%b} {moment.day:>2} {moment:%H:%M:%S} mx1 {program}[{pid}]: "
    return rng.choice(
        [
            f"<22>{moment.isoformat(timespec='microseconds')} mx1 {program}[{pid}]: ",
            f"<22>1 {moment.isoformat(timespec='microseconds')} mx1 {program} {pid} - - ",
            f"[{moment:%Y-%m-%d %H:%M:%S.%f %z}] " if program.startswith("filter") else f"{program}[{pid}]: ",
            f"{program}[{pid}]: ",
        ]
    )


def mixed_lines(count: int, seed: int = 7):
    """Yield `count` lines; the same seed gives the same lines."""
    rng = random.Random(seed)
    bodies, other, bad = _bodies(), _lines(OTHER), _lines(BAD)
    moment = datetime.fromisoformat("2022-02-20T08:00:00.000000-06:00")
    for _ in range(count):
        moment += timedelta(microseconds=rng.randrange(1, 20_000))
        roll = rng.random()
        if roll < 0.95:
            program, pid, body = rng.choice(bodies)
            line = _header(rng, moment, program, pid) + body
        else:
            line = rng.choice(other if roll < 0.99 else bad)
        session = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=10))
        yield line.replace("3ebnb6gs7y", session).replace("21KEZ0kl02", f"21KEZ{rng.randrange(10**5):05d}")


def write_mixed_log(path: Path, count: int, seed: int = 7) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for line in mixed_lines(count, seed):
            out.write(line + "\n")
    return path
