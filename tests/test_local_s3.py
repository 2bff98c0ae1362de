"""`ppship dev s3`: a local S3 on 127.0.0.1 that a real boto3 client can use, stopped by SIGTERM."""

import re
import signal
import subprocess
import sys

import boto3


def test_dev_s3_serves_a_bucket_and_stops_on_sigterm():
    command = [sys.executable, "-m", "proofpoint_shipper", "dev", "s3", "--bucket", "demo-bucket"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as server:
        first = server.stdout.readline().decode()
        endpoint = re.search(r"local S3 at (http://127\.0\.0\.1:\d+), bucket demo-bucket", first).group(1)
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
