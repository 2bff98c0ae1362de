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
        self._abandoned = False

    def write_entries(self, tag: str, entries: list[list]) -> None:
        table = TABLE_OF_TAG.get(tag)
        if table is None:
            log.info("relay: %d records tagged %s belong to no table; not written", len(entries), tag)
            return
        self.sink.write(table, [record for _, record in entries])

    def flush(self) -> None:
        if self._abandoned:
            raise DeliveryAbandoned("relay stopping: the delivery was given up")
        self.sink.flush()

    def abandon(self) -> None:
        """From another thread: the next flush fails at once (an upload under way finishes)."""
        self._abandoned = True

    def close(self) -> None:
        self.flush()
