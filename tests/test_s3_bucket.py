"""`ppship s3 setup` and `ppship s3 check` as real processes against the local S3 (moto).

Missing permissions are tried against a second local S3 that checks IAM policies, as AWS does.
"""

import gzip
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import boto3
import pytest

from proofpoint_shipper.bucket.check import Scope, check_bucket, format_problem
from proofpoint_shipper.bucket.layout import misplacement
from proofpoint_shipper.bucket.object_settings import ObjectSettings
from proofpoint_shipper.sinks.s3 import S3Sink
from proofpoint_shipper.streams import BY_TABLE, STREAMS
from tests.conftest import checking_s3, one_error_line, put_headers, run_ppship
from tests.test_cli_ship import LOCAL_ENV

QUEUE = "arn:aws:sqs:us-east-1:123456789012:lake-new-objects"
SENDMAIL = "proofpoint_gateway_sendmail_logs"
FILTER = "proofpoint_gateway_filter_logs"


def s3(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proofpoint_shipper", "s3", *args],
        env={**os.environ, **LOCAL_ENV, **(env or {})},
        capture_output=True,
        timeout=120,
        check=False,
    )


def at(local_s3, bucket: str, *extra: str) -> tuple[str, ...]:
    return ("--bucket", bucket, "--endpoint-url", local_s3.endpoint_url, *extra)


def rules(client, bucket: str) -> dict[str, dict]:
    return {rule["ID"]: rule for rule in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}


def settings(client, bucket: str) -> tuple:
    """Everything setup may change, for before/after comparisons."""

    def read(call):
        try:
            answer = call(Bucket=bucket)
        except client.exceptions.ClientError as exc:
            return exc.response["Error"]["Code"]
        answer.pop("ResponseMetadata", None)
        return answer

    calls = ("get_bucket_encryption", "get_public_access_block", "get_bucket_lifecycle_configuration")
    return (
        *[read(getattr(client, name)) for name in calls],
        read(client.get_bucket_notification_configuration),
    )


# -- setup ----------------------------------------------------------------------------------------


def test_setup_on_an_empty_bucket(local_s3, bucket):
    result = s3(
        "setup", *at(local_s3, bucket, "--prefix", "lake", "--retention-days", "90", "--notify-arn", QUEUE)
    )
    assert result.returncode == 0, result.stderr.decode()
    client = local_s3.client()
    found = rules(client, bucket)
    assert set(found) == {f"ppship-{stream.table}" for stream in STREAMS}
    for stream in STREAMS:
        rule = found[f"ppship-{stream.table}"]
        assert rule["Filter"] == {"Prefix": f"lake/{stream.table}/"} and rule["Status"] == "Enabled"
        assert (
            rule["Expiration"] == {"Days": 90}
            and rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] > 0
        )
    encryption = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all(client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    queues = client.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert sorted(q["Filter"]["Key"]["FilterRules"][0]["Value"] for q in queues) == sorted(
        f"lake/{stream.table}/" for stream in STREAMS
    )
    assert {q["QueueArn"] for q in queues} == {QUEUE}


def test_setup_merges_with_rules_and_notifications_it_did_not_write(local_s3, bucket):
    client = local_s3.client()
    theirs = {
        "ID": "archive-exports",
        "Filter": {"Prefix": "exports/"},
        "Status": "Enabled",
        "Expiration": {"Days": 7},
    }
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [theirs]})
    their_topic = {
        "Id": "exports-topic",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:exports",
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "exports/"}]}},
    }
    client.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"TopicConfigurations": [their_topic]}
    )
    result = s3("setup", *at(local_s3, bucket, "--retention-days", "30", "--notify-arn", QUEUE))
    assert result.returncode == 0, result.stderr.decode()
    assert "keep    lifecycle     rule 'archive-exports'" in result.stdout.decode()
    found = rules(client, bucket)
    assert found["archive-exports"] == theirs and len(found) == 1 + len(STREAMS)
    notifications = client.get_bucket_notification_configuration(Bucket=bucket)
    assert notifications["TopicConfigurations"] == [their_topic]
    assert len(notifications["QueueConfigurations"]) == len(STREAMS)

    again = s3("setup", *at(local_s3, bucket, "--retention-days", "30", "--notify-arn", QUEUE))
    assert again.returncode == 0 and again.stdout.decode().splitlines()[-1] == "nothing to change"


