"""Timestamp normalisation to the text tables' form, `%Y-%m-%dT%H:%M:%S.%f%z` with a colon offset.

`normalize_iso` handles RFC 3339 and the on-box form; `BsdClock` infers year and zone for BSD
stamps, and its `ZoneCheck` tells when, read live, they look written in another zone;
`resolve_zone` turns the --timezone setting into a tzinfo.
"""

import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proofpoint_shipper.errors import ConfigError, ParseError

MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
log = logging.getLogger("proofpoint_shipper")
_BSD_CACHE_LIMIT = 4096
FUTURE_TOLERANCE = timedelta(days=1)  # how far ahead of us a gateway clock may run


def format_time(moment: datetime) -> str:
    """2022-02-20T08:35:00.157994-06:00: microseconds always, offset with a colon."""
    return moment.isoformat(timespec="microseconds")


def normalize_iso(date: str, clock: str, fraction: str, offset: str) -> str:
    """Join the parts of an RFC 3339 or on-box stamp into the normal form, checking ranges."""
    micros = (fraction[1:] + "000000")[:6]
    if offset in ("Z", "z"):
        offset = "+00:00"
    elif len(offset) == 5:
        offset = f"{offset[:3]}:{offset[3:]}"
    return _checked(f"{date}T{clock}.{micros}{offset}")


def split_rfc3339(stamp: str) -> str:
    """2022-02-20T08:35:00.157994-06:00 / ...Z / no fraction → normal form."""
    if len(stamp) == 32 and stamp[19] == "." and stamp[29] == ":" and stamp[10] == "T":
        return _checked(stamp)  # already in the normal form: the common case
    date, clock, rest = stamp[:10], stamp[11:19], stamp[19:]
    fraction, offset = _split_fraction(rest)
    return normalize_iso(date, clock, fraction, offset)


