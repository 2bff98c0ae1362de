"""TableUpstream: lets the relay deliver to a table sink (S3) instead of a forward receiver.

The relay hands over entries by Fluent tag; this maps each tag to its stream's table. Records
tagged `proofpoint.gateway.other` belong to no table: their number is logged, they are not written.
"""

import logging

from proofpoint_shipper.errors import DeliveryAbandoned
from proofpoint_shipper.streams import EXTRAS, STREAMS

log = logging.getLogger("proofpoint_shipper")
TABLE_OF_TAG = {stream.tag: stream.table for stream in STREAMS + EXTRAS}


class TableUpstream:
    def __init__(self, sink):
        self.sink = sink  # write(table, records), flush() once confirmed, close()
        self._staged: list[tuple[str, list[dict]]] = []  # (table, records) not yet taken by the sink
        self._abandoned = False

    def stage(self, tag: str, entries: list[list]) -> None:
        """Keep the entries for `flush`: the sink's write may upload, which is no work for the
        relay's event loop."""
        table = TABLE_OF_TAG.get(tag)
        if table is None:
            log.info("relay: %d records tagged %s belong to no table; not written", len(entries), tag)
            return
        self._staged.append((table, [record for _, record in entries]))

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
