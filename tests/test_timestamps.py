"""Timestamp normalisation: every header form to %Y-%m-%dT%H:%M:%S.%f%z, BSD years and zones."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from proofpoint_shipper.errors import ConfigError, ParseError
from proofpoint_shipper.gateway.timestamps import BsdClock, resolve_zone, split_onbox, split_rfc3339
from tests.conftest import one_error_line, run_ppship

CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize(
    ("stamp", "normal"),
    [
        ("2022-02-20T08:35:00.157994-06:00", "2022-02-20T08:35:00.157994-06:00"),
        ("2022-02-20T14:35:00Z", "2022-02-20T14:35:00.000000+00:00"),
        ("2022-02-20t14:35:00z", "2022-02-20T14:35:00.000000+00:00"),
        ("2022-02-20T08:35:00-0600", "2022-02-20T08:35:00.000000-06:00"),
        ("2022-02-20T08:35:00.1+05:30", "2022-02-20T08:35:00.100000+05:30"),
        ("2022-02-20T08:35:00.123456789Z", "2022-02-20T08:35:00.123456+00:00"),
    ],
)
def test_rfc3339_forms(stamp, normal):
    assert split_rfc3339(stamp) == normal
    assert datetime.strptime(normal, "%Y-%m-%dT%H:%M:%S.%f%z")  # the tables' declared format


def test_onbox_form():
    assert split_onbox("[2015-06-17 16:51:00.354586 -0700]") == "2015-06-17T16:51:00.354586-07:00"


@pytest.mark.parametrize("stamp", ["2022-13-20T08:35:00Z", "2022-02-30T08:35:00Z", "2022-02-20T25:00:00Z"])
def test_impossible_times_are_parse_errors(stamp):
    with pytest.raises(ParseError):
        split_rfc3339(stamp)


def clock_at(moment: datetime, zone=CHICAGO) -> BsdClock:
    return BsdClock(zone, lambda: moment)


def test_bsd_takes_year_and_zone_from_the_reference():
    clock = clock_at(datetime(2022, 3, 1, 12, tzinfo=CHICAGO))
    assert clock.normalize("Feb  3 08:35:00") == "2022-02-03T08:35:00.000000-06:00"
    assert clock.normalize("Feb 13 08:35:00") == "2022-02-13T08:35:00.000000-06:00"


def test_a_bsd_fraction_of_a_second_is_kept_to_the_microsecond():
    """As `journalctl -o short-precise` writes it: one second's stamps keep their own fractions."""
    clock = clock_at(datetime(2022, 3, 1, 12, tzinfo=CHICAGO))
    stamps = ["Feb  3 08:35:00.157994", "Feb  3 08:35:00.5", "Feb  3 08:35:00", "Feb  3 08:35:00.1234567"]
    assert [clock.normalize(stamp) for stamp in stamps] == [
        "2022-02-03T08:35:00.157994-06:00",
        "2022-02-03T08:35:00.500000-06:00",
        "2022-02-03T08:35:00.000000-06:00",
        "2022-02-03T08:35:00.123456-06:00",  # cut to microseconds, as RFC 3339 fractions are
    ]


def test_december_line_read_on_2_january_is_last_year():
    clock = clock_at(datetime(2023, 1, 2, 9, tzinfo=CHICAGO))
    assert clock.normalize("Dec 31 23:59:59") == "2022-12-31T23:59:59.000000-06:00"


def test_a_line_from_a_clock_running_ahead_over_new_year_is_next_year():
    clock = clock_at(datetime(2022, 12, 31, 23, 59, tzinfo=CHICAGO))
    assert clock.normalize("Jan  1 00:00:30") == "2023-01-01T00:00:30.000000-06:00"


def test_a_date_later_this_year_is_last_year():
    clock = clock_at(datetime(2026, 11, 29, tzinfo=UTC), UTC)
    assert clock.normalize("Dec 20 10:00:00") == "2025-12-20T10:00:00.000000+00:00"


def test_bsd_zone_follows_daylight_saving():
    clock = clock_at(datetime(2022, 8, 1, tzinfo=CHICAGO))
    assert clock.normalize("Jul  4 12:00:00") == "2022-07-04T12:00:00.000000-05:00"
    assert clock.normalize("Jan  4 12:00:00") == "2022-01-04T12:00:00.000000-06:00"


def test_the_hour_that_repeats_when_daylight_saving_ends_is_told_apart_by_the_lines_around_it():
    """On 6 November 2022 Chicago's clocks read 01:00-01:59 twice, first at -05:00, then at -06:00.
    BSD stamps do not say which: the lines before them do (a late line stays in its own hour)."""
    clock = clock_at(datetime(2022, 11, 7, tzinfo=CHICAGO))
    stamps = ["Nov  6 00:59:59", "Nov  6 01:00:00", "Nov  6 01:59:59", "Nov  6 01:00:00", "Nov  6 01:58:00"]
    stamps += ["Nov  6 01:30:00", "Nov  6 01:59:59", "Nov  6 02:00:00"]
    assert [clock.normalize(stamp) for stamp in stamps] == [
        "2022-11-06T00:59:59.000000-05:00",
        "2022-11-06T01:00:00.000000-05:00",  # the first pass
        "2022-11-06T01:59:59.000000-05:00",
        "2022-11-06T01:00:00.000000-06:00",  # the clock went back: the second pass
        "2022-11-06T01:58:00.000000-05:00",  # a late line of the first pass
        "2022-11-06T01:30:00.000000-06:00",
        "2022-11-06T01:59:59.000000-06:00",
        "2022-11-06T02:00:00.000000-06:00",
    ]


