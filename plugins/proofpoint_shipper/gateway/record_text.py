"""The text-table line of a gateway record read back from JSON (`gateway parse --format json`,
the relay's records): what `ppship ship` lands in a gateway text table for such a record.

The record keeps the line's normalised time, host and program, and the line itself in `raw`;
the text after the header is read again from `raw`, which needs no zone or reference time.
"""

import functools
from datetime import UTC, datetime

from proofpoint_shipper.gateway.record import TABLES, render_text
from proofpoint_shipper.sinks.records import json_record, of_another_table
from proofpoint_shipper.streams import Stream

# Keys render_text reads, each a string when present; `time` and `raw` must be.
_REQUIRED, _OPTIONAL = ("time", "raw"), ("host", "program", "pid", "text")


def gateway_record(line: str) -> dict | None:
    """The record on an NDJSON line when it is a gateway record, else None."""
    record, _ = json_record(line)
    if record is None or record.get("stream") not in TABLES:
        return None
    if not all(isinstance(record.get(key), str) for key in _REQUIRED):
        return None
    if not all(isinstance(record[key], str) for key in _OPTIONAL if key in record):
        return None
    return record


def text_of_gateway_record(record: dict, stream: Stream) -> tuple[str | None, str | None]:
    """(the record's text line, None), or (None, why it is not a line of `stream`'s table)."""
    table = record.get("table")
    if table != stream.table:
        if isinstance(table, str):
            return None, of_another_table(table, stream)
        held = "null" if table is None else "no name"  # null: `other`, lines of unrelated programs
        return None, f"a record of no table (its `table` is {held}), not of {stream.table}"
    if "text" in record:  # the relay's records carry their line
        return record["text"], None
    _, body = _body_reader().parse_with_body(record["raw"])
    return render_text(record, body), None


@functools.cache
def _body_reader():
    """A parser used only for the text after the header: its zone and reference time do not
    matter, as the record's own time is written."""
    from proofpoint_shipper.gateway.parser import GatewayParser  # builds the grammars: on first use

    return GatewayParser(zone=UTC, reference=datetime(2000, 1, 1, tzinfo=UTC))