def test_dry_run_prints_the_changes_and_changes_nothing(local_s3, bucket):
    client = local_s3.client()
    before = settings(client, bucket)
    result = s3("setup", *at(local_s3, bucket, "--retention-days", "30", "--notify-arn", QUEUE, "--dry-run"))
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert f"add     lifecycle     {SENDMAIL}: delete objects 30 days old under {SENDMAIL}/" in out
    assert (
        "change  encryption    none → AES256" in out and out.splitlines()[-1] == "dry run: 4 writes not made"
    )
    assert settings(client, bucket) == before


def test_retention_per_table_and_a_subset_of_tables(local_s3, bucket):
    tables = f"{SENDMAIL},{FILTER}"
    result = s3(
        "setup",
        *at(local_s3, bucket, "--tables", tables, "--retention-days", "90", "--retention", f"{SENDMAIL}=30"),
    )
    assert result.returncode == 0, result.stderr.decode()
    days = {rule_id: rule["Expiration"]["Days"] for rule_id, rule in rules(local_s3.client(), bucket).items()}
    assert days == {f"ppship-{FILTER}": 90, f"ppship-{SENDMAIL}": 30}
    changed = s3("setup", *at(local_s3, bucket, "--tables", tables, "--retention-days", "60"))
    assert f"change  lifecycle     {SENDMAIL}: 30 → 60 days" in changed.stdout.decode()


def test_create_makes_the_bucket_in_the_region(local_s3):
    result = s3(
        "setup", *at(local_s3, "made-by-setup", "--create", "--region", "eu-west-1", "--retention-days", "5")
    )
    assert result.returncode == 0, result.stderr.decode()
    client = local_s3.client()
    assert client.get_bucket_location(Bucket="made-by-setup")["LocationConstraint"] == "eu-west-1"
    assert len(rules(client, "made-by-setup")) == len(STREAMS)


def test_without_region_the_bucket_is_made_where_aws_region_says_as_the_aws_cli_would(local_s3):
    """boto3 reads AWS_DEFAULT_REGION alone; the AWS CLI and the other SDKs read AWS_REGION first."""
    flags = at(local_s3, "made-in-aws-region", "--create", "--retention-days", "5")
    result = s3("setup", *flags, env={"AWS_REGION": "ap-southeast-2"})  # AWS_DEFAULT_REGION: us-east-1
    assert result.returncode == 0, result.stderr.decode()
    location = local_s3.client().get_bucket_location(Bucket="made-in-aws-region")["LocationConstraint"]
    assert location == "ap-southeast-2"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--notify-arn", "arn:aws:s3:::another-bucket"),
            "must be an SQS queue, SNS topic or Lambda function; got a s3 ARN",
        ),
        (
            ("--notify-arn", "arn:aws:lambda:us-east-1:123456789012:layer:x"),
            "a Lambda ARN that is not a function",
        ),
        (("--notify-arn", "not-an-arn"), "--notify-arn is not an ARN"),
        (
            ("--notify-arn", "arn:aws:sqs:eu-west-1:123456789012:q"),
            "S3 notifies only destinations in the bucket's own region",
        ),
        (("--retention-days", "-5"), "--retention-days must be at least 1 day, got -5"),
        (("--retention-days", "ten"), "--retention-days wants a whole number of days"),
        (("--retention", f"{SENDMAIL}=0"), f"--retention {SENDMAIL} must be at least 1 day"),
        (("--retention", "proofpoint_nope=3"), "unknown table 'proofpoint_nope'"),
        (("--region", "eu-west-1"), "is in us-east-1, not in eu-west-1 (--region)"),
        (("--sse", "aws:kms"), "--sse aws:kms needs --kms-key-id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_change(local_s3, bucket, flags, message):
    client = local_s3.client()
    before = settings(client, bucket)
    assert message in one_error_line(s3("setup", *at(local_s3, bucket, *flags)))
    assert settings(client, bucket) == before


@pytest.mark.parametrize(
    "setting, error",
    [
        # set but empty, as a config map or a unit file with no value leaves it: botocore made the
        # endpoint https://s3..amazonaws.com and raised a ValueError
        (
            {"AWS_DEFAULT_REGION": ""},
            "the AWS region is empty (AWS_DEFAULT_REGION is set to nothing): give --region, or set "
            "AWS_DEFAULT_REGION to one such as us-east-1",
        ),
        # a profile this machine's AWS config does not hold: botocore raised ProfileNotFound
        (
            {"AWS_PROFILE": "no-such-profile"},
            "cannot open an S3 client: The config profile (no-such-profile) could not be found",
        ),
    ],
    ids=["empty region", "unknown profile"],
)
def test_aws_settings_botocore_cannot_use_are_one_line_not_a_traceback(bucket, setting, error):
    for command in (["s3", "check"], ["ship", "--table", FILTER, "--output", "s3"]):
        result = run_ppship(*command, "--bucket", bucket, env={**LOCAL_ENV, **setting}, timeout=120)
        assert one_error_line(result) == f"ppship: error: {error}"


def test_a_missing_bucket_without_create_is_one_line(local_s3):
    assert "bucket no-such-lake does not exist (add --create" in one_error_line(
        s3("setup", *at(local_s3, "no-such-lake", "--retention-days", "5"))
    )


def test_a_notification_of_theirs_overlapping_a_table_stops_the_plan(local_s3, bucket):
    client = local_s3.client()
    everything = {
        "Id": "all-new",
        "QueueArn": QUEUE,
        "Events": ["s3:ObjectCreated:Put"],
    }  # no prefix: all keys
    client.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [everything]}
    )
    before = settings(client, bucket)
    line = one_error_line(s3("setup", *at(local_s3, bucket, "--retention-days", "5", "--notify-arn", QUEUE)))
    assert "notification 'all-new'" in line and "overlaps" in line
    assert settings(client, bucket) == before


