"""S3Sink against a real local S3 server: key layout, content, batching, encryption, spool."""

import gzip
import json
import logging
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from proofpoint_shipper.bucket.object_settings import ObjectSettings
from proofpoint_shipper.errors import ConfigError, DeliveryError
from proofpoint_shipper.local_s3 import LocalS3
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.sinks.s3 import S3Sink
from proofpoint_shipper.sinks.spool import Spool
from proofpoint_shipper.streams import STREAMS
from tests.conftest import put_headers

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
KEY = re.compile(
    r"lake/(?P<table>[a-z_]+)/(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/(?P<h>\d\d)/"
    r"gw1-\d{8}T\d{6}Z-[0-9a-f]{32}\.(?P<ext>ndjson|log)\.gz"
)


def sample(stream, n: int, hour: int = 14) -> list[dict]:
    if stream.format == "text":
        return [
            {
                "time": f"2022-02-20T{hour - 6:02}:35:{n:02}.000000-06:00",
                "text": f"2022-02-20T{hour - 6:02}:35:{n:02}.000000-06:00 gw sendmail[1]: line {n}",
            }
        ]
    return [{"eventTime": f"2022-02-20T{hour:02}:35:{n:02}.000Z", "id": f"{stream.name}-{n}", "n": n}]


def objects(client, bucket: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_every_table_lands_under_its_prefix_in_its_format(local_s3, bucket):
    client = local_s3.client()
    sink = S3Sink(client, bucket, prefix="lake", host="gw1", retry=FAST)
    sink.check()
    for stream in STREAMS:
        sink.write(stream.table, sample(stream, 1) + sample(stream, 2))
    sink.flush()
    landed = objects(client, bucket)
    assert {KEY.fullmatch(key).group("table") for key in landed} == {s.table for s in STREAMS}
    for key, body in landed.items():
        match = KEY.fullmatch(key)
        stream = next(s for s in STREAMS if s.table == match.group("table"))
        assert (match.group("y"), match.group("m"), match.group("d"), match.group("h")) == (
            "2022",
            "02",
            "20",
            "14",
        )
        lines = gzip.decompress(body).decode().splitlines()
        if stream.format == "text":
            assert match.group("ext") == "log"
            assert lines == [r["text"] for r in sample(stream, 1) + sample(stream, 2)]
        else:
            assert match.group("ext") == "ndjson"
            assert [json.loads(line) for line in lines] == sample(stream, 1) + sample(stream, 2)


def test_records_of_different_hours_go_to_different_objects(local_s3, bucket):
    client = local_s3.client()
    sink = S3Sink(client, bucket, prefix="lake", host="gw1", retry=FAST)
    stream = STREAMS[0]
    sink.write(stream.table, sample(stream, 1, hour=13) + sample(stream, 2, hour=14))
    sink.flush()
    assert sorted(KEY.fullmatch(k).group("h") for k in objects(client, bucket)) == ["13", "14"]


def test_batches_close_by_size_and_keep_every_record(local_s3, bucket):
    client = local_s3.client()
    sink = S3Sink(client, bucket, prefix="lake", host="gw1", max_batch_bytes=300, retry=FAST)
    records = [{"eventTime": "2022-02-20T14:00:00Z", "n": n, "pad": "x" * 40} for n in range(40)]
    sink.write("proofpoint_tap_messages_blocked", records)
    sink.flush()
    landed = objects(client, bucket)
    assert len(landed) > 5
    got = [json.loads(line) for body in landed.values() for line in gzip.decompress(body).splitlines()]
    assert sorted(r["n"] for r in got) == list(range(40))


def test_batches_close_by_age(local_s3, bucket):
    client = local_s3.client()
    sink = S3Sink(client, bucket, host="gw1", max_batch_age=0, retry=FAST)
    sink.write("proofpoint_tap_clicks_blocked", [{"clickTime": "2021-11-29T19:46:21+00:00", "id": "a"}])
    assert len(objects(client, bucket)) == 1  # uploaded without a flush


def test_uncompressed_objects(local_s3, bucket):
    client = local_s3.client()
    sink = S3Sink(client, bucket, host="gw1", compress=False, retry=FAST)
    sink.write("proofpoint_gateway_filter_logs", [{"time": "2022-02-20T08:35:00-06:00", "text": "a line"}])
    sink.flush()
    ((key, body),) = objects(client, bucket).items()
    assert key.endswith(".log") and body == b"a line\n"


@pytest.mark.parametrize(
    ("sse", "kms_key"), [("AES256", None), ("aws:kms", "arn:aws:kms:us-east-1:1:key/k-1")]
)
def test_encryption_settings_reach_put_object(local_s3, bucket, sse, kms_key):
    client = local_s3.client()
    sink = S3Sink(client, bucket, host="gw1", objects=ObjectSettings(sse, kms_key), retry=FAST)
    sink.write("proofpoint_on_demand_message", [{"ts": "2022-02-20T08:35:00.157994-0600", "guid": "g"}])
    sink.flush()
    (key,) = objects(client, bucket)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == sse
    assert head.get("SSEKMSKeyId") == kms_key


def test_the_canned_acl_goes_with_every_batch_and_every_spooled_resend(tmp_path):
    """A bucket of another account may refuse any PutObject without it; the local S3 keeps no
    record of a bucket-owner ACL, so the headers are read as botocore sends them."""
    server = LocalS3("acl-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    sent = put_headers(client)
    table = "proofpoint_tap_messages_delivered"
    settings = ObjectSettings(acl="bucket-owner-full-control")
    sink = S3Sink(
        client,
        "acl-bucket",
        host="gw1",
        objects=settings,
        spool=Spool(tmp_path / "s", "acl-bucket"),
        retry=FAST,
    )
    sink.write(table, _records(3))
    sink.flush()
    server.stop()
    sink.write(table, _records(2, start=3))
    sink.flush()  # S3 is down: spooled
    server = LocalS3("acl-bucket", port=port).start()
    try:
        sink.flush()  # re-sent from the spool
        assert _landed_numbers(client, "acl-bucket") == list(range(5))
    finally:
        server.stop()
    assert len(sent) >= 3 and all(headers.get("x-amz-acl") == "bucket-owner-full-control" for headers in sent)


def test_a_bucket_with_object_lock_takes_every_batch(local_s3, locked_bucket):
    client = local_s3.client()  # made after the fixture told botocore to send no checksum
    sink = S3Sink(client, locked_bucket, host="gw1", retry=FAST)
    sink.write("proofpoint_tap_messages_delivered", _records(3))
    sink.flush()
    assert _landed_numbers(client, locked_bucket) == [0, 1, 2]


def test_bad_object_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown server-side encryption 'DES'"):
        ObjectSettings(sse="DES")
    with pytest.raises(ConfigError, match="a KMS key id needs --sse aws:kms"):
        ObjectSettings(kms_key_id="k")
    with pytest.raises(ConfigError, match="unknown canned ACL 'public-read'"):
        ObjectSettings(acl="public-read")


def test_unknown_table_is_a_config_error(local_s3, bucket):
    with pytest.raises(ConfigError, match="unknown table 'proofpoint_nope'"):
        S3Sink(local_s3.client(), bucket).write("proofpoint_nope", [{}])


def test_missing_bucket_is_found_at_start_up(local_s3):
    with pytest.raises(ConfigError, match="bucket no-such-bucket-here does not exist"):
        S3Sink(local_s3.client(), "no-such-bucket-here").check()


def test_unwritable_spool_is_found_at_start_up(local_s3, bucket, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"spool directory .* is not writable"):
        S3Sink(local_s3.client(), bucket, spool=Spool(blocker / "spool", bucket)).check()


def _records(n: int, start: int = 0) -> list[dict]:
    return [{"eventTime": "2022-02-20T14:00:00Z", "n": i} for i in range(start, start + n)]


def _landed_numbers(client, bucket: str) -> list[int]:
    bodies = objects(client, bucket).values()
    return sorted(json.loads(line)["n"] for body in bodies for line in gzip.decompress(body).splitlines())


def test_an_outage_is_spooled_and_delivered_after_a_restart_without_loss_or_duplicates(tmp_path):
    """S3 goes away mid-run; the process restarts; S3 comes back: every record lands once."""
    server = LocalS3("outage-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    table = "proofpoint_tap_messages_delivered"
    sink = S3Sink(
        client, "outage-bucket", host="gw1", spool=Spool(tmp_path / "spool", "outage-bucket"), retry=FAST
    )
    sink.write(table, _records(10))
    sink.flush()  # delivered while S3 is up
    server.stop()
    sink.write(table, _records(15, start=10))
    sink.flush()  # S3 is down: spooled, durable locally
    sink.write(table, _records(5, start=25))
    sink.flush()
    assert len(Spool(tmp_path / "spool", "outage-bucket")) == 2
    del sink  # the collector process ends

    server = LocalS3("outage-bucket", port=port).start()  # S3 is back
    try:
        restarted = S3Sink(
            client, "outage-bucket", host="gw1", spool=Spool(tmp_path / "spool", "outage-bucket"), retry=FAST
        )
        restarted.flush()
        assert len(Spool(tmp_path / "spool", "outage-bucket")) == 0
        assert _landed_numbers(client, "outage-bucket") == list(range(30))
    finally:
        server.stop()


def test_in_an_outage_only_the_first_batch_waits_through_the_retries_and_the_next_are_spooled_at_once(
    tmp_path, caplog
):
    """Each batch closed in an outage tries S3 once for the oldest spooled object, not through the
    retry policy again: a stop that flushed several batches took the policy's waits for each."""
    server = LocalS3("one-try-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    spool = Spool(tmp_path / "spool", "one-try-bucket")
    retry = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
    sink = S3Sink(client, "one-try-bucket", host="gw1", spool=spool, retry=retry)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="proofpoint_shipper"):
        for batch in range(4):
            sink.write("proofpoint_tap_messages_delivered", _records(5, start=5 * batch))
            sink.flush()
    assert len(spool) == 4
    assert len([m for m in caplog.messages if "; retry " in m]) == 2  # the first batch's only
    assert any("waits in the spool" in m for m in caplog.messages)  # each later try failed, told
    server = LocalS3("one-try-bucket", port=port).start()  # S3 is back
    try:
        sink.write("proofpoint_tap_messages_delivered", _records(5, start=20))
        sink.flush()
        assert len(spool) == 0
        assert _landed_numbers(client, "one-try-bucket") == list(range(25))
    finally:
        server.stop()


def test_a_spool_folder_shared_by_outputs_to_two_buckets_delivers_each_object_to_its_own(tmp_path):
    """Collectors on one host given one --spool-dir, writing to two buckets (staging and
    production, say): an object spooled for one is never drained into the other."""
    server = LocalS3("staging-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    client.create_bucket(Bucket="production-bucket")
    table = "proofpoint_tap_messages_delivered"
    server.stop()
    staging = S3Sink(
        client, "staging-bucket", host="gw1", spool=Spool(tmp_path, "staging-bucket"), retry=FAST
    )
    staging.write(table, _records(3))
    staging.flush()  # S3 is down: spooled for the staging bucket
    server = LocalS3("staging-bucket", port=port).start()
    try:
        production = S3Sink(
            client, "production-bucket", host="gw1", spool=Spool(tmp_path, "production-bucket"), retry=FAST
        )
        production.write(table, _records(2, start=10))
        production.flush()
        assert _landed_numbers(client, "production-bucket") == [10, 11]
        staging.flush()
        assert _landed_numbers(client, "staging-bucket") == [0, 1, 2]
    finally:
        server.stop()


def test_a_batch_the_spool_cannot_keep_waits_in_memory_and_says_why(tmp_path, caplog):
    """S3 down and the spool unwritable (its folder replaced by a file): nothing lost, told."""
    server = LocalS3("held-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    server.stop()
    spool = Spool(tmp_path, "held-bucket")
    sink = S3Sink(client, "held-bucket", host="gw1", spool=spool, max_batch_age=0, retry=FAST)
    folder = spool.directory
    folder.write_text("not a folder")
    with caplog.at_level(logging.ERROR, "proofpoint_shipper"):
        sink.write("proofpoint_tap_messages_delivered", _records(4))
    told = [message for message in caplog.messages if "waits in memory" in message]
    assert len(told) == 1 and f"spool {folder} cannot keep" in told[0]
    assert not any("kept in the spool" in message for message in caplog.messages)

    folder.unlink()
    server = LocalS3("held-bucket", port=port).start()  # S3 is back
    try:
        sink.flush()
        assert _landed_numbers(client, "held-bucket") == [0, 1, 2, 3]
    finally:
        server.stop()


def test_an_unreadable_spool_entry_is_set_aside_and_the_rest_delivered(local_s3, tmp_path, caplog):
    spool = Spool(tmp_path / "spool", "spool-bucket")
    spool.put("proofpoint_tap_clicks_permitted/a.ndjson.gz", gzip.compress(b'{"n": 1}\n'), {})
    (spool.directory / "notes.json").write_text("not a spool entry")
    spool.put("proofpoint_tap_clicks_permitted/b.ndjson.gz", gzip.compress(b'{"n": 2}\n'), {})
    client = local_s3.client()
    client.create_bucket(Bucket="spool-bucket")
    with caplog.at_level(logging.ERROR, "proofpoint_shipper"):
        S3Sink(client, "spool-bucket", host="gw1", spool=spool, retry=FAST).flush()
    assert _landed_numbers(client, "spool-bucket") == [1, 2]
    assert len(spool) == 0 and (spool.directory / "notes.json.unreadable").exists()
    assert any("notes.json cannot be read" in message for message in caplog.messages)


SPOOLING_PROCESS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from proofpoint_shipper.sinks.spool import Spool

    spool, name = Spool(Path(sys.argv[1]), "b"), sys.argv[2]
    sys.stdin.readline()  # both processes start spooling together
    for n in range(150):
        spool.put(f"t/{name}-{n}", f"{name}-{n}".encode(), {})
""")


FULL_SPOOL = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from proofpoint_shipper.errors import DeliveryError
    from proofpoint_shipper.sinks.spool import Spool

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails, as on a full disk
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    spool = Spool(Path(sys.argv[1]), "b")
    for key, body in (("t/big-body", b"x" * 5000), ("t/" + "k" * 2000, b"small")):  # body, then meta
        try:
            spool.put(key, body, {})
        except DeliveryError as exc:
            print(str(exc)[:60])
""")


def test_an_object_the_spool_cannot_keep_is_a_delivery_error_and_leaves_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FULL_SPOOL, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    folder = tmp_path / "spool" / "b"
    assert result.stdout.splitlines() == [
        f"spool {folder} cannot keep t/big-body: File too large"[:60],
        f"spool {folder} cannot keep t/kkkkk"[:60],
    ]
    assert list(folder.iterdir()) == []  # the bucket's folder of the spool


def test_spooled_objects_are_readable_by_our_user_only(tmp_path):
    previous = os.umask(0)  # whatever the umask: the objects hold mail data
    try:
        spool = Spool(tmp_path / "spool", "b")
        spool.put("t/a", b"from=<a@example.com>", {})
    finally:
        os.umask(previous)
    modes = {path.suffix: stat.S_IMODE(path.stat().st_mode) for path in spool.directory.iterdir()}
    assert modes == {".body": 0o600, ".json": 0o600}


def test_processes_sharing_a_spool_folder_keep_every_object(tmp_path):
    """The relay's --workers, or collectors given one --spool-dir: each object is kept apart."""
    folder = tmp_path / "spool"
    writers = [
        subprocess.Popen([sys.executable, "-c", SPOOLING_PROCESS, str(folder), name], stdin=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for writer in writers:
        writer.stdin.write(b"go\n")
        writer.stdin.close()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    entries = list(Spool(folder, "b").items())
    assert sorted(key for _, key, _, _ in entries) == sorted(f"t/{a}-{n}" for a in "ab" for n in range(150))
    assert all(body.decode() == key[2:] for _, key, body, _ in entries)  # each body under its own key


def test_two_sinks_draining_one_spool_deliver_each_object_and_stop_cleanly(local_s3, tmp_path, caplog):
    spool = Spool(tmp_path / "spool", "shared-spool-bucket")
    for n in range(40):
        spool.put(f"proofpoint_tap_clicks_permitted/{n}.ndjson.gz", gzip.compress(b'{"n": %d}\n' % n), {})
    client = local_s3.client()
    client.create_bucket(Bucket="shared-spool-bucket")
    failures: list[BaseException] = []

    def drain() -> None:
        try:
            sink = S3Sink(
                local_s3.client(),
                "shared-spool-bucket",
                host="gw1",
                spool=Spool(tmp_path / "spool", "shared-spool-bucket"),
            )
            sink.flush()
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=drain) for _ in range(2)]
    with caplog.at_level(logging.ERROR, "proofpoint_shipper"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert failures == []
    assert _landed_numbers(client, "shared-spool-bucket") == list(range(40))
    assert len(spool) == 0 and not list((tmp_path / "spool").glob("*.unreadable"))
    assert caplog.messages == []  # an entry the other sink took is no fault


def test_without_a_spool_an_outage_raises_and_keeps_the_data(tmp_path):
    server = LocalS3("keep-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    server.stop()
    sink = S3Sink(client, "keep-bucket", host="gw1", retry=FAST)
    sink.write("proofpoint_tap_clicks_permitted", _records(3))
    with pytest.raises(DeliveryError, match="S3 did not take"):
        sink.flush()
    server = LocalS3("keep-bucket", port=port).start()
    try:
        sink.flush()
        assert _landed_numbers(client, "keep-bucket") == [0, 1, 2]
    finally:
        server.stop()


def _quick_client():
    from botocore.config import Config

    return Config(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1})


def test_write_takes_all_records_or_none_while_s3_is_down():
    server = LocalS3("pressure-bucket").start()
    port, client = server.port, server.client(config=_quick_client())
    server.stop()
    sink = S3Sink(client, "pressure-bucket", host="gw1", max_batch_bytes=200, retry=FAST)
    table = "proofpoint_tap_messages_blocked"
    sink.write(table, _records(10))  # batches close and fail quietly: they wait, nothing raised
    with pytest.raises(DeliveryError):
        sink.write(table, _records(5, start=10))  # too much waiting: refused before taking any
    server = LocalS3("pressure-bucket", port=port).start()
    try:
        sink.flush()
        assert _landed_numbers(client, "pressure-bucket") == list(range(10))  # the refused 5 were not taken
    finally:
        server.stop()
