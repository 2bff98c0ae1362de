"""`ppship dev s3`: a local S3 on 127.0.0.1 that a real boto3 client can use, stopped by SIGTERM."""

import os
import re
import signal
import subprocess
import sys

import boto3
import pytest


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
