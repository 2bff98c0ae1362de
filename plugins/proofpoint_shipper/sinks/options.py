"""The output flags every collecting command shares, and `open_sink(args)` that checks them.

All start-up checks happen in `open_sink`: unknown table, unreachable or missing bucket, refused
credentials, unwritable spool, unreadable secret file. Each is one ConfigError line (exit 2).
Secrets (the forward shared key) come from a file or an environment variable, never a flag.
"""

import argparse
from collections.abc import Callable

from proofpoint_shipper.bucket.access import aws_region, bucket_name, open_client
from proofpoint_shipper.bucket.layout import key_prefix
from proofpoint_shipper.bucket.object_settings import add_object_arguments, object_settings
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.service import (
    env_value,
    filesystem_path,
    peer_address,
    positive_int,
    positive_seconds,
    read_secret,
    url_of,
)
from proofpoint_shipper.sinks.forward import ForwardSink
from proofpoint_shipper.sinks.s3 import (
    DEFAULT_MAX_BATCH_AGE,
    DEFAULT_MAX_BATCH_BYTES,
    MAX_OBJECT_BYTES,
    S3Sink,
)
from proofpoint_shipper.sinks.spool import Spool
from proofpoint_shipper.sinks.stdout import DEFAULT_MAX_LINE_BYTES, StdoutSink
from proofpoint_shipper.trust import agent_tls

SHARED_KEY_ENV = "PPSHIP_FORWARD_SHARED_KEY"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output",
        choices=["stdout", "forward", "s3"],
        default="stdout",
        help="where records go (default: %(default)s)",
    )
    only = output_only(parser, group)
    only(
        "stdout",
        "--format",
        choices=["json", "text", "msgpack"],
        default="json",
        help="NDJSON with a `table` key, text-table lines, or msgpack (default: %(default)s)",
    )
    only(
        "stdout",
        "--max-line-bytes",
        type=positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="longer records are refused and counted (default: %(default)s)",
    )
    only(
        "forward",
        "--forward",
        default="127.0.0.1:24224",
        metavar="HOST:PORT",
        help="the agent's forward input (default: %(default)s)",
    )
    only("forward", "--forward-tls", action="store_true", help="connect with TLS")
    only("forward", "--forward-ca", type=filesystem_path, help="CA bundle to verify the agent")
    only(
        "forward",
        "--shared-key-file",
        type=filesystem_path,
        help=f"file holding the shared key (or set ${SHARED_KEY_ENV})",
    )
    add_s3_arguments(parser, group)


def add_s3_arguments(parser: argparse.ArgumentParser, group) -> None:
    """The S3 output's flags, also used by commands whose other outputs differ (the relay)."""
    only = output_only(parser, group)
    only("s3", "--bucket", type=bucket_name, help="the data-lake bucket")
    only("s3", "--prefix", type=key_prefix, default="", help="key prefix before the table name")
    only(
        "s3",
        "--endpoint-url",
        type=url_of("https", "http"),
        help="an S3-compatible endpoint (default: AWS)",
    )
    only("s3", "--region", type=aws_region, help="AWS region (default: $AWS_REGION, else boto3's chain)")
    add_object_arguments(lambda *names, **options: only("s3", *names, **options))
    only("s3", "--no-gzip", action="store_true", help="write objects uncompressed")
    only(
        "s3",
        "--batch-bytes",
        type=batch_bytes,
        default=DEFAULT_MAX_BATCH_BYTES,
        help="close a batch at this many uncompressed bytes (default: %(default)s)",
    )
    only(
        "s3",
        "--batch-age",
        type=positive_seconds,
        default=DEFAULT_MAX_BATCH_AGE,
        help="close a batch after this many seconds (default: %(default)s)",
    )
    only(
        "s3",
        "--spool-dir",
        type=filesystem_path,
        help="keep objects here while S3 is unreachable, re-send them later",
    )


def batch_bytes(text: str) -> int:
    """--batch-bytes: at most what one PutObject takes (5 GiB), else a batch could never be
    uploaded, only spooled and retried."""
    size = positive_int(text)
    if size > MAX_OBJECT_BYTES:
        raise argparse.ArgumentTypeError(f"{text} is over S3's 5 GiB limit for one upload")
    return size


def output_only(parser: argparse.ArgumentParser, group) -> Callable[..., None]:
    """`only(output, *names, help=..., **options)` adds a flag to `group` that only `output` reads,
    its help saying so; the parser remembers it, and `check_output_flags` refuses it given with
    another output."""
    flags = parser.get_default("output_only_flags")
    if flags is None:
        flags = {}
        parser.set_defaults(output_only_flags=flags)

    def only(output: str, *names: str, help: str, **options) -> None:
        action = group.add_argument(*names, help=f"{output} only: {help}", **options)
        flags[action.dest] = (output, names[0], action.default)

    return only


def check_output_flags(args: argparse.Namespace) -> None:
    """A flag of another output than the chosen one would be ignored: a ConfigError instead."""
    for dest, (output, flag, default) in args.output_only_flags.items():
        if args.output != output and getattr(args, dest) != default:
            raise ConfigError(f"{flag} is for --output {output}, but the output is {args.output}")


def open_sink(args: argparse.Namespace, writer: str | None = None):
    """The sink the flags describe, checked: raises ConfigError with one clear line. `writer`
    opens the S3 object names (default: this host's name)."""
    check_output_flags(args)
    if args.output == "stdout":
        return StdoutSink(format=args.format, max_line_bytes=args.max_line_bytes)
    if args.output == "forward":
        return _forward_sink(args)
    return open_s3_sink(args, writer)


def _forward_sink(args: argparse.Namespace) -> ForwardSink:
    host, port = peer_address(args.forward, "--forward")
    tls = agent_tls(args.forward_tls, args.forward_ca, "--forward-ca")
    return ForwardSink(host, port, tls=tls, shared_key=_shared_key(args))


def _shared_key(args: argparse.Namespace) -> str | None:
    if args.shared_key_file is None:
        return env_value(SHARED_KEY_ENV) or None  # without the newline `echo` leaves
    return read_secret(args.shared_key_file, "the shared key file")


def open_s3_sink(args: argparse.Namespace, writer: str | None = None) -> S3Sink:
    """The S3 sink the `add_s3_arguments` flags describe, its bucket checked."""
    if not args.bucket:
        raise ConfigError("--output s3 needs --bucket")
    sink = S3Sink(
        open_client(args.endpoint_url, args.region),
        args.bucket,
        prefix=args.prefix,
        host=writer,
        compress=not args.no_gzip,
        max_batch_bytes=args.batch_bytes,
        max_batch_age=args.batch_age,
        objects=object_settings(args),
        spool=Spool(args.spool_dir, args.bucket) if args.spool_dir else None,
    )
    sink.check()
    return sink
