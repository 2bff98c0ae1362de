"""Gateway message assembly: golden cases, the rules behind them, the memory bound, the command."""

import fcntl
import json
import signal
import subprocess
import sys
import termios
import time
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofpoint_shipper.gateway.assembler import Assembler, AssemblySettings
from tests.conftest import GOLDEN_ASSEMBLY, golden_lines, golden_parser, read_lines, run_ppship
from tests.gateway_sessions import session_lines
from tests.golden_writer import ASSEMBLY_SETTINGS, assembled

CASES = sorted(GOLDEN_ASSEMBLY.glob("*.log"))


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_golden_case(case):
    expected = json.loads(case.with_suffix(".expected.json").read_text(encoding="utf-8"))
    assert assembled(read_lines(case)) == expected


def test_the_golden_cases_cover_the_bad_input_the_issue_names():
    assert {case.stem for case in CASES} >= {
        "interleaved",  # several hosts and processes, interleaved sessions
        "restart_cut",  # a session cut off by a restart
        "deferral",  # deferred deliveries, then the final one
        "out_of_order",  # lines out of order
        "qid_twice",  # a queue id named by two messages
        "no_disconnect",  # a session that never disconnects
        "clock_jump",  # a line dated decades ahead
    }


def feed_all(
    lines: list[str], settings: AssemblySettings = ASSEMBLY_SETTINGS
) -> tuple[list[dict], Assembler]:
    parser, assembler, out = golden_parser(), Assembler(settings), []
    for line in lines:
        assembler.feed(parser.parse(line), out)
    return out, assembler


def test_a_cut_session_comes_out_incomplete_when_the_timeout_passes_not_at_the_end():
    lines = read_lines(GOLDEN_ASSEMBLY / "restart_cut.log")
    out, assembler = feed_all(lines)  # no finish(): only what the clock pushed out
    cut = [record for record in out if record["connection"]["sid"] == "cut1"]
    assert len(cut) == 1 and cut[0]["complete"] is False
    assert assembler.counts["timed out"] == 1
    before_timeout, _ = feed_all(lines[:-1])  # without the line 15 minutes later: still open
    assert not [record for record in before_timeout if record["connection"]["sid"] == "cut1"]


def test_a_deferred_delivery_ends_with_its_final_status():
    records = assembled(read_lines(GOLDEN_ASSEMBLY / "deferral.log"))["records"]
    assert len(records) == 1 and records[0]["complete"] is True
    (delivery,) = records[0]["deliveries"]
    assert (delivery["dsn"], delivery["stat"]) == ("2.0.0", "Sent (Ok: queued as 4Jx2)")
    assert records[0]["lines"]["count"] == 10  # every line, the two deferrals included


def test_a_line_dated_past_the_machines_clock_does_not_move_the_time():
    lines = read_lines(GOLDEN_ASSEMBLY / "clock_jump.log")
    out, assembler = feed_all(lines)  # no finish(): only what the clock pushed out
    assert [(record["connection"]["sid"], record["complete"]) for record in out] == [("jmp1", True)]
    assert assembler.counts["lines dated ahead of this machine's clock (time not used)"] == 1


def test_the_bound_on_line_times_follows_the_machines_clock():
    connect = "2022-02-20T{}.000000+00:00 mx1 filter_instance1[1]: rprt s={} mod=session cmd=connect"
    now = 1645351200.0 - 86_400 - 60  # this machine's clock: a day and a minute before 10:00
    assembler = Assembler(ASSEMBLY_SETTINGS, wall_clock=lambda: now)
    parser = golden_parser()
    for stamp, sid in (("09:00:00", "a"), ("09:58:00", "b"), ("10:00:00", "c")):
        assembler.feed(parser.parse(connect.format(stamp, sid)))
    assert assembler.clock == 1645351200.0 - 120  # 09:58 moved it; 10:00 is over a day ahead
    assert assembler.counts["lines dated ahead of this machine's clock (time not used)"] == 1


