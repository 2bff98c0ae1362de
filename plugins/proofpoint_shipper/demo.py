"""`ppship demo`: the whole job on local stand-ins, from the three sources to the eight tables.

Starts a local S3, the TAP and PoD simulators and the relay (`--output s3`) as child processes on
127.0.0.1; runs the TAP fetcher over the last hours, both PoD streams for a bounded number of
events, and sends the bundled gateway log through the relay; then shows what landed per table.
Every child is stopped at the end, also on Ctrl-C or an error. The credentials are demo values
given to the children only.
"""

import argparse
import gzip
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from proofpoint_shipper.bucket.access import new_bucket_name
from proofpoint_shipper.errors import StageFailed
from proofpoint_shipper.fluent import protocol
from proofpoint_shipper.local_s3 import LOCAL_CREDENTIALS, forget_machine_aws_profile
from proofpoint_shipper.service import ending_with_this_process, positive_int, url_of
from proofpoint_shipper.sinks.forward import ForwardSink
from proofpoint_shipper.streams import STREAMS

GATEWAY_LOG = Path(__file__).parent / "data" / "gateway-demo.log"
GATEWAY_ZONE, GATEWAY_REFERENCE = "America/Chicago", "2022-03-01T12:00:00-06:00"  # the log's site
DEMO_BUCKET = "proofpoint-demo"
DEMO_ENV = {
    "TAP_PRINCIPAL": "demo-principal",
    "TAP_SECRET": "demo-secret",
    "POD_TOKEN": "demo-token",
    "POD_CLUSTER_ID": "demo-cluster",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
START_SECONDS = 60  # how long a child may take to say where it listens
JOB_SECONDS = 300  # how long a collector may take; the demo's own runs take seconds


def register(subcommands: argparse._SubParsersAction) -> None:
    demo = subcommands.add_parser(
        "demo",
        help="run the whole job on local stand-ins and show what landed in S3",
        description="Start a local S3, the TAP and PoD simulators and the gateway relay on 127.0.0.1; "
        "collect TAP, both PoD streams and the bundled gateway log into the eight tables; print what "
        "landed. Stops everything it started, also on Ctrl-C.",
    )
    demo.add_argument(
        "--tap-hours", type=positive_int, default=6, help="hours of TAP events to fetch (default: 6)"
    )
    demo.add_argument(
        "--pod-events", type=positive_int, default=500, help="events per PoD stream (default: 500)"
    )
    demo.add_argument(
        "--gateway-lines",
        type=positive_int,
        default=2000,
        help="lines of the bundled gateway log to send (max 2000)",
    )
    demo.add_argument(
        "--endpoint-url",
        type=url_of("https", "http"),
        help="use this S3 endpoint (and --bucket) instead of a local one",
    )
    demo.add_argument(
        "--bucket", type=new_bucket_name, default=DEMO_BUCKET, help="bucket to write (default: %(default)s)"
    )
    demo.add_argument(
        "--keep-s3", action="store_true", help="keep the local S3 running afterwards, until Ctrl-C"
    )
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    forget_machine_aws_profile()  # the demo's S3 is local, with the credentials above
    with tempfile.TemporaryDirectory(prefix="ppship-demo-") as state, Children(Path(state)) as children:
        endpoint = args.endpoint_url or children.start(
            "local S3", ["dev", "s3", "--bucket", args.bucket], r"local S3 at (\S+),"
        )
        s3 = ["--output", "s3", "--bucket", args.bucket, "--endpoint-url", endpoint, "--batch-age", "5"]
        tap_url = children.start(
            "TAP simulator", ["simulate", "tap", "--days", "1", "--rate", "120"], r"TAP simulator at (\S+) "
        )
        pod_url = children.start(
            "PoD simulator", ["simulate", "pod", "--rate", "400"], r"PoD simulator at (\S+)"
        )
        relay = ["relay", "--listen", "127.0.0.1:0", "--timezone", GATEWAY_ZONE]
        relay_port = children.start(
            "relay", [*relay, "--reference-time", GATEWAY_REFERENCE, *s3], r"listening on 127\.0\.0\.1:(\d+)"
        )
        tap = ["tap", "fetch", "--once", "--since", f"{args.tap_hours}h", "--base-url", tap_url]
        tap_fetch = children.launch("TAP fetch", [*tap, "--cursor", f"{state}/tap-cursor.json", *s3])
        sent = _send_gateway_lines(int(relay_port), args.gateway_lines)
        children.progress(f"gateway: {sent} lines sent through the relay and acked (written to S3)")
        for kind in ("message", "maillog"):  # one after the other: one live session per token
            pod = ["pod", "stream", "--type", kind, "--url", pod_url, "--max-events", str(args.pod_events)]
            name = f"PoD {kind}"
            children.finish(name, children.launch(name, [*pod, "--cursor", f"{state}/pod-{kind}.json", *s3]))
        children.finish("TAP fetch", tap_fetch)
        children.stop("relay")
        report = TableReport.read(endpoint, args.bucket)
        report.print()
        children.progress("done")
        if args.keep_s3 and not args.endpoint_url:
            print(f"\nThe local S3 stays up until Ctrl-C:\n  {report.browse_command()}", flush=True)
            children.wait_for_interrupt()
        elif not args.endpoint_url:
            print("\nTo browse the bucket afterwards, run `ppship demo --keep-s3`.")
        return report.check()


def _send_gateway_lines(port: int, count: int) -> int:
    """The bundled log's first `count` lines, as an agent's forward output would send them."""
    lines = GATEWAY_LOG.read_text(encoding="utf-8").splitlines()[: max(count, 0)]
    sink = ForwardSink("127.0.0.1", port, timeout=60)
    now = protocol.event_time(datetime.now(UTC))
    sink.write_entries("gateway.raw", [[now, {"log": line}] for line in lines])
    sink.close()  # returns once the relay acked: its records are in S3
    return len(lines)


class Children:
    """The demo's child processes (`ppship ...`), each stopped on exit, whatever happened."""

    def __init__(self, state: Path):
        self.state = state
        self.began = time.monotonic()
        self.servers: dict[str, subprocess.Popen] = {}
        self._stack = ExitStack()

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc_info) -> None:
        for name in reversed(list(self.servers)):
            self.stop(name)
        self._stack.close()

    def _spawn(self, name: str, argv: list[str], stdout) -> subprocess.Popen:
        log = self._stack.enter_context((self.state / f"{name.replace(' ', '-')}.log").open("wb"))
        command = [sys.executable, "-m", "proofpoint_shipper", *argv]
        env = {**os.environ, **DEMO_ENV}
        return subprocess.Popen(
            command,
            stdout=stdout,
            stderr=log,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=ending_with_this_process(),  # before, its servers ran on after a SIGKILL
        )

    def start(self, name: str, argv: list[str], banner: str) -> str:
        """Start a server and return what its first line says (its URL or port)."""
        child = self.servers[name] = self._spawn(name, argv, subprocess.PIPE)
        self._stack.callback(child.stdout.close)
        line = _first_line(child, START_SECONDS)
        match = re.search(banner, line)
        if match is None:
            raise StageFailed(f"{name} did not start: {line.strip() or self.log_tail(name)}")
        self.progress(f"{name}: {line.strip()}")
        return match.group(1)

    def launch(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.progress(f"{name}: started")
        return self._spawn(name, argv, subprocess.DEVNULL)

    def progress(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:5.1f}s] {text}", flush=True)

    def finish(self, name: str, child: subprocess.Popen) -> None:
        try:
            code = child.wait(JOB_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise StageFailed(f"{name} did not finish within {JOB_SECONDS} s") from None
        if code != 0:
            raise StageFailed(f"{name} failed (exit code {code}): {self.log_tail(name)}")
        self.progress(f"{name}: {self.log_tail(name)}")

    def stop(self, name: str) -> None:
        child = self.servers.pop(name, None)
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def log_tail(self, name: str) -> str:
        log = self.state / f"{name.replace(' ', '-')}.log"
        text = log.read_text(encoding="utf-8", errors="replace").strip()
        return text.splitlines()[-1] if text else "(no output)"

    def wait_for_interrupt(self) -> None:
        try:
            while all(child.poll() is None for child in self.servers.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            print()


def _first_line(child: subprocess.Popen, seconds: float) -> str:
    ready, _, _ = select.select([child.stdout], [], [], seconds)
    return child.stdout.readline().decode(errors="replace") if ready else ""


class TableReport:
    """What landed per table: objects, records, bytes, an example key and record."""

    def __init__(self, endpoint: str, bucket: str, rows: dict[str, dict]):
        self.endpoint, self.bucket, self.rows = endpoint, bucket, rows

    @classmethod
    def read(cls, endpoint: str, bucket: str) -> "TableReport":
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, **LOCAL_CREDENTIALS)
        rows = {
            stream.table: {"objects": 0, "records": 0, "bytes": 0, "key": "", "example": ""}
            for stream in STREAMS
        }
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                row = rows.get(item["Key"].split("/")[0])
                if row is None:
                    continue
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                lines = (gzip.decompress(body) if item["Key"].endswith(".gz") else body).splitlines()
                row["objects"] += 1
                row["records"] += len(lines)
                row["bytes"] += item["Size"]
                row["key"] = row["key"] or item["Key"]
                row["example"] = row["example"] or (lines[0].decode(errors="replace") if lines else "")
        client.close()
        return cls(endpoint, bucket, rows)

    def print(self) -> None:
        print(f"\n{'table':<36} {'objects':>7} {'records':>8} {'bytes':>9}  example key")
        for table, row in self.rows.items():
            print(f"{table:<36} {row['objects']:>7} {row['records']:>8} {row['bytes']:>9}  {row['key']}")
        print("\nExample records:")
        for table in (
            "proofpoint_tap_messages_delivered",
            "proofpoint_on_demand_message",
            "proofpoint_gateway_filter_logs",
        ):
            example = self.rows[table]["example"]
            print(f"  {table}: {example[:160]}{'...' if len(example) > 160 else ''}")

    def browse_command(self) -> str:
        return (
            "AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local "
            f"aws --endpoint-url {self.endpoint} s3 ls --recursive s3://{self.bucket}/"
        )

    def check(self) -> int:
        empty = [table for table, row in self.rows.items() if not row["records"]]
        if empty:
            print(f"ppship demo: no records landed in {', '.join(empty)}", file=sys.stderr)
            return 1
        return 0
