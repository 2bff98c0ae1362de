"""SetAside: the items of answer arrays no table takes, kept in a file instead of dropped.

An array the API adds (a new kind of event) has no table here. Its items are written to one
NDJSON file per window in the dead-letter folder, `{"array": name, "item": item}` a line, and
told with their count, while the events of the known arrays beside them land as usual.
"""

import logging
import os
from collections import Counter
from pathlib import Path

import orjson

from proofpoint_shipper.metrics import PARSE_ERRORS

log = logging.getLogger("proofpoint_shipper")


class SetAside:
    def __init__(self, path: Path):
        self.path = path
        self.counts: Counter[str] = Counter()
        self._file = None

    def keep(self, array: str, item: object) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Mail data, ours only; a window read again writes its file afresh. Open across calls
            # to keep(), closed by close().
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            self._file = open(os.open(self.path, flags, 0o600), "wb")  # noqa: SIM115
        self._file.write(orjson.dumps({"array": array, "item": item}) + b"\n")
        self.counts[array] += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def report(self, window: str) -> None:
        for array, count in self.counts.items():
            PARSE_ERRORS.inc(count, label="tap_answer")
            log.warning(
                "TAP window %s: %d items of %r, an array no table takes (a newer API?), kept in %s",
                window,
                count,
                array,
                self.path,
            )
