"""SIGTERM while a write to a full pipe is blocked: every record arrives once, whole, in order.

Agents stop their exec children with SIGTERM while the pipe to the agent may be full. Through
`sys.stdout.buffer` this lost and mixed records; both writers below must not.
"""

import json
import os
import signal
import subprocess
import sys
import time

import msgpack

from tests.conftest import GOLDEN, read_lines

SINK_WRITER = r"""
import signal, sys, threading
from proofpoint_shipper.sinks.stdout import StdoutSink
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
sink = StdoutSink()
print("ready", file=sys.stderr, flush=True)
for n in range(3000):
    sink.write("proofpoint_on_demand_message", [{"n": n, "pad": "x" * 1500}])
    if n % 100 == 99:
        sink.flush()
sink.flush()
"""


def test_stdout_sink_under_sigterm_into_a_slow_pipe():
    with subprocess.Popen(
        [sys.executable, "-c", SINK_WRITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        child.stderr.readline()
        first = child.stdout.readline()  # the pipe is full behind this line: writes are blocked
        child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        rest = child.stdout.read()
        child.wait(timeout=60)
    numbers = [json.loads(line)["n"] for line in [first, *rest.splitlines()]]
    assert numbers == list(range(3000))


def test_gateway_parse_under_sigterm_into_a_slow_pipe(tmp_path):
    line = read_lines(GOLDEN / "gateway_filter" / "seed.log")[0]
    log = tmp_path / "big.log"
    log.write_text((line + "\n") * 200_000)
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", str(log)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        first = child.stdout.readline()
        child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        rest = child.stdout.read()
        stderr = child.stderr.read().decode()
        child.wait(timeout=60)
    assert child.returncode == 0
    records = [json.loads(out) for out in [first, *rest.splitlines()]]  # every line whole
    assert all(record["raw"] == line for record in records)
    reported = int(stderr.split("ppship gateway parse: ")[1].split()[0])
    assert len(records) == reported  # every parsed line was written, none lost


def _run_with_closed(fd: int, *args: str, input_path=None) -> subprocess.CompletedProcess:
    """The real command started with one standard stream closed, as a careless supervisor may."""
    return subprocess.run(
        [sys.executable, "-m", "proofpoint_shipper", *args],
        stdin=subprocess.DEVNULL if fd != 0 else None,
        stdout=subprocess.PIPE if fd != 1 else None,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(fd),  # in the child, before Python starts
        timeout=60,
        check=False,
    )


def test_a_command_started_with_stdout_closed_says_so(tmp_path):
    log = tmp_path / "gateway.log"
    log.write_text(read_lines(GOLDEN / "gateway_sendmail" / "bad.log")[0] + "\n")
    for args in (
        ["gateway", "parse", str(log)],
        ["gateway", "assemble", str(log)],
        ["gateway", "exec-filter"],
        ["ship", "--table", "proofpoint_tap_clicks_blocked"],
    ):
        result = _run_with_closed(1, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr == b"ppship: error: stdout is closed: there is nowhere to write the records\n"


def test_a_command_started_with_stderr_closed_writes_only_records_to_stdout(tmp_path):
    """Python sets sys.stderr to None then, and print(file=None) writes to stdout: the line of
    counts landed among the records, a line of text in an NDJSON stream (or a table's text)."""
    log = tmp_path / "gateway.log"
    log.write_bytes((GOLDEN.parent / "golden_assembly" / "interleaved.log").read_bytes())
    lines = log.read_bytes().count(b"\n")
    for args in (["gateway", "parse", str(log)], ["gateway", "parse", "--format", "text", str(log)]):
        result = _run_with_closed(2, *args)
        assert result.returncode == 0, args
        written = result.stdout.splitlines()
        assert len(written) == lines and not any(b"ppship gateway parse:" in line for line in written), args
    result = _run_with_closed(2, "gateway", "parse", str(log))
    assert all(json.loads(line) for line in result.stdout.splitlines())


def test_a_stderr_reader_that_went_away_does_not_fail_the_run(tmp_path):
    """The records were all written; the last line of counts, with no one to read it, ended the
    run with exit code 1 and a traceback's worth of failed writes."""
    log = tmp_path / "gateway.log"
    log.write_bytes((GOLDEN.parent / "golden_assembly" / "interleaved.log").read_bytes())
    read_end, write_end = os.pipe()
    os.close(read_end)  # its reader is gone before the command writes to it
    try:
        result = subprocess.run(
            [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", str(log)],
            stdout=subprocess.PIPE,
            stderr=write_end,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == log.read_bytes().count(b"\n")


def test_a_full_disk_under_stdout_is_one_line_naming_stdout_and_exit_2(tmp_path):
    log = tmp_path / "gateway.log"
    log.write_bytes((GOLDEN.parent / "golden_assembly" / "interleaved.log").read_bytes())
    tap_record = tmp_path / "record.json"
    tap_record.write_text('{"id": "a"}\n')
    for args, given in (
        (["gateway", "parse", str(log)], None),
        (["gateway", "assemble", "--timezone", "UTC", str(log)], None),
        (["gateway", "exec-filter"], msgpack.packb({"log": "x"})),
        (["ship", "--table", "proofpoint_tap_clicks_blocked", str(tap_record)], None),
    ):
        with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
            result = subprocess.run(
                [sys.executable, "-m", "proofpoint_shipper", *args],
                input=given,
                stdout=full,
                stderr=subprocess.PIPE,
                timeout=60,
                check=False,
            )
        assert result.returncode == 2, (args, result.stderr)
        last = result.stderr.decode().splitlines()[-1]
        assert last == "ppship: error: cannot write to stdout: No space left on device", args


def test_a_command_started_with_stdin_closed_reads_nothing():
    for args in (
        ["gateway", "parse"],
        ["gateway", "assemble"],
        ["ship", "--table", "proofpoint_tap_clicks_blocked"],
    ):
        result = _run_with_closed(0, *args)
        assert result.returncode == 0 and result.stdout == b"", (args, result.stderr)
        assert b" 0 lines" in result.stderr or b"0 records delivered" in result.stderr
