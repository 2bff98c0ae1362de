"""`ppship pod stream` as a real process: SIGTERM closes, flushes, saves and exits 0."""

import argparse
import gzip
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from proofpoint_shipper.local_s3 import LocalS3
from proofpoint_shipper.pod.events import Timeline
from proofpoint_shipper.pod.simulator import PodSimulator
from proofpoint_shipper.sinks.spool import Spool
from tests.conftest import limited_ppship, one_error_line, stopped_while_unanswered, wait_for

TOKEN, CLUSTER = "cli-token", "hosted_cid"
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def simulator():
    with PodSimulator(Timeline(8, datetime.now(UTC) - timedelta(days=1), rate=2), TOKEN, CLUSTER) as server:
        yield server


def command(simulator, tmp_path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "proofpoint_shipper",
        "pod",
        "stream",
        "--type",
        "message",
        "--url",
        simulator.url,
        "--cursor",
        str(tmp_path / "pod.json"),
        "--dead-letter-dir",
        str(tmp_path / "dl"),
        *extra,
    ]


def test_sigterm_closes_flushes_saves_and_exits_0(simulator, tmp_path):
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    with subprocess.Popen(
        command(simulator, tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        first = child.stdout.readline()  # records are flowing
        assert first.startswith(b"{")
        child.send_signal(signal.SIGTERM)
        rest = child.stdout.read()  # through the same buffered reader as the first line
        stderr = child.stderr.read()
        child.wait(timeout=60)
    assert child.returncode == 0, stderr.decode()[-1000:]
    records = [json.loads(line) for line in [first, *rest.splitlines()]]
    assert json.loads((tmp_path / "pod.json").read_text())["last_ts"] == records[-1]["ts"]
    assert b"Traceback" not in stderr


def test_sigterm_while_the_api_has_not_answered_the_handshake_stops_at_once_with_exit_0(tmp_path):
    """An API that took the connection and sends nothing: the handshake waits up to 30 s, which
    a stop must not wait out, nor read as a dropped stream to reconnect to."""
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    stream = command(argparse.Namespace(url="ws://{server}/v1/stream"), tmp_path)
    result = stopped_while_unanswered(stream, env, b"GET /v1/stream?", timeout=20)  # not the 30 s
    told = result.stderr
    assert result.returncode == 0, told.decode()
    assert b"reconnect 1 of" not in told and b"Traceback" not in told, told.decode()
    assert b"PoD message: 0 events, 0 resent removed, 0 bad frames, 0 reconnects" in told


def test_missing_token_or_cluster_exits_2_with_one_line(simulator, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("POD_TOKEN", "POD_CLUSTER_ID")}
    result = subprocess.run(
        command(simulator, tmp_path), env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2 and b"PoD token missing" in result.stderr
    result = subprocess.run(
        command(simulator, tmp_path),
        env={**env, "POD_TOKEN": TOKEN},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and b"cluster id missing" in result.stderr


@pytest.mark.parametrize("token", ["two\nlines", "with space", "tab\there"], ids=["newline", "space", "tab"])
def test_a_token_no_authorization_header_can_carry_is_one_line_not_seven_reconnects(
    simulator, tmp_path, token
):
    env = {**os.environ, "POD_TOKEN": token, "POD_CLUSTER_ID": CLUSTER}
    result = subprocess.run(command(simulator, tmp_path), env=env, capture_output=True, timeout=60)
    assert one_error_line(result) == (
        "ppship: error: the PoD token holds white space or control characters, which no "
        "Authorization header carries: check POD_TOKEN or --token-file"
    )
    assert token.encode() not in result.stderr


def test_token_and_cluster_id_in_the_environment_are_taken_without_a_trailing_newline(simulator, tmp_path):
    """Before, the token's newline made every handshake fail (InvalidHeaderValue), retried as a
    dropped stream, and the cluster id's made the API refuse the request."""
    env = {**os.environ, "POD_TOKEN": TOKEN + "\n", "POD_CLUSTER_ID": CLUSTER + "\n"}
    result = subprocess.run(
        command(simulator, tmp_path, "--max-events", "5"), env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()[-800:]
    assert len(result.stdout.splitlines()) == 5


def test_409_from_the_command_is_one_line_and_exit_2(simulator, tmp_path):
    from websockets.sync.client import connect

    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with connect(
        f"{simulator.url}?cid={CLUSTER}&type=maillog", additional_headers=headers, close_timeout=0.5
    ):
        result = subprocess.run(
            command(simulator, tmp_path, "--max-events", "3"),
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    errors = [line for line in result.stderr.decode().splitlines() if "ppship: error" in line]
    assert result.returncode == 2 and len(errors) == 1 and "holds the token's live session" in errors[0]
    assert TOKEN not in result.stderr.decode()


def test_dead_letters_are_kept_beside_the_cursor_not_in_the_current_folder(simulator, tmp_path):
    """A service's current folder is "/" (systemd), read-only in the shipped unit's sandbox: the
    default folder under it stopped the collector at start with exit 2, again at each restart."""
    simulator.bad_frames.append("not_json")
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    elsewhere.mkdir()
    stream = command(simulator, tmp_path, "--max-events", "3")
    at = stream.index("--dead-letter-dir")
    del stream[at : at + 2]
    stream[stream.index("--cursor") + 1] = str(state / "pod.json")
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    result = subprocess.run(stream, env=env, cwd=elsewhere, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    (kept,) = (state / "dead-letter" / "pod-message.ndjson").read_text().splitlines()
    assert json.loads(kept)["frame"] == "{not json"
    assert not list(elsewhere.iterdir())


def test_a_dead_letter_that_cannot_be_written_is_told_and_the_stream_goes_on(simulator, tmp_path):
    """A full disk under the dead-letter folder: a local fault, not a drop of the stream."""
    simulator.bad_frames.append("oversized:5000000")  # kept in part: 64 KiB, more than the limit
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    ppship_args = command(simulator, tmp_path, "--max-events", "5")[3:]
    result = subprocess.run(
        limited_ppship(16384, *ppship_args), env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    stderr = result.stderr.decode()
    assert "could not be kept in" in stderr and "File too large" in stderr
    assert "stream dropped" not in stderr  # not taken for a dropped stream
    assert (tmp_path / "dl" / "pod-message.ndjson").read_bytes() == b""  # no cut line left behind
    assert len(result.stdout.splitlines()) == 5


def test_an_s3_outage_is_spooled_by_default_as_the_api_never_resends(simulator, tmp_path):
    """`--output s3` without --spool-dir: the outage's events go to a spool beside the cursor."""
    simulator.stall_seconds = 0.002  # a steady flow, so the outage falls in the middle
    env = {**os.environ, **LOCAL_AWS, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    first = LocalS3("pod-outage").start()
    s3 = ["--output", "s3", "--bucket", "pod-outage", "--endpoint-url", first.endpoint_url]
    with subprocess.Popen(
        command(simulator, tmp_path, *s3), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as child:
        wait_for(lambda: first.client().list_objects_v2(Bucket="pod-outage").get("KeyCount", 0) > 0)
        first.stop()  # S3 goes away while events keep coming
        while b"kept in the spool" not in (line := child.stderr.readline()):
            assert line, "the stream ended instead of spooling"
        child.send_signal(signal.SIGTERM)
        stderr = child.stderr.read()
        child.wait(timeout=120)
    assert child.returncode == 0, stderr.decode()[-1000:]
    spool = Spool(tmp_path / "spool", "pod-outage")
    spooled = sum(len(gzip.decompress(body).splitlines()) for _, _, body, _ in spool.items())
    assert spooled > 0

    streamed = int(re.search(rb"PoD message: (\d+) events", stderr).group(1))
    second = LocalS3("pod-outage", port=first.port).start()  # S3 is back, with what it held (moto
    # keeps its objects in this process)
    try:
        subprocess.run(
            command(simulator, tmp_path, *s3, "--max-events", "1"), env=env, timeout=120, check=True
        )
        client = second.client()
        keys = [item["Key"] for item in client.list_objects_v2(Bucket="pod-outage")["Contents"]]
        landed = sum(
            len(gzip.decompress(client.get_object(Bucket="pod-outage", Key=key)["Body"].read()).splitlines())
            for key in keys
        )
    finally:
        second.stop()
    assert len(spool) == 0 and landed == streamed + 1  # each event once, the new one included


def test_a_reader_gone_from_stdout_ends_the_stream_not_held_for_ever(simulator, tmp_path):
    """Under an agent's exec input, the agent going away closes our stdout for good."""
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    with subprocess.Popen(
        command(simulator, tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdout.readline().startswith(b"{")  # records are flowing
        child.stdout.close()  # the reader goes away
        stderr = child.stderr.read()
        child.wait(timeout=60)
    assert child.returncode == 2
    assert stderr.decode().splitlines()[-1] == "ppship: error: cannot write to stdout: Broken pipe"
    assert "holding them" not in stderr.decode()


def saved(tmp_path) -> dict:
    try:
        return json.loads((tmp_path / "pod.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_a_run_killed_before_its_last_save_is_told_at_the_next_start_with_the_backfill(simulator, tmp_path):
    """The API resumes after the last event it sent, so what a killed run had taken and not
    saved is not sent again live. That was lost in silence; the next start says from when."""
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    with subprocess.Popen(command(simulator, tmp_path), env=env, stdout=subprocess.DEVNULL) as child:
        wait_for(lambda: saved(tmp_path).get("last_ts"))  # a flush saved its place
        child.kill()
    unsaved_from = saved(tmp_path)["unsaved_from"]
    assert unsaved_from == saved(tmp_path)["last_ts"]
    again = subprocess.run(
        command(simulator, tmp_path, "--duration", "1"), env=env, capture_output=True, timeout=60, check=False
    )
    assert again.returncode == 0, again.stderr.decode()[-1000:]
    (told,) = [
        line for line in again.stderr.decode().splitlines() if "stopped without saving its place" in line
    ]
    assert f"sent it after {unsaved_from} and it had not stored" in told
    assert f"ppship pod stream --type message --since {unsaved_from} --until " in told
    assert "unsaved_from" not in saved(tmp_path)  # stopped at its end: marked closed


def test_a_run_stopped_by_sigterm_is_not_told_as_killed(simulator, tmp_path):
    env = {**os.environ, "POD_TOKEN": TOKEN, "POD_CLUSTER_ID": CLUSTER}
    with subprocess.Popen(command(simulator, tmp_path), env=env, stdout=subprocess.DEVNULL) as child:
        wait_for(lambda: saved(tmp_path).get("last_ts"))
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    assert child.returncode == 0 and "unsaved_from" not in saved(tmp_path)
    again = subprocess.run(
        command(simulator, tmp_path, "--duration", "1"), env=env, capture_output=True, timeout=60, check=False
    )
    assert again.returncode == 0 and b"without saving its place" not in again.stderr
