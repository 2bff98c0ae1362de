"""`ppship s3 check`: does the bucket hold what the data lake expects, and will it go on doing so?

One finding per line: the write probe; default encryption and public access; per table its
lifecycle rules, its notifications, its newest object and that object's age; keys that break the
layout; and, in each table's newest objects, lines in the wrong format (JSON where text is
expected, a gateway time not in %Y-%m-%dT%H:%M:%S.%f%z, a line that is not a JSON object in an
NDJSON table). FAIL findings mean something is wrong; WARN ones deserve a look.

To stay cheap on buckets with years of data it lists, per table, the table's top folder, the
folders leading to its newest day, and that day's keys (up to `max_keys`); and it reads the
`sample` newest objects.
"""

import functools
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import orjson
from botocore.exceptions import ClientError

from proofpoint_shipper.bucket.access import error_code, probe_write, reason
from proofpoint_shipper.bucket.layout import KNOWN_FOLDERS, clean_prefix, misplacement, table_prefix
from proofpoint_shipper.bucket.object_settings import NOTHING_ASKED, ObjectSettings
from proofpoint_shipper.bucket.setup import (
    BLOCK_ALL,
    DESTINATIONS,
    Settings,
    notification_prefix,
    read_settings,
    rule_prefix,
)
from proofpoint_shipper.sinks.records import GATEWAY_TIME, line_of_another_table, text_line_problem
from proofpoint_shipper.streams import BY_TABLE, STREAMS, Stream

LINES_READ = 10_000  # per sampled object
NAMELESS = (  # keys "/table/..." or "lake//table/...": an agent's key format with an empty S3_PREFIX
    "keys that start with '/' or hold '//', as an empty prefix before a '/' makes them; "
    "the data lake does not look there"
)
MISPLACED_SHOWN = 10  # per table; the rest are counted


@dataclass(frozen=True)
class Finding:
    status: str  # ok, info, WARN, FAIL
    area: str
    detail: str

    def text(self) -> str:
        return f"{self.status:<5} {self.area:<33} {self.detail}"


@dataclass(frozen=True)
class Scope:
    bucket: str
    prefix: str
    tables: tuple[Stream, ...] = STREAMS
    sample: int = 3
    max_keys: int = 10_000
    objects: ObjectSettings = NOTHING_ASKED  # what the probe object asks for, as the writes do


def check_bucket(client, scope: Scope, now: datetime) -> Iterator[Finding]:
    yield _probe(client, scope)
    settings = read_settings(client, scope.bucket)
    yield from _bucket_settings(settings)
    yield from _beside_the_tables(client, scope)
    for stream in scope.tables:
        yield _lifecycle(stream, scope, settings)
        yield _notifications(stream, scope, settings)
        yield from _objects(client, stream, scope, now)


def _probe(client, scope: Scope) -> Finding:
    try:
        probe_write(client, scope.bucket, scope.prefix, scope.objects)
    except ClientError as exc:
        if error_code(exc) != "AccessDenied":
            raise
        return Finding("FAIL", "write permission", reason(exc, scope.bucket))
    return Finding("ok", "write permission", "wrote and deleted a probe object")


def _bucket_settings(settings: Settings) -> Iterator[Finding]:
    if settings.encryption:
        yield Finding("ok", "encryption", f"{settings.encryption.get('SSEAlgorithm')} by default")
    else:
        yield Finding("WARN", "encryption", "no default encryption (ppship s3 setup turns it on)")
    if all((settings.public_access or {}).get(name) for name in BLOCK_ALL):
        yield Finding("ok", "public access", "blocked")
    else:
        yield Finding("WARN", "public access", "not fully blocked (ppship s3 setup blocks it)")


