"""`ppship doctor`: is this host ready to ship? One line per check, before any data moves.

Checks what is configured and says how to configure what is not: TAP credentials and the API's
answer (one request of the 1800 a day), the PoD token and a stream handshake (closed at once),
AWS credentials, the bucket and a write probe, and the clock against every server that answered
(TAP windows and S3 signatures both go wrong with a drifting clock). Exit 0 when every check
that ran passed, 1 otherwise, also when nothing could be checked. Secrets are never printed.
"""

import argparse
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from proofpoint_shipper import __version__
from proofpoint_shipper.bucket.access import aws_region, bucket_name, open_client, probe_write, reason
from proofpoint_shipper.bucket.layout import key_prefix
from proofpoint_shipper.bucket.object_settings import add_object_arguments, object_settings
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.pod import DEFAULT_URL as POD_URL
from proofpoint_shipper.pod import command as pod_command
from proofpoint_shipper.proxies import check_client_settings
from proofpoint_shipper.service import env_value, filesystem_path, seconds, url_of
from proofpoint_shipper.tap import DEFAULT_BASE_URL as TAP_URL
from proofpoint_shipper.tap import command as tap_command
from proofpoint_shipper.trust import not_trusted, untrusted_certificate

TIMEOUT = 10.0  # seconds for each network check: a doctor answers quickly or says why not


@dataclass(frozen=True)
class Finding:
    status: str  # "ok", "FAIL" or "skip"
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<5} {self.check:<16} {self.detail}"


def register(subcommands: argparse._SubParsersAction) -> None:
    doctor = subcommands.add_parser(
        "doctor",
        help="check credentials, reachability, bucket write permission and clock skew",
        description="Check that this host can collect and ship: TAP and PoD credentials and "
        "reachability, AWS credentials, the bucket and permission to write to it, and the clock. "
        "One line per check; sources that are not configured are skipped with a hint. "
        "Exit code 0 when every check that ran passed, 1 otherwise. The S3 probe object is written "
        "with --sse, --kms-key-id and --acl: give them as the collectors are given them.",
    )
    doctor.add_argument(
        "--tap-base-url",
        type=url_of("https", "http"),
        default=TAP_URL,
        help="TAP SIEM API (default: %(default)s)",
    )
    doctor.add_argument(
        "--tap-secret-file", type=filesystem_path, help="file with the TAP secret (default: $TAP_SECRET)"
    )
    doctor.add_argument(
        "--pod-url", type=url_of("wss", "ws"), default=POD_URL, help="PoD log stream (default: %(default)s)"
    )
    doctor.add_argument(
        "--pod-token-file", type=filesystem_path, help="file with the PoD token (default: $POD_TOKEN)"
    )
    doctor.add_argument(
        "--pod-cluster-id",
        default=env_value("POD_CLUSTER_ID") or None,
        help="PoD cluster id (default: $POD_CLUSTER_ID)",
    )
    doctor.add_argument(
        "--bucket", type=bucket_name, help="the data-lake bucket to probe (default: S3 not checked)"
    )
    doctor.add_argument("--prefix", type=key_prefix, default="", help="key prefix before the table names")
    doctor.add_argument(
        "--endpoint-url", type=url_of("https", "http"), help="an S3-compatible endpoint (default: AWS)"
    )
    doctor.add_argument(
        "--region", type=aws_region, help="AWS region (default: $AWS_REGION, else boto3's chain)"
    )
    add_object_arguments(doctor.add_argument)  # the probe object is written as the collectors write
    doctor.add_argument(
        "--max-clock-skew",
        type=seconds,
        default=60.0,
        help="seconds the clock may differ from the servers' (default: %(default)s)",
    )
    doctor.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    doctor = Doctor(args)
    findings = []
    for finding in doctor.findings():
        print(finding.line(), flush=True)
        findings.append(finding)
    if any(finding.status == "FAIL" for finding in findings):
        return 1
    if not any(finding.status == "ok" for finding in findings):
        print("nothing could be checked: configure a source or give --bucket (see the skip lines)")
        return 1
    return 0