@pytest.fixture(scope="module")
def s3_with_iam():
    """A second local S3 that checks IAM policies; its first six calls go unchecked: they
    make the bucket, an object in it, the user, its key and its policy."""
    with checking_s3("iam-lake", unchecked_calls=6) as endpoint:
        yield endpoint


def test_missing_permissions_name_the_permission(s3_with_iam):
    admin = {k.lower(): v for k, v in LOCAL_ENV.items() if k != "AWS_DEFAULT_REGION"}
    hour = datetime.now(UTC).strftime("%Y/%m/%d/%H")
    unreadable = f"proofpoint_tap_messages_delivered/{hour}/a.ndjson"
    s3_client = boto3.client("s3", endpoint_url=s3_with_iam, **admin, region_name="us-east-1")
    s3_client.put_object(Bucket="iam-lake", Key=unreadable, Body=b'{"guid": "g-1"}\n')
    iam = boto3.client("iam", endpoint_url=s3_with_iam, **admin, region_name="us-east-1")
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    # moto asks for "s3:HeadBucket" where AWS asks for s3:ListBucket; both are granted. Objects
    # may be listed, not read.
    read_only = ["s3:ListBucket", "s3:HeadBucket", "s3:GetBucketLocation"]
    read_only += ["s3:GetLifecycleConfiguration"]
    read_only += [
        "s3:GetEncryptionConfiguration",
        "s3:GetBucketPublicAccessBlock",
        "s3:GetBucketNotification",
    ]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": read_only, "Resource": "*"}],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
    reader = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    flags = ("--bucket", "iam-lake", "--endpoint-url", s3_with_iam)
    dry = s3("setup", *flags, "--retention-days", "5", "--dry-run", env=reader)
    assert dry.returncode == 0, dry.stderr.decode()  # reading is allowed: the plan is shown
    line = one_error_line(s3("setup", *flags, "--retention-days", "5", env=reader))
    assert "(AccessDenied): the credentials need s3:Put" in line
    checked = s3("check", *flags, env=reader)
    out = checked.stdout.decode()
    assert checked.returncode == 1 and "FAIL  write permission" in out
    assert "the credentials need s3:PutObject, or the bucket's policy asks for --sse" in out
    assert (
        f"format: {unreadable}: S3 refused to read it (AccessDenied): the credentials need s3:GetObject"
        in out
    )
    assert f"{SENDMAIL}  no objects in the layout yet" in out  # the tables after it were checked too


# -- check ----------------------------------------------------------------------------------------


