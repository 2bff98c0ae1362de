"""Cursor stores: atomic file cursors (shown with a real kill -9) and S3 cursors with If-Match."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proofpoint_shipper.bucket.access import open_client
from proofpoint_shipper.bucket.object_settings import ObjectSettings
from proofpoint_shipper.checkpoint import FileCursorStore, S3CursorStore
from proofpoint_shipper.errors import ConfigError, CursorConflict
from tests.answer_cutter import AnswerCutter
from tests.conftest import put_headers


def test_file_cursor_round_trip(tmp_path):
    store = FileCursorStore(tmp_path / "state" / "tap.json")
    assert store.load() is None
    store.save({"queryEndTime": "2022-02-20T14:00:00Z", "seen": ["a"]})
    assert FileCursorStore(tmp_path / "state" / "tap.json").load() == {
        "queryEndTime": "2022-02-20T14:00:00Z",
        "seen": ["a"],
    }


@pytest.mark.parametrize("folder", ["/", "{tmp}"])
def test_a_folder_given_as_cursor_file_is_a_config_error(tmp_path, folder):
    with pytest.raises(ConfigError, match="is a folder: name a file in it"):
        FileCursorStore(Path(folder.format(tmp=tmp_path)))


@pytest.mark.parametrize("kind", ["device", "pipe"])
def test_a_device_or_a_pipe_given_as_cursor_file_is_a_config_error(tmp_path, kind):
    """Read whole, /dev/zero filled memory until the kernel killed the process (and maybe
    another); a pipe waited for a writer for ever."""
    path = Path("/dev/zero")
    if kind == "pipe":
        path = tmp_path / "cursor.json"
        os.mkfifo(path)
    with pytest.raises(
        ConfigError, match=f"^cursor file {path} is not a regular file: name a file of its own$"
    ):
        FileCursorStore(path)


def test_a_cursor_that_cannot_be_written_leaves_no_temporary_file_behind(tmp_path):
    store = FileCursorStore(tmp_path / "tap.json")
    (tmp_path / "tap.json").mkdir()  # the rename over it fails, after the temporary file was written
    with pytest.raises(ConfigError, match=r"tap\.json cannot be written"):
        store.save({"cursor": "x"})
    assert [path.name for path in tmp_path.iterdir()] == ["tap.json"]


KILLED_WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from proofpoint_shipper.checkpoint import FileCursorStore

    path, kill_point = Path(sys.argv[1]), sys.argv[2]
    real_replace = os.replace

    def replace_and_pause(source, target):
        if kill_point == "before-rename":
            print("written, not renamed", flush=True)
            sys.stdin.readline()  # the parent kills us while we wait here
        real_replace(source, target)
        if kill_point == "after-rename":
            print("renamed", flush=True)
            sys.stdin.readline()

    os.replace = replace_and_pause
    FileCursorStore(path).save({"cursor": "new"})
""")


def kill_writer_at(path, kill_point: str, announcement: bytes) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), kill_point],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as writer:
        assert writer.stdout.readline() == announcement
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)


def test_kill_9_between_write_and_rename_leaves_the_old_cursor(tmp_path):
    path = tmp_path / "tap.json"
    FileCursorStore(path).save({"cursor": "old"})
    kill_writer_at(path, "before-rename", b"written, not renamed\n")
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the new one had reached the disk
    assert json.loads(path.read_text()) == {"cursor": "old"}  # never a torn file
    FileCursorStore(path).save({"cursor": "next"})  # and the next save works
    assert FileCursorStore(path).load() == {"cursor": "next"}


def test_kill_9_after_rename_leaves_the_new_cursor(tmp_path):
    path = tmp_path / "tap.json"
    FileCursorStore(path).save({"cursor": "old"})
    kill_writer_at(path, "after-rename", b"renamed\n")
    assert FileCursorStore(path).load() == {"cursor": "new"}


def test_two_s3_writers_one_wins_the_other_stops(local_s3, bucket):
    client = local_s3.client()
    first = S3CursorStore(client, bucket, "cursors/tap.json")
    second = S3CursorStore(client, bucket, "cursors/tap.json")
    assert first.load() is None and second.load() is None
    first.save({"queryEndTime": "A"})
    with pytest.raises(CursorConflict, match="advanced by another collector"):
        second.save({"queryEndTime": "B"})
    assert S3CursorStore(client, bucket, "cursors/tap.json").load() == {"queryEndTime": "A"}
    first.save({"queryEndTime": "A2"})  # the winner keeps going
    assert second.load() == {"queryEndTime": "A2"}
    second.save({"queryEndTime": "C"})  # after a fresh read, writing is allowed again
    with pytest.raises(CursorConflict):
        first.save({"queryEndTime": "A3"})


