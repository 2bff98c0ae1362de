"""`ppship ship` and the shared output flags: delivery to a local S3, and every start-up error."""

import fcntl
import gzip
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import proofpoint_shipper
from proofpoint_shipper.rawio import write_all
from proofpoint_shipper.tap.events import generate
from proofpoint_shipper.tap.simulator import TapSimulator
from tests.conftest import checking_s3, one_error_line, run_ppship, wait_for
from tests.forward_receiver import ForwardReceiver
from tests.tap_harness import PRINCIPAL, SECRET
from tests.test_tap_cli import environment as tap_environment
from tests.test_tap_cli import fetch_command

LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


SHIP_CLICKS = [sys.executable, "-m", "proofpoint_shipper", "ship", "--table", "proofpoint_tap_clicks_blocked"]


def s3_flags(bucket: str, endpoint: str, *extra: str) -> tuple[str, ...]:
    return ("--output", "s3", "--bucket", bucket, "--endpoint-url", endpoint, *extra)


def ship(*args: str, input: bytes = b"", env: dict | None = None) -> subprocess.CompletedProcess:
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return run_ppship("ship", *args, input=input)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_ship_to_s3_lands_the_records(local_s3, bucket):
    records = [{"eventTime": "2022-02-20T14:00:00Z", "id": f"m{n}"} for n in range(3)]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    result = ship(
        "--table",
        "proofpoint_tap_messages_blocked",
        *s3_flags(bucket, local_s3.endpoint_url, "--prefix", "lake"),
        *("--sse", "AES256", "--acl", "bucket-owner-full-control"),
        input=data,
        env=LOCAL_ENV,
    )
    assert result.returncode == 0, result.stderr
    client = local_s3.client()
    (item,) = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert client.head_object(Bucket=bucket, Key=item["Key"])["ServerSideEncryption"] == "AES256"
    assert item["Key"].startswith("lake/proofpoint_tap_messages_blocked/2022/02/20/14/")
    body = gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    assert [json.loads(line) for line in body.splitlines()] == records


def test_a_gzip_file_of_records_is_shipped_as_its_records(tmp_path):
    """Exported records, compressed (`records.ndjson.gz`), as a backfill brings them."""
    records = [{"eventTime": "2022-02-20T14:00:00Z", "id": f"m{n}"} for n in range(3)]
    path = tmp_path / "records.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records)))
    result = ship("--table", "proofpoint_tap_messages_blocked", str(path))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {**record, "table": "proofpoint_tap_messages_blocked"} for record in records
    ]


def test_gzip_files_cut_short_are_told_after_every_record_that_could_be_read_is_delivered(tmp_path):
    """Downloads or copies that did not finish: the records before each cut and those of the
    other inputs are delivered and counted, then one error line naming each (exit 2)."""
    table = "proofpoint_tap_messages_blocked"
    whole, cut = tmp_path / "a.ndjson", tmp_path / "b.ndjson.gz"
    whole.write_text(
        "".join(json.dumps({"eventTime": "2022-02-20T14:00:00Z", "id": f"a{n}"}) + "\n" for n in range(3))
    )
    lines = b"".join(
        json.dumps({"eventTime": "2022-02-20T14:00:00Z", "id": f"b{n}"}).encode() + b"\n" for n in range(400)
    )
    compressed = gzip.compress(lines)
    cut.write_bytes(compressed[: len(compressed) - 40])  # the end of the stream is missing
    readable = zlib.decompressobj(wbits=31).decompress(cut.read_bytes()).count(b"\n")
    result = ship("--table", table, str(whole), str(cut), str(whole), str(cut))
    assert result.returncode == 2
    shipped = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    before_the_cut = [f"b{n}" for n in range(readable)]
    assert shipped == 2 * ([f"a{n}" for n in range(3)] + before_the_cut)
    told = f"cannot read {cut}: the gzip stream ends inside a member: the file was cut short"
    assert result.stderr.decode().splitlines() == [
        f"ppship ship: {2 * (3 + readable)} records delivered to {table}, 0 not readable",
        f"ppship: error: {told}; {told}",
    ]


def test_records_saved_as_utf16_by_windows_powershell_are_shipped(tmp_path):
    records = [{"eventTime": "2022-02-20T14:00:00Z", "id": "m0", "subject": "Grüße"}]
    path = tmp_path / "records.ndjson"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in records), encoding="utf-16")
    result = ship("--table", "proofpoint_tap_messages_blocked", str(path))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {**record, "table": "proofpoint_tap_messages_blocked"} for record in records
    ]


