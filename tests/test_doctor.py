"""`ppship doctor` as a real process against the real local parts: simulators and local S3.

The clock check is tried against a tiny HTTP server on 127.0.0.1 that sends a Date ten minutes
off: the machine's own clock cannot be moved in a test.
"""

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from proofpoint_shipper.pod.events import Timeline
from proofpoint_shipper.pod.simulator import PodSimulator
from proofpoint_shipper.tap.events import generate
from proofpoint_shipper.tap.simulator import TapSimulator
from tests.tap_harness import PRINCIPAL, SECRET

TOKEN, CLUSTER = "doctor-token", "doctor-cluster"
ALL_CHECKS = ("tap credentials", "tap api", "pod credentials", "pod stream", "aws credentials")
ALL_CHECKS += ("s3 bucket", "s3 write", "clock")
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_", "POD_", "AWS_"))}
AWS = {
    "AWS_ACCESS_KEY_ID": "doctor-key-id",
    "AWS_SECRET_ACCESS_KEY": "doctor-aws-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def doctor(*args: str, **env: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "proofpoint_shipper", "doctor", *args],
        env={**CLEAN, "AWS_EC2_METADATA_DISABLED": "true", **env},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.stderr == b"", result.stderr.decode()[-1000:]  # no traceback, no log noise
    return result.returncode, result.stdout.decode().splitlines()


def status(lines: list[str]) -> dict[str, str]:
    """{check name: status} from the one-line findings."""
    return {
        line[6:22].strip(): line[:5].strip() for line in lines if line[:5].strip() in ("ok", "FAIL", "skip")
    }


@pytest.fixture(scope="module")
def tap():
    end = datetime.now(UTC)
    with TapSimulator(list(generate(3, end - timedelta(hours=1), end, 30)), PRINCIPAL, SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def pod():
    with PodSimulator(Timeline(4, datetime.now(UTC) - timedelta(hours=1), rate=1), TOKEN, CLUSTER) as server:
        yield server


def everything(tap, pod, local_s3, bucket) -> list[str]:
    return [
        *("--tap-base-url", tap.url, "--pod-url", pod.url, "--pod-cluster-id", CLUSTER),
        *("--bucket", bucket, "--prefix", "lake", "--endpoint-url", local_s3.endpoint_url),
        *("--sse", "AES256", "--acl", "bucket-owner-full-control"),  # the probe writes as collectors do
    ]


def test_all_checks_pass_against_the_local_parts(tap, pod, local_s3, bucket):
    code, lines = doctor(
        *everything(tap, pod, local_s3, bucket),
        TAP_PRINCIPAL=PRINCIPAL,
        TAP_SECRET=SECRET,
        POD_TOKEN=TOKEN,
        **AWS,
    )
    assert code == 0, lines
    assert status(lines) == {name: "ok" for name in ALL_CHECKS}
    assert not any(secret in "\n".join(lines) for secret in (SECRET, TOKEN, "doctor-aws-secret")), lines
    assert local_s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # the probe is gone


def test_wrong_credentials_and_a_missing_bucket_fail_one_line_each(tap, pod, local_s3):
    code, lines = doctor(
        *everything(tap, pod, local_s3, "no-such-bucket"),
        TAP_PRINCIPAL=PRINCIPAL,
        TAP_SECRET="wrong",
        POD_TOKEN="wrong",
        **AWS,
    )
    assert code == 1
    found = status(lines)
    assert (found["tap api"], found["pod stream"], found["s3 bucket"]) == ("FAIL", "FAIL", "FAIL")
    text = "\n".join(lines)
    assert "refused the credentials (401)" in text and "refused the token (401)" in text
    assert "bucket no-such-bucket does not exist" in text and "wrong" not in text


def test_half_set_credentials_and_unreachable_servers_are_named(local_s3, bucket):
    code, lines = doctor(
        *(
            "--tap-base-url",
            "http://127.0.0.1:9",
            "--bucket",
            bucket,
            "--endpoint-url",
            local_s3.endpoint_url,
        ),
        TAP_PRINCIPAL=PRINCIPAL,
        POD_TOKEN=TOKEN,
    )
    found = status(lines)
    assert code == 1
    # what is missing, named by doctor's own flags
    assert found["tap credentials"] == "FAIL"
    assert "TAP credentials missing: set TAP_SECRET or --tap-secret-file" in "\n".join(lines)
    assert found["pod credentials"] == "FAIL"
    assert "PoD cluster id missing: set POD_CLUSTER_ID or --pod-cluster-id" in "\n".join(lines)
    assert found["aws credentials"] == "FAIL"  # none in the environment, no metadata service
    assert not any(line.startswith("nothing could be checked") for line in lines)  # failures were found


def test_a_region_set_to_nothing_is_a_failed_check_and_the_doctor_goes_on(tap):
    code, lines = doctor(
        "--tap-base-url",
        tap.url,
        "--bucket",
        "lake",
        TAP_PRINCIPAL=PRINCIPAL,
        TAP_SECRET=SECRET,
        **{**AWS, "AWS_DEFAULT_REGION": ""},
    )
    found = status(lines)
    assert code == 1
    assert found["s3 client"] == "FAIL"
    assert "the AWS region is empty (AWS_DEFAULT_REGION is set to nothing)" in "\n".join(lines)
    assert found["clock"] == "ok"  # checked against the TAP API, after the S3 checks stopped


def test_an_unknown_aws_profile_is_a_failed_check_not_a_traceback():
    code, lines = doctor("--bucket", "lake", **{**AWS, "AWS_PROFILE": "no-such-profile"})
    assert code == 1
    assert status(lines)["aws credentials"] == "FAIL"
    assert "The config profile (no-such-profile) could not be found" in "\n".join(lines)


def test_nothing_configured_is_not_a_pass():
    code, lines = doctor()
    assert code == 1
    assert set(status(lines).values()) == {"skip"}
    assert lines[-1].startswith("nothing could be checked")


class _SkewedDate(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response_only(204)
        self.send_header("Date", format_datetime(datetime.now(UTC) + timedelta(minutes=10), usegmt=True))
        self.end_headers()

    def log_message(self, *args):
        pass


def doctor_of_tap_at(handler: type[BaseHTTPRequestHandler]) -> tuple[int, list[str]]:
    """The doctor's findings with a TAP API on 127.0.0.1 that answers as `handler` does."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return doctor(
            "--tap-base-url", f"http://127.0.0.1:{server.server_port}", TAP_PRINCIPAL="p", TAP_SECRET="s"
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_clock_ten_minutes_away_fails_the_clock_check():
    code, lines = doctor_of_tap_at(_SkewedDate)
    assert code == 1
    assert status(lines)["tap api"] == "ok" and status(lines)["clock"] == "FAIL"
    clock = next(line for line in lines if line.startswith("FAIL  clock"))
    assert "behind tap api" in clock and "check NTP" in clock
    assert 590 <= int(clock.split()[2]) <= 610


class _ProxyPage(BaseHTTPRequestHandler):
    def do_GET(self):
        page = b"<html><body>Blocked by the web proxy</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


def test_a_web_page_for_an_answer_fails_the_tap_check():
    """A proxy's block page sent as a 200 was reported as the API accepting the credentials."""
    code, lines = doctor_of_tap_at(_ProxyPage)
    assert code == 1 and status(lines)["tap api"] == "FAIL"
    (finding,) = [line for line in lines if line.startswith("FAIL  tap api")]
    assert finding.endswith(
        "answered with a web page, not the API's JSON: <html><body>Blocked by the web proxy</body></html>"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["doctor", "--pod-url", "notaurl"],
        ["doctor", "--tap-base-url", "ftp://x"],
        ["tap", "fetch", "--base-url", "tap-api.example.com"],
        ["pod", "stream", "--type", "message", "--url", "https://logstream.example.com"],
    ],
)
def test_a_url_of_the_wrong_scheme_is_refused_before_anything_starts(args):
    result = subprocess.run(
        [sys.executable, "-m", "proofpoint_shipper", *args], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert result.stderr.decode().splitlines()[-1].endswith("URL: " + repr(args[-1]))