def _beside_the_tables(client, scope: Scope) -> Iterator[Finding]:
    """Folders and objects next to the tables that are not ours."""
    top = f"{clean_prefix(scope.prefix)}/" if clean_prefix(scope.prefix) else ""
    folders, objects = _list_level(client, scope.bucket, top)
    tables = set(BY_TABLE)  # the eight and our extra tables
    for folder in folders:
        name = folder[len(top) :].rstrip("/")
        if not name:
            yield Finding("WARN", "layout", f"{folder} is a folder with no name: {NAMELESS}")
        elif name not in tables and name not in KNOWN_FOLDERS:
            yield Finding("WARN", "layout", f"{folder} is not one of the tables")
    for key in objects:
        yield Finding("WARN", "layout", f"{key}: an object beside the tables, in none of them")


def _lifecycle(stream: Stream, scope: Scope, settings: Settings) -> Finding:
    where = table_prefix(scope.prefix, stream)
    rules = [
        rule
        for rule in settings.rules
        if rule.get("Status") == "Enabled"
        and rule.get("Expiration", {}).get("Days")
        and (prefix := rule_prefix(rule)) is not None
        and where.startswith(prefix)
    ]
    if not rules:
        return Finding("WARN", stream.table, "lifecycle: no rule deletes its objects, they are kept forever")
    days = sorted((rule["Expiration"]["Days"], rule.get("ID", "(no id)")) for rule in rules)
    if len(rules) > 1:
        shown = ", ".join(f"{rule_id!r} {day} d" for day, rule_id in days)
        return Finding("WARN", stream.table, f"lifecycle: several rules apply ({shown}); the shortest wins")
    return Finding(
        "ok", stream.table, f"lifecycle: objects deleted after {days[0][0]} days (rule {days[0][1]!r})"
    )


def _notifications(stream: Stream, scope: Scope, settings: Settings) -> Finding:
    where = table_prefix(scope.prefix, stream)
    targets = [
        entry[arn_key]
        for kind, arn_key in DESTINATIONS.values()
        for entry in settings.notifications.get(kind, [])
        if any(event.startswith("s3:ObjectCreated") for event in entry.get("Events", []))
        and where.startswith(notification_prefix(entry))
    ]
    if not targets:
        return Finding("info", stream.table, "notifications: none for new objects")
    return Finding("info", stream.table, f"notifications: new objects → {', '.join(targets)}")


# -- objects ------------------------------------------------------------------------------------


def _objects(client, stream: Stream, scope: Scope, now: datetime) -> Iterator[Finding]:
    where = table_prefix(scope.prefix, stream)
    newest_day, stray = _newest_day(client, scope.bucket, where)
    listed = _list_keys(client, scope.bucket, newest_day, scope.max_keys) if newest_day else []
    misplaced = stray + [item["Key"] for item in listed if misplacement(stream, item["Key"], scope.prefix)]
    for key in misplaced[:MISPLACED_SHOWN]:
        why = misplacement(stream, key, scope.prefix) or "not in a YYYY/MM/DD/HH folder"
        yield Finding("FAIL", stream.table, f"misplaced: {key}: {why}")
    if len(misplaced) > MISPLACED_SHOWN:
        yield Finding("FAIL", stream.table, f"misplaced: {len(misplaced) - MISPLACED_SHOWN} more keys")
    misplaced_keys = set(misplaced)
    placed = [item for item in listed if item["Key"] not in misplaced_keys]
    if not placed:
        yield Finding("info", stream.table, "no objects in the layout yet")
        return
    placed.sort(key=lambda item: item["LastModified"], reverse=True)
    newest = placed[0]
    yield Finding("ok", stream.table, f"newest: {newest['Key']} ({_age(now - newest['LastModified'])} old)")
    yield from _formats(client, stream, scope, placed[: scope.sample])


