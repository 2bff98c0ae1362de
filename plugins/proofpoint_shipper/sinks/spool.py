"""A local spool of S3 objects that could not be uploaded: kept in order, safe across restarts.

Objects are kept per bucket, in a folder of the spool named after it: outputs to two buckets
(staging and production) may share one --spool-dir, and each drains only its own bucket's.
Each object is two files named by the time it was spooled and the process that spooled it:
`<name>.body`, then `<name>.json` (its key and headers) written last, so an object without its
`.json` was never completely spooled. Both are written to a temporary name, fsynced, then
renamed. An entry that cannot be read (a stray file, a body deleted by hand) is renamed
`*.unreadable` and logged, not retried forever.

Several processes may share one folder (the relay's --workers, collectors given one --spool-dir):
names never collide, and an entry another process delivered and removed meanwhile is passed over.
Two may deliver one entry; it goes to its own key, so S3 holds it once.
"""

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from proofpoint_shipper.errors import ConfigError, DeliveryError
from proofpoint_shipper.rawio import write_file_durably

log = logging.getLogger("proofpoint_shipper")
PRIVATE_FILE_MODE = 0o600  # spooled objects hold senders, recipients and subjects


class Spool:
    def __init__(self, root: Path, bucket: str):
        self.bucket = bucket
        self.directory = root / _folder_name(bucket)

    def check(self) -> None:
        """Fail at start-up, not at the first outage, when the spool cannot be written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"spool directory {self.directory} is not writable: {exc.strerror}") from exc

    def put(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        """Keep one object whole, or a DeliveryError (a full disk) and no trace of it."""
        name = _new_name()
        meta = json.dumps({"key": key, "headers": headers}).encode()
        parts = [(self.directory / f"{name}.body", body), (self.directory / f"{name}.json", meta)]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path, data in parts:
                write_file_durably(path, data, PRIVATE_FILE_MODE)
        except OSError as exc:
            for path, _ in parts:  # a body whose .json could not follow
                with contextlib.suppress(OSError):
                    path.unlink()
            raise DeliveryError(f"spool {self.directory} cannot keep {key}: {exc.strerror or exc}") from exc

    def items(self) -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
        """(name, key, body, headers) of every complete object, oldest first."""
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_bytes())
                body = (self.directory / f"{meta_path.stem}.body").read_bytes()
                key, headers = meta["key"], meta["headers"]
            except FileNotFoundError as exc:
                if meta_path.exists():  # a body deleted by hand
                    self._set_aside(meta_path, exc)
                continue  # else another process delivered it and removed it meanwhile
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(meta_path, exc)
                continue
            yield meta_path.stem, key, body, headers

    def _set_aside(self, meta_path: Path, exc: Exception) -> None:
        """Out of the way of the objects behind it, kept for whoever looks into it."""
        for path in (meta_path, meta_path.with_suffix(".body")):
            with contextlib.suppress(FileNotFoundError):  # never written, or set aside by another process
                path.replace(path.with_name(path.name + ".unreadable"))
        log.error("spool entry %s cannot be read (%s); set aside as *.unreadable", meta_path, exc)

    def remove(self, name: str) -> None:
        """Delivered: gone, whether or not another process sharing the folder removed it first."""
        (self.directory / f"{name}.json").unlink(missing_ok=True)
        (self.directory / f"{name}.body").unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.json")))


_SPOOLED_IN_THIS_PROCESS = itertools.count()


def _folder_name(bucket: str) -> str:
    """One plain folder name per bucket: an access point ARN holds ":" and "/", and a name
    opening with a dot would be hidden (or name the folder itself, or its parent)."""
    name = quote(bucket, safe="")
    return "%2E" + name[1:] if name.startswith(".") else name


def _new_name() -> str:
    """Sorts by spooling time; unique across the processes and threads sharing a folder."""
    return f"{time.time_ns():020d}-{os.getpid()}-{next(_SPOOLED_IN_THIS_PROCESS):06d}"
