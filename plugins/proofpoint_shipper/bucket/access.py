"""Talking to the bucket: one client factory, one-line reasons for S3's refusals, a write probe.

Every command that touches the bucket (the S3 output, `ppship s3`, `ppship doctor`) opens its
client here, so timeouts and retry settings are the same everywhere, and explains S3's errors
with `reason()`, so a refusal reads the same wherever it happens.
"""

import argparse
import os
import re
import socket
import uuid

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from proofpoint_shipper.bucket.layout import under
from proofpoint_shipper.bucket.object_settings import ObjectSettings
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.proxies import check_proxy_settings
from proofpoint_shipper.trust import BOTO_CA_VARIABLE, untrusted_certificate, what_to_do

CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "403",
}
# Probe objects go here, beside the tables, never inside one; they are deleted at once.
PROBE_FOLDER = "_ppship_probe"
# The permission each bucket call needs, for the one-line error when it is missing.
PERMISSION = {
    "HeadBucket": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "CreateBucket": "s3:CreateBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "PutBucketNotificationConfiguration": "s3:PutBucketNotification",
}


def open_client(endpoint_url: str | None = None, region: str | None = None, fail_fast: bool = True):
    """An S3 client. fail_fast: one attempt per call, as our own retry policy decides what is
    tried again; without it (the TAP cursor in S3, which has no policy of its own), botocore's.

    Without `region`, AWS_REGION is read before boto3's chain, as the AWS CLI and the other AWS
    SDKs read it: boto3 alone ignores it, and a host or pod that sets only AWS_REGION would get
    us-east-1, where `s3 setup --create` makes the bucket.
    """
    import boto3
    from botocore.config import Config

    region = region or os.environ.get("AWS_REGION", "").strip() or None

    config = (
        Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60) if fail_fast else None
    )
    check_proxy_settings()  # botocore would fail its first request on one it cannot use
    try:
        return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    except (ValueError, BotoCoreError) as exc:  # settings botocore cannot use: a region, a profile
        raise ConfigError(_settings_fault(exc)) from None


def _settings_fault(exc: Exception) -> str:
    if isinstance(exc, ValueError) and os.environ.get("AWS_DEFAULT_REGION") == "":
        return (  # botocore built the endpoint https://s3..amazonaws.com
            "the AWS region is empty (AWS_DEFAULT_REGION is set to nothing): give --region, "
            "or set AWS_DEFAULT_REGION to one such as us-east-1"
        )
    return f"cannot open an S3 client: {exc}"


_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\Z")  # as botocore checks it


def aws_region(text: str) -> str:
    """--region: a region name botocore takes; "" or "us east 1" made it raise, a traceback."""
    if not _REGION.match(text):
        raise argparse.ArgumentTypeError(f"expected an AWS region such as us-east-1, got {text!r}")
    return text


_BUCKET = re.compile(r"[a-zA-Z0-9._-]{1,255}\Z")  # what S3 calls a bucket name, older ones included


def bucket_name(text: str) -> str:
    """--bucket: a name, not a URL or a path. botocore refused those with its regular expression,
    as a failure to reach S3; the usual mistakes are told here with what to give instead."""
    if text.startswith("s3://"):
        raise argparse.ArgumentTypeError(f"give the bucket's name without s3://, got {text!r}")
    if "/" in text and not text.startswith("arn:"):  # an access point ARN holds a "/"
        raise argparse.ArgumentTypeError(f"{text!r}: a bucket name holds no '/'; folders go in --prefix")
    if text.startswith("arn:"):  # an access point, checked by botocore's own expression
        readable = text.isprintable() and " " not in text
    else:
        readable = _BUCKET.match(text) is not None
    if not readable:
        raise argparse.ArgumentTypeError(f"expected a bucket name, got {text!r}")
    return text


_NEW_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


def new_bucket_name(text: str) -> str:
    """--bucket of a bucket to create: S3's naming rules, which older names may break, checked
    here; the local S3 refused such a name with a traceback."""
    name = bucket_name(text)
    if not _NEW_BUCKET.match(name) or ".." in name:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no name S3 gives a new bucket: 3 to 63 lower-case letters, digits, '-' "
            "and '.', beginning and ending with a letter or digit"
        )
    return name


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def reason(exc: Exception, bucket: str) -> str:
    """One line saying why S3 refused or could not be reached."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (environment, profile or instance role)"
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in ("404", "NoSuchBucket"):
            return f"bucket {bucket} does not exist"
        operation = getattr(exc, "operation_name", "")
        if code == "AccessDenied" and operation in PERMISSION:
            need = PERMISSION[operation]
            refused = f"S3 refused {operation} on bucket {bucket} (AccessDenied): the credentials need {need}"
            if operation == "PutObject":  # or a bucket policy wants what ObjectSettings sends
                refused += ", or the bucket's policy asks for --sse, --kms-key-id or --acl"
            return refused
        if code in CREDENTIAL_ERRORS:
            return f"S3 refused our credentials for bucket {bucket} ({code})"
        return f"S3 refused bucket {bucket}: {code or exc}"
    if isinstance(exc, BotoCoreError):
        hint = f"; {what_to_do(BOTO_CA_VARIABLE)}" if untrusted_certificate(exc) else ""
        return f"cannot reach S3 for bucket {bucket}: {exc}{hint}"
    return f"{type(exc).__name__}: {exc}"


def probe_key(prefix: str) -> str:
    return f"{under(prefix, PROBE_FOLDER)}{socket.gethostname()}-{uuid.uuid4().hex}.txt"


def bucket_region(client, bucket: str) -> str:
    """The bucket's region (GetBucketLocation says None for us-east-1 and "EU" for eu-west-1)."""
    location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def probe_write(client, bucket: str, prefix: str, objects: ObjectSettings) -> dict:
    """Write a small object as the collectors write theirs, and delete it again; returns the
    put's response (its headers hold the server's Date). Raises botocore's errors for the caller
    to explain with `reason()`."""
    key = probe_key(prefix)
    body = b"proofpoint-shipper write probe\n"
    answer = client.put_object(Bucket=bucket, Key=key, Body=body, **objects.put_arguments(body))
    client.delete_object(Bucket=bucket, Key=key)
    return answer
