"""`ppship gateway parse` as users and agents run it: a real child process, real pipes and signals."""

import gzip
import json
import os
import select
import signal
import subprocess
import sys
import time
import zlib
from datetime import datetime
from zoneinfo import ZoneInfo

import msgpack
import pytest

from tests.conftest import GOLDEN, read_lines, run_ppship
from tests.gateway_sessions import session_lines

SEED_LINES = read_lines(GOLDEN / "gateway_filter" / "seed.log") + read_lines(
    GOLDEN / "gateway_sendmail" / "seed.log"
)
COMMAND = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse"]


def records(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def test_seed_lines_come_out_of_text_format_unchanged():
    data = "".join(line + "\n" for line in SEED_LINES).encode()
    result = run_ppship("gateway", "parse", "--format", "text", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


@pytest.mark.parametrize("zone", ["America/Chicago", "Asia/Kolkata", "UTC"])
def test_bsd_header_is_rewritten_to_rfc3339_in_the_given_zone(zone):
    bsd_lines = []
    for line in SEED_LINES:
        stamp, rest = line.split(" ", 1)
        when = datetime.fromisoformat(stamp)
        bsd_lines.append(f"{when:%b} {when.day:>2} {when:%H:%M:%S} {rest}")
    data = "".join(line + "\n" for line in bsd_lines).encode()
    result = run_ppship(
        "gateway",
        "parse",
        "--format",
        "text",
        "--timezone",
        zone,
        "--reference-time",
        "2022-03-01T00:00:00+00:00",
        input=data,
    )
    assert result.returncode == 0, result.stderr
    for line, out in zip(SEED_LINES, result.stdout.decode().splitlines(), strict=True):
        stamp, rest = line.split(" ", 1)
        wall = datetime.fromisoformat(stamp).replace(microsecond=0, tzinfo=None)
        expected = wall.replace(tzinfo=ZoneInfo(zone)).isoformat(timespec="microseconds")
        assert out == f"{expected} {rest}"


# Each case is named: a test id holding the 1 MB line would reach the commands' environment
# (PYTEST_CURRENT_TEST), and an environment string that long cannot start a process.
@pytest.mark.parametrize(
    ("data", "error_part"),
    [
        pytest.param(
            b"2022-02-20T08:35:00Z mx1 sendmail[1]: to=<a\xff@b>, stat=Sent\n",
            "invalid UTF-8",
            id="non-UTF-8 byte",
        ),
        pytest.param(b"x" * 1_000_000 + b"\n", "bytes dropped", id="1 MB line"),
        pytest.param(b"\n", "empty line", id="empty line"),
        pytest.param(
            b"2022-02-20T08:35:00Z mx1 filter_instance1[7]:\n",
            "no message after the header",
            id="header with no body",
        ),
        pytest.param(
            b"2022-02-20T08:35:00Z mx1 filter_instance1[7]: rprt s=a\x00b\n", "NUL byte", id="NUL byte"
        ),
    ],
)
def test_bad_input_gives_a_record_with_an_error_and_exit_0(data, error_part):
    result = run_ppship("gateway", "parse", input=data)
    assert result.returncode == 0, result.stderr
    (record,) = records(result.stdout)
    assert error_part in record["error"]
    assert record["raw"] or data == b"\n"
    assert b"Traceback" not in result.stderr


def test_a_line_over_the_limit_keeps_its_first_bytes():
    result = run_ppship("gateway", "parse", "--max-line-bytes", "100", input=b"a" * 250 + b"\nok\n")
    first, second = records(result.stdout)
    assert first["raw"] == "a" * 100
    assert "line of 250 bytes cut to its first 100" in first["error"]
    assert second["raw"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/maillog"], "cannot read /nonexistent/maillog: No such file or directory"),
        (["/"], "cannot read /: is a directory"),
        (["--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_setup_gives_one_clear_line_and_exit_2(args, message):
    result = run_ppship("gateway", "parse", *args)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert result.stdout == b""


def test_unknown_stream_name_is_a_usage_error():
    result = run_ppship("gateway", "parse", "--streams", "filter,bogus")
    assert result.returncode == 2
    assert b"unknown stream bogus" in result.stderr


def test_streams_flag_selects_output_and_counts_the_rest(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("\n".join([*SEED_LINES, "unrelated text"]) + "\n")
    result = run_ppship("gateway", "parse", "--streams", "sendmail", str(log))
    assert [r["stream"] for r in records(result.stdout)] == ["gateway_sendmail"]
    summary = result.stderr.decode()
    assert "3 lines" in summary
    assert "gateway_filter 1 parsed, 1 skipped" in summary
    assert "other 1 parsed, 1 skipped" in summary


def test_msgpack_output_holds_the_same_records_as_json(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("\n".join(SEED_LINES) + "\n")
    as_json = records(run_ppship("gateway", "parse", "--timezone", "UTC", str(log)).stdout)
    packed = run_ppship("gateway", "parse", "--format", "msgpack", "--timezone", "UTC", str(log)).stdout
    assert len(as_json) == 2
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(packed)
    assert list(unpacker) == as_json


def test_several_files_and_stdin_dash_are_read_in_order(tmp_path):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text(SEED_LINES[0] + "\n")
    second.write_text(SEED_LINES[1] + "\n")
    result = run_ppship("gateway", "parse", str(first), "-", str(second), input=b"middle\n")
    assert [r["raw"] for r in records(result.stdout)] == [SEED_LINES[0], "middle", SEED_LINES[1]]


def test_a_gzip_file_or_gzip_on_stdin_reads_as_the_plain_lines(tmp_path):
    """Backfilling rotated logs: `gateway parse maillog-20261129.gz`, or `cat *.gz | ...`."""
    settings = ("--timezone", "UTC", "--reference-time", "2022-03-01T00:00:00+00:00")
    plain = "\n".join(SEED_LINES * 3) + "\n"
    (tmp_path / "maillog-1.gz").write_bytes(gzip.compress(plain.encode()))
    expected = run_ppship("gateway", "parse", *settings, input=plain.encode())
    from_file = run_ppship("gateway", "parse", *settings, str(tmp_path / "maillog-1.gz"))
    from_stdin = run_ppship("gateway", "parse", *settings, input=gzip.compress(plain.encode()))
    assert records(expected.stdout) and from_file.stdout == expected.stdout == from_stdin.stdout
    assembled = run_ppship("gateway", "assemble", *settings, str(tmp_path / "maillog-1.gz"))
    assert assembled.returncode == 0 and assembled.stderr.startswith(b"ppship gateway assemble: 6 lines")


def test_a_gzip_file_cut_short_gives_the_lines_before_the_cut_and_the_next_file_then_the_error(tmp_path):
    """A rotated log copied while it was compressed, in a backfill of several: `parse` writes the
    records of the lines before the cut and of the files after it, `assemble` the messages they
    make (those open at the end incomplete), each with its counts, then the error (exit 2)."""
    settings = ("--timezone", "UTC")
    lines = session_lines(40)
    compressed = gzip.compress(("\n".join(lines) + "\n").encode())
    cut, after = tmp_path / "maillog-2.gz", tmp_path / "maillog-1"
    cut.write_bytes(compressed[: len(compressed) // 2])
    after.write_text("\n".join(SEED_LINES) + "\n")
    readable = zlib.decompressobj(wbits=31).decompress(cut.read_bytes()).decode().split("\n")[:-1]
    error = f"ppship: error: cannot read {cut}: the gzip stream ends inside a member: the file was cut short"
    total = len(readable) + len(SEED_LINES)

    parsed = run_ppship("gateway", "parse", *settings, str(cut), str(after))
    assert parsed.returncode == 2
    assert [record["raw"] for record in records(parsed.stdout)] == readable + SEED_LINES
    counts, told = parsed.stderr.decode().splitlines()
    assert counts.startswith(f"ppship gateway parse: {total} lines: ") and told == error

    assembled = run_ppship("gateway", "assemble", *settings, str(cut), str(after))
    assert assembled.returncode == 2
    messages = [json.loads(line) for line in assembled.stdout.splitlines()]
    assert messages and any(not message["complete"] for message in messages)
    counts, told = assembled.stderr.decode().splitlines()
    assert counts.startswith(f"ppship gateway assemble: {total} lines") and told == error


def test_help_explains_the_command():
    result = run_ppship("gateway", "parse", "--help")
    assert result.returncode == 0
    for option in (b"--format", b"--streams", b"--timezone", b"--reference-time", b"--max-line-bytes"):
        assert option in result.stdout
    assert run_ppship("--help").returncode == 0


def _read_line(stream, timeout: float = 30) -> bytes:
    """One output line, waiting at most `timeout` seconds (a bound against hangs, not a timing)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output line arrived"
    return stream.readline()


def test_each_line_is_written_while_input_stays_open():
    """An agent's exec input must see records promptly, long before the input ends."""
    with subprocess.Popen(
        COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        for line in SEED_LINES:
            child.stdin.write(line.encode() + b"\n")
            child.stdin.flush()
            assert json.loads(_read_line(child.stdout))["raw"] == line
        child.communicate(timeout=30)
    assert child.returncode == 0


def test_sigterm_ends_the_run_cleanly_with_counts():
    with subprocess.Popen(
        COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        child.stdin.write(SEED_LINES[0].encode() + b"\n")
        child.stdin.flush()
        _read_line(child.stdout)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == 0
    assert b"1 lines (stopped early)" in stderr
    assert b"Traceback" not in stderr


def test_sigterm_also_parses_what_the_pipe_held_and_tells_an_unfinished_line():
    """Stopped while busy writing its first read back (no one reads its stdout yet), with the
    rest of the input in the pipe: a writer stopped with it (a pipeline under one service) sends
    that rest no more, so it is parsed too. The line whose end never came is left out, and said."""
    lines = [f"{SEED_LINES[0]} n={n}" for n in range(500)]  # over a 64 KiB read, within it and the pipe
    with subprocess.Popen(
        COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        with child.stdin:
            child.stdin.write("\n".join(lines).encode() + b"\n" + b"2022-02-20T08:35:00.1")
        assert not select.select([child.stderr], [], [], 1)[0]  # it is busy: stdout is full
        child.send_signal(signal.SIGTERM)
        out = child.stdout.read()
        stderr = child.stderr.read()
        child.wait(timeout=60)
    assert child.returncode == 0, stderr.decode()
    assert [record["raw"] for record in records(out)] == lines
    assert b"500 lines (stopped early; the 21 bytes of a line whose end had not come left out)" in stderr


def test_a_closed_output_pipe_ends_the_run_cleanly(tmp_path):
    log = tmp_path / "big.log"
    log.write_text((SEED_LINES[0] + "\n") * 50_000)
    with subprocess.Popen([*COMMAND, str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        child.stdout.readline()
        child.stdout.close()  # the reader goes away, as `head -1` would
        stderr = child.stderr.read()
        child.wait(timeout=60)
    assert child.returncode == 0
    assert b"stopped early" in stderr
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr


def test_exits_when_its_parent_dies_although_input_stays_open():
    """Fluent Bit does not stop its exec child: we notice being re-parented and leave."""
    in_read, in_write = os.pipe()  # we keep the write end: input never ends by itself
    out_read, out_write = os.pipe()
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({COMMAND!r}, stdin={in_read}, stdout={out_write}, "
        "stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    grandchild = 0
    try:
        with subprocess.Popen(
            [sys.executable, "-c", script], pass_fds=(in_read, out_write), stdout=subprocess.PIPE
        ) as launcher:
            os.close(in_read)
            os.close(out_write)
            grandchild = int(_read_line(launcher.stdout))
            os.write(in_write, SEED_LINES[0].encode() + b"\n")
            with os.fdopen(out_read, "rb") as output:
                assert json.loads(_read_line(output))["raw"] == SEED_LINES[0]  # it is running
                launcher.kill()  # now the parent dies without a word
        deadline = time.monotonic() + 30
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(grandchild), "the parser outlived its parent"
    finally:
        os.close(in_write)
        if _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