def test_text_lines_that_are_not_utf8_are_shipped_and_counted():
    lines = b"2022-02-20T08:35:00.000000+00:00 mx1 sendmail[1]: Q1: stat=Envoy\xe9\nplain line\n"
    result = ship("--table", "proofpoint_gateway_sendmail_logs", "--format", "text", input=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("stat=Envoy\ufffd".encode())
    assert b"2 records delivered" in result.stderr
    assert b"1 text lines with invalid UTF-8 (written with U+FFFD)" in result.stderr


def test_a_record_with_half_an_emoji_is_shipped_with_u_fffd_told_and_counted():
    """A subject cut inside a surrogate pair by a length limit, as JavaScript escapes it: the
    record was skipped whole; only the half character is lost now."""
    lines = b'{"id": 1, "subject": "Offer \\ud83d"}\n{"id": 2, "subject": "ok"}\n'
    result = ship("--table", "proofpoint_tap_clicks_blocked", input=lines)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["subject"] for line in result.stdout.splitlines()] == ["Offer \ufffd", "ok"]
    assert result.stderr.decode().splitlines() == [
        "ppship ship: <stdin>:1: a lone UTF-16 surrogate escape, read as U+FFFD; shipped so",
        "ppship ship: 2 records delivered to proofpoint_tap_clicks_blocked, 0 not readable, 1 records "
        "with a lone UTF-16 surrogate escape, shipped with U+FFFD in its place",
    ]


def test_records_that_cannot_be_written_are_skipped_by_line_and_counted():
    deep = '{"a": ' + "[" * 300 + "]" * 300 + "}"  # orjson reads it, but writes only 254 levels
    lines = "\n".join(['{"id": 1}', deep, "[1, 2]", "not json", '{"id": 2}']).encode()
    result = ship("--table", "proofpoint_tap_clicks_blocked", input=lines)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]
    assert b"<stdin>:2: a JSON object nested too deep to be written; skipped" in result.stderr
    assert b"<stdin>:3: not a JSON object; skipped" in result.stderr
    assert b"2 records delivered to proofpoint_tap_clicks_blocked, 3 not readable" in result.stderr


def test_text_lines_not_in_the_text_form_are_shipped_told_and_counted():
    good = b"2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: Q1: stat=Sent"
    raw = b"Feb 20 08:35:00 mx1 sendmail[1]: Q1: stat=Sent"  # not yet through gateway parse
    lines = [good, b"", raw, b"   ", b'{"text": "json"}'] + [raw] * 12
    result = ship("--table", "proofpoint_gateway_sendmail_logs", "--format", "text", input=b"\n".join(lines))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [good, raw, b'{"text": "json"}'] + [raw] * 12
    told = [line for line in result.stderr.splitlines() if b"shipped as it is" in line]
    assert len(told) == 10  # the first ten lines of the kind, not all fourteen
    assert told[0].startswith(b"ppship ship: <stdin>:3: 'Feb 20 08:35:00 mx1 sendmail[1]:' does not start")
    assert told[1] == b"ppship ship: <stdin>:5: JSON where text is expected; shipped as it is"
    summary = result.stderr.splitlines()[-1].decode()
    assert summary.startswith("ppship ship: 15 records delivered to proofpoint_gateway_sendmail_logs")
    assert "0 not readable, 2 empty lines skipped, 14 text lines not in the text tables' form" in summary
    assert summary.endswith("only the first 10 lines of each kind were told")


def test_a_line_of_the_other_tables_program_is_shipped_told_and_counted():
    # An agent routing sendmail lines to the filter table put them where no query looks for them.
    filter_line = b"2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=x mod=av"
    sendmail_line = b"2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: Q1: stat=Sent"
    lines = [filter_line, sendmail_line]
    result = ship("--table", "proofpoint_gateway_filter_logs", "--format", "text", input=b"\n".join(lines))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines
    assert result.stderr.decode().splitlines() == [
        "ppship ship: <stdin>:2: a line of sendmail, which belongs in proofpoint_gateway_sendmail_logs, "
        "not in proofpoint_gateway_filter_logs; shipped as it is",
        "ppship ship: 2 records delivered to proofpoint_gateway_filter_logs, 0 not readable, 1 lines of "
        "another table's program, shipped as they are (`ppship gateway parse --streams filter` or "
        "`--streams sendmail` writes one table's lines)",
    ]


GATEWAY_DEMO_LOG = Path(proofpoint_shipper.__file__).parent / "data" / "gateway-demo.log"
GATEWAY_SETTINGS = ("--timezone", "America/Chicago", "--reference-time", "2022-03-01T12:00:00-06:00")