def test_a_repeated_hour_with_nothing_before_it_is_read_as_its_first_pass():
    clock = clock_at(datetime(2022, 11, 7, tzinfo=CHICAGO))
    assert clock.normalize("Nov  6 01:30:00") == "2022-11-06T01:30:00.000000-05:00"
    assert clock.normalize("Nov  6 01:30:00") == "2022-11-06T01:30:00.000000-05:00"  # the same line again


def test_29_february_finds_its_leap_year():
    clock = clock_at(datetime(2025, 3, 1, tzinfo=UTC), UTC)
    assert clock.normalize("Feb 29 00:00:00") == "2024-02-29T00:00:00.000000+00:00"


def test_no_such_day_is_a_parse_error():
    with pytest.raises(ParseError):
        clock_at(datetime(2025, 3, 1, tzinfo=UTC), UTC).normalize("Feb 30 00:00:00")


def test_bsd_cache_stays_bounded():
    clock = clock_at(datetime(2022, 3, 1, tzinfo=UTC), UTC)
    for second in range(10_000):
        clock.normalize(f"Feb  3 {second // 3600 % 24:02}:{second // 60 % 60:02}:{second % 60:02}")
    assert len(clock._cache) <= 4096


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("UTC", timedelta(0)),
        ("-06:00", timedelta(hours=-6)),
        ("+0530", timedelta(hours=5, minutes=30)),
    ],
)
def test_fixed_zones(name, offset):
    assert resolve_zone(name).utcoffset(datetime(2022, 1, 1)) == offset


def test_iana_zone_and_local_default():
    assert resolve_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert resolve_zone("local").utcoffset(datetime(2022, 1, 1)) is not None


@pytest.mark.parametrize("name", ["Mars/Olympus", "+25:00", "+ab:cd", "../etc/passwd"])
def test_bad_zones_are_config_errors(name):
    with pytest.raises(ConfigError):
        resolve_zone(name)


