"""`ppship s3 setup` and `ppship s3 check`: prepare the data-lake bucket, and verify it.

Entry point: `register(subcommands)`. Bad input (an ARN of the wrong service, a retention that is
not a positive number of days, a bucket in another region, a missing permission) is one line
and exit code 2, found before anything is changed where it can be.
"""

import argparse
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from proofpoint_shipper.bucket import check, setup
from proofpoint_shipper.bucket.access import (
    aws_region,
    bucket_name,
    bucket_region,
    error_code,
    open_client,
    reason,
)
from proofpoint_shipper.bucket.layout import key_prefix
from proofpoint_shipper.bucket.object_settings import add_object_arguments, object_settings
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.service import positive_int, url_of
from proofpoint_shipper.sinks.records import stream_for
from proofpoint_shipper.streams import STREAMS


def register(subcommands: argparse._SubParsersAction) -> None:
    s3 = subcommands.add_parser(
        "s3",
        help="prepare and check the data-lake bucket",
        description="Prepare the data-lake bucket (retention, encryption, notifications) and check "
        "that it holds what the data lake expects.",
    )
    actions = s3.add_subparsers(dest="action", required=True, metavar="ACTION")
    _register_setup(actions)
    _register_check(actions)


def _bucket_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", type=bucket_name, required=True, help="the data-lake bucket")
    parser.add_argument(
        "--prefix", type=key_prefix, default="", help="key prefix before the table names (default: none)"
    )
    parser.add_argument(
        "--region",
        type=aws_region,
        help="the bucket's region; a bucket elsewhere is an error (default: $AWS_REGION, else boto3's)",
    )
    parser.add_argument(
        "--endpoint-url", type=url_of("https", "http"), help="an S3-compatible endpoint (default: AWS)"
    )
    parser.add_argument(
        "--tables",
        help=f"comma list of tables (default: all eight: {', '.join(s.table for s in STREAMS)})",
    )


def _register_setup(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "setup",
        help="retention, encryption, public access block and notifications per table",
        description="Turn on default encryption, block public access, write one lifecycle rule per "
        "table prefix (delete after the retention, abort unfinished uploads) and, with --notify-arn, one "
        "new-object notification per table prefix. Rules and notifications that are not ours are kept; "
        "ours (ids ppship-<table>) are updated. Prints every change; --dry-run changes nothing.",
    )
    _bucket_arguments(parser)
    parser.add_argument("--create", action="store_true", help="create the bucket if it does not exist")
    parser.add_argument(
        "--sse", choices=["AES256", "aws:kms"], help="default encryption (default: AES256 if none)"
    )
    parser.add_argument("--kms-key-id", help="the KMS key for --sse aws:kms")
    parser.add_argument("--retention-days", metavar="N", help="delete a table's objects N days old")
    parser.add_argument(
        "--retention",
        action="append",
        default=[],
        metavar="TABLE=N",
        help="retention for one table, over --retention-days (repeatable)",
    )
    parser.add_argument(
        "--notify-arn",
        help="SQS queue, SNS topic or Lambda function told of every new object, per table prefix "
        "(S3 must be allowed to send to it: the queue's or topic's policy, the function's permission)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the changes, make none")
    parser.set_defaults(run=run_setup)


def _register_check(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "check",
        help="write probe, settings per table, newest objects, layout and format findings",
        description="Check the bucket: write permission (a probe object, deleted at once), encryption "
        "and public access, per table its lifecycle, notifications, newest object and age, keys that "
        "break the layout and lines in the wrong format in the newest objects. One line per finding; "
        "exit code 1 when a finding is FAIL. Lists each table's newest day only, to stay cheap. "
        "Give --sse, --kms-key-id and --acl as the collectors are given them: the probe object is "
        "written with them, as a bucket policy may refuse a write without.",
    )
    _bucket_arguments(parser)
    parser.add_argument(
        "--sample", type=positive_int, default=3, help="newest objects read per table (default: %(default)s)"
    )
    parser.add_argument(
        "--max-keys", type=positive_int, default=10_000, help="keys listed per table (default: %(default)s)"
    )
    add_object_arguments(parser.add_argument)  # the probe object is written as the collectors write
    parser.set_defaults(run=run_check)