def write_with_the_sink(local_s3, bucket: str) -> None:
    """Real objects from the S3 output, one per table."""
    sink = S3Sink(local_s3.client(), bucket, prefix="lake")
    now = datetime.now(UTC).isoformat()
    for stream in STREAMS:
        if stream.format == "text":
            program, body = (
                ("sendmail", "q1: to=<a@b>, stat=Sent")
                if "sendmail" in stream.name
                else ("filter_instance1", "rprt s=x mod=av")
            )
            record = {"text": f"{now} mx1 {program}[1]: {body}", "time": now}
        else:
            record = {"ts": now, "guid": "g-1"}
        sink.write(stream.table, [record, record])
    sink.flush()


def test_check_of_a_well_kept_bucket_passes(local_s3, bucket):
    assert s3("setup", *at(local_s3, bucket, "--prefix", "lake", "--retention-days", "30")).returncode == 0
    write_with_the_sink(local_s3, bucket)
    result = s3("check", *at(local_s3, bucket, "--prefix", "lake"))
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "FAIL" not in out and "WARN" not in out
    for stream in STREAMS:
        assert re.search(
            rf"ok    {stream.table} +newest: lake/{stream.table}/\d{{4}}/\d\d/\d\d/\d\d/\S+ \(\d+ s old\)",
            out,
        )
        assert re.search(rf"ok    {stream.table} +format: 1 newest objects, 2 lines", out)
        assert re.search(rf"ok    {stream.table} +lifecycle: objects deleted after 30 days", out)


def test_check_finds_a_misplaced_object_and_a_bad_gateway_timestamp(local_s3, bucket):
    write_with_the_sink(local_s3, bucket)
    client = local_s3.client()
    hour = datetime.now(UTC).strftime("%Y/%m/%d/%H")
    client.put_object(Bucket=bucket, Key=f"lake/{SENDMAIL}/stray.log", Body=b"x\n")
    client.put_object(Bucket=bucket, Key="lake/proofpoint_tap_clicks/2026/01/01/00/a.ndjson", Body=b"{}\n")
    bsd = b"Feb  3 08:35:00 mx1 sendmail[1]: q1: to=<a@b>, stat=Sent\n"
    client.put_object(Bucket=bucket, Key=f"lake/{SENDMAIL}/{hour}/zz-bad.log.gz", Body=gzip.compress(bsd))
    as_json = b'{"text": "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt"}\n'
    client.put_object(Bucket=bucket, Key=f"lake/{FILTER}/{hour}/zz-json.log", Body=as_json)
    result = s3("check", *at(local_s3, bucket, "--prefix", "lake", "--sample", "5"))
    out = result.stdout.decode()
    assert result.returncode == 1
    assert f"FAIL  {SENDMAIL}  misplaced: lake/{SENDMAIL}/stray.log" in out
    assert "WARN  layout" in out and "lake/proofpoint_tap_clicks/ is not one of the tables" in out
    assert f"format: lake/{SENDMAIL}/{hour}/zz-bad.log.gz: line 1: 'Feb  3 08:35:00" in out
    assert "does not start with a %Y-%m-%dT%H:%M:%S.%f%z time (1 of 1 lines)" in out
    assert f"format: lake/{FILTER}/{hour}/zz-json.log: line 1: JSON where text is expected" in out
    assert re.search(r"^\d+ findings? FAIL$", out.splitlines()[-1])


def test_an_archived_newest_object_is_told_and_the_check_goes_on(local_s3, bucket):
    write_with_the_sink(local_s3, bucket)
    hour = datetime.now(UTC).strftime("%Y/%m/%d/%H")
    archived = f"lake/{FILTER}/{hour}/zz-archived.log"
    local_s3.client().put_object(Bucket=bucket, Key=archived, Body=b"x\n", StorageClass="GLACIER")
    result = s3("check", *at(local_s3, bucket, "--prefix", "lake", "--sample", "2"))
    out = result.stdout.decode()
    assert result.returncode == 0, out  # a WARN: nothing there is known to be wrong
    assert f"WARN  {FILTER}    format: {archived}: not read: archived (GLACIER)" in out
    assert re.search(rf"ok    {FILTER} +format: 1 newest objects, 2 lines", out)  # the other one
    assert re.search(rf"ok    {SENDMAIL} +format: 1 newest objects", out)  # the table after it


