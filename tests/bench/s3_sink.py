"""S3 sink throughput and memory, as ratios against baselines from the same run.

The real `ppship ship --output s3` child (on a core of its own) streams TAP-sized NDJSON records
from a pipe into a local S3 (moto, 127.0.0.1) in this process. Baselines: the same command writing
to stdout (what the S3 output costs), and a 100 MB run against the 1 GB run (memory must not grow
with the input).
"""

import os
import subprocess
import sys
import threading
import time

import orjson

from proofpoint_shipper.local_s3 import LOCAL_CREDENTIALS, LocalS3
from tests.bench.measure import PeakMemory

TABLE = "proofpoint_tap_messages_delivered"
MiB = 1024 * 1024
CORES = sorted(os.sched_getaffinity(0))


def tap_record(n: int) -> bytes:
    return (
        orjson.dumps(
            {
                "GUID": f"guid-{n:012d}",
                "QID": f"r{n:010d}",
                "id": f"id-{n}",
                "cluster": "pharmtech_hosted",
                "eventType": "messagesDelivered",
                "messageTime": f"2022-02-20T14:{n // 60 % 60:02}:{n % 60:02}.000Z",
                "subject": f"Invoice {n} for February",
                "sender": "billing@example.com",
                "senderIP": "192.0.2.10",
                "recipient": [f"user{n % 1000}@example.org"],
                "toAddresses": [f"user{n % 1000}@example.org"],
                "fromAddress": ["billing@example.com"],
                "headerFrom": '"Billing" <billing@example.com>',
                "messageSize": 24546 + n % 1000,
                "spamScore": n % 100,
                "phishScore": 0,
                "malwareScore": 0,
                "impostorScore": 0.0,
                "completelyRewritten": True,
                "modulesRun": ["av", "zerohour", "spf", "spam"],
                "policyRoutes": ["default_inbound"],
                "quarantineFolder": None,
                "quarantineRule": None,
                "messageParts": [
                    {
                        "disposition": "inline",
                        "sha256": "a" * 64,
                        "md5": "b" * 32,
                        "filename": "text.txt",
                        "sandboxStatus": None,
                        "oContentType": "text/plain",
                        "contentType": "text/plain",
                    }
                ],
                "threatsInfoMap": [
                    {
                        "threatID": "c" * 64,
                        "threatStatus": "active",
                        "classification": "phish",
                        "threatUrl": "https://threatinsight.example/x",
                        "threatTime": "2022-02-20T14:00:00Z",
                        "threat": "http://bad.example/login",
                        "campaignID": None,
                        "threatType": "url",
                    }
                ],
            }
        )
        + b"\n"
    )


def feed(pipe, total_bytes: int) -> None:
    sent, n = 0, 0
    with pipe:
        while sent < total_bytes:
            chunk = b"".join(tap_record(n + i) for i in range(1000))
            n += 1000
            pipe.write(chunk)
            sent += len(chunk)


def run_ship(total_bytes: int, output_args: list[str]) -> tuple[float, int, int]:
    """(seconds, records, peak RSS KiB) of one `ppship ship` child fed `total_bytes`."""
    command = [
        sys.executable,
        "-m",
        "proofpoint_shipper",
        "ship",
        "--table",
        TABLE,
        "--flush-records",
        "50000",
        *output_args,
    ]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    start = time.perf_counter()
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    if len(CORES) > 1:
        os.sched_setaffinity(child.pid, {CORES[1]})  # the sink on its own core, S3 and feeder on the other
    memory = PeakMemory(child.pid)
    writer = threading.Thread(target=feed, args=(child.stdin, total_bytes))
    writer.start()
    report = child.stderr.read().decode()
    _, status, _ = os.wait4(child.pid, 0)
    writer.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"ppship ship failed: {report.strip()}")
    records = int(report.rsplit("ppship ship: ", 1)[1].split()[0])
    return elapsed, records, memory.result()


def main() -> int:
    os.sched_setaffinity(0, {CORES[0]})
    gigabyte = 1000 * MiB
    with LocalS3("bench-bucket") as s3:
        s3_args = ["--output", "s3", "--bucket", "bench-bucket", "--endpoint-url", s3.endpoint_url]
        print("S3 sink benchmark: TAP records through `ppship ship`, local S3 on 127.0.0.1", flush=True)
        base_seconds, base_records, _ = run_ship(gigabyte // 10, ["--output", "stdout"])
        _, _, small_rss = run_ship(gigabyte // 10, s3_args)
        big_seconds, big_records, big_rss = run_ship(gigabyte, s3_args)
    record_bytes = gigabyte / big_records
    rate = big_records / big_seconds
    base_rate = base_records / base_seconds
    print(f"  records of about {record_bytes:.0f} bytes; 1 GB = {big_records:,} records")
    print(
        f"  --output s3, 1 GB stream             {rate:>10,.0f} records/s  "
        f"{rate * record_bytes / MiB:6.1f} MiB/s"
    )
    print(f"  --output stdout (baseline), 100 MB   {base_rate:>10,.0f} records/s")
    print(f"  s3 / stdout                          {rate / base_rate:>10.2f}")
    print(f"  peak memory, 100 MB stream           {small_rss / 1024:>10.1f} MiB")
    print(f"  peak memory, 1 GB stream             {big_rss / 1024:>10.1f} MiB")
    print(f"  memory 1 GB / 100 MB                 {big_rss / small_rss:>10.2f}         (bounded: about 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
