"""`ppship tap fetch` as a real process against the simulator: credentials, and kill -9 at random."""

import argparse
import dataclasses
import gzip
import io
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from proofpoint_shipper.cli import build_parser
from proofpoint_shipper.tap.command import cursor_store, poll_loop
from proofpoint_shipper.tap.events import generate
from proofpoint_shipper.tap.simulator import TapSimulator
from tests.conftest import limited_ppship, one_error_line, stopped_while_unanswered, wait_for
from tests.tap_harness import PRINCIPAL, SECRET, tap_fetcher

FETCH = [sys.executable, "-m", "proofpoint_shipper", "tap", "fetch", "--once"]


def fetch_command(simulator, tmp_path, *args: str, mode: str = "--once", since: str = "7h") -> list[str]:
    return [
        sys.executable,
        "-m",
        "proofpoint_shipper",
        "tap",
        "fetch",
        mode,
        "--base-url",
        simulator.url,
        "--cursor",
        str(tmp_path / "cursor.json"),
        "--since",
        since,
        *args,
    ]


def environment(secret: str = SECRET, **extra) -> dict:
    return {
        **os.environ,
        "TAP_PRINCIPAL": PRINCIPAL,
        "TAP_SECRET": secret,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }


@pytest.fixture
def simulator():
    """Six hours of events, all indexed at once, ending ten minutes ago (real clock)."""
    end = datetime.now(UTC) - timedelta(minutes=10)
    events = [
        dataclasses.replace(e, indexed=e.created) for e in generate(21, end - timedelta(hours=6), end, 60)
    ]
    with TapSimulator(events, PRINCIPAL, SECRET) as server:
        yield server


def run_fetch(simulator, tmp_path, *args: str, secret: str = SECRET) -> subprocess.CompletedProcess:
    command = fetch_command(simulator, tmp_path, *args)
    return subprocess.run(command, env=environment(secret), capture_output=True, timeout=120, check=False)


def test_wrong_credentials_exit_2_with_one_line(simulator, tmp_path):
    result = run_fetch(simulator, tmp_path, secret="wrong")
    assert result.returncode == 2
    errors = [line for line in result.stderr.decode().splitlines() if "ppship: error" in line]
    assert len(errors) == 1 and "refused our credentials (401" in errors[0]
    assert "wrong" not in result.stderr.decode()  # the secret is never echoed
    assert "Traceback" not in result.stderr.decode()