def clock_after(times: list[str], wall_clock: float = 1.7e9) -> float:
    """The assembler's clock after lines at these times (NDJSON records, so any text is a time)."""
    assembler = Assembler(ASSEMBLY_SETTINGS, wall_clock=lambda: wall_clock)
    for stamp in times:
        assembler.feed({"stream": "gateway_filter", "time": stamp, "fields": {"s": "a", "mod": "session"}})
    return assembler.clock


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    "times, newest",
    [
        # the next second moves the clock, though it sorts right after the last of the one before
        (
            [
                "2022-02-20T14:00:00.000000+00:00",
                "2022-02-20T14:00:00.999999+00:00",
                "2022-02-20T14:00:01.000000+00:00",
            ],
            "2022-02-20T14:00:01+00:00",
        ),
        # another zone: its text sorts before the clock's, its time is later
        (
            ["2022-02-20T14:00:00.000000+00:00", "2022-02-20T08:00:05.000000-06:00"],
            "2022-02-20T14:00:05+00:00",
        ),
        # back in the first zone after the other moved the clock: earlier, so no move
        (
            ["2022-02-20T08:00:05.000000-06:00", "2022-02-20T14:00:03.000000+00:00"],
            "2022-02-20T14:00:05+00:00",
        ),
        # a time ISO 8601 allows but the parser does not write: a space sorts before the T
        (
            ["2022-02-20T14:00:00.000000+00:00", "2022-02-20 14:00:09.000000+00:00"],
            "2022-02-20T14:00:09+00:00",
        ),
        (["2022-02-20T14:00:00.000000+00:00", "2022-02-20T14:00:07+00:00"], "2022-02-20T14:00:07+00:00"),
        # text that is no time, though it sorts after the clock's second
        (
            ["2022-02-20T14:00:00.000000+00:00", "2022-02-20T14:00:0x.000000+00:00"],
            "2022-02-20T14:00:00+00:00",
        ),
    ],
)
def test_the_clock_is_the_newest_line_time_whatever_the_zone_or_spelling(times, newest):
    assert clock_after(times) == epoch(newest)


def test_the_last_second_of_year_9999_moves_the_clock_and_lines_after_it_are_read():
    last = "9999-12-31T23:59:59.000000+00:00"
    assert clock_after([last, last, "2022-02-20T14:00:00.000000+00:00"], wall_clock=2.6e11) == epoch(last)


def test_the_least_recently_active_session_goes_first_to_the_second():
    """--max-open pushes out the session whose last line is oldest, counted in whole seconds."""
    line = "2022-02-20T14:00:{:02d}.{:06d}+00:00 mx1 filter_instance1[1]: rprt s={} m=1 mod=av cmd=run"
    parser = golden_parser()
    assembler, out = Assembler(AssemblySettings(max_open=2)), []
    for second, micros, sid in ((0, 1, "a"), (0, 2, "b"), (1, 1, "a"), (1, 2, "c"), (2, 1, "a"), (2, 2, "d")):
        assembler.feed(parser.parse(line.format(second, micros, sid)), out)
    assert [record["connection"]["sid"] for record in out] == ["b", "c"]


def test_hosts_keep_their_own_queue_ids():
    records = assembled(read_lines(GOLDEN_ASSEMBLY / "interleaved.log"))["records"]
    by_guid = {record.get("guid"): record for record in records}
    assert by_guid["Jx0mAaaa1"]["metadata"]["origin"]["data"]["agent"] == "mx1"
    assert by_guid["Qb1bbb1"]["metadata"]["origin"]["data"]["agent"] == "mx2"
    assert {d["to"] for d in by_guid["Jx0mAaaa1"]["deliveries"]} == {"bob@example.com", "carol@example.com"}
    assert [d["to"] for d in by_guid["Qb1bbb1"]["deliveries"]] == ["dave@example.com"]


def test_lines_that_name_no_host_give_a_message_without_an_agent():
    """`prog[pid]: ...` as a program hands it to syslog: no host, so no agent, rather than \"\"."""
    lines = [
        "filter_instance1[1]: rprt s=abc m=1 mod=mail cmd=env_from value=ann@example.org qid=21KEZ744441253",
        "sendmail[2]: 21KEZ744441253: to=<bob@example.com>, dsn=2.0.0, stat=Sent (ok)",
    ]
    out, assembler = feed_all(lines, AssemblySettings())
    out += assembler.finish()
    assert [(r["envelope"]["from"], r["deliveries"][0]["to"]) for r in out] == [
        ("ann@example.org", "bob@example.com")
    ]
    assert "metadata" not in out[0]


