"""Forward protocol messages in and out: the four client modes, read and written.

`decode(message)` turns a decoded client message into (tag, entries, options) for Message,
Forward, PackedForward and CompressedPackedForward (gzip) modes, with EventTime or integer times;
anything else raises ProtocolError. An event may carry metadata, as forward protocol v1.5 has it
and Fluent Bit sends by default since 5.0.4: `[[time, {metadata}...], record]`. Its time is read
as any other; metadata maps that hold anything are kept in the record under `fluent_metadata`, so
that the entries are plain `[time, record]` for any receiver (Fluentd and Vector refuse the
other form). `spec_times(entries, received)` turns float times, which the protocol does not have,
into EventTime. `encode(mode, tag, entries, chunk)` writes any mode. Streams are read with
`protocol.unpacker()` (msgpack's streaming Unpacker, bounded buffer).
"""

import gzip
import io
import math
import zlib
from operator import itemgetter

import msgpack

from proofpoint_shipper.fluent import protocol

MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A frame that is not a forward-protocol client message; the connection should close."""


def decode(message: object) -> tuple[str, list[tuple[object, dict]], dict]:
    if not isinstance(message, list) or len(message) < 2 or not isinstance(message[0], str):
        raise ProtocolError(f"not a forward message: {str(message)[:80]!r}")
    tag, body = message[0], message[1]
    if _is_time(body) or _is_time_with_metadata(body):  # Message mode: [tag, time, record, options?]
        if len(message) < 3 or not isinstance(message[2], dict):
            raise ProtocolError("Message mode without a record")
        return tag, _entries([(body, message[2])]), _options(message, 3)
    options = _options(message, 2)
    if isinstance(body, list):  # Forward mode: [tag, [[time, record], ...], options?]
        return tag, _entries(body), options
    if isinstance(body, bytes):  # PackedForward, gzip-compressed or not
        return tag, _packed_entries(body, options.get("compressed")), options
    raise ProtocolError(f"unknown mode for tag {tag!r}")


def _packed_entries(body: bytes, compression: object) -> list[tuple[object, dict]]:
    if compression == "gzip":
        body = _gunzip(body)
    try:
        return _entries(_unpack_stream(body))
    except ProtocolError:
        if compression in (None, "gzip", "text"):  # "text": Fluentd's word for none
            raise
        raise ProtocolError(  # Fluentd's out_forward also offers zstd
            f"PackedForward compressed with {str(compression)[:20]!r}: only gzip is read "
            "here; set the client's compression to gzip or none"
        ) from None


def _is_time(value: object) -> bool:
    return type(value) in _TIME_TYPES


def _is_time_with_metadata(value: object) -> bool:
    """[time, {metadata}...]: an event's time as forward protocol v1.5 allows it."""
    return (
        type(value) in _ENTRY_TYPES
        and len(value) >= 1
        and _is_time(value[0])
        and all(type(metadata) is dict for metadata in value[1:])
    )


def _options(message: list, index: int) -> dict:
    if len(message) <= index or message[index] is None:
        return {}
    if not isinstance(message[index], dict):
        raise ProtocolError("the option field is not a map")
    return message[index]


def _entries(candidates: list) -> list[tuple[object, dict]]:
    """The (time, record) pairs of a batch, checked in bulk: C loops, not a Python call a record."""
    if not (
        set(map(type, candidates)) <= _ENTRY_TYPES
        and set(map(len, candidates)) <= {2}
        and set(map(type, map(_record, candidates))) <= {dict}
    ):
        raise _not_an_entry(candidates)
    times = list(map(_time, candidates))
    if not set(map(type, times)) <= _TIME_TYPES:
        return _entries_with_metadata(candidates, times)
    return list(zip(times, map(_record, candidates), strict=True))