@pytest.mark.parametrize(
    "table, streams",
    [("proofpoint_gateway_filter_logs", "filter"), ("proofpoint_gateway_sendmail_logs", "sendmail")],
)
def test_gateway_parse_records_shipped_to_a_text_table_land_as_its_text_lines(table, streams):
    """A capture of `gateway parse` (JSON, all streams) shipped to one text table lands that table's
    lines as `gateway parse --format text --streams` writes them (BSD, header-less and bad lines of
    the demo log among them), and tells the other records apart instead of landing their JSON."""
    records = run_ppship("gateway", "parse", *GATEWAY_SETTINGS, str(GATEWAY_DEMO_LOG)).stdout
    expected = run_ppship(
        "gateway", "parse", "--format", "text", "--streams", streams, *GATEWAY_SETTINGS, str(GATEWAY_DEMO_LOG)
    ).stdout
    result = ship("--table", table, "--format", "text", input=records)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    shipped, skipped = len(expected.splitlines()), len(records.splitlines()) - len(expected.splitlines())
    assert 0 < skipped < len(records.splitlines())
    summary = result.stderr.decode().splitlines()[-1]
    assert f"{skipped} records of another table (their `table` says so) skipped" in summary
    assert f"{shipped} JSON records of `ppship gateway parse` shipped as their text lines" in summary


def test_a_relay_record_lands_its_own_text_and_a_record_of_no_table_is_skipped():
    relayed = {
        "stream": "gateway_sendmail",
        "table": "proofpoint_gateway_sendmail_logs",
        "time": "t",
        "raw": "r",
    }
    relayed["text"] = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: Q1: stat=Sent"
    unrelated = {"stream": "other", "table": None, "time": "2022-02-20T08:35:00.157994-06:00", "raw": "x"}
    not_ours = {"stream": "gateway_sendmail", "time": 1, "raw": "r"}  # no gateway record: JSON as it is
    lines = b"\n".join(json.dumps(r).encode() for r in (relayed, unrelated, not_ours))
    result = ship("--table", "proofpoint_gateway_sendmail_logs", "--format", "text", input=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [relayed["text"].encode(), json.dumps(not_ours).encode()]
    told = result.stderr.decode().splitlines()
    assert told[0] == (
        "ppship ship: <stdin>:2: a record of no table (its `table` is null), not of "
        "proofpoint_gateway_sendmail_logs; skipped"
    )
    assert told[1] == "ppship ship: <stdin>:3: JSON where text is expected; shipped as it is"


def test_a_capture_of_a_collectors_stdout_lands_its_tables_records_as_a_direct_run_lands_them(
    local_s3, bucket, tmp_path
):
    """`tap fetch --output stdout` writes four tables' records, each with its `table` (routing
    only: the shipped agent configs drop it). Shipping that capture to one table lands that
    table's records, without the key, and tells the others apart instead of landing them there."""
    end = datetime.now(UTC) - timedelta(minutes=10)
    events = [replace(e, indexed=e.created) for e in generate(5, end - timedelta(hours=2), end, 60)]
    with TapSimulator(events, PRINCIPAL, SECRET) as simulator:
        fetch = subprocess.run(
            fetch_command(simulator, tmp_path, "--output", "stdout"),
            env=tap_environment(),
            capture_output=True,
            timeout=120,
            check=True,
        )
    captured = [json.loads(line) for line in fetch.stdout.splitlines()]
    table = "proofpoint_tap_clicks_blocked"
    ours = [
        {k: v for k, v in record.items() if k != "table"} for record in captured if record["table"] == table
    ]
    others = len(captured) - len(ours)
    assert ours and others
    flags = s3_flags(bucket, local_s3.endpoint_url)
    result = ship("--table", table, *flags, input=fetch.stdout, env=LOCAL_ENV)
    assert result.returncode == 0, result.stderr
    client = local_s3.client()
    landed = []
    for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
        assert item["Key"].startswith(f"{table}/")
        landed += gzip.decompress(
            client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        ).splitlines()
    assert sorted(json.loads(line)["id"] for line in landed) == sorted(record["id"] for record in ours)
    assert all(json.loads(line) in ours for line in landed)
    told = result.stderr.decode().splitlines()
    assert told[0].startswith("ppship ship: <stdin>:") and " (its `table`), not of " in told[0]
    assert f", {others} records of another table (their `table` says so) skipped: ship each" in told[-1]


def test_many_lines_with_invalid_utf8_are_counted_not_said_to_be_told():
    lines = b"2022-02-20T08:35:00.000000+00:00 mx1 sendmail[1]: Q1: stat=Envoy\xe9\n" * 15
    result = ship("--table", "proofpoint_gateway_sendmail_logs", "--format", "text", input=lines)
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines() == [
        "ppship ship: 15 records delivered to proofpoint_gateway_sendmail_logs, 0 not readable, "
        "15 text lines with invalid UTF-8 (written with U+FFFD)"
    ]


def test_empty_lines_are_skipped_and_counted_apart_from_unreadable_ones():
    result = ship("--table", "proofpoint_tap_clicks_blocked", input=b'{"id": 1}\n\n\r\n{"id": 2}\nnot json\n')
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]
    assert result.stderr.decode().splitlines() == [
        "ppship ship: <stdin>:5: not a JSON object; skipped",
        "ppship ship: 2 records delivered to proofpoint_tap_clicks_blocked, 1 not readable, "
        "2 empty lines skipped",
    ]