def test_check_explains_a_folder_with_no_name(local_s3, bucket):
    """What an agent's key format makes of an empty S3_PREFIX: "/table/..." at the root, or
    "lake//table/..." below a prefix."""
    client = local_s3.client()
    client.put_object(Bucket=bucket, Key=f"/{SENDMAIL}/2026/01/01/00/a.log.gz", Body=b"x")
    client.put_object(Bucket=bucket, Key=f"lake//{SENDMAIL}/2026/01/01/00/a.log.gz", Body=b"x")
    for prefix, folder in (("", "/"), ("lake", "lake//")):
        out = s3("check", *at(local_s3, bucket, "--prefix", prefix, "--tables", SENDMAIL)).stdout.decode()
        assert (
            f"WARN  layout                            {folder} is a folder with no name: keys that start "
            "with '/' or hold '//', as an empty prefix before a '/' makes them; the data lake does not "
            "look there"
        ) in out, out


def test_the_check_writes_its_probe_with_the_encryption_and_acl_the_collectors_use(local_s3, bucket):
    """A bucket policy that wants them would refuse a probe without them, and the check would
    report a fault the collectors do not have."""
    client = local_s3.client()
    sent = put_headers(client)
    settings = ObjectSettings("aws:kms", "arn:aws:kms:us-east-1:1:key/k-1", "bucket-owner-full-control")
    findings = check_bucket(client, Scope(bucket, "lake", tables=(), objects=settings), datetime.now(UTC))
    assert next(findings).text().startswith("ok    write permission")
    (headers,) = sent
    assert headers["x-amz-acl"] == "bucket-owner-full-control"
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "arn:aws:kms:us-east-1:1:key/k-1"
    flags = at(local_s3, bucket, "--sse", "AES256", "--acl", "bucket-owner-full-control")
    flags += ("--tables", SENDMAIL)
    assert b"ok    write permission" in s3("check", *flags).stdout  # the flags reach it
    refused = s3("check", *at(local_s3, bucket, "--kms-key-id", "k"))
    assert one_error_line(refused) == "ppship: error: a KMS key id needs --sse aws:kms"


def test_the_probe_is_written_to_a_bucket_with_object_lock(local_s3, locked_bucket):
    checked = s3("check", *at(local_s3, locked_bucket, "--tables", SENDMAIL))  # the environment is passed on
    assert b"ok    write permission" in checked.stdout, checked.stdout


def test_check_of_a_missing_bucket_is_one_line(local_s3):
    assert "bucket not-there does not exist" in one_error_line(s3("check", *at(local_s3, "not-there")))


def test_the_sinks_keys_follow_the_layout_the_check_expects():
    sink = S3Sink(client=None, bucket="b", prefix="lake")
    moment = datetime(2022, 2, 20, 14, 35, tzinfo=UTC)
    for stream in STREAMS:
        for name in (None, "20220220T140000Z-20220220T150000Z"):
            assert misplacement(stream, sink.object_key(stream.table, moment, name), "lake") is None
    assert "a .ndjson object in a table of text objects" in misplacement(
        BY_TABLE[FILTER], f"lake/{FILTER}/2022/02/20/14/h.ndjson", "lake"
    )
    assert "not a date and hour" in misplacement(
        BY_TABLE[FILTER], f"lake/{FILTER}/2022/13/20/14/h.log", "lake"
    )


@pytest.mark.parametrize(
    ("table", "body", "problem"),
    [
        (FILTER, b"2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=x\n", None),
        (FILTER, b"2015-06-17T16:51:00.354586-07:00 rprt s=x mod=av\n", None),  # the on-box form
        (
            FILTER,
            b"2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: Q1: stat=Sent\n",
            f"a line of sendmail, which belongs in {SENDMAIL}, not in {FILTER}",
        ),
        (SENDMAIL, b"2022-02-20T08:35:00.157994-06:00 mx1 cron[1]: x\n", "which belongs in no gateway table"),
        (FILTER, b"2022-02-20T08:35:00-06:00 mx1 p[1]: x\n", "does not start with"),
        (FILTER, b"2022-02-30T08:35:00.157994-06:00 mx1 p[1]: x\n", "is not a real time"),
        (SENDMAIL, b'{"a": 1}\n', "JSON where text is expected"),
        (
            "proofpoint_on_demand_message",
            b'{"a": 1}\n[1]\n',
            "line 2: a JSON value that is not an object (1 of 2",
        ),
        ("proofpoint_on_demand_message", b"Feb  3 mx1\n", "not JSON where NDJSON is expected"),
    ],
)
def test_format_problems(table, body, problem):
    found, _ = format_problem(BY_TABLE[table], "k.log", body)
    assert found is None if problem is None else problem in found