def _entries_with_metadata(candidates: list, times: list) -> list[tuple[object, dict]]:
    """Entries some of whose times are [time, {metadata}...]. Fluent Bit sends `{}` as the
    metadata of a tailed line: a batch of those is read in bulk too."""
    if (
        set(map(type, times)) <= _ENTRY_TYPES
        and set(map(len, times)) <= {2}
        and set(map(type, map(_time, times))) <= _TIME_TYPES
        and set(map(type, map(_record, times))) <= {dict}
        and not any(map(_record, times))  # every metadata map empty
    ):
        return list(zip(map(_time, times), map(_record, candidates), strict=True))
    entries = []
    for time, record in candidates:
        if _is_time_with_metadata(time):
            time, metadata = time[0], [kept for kept in time[1:] if kept]
            if metadata:
                record[METADATA_KEY] = metadata[0] if len(metadata) == 1 else metadata
        elif not _is_time(time):
            raise _not_an_entry(candidates)
        entries.append((time, record))
    return entries


METADATA_KEY = "fluent_metadata"  # where an event's metadata maps are kept, when not empty


def _not_an_entry(candidates: list) -> ProtocolError:
    bad = next(entry for entry in candidates if not _is_entry(entry))
    return ProtocolError(f"not an entry [time, record]: {str(bad)[:80]!r}")


_ENTRY_TYPES = frozenset({list, tuple})
_TIME_TYPES = frozenset({int, float, protocol.EventTime})  # exact types: a bool is no time
_time, _record = itemgetter(0), itemgetter(1)


def _is_entry(entry: object) -> bool:
    return (
        type(entry) in _ENTRY_TYPES
        and len(entry) == 2
        and (_is_time(entry[0]) or _is_time_with_metadata(entry[0]))
        and type(entry[1]) is dict
    )


def spec_times(entries: list[tuple[object, dict]], received: float) -> tuple[list, int]:
    """The entries with every float time as an EventTime, and how many floats were no time at all.

    The spec has integer and EventTime times only: Fluentd refuses a float further down its
    pipeline. A float that is NaN, infinite or outside EventTime's range (1970 to 2106) becomes
    `received`, as Fluentd's in_forward stamps a record that has no time.
    """
    if float not in set(map(type, map(_time, entries))):
        return entries, 0  # the common case, checked in a C loop
    fixed, bad = [], 0
    for time, record in entries:
        if type(time) is float:
            if not (math.isfinite(time) and 0 <= time < _EVENT_TIME_END):
                time, bad = received, bad + 1
            time = protocol.EventTime(time)
        fixed.append((time, record))
    return fixed, bad


_EVENT_TIME_END = 2.0**32  # EventTime's seconds are an unsigned 32-bit number


def _gunzip(data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(MAX_DECOMPRESSED_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise ProtocolError(f"bad gzip in CompressedPackedForward: {exc}") from exc
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise ProtocolError("CompressedPackedForward expands past the size limit")
    return out


def _unpack_stream(data: bytes) -> list:
    unpacker = protocol.unpacker(max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    entries, end = [], 0
    try:
        for entry in unpacker:
            entries.append(entry)
            end = unpacker.tell()
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise ProtocolError(f"bad PackedForward entries: {protocol.msgpack_fault(exc)}") from exc
    if end != len(data):  # the iteration stops quietly before a cut-off last entry
        raise ProtocolError(f"PackedForward entries end in the middle of one, after byte {end}")
    return entries


def encode(mode: str, tag: str, entries: list[tuple[object, dict]], chunk: str | None = None) -> bytes:
    options = {"chunk": chunk} if chunk else {}
    if mode == "message":
        ((time, record),) = entries
        return msgpack.packb([tag, time, record, options], use_bin_type=True)
    if mode == "forward":
        return msgpack.packb(
            [tag, [list(e) for e in entries], {"size": len(entries), **options}], use_bin_type=True
        )
    packed = b"".join(msgpack.packb(list(e), use_bin_type=True) for e in entries)
    if mode == "compressed":
        options["compressed"] = "gzip"
        packed = gzip.compress(packed)
    return msgpack.packb([tag, packed, {"size": len(entries), **options}], use_bin_type=True)
