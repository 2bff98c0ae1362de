"""What every object we write asks of S3: server-side encryption, a canned ACL, its Content-MD5.

A bucket policy may refuse a PutObject that lacks the first two: a policy denying unencrypted
uploads, or a bucket in another AWS account that must own what is written to it
(bucket-owner-full-control). So the batches, the S3 cursor and the write probes of `ppship s3
check` and `ppship doctor` all send the same settings: a probe that differs from the writes would
pass where they fail, or fail where they pass. A bucket with Object Lock refuses a PutObject with
neither a Content-MD5 nor a checksum, and botocore sends no checksum before 1.36 or with
AWS_REQUEST_CHECKSUM_CALCULATION=when_required (set for S3-compatible stores that reject them):
the Content-MD5 goes always, and S3 checks the body against it on the way.
"""

import argparse
import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from proofpoint_shipper.errors import ConfigError

SSE_CHOICES = ("AES256", "aws:kms")
# Canned ACLs that hand the objects to the bucket's owner; any other would widen who reads them.
ACL_CHOICES = ("bucket-owner-full-control", "bucket-owner-read")


@dataclass(frozen=True)
class ObjectSettings:
    sse: str | None = None
    kms_key_id: str | None = None
    acl: str | None = None

    def __post_init__(self):
        if self.sse not in (None, *SSE_CHOICES):
            raise ConfigError(f"unknown server-side encryption {self.sse!r}: use AES256 or aws:kms")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ConfigError("a KMS key id needs --sse aws:kms")
        if self.acl not in (None, *ACL_CHOICES):
            raise ConfigError(f"unknown canned ACL {self.acl!r}: use {' or '.join(ACL_CHOICES)}")

    def put_arguments(self, body: bytes) -> dict[str, str]:
        """The PutObject parameters for `body`: its Content-MD5, then what these settings add."""
        arguments = {"ContentMD5": content_md5(body)}
        if self.sse:
            arguments["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            arguments["SSEKMSKeyId"] = self.kms_key_id
        if self.acl:
            arguments["ACL"] = self.acl
        return arguments


def content_md5(body: bytes) -> str:
    # not for security: usedforsecurity=False keeps it working where FIPS mode forbids MD5
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


NOTHING_ASKED = ObjectSettings()  # S3's defaults: the bucket's default encryption, no ACL


def add_object_arguments(add: Callable[..., object]) -> None:
    """--sse, --kms-key-id and --acl, through `add` (a parser's add_argument, or the like)."""
    add("--sse", choices=SSE_CHOICES, help="server-side encryption asked for on each object written")
    add("--kms-key-id", help="KMS key for --sse aws:kms (default: the AWS managed key, aws/s3)")
    add(
        "--acl",
        choices=ACL_CHOICES,
        help="canned ACL of each object written: bucket-owner-full-control for a bucket of another "
        "AWS account, so that its owner can read the objects (and where its policy asks for it)",
    )


def object_settings(args: argparse.Namespace) -> ObjectSettings:
    return ObjectSettings(args.sse, args.kms_key_id, args.acl)
