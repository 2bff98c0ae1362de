"""A local spool of S3 objects that could not be uploaded: kept in order, safe across restarts.

Each object is two files named by a sequence number: `<seq>.body`, then `<seq>.json` (its key and
headers) written last, so an object without its `.json` was never completely spooled.
Both are written to a temporary name, fsynced, then renamed.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path

from proofpoint_shipper.errors import ConfigError


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
            meta = json.loads(meta_path.read_bytes())
            body = (self.directory / f"{meta_path.stem}.body").read_bytes()
            yield meta_path.stem, meta["key"], body, meta["headers"]

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