def _newest_day(client, bucket: str, where: str) -> tuple[str | None, list[str]]:
    """The newest YYYY/MM/DD/ folder under a table, and objects found where no object belongs."""
    stray: list[str] = []
    level = where
    for _ in range(3):  # year, month, day
        folders, objects = _list_level(client, bucket, level)
        stray += objects
        numbered = [folder for folder in folders if folder[len(level) :].rstrip("/").isdigit()]
        stray += [folder for folder in folders if folder not in numbered]
        if not numbered:
            return None, stray
        level = max(numbered)
    return level, stray


def _list_level(client, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    folders, objects = [], []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        folders += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
        objects += [entry["Key"] for entry in page.get("Contents", [])]
    return folders, objects


def _list_keys(client, bucket: str, prefix: str, limit: int) -> list[dict]:
    items: list[dict] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        items += page.get("Contents", [])
        if len(items) >= limit:
            return items[:limit]
    return items


def _age(delta) -> str:
    seconds = max(delta.total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


# -- formats ------------------------------------------------------------------------------------


def _formats(client, stream: Stream, scope: Scope, objects: list[dict]) -> Iterator[Finding]:
    lines_read, bad_objects, read = 0, 0, 0
    for item in objects:
        try:
            body = client.get_object(Bucket=scope.bucket, Key=item["Key"])
            data = body["Body"].read()
        except ClientError as exc:
            if (unreadable := _unreadable(exc)) is None:
                raise
            yield Finding(unreadable[0], stream.table, f"format: {item['Key']}: {unreadable[1]}")
            continue
        read += 1
        problem, count = format_problem(stream, item["Key"], data, body.get("ContentEncoding"))
        lines_read += count
        if problem:
            bad_objects += 1
            yield Finding("FAIL", stream.table, f"format: {item['Key']}: {problem}")
    if read and not bad_objects:
        kind = "NDJSON objects" if stream.format == "ndjson" else f"text lines with {GATEWAY_TIME} times"
        yield Finding("ok", stream.table, f"format: {read} newest objects, {lines_read} lines, all {kind}")


# Why S3 would not give one object, by its error code: a finding on that object, and the check goes
# on with the others (any other error stops the check, as it would stop every read after it).
UNREADABLE = {
    "AccessDenied": (
        "FAIL",
        "S3 refused to read it (AccessDenied): the credentials need s3:GetObject, and kms:Decrypt "
        "for an object under a KMS key; an object another account wrote without "
        "--acl bucket-owner-full-control stays that account's",
    ),
    "InvalidObjectState": ("WARN", "not read: archived ({}), it can be read only once restored"),
    "NoSuchKey": ("WARN", "not read: deleted since it was listed"),
}


def _unreadable(exc: ClientError) -> tuple[str, str] | None:
    """(status, why) for an object S3 would not give, or None for an error of another kind."""
    found = UNREADABLE.get(error_code(exc))
    if found is None:
        return None
    status, why = found
    return status, why.format(exc.response.get("Error", {}).get("StorageClass", "storage class"))


def format_problem(
    stream: Stream, key: str, data: bytes, encoding: str | None = None
) -> tuple[str | None, int]:
    """(the first problem of an object's lines with how many lines have one, or None; lines read)"""
    if key.endswith(".gz") or encoding == "gzip":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return "not gzip although named or marked so", 0
    lines = data.split(b"\n", LINES_READ)[:LINES_READ]
    lines = [line for line in lines if line]
    check = _json_problem if stream.format == "ndjson" else functools.partial(_text_problem, stream=stream)
    problems = [(number, problem) for number, line in enumerate(lines, 1) if (problem := check(line))]
    if not problems:
        return None, len(lines)
    number, first = problems[0]
    return f"line {number}: {first} ({len(problems)} of {len(lines)} lines)", len(lines)


def _json_problem(line: bytes) -> str | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "not JSON where NDJSON is expected"
    return None if isinstance(value, dict) else "a JSON value that is not an object"


def _text_problem(line: bytes, stream: Stream) -> str | None:
    text = line.decode("utf-8", "replace")
    return text_line_problem(text) or line_of_another_table(text, stream)