def first_put_answer_lost(client) -> None:
    """`client`'s first PutObject reaches the store, and its answer is lost on the way back (a
    read timeout), so the SDK sends it again, as it does; a network that loses just that answer
    cannot be made here, so the SDK's own hook sends the first put and raises the timeout."""
    from botocore.exceptions import ReadTimeoutError
    from botocore.httpsession import URLLib3Session

    lost = []

    def send_then_lose_the_answer(request, **_):
        if not lost:
            lost.append(URLLib3Session().send(request))
            raise ReadTimeoutError(endpoint_url=request.url)

    client.meta.events.register("before-send.s3.PutObject", send_then_lose_the_answer)


def test_a_put_sent_again_after_its_answer_was_lost_is_not_taken_for_another_collector(local_s3, bucket):
    """The SDK's retry met the condition of our own first put, which had landed: the collector
    stopped, telling of another collector that did not exist."""
    client = local_s3.client()
    store = S3CursorStore(client, bucket, "cursors/tap.json")
    store.load()
    store.save({"cursor": "A"})
    first_put_answer_lost(client)
    store.save({"cursor": "B"})  # landed, answer lost, sent again: 412 on our own write
    store.save({"cursor": "C"})  # and the ETag held is the object's
    assert S3CursorStore(local_s3.client(), bucket, "cursors/tap.json").load() == {"cursor": "C"}


def ignoring_conditional_writes(client) -> None:
    """`client`'s puts go without If-None-Match and If-Match: moto honours both, and a store
    that ignores them (some S3-compatible ones) cannot run here; this is what it would see."""

    def strip(params, **_):
        for header in ("If-None-Match", "If-Match"):
            params["headers"].pop(header, None)

    client.meta.events.register("before-call.s3.PutObject", strip)


@pytest.mark.parametrize("ignored", [False, True], ids=["honoured", "ignored"])
def test_a_store_that_ignores_conditional_writes_is_told_at_load(local_s3, bucket, caplog, ignored):
    """The guard against a second collector rests on conditional writes: where the store ignores
    them, it did not hold, and nothing said so."""
    client = local_s3.client()
    S3CursorStore(client, bucket, "cursors/tap.json").save({"queryEndTime": "A"})
    if ignored:
        ignoring_conditional_writes(client)
    store, puts = S3CursorStore(client, bucket, "cursors/tap.json"), put_headers(client)
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        assert store.load() == {"queryEndTime": "A"}
        assert store.load() == {"queryEndTime": "A"}  # a collector reads it at every poll
    told = [m for m in caplog.messages if "ignores conditional writes" in m]
    assert len(told) == ignored and len(puts) == 1  # checked once a run
    store.save({"queryEndTime": "B"})  # the ETag it holds is the object's, whichever put came last
    assert S3CursorStore(local_s3.client(), bucket, "cursors/tap.json").load() == {"queryEndTime": "B"}


def test_an_s3_cursor_is_written_with_the_encryption_and_acl_of_the_s3_output(local_s3, bucket):
    client = local_s3.client()
    sent = put_headers(client)
    settings = ObjectSettings(sse="AES256", acl="bucket-owner-full-control")
    store = S3CursorStore(client, bucket, "cursors/tap.json", settings)
    store.load()
    store.save({"queryEndTime": "A"})
    store.save({"queryEndTime": "B"})
    assert [headers.get("x-amz-acl") for headers in sent] == ["bucket-owner-full-control"] * 2
    assert client.head_object(Bucket=bucket, Key="cursors/tap.json")["ServerSideEncryption"] == "AES256"


def test_an_s3_cursor_is_saved_in_a_bucket_with_object_lock(local_s3, locked_bucket):
    client = local_s3.client()
    S3CursorStore(client, locked_bucket, "cursors/tap.json").save({"queryEndTime": "A"})
    assert S3CursorStore(client, locked_bucket, "cursors/tap.json").load() == {"queryEndTime": "A"}


def test_an_s3_cursor_that_is_not_a_json_object_or_not_reachable_is_a_config_error(local_s3, bucket):
    client = local_s3.client()
    for body, reason in ((b"{torn", "is not JSON"), (b"[1, 2]", "does not hold a JSON object")):
        client.put_object(Bucket=bucket, Key="cursors/odd.json", Body=body)
        with pytest.raises(ConfigError, match=f"{reason}.*: restore it from a backup, or move it aside"):
            S3CursorStore(client, bucket, "cursors/odd.json").load()
    unreachable = open_client("http://127.0.0.1:9")  # nothing listens: a BotoCoreError, not a ClientError
    with pytest.raises(ConfigError, match="cannot be read"):
        S3CursorStore(unreachable, bucket, "cursors/odd.json").load()


