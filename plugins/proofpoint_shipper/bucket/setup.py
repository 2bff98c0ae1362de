"""Preparing the bucket: default encryption, public access blocked, and per table prefix one
lifecycle rule and one new-object notification, merged with what the bucket already has.

`read_settings` reads the bucket; `plan` compares that with what is wanted and returns a Plan:
one line per setting (what changes, what stays, what is kept because it is not ours) and the
writes that make the changes. Nothing is written while planning, so `--dry-run` is exact. Our
rules and notifications have ids `ppship-<table>`; every other rule and notification is kept
as it is. A notification of someone else's that overlaps a table prefix stops the plan: S3
refuses overlapping notifications, and which one to drop is the owner's decision.
"""

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from proofpoint_shipper.bucket.access import error_code
from proofpoint_shipper.bucket.layout import table_prefix
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.streams import Stream

OUR_ID = "ppship-"
ABORT_MULTIPART_DAYS = 7  # an upload unfinished after a week was abandoned: its parts cost money
NEW_OBJECT_EVENTS = ["s3:ObjectCreated:*"]
# Where each kind of destination goes in a notification configuration.
DESTINATIONS = {
    "sqs": ("QueueConfigurations", "QueueArn"),
    "sns": ("TopicConfigurations", "TopicArn"),
    "lambda": ("LambdaFunctionConfigurations", "LambdaFunctionArn"),
}
_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d*):(?P<resource>.+)"
)
_NOT_CONFIGURED = {
    "NoSuchLifecycleConfiguration",
    "ServerSideEncryptionConfigurationNotFoundError",
    "NoSuchPublicAccessBlockConfiguration",
}
BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


@dataclass(frozen=True)
class Destination:
    arn: str
    service: str  # "sqs", "sns" or "lambda"
    region: str


def parse_destination(arn: str) -> Destination:
    """The notification target; ConfigError unless it is an SQS queue, SNS topic or Lambda function."""
    found = _ARN.fullmatch(arn)
    if found is None:
        raise ConfigError(f"--notify-arn is not an ARN: {arn!r}")
    service, resource = found["service"], found["resource"]
    if service not in DESTINATIONS or (service == "lambda" and not resource.startswith("function:")):
        kind = f"a {service} ARN" if service != "lambda" else "a Lambda ARN that is not a function"
        raise ConfigError(f"--notify-arn must be an SQS queue, SNS topic or Lambda function; got {kind}")
    if not found["region"] or not found["account"]:
        raise ConfigError(f"--notify-arn needs a region and an account id: {arn!r}")
    return Destination(arn, service, found["region"])


@dataclass(frozen=True)
class Wanted:
    prefix: str
    tables: tuple[Stream, ...]
    retention: dict[str, int]  # table → days; tables without an entry get no rule
    sse: str | None = None  # None: keep any default encryption, else turn on AES256
    kms_key_id: str | None = None
    destination: Destination | None = None


@dataclass
class Settings:
    """What the bucket has now (empty for a bucket about to be created)."""

    encryption: dict | None = None  # ApplyServerSideEncryptionByDefault
    public_access: dict | None = None
    rules: list[dict] = field(default_factory=list)
    notifications: dict = field(default_factory=dict)  # QueueConfigurations etc.


@dataclass(frozen=True)
class Line:
    verb: str  # create, add, change, same, keep, warn
    area: str
    detail: str

    def text(self) -> str:
        return f"{self.verb:<7} {self.area:<13} {self.detail}"


@dataclass
class Plan:
    lines: list[Line] = field(default_factory=list)
    writes: list[tuple[str, Callable[[], None]]] = field(default_factory=list)  # (area, write)

    def note(self, verb: str, area: str, detail: str) -> None:
        self.lines.append(Line(verb, area, detail))

    def write(self, area: str, call: Callable[..., object], **arguments) -> None:
        self.writes.append((area, functools.partial(call, **arguments)))


def read_settings(client, bucket: str) -> Settings:
    """The bucket's current settings; a setting never made reads as None or empty."""
    encryption = _read(lambda: client.get_bucket_encryption(Bucket=bucket))
    public = _read(lambda: client.get_public_access_block(Bucket=bucket))
    lifecycle = _read(lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket))
    notifications = client.get_bucket_notification_configuration(Bucket=bucket)
    notifications.pop("ResponseMetadata", None)
    rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    return Settings(
        encryption=rules[0].get("ApplyServerSideEncryptionByDefault") if rules else None,
        public_access=(public or {}).get("PublicAccessBlockConfiguration"),
        rules=(lifecycle or {}).get("Rules", []),
        notifications=notifications,
    )