class Doctor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.objects = object_settings(args)  # a KMS key without --sse aws:kms: an error at once
        self.clocks: list[tuple[str, float]] = []  # (server, its clock minus ours, seconds)

    def findings(self) -> Iterator[Finding]:
        yield from self.tap()
        yield from self.pod()
        yield from self.s3()
        yield self.clock()

    # -- TAP -----------------------------------------------------------------------------------

    def tap(self) -> Iterator[Finding]:
        args = self.args
        if not (os.environ.get("TAP_PRINCIPAL") or os.environ.get("TAP_SECRET") or args.tap_secret_file):
            yield Finding("skip", "tap credentials", "set TAP_PRINCIPAL and TAP_SECRET to check the TAP API")
            return
        try:
            principal, secret = tap_command.credentials(args.tap_secret_file, "--tap-secret-file")
        except ConfigError as exc:
            yield Finding("FAIL", "tap credentials", str(exc))
            return
        yield Finding("ok", "tap credentials", "TAP_PRINCIPAL and the secret are set")
        try:
            check_client_settings()
        except ConfigError as exc:
            yield Finding("FAIL", "tap api", str(exc))
            return
        yield self._tap_answer(principal, secret)

    def _tap_answer(self, principal: str, secret: str) -> Finding:
        import httpx  # here, as websockets and boto3 below: each check imports only its own client

        from proofpoint_shipper.tap.client import is_web_page

        url = self.args.tap_base_url
        started = time.monotonic()
        try:
            response = httpx.get(
                f"{url.rstrip('/')}/v2/siem/all",
                params={"sinceSeconds": 60, "format": "json"},
                auth=(principal, secret),
                timeout=TIMEOUT,
                headers={"User-Agent": f"proofpoint-shipper/{__version__} doctor"},
            )
        except httpx.HTTPError as exc:
            if failure := untrusted_certificate(exc):
                return Finding("FAIL", "tap api", str(not_trusted(url, failure)))
            return Finding("FAIL", "tap api", f"cannot reach {url}: {type(exc).__name__}: {exc}")
        took = time.monotonic() - started
        self._server_clock("tap api", response.headers.get("Date"), took)
        status = response.status_code
        if status == 200 and is_web_page(response):
            return Finding(
                "FAIL", "tap api", f"{url} answered with a web page, not the API's JSON: {_page(response)}"
            )
        if status in (200, 204):
            return Finding("ok", "tap api", f"{url} accepted the credentials ({status} in {took:.2f} s)")
        if status in (401, 403):
            return Finding(
                "FAIL",
                "tap api",
                f"{url} refused the credentials ({status}); check TAP_PRINCIPAL and TAP_SECRET",
            )
        if status == 429:
            return Finding("FAIL", "tap api", f"{url}: today's request quota is used up (429)")
        return Finding("FAIL", "tap api", f"{url} answered {status}: {_page(response)}")

    # -- PoD -----------------------------------------------------------------------------------

    def pod(self) -> Iterator[Finding]:
        args = self.args
        if not (os.environ.get("POD_TOKEN") or args.pod_token_file):
            yield Finding(
                "skip", "pod credentials", "set POD_TOKEN and POD_CLUSTER_ID to check the PoD stream"
            )
            return
        try:
            token = pod_command.token(
                args.pod_token_file, args.pod_cluster_id, ("--pod-token-file", "--pod-cluster-id")
            )
        except ConfigError as exc:
            yield Finding("FAIL", "pod credentials", str(exc))
            return
        yield Finding("ok", "pod credentials", "the token and cluster id are set")
        try:
            check_client_settings(websocket=True)
        except ConfigError as exc:
            yield Finding("FAIL", "pod stream", str(exc))
            return
        yield self._pod_handshake(token)

    def _pod_handshake(self, token: str) -> Finding:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        from proofpoint_shipper.pod.stream import refusal, stream_address

        url = self.args.pod_url
        address = stream_address(url, self.args.pod_cluster_id, "message")
        started = time.monotonic()
        try:
            with connect(
                address,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=TIMEOUT,
                close_timeout=1,
            ) as websocket:
                took = time.monotonic() - started
                self._server_clock("pod stream", websocket.response.headers.get("Date"), took)
        except InvalidStatus as exc:
            return Finding("FAIL", "pod stream", str(refusal(exc)))
        except ssl.SSLCertVerificationError as exc:
            return Finding("FAIL", "pod stream", str(not_trusted(url, exc)))
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            return Finding("FAIL", "pod stream", f"cannot reach {url}: {type(exc).__name__}: {exc}")
        return Finding("ok", "pod stream", f"{url} accepted the token ({took:.2f} s); session closed")

    # -- S3 ------------------------------------------------------------------------------------

    def s3(self) -> Iterator[Finding]:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        bucket = self.args.bucket
        if not bucket:
            yield Finding("skip", "s3 bucket", "give --bucket to check the bucket and write permission")
            return
        try:
            credentials = boto3.session.Session().get_credentials()  # boto3's chain, as the client uses
        except BotoCoreError as exc:  # a profile the AWS config does not hold, say
            yield Finding("FAIL", "aws credentials", f"cannot read the AWS settings: {exc}")
            return
        if credentials is None:
            yield Finding("FAIL", "aws credentials", reason(NoCredentialsError(), bucket))
            return
        yield Finding("ok", "aws credentials", f"found ({credentials.method})")
        try:
            client = open_client(self.args.endpoint_url, self.args.region)
        except ConfigError as exc:  # a region set to nothing, a proxy setting it cannot use
            yield Finding("FAIL", "s3 client", str(exc))
            return
        try:
            head = client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as exc:
            yield Finding("FAIL", "s3 bucket", reason(exc, bucket))
            return
        region = head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region", "its region not given")
        yield Finding("ok", "s3 bucket", f"{bucket} answers ({region})")
        started = time.monotonic()
        try:
            answer = probe_write(client, bucket, self.args.prefix, self.objects)
        except (BotoCoreError, ClientError) as exc:
            yield Finding("FAIL", "s3 write", f"cannot write a probe object: {reason(exc, bucket)}")
            return
        took = time.monotonic() - started
        self._server_clock("s3", answer["ResponseMetadata"]["HTTPHeaders"].get("date"), took)
        where = f"s3://{bucket}/{self.args.prefix.strip('/')}".rstrip("/")
        yield Finding("ok", "s3 write", f"wrote and deleted a probe object under {where}")

    # -- clock ---------------------------------------------------------------------------------

    def _server_clock(self, server: str, date_header: str | None, took: float) -> None:
        """Note how far the server's Date is from our clock. Date has whole seconds and was
        stamped somewhere during the request, hence the half second and half the round trip."""
        if not date_header:
            return
        try:
            theirs = parsedate_to_datetime(date_header).timestamp() + 0.5
        except (TypeError, ValueError):
            return
        self.clocks.append((server, theirs - (time.time() - took / 2)))

    def clock(self) -> Finding:
        if not self.clocks:
            return Finding("skip", "clock", "no server answered with a Date to compare against")
        server, offset = max(self.clocks, key=lambda item: abs(item[1]))
        limit = self.args.max_clock_skew
        if abs(offset) > limit:
            direction = "behind" if offset > 0 else "ahead of"
            return Finding(
                "FAIL",
                "clock",
                f"{abs(offset):.0f} s {direction} {server} (limit {limit:.0f} s): "
                "TAP windows and S3 signatures need a synchronised clock; check NTP",
            )
        names = ", ".join(sorted({name for name, _ in self.clocks}))
        return Finding("ok", "clock", f"within {abs(offset):.1f} s of {names} (limit {limit:.0f} s)")


def _page(response) -> str:
    """The start of an answer's page, on one line."""
    return " ".join(response.text.split())[:120]