def test_every_line_is_counted_in_exactly_one_record_or_one_count():
    lines = session_lines(300, seed=3)
    out, assembler = feed_all(lines, AssemblySettings())
    out += assembler.finish()
    assert len(out) == 300 and all(record["complete"] for record in out)
    assert sum(record["lines"]["count"] for record in out) == len(lines) == assembler.lines


def test_memory_stays_bounded_with_100k_open_sessions():
    """100k sessions that never disconnect: at most max_open are held, and every one comes out."""
    parser = golden_parser()
    line = "2022-02-20T08:35:00.{n:06d}-06:00 mx1 filter_instance1[1]: rprt s=b{n} m=1 x=b{n}-1 mod=mail"
    assembler, out, most_open = Assembler(AssemblySettings(max_open=1000)), [], 0
    for n in range(100_000):
        assembler.feed(parser.parse(line.format(n=n) + f" cmd=env_from value=a{n}@example.org qid=Q{n}"), out)
        most_open = max(most_open, assembler.open_count)
    assert most_open == 1000
    assert len(out) == 99_000 and assembler.counts["flushed early (--max-open)"] == 99_000
    out += assembler.finish()
    assert len(out) == 100_000 and not any(record["complete"] for record in out)
    assert len(assembler._queue_ids) == 0  # nothing left behind once they are out


def test_the_command_takes_raw_lines_or_parse_records_and_gives_the_same_messages(tmp_path):
    log = tmp_path / "gateway.log"
    log.write_text("\n".join(read_lines(GOLDEN_ASSEMBLY / "interleaved.log")) + "\n", encoding="utf-8")
    settings = ["--timezone", "America/Chicago", "--reference-time", "2022-03-01T12:00:00-06:00"]
    raw = run_ppship("gateway", "assemble", *settings, str(log))
    assert raw.returncode == 0, raw.stderr.decode()
    parsed = run_ppship("gateway", "parse", *settings, str(log))
    from_records = run_ppship("gateway", "assemble", input=parsed.stdout)
    assert from_records.returncode == 0
    assert raw.stdout == from_records.stdout
    records = [json.loads(line) for line in raw.stdout.splitlines()]
    assert [r["guid"] for r in records if "guid" in r] == ["Qb1bbb1", "Qb1bbb2", "Jx0mAaaa1"]
    assert b"ppship gateway assemble: 39 lines: " in raw.stderr and b"4 messages complete" in raw.stderr


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    result = run_ppship("gateway", "assemble", str(tmp_path / "missing.log"))
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and b"cannot read" in result.stderr


def test_an_ndjson_record_nested_too_deep_to_write_is_read_as_a_line():
    deep = "[" * 300 + "]" * 300  # orjson reads it, but writes only 254 levels
    record = '{"stream": "gateway_filter", "host": "h", "fields": {"s": "a", "mod": "spf", "result": %s}}'
    result = run_ppship("gateway", "assemble", "--timezone", "UTC", input=(record % deep).encode())
    assert result.returncode == 0, result.stderr.decode()
    assert b"1 JSON lines that are not gateway records (parsed as lines)" in result.stderr


