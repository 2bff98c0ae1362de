"""`ppship relay --assemble`: message records beside the line records, over the real protocol."""

import gzip
import json
import os

from fluent.sender import EventTime

from tests.conftest import GOLDEN_ASSEMBLY, read_lines, wait_for
from tests.forward_receiver import ForwardReceiver
from tests.test_cli_ship import LOCAL_ENV
from tests.test_relay import send_chunk, start_relay, stop_relay

MESSAGE_TAG = "proofpoint.gateway.message"
SETTINGS = ("--timezone", "America/Chicago", "--reference-time", "2022-03-01T12:00:00-06:00", "--assemble")


def entries_of(case: str) -> list:
    lines = read_lines(GOLDEN_ASSEMBLY / f"{case}.log")
    return [(EventTime(1645367700 + n, 0), {"log": line}) for n, line in enumerate(lines)]


def test_messages_come_out_beside_the_lines_and_open_ones_at_sigterm():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port, *SETTINGS)
    try:
        interleaved = entries_of("interleaved")
        assert send_chunk(port, "forward", interleaved, chunk="c1") == {"ack": "c1"}
        assert send_chunk(port, "packed", entries_of("no_disconnect"), chunk="c2") == {"ack": "c2"}
        wait_for(lambda: len([e for e in receiver.entries if e[0] == MESSAGE_TAG]) >= 4, seconds=30)
    finally:
        stop_relay(relay)
    messages = [record for tag, _, record in receiver.entries if tag == MESSAGE_TAG]
    lines = [record for tag, _, record in receiver.entries if tag != MESSAGE_TAG]
    assert len(lines) == len(interleaved) + 6  # every line still goes out as itself
    complete = sorted(record["guid"] for record in messages if record["complete"] and "guid" in record)
    assert complete == ["Jx0mAaaa1", "Qb1bbb1", "Qb1bbb2"]
    open_at_stop = [record for record in messages if not record["complete"]]
    assert [record["guid"] for record in open_at_stop] == ["Nd1guid"]  # delivered at SIGTERM
    receiver.stop()


def test_max_open_bounds_the_sessions_the_relay_holds():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port, *SETTINGS, "--max-open", "1")
    try:
        assert send_chunk(port, "forward", entries_of("interleaved"), chunk="c1") == {"ack": "c1"}
        # interleaved sessions: holding one at a time, the relay writes the other out unfinished
        wait_for(
            lambda: any(tag == MESSAGE_TAG and not record["complete"] for tag, _, record in receiver.entries),
            seconds=30,
        )
    finally:
        stop_relay(relay)
        receiver.stop()


def test_the_message_table_is_written_by_the_s3_output(local_s3, bucket):
    s3 = ("--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url)
    relay, port = start_relay(None, *SETTINGS, *s3, env={**os.environ, **LOCAL_ENV})
    try:
        assert send_chunk(port, "forward", entries_of("interleaved"), chunk="s3") == {"ack": "s3"}
    finally:
        stop_relay(relay)
    client = local_s3.client()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    messages = [key for key in keys if key.startswith("proofpoint_gateway_messages/2022/02/20/14/")]
    records = [
        json.loads(line)
        for key in messages
        for line in gzip.decompress(client.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()
    ]
    assert sorted(record.get("guid", "") for record in records) == ["", "Jx0mAaaa1", "Qb1bbb1", "Qb1bbb2"]
