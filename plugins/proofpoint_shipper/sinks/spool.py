"""A local spool of S3 objects that could not be uploaded: kept in order, safe across restarts.

Each object is two files named by a sequence number: `<seq>.body`, then `<seq>.json` (its key and
headers) written last, so an object without its `.json` was never completely spooled.
Both are written to a temporary name, fsynced, then renamed. An entry that cannot be read (a
stray file, a body deleted by hand) is renamed `*.unreadable` and logged, not retried forever.
"""

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from proofpoint_shipper.errors import ConfigError

log = logging.getLogger("proofpoint_shipper")


class Spool:
    def __init__(self, directory: Path):
        self.directory = directory

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
        self.directory.mkdir(parents=True, exist_ok=True)
        sequence = f"{self._next_sequence():012d}"
        _write_durably(self.directory / f"{sequence}.body", body)
        meta = json.dumps({"key": key, "headers": headers}).encode()
        _write_durably(self.directory / f"{sequence}.json", meta)

    def items(self) -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
        """(sequence, key, body, headers) of every complete object, oldest first."""
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_bytes())
                body = (self.directory / f"{meta_path.stem}.body").read_bytes()
                key, headers = meta["key"], meta["headers"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(meta_path, exc)
                continue
            yield meta_path.stem, key, body, headers

    def _set_aside(self, meta_path: Path, exc: Exception) -> None:
        """Out of the way of the objects behind it, kept for whoever looks into it."""
        for path in (meta_path, meta_path.with_suffix(".body")):
            if path.exists():
                path.replace(path.with_name(path.name + ".unreadable"))
        log.error("spool entry %s cannot be read (%s); set aside as *.unreadable", meta_path, exc)

    def remove(self, sequence: str) -> None:
        (self.directory / f"{sequence}.json").unlink()
        (self.directory / f"{sequence}.body").unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.json")))

    def _next_sequence(self) -> int:
        numbers = [int(path.stem) for path in self.directory.glob("*.body") if path.stem.isdigit()]
        return max(numbers, default=0) + 1


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