def _checked(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError as exc:
        raise ParseError(f"timestamp out of range: {exc}") from exc
    return text


def split_onbox(stamp: str) -> str:
    """[2015-06-17 16:51:00.354586 -0700] → normal form."""
    inner = stamp[1:-1]
    date, clock, rest = inner[:10], inner[11:19], inner[19:]
    fraction, _, offset = rest.partition(" ")
    return normalize_iso(date, clock, fraction, offset)


def _split_fraction(rest: str) -> tuple[str, str]:
    """ ".157994-06:00" → (".157994", "-06:00"); "Z" → ("", "Z")."""
    for index, char in enumerate(rest):
        if char in "+-Zz":
            return rest[:index], rest[index:]
    return rest, ""


class BsdClock:
    """Turns `Feb  3 08:35:00` into an aware time: zone from the setting, year from the reference.

    The year is the latest one that does not put the line more than a day after the reference
    time: a December line read on 2 January belongs to the previous year, and a 1 January line
    read a minute before midnight on 31 December (a gateway clock running ahead) to the next.

    When daylight saving time ends, the clock reads one hour twice and a stamp in it names two
    moments. The lines before it tell which: once that hour was seen, a stamp that would put its
    line more than LATE_TOLERANCE before the latest moment seen in it belongs to the second pass.
    With nothing seen before, it is the first pass. Such stamps are not cached.
    """

    LATE_TOLERANCE = timedelta(minutes=10)  # how far a line may come after later ones

    def __init__(self, zone: tzinfo, now: Callable[[], datetime], *, live: bool = False):
        """`live`: `now` is the clock, and lines arrive as they are written (not a backfill with a
        reference time): BSD times that keep a whole zone's distance from it are then told."""
        self.zone = zone
        self.now = now
        self._cache: dict[str, str] = {}
        self._latest_repeated: datetime | None = None  # the latest moment (UTC) read in a repeated hour
        self._zone_check = ZoneCheck(zone) if live else None

    def normalize(self, stamp: str) -> str:
        """`Feb  3 08:35:00`, or with a fraction of a second (`08:35:00.157994`), in the normal
        form. Worked out once per whole second; a fraction written takes the microseconds' place."""
        whole, dot, fraction = stamp.partition(".")
        normal = self._normalize_whole(whole)
        if dot:
            normal = f"{normal[:20]}{(fraction + '000000')[:6]}{normal[26:]}"
        return normal

    def _normalize_whole(self, stamp: str) -> str:
        cached = self._cache.get(stamp)
        if cached is None:
            moment, now = self._resolve(stamp)
            if self._zone_check is not None:
                self._zone_check.see(stamp, moment, now)
            if moment.replace(fold=1).utcoffset() != moment.utcoffset():
                return format_time(self._in_repeated_hour(moment))
            if len(self._cache) >= _BSD_CACHE_LIMIT:
                self._cache.clear()  # lines arrive in time order: old entries are not needed
            cached = self._cache[stamp] = format_time(moment)
        return cached

    def _in_repeated_hour(self, first_pass: datetime) -> datetime:
        """The first or the second pass of a wall time the clock showed twice (fold 0 or 1).

        Compared in UTC: within one zone Python compares wall times, and both passes are equal.
        """
        latest = self._latest_repeated
        chosen = first_pass
        if latest is not None and first_pass.astimezone(UTC) < latest - self.LATE_TOLERANCE:
            second_pass = first_pass.replace(fold=1)
            if second_pass.astimezone(UTC) >= latest - self.LATE_TOLERANCE:
                chosen = second_pass
        moment = chosen.astimezone(UTC)
        if latest is None or moment > latest:
            self._latest_repeated = moment
        return chosen

    def _resolve(self, stamp: str) -> tuple[datetime, datetime]:
        """The moment a stamp names, and the reference time it was read against."""
        month_name, day, clock = stamp.split()
        month = MONTHS[month_name]
        hour, minute, second = (int(part) for part in clock.split(":"))
        now = self.now().astimezone(self.zone)
        candidates = []
        for year in (now.year - 1, now.year, now.year + 1):
            try:
                candidates.append(datetime(year, month, int(day), hour, minute, second, tzinfo=self.zone))
            except ValueError:
                continue  # 29 February outside a leap year, 31 April, second 60
        if not candidates:
            raise ParseError(f"no such date: {stamp!r}")
        latest_allowed = now + FUTURE_TOLERANCE
        past = [moment for moment in candidates if moment <= latest_allowed]
        return (max(past) if past else min(candidates)), now


class ZoneCheck:
    """Tells, once, when BSD times read in the configured zone keep a whole zone's distance from
    the clock: the gateway writes in another zone, and every time written is off by that much.

    Read live, a line's time is this host's time give or take a gateway clock's drift and a
    moment in transit. When SAMPLES distinct stamps in a row all sit the same number of half
    hours (one hour at least) from the clock, within SLACK, the zone is most likely wrong. A
    backlog of exactly that age looks the same, which the warning says.
    """

    SAMPLES = 50
    SLACK = timedelta(minutes=2)
    HALF_HOUR = 1800.0

    def __init__(self, zone: tzinfo):
        self.zone = zone
        self._halves: int | None = None
        self._seen = 0
        self.done = False

    def see(self, stamp: str, moment: datetime, now: datetime) -> None:
        if self.done:
            return
        gap = (now - moment).total_seconds()
        halves = round(gap / self.HALF_HOUR)
        off_the_grid = abs(gap - halves * self.HALF_HOUR) > self.SLACK.total_seconds()
        if abs(halves) < 2 or off_the_grid or self._halves not in (None, halves):
            self.done = True  # a line near the clock, or off the grid: the zone fits
            return
        self._halves, self._seen = halves, self._seen + 1
        if self._seen == self.SAMPLES:
            self.done = True
            log.warning(self._warning(stamp, halves / 2))

    def _warning(self, stamp: str, hours: float) -> str:
        distance = f"{abs(hours):g} h {'behind' if hours > 0 else 'ahead of'}"
        return (
            f"BSD times read in {zone_name(self.zone)} run {distance} this host's clock, "
            f"{self.SAMPLES} stamps in a row (the last {stamp!r}): if the gateway writes its times "
            f"in another zone, give --timezone that zone, as every time written is {abs(hours):g} h off; "
            "if the lines are that old (a backlog), nothing is wrong"
        )


def zone_name(zone: tzinfo) -> str:
    """How a message names a zone: its IANA name, or what it is."""
    key = getattr(zone, "key", None)
    if key == "localtime":
        return "this host's zone (/etc/localtime)"
    if isinstance(zone, LibcZone):
        return f"this host's zone (TZ={os.environ.get('TZ', '')})"
    return key or str(zone)


def resolve_zone(name: str | None) -> tzinfo:
    """`local` (default), `UTC`, an IANA name (`America/Chicago`) or a fixed offset (`-06:00`)."""
    if name is None or name == "local":
        return local_zone()
    if name.upper() in ("UTC", "Z"):
        return UTC
    if name[:1] in "+-" and len(name) in (5, 6):
        return _fixed_offset(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name, UTC or ±HH:MM") from exc


def _fixed_offset(text: str) -> tzinfo:
    digits = text[1:].replace(":", "")
    if len(digits) != 4 or not digits.isdigit() or int(digits[:2]) > 23 or int(digits[2:]) > 59:
        raise ConfigError(f"bad UTC offset {text!r}: expected ±HH:MM")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(-delta if text[0] == "-" else delta)


# A POSIX TZ rule: a name (3 letters or more, or <quoted>) and its offset, maybe a DST part.
_NAME, _OFFSET = r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)", r"[+-]?\d{1,2}(?::\d{1,2}){0,2}"
_POSIX_RULE = re.compile(f"{_NAME}{_OFFSET}(?:{_NAME}(?:{_OFFSET})?(?:,.+)?)?\\Z")


def local_zone() -> tzinfo:
    """The machine's zone with its DST rules: $TZ, else /etc/localtime, else today's offset.

    A $TZ that names no zone file (a POSIX rule such as "UTC+3" or "<+0530>-5:30", a path) is
    read as the C library reads it, as syslog did when it wrote the line: taking /etc/localtime
    instead gave those lines another offset, in silence. A $TZ that is neither (a zone name with
    a typo, "CST" with no offset) is a ConfigError: the C library would take it for UTC, again
    in silence, and every BSD time would be hours off.
    """
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            if not (_POSIX_RULE.match(name) or (name.startswith("/") and Path(name).is_file())):
                raise ConfigError(
                    f"TZ is {name!r}, which is no time zone this machine knows and no POSIX rule "
                    "(the C library reads it as UTC): set TZ to a zone such as America/Chicago, "
                    "or give --timezone"
                ) from None
            return LibcZone()
    localtime = Path("/etc/localtime")
    if localtime.exists():
        with localtime.open("rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    return datetime.now().astimezone().tzinfo or UTC


class LibcZone(tzinfo):
    """The local zone as the C library has it from $TZ (`time.localtime`), DST rules included."""

    def utcoffset(self, moment: datetime | None) -> timedelta:
        return timedelta(seconds=_local(moment).tm_gmtoff)

    def dst(self, moment: datetime | None) -> None:
        return None  # the offset above already holds it

    def tzname(self, moment: datetime | None) -> str:
        return _local(moment).tm_zone

    def fromutc(self, moment: datetime) -> datetime:
        seconds = (moment.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
        return moment + timedelta(seconds=time.localtime(seconds).tm_gmtoff)


def _local(moment: datetime | None) -> time.struct_time:
    """The C library's local time at a wall time of its zone (now, for None)."""
    if moment is None:
        return time.localtime()
    wall = (*moment.replace(tzinfo=None).timetuple()[:8], -1)  # -1: the C library tells DST
    return time.localtime(time.mktime(wall))
