"""Cursor stores: one JSON document per collector, saved only after the sink's flush() returned.

`FileCursorStore` writes a temporary file, fsyncs it and renames it over the old one, so a crash
leaves the old cursor or the new one, never a torn file. `S3CursorStore` writes with If-Match on
the ETag it read (If-None-Match on first write): two collectors can never both advance one
cursor; the one that loses gets CursorConflict and must stop. A store that ignores those
conditions is told when the cursor is read.

Two collectors on one cursor file (a cron run that overlaps the one before it, a second service)
would fetch the same data twice and overwrite each other's progress: `claim()` takes the file's
lock for the life of the process, and the second one gets CursorConflict before it reads anything.
`refuse_foreign` stops one collector from taking another's file for its own.
"""

import fcntl
import json
import logging
import os
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ResponseStreamingError

from proofpoint_shipper.bucket.object_settings import NOTHING_ASKED, ObjectSettings
from proofpoint_shipper.errors import ConfigError, CursorConflict, DeliveryError
from proofpoint_shipper.rawio import write_file_durably

log = logging.getLogger("proofpoint_shipper")
# The SDK sends a request again when its answer does not come, but once a body began it does not
# read it again: a connection dropped while the cursor came in is retried here.
BODY_CUT_SHORT = (ResponseStreamingError, IncompleteReadError)
READ_ATTEMPTS = 3


def refuse_foreign(document: dict, written: frozenset[str], what: str, flag: str) -> None:
    """A ConfigError naming the keys of `document` that are not among `written`.

    Another command's file (the same --cursor given twice in copied configs) would otherwise read
    as "no saved state": a start from the default, then that command's progress overwritten.
    """
    foreign = sorted(set(document) - written)
    if foreign:
        raise ConfigError(
            f"{what} holds {', '.join(foreign)}, which this command never writes: is it another "
            f"command's file? Give each command its own {flag}"
        )


# What to do with a saved-state file that cannot be read: nothing guesses where it stood.
_DAMAGED = "restore it from a backup, or move it aside to start as a first run does"


