"""`ppship dev s3`: a local S3 on 127.0.0.1 that a real boto3 client can use, stopped by SIGTERM."""

import os
import re
import signal
import subprocess
import sys

import boto3
import pytest

from tests.conftest import run_ppship


# A profile the machine's AWS config does not hold (an SSO profile of another machine's, say) is
# no concern of a local S3 with its own credentials: before, it stopped the start with a traceback.
@pytest.mark.parametrize(
    "profile", [{}, {"AWS_PROFILE": "no-such-profile"}], ids=["plain", "unknown profile"]
)
def test_dev_s3_serves_a_bucket_and_stops_on_sigterm(profile):
    command = [sys.executable, "-m", "proofpoint_shipper", "dev", "s3", "--bucket", "demo-bucket"]
    environment = {**os.environ, **profile}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment) as server:
        first = server.stdout.readline().decode()
        match = re.search(r"local S3 at (http://127\.0\.0\.1:\d+), bucket demo-bucket", first)
        assert match, first or server.stderr.read().decode()[-1000:]
        endpoint = match.group(1)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            region_name="us-east-1",
        )
        client.put_object(Bucket="demo-bucket", Key="k", Body=b"v")
        assert client.get_object(Bucket="demo-bucket", Key="k")["Body"].read() == b"v"
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode == 0


# S3 gives no new bucket such a name; moto refused it with a traceback once the server was up.
@pytest.mark.parametrize("name", ["-1", "Bad_Name", "ab", "a..b", "logs-"])
def test_a_name_s3_would_not_give_a_new_bucket_is_refused_before_the_server_starts(name):
    result = run_ppship("dev", "s3", "--bucket", name, "--port", "0", timeout=30)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert result.stderr.decode().splitlines()[-1] == (
        f"ppship dev s3: error: argument --bucket: {name!r} is no name S3 gives a new bucket: 3 to 63 "
        "lower-case letters, digits, '-' and '.', beginning and ending with a letter or digit"
    )
    assert result.stdout == b""  # no banner: nothing was started
