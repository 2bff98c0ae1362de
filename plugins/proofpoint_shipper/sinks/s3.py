"""S3Sink: records straight into the data-lake bucket, one object per table, hour and batch.

Keys: <prefix>/<table>/<YYYY>/<MM>/<DD>/<HH>/<host>-<YYYYmmddTHHMMSSZ>-<uuid>.<ndjson|log>[.gz], the
time parts from the records (UTC). A batch closes at `max_batch_bytes` (uncompressed) or
`max_batch_age` seconds, and on `flush()`. An upload that fails past the retry policy goes to
the spool (if one is set) and is re-sent, in order and under the same key, when S3 answers again.
While objects wait in the spool, each batch closed tries the oldest of them once, not through
the retry policy: in an outage, batch after batch goes to the spool at once instead of costing
the policy's waits each (a stop that flushed several batches outlasted a service manager's wait).
"""

import gzip
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from proofpoint_shipper.bucket.access import CREDENTIAL_ERRORS, reason
from proofpoint_shipper.bucket.layout import EXTENSION, table_prefix
from proofpoint_shipper.bucket.object_settings import NOTHING_ASKED, ObjectSettings
from proofpoint_shipper.errors import ConfigError, DeliveryError
from proofpoint_shipper.retry import DEFAULT_RETRY, RetryPolicy
from proofpoint_shipper.sinks.records import record_time, stream_for, table_line
from proofpoint_shipper.sinks.spool import Spool

log = logging.getLogger("proofpoint_shipper")
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BATCH_AGE = 60.0  # seconds
MAX_OBJECT_BYTES = 5 * 1024**3  # the most one PutObject takes
ONE_TRY = RetryPolicy(attempts=1)  # S3 tried again while objects wait in the spool


@dataclass
class _Batch:
    table: str
    first_time: datetime
    opened: float
    name: str | None
    lines: list[bytes] = field(default_factory=list)
    size: int = 0