def test_a_record_from_a_pipe_that_stays_open_is_delivered_within_flush_seconds():
    """A live pipe bringing a line now and then: its records must not wait for 10,000 more."""
    with subprocess.Popen(
        [*SHIP_CLICKS, "--flush-seconds", "0.5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        try:
            child.stdin.write(b'{"id": 1}\n')
            child.stdin.flush()
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready, "the record did not come out while the input stayed open"
            assert json.loads(child.stdout.readline())["id"] == 1
            child.stdin.close()
            assert child.wait(timeout=30) == 0
            assert b"1 records delivered" in child.stderr.read()
        finally:
            child.kill()


def test_flush_records_below_a_thousand_flushes_at_that_count():
    """Records were handed to the output a thousand at a time, and --flush-records counted only
    those handed over: `--flush-records 5` flushed after a thousand records, or at --flush-seconds."""
    with subprocess.Popen(
        [*SHIP_CLICKS, "--flush-records", "5", "--flush-seconds", "3600"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        try:
            child.stdin.write(b"".join(b'{"id": %d}\n' % number for number in range(5)))
            child.stdin.flush()
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready, "five records did not come out at --flush-records 5"
            assert [json.loads(child.stdout.readline())["id"] for _ in range(5)] == [0, 1, 2, 3, 4]
            child.stdin.close()
            assert child.wait(timeout=30) == 0
        finally:
            child.kill()


def test_an_output_gone_past_its_retries_says_how_many_records_it_did_not_deliver():
    """Read from a pipe, records past the output's retries are gone with the process: the user must
    learn how many, to send them again; before, only the S3 error was told."""
    from proofpoint_shipper.local_s3 import LocalS3

    command = [*SHIP_CLICKS, "--flush-seconds", "0.5"]
    with LocalS3("outage") as s3:  # its own server: this test stops it
        command += s3_flags("outage", s3.endpoint_url)
        env = {**os.environ, **LOCAL_ENV, "PYTHONWARNINGS": "error"}
        with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as child:
            try:
                child.stdin.write(b'{"id": 1}\n')
                child.stdin.flush()
                wait_for(lambda: s3.client().list_objects_v2(Bucket="outage").get("KeyCount"))
                s3.stop()
                child.stdin.write(b'{"id": 2}\n{"id": 3}\n')
                child.stdin.close()
                assert child.wait(timeout=120) == 2
                *_, summary, error = child.stderr.read().decode().splitlines()
            finally:
                child.kill()
    assert summary == (
        "ppship ship: 1 records delivered to proofpoint_tap_clicks_blocked, 2 read but not confirmed "
        "delivered, 0 not readable; ship them again once the output is back (--spool-dir keeps them on "
        "disk through an S3 outage)"
    )
    assert error.startswith("ppship: error: S3 did not take s3://outage/proofpoint_tap_clicks_blocked/")


def test_a_line_over_the_record_bound_is_skipped_and_the_next_one_shipped():
    huge = b'{"id": 0, "pad": "' + b"x" * (64 * 1024 * 1024) + b'"}'
    result = ship("--table", "proofpoint_tap_clicks_blocked", input=huge + b'\n{"id": 1}\n')
    assert result.returncode == 0, result.stderr[-300:]
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1]
    assert b"<stdin>:1: longer than 67108864 bytes; skipped" in result.stderr


def test_unknown_table(local_s3):
    assert "unknown table 'proofpoint_bogus'" in one_error_line(ship("--table", "proofpoint_bogus"))


def test_missing_bucket(local_s3):
    result = ship(
        "--table",
        "proofpoint_tap_clicks_blocked",
        *s3_flags("not-there-bucket", local_s3.endpoint_url),
        env=LOCAL_ENV,
    )
    assert "bucket not-there-bucket does not exist" in one_error_line(result)


def test_unwritable_spool_directory(local_s3, bucket, tmp_path):
    (tmp_path / "file").write_text("x")
    spool = str(tmp_path / "file" / "spool")
    flags = s3_flags(bucket, local_s3.endpoint_url, "--spool-dir", spool)
    result = ship("--table", "proofpoint_tap_clicks_blocked", *flags, env=LOCAL_ENV)
    assert re.search(r"spool directory .* is not writable", one_error_line(result))


def test_missing_input_file():
    result = ship("--table", "proofpoint_tap_clicks_blocked", "/nonexistent/records.ndjson")
    assert "cannot read /nonexistent/records.ndjson" in one_error_line(result)


def test_missing_shared_key_file():
    result = ship(
        "--table",
        "proofpoint_tap_clicks_blocked",
        "--output",
        "forward",
        "--shared-key-file",
        "/nonexistent/key",
    )
    assert "cannot read the shared key file" in one_error_line(result)


def test_the_shared_key_from_the_environment_is_read_without_the_newline_echo_leaves():
    receiver = ForwardReceiver(shared_key="right-key").start()
    try:
        result = run_ppship(
            *("ship", "--table", "proofpoint_tap_clicks_blocked", "--output", "forward"),
            *("--forward", f"127.0.0.1:{receiver.port}"),
            input=b'{"id": "a"}\n',
            env={"PPSHIP_FORWARD_SHARED_KEY": "right-key\n"},
        )
    finally:
        receiver.stop()
    assert result.returncode == 0, result.stderr.decode()
    assert [record["id"] for _, _, record in receiver.entries] == ["a"]


@pytest.fixture
def s3_with_auth():
    """A local S3 that, after creating its bucket, checks credentials as AWS does."""
    with checking_s3("auth-bucket", unchecked_calls=2) as endpoint:
        yield endpoint


def test_wrong_credentials(s3_with_auth):
    result = ship(
        "--table",
        "proofpoint_tap_clicks_blocked",
        *s3_flags("auth-bucket", s3_with_auth),
        env={**LOCAL_ENV, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG"},
    )
    assert "S3 refused our credentials for bucket auth-bucket" in one_error_line(result)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_delivers_what_was_read_and_exits_0(signum):
    """SIGHUP too: a closed terminal or SSH session, where a pipe cannot send the records again."""
    read_end, write_end = os.pipe()
    with subprocess.Popen(
        SHIP_CLICKS, stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        os.write(write_end, b'{"id": "a"}\n{"id": "b"}\n')  # then the pipe stays open and quiet
        wait_for(lambda: not _bytes_in_pipe(read_end))  # read by the child, held for the next flush
        child.send_signal(signum)
        out, err = child.communicate(timeout=60)
    os.close(read_end)
    os.close(write_end)
    assert child.returncode == 0, err.decode()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["a", "b"]
    assert err.decode().startswith(
        "ppship ship: 2 records delivered to proofpoint_tap_clicks_blocked (stopped early)"
    )


def test_a_stop_also_delivers_what_the_pipe_held_and_tells_an_unfinished_line():
    """The stop comes with more in the pipe than one read takes (a writer stopped with it, in a
    pipeline under one service, sends it no more): that is delivered too. The child is paused
    (SIGSTOP) while the pipe is filled, so that the stop finds it all there."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1024 * 1024)
    records = [json.dumps({"id": str(n), "pad": "x" * 100}).encode() for n in range(2000)]
    with subprocess.Popen(
        SHIP_CLICKS, stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        os.write(write_end, b'{"id": "first"}\n')
        wait_for(lambda: not _bytes_in_pipe(read_end))  # read: the child waits for more
        child.send_signal(signal.SIGSTOP)
        write_all(write_end, b"\n".join(records) + b'\n{"id": "cut')  # 238 KB: four reads
        child.send_signal(signal.SIGTERM)
        child.send_signal(signal.SIGCONT)
        out, err = child.communicate(timeout=60)
    os.close(read_end)
    os.close(write_end)
    assert child.returncode == 0, err.decode()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["first"] + [str(n) for n in range(2000)]
    assert err.decode().startswith(
        "ppship ship: 2001 records delivered to proofpoint_tap_clicks_blocked (stopped early; "
        "the 11 bytes of a line whose end had not come left out)"
    )


def _bytes_in_pipe(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