def test_an_s3_cursor_whose_answer_is_cut_short_is_read_again(local_s3, bucket, caplog, monkeypatch):
    """A connection dropped while the cursor came in stopped the collector with exit code 2, as a
    setting at fault ("cannot be read"): the SDK sends a request again, but does not read a body
    again once it began. Found by a soak of `tap fetch` through a proxy that resets connections."""
    S3CursorStore(local_s3.client(), bucket, "cursors/tap.json").save({"cursor": "A"})
    port = int(local_s3.endpoint_url.rsplit(":", 1)[1])
    cutter = AnswerCutter(port, f"GET /{bucket}/cursors/tap.json".encode())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")  # the local S3's, through the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    try:
        client = open_client(cutter.url, fail_fast=False)  # as `tap fetch` opens the cursor's client
        with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
            assert S3CursorStore(client, bucket, "cursors/tap.json").load() == {"cursor": "A"}
    finally:
        cutter.close()
    assert cutter.cut == 1
    retried = f"reading cursor s3://{bucket}/cursors/tap.json failed (ResponseStreamingError: "
    assert [message for message in caplog.messages if message.startswith(retried)]


def test_a_damaged_cursor_file_is_refused_with_what_to_do(tmp_path):
    """Written whole and renamed, a cursor is damaged only by hand or by the disk: nothing
    guesses where it stood, and the line says how to go on."""
    path = tmp_path / "tap.json"
    for body, fault in ((b'{"cursor": "2022', "is not JSON"), (b"[1, 2]", "does not hold a JSON object")):
        path.write_bytes(body)
        with pytest.raises(ConfigError) as caught:
            FileCursorStore(path).load()
        assert str(caught.value).startswith(f"cursor file {path} {fault}")
        assert str(caught.value).endswith(
            ": restore it from a backup, or move it aside to start as a first run does"
        )


LOCK_HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from proofpoint_shipper.checkpoint import FileCursorStore

    FileCursorStore(Path(sys.argv[1])).claim()
    print("claimed", flush=True)
    sys.stdin.readline()  # holds the cursor until the parent kills us
""")


def test_a_cursor_file_is_claimed_by_one_process_until_it_ends(tmp_path):
    path = tmp_path / "state" / "tap.json"
    with subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        try:
            assert holder.stdout.readline() == b"claimed\n"
            with pytest.raises(
                CursorConflict, match=rf"tap.json is in use by another process \(pid {holder.pid}\)"
            ):
                FileCursorStore(path).claim()
        finally:
            holder.send_signal(signal.SIGKILL)  # a crash: the lock goes with the process
            holder.wait()
    store = FileCursorStore(path)
    store.claim()
    store.claim()  # the holder may claim again
    with pytest.raises(CursorConflict):
        FileCursorStore(path).claim()  # one claim per open store, even in one process


@pytest.mark.parametrize(
    "command",
    [
        ["tap", "fetch", "--base-url", "http://127.0.0.1:9", "--cursor"],
        ["pod", "stream", "--url", "ws://127.0.0.1:9", "--type", "message", "--cursor"],
    ],
)
def test_a_second_collector_on_one_cursor_file_stops_before_any_request(tmp_path, command, monkeypatch):
    from tests.conftest import run_ppship

    monkeypatch.setenv("TAP_PRINCIPAL", "p")
    monkeypatch.setenv("TAP_SECRET", "s")
    monkeypatch.setenv("POD_TOKEN", "t")
    monkeypatch.setenv("POD_CLUSTER_ID", "c")
    cursor = tmp_path / "cursor.json"
    FileCursorStore(cursor).claim()  # the first collector: this test's process
    result = run_ppship(*command, str(cursor), timeout=30)
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"ppship: error: cursor file {cursor} is in use by another process (pid {os.getpid()}); "
        "only one process may run on one cursor file\n"
    )


def test_a_file_system_without_locks_runs_as_before_with_a_warning(tmp_path, monkeypatch, caplog):
    # Some NFS mounts refuse flock with ENOLCK; no such mount exists here, so flock is made to
    # answer as one would. The only stand-in in this file.
    import errno
    import fcntl
    import logging

    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    store = FileCursorStore(tmp_path / "tap.json")
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        store.claim()
    assert any("cannot be locked" in message for message in caplog.messages)
    store.save({"cursor": "kept"})
    assert store.load() == {"cursor": "kept"}