def _read(call: Callable[[], dict]) -> dict | None:
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in _NOT_CONFIGURED:
            return None
        raise


def plan(client, bucket: str, now: Settings, wanted: Wanted) -> Plan:
    result = Plan()
    _plan_encryption(client, bucket, now, wanted, result)
    _plan_public_access(client, bucket, now, result)
    _plan_lifecycle(client, bucket, now, wanted, result)
    _plan_notifications(client, bucket, now, wanted, result)
    return result


# -- encryption and public access ---------------------------------------------------------------


def _plan_encryption(client, bucket: str, now: Settings, wanted: Wanted, result: Plan) -> None:
    current = now.encryption or {}
    if wanted.sse is None and current:
        result.note("same", "encryption", f"{current.get('SSEAlgorithm')} by default (kept)")
        return
    target = {"SSEAlgorithm": wanted.sse or "AES256"}
    if wanted.kms_key_id:
        target["KMSMasterKeyID"] = wanted.kms_key_id
    shown = " with key ".join(filter(None, [target["SSEAlgorithm"], target.get("KMSMasterKeyID")]))
    if {k: current.get(k) for k in ("SSEAlgorithm", "KMSMasterKeyID") if k in current} == target:
        result.note("same", "encryption", f"{shown} by default")
        return
    result.note("change", "encryption", f"{current.get('SSEAlgorithm') or 'none'} → {shown} by default")
    configuration = {"Rules": [{"ApplyServerSideEncryptionByDefault": target}]}
    result.write(
        "encryption",
        client.put_bucket_encryption,
        Bucket=bucket,
        ServerSideEncryptionConfiguration=configuration,
    )


def _plan_public_access(client, bucket: str, now: Settings, result: Plan) -> None:
    if now.public_access == BLOCK_ALL:
        result.note("same", "public access", "blocked (all four settings on)")
        return
    off = [name for name, on in BLOCK_ALL.items() if not (now.public_access or {}).get(name)]
    result.note("change", "public access", f"turn on {', '.join(off)}: no public reads or policies")
    result.write(
        "public access",
        client.put_public_access_block,
        Bucket=bucket,
        PublicAccessBlockConfiguration=BLOCK_ALL,
    )


# -- lifecycle ------------------------------------------------------------------------------------


def lifecycle_rule(prefix: str, stream: Stream, days: int) -> dict:
    return {
        "ID": OUR_ID + stream.table,
        "Filter": {"Prefix": table_prefix(prefix, stream)},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},  # versioned buckets too
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


def rule_prefix(rule: dict) -> str | None:
    """The key prefix a rule applies to; None when it only applies to tagged objects (ours have none)."""
    rule_filter = rule.get("Filter", {})
    if "Tag" in rule_filter or rule_filter.get("And", {}).get("Tags"):
        return None
    return rule_filter.get("Prefix", rule_filter.get("And", {}).get("Prefix", rule.get("Prefix", "")))


def _plan_lifecycle(client, bucket: str, now: Settings, wanted: Wanted, result: Plan) -> None:
    if not wanted.retention:
        result.note("same", "lifecycle", "no retention asked for (--retention-days): rules unchanged")
        return
    ours = {
        stream.table: lifecycle_rule(wanted.prefix, stream, wanted.retention[stream.table])
        for stream in wanted.tables
        if stream.table in wanted.retention
    }
    merged, changed = [], False
    for rule in now.rules:
        table = rule.get("ID", "")[len(OUR_ID) :] if rule.get("ID", "").startswith(OUR_ID) else None
        if table in ours:
            continue  # replaced below
        merged.append(rule)
        result.note("keep", "lifecycle", f"rule {rule.get('ID', '(no id)')!r}: not set by this command")
        _warn_if_it_expires_a_table(rule, wanted, result)
    existing = {rule.get("ID"): rule for rule in now.rules}
    for table, rule in ours.items():
        merged.append(rule)
        before = existing.get(rule["ID"])
        days = rule["Expiration"]["Days"]
        if before is None:
            result.note(
                "add",
                "lifecycle",
                f"{table}: delete objects {days} days old under {rule['Filter']['Prefix']}",
            )
            changed = True
        elif _same_rule(before, rule):
            result.note("same", "lifecycle", f"{table}: {days} days")
        else:
            was = before.get("Expiration", {}).get("Days", "?")
            result.note("change", "lifecycle", f"{table}: {was} → {days} days")
            changed = True
    if changed:
        configuration = {"Rules": merged}
        result.write(
            "lifecycle",
            client.put_bucket_lifecycle_configuration,
            Bucket=bucket,
            LifecycleConfiguration=configuration,
        )


