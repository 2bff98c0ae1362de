"""The output flags every collecting command shares, and `open_sink(args)` that checks them.

All start-up checks happen in `open_sink`: unknown table, unreachable or missing bucket, refused
credentials, unwritable spool, unreadable secret file. Each is one ConfigError line (exit 2).
Secrets (the forward shared key) come from a file or an environment variable, never a flag.
"""

import argparse
import os
import ssl
from pathlib import Path

from proofpoint_shipper.bucket.access import open_client
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.service import host_and_port, positive_int, positive_seconds, read_secret, url_of
from proofpoint_shipper.sinks.forward import ForwardSink
from proofpoint_shipper.sinks.s3 import DEFAULT_MAX_BATCH_AGE, DEFAULT_MAX_BATCH_BYTES, S3Sink
from proofpoint_shipper.sinks.spool import Spool
from proofpoint_shipper.sinks.stdout import DEFAULT_MAX_LINE_BYTES, StdoutSink

SHARED_KEY_ENV = "PPSHIP_FORWARD_SHARED_KEY"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output",
        choices=["stdout", "forward", "s3"],
        default="stdout",
        help="where records go (default: %(default)s)",
    )
    group.add_argument(
        "--format",
        choices=["json", "text", "msgpack"],
        default="json",
        help="stdout only: NDJSON with a `table` key, text-table lines, or msgpack (default: %(default)s)",
    )
    group.add_argument(
        "--max-line-bytes",
        type=positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="stdout only: longer records are refused and counted (default: %(default)s)",
    )
    group.add_argument(
        "--forward",
        default="127.0.0.1:24224",
        metavar="HOST:PORT",
        help="forward only: the agent's forward input (default: %(default)s)",
    )
    group.add_argument("--forward-tls", action="store_true", help="forward only: connect with TLS")
    group.add_argument("--forward-ca", type=Path, help="forward only: CA bundle to verify the agent")
    group.add_argument(
        "--shared-key-file",
        type=Path,
        help=f"forward only: file holding the shared key (or set ${SHARED_KEY_ENV})",
    )
    add_s3_arguments(group)


def add_s3_arguments(group) -> None:
    """The S3 output's flags, also used by commands whose other outputs differ (the relay)."""
    group.add_argument("--bucket", help="s3 only: the data-lake bucket")
    group.add_argument("--prefix", default="", help="s3 only: key prefix before the table name")
    group.add_argument(
        "--endpoint-url",
        type=url_of("https", "http"),
        help="s3 only: an S3-compatible endpoint (default: AWS)",
    )
    group.add_argument("--region", help="s3 only: AWS region (default: boto3's chain)")
    group.add_argument("--sse", choices=["AES256", "aws:kms"], help="s3 only: server-side encryption")
    group.add_argument("--kms-key-id", help="s3 only: KMS key for --sse aws:kms")
    group.add_argument("--no-gzip", action="store_true", help="s3 only: write objects uncompressed")
    group.add_argument(
        "--batch-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_BYTES,
        help="s3 only: close a batch at this many uncompressed bytes (default: %(default)s)",
    )
    group.add_argument(
        "--batch-age",
        type=positive_seconds,
        default=DEFAULT_MAX_BATCH_AGE,
        help="s3 only: close a batch after this many seconds (default: %(default)s)",
    )
    group.add_argument(
        "--spool-dir",
        type=Path,
        help="s3 only: keep objects here while S3 is unreachable, re-send them later",
    )


def open_sink(args: argparse.Namespace):
    """The sink the flags describe, checked: raises ConfigError with one clear line."""
    if args.output == "stdout":
        return StdoutSink(format=args.format, max_line_bytes=args.max_line_bytes)
    if args.output == "forward":
        return _forward_sink(args)
    return open_s3_sink(args)


def _forward_sink(args: argparse.Namespace) -> ForwardSink:
    host, port = host_and_port(args.forward, "--forward")
    tls = None
    if args.forward_tls or args.forward_ca:
        tls = ssl.create_default_context(cafile=str(args.forward_ca) if args.forward_ca else None)
    return ForwardSink(host, port, tls=tls, shared_key=_shared_key(args))


def _shared_key(args: argparse.Namespace) -> str | None:
    if args.shared_key_file is None:
        return os.environ.get(SHARED_KEY_ENV) or None
    return read_secret(args.shared_key_file, "the shared key file")


def open_s3_sink(args: argparse.Namespace) -> S3Sink:
    """The S3 sink the `add_s3_arguments` flags describe, its bucket checked."""
    if not args.bucket:
        raise ConfigError("--output s3 needs --bucket")
    sink = S3Sink(
        open_client(args.endpoint_url, args.region),
        args.bucket,
        prefix=args.prefix,
        compress=not args.no_gzip,
        max_batch_bytes=args.batch_bytes,
        max_batch_age=args.batch_age,
        sse=args.sse,
        kms_key_id=args.kms_key_id,
        spool=Spool(args.spool_dir) if args.spool_dir else None,
    )
    sink.check()
    return sink