def test_a_line_over_the_bound_is_read_cut_and_counted():
    line = "2022-02-20T08:35:00Z mx1 filter_instance1[1]: rprt s=abc mod=spam cmd=run score=" + "9" * 2**20
    result = run_ppship("gateway", "assemble", "--timezone", "UTC", input=line.encode() + b"\n")
    assert result.returncode == 0, result.stderr.decode()
    (message,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert message["connection"]["sid"] == "abc"  # what came before the cut is kept
    assert b"1 lines over 1048576 bytes, read with their first bytes only" in result.stderr


def test_repeated_keys_and_odd_ndjson_records_do_not_stop_the_command():
    lines = [
        "2022-02-20T08:35:00Z mx1 filter_instance1[1]: rprt s=abc x=abc-1 x=abc-2 mod=spam mod=av",
        '{"stream": "gateway_filter", "fields": true, "host": ["mx1"], "time": 5}',
        '{"stream": "gateway_sendmail", "qid": ["Q1"], "fields": {"to": {"a": 1}}}',
    ]
    result = run_ppship("gateway", "assemble", "--timezone", "UTC", input="\n".join(lines).encode())
    assert result.returncode == 0, result.stderr.decode()
    (message,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert message["connection"]["sid"] == "abc" and message["complete"] is False
    assert b"1 filter lines without a session id" in result.stderr
    assert b"1 sendmail lines without a queue id" in result.stderr


def wait_until_read(pipe, seconds: float = 60.0) -> None:
    """Until the child has taken every byte written to its stdin (FIONREAD on the pipe)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0")
        if int.from_bytes(pending, sys.byteorder) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the child did not read its input")


def test_sigterm_writes_the_open_messages_and_exits_0():
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "assemble", "--timezone", "UTC"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        child.stdin.write(("\n".join(read_lines(GOLDEN_ASSEMBLY / "no_disconnect.log")) + "\n").encode())
        child.stdin.flush()
        wait_until_read(child.stdin)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["guid"] == "Nd1guid" and record["complete"] is False


def test_a_stop_also_assembles_what_the_pipe_held():
    """More in the pipe than one read takes when the stop comes (the child paused while it was
    filled): those lines are assembled too, and the messages are those of the whole input."""
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "assemble", "--timezone", "UTC"]
    lines = ("\n".join(session_lines(300)) + "\n").encode()
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        fcntl.fcntl(child.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1024 * 1024)
        child.stdin.write(b"\n")
        child.stdin.flush()
        wait_until_read(child.stdin)
        child.send_signal(signal.SIGSTOP)
        child.stdin.write(lines)  # several reads
        child.stdin.flush()
        child.send_signal(signal.SIGTERM)
        child.send_signal(signal.SIGCONT)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    whole = run_ppship("gateway", "assemble", "--timezone", "UTC", input=lines)
    assert sorted(out.splitlines()) == sorted(whole.stdout.splitlines())
    assert len(out.splitlines()) == 300


ANY_LINES = sorted({line for case in CASES for line in read_lines(case)} | set(golden_lines()))
SKIPPED = (
    "lines of other programs",
    "filter lines without a session id",
    "sendmail lines without a queue id",
    "lines of sessions without a message",
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ANY_LINES), max_size=80), st.integers(1, 5))
def test_any_lines_in_any_order_never_raise_and_every_line_is_accounted_for(lines, max_open):
    out, assembler = feed_all(lines, AssemblySettings(max_open=max_open, idle_timeout=60.0))
    out += assembler.finish()
    assert assembler.open_count == 0 and not assembler._queue_ids
    in_records = sum(record["lines"]["count"] for record in out)
    assert in_records + sum(assembler.counts[name] for name in SKIPPED) >= len(lines) == assembler.lines
    assert all(isinstance(record["complete"], bool) for record in out)


# Records as NDJSON input (or a relayed record's own keys) may hold them: any type under any key,
# repeated keys (lists) under the keys that address a line.
ANYTHING = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.lists(st.sampled_from(["", "1", "a-2", "<a>", "send", "mail"]), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
FIELD_VALUES = st.one_of(
    st.sampled_from(["", "1", "2", "a-1", "session", "connect", "disconnect", "mail", "msg", "env_from"]),
    st.sampled_from(["env_rcpt", "dispose", "send", "spam", "run", "discard", "2.0.0", "4.2.0", "Sent"]),
    ANYTHING,
)
FIELD_KEYS = st.sampled_from(["s", "m", "x", "mod", "cmd", "qid", "to", "stat", "dsn", "nrcpts", "action"])
ODD_RECORDS = st.fixed_dictionaries(
    {
        "stream": st.sampled_from(["gateway_filter", "gateway_sendmail", "other"]),
        "time": st.one_of(st.sampled_from(["2022-02-20T08:35:00.157994-06:00", "not a time"]), ANYTHING),
        "host": st.one_of(st.sampled_from(["mx1", "mx2"]), ANYTHING),
        "qid": st.one_of(st.sampled_from(["Q1", "Q2"]), ANYTHING),
        "fields": st.one_of(st.dictionaries(FIELD_KEYS, FIELD_VALUES, max_size=6), ANYTHING),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ODD_RECORDS, max_size=30), st.integers(1, 3))
def test_records_of_any_shape_never_raise_and_nothing_stays_open(records, max_open):
    assembler = Assembler(AssemblySettings(max_open=max_open, idle_timeout=5.0))
    out: list[dict] = []
    for record in records:
        assembler.feed(record, out)
    out += assembler.finish()
    assert assembler.open_count == 0 and assembler.lines == len(records)
