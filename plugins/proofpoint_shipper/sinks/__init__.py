"""Outputs: where records go once collected. One interface, three sinks.

    sink.write(table, records, name=None)
                                 buffer records for one table (raises ConfigError on an unknown table);
                                 `name` groups records (an API window) so that an object store can
                                 derive its keys from it and a re-run replaces instead of duplicating
    sink.flush()                 return only once the data is durable at the destination,
                                 or raise DeliveryError (the data stays buffered)
    sink.close()                 flush, then release connections

`StdoutSink` (an agent's exec input), `ForwardSink` (Fluent forward protocol with acks), `S3Sink`.
"""

from typing import Protocol


class Sink(Protocol):
    def write(self, table: str, records: list[dict], name: str | None = None) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
