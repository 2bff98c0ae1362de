"""TableUpstream: lets the relay deliver to a table sink (S3) instead of a forward receiver.

The relay hands over entries by Fluent tag; this maps each tag to its stream's table. Records
tagged `proofpoint.gateway.other` belong to no table: their number is logged (at most once a
minute), they are not written.
"""

import logging
import time

from proofpoint_shipper.errors import DeliveryAbandoned
from proofpoint_shipper.streams import EXTRAS, STREAMS

log = logging.getLogger("proofpoint_shipper")
TABLE_OF_TAG = {stream.tag: stream.table for stream in STREAMS + EXTRAS}
LOG_EVERY_SECONDS = 60.0


class TableUpstream:
    def __init__(self, sink):
        self.sink = sink  # write(table, records), flush() once confirmed, close()
        self._staged: list[tuple[str, list[dict]]] = []  # (table, records) not yet taken by the sink
        self._abandoned = False
        self._unwritten = 0  # records of no table since the last log line about them
        self._said_at: float | None = None

    def stage(self, tag: str, entries: list[list]) -> None:
        """Keep the entries for `flush`: the sink's write may upload, which is no work for the
        relay's event loop."""
        table = TABLE_OF_TAG.get(tag)
        if table is None:
            self._note_unwritten(tag, len(entries))
            return
        self._staged.append((table, [record for _, record in entries]))

    def _note_unwritten(self, tag: str, count: int) -> None:
        """Say how many records belong to no table, at most once a minute: they come in most
        deliveries of a busy gateway, and a line each would flood the log."""
        self._unwritten += count
        now = time.monotonic()
        if self._said_at is None or now - self._said_at >= LOG_EVERY_SECONDS:
            log.info("relay: %d records tagged %s belong to no table; not written", self._unwritten, tag)
            self._unwritten, self._said_at = 0, now

    def flush(self) -> None:
        """Hand the staged records to the sink, each group once (the sink takes a group whole or
        not at all), then flush it; a retry hands over only what the sink did not take."""
        if self._abandoned:
            raise DeliveryAbandoned("relay stopping: the delivery was given up")
        while self._staged:
            self.sink.write(*self._staged[0])
            del self._staged[0]
        self.sink.flush()

    def abandon(self) -> None:
        """From another thread: the next flush fails at once (an upload under way finishes)."""
        self._abandoned = True

    def close(self) -> None:
        self.flush()