# -- setup --------------------------------------------------------------------------------------


def run_setup(args: argparse.Namespace) -> int:
    tables = _tables(args.tables)
    retention = _retention(args.retention_days, args.retention, tables)
    destination = setup.parse_destination(args.notify_arn) if args.notify_arn else None
    if args.sse == "aws:kms" and not args.kms_key_id:
        raise ConfigError("--sse aws:kms needs --kms-key-id")
    if args.kms_key_id and args.sse != "aws:kms":
        raise ConfigError("--kms-key-id goes with --sse aws:kms")
    client = open_client(args.endpoint_url, args.region)
    wanted = setup.Wanted(args.prefix, tables, retention, args.sse, args.kms_key_id, destination)
    try:
        return _setup(client, args, wanted)
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(reason(exc, args.bucket)) from exc


def _setup(client, args: argparse.Namespace, wanted: setup.Wanted) -> int:
    exists = _exists(client, args.bucket)
    region = _region(client, args) if exists else (args.region or client.meta.region_name)
    if not exists and not args.create:
        raise ConfigError(f"bucket {args.bucket} does not exist (add --create to create it in {region})")
    if wanted.destination and wanted.destination.region != region:
        raise ConfigError(
            f"--notify-arn is in {wanted.destination.region} but the bucket is in {region}: "
            "S3 notifies only destinations in the bucket's own region"
        )
    plan = setup.plan(
        client, args.bucket, setup.read_settings(client, args.bucket) if exists else setup.Settings(), wanted
    )
    if not exists:
        print(setup.Line("create", "bucket", f"{args.bucket} in {region}").text())
        plan.writes.insert(0, ("bucket", lambda: _create(client, args.bucket, region)))
    for line in plan.lines:
        print(line.text())
    if args.dry_run:
        print(f"dry run: {len(plan.writes)} writes not made")
        return 0
    for area, write in plan.writes:  # one at a time, each reported: a refusal shows what was done
        write()
        print(f"written {area}", flush=True)
    if not plan.writes:
        print("nothing to change")
    return 0


def _exists(client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket"):
            return False
        raise
    return True


def _region(client, args: argparse.Namespace) -> str:
    region = bucket_region(client, args.bucket)
    if args.region and region != args.region:
        raise ConfigError(f"bucket {args.bucket} is in {region}, not in {args.region} (--region)")
    return region


def _create(client, bucket: str, region: str) -> None:
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})


def _tables(text: str | None) -> tuple:
    if not text:
        return STREAMS
    return tuple(stream_for(name.strip()) for name in text.split(",") if name.strip())


def _retention(days: str | None, per_table: list[str], tables: tuple) -> dict[str, int]:
    retention = {stream.table: _days(days, "--retention-days") for stream in tables} if days else {}
    chosen = {stream.table for stream in tables}
    for item in per_table:
        table, separator, value = item.partition("=")
        if not separator:
            raise ConfigError(f"--retention wants TABLE=DAYS, got {item!r}")
        stream = stream_for(table.strip())
        if stream.table not in chosen:
            raise ConfigError(f"--retention names {stream.table}, which --tables leaves out")
        retention[stream.table] = _days(value, f"--retention {stream.table}")
    return retention


def _days(text: str, flag: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise ConfigError(f"{flag} wants a whole number of days, got {text!r}") from None
    if days < 1:
        raise ConfigError(f"{flag} must be at least 1 day, got {days}")
    return days


# -- check --------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    if args.sample < 0 or args.max_keys < 1:
        raise ConfigError("--sample must be 0 or more and --max-keys at least 1")
    client = open_client(args.endpoint_url, args.region)
    scope = check.Scope(
        args.bucket, args.prefix, _tables(args.tables), args.sample, args.max_keys, object_settings(args)
    )
    failed = 0
    try:
        client.head_bucket(Bucket=args.bucket)
        _region(client, args)
        for finding in check.check_bucket(client, scope, datetime.now(UTC)):
            print(finding.text(), flush=True)
            failed += finding.status == "FAIL"
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(reason(exc, args.bucket)) from exc
    if failed:
        print(f"{failed} finding{'s' if failed > 1 else ''} FAIL")
    return 1 if failed else 0
