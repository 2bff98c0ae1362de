"""`ppship demo` in a reduced run against the session's local S3: all eight tables, counts checked."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from proofpoint_shipper.demo import GATEWAY_LOG, GATEWAY_REFERENCE, GATEWAY_ZONE
from proofpoint_shipper.gateway import GatewayParser
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.streams import STREAMS
from tests import ports
from tests.conftest import process_alive, run_ppship
from tests.test_cli_ship import LOCAL_ENV

GATEWAY_LINES, POD_EVENTS = 300, 40
EVENT_TYPES = {
    "proofpoint_tap_messages_delivered": "messagesDelivered",
    "proofpoint_tap_messages_blocked": "messagesBlocked",
    "proofpoint_tap_clicks_permitted": "clicksPermitted",
    "proofpoint_tap_clicks_blocked": "clicksBlocked",
    "proofpoint_on_demand_message": "pod_message",
    "proofpoint_on_demand_maillog": "pod_maillog",
}


def _landed(client, bucket: str) -> dict[str, list[bytes]]:
    landed: dict[str, list[bytes]] = {}
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        landed.setdefault(item["Key"].split("/")[0], []).extend(body.splitlines())
    return landed


def _expected_gateway_counts() -> Counter:
    """An independent parse of the lines the demo sends: how many belong to each text table."""
    parser = GatewayParser(
        zone=resolve_zone(GATEWAY_ZONE), reference=datetime.fromisoformat(GATEWAY_REFERENCE)
    )
    lines = GATEWAY_LOG.read_text(encoding="utf-8").splitlines()[:GATEWAY_LINES]
    tables = (parser.parse(line)["table"] for line in lines)
    return Counter(table for table in tables if table is not None)


def collector_node() -> dict[str, str]:
    """Settings of a collector node's whole machine: a proxy that nothing answers at, and an AWS
    profile that its AWS config does not hold (the demo's local S3 needs none)."""
    proxy = f"http://127.0.0.1:{ports.refused_port()}"
    proxies = {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy, "NO_PROXY": "", "no_proxy": ""}
    return {**proxies, "AWS_PROFILE": "no-such-profile"}


# Behind a proxy: the local S3 (boto3), the TAP simulator (httpx) and the PoD one (websockets) are
# all on 127.0.0.1, which no proxy can reach for us.
@pytest.mark.parametrize("environment", [{}, collector_node()], ids=["plain", "a collector node's settings"])
def test_demo_lands_all_eight_tables_with_the_expected_counts(local_s3, bucket, environment):
    flags = ["--tap-hours", "2", "--pod-events", str(POD_EVENTS), "--gateway-lines", str(GATEWAY_LINES)]
    flags += ["--endpoint-url", local_s3.endpoint_url, "--bucket", bucket]
    result = run_ppship("demo", *flags, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    landed = _landed(local_s3.client(), bucket)
    assert set(landed) == {stream.table for stream in STREAMS}
    expected = _expected_gateway_counts()
    for table in ("proofpoint_gateway_filter_logs", "proofpoint_gateway_sendmail_logs"):
        assert len(landed[table]) == expected[table] > 0
    for table, event_type in EVENT_TYPES.items():
        records = [json.loads(line) for line in landed[table]]
        assert records and {record["eventType"] for record in records} == {event_type}
        if table.startswith("proofpoint_on_demand"):
            assert len(records) == POD_EVENTS
    output = result.stdout.decode()
    assert all(stream.table in output for stream in STREAMS)
    _assert_the_bucket_check_finds_nothing_wrong(local_s3, bucket)


def _assert_the_bucket_check_finds_nothing_wrong(local_s3, bucket: str) -> None:
    """What the demo wrote passes `ppship s3 check`: layout, and every line in its table's form."""
    every_object = ["--sample", "1000", "--max-keys", "1000"]
    check = run_ppship(
        "s3",
        "check",
        "--bucket",
        bucket,
        "--endpoint-url",
        local_s3.endpoint_url,
        *every_object,
        env=LOCAL_ENV,
    )
    report = check.stdout.decode()
    assert check.returncode == 0 and "FAIL" not in report, report + check.stderr.decode()
    assert report.count("format: ") >= len(STREAMS)


@pytest.mark.skipif(sys.platform != "linux", reason="the request to end with the parent is Linux's")
def test_a_killed_demo_leaves_no_server_or_collector_running():
    # SIGKILL, as a CI job's timeout sends: no `finally` of the demo runs. Before, the local S3, the
    # simulators and the PoD stream ran on for good.
    command = [sys.executable, "-m", "proofpoint_shipper", "demo", "--pod-events", "10000000"]
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for line in demo.stdout:
            if b"PoD message: started" in line:
                break
        children = [
            int(pid) for pid in Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
        ]
        assert len(children) >= 4  # local S3, two simulators, the relay, the collectors
    finally:
        demo.kill()
        demo.wait()
        demo.stdout.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(process_alive(pid) for pid in children):
        time.sleep(0.2)
    running = [pid for pid in children if process_alive(pid)]
    for pid in running:  # not left behind for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert running == []
