"""Shared fixtures: parsers with the golden settings, and a runner for the real `ppship` command."""

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from proofpoint_shipper.gateway import GatewayParser
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.proxies import bypass_proxies_for_loopback
from proofpoint_shipper.service import STOP_SIGNALS

# Never let boto3 look for credentials at the cloud metadata address: tests talk to 127.0.0.1 only.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Nor ask a proxy set for the machine: the clients in this process skip it for 127.0.0.1, as `ppship` does.
bypass_proxies_for_loopback()

TESTS = Path(__file__).parent
GOLDEN = TESTS / "golden"
GOLDEN_ASSEMBLY = TESTS / "golden_assembly"  # gateway lines and the message records they make

# The settings every golden file was written with (tests/golden/README.md).
GOLDEN_ZONE = "America/Chicago"
GOLDEN_REFERENCE = "2022-03-01T12:00:00-06:00"


def golden_parser(fast: bool = True) -> GatewayParser:
    return GatewayParser(
        zone=resolve_zone(GOLDEN_ZONE), reference=datetime.fromisoformat(GOLDEN_REFERENCE), fast=fast
    )


def golden_cases() -> list[Path]:
    return sorted(GOLDEN.glob("*/*.log"))


def golden_lines() -> list[str]:
    return [line for case in golden_cases() for line in read_lines(case)]


def read_lines(path: Path) -> list[str]:
    """The lines of a golden .log file, exactly, without their terminators."""
    return path.read_bytes().decode("utf-8").split("\n")[:-1]


@pytest.fixture
def fast_parser() -> GatewayParser:
    return golden_parser(fast=True)


@pytest.fixture
def lark_parser() -> GatewayParser:
    return golden_parser(fast=False)


def run_ppship(
    *args: str, input: bytes = b"", timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real console command as a user would, in a child process; `env` adds variables."""
    env = {**os.environ, "PYTHONWARNINGS": "error", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "proofpoint_shipper", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def stopped_while_unanswered(
    command: list[str], env: dict[str, str], request: bytes, timeout: float
) -> subprocess.CompletedProcess:
    """Run `command` against a server (its URL: `command` holds "{server}") that takes the
    connection and the request (which must start with `request`) and answers nothing; SIGTERM it
    then, and give it `timeout` seconds to end."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        command = [part.replace("{server}", address) for part in command]
        with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
            try:
                connection, _ = server.accept()
                with connection:
                    connection.settimeout(60)
                    assert connection.recv(4096).startswith(request), "the request was sent"
                    assert not threads_taking_stop_signals(child.pid), "a stop may wait for the read"
                    child.send_signal(signal.SIGTERM)
                    _, told = child.communicate(timeout=timeout)
            except BaseException:
                child.kill()  # a failed check must not wait for the child (a live stream reconnects)
                raise
    return subprocess.CompletedProcess(command, child.returncode, b"", told)


def threads_taking_stop_signals(pid: int) -> list[str]:
    """The names of the threads of process `pid`, its main one aside, that do not block the stop
    signals. The kernel may hand a signal to any thread that does not block it; one such thread
    takes, the main thread's blocking read goes on, and Python's handler waits for it to end."""
    taking = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text() if task.name != str(pid) else ""
            name = (task / "comm").read_text().strip()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile (one request's)
        if found := re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M):
            blocked = int(found[1], 16)
            if any(not blocked & 1 << (signum - 1) for signum in STOP_SIGNALS):
                taking.append(name)
    return taking


def process_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (ended, not yet reaped by init) counts as ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a command that stopped on a clear error wrote (exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout.decode()
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


# The real command with files over a size unwritable (EFBIG), as on a full disk; set in the child
# itself, as preexec_fn is not safe beside the servers' threads in the test process.
_LIMITED_PPSHIP = """
import resource, runpy, signal, sys
size = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
sys.argv = ["ppship", *sys.argv[2:]]
runpy.run_module("proofpoint_shipper", run_name="__main__")
"""


def wait_for(condition, seconds: float = 60) -> None:
    """Until `condition()` holds, checked every 50 ms; fails the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def limited_ppship(max_file_bytes: int, *args: str) -> list[str]:
    """The command line of `ppship ARGS` that cannot write files over `max_file_bytes`."""
    return [sys.executable, "-c", _LIMITED_PPSHIP, str(max_file_bytes), *args]


@pytest.fixture(scope="session")
def local_s3():
    """One moto S3 server on 127.0.0.1 for the whole session; tests make their own buckets."""
    from proofpoint_shipper.local_s3 import LocalS3

    with LocalS3("session-bucket") as server:
        yield server


@pytest.fixture
def bucket(local_s3, request) -> str:
    """A bucket of the test's own: its name, cut to fit, then a digest of the whole test id, so the
    cases of one parametrized test (names alike for 50 characters) never share one."""
    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:44].strip("-")
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"t-{readable}-{digest}"
    local_s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def receiver():
    from tests.forward_receiver import ForwardReceiver

    server = ForwardReceiver().start()
    yield server
    server.stop()


def put_headers(client) -> list[dict[str, str]]:
    """The headers of every PutObject `client` sends from now on, as they go to S3."""
    sent: list[dict[str, str]] = []
    client.meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: sent.append(params["headers"])
    )
    return sent


@pytest.fixture
def locked_bucket(local_s3, bucket, monkeypatch) -> str:
    """A bucket with Object Lock and a default retention, and botocore set to send no checksum
    of its own (as before 1.36, or with AWS_REQUEST_CHECKSUM_CALCULATION=when_required): such a
    bucket refuses a PutObject that carries neither a Content-MD5 nor a checksum."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    name = f"locked-{bucket}"[:63]
    client = local_s3.client()
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    retention = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    client.put_object_lock_configuration(
        Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": retention}
    )
    return name


@contextlib.contextmanager
def checking_s3(bucket: str, unchecked_calls: int):
    """A local S3 (`ppship dev s3`) that checks credentials and IAM policies as AWS does, after
    its first `unchecked_calls` calls (creating the bucket takes two); yields its endpoint."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(unchecked_calls)}
    command = [sys.executable, "-m", "proofpoint_shipper", "dev", "s3", "--bucket", bucket]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) as server:
        endpoint = re.search(r"(http://127\.0\.0\.1:\d+)", server.stdout.readline().decode()).group(1)
        yield endpoint
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