def test_missing_credentials_exit_2(tmp_path):
    env = {k: v for k, v in environment().items() if k not in ("TAP_PRINCIPAL", "TAP_SECRET")}
    result = subprocess.run(
        [*FETCH, "--cursor", str(tmp_path / "c.json")], env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2 and b"TAP credentials missing" in result.stderr


# `ppship ARGS` on a host of the given name: a restarted Kubernetes pod's new name, which a test
# cannot give the machine, is what socket.gethostname() answers in the process.
ON_HOST = """
import runpy, socket, sys
host = sys.argv[1]
socket.gethostname = lambda: host
sys.argv = ["ppship", *sys.argv[2:]]
runpy.run_module("proofpoint_shipper", run_name="__main__")
"""


def kill_at_random_then_finish(
    simulator, tmp_path, output_args: list[str], kills: int, seed: int, new_host_each_run: bool = False
) -> list[bytes]:
    """Start the fetcher, SIGKILL it at random moments, restart; finally let a run complete."""
    simulator.slow_seconds = 0.05
    rng = random.Random(seed)
    outputs = []
    fetch = fetch_command(simulator, tmp_path, *output_args)

    def command(run: int) -> list[str]:
        return [sys.executable, "-c", ON_HOST, f"pod-{run}", *fetch[3:]] if new_host_each_run else fetch

    for run in range(kills):
        with subprocess.Popen(
            command(run), env=environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as child:
            time.sleep(rng.uniform(0.4, 1.6))
            child.kill()
            outputs.append(child.stdout.read())
            child.wait(timeout=30)
    final = subprocess.run(command(kills), env=environment(), capture_output=True, timeout=120, check=False)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    outputs.append(final.stdout)
    return outputs


def expected_ids(simulator) -> set[str]:
    return {e.wire["id"] for e in simulator.events}


def test_kill_9_at_random_points_loses_nothing_on_stdout(simulator, tmp_path):
    outputs = kill_at_random_then_finish(simulator, tmp_path, [], kills=4, seed=5)
    ids = Counter(
        json.loads(line)["id"]
        for out in outputs
        for line in out.splitlines()
        if line.startswith(b"{") and line.endswith(b"}")
    )
    assert set(ids) == expected_ids(simulator)  # duplicates may appear: a kill between flush and save


def test_kill_9_at_random_points_with_s3_neither_loses_nor_duplicates(simulator, tmp_path, local_s3, bucket):
    s3 = ["--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url]
    kill_at_random_then_finish(simulator, tmp_path, s3, kills=4, seed=9)
    ids = landed_ids(local_s3.client(), bucket)
    assert set(ids) == expected_ids(simulator)
    assert max(ids.values()) == 1


def test_kill_9_with_the_cursor_in_s3_and_a_new_host_each_restart_neither_loses_nor_duplicates(
    simulator, tmp_path, local_s3, bucket
):
    """As a Kubernetes Deployment runs it: each restart on a pod of another name."""
    s3 = ["--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url]
    s3 += ["--cursor", f"s3://{bucket}/ppship-state/tap.json", "--dead-letter-dir", str(tmp_path / "dl")]
    kill_at_random_then_finish(simulator, tmp_path, s3, kills=4, seed=9, new_host_each_run=True)
    ids = landed_ids(local_s3.client(), bucket)
    assert set(ids) == expected_ids(simulator)
    assert max(ids.values()) == 1


def test_two_collectors_of_one_host_whose_windows_coincide_keep_each_others_objects(
    simulator, tmp_path, local_s3, bucket
):
    """Two tenants' collectors on one host, each with its cursor file, started with the same
    --since: their windows coincide, and with keys of the host and window alone the second
    replaced the first's objects, whose events were lost without a word."""
    end = datetime.now(UTC) - timedelta(minutes=10)
    other_events = [
        dataclasses.replace(e, indexed=e.created) for e in generate(22, end - timedelta(hours=6), end, 60)
    ]
    start = (end - timedelta(hours=5)).replace(microsecond=0)
    since = start.strftime("%Y-%m-%dT%H:%M:%SZ")  # the same windows for both
    s3 = ["--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url]
    with TapSimulator(other_events, PRINCIPAL, SECRET) as other:
        for tenant, api in (("a", simulator), ("b", other)):
            state = tmp_path / tenant
            command = fetch_command(api, state, *s3, "--dead-letter-dir", str(state / "dl"), since=since)
            result = subprocess.run(command, env=environment(), capture_output=True, timeout=120, check=False)
            assert result.returncode == 0, result.stderr.decode()[-2000:]
    # The generator dates a few events after its end, some past what a fetch reaches now.
    events = [*simulator.events, *other_events]
    landed = set(landed_ids(local_s3.client(), bucket))
    assert {e.wire["id"] for e in events if start <= e.created <= end} <= landed
    assert landed <= {e.wire["id"] for e in events}


def landed_ids(client, bucket: str) -> Counter:
    """How often each event id landed in the TAP tables."""
    ids = Counter()
    for item in client.list_objects_v2(Bucket=bucket, Prefix="proofpoint_tap_").get("Contents", []):
        body = gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        ids.update(json.loads(line)["id"] for line in body.splitlines())
    return ids


def test_a_cursor_in_s3_is_written_with_the_s3_outputs_encryption(simulator, tmp_path, local_s3, bucket):
    """A bucket policy that denies unencrypted uploads would refuse the cursor written without it."""
    s3 = ["--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url]
    s3 += ["--sse", "AES256", "--acl", "bucket-owner-full-control", "--dead-letter-dir", str(tmp_path / "dl")]
    result = run_fetch(simulator, tmp_path, *s3, "--cursor", f"s3://{bucket}/cursors/tap.json")
    assert result.returncode == 0, result.stderr.decode()
    head = local_s3.client().head_object(Bucket=bucket, Key="cursors/tap.json")
    assert head["ServerSideEncryption"] == "AES256"


def test_a_cursor_in_s3_is_reached_in_the_region_of_the_s3_output(monkeypatch):
    """botocore reads no AWS_REGION (a name other tools use): without --region, us-east-1."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    cursor = ["--cursor", "s3://lake/ppship-state/tap.json", "--output", "s3", "--bucket", "lake"]
    args = build_parser(["tap"]).parse_args(["tap", "fetch", *cursor, "--region", "eu-central-1"])
    assert cursor_store(args).client.meta.region_name == "eu-central-1"


def test_follow_polls_again_and_stops_cleanly_on_sigterm(simulator, tmp_path):
    import signal

    command = fetch_command(simulator, tmp_path, "--interval", "0.3", mode="--follow")
    with subprocess.Popen(
        command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as child:
        told = []
        while sum(b"TAP poll done" in line for line in told) < 2:
            told.append(child.stderr.readline())
            assert told[-1], "the fetcher ended before its second poll"
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=60)
    assert child.returncode == 0
    # 0.3 s is for the test: a real API would answer 429 within the hour, and the user is told
    assert b"--interval 0.3 s: about 288000 polls a day, over the ~1800 requests" in told[0]


def test_a_follower_outlives_an_api_outage_and_catches_up_after_it(simulator, tmp_path, caplog):
    """In process, for a fast retry policy; past its bound the real command does the same."""
    out = io.BytesIO()
    client, fetcher = tap_fetcher(simulator, tmp_path, out)
    args = argparse.Namespace(
        follow=True,
        interval=timedelta(seconds=0.2),
        since=datetime.now(UTC) - timedelta(hours=7),
        backfill=False,
    )
    stop = threading.Event()
    simulator.fail_rate = 1.0  # the API answers 500 to everything: every poll gives up
    with caplog.at_level(logging.INFO, "proofpoint_shipper"):
        loop = threading.Thread(target=poll_loop, args=(fetcher, args, stop))
        loop.start()
        try:
            wait_for(lambda: sum("TAP poll failed" in m for m in caplog.messages) >= 2)
            simulator.fail_rate = 0.0  # the API is back
            wait_for(lambda: any("TAP poll done" in m for m in caplog.messages))
        finally:
            stop.set()
            loop.join(30)
            client.close()
    assert not loop.is_alive()
    (failed, *_) = [m for m in caplog.messages if "TAP poll failed" in m]
    assert "gave up after 6 tries" in failed and failed.endswith("next poll in 0.2 s")
    ids = {json.loads(line)["id"] for line in out.getvalue().splitlines()}
    assert ids == expected_ids(simulator)


def test_a_backfill_asked_for_while_an_interrupted_run_waits_runs_after_it(simulator, tmp_path, caplog):
    """`--since ... --backfill` on a cursor holding an interrupted run's windows: those were
    finished, and the backfill asked for was not run at all, with one line of info."""
    now = datetime.now(UTC)
    last_hour = [[(now - timedelta(hours=1)).isoformat(), (now - timedelta(minutes=2)).isoformat()]]
    cursor = {"cursor": (now - timedelta(hours=1)).isoformat(), "seen": {}, "pending": last_hour}
    (tmp_path / "cursor.json").write_text(json.dumps(cursor))
    out = io.BytesIO()
    client, fetcher = tap_fetcher(simulator, tmp_path, out)
    since = now - timedelta(hours=7)
    args = argparse.Namespace(follow=False, interval=timedelta(minutes=5), since=since, backfill=True)
    with caplog.at_level(logging.INFO, "proofpoint_shipper"):
        try:
            poll_loop(fetcher, args, threading.Event())
        finally:
            client.close()
    ids = Counter(json.loads(line)["id"] for line in out.getvalue().splitlines())
    assert set(ids) == expected_ids(simulator)  # the backfill's six hours, not the last one alone
    assert f"now the backfill from {since.isoformat()}" in caplog.text


def test_a_follower_whose_stdout_reader_went_away_stops_without_waiting_to_write(simulator, tmp_path):
    """An exec input's agent stopped: the follower must not hold its cursor until its next write."""
    command = fetch_command(simulator, tmp_path, "--interval", "1h", mode="--follow", since="5m")  # no events
    with subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        try:
            told = []
            while b"TAP poll done" not in (line := child.stderr.readline()):
                assert line, "the fetcher ended before its first poll was done"
                told.append(line)
            child.stdout.close()  # the agent goes away; the next poll is an hour off
            _, stderr = child.communicate(timeout=30)
        finally:
            child.kill()
    assert child.returncode == 0, stderr.decode()
    assert b"the reader of stdout went away: stopping" in stderr
    assert not any(b"polls a day" in line for line in told)  # an hour: 24 polls, well within the quota


def test_sigterm_during_a_retry_wait_stops_at_once_with_exit_0(simulator, tmp_path):
    import signal

    simulator.fail_rate = 1.0  # every request answered 500: the client waits to retry
    command = fetch_command(simulator, tmp_path)
    with subprocess.Popen(
        command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as child:
        line = child.stderr.readline()
        assert b"retry 1 of" in line, line
        child.send_signal(signal.SIGTERM)
        _, rest = child.communicate(timeout=60)
    assert child.returncode == 0, rest.decode()
    assert b"retry 2 of" not in rest  # no retry after the stop
    assert b"TAP fetch stopped while waiting to retry; its window is fetched on the next run" in rest
    state = json.loads((tmp_path / "cursor.json").read_text())
    assert state["pending"], "the unfinished window stays to be fetched"


def test_sigterm_while_the_api_has_not_answered_stops_at_once_with_exit_0(tmp_path):
    """An API that took the request and sends nothing: the read timeout is minutes long (an hour's
    answer can be slow to start), longer than a service manager waits before SIGKILL. The stop
    ends the request; the window is fetched on the next run."""
    command = [
        *FETCH,
        "--base-url",
        "http://{server}",
        "--cursor",
        str(tmp_path / "cursor.json"),
        "--since",
        "2h",
        "--metrics-port",
        "0",  # its thread, and the stdout reader's, must leave the stop signal to the main thread
    ]
    result = stopped_while_unanswered(command, environment(), b"GET /v2/siem/all?", timeout=30)  # not 120 s
    told = result.stderr
    assert result.returncode == 0, told.decode()
    assert b"TAP fetch stopped during a request to the API; its window is fetched on the next run" in told
    assert b"Traceback" not in told
    state = json.loads((tmp_path / "cursor.json").read_text())
    assert state["pending"], "the unfinished window stays to be fetched"
    assert not list((tmp_path / "partial").iterdir()), "no partial answer is left behind"


def test_since_7d_the_bound_the_help_gives_starts_at_the_oldest_time_the_api_serves(simulator, tmp_path):
    result = subprocess.run(
        fetch_command(simulator, tmp_path, since="7d"), env=environment(), capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()[-500:]
    assert b"can no longer be fetched: the API serves only the last 7 days" in result.stderr


@pytest.mark.parametrize(
    "written", [SECRET + "\n", "\ufeff" + SECRET + "\r\n"], ids=["echo", "Windows Notepad: BOM and CRLF"]
)
def test_secret_from_a_file(simulator, tmp_path, written):
    secret_file = tmp_path / "tap-secret"
    secret_file.write_bytes(written.encode())
    env = {k: v for k, v in environment().items() if k != "TAP_SECRET"}
    command = fetch_command(simulator, tmp_path, "--secret-file", str(secret_file), since="1h")
    result = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()[-500:]
    assert SECRET not in result.stderr.decode()


def test_credentials_in_the_environment_are_taken_without_a_trailing_newline(simulator, tmp_path):
    """A secret made with `echo` (a Kubernetes secret from a file, an .env file) keeps its
    newline; the secret file was always read without it, the variables were not: a 401."""
    env = environment(secret=SECRET + "\n", TAP_PRINCIPAL=PRINCIPAL + "\n")
    result = subprocess.run(
        fetch_command(simulator, tmp_path, since="1h"), env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()[-500:]


def test_an_answer_that_cannot_be_written_is_one_line_and_the_windows_stay_pending(simulator, tmp_path):
    ppship_args = fetch_command(simulator, tmp_path, "--output", "stdout")[3:]
    result = subprocess.run(
        limited_ppship(8192, *ppship_args),  # the cursor fits, an answer does not
        env=environment(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert result.stderr.decode().splitlines()[-1] == (
        f"ppship: error: the TAP answer cannot be written to {tmp_path / 'partial'}: File too large"
    )
    assert json.loads((tmp_path / "cursor.json").read_text())["pending"]  # fetched on the next run
    assert list((tmp_path / "partial").iterdir()) == []  # no half answer left behind


def test_a_disk_with_no_room_at_all_stops_the_fetch_before_it_reads_naming_the_cursor(simulator, tmp_path):
    ppship_args = fetch_command(simulator, tmp_path, "--output", "stdout")[3:]
    result = subprocess.run(
        limited_ppship(0, *ppship_args),  # not one byte fits, as on a full disk
        env=environment(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert one_error_line(result) == (
        f"ppship: error: cursor file {tmp_path / 'cursor.json'} cannot be locked: File too large"
    )
    assert result.stdout == b""  # nothing fetched that the cursor could not then record
