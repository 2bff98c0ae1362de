"""Flags with impossible values stop every command at start-up with exit code 2: one error line
(argparse's usage may stand above it), never a traceback, never a start that fails later."""

import pytest

from tests.conftest import run_ppship

UPSTREAM = ["--upstream", "127.0.0.1:24225"]
REFUSED = [
    (["relay", "--workers", "0", *UPSTREAM], b"--workers: expected a positive whole number"),
    (["relay", "--max-frame-bytes", "-1", *UPSTREAM], b"--max-frame-bytes: expected a positive"),
    (["relay", "--max-in-flight-bytes", "0", *UPSTREAM], b"--max-in-flight-bytes: expected a positive"),
    (["relay", "--drain-seconds", "-5", *UPSTREAM], b"--drain-seconds: expected a number of seconds"),
    (["relay", "--upstream-timeout", "nan", *UPSTREAM], b"--upstream-timeout: expected a number of"),
    (["relay", "--assemble", "--idle-timeout", "nan", *UPSTREAM], b"--idle-timeout: expected a number"),
    (["relay", "--upstream", "127.0.0.1:99999"], b"--upstream wants HOST:PORT (port 0-65535)"),
    (["relay", "--listen", "127.0.0.1:65536", *UPSTREAM], b"--listen wants HOST:PORT (port 0-65535)"),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--flush-records", "0"], b"--flush-records"),
    (
        ["ship", "--table", "proofpoint_tap_clicks_permitted", "--output", "forward", "--forward", "h:99999"],
        b"--forward wants HOST:PORT (port 0-65535)",
    ),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--batch-age", "0"], b"seconds above 0"),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--batch-bytes", "1e6"], b"--batch-bytes"),
    (["gateway", "assemble", "--max-open", "0"], b"--max-open: expected a positive whole number"),
    (["gateway", "assemble", "--idle-timeout", "-1"], b"--idle-timeout: expected a number of seconds"),
    (["gateway", "assemble", "--idle-timeout", "inf"], b"--idle-timeout: expected a number of seconds"),
    (["pod", "stream", "--type", "message", "--duration", "-1"], b"--duration: expected a number"),
    (["pod", "stream", "--type", "message", "--max-events", "0"], b"--max-events: expected a positive"),
    (["s3", "check", "--bucket", "b", "--sample", "0"], b"--sample: expected a positive"),
    (["s3", "check", "--bucket", "b", "--endpoint-url", "localhost:9000"], b"--endpoint-url: not a https://"),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--endpoint-url", "s3"], b"--endpoint-url: not a"),
    # botocore's message spans lines: it still comes out as one
    (["s3", "check", "--bucket", "Bad_Bucket!", "--endpoint-url", "http://127.0.0.1:9"], b"Invalid bucket name"),
    (["doctor", "--max-clock-skew", "-1"], b"--max-clock-skew: expected a number of seconds"),
    (["dev", "s3", "--port", "99999"], b"--port: not a port number (0-65535)"),
    (["simulate", "tap", "--port", "99999"], b"--port: not a port number (0-65535)"),
    (["simulate", "tap", "--days", "nan"], b"--days: expected a number above 0"),
    (["simulate", "tap", "--days", "1e9"], b"--days: expected at most 3650 days"),
    (["simulate", "tap", "--fail-rate", "2"], b"--fail-rate: expected a share from 0 to 1"),
    (["simulate", "tap", "--quota", "-1"], b"--quota: expected a whole number"),
    (["simulate", "tap", "--slow", "inf"], b"--slow: expected a number of seconds"),
    (["simulate", "pod", "--rate", "0"], b"--rate: expected a number above 0"),
    (["simulate", "pod", "--days", "inf"], b"--days: expected a number above 0"),
    (["simulate", "pod", "--resend-rate", "nan"], b"--resend-rate: expected a share from 0 to 1"),
    (["simulate", "pod", "--drop-every", "0"], b"--drop-every: expected a positive whole number"),
]


@pytest.mark.parametrize(
    "args, message", REFUSED, ids=[" ".join(a for a in args if a not in UPSTREAM) for args, _ in REFUSED]
)
def test_an_impossible_value_is_one_line_and_exit_2(args, message):
    result = run_ppship(*args)
    assert result.returncode == 2
    *_, last = result.stderr.splitlines()
    assert message in last and last.startswith(b"ppship"), result.stderr.decode()
    assert b"Traceback" not in result.stderr