class FileCursorStore:
    """`kind` names the file in messages: a collector's cursor, a follower's position."""

    def __init__(self, path: Path, kind: str = "cursor file"):
        self.path = Path(path)
        self.kind = kind
        if not self.path.name or self.path.is_dir():
            raise ConfigError(f"{self.where} is a folder: name a file in it")
        if self.path.exists() and not self.path.is_file():
            # A device or a pipe: /dev/zero read whole filled memory, a pipe waited for a writer.
            raise ConfigError(f"{self.where} is not a regular file: name a file of its own")
        self._lock: int | None = None  # held until the process ends

    @property
    def where(self) -> str:
        return f"{self.kind} {self.path}"

    def claim(self) -> None:
        """Take the cursor for this process (a lock file beside it), or CursorConflict."""
        if self._lock is not None:
            return
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.where} cannot be locked: {exc.strerror}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise CursorConflict(
                f"{self.where} is in use by another process (pid {holder}); "
                f"only one process may run on one {self.kind}"
            ) from None
        except OSError as exc:  # a file system without locks (some NFS mounts): run as before
            os.close(handle)
            log.warning(
                "%s cannot be locked (%s): a second process on it would not be stopped",
                self.where,
                exc.strerror,
            )
            return
        try:  # the holder's pid, for the message a second collector gets
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the cursor could not be saved either, so stop now
            os.close(handle)
            raise ConfigError(f"{self.where} cannot be locked: {exc.strerror}") from exc
        self._lock = handle

    def load(self) -> dict | None:
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{self.where} cannot be read: {exc.strerror or exc}") from exc
        except ValueError as exc:  # written whole, then renamed: damaged by hand or by the disk
            raise ConfigError(f"{self.where} is not JSON ({exc}): {_DAMAGED}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{self.where} does not hold a JSON object: {_DAMAGED}")
        return document

    def save(self, document: dict) -> None:
        data = json.dumps(document, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_file_durably(self.path, data)
        except OSError as exc:
            raise ConfigError(f"{self.where} cannot be written: {exc.strerror}") from exc


class S3CursorStore:
    def __init__(self, client, bucket: str, key: str, objects: ObjectSettings = NOTHING_ASKED):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.objects = objects  # what a bucket policy may ask of every PutObject
        self._etag: str | None = None  # what we read: our write must replace exactly that
        self._conditions_checked = False  # whether the store honours them: once a run

    @property
    def where(self) -> str:
        return f"cursor s3://{self.bucket}/{self.key}"

    def claim(self) -> None:
        """Nothing to take: the conditional writes of `save` let only one collector advance."""

    def load(self) -> dict | None:
        where = self.where
        try:
            body, etag = self._read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                self._etag = None
                return None
            raise ConfigError(f"{where} cannot be read: {exc}") from exc
        except BotoCoreError as exc:  # no credentials, an endpoint that does not answer
            raise ConfigError(f"{where} cannot be read: {exc}") from exc
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise ConfigError(f"{where} is not JSON ({exc}): {_DAMAGED}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{where} does not hold a JSON object: {_DAMAGED}")
        self._etag = etag
        if not self._conditions_checked:
            self._conditions_checked = True
            self._check_conditional_writes(body)
        return document

    def _read(self) -> tuple[bytes, str]:
        """The cursor object's body and ETag."""

        def get() -> tuple[bytes, str]:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            return response["Body"].read(), response["ETag"]

        # Here, not at the top: the retry policy brings the metrics' HTTP server, which the
        # followers of `gateway parse`, using only the file store, do not load.
        from proofpoint_shipper.retry import RetryPolicy

        return RetryPolicy(attempts=READ_ATTEMPTS).run(
            get, f"reading {self.where}", BODY_CUT_SHORT, operation="cursor_read"
        )

    def _check_conditional_writes(self, body: bytes) -> None:
        """Put the cursor just read back with If-None-Match: a store that honours conditional
        writes refuses it (the object exists), and one that ignores them (some S3-compatible
        stores) rewrites the same bytes, which is told: the guard against a second collector does
        not hold there. (Should another collector save in between, on such a store, its cursor is
        set back: it fetches a window again, under the same object keys.)"""
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                IfNoneMatch="*",
                **self.objects.put_arguments(body),
            )
        except (ClientError, BotoCoreError) as exc:
            if not (isinstance(exc, ClientError) and _precondition_failed(exc)):  # else: honoured
                log.warning(
                    "%s: whether the store honours conditional writes was not checked: %s", self.where, exc
                )
            return
        self._etag = response["ETag"]
        log.warning(
            "!!! %s: this store ignores conditional writes (If-None-Match), so a second collector "
            "on this cursor would not be stopped and both would advance it: run only one",
            self.where,
        )

    def save(self, document: dict) -> None:
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        body = json.dumps(document, sort_keys=True).encode()
        extra = {"ContentType": "application/json", **condition, **self.objects.put_arguments(body)}
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **extra)
        except ClientError as exc:
            if _precondition_failed(exc):
                if self._holds(body):
                    return  # our own put, sent again by the SDK after its answer was lost
                raise CursorConflict(
                    f"cursor s3://{self.bucket}/{self.key} was advanced by another collector; "
                    "stopping so that only one collector runs"
                ) from exc
            raise DeliveryError(f"cursor s3://{self.bucket}/{self.key} was not saved: {exc}") from exc
        except BotoCoreError as exc:
            raise DeliveryError(f"cursor s3://{self.bucket}/{self.key} was not saved: {exc}") from exc
        self._etag = response["ETag"]

    def _holds(self, body: bytes) -> bool:
        """Whether the cursor object holds `body`, whose ETag is then ours. The SDK sends a put
        again when its answer was lost (a timeout, a reset); when the first one had landed, the
        condition fails on our own write, which was taken for another collector's."""
        try:
            held, etag = self._read()
        except (ClientError, BotoCoreError):
            return False
        if held != body:
            return False
        self._etag = etag
        return True


def _precondition_failed(exc: ClientError) -> bool:
    """Whether S3 refused a write for its condition (or for a concurrent conditional write)."""
    return exc.response.get("Error", {}).get("Code") in (
        "PreconditionFailed",
        "412",
        "ConditionalRequestConflict",
    )