def test_local_zone_honours_tz(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert resolve_zone(None).utcoffset(datetime(2022, 1, 1)) == timezone(timedelta(hours=9)).utcoffset(None)


@pytest.mark.parametrize(
    "tz, winter, summer",
    [
        ("UTC+3", "-03:00", "-03:00"),  # POSIX: three hours west of UTC
        ("EST5EDT,M3.2.0,M11.1.0", "-05:00", "-04:00"),  # a rule with its DST dates
        ("<+0530>-5:30", "+05:30", "+05:30"),
    ],
)
def test_a_posix_tz_rule_is_read_as_the_c_library_reads_it(tz, winter, summer):
    """$TZ as syslog's C library read it when it wrote the line; before, /etc/localtime was taken."""
    lines = b"Feb  3 08:35:00 mx1 sendmail[1]: x\nJul  3 08:35:00 mx1 sendmail[1]: x\n"
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse"]
    result = subprocess.run(
        [*command, "--reference-time", "2022-08-01T00:00:00+00:00"],
        input=lines,
        env={**os.environ, "TZ": tz},  # the C library reads it at the start of the process
        capture_output=True,
        timeout=60,
        check=True,
    )
    times = [json.loads(line)["time"] for line in result.stdout.splitlines()]
    assert times == [f"2022-02-03T08:35:00.000000{winter}", f"2022-07-03T08:35:00.000000{summer}"]


@pytest.mark.parametrize("tz", ["America/Chicag", "CST", "Central", "/no/such/zone"])
def test_a_tz_the_c_library_would_read_as_utc_is_one_error_not_utc_in_silence(tz):
    """A zone name with a typo, or an abbreviation with no offset, is no POSIX rule either: the C
    library falls back to UTC without a word, and every BSD time would be off by hours."""
    line = b"Feb  3 08:35:00 mx1 sendmail[1]: x\n"
    result = run_ppship("gateway", "parse", input=line, env={"TZ": tz})
    assert one_error_line(result) == (
        f"ppship: error: TZ is {tz!r}, which is no time zone this machine knows and no POSIX rule "
        "(the C library reads it as UTC): set TZ to a zone such as America/Chicago, or give --timezone"
    )
    assert result.stdout == b""
    flags = ["--timezone", "America/Chicago", "--reference-time", "2022-03-01T00:00:00+00:00"]
    given = run_ppship("gateway", "parse", *flags, input=line, env={"TZ": tz})
    assert given.returncode == 0, given.stderr.decode()
    assert json.loads(given.stdout)["time"] == "2022-02-03T08:35:00.000000-06:00"


def test_zones_resolve_on_a_machine_without_zone_files():
    """Slim container images carry no (or no legacy) zone files: the tzdata package stands in."""
    line = b"Feb  3 08:35:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent\n"
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", "--format", "text"]
    command += ["--timezone", "US/Central", "--reference-time", "2022-03-01T00:00:00+00:00"]
    no_zone_files = {**os.environ, "PYTHONTZPATH": ""}  # zoneinfo then looks in no folder
    result = subprocess.run(command, input=line, capture_output=True, env=no_zone_files, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"2022-02-03T08:35:00.000000-06:00 mx1 sendmail[1]: ")


# -- a zone that does not fit the gateway's -------------------------------------------------------


def bsd_stamps(start: datetime, count: int, step: timedelta = timedelta(seconds=3)) -> list[str]:
    """`count` distinct BSD stamps from `start` on, as a gateway writes them on its wall clock."""
    moments = [start + step * n for n in range(count)]
    return [f"{m:%b} {m.day:2d} {m:%H:%M:%S}" for m in moments]


class LiveClock:
    """The host's clock for a live reading: each stamp is read a moment after it was written."""

    def __init__(self, start: datetime, step: timedelta = timedelta(seconds=3)):
        self.moment, self.step = start + timedelta(seconds=1), step

    def __call__(self) -> datetime:
        return self.moment

    def advance(self) -> None:
        self.moment += self.step


def read_live(zone, gateway_zone, count: int, caplog) -> list[str]:
    """`count` lines a gateway in `gateway_zone` writes now, read live as `zone`: the warnings."""
    start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    clock = LiveClock(start)
    bsd = BsdClock(zone, clock, live=True)
    with caplog.at_level("WARNING", logger="proofpoint_shipper"):
        for stamp in bsd_stamps(start.astimezone(gateway_zone), count):
            bsd.normalize(stamp)
            clock.advance()
    return [record.getMessage() for record in caplog.records]


def test_bsd_times_a_whole_zone_off_the_clock_are_told_once(caplog):
    (warning,) = read_live(UTC, CHICAGO, 200, caplog)  # the gateway writes Chicago time
    assert warning == (
        "BSD times read in UTC run 6 h behind this host's clock, 50 stamps in a row (the last "
        "'Nov 30 03:02:27'): if the gateway writes its times in another zone, give --timezone that "
        "zone, as every time written is 6 h off; if the lines are that old (a backlog), nothing is wrong"
    )


def test_a_half_hour_zone_ahead_is_told_too(caplog):
    (warning,) = read_live(UTC, ZoneInfo("Asia/Kolkata"), 60, caplog)
    assert "run 5.5 h ahead of this host's clock" in warning


@pytest.mark.parametrize(
    "zone, gateway_zone, count",
    [
        (CHICAGO, CHICAGO, 200),  # the right zone
        (UTC, CHICAGO, 49),  # one stamp short of the evidence
    ],
    ids=["right zone", "too few lines"],
)
def test_nothing_is_told_without_the_evidence(caplog, zone, gateway_zone, count):
    assert read_live(zone, gateway_zone, count, caplog) == []


def test_a_backfill_against_a_reference_time_is_not_checked(caplog):
    reference = datetime(2026, 11, 30, 9, 1, tzinfo=UTC)
    bsd = BsdClock(UTC, lambda: reference)  # not live: a file of old lines, read at any time
    with caplog.at_level("WARNING", logger="proofpoint_shipper"):
        for stamp in bsd_stamps(datetime(2026, 11, 30, 3, tzinfo=UTC), 200):
            bsd.normalize(stamp)
    assert caplog.records == []


def test_lines_of_mixed_ages_are_no_evidence(caplog):
    clock = LiveClock(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    bsd = BsdClock(UTC, clock, live=True)
    first = bsd_stamps(datetime(2026, 11, 30, 3, 0, 5, tzinfo=UTC), 1)  # 6 h old
    rest = bsd_stamps(datetime(2026, 11, 30, 2, 30, tzinfo=UTC), 100, timedelta(minutes=1))
    with caplog.at_level("WARNING", logger="proofpoint_shipper"):
        for stamp in first + rest:
            bsd.normalize(stamp)
    assert caplog.records == []


def test_gateway_parse_tells_a_zone_that_does_not_fit_on_stderr():
    now = datetime.now(CHICAGO)  # the last minute's lines, written on a Chicago wall clock
    stamps = bsd_stamps(now - timedelta(seconds=61), 60, timedelta(seconds=1))
    lines = [f"{stamp} mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent" for stamp in stamps]
    wrong = run_ppship("gateway", "parse", "--timezone", "UTC", input="\n".join(lines).encode() + b"\n")
    right = run_ppship("gateway", "parse", "--timezone", "America/Chicago", input="\n".join(lines).encode())
    assert wrong.returncode == right.returncode == 0
    told = [line for line in wrong.stderr.decode().splitlines() if "BSD times" in line]
    offset = -now.utcoffset().total_seconds() / 3600
    assert told and told[0].startswith(f"ppship gateway parse: BSD times read in UTC run {offset:g} h behind")
    assert "BSD times" not in right.stderr.decode()