class S3Sink:
    def __init__(
        self,
        client,
        bucket: str,
        *,
        prefix: str = "",
        host: str | None = None,
        compress: bool = True,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
        objects: ObjectSettings = NOTHING_ASKED,
        spool: Spool | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.host = host or socket.gethostname()
        self.compress = compress
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_age = max_batch_age
        self.objects = objects
        if spool is not None and spool.bucket != bucket:
            raise ValueError(f"a spool for bucket {spool.bucket} given to the output for {bucket}")
        self.spool = spool
        self.retry = retry
        self._open: dict[tuple[str, datetime, str | None], _Batch] = {}
        self._sequence: dict[tuple[str, datetime, str], int] = {}  # objects so far per named group
        self._waiting: list[tuple[str, bytes, dict[str, str]]] = []  # closed, not yet delivered

    def check(self) -> None:
        """Start-up checks: the bucket exists and the credentials work; the spool is writable."""
        if self.spool is not None:
            self.spool.check()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:  # NoCredentialsError is a BotoCoreError
            raise _config_error(exc, self.bucket) from exc

    def write(self, table: str, records: list[dict], name: str | None = None) -> None:
        """Buffer records; takes all of them or, when S3 has been refusing, none (DeliveryError).

        `name` (e.g. the API window) makes object keys derive from it: writing the same group
        again replaces its objects instead of adding new ones.
        """
        stream = stream_for(table)
        if self._waiting:
            self._deliver_waiting()  # back-pressure: while S3 refuses, raise before taking a record
        for record in records:
            moment = record_time(record)
            hour = moment.replace(minute=0, second=0, microsecond=0)
            batch = self._open.get((table, hour, name))
            if batch is None:
                batch = self._open[table, hour, name] = _Batch(table, moment, time.monotonic(), name)
            line = table_line(stream, record)
            batch.lines.append(line)
            batch.size += len(line)
            if batch.size >= self.max_batch_bytes:
                self._close((table, hour, name))
        self._close_aged()

    def flush(self) -> None:
        for group in list(self._open):
            self._close(group)
        self._deliver_waiting()  # what an earlier failure left waiting, even with no new batch

    def close(self) -> None:
        self.flush()

    def object_key(self, table: str, first_time: datetime, name: str | None = None) -> str:
        """The key of a new object: random, or derived from `name` (the same on a re-run)."""
        moment = first_time.astimezone(UTC)
        stream = stream_for(table)
        suffix = f".{EXTENSION[stream.format]}" + (".gz" if self.compress else "")
        if name is None:
            leaf = f"{self.host}-{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex}{suffix}"
        else:
            hour = moment.replace(minute=0, second=0, microsecond=0)
            sequence = self._sequence.get((table, hour, name), 0)
            self._sequence[table, hour, name] = sequence + 1
            if len(self._sequence) > 10_000:  # a long run: forget the oldest named groups
                for old in sorted(self._sequence, key=lambda group: group[1])[:5_000]:
                    del self._sequence[old]
            leaf = f"{self.host}-{name}-{sequence:04d}{suffix}"
        return f"{table_prefix(self.prefix, stream)}{moment:%Y/%m/%d/%H}/{leaf}"

    def _close_aged(self) -> None:
        now = time.monotonic()
        for group, batch in list(self._open.items()):
            if now - batch.opened >= self.max_batch_age:
                self._close(group)

    def _close(self, group: tuple[str, datetime, str | None]) -> None:
        batch = self._open.pop(group)
        table = batch.table
        body = b"".join(batch.lines)
        headers = {"ContentType": "application/x-ndjson" if body[:1] == b"{" else "text/plain"}
        if self.compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["ContentEncoding"] = "gzip"
        self._waiting.append((self.object_key(table, batch.first_time, batch.name), body, headers))
        try:
            self._deliver_waiting()  # at once: memory holds one batch, not a queue of them
        except DeliveryError as exc:
            log.error("%s; the batch waits in memory for the next flush", exc)

    def _deliver_waiting(self) -> None:
        """Spooled objects first (they are older), then the closed batches, in order."""
        self._drain_spool()
        while self._waiting:
            key, body, headers = self._waiting[0]
            if self.spool is not None and len(self.spool):
                self.spool.put(key, body, headers)  # keep order behind what is already spooled
            else:
                try:
                    self._upload(key, body, headers)
                except DeliveryError:
                    if self.spool is None:
                        raise  # the batch stays waiting for the next flush
                    self.spool.put(key, body, headers)  # a full disk: a DeliveryError of its own
                    log.error("S3 unreachable; %s kept in the spool %s", key, self.spool.directory)
            self._waiting.pop(0)

    def _drain_spool(self) -> None:
        if self.spool is None:
            return
        for name, key, body, headers in self.spool.items():
            try:
                self._upload(key, body, headers, ONE_TRY)
            except DeliveryError as exc:
                log.warning(
                    "%s; it waits in the spool %s with the objects after it", exc, self.spool.directory
                )
                return  # still down: everything stays spooled, in order
            self.spool.remove(name)

    def _upload(
        self, key: str, body: bytes, headers: dict[str, str], retry: RetryPolicy | None = None
    ) -> None:
        extra = {**headers, **self.objects.put_arguments(body)}

        def put() -> None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

        try:
            (retry or self.retry).run(
                put, f"upload s3://{self.bucket}/{key}", (BotoCoreError, ClientError), operation="s3_upload"
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in CREDENTIAL_ERRORS or code == "NoSuchBucket":
                raise _config_error(exc, self.bucket) from exc
            raise DeliveryError(f"S3 refused s3://{self.bucket}/{key}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise DeliveryError(f"S3 did not take s3://{self.bucket}/{key}: {exc}") from exc


def _config_error(exc: Exception, bucket: str) -> ConfigError:
    return ConfigError(reason(exc, bucket))