def _same_rule(before: dict, rule: dict) -> bool:
    return all(before.get(key) == value for key, value in rule.items())


def _warn_if_it_expires_a_table(rule: dict, wanted: Wanted, result: Plan) -> None:
    prefix = rule_prefix(rule)
    days = rule.get("Expiration", {}).get("Days")
    if rule.get("Status") != "Enabled" or prefix is None or days is None:
        return
    covered = [s.table for s in wanted.tables if table_prefix(wanted.prefix, s).startswith(prefix)]
    if covered:
        shown = covered[0] if len(covered) == 1 else f"{len(covered)} tables"
        result.note(
            "warn",
            "lifecycle",
            f"rule {rule.get('ID')!r} (prefix {prefix!r}) also deletes {shown} after {days} days",
        )


# -- notifications --------------------------------------------------------------------------------


def notification(prefix: str, stream: Stream, destination: Destination) -> tuple[str, dict]:
    """(the configuration list it belongs in, the notification)"""
    kind, arn_key = DESTINATIONS[destination.service]
    return kind, {
        "Id": OUR_ID + stream.table,
        arn_key: destination.arn,
        "Events": NEW_OBJECT_EVENTS,
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": table_prefix(prefix, stream)}]}},
    }


def notification_prefix(entry: dict) -> str:
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return next((rule["Value"] for rule in rules if rule.get("Name", "").lower() == "prefix"), "")


def _plan_notifications(client, bucket: str, now: Settings, wanted: Wanted, result: Plan) -> None:
    if wanted.destination is None:
        result.note("same", "notifications", "none asked for (--notify-arn): unchanged")
        return
    ours: dict[str, tuple[str, dict]] = {}
    for stream in wanted.tables:
        kind, entry = notification(wanted.prefix, stream, wanted.destination)
        ours[entry["Id"]] = (kind, entry)
    kinds = {kind for kind, _ in DESTINATIONS.values()}
    merged = {key: value for key, value in now.notifications.items() if key not in kinds}  # EventBridge
    before: dict[str, dict] = {}
    for kind, _ in DESTINATIONS.values():
        for entry in now.notifications.get(kind, []):
            if entry.get("Id") in ours:
                before[entry["Id"]] = entry
                continue
            merged.setdefault(kind, []).append(entry)
            result.note("keep", "notifications", f"{entry.get('Id', '(no id)')!r}: not set by this command")
            _refuse_overlap(entry, ours.values())
    changed = False
    for entry_id, (kind, entry) in ours.items():
        merged.setdefault(kind, []).append(entry)
        table = entry_id[len(OUR_ID) :]
        if before.get(entry_id) == entry:
            result.note("same", "notifications", f"{table} → {wanted.destination.arn}")
        else:
            verb = "change" if entry_id in before else "add"
            result.note(verb, "notifications", f"{table}: new objects → {wanted.destination.arn}")
            changed = True
    if changed:
        result.write(
            "notifications",
            client.put_bucket_notification_configuration,
            Bucket=bucket,
            NotificationConfiguration=merged,
        )


def _refuse_overlap(entry: dict, ours) -> None:
    if not any(event.startswith("s3:ObjectCreated") for event in entry.get("Events", [])):
        return
    theirs = notification_prefix(entry)
    for _, mine in ours:
        prefix = notification_prefix(mine)
        if prefix.startswith(theirs) or theirs.startswith(prefix):
            raise ConfigError(
                f"the bucket's notification {entry.get('Id', '(no id)')!r} (prefix {theirs!r}) overlaps "
                f"{prefix}; S3 refuses overlapping notifications: remove it or use another --prefix"
            )
