"""A local S3 (moto's server) on 127.0.0.1 for tests, the demo and trying the S3 output.

`LocalS3(bucket)` is a context manager: start() binds a free port (or the one given), creates the
bucket, and gives `endpoint_url` and a boto3 `client()`. `ppship dev s3` runs one until stopped.
"""

import argparse
import logging
import os

from proofpoint_shipper.bucket.access import new_bucket_name
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.listening import check_can_listen, url_host
from proofpoint_shipper.service import port_number, serve_until_stopped

LOCAL_CREDENTIALS = {
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
    "region_name": "us-east-1",
}


def forget_machine_aws_profile() -> None:
    """Drop the machine's AWS profile from this process's environment (its children's too).

    A local S3 takes the credentials above: a profile plays no part, and one this machine's AWS
    config does not hold stops every S3 client before it is made (botocore's ProfileNotFound).
    """
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)


class LocalS3:
    def __init__(self, bucket: str = "proofpoint-logs", port: int = 0, host: str = "127.0.0.1"):
        self.bucket = bucket
        self.port = port
        self.host = host
        self._server = None

    def start(self) -> "LocalS3":
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ConfigError("the local S3 needs moto: pip install 'proofpoint-shipper[dev]'") from exc
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        check_can_listen(self.host, self.port)  # moto binds in its thread and would wait for good
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        client = self.client()
        if self.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def client(self, **config):
        import boto3  # here, not at the top: every ppship command imports this module

        return boto3.client("s3", endpoint_url=self.endpoint_url, **LOCAL_CREDENTIALS, **config)

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def register(subcommands: argparse._SubParsersAction) -> None:
    dev = subcommands.add_parser(
        "dev",
        help="local stand-ins for trying ppship without AWS",
        description="Local stand-ins for trying ppship without AWS.",
    )
    actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    s3 = actions.add_parser(
        "s3",
        help="run a local S3 on 127.0.0.1 until Ctrl-C",
        description="Run a local S3 (moto) on 127.0.0.1 with one bucket, until "
        "Ctrl-C or SIGTERM. Prints the endpoint and the settings to use it.",
    )
    s3.add_argument("--port", type=port_number, default=0, help="port to bind (default: a free one)")
    s3.add_argument(
        "--bucket",
        type=new_bucket_name,
        default="proofpoint-logs",
        help="bucket to create (default: %(default)s)",
    )
    s3.set_defaults(run=run_local_s3)


def run_local_s3(args: argparse.Namespace) -> int:
    forget_machine_aws_profile()
    return serve_until_stopped(LocalS3(args.bucket, args.port), _banner)


def _banner(local: "LocalS3") -> str:
    return (
        f"local S3 at {local.endpoint_url}, bucket {local.bucket}\n"
        f"  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1\n"
        f"  aws --endpoint-url {local.endpoint_url} s3 ls s3://{local.bucket}/ --recursive"
    )
