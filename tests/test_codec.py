"""The forward-protocol codec: every mode round-trips; anything else is a ProtocolError, never a crash."""

import contextlib
import gzip

import msgpack
import pytest
from fluent.sender import EventTime
from hypothesis import given, settings
from hypothesis import strategies as st

from proofpoint_shipper.fluent import codec, protocol

times = st.one_of(
    st.integers(0, 2**32 - 1), st.builds(EventTime, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))
)
records = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.none()),
    max_size=5,
)
entries = st.lists(st.tuples(times, records), min_size=1, max_size=20)


def through_the_wire(data: bytes):
    unpacker = protocol.unpacker(max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    return codec.decode(next(unpacker))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["forward", "packed", "compressed"]), entries, st.text(min_size=1, max_size=20))
def test_batched_modes_round_trip(mode, batch, tag):
    got_tag, got, options = through_the_wire(codec.encode(mode, tag, batch, chunk="c-1"))
    assert got_tag == tag and got == batch
    assert options["chunk"] == "c-1" and options["size"] == len(batch)
    assert options.get("compressed") == ("gzip" if mode == "compressed" else None)


@settings(max_examples=100, deadline=None)
@given(times, records)
def test_message_mode_round_trips_with_event_time(time, record):
    assert through_the_wire(codec.encode("message", "a.b", [(time, record)])) == ("a.b", [(time, record)], {})


def test_fluent_logger_event_time_keeps_its_nanoseconds():
    ((time, _),) = through_the_wire(codec.encode("forward", "t", [(EventTime(1645367700, 157994123), {})]))[1]
    assert isinstance(time, EventTime) and time == EventTime(1645367700, 157994123)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.binary(max_size=20)),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=12,
    )
)
def test_anything_else_is_a_protocol_error_never_a_crash(message):
    with contextlib.suppress(codec.ProtocolError):
        codec.decode(message)


def test_garbage_packed_entries_and_gzip_are_refused():
    with pytest.raises(codec.ProtocolError):
        codec.decode(["t", b"\xc1\xc1", {}])
    with pytest.raises(codec.ProtocolError, match="bad gzip"):
        codec.decode(["t", b"not gzip", {"compressed": "gzip"}])
    with pytest.raises(codec.ProtocolError, match="option field"):
        codec.decode(["t", [[1, {}]], "options"])


def test_a_cut_off_last_packed_entry_is_refused_not_dropped():
    packed = codec.encode("packed", "t", [(1, {"log": "a"}), (2, {"log": "b"}), (3, {"log": "c"})])
    body = msgpack.unpackb(packed)[1]
    for cut in (1, 3, len(body) // 2):
        with pytest.raises(codec.ProtocolError, match="end in the middle of one"):
            codec.decode(["t", body[:-cut], {}])
        with pytest.raises(codec.ProtocolError, match="end in the middle of one"):
            codec.decode(["t", gzip.compress(body[:-cut]), {"compressed": "gzip"}])


def test_gzip_of_one_member_per_entry_as_fluentd_sends_it():
    """Fluentd's out_forward compresses record by record: the body is many gzip members."""
    entries = [(n, {"log": f"line {n}"}) for n in range(5)]
    body = b"".join(gzip.compress(msgpack.packb(list(entry))) for entry in entries)
    _, decoded, _ = codec.decode(["t", body, {"compressed": "gzip"}])
    assert decoded == entries


def test_corrupt_deflate_data_is_bad_gzip():
    body = gzip.compress(b"".join(msgpack.packb([n, {"log": "x" * 40}]) for n in range(50)))
    corrupt = body[:20] + bytes(byte ^ 0x55 for byte in body[20:40]) + body[40:]
    with pytest.raises(codec.ProtocolError, match="bad gzip"):
        codec.decode(["t", corrupt, {"compressed": "gzip"}])


@pytest.mark.parametrize(
    "bad",
    [[True, {}], [1, {}, {}], [1, "not a record"], ["not a time", {}], 7, [1]],
    ids=["bool time", "three items", "record not a map", "time not a number", "not a list", "one item"],
)
def test_one_bad_entry_among_good_ones_is_named(bad):
    with pytest.raises(codec.ProtocolError, match="not an entry") as refused:
        codec.decode(["t", [[1, {"log": "a"}], bad, [2, {"log": "b"}]]])
    assert str(bad)[:20] in str(refused.value)


def test_float_times_become_event_times_and_no_time_floats_the_time_received():
    received = 1_700_000_000.5
    sent = [
        (1645367700.25, {"n": 0}),
        (float("nan"), {"n": 1}),
        (float("inf"), {"n": 2}),
        (-3.5, {"n": 3}),
        (2.0**32, {"n": 4}),
        (7, {"n": 5}),
        (EventTime(9, 8), {"n": 6}),
    ]
    fixed, no_time = codec.spec_times(sent, received)
    assert no_time == 4
    assert [record for _, record in fixed] == [record for _, record in sent]
    assert fixed[0][0] == EventTime(1645367700, 250_000_000)
    assert [time for time, _ in fixed[1:5]] == [EventTime(1_700_000_000, 500_000_000)] * 4
    assert fixed[5:] == sent[5:]  # the spec's own times, untouched


def test_entries_without_float_times_are_passed_as_they_are():
    sent = [(7, {"n": 0}), (EventTime(9, 8), {"n": 1})]
    assert codec.spec_times(sent, 1.0) == (sent, 0)


def _with_metadata(entries, metadata):
    """Entries as Fluent Bit 5.0.4 and later sends them: [[time, {metadata}], record]."""
    return [[[time, meta], record] for (time, record), meta in zip(entries, metadata, strict=True)]


def _packed(events) -> bytes:
    return b"".join(msgpack.packb(event, use_bin_type=True) for event in events)


def test_events_with_empty_metadata_read_as_plain_entries_in_every_batched_mode():
    sent = [(EventTime(1645367700, 5), {"log": "a"}), (EventTime(1645367701, 6), {"log": "b"})]
    events = _with_metadata(sent, [{}, {}])
    options = {"size": 2, "chunk": "c", "fluent_signal": 0}
    for message in (
        ["t", events, options],
        ["t", _packed(events), options],
        ["t", gzip.compress(_packed(events)), {**options, "compressed": "gzip"}],
    ):
        assert through_the_wire(msgpack.packb(message, use_bin_type=True)) == ("t", sent, message[2])


def test_metadata_that_holds_anything_is_kept_in_the_record():
    sent = [(1, {"log": "a"}), (EventTime(2, 0), {"log": "b"}), (3, {"log": "c"})]
    events = [*_with_metadata(sent[:2], [{"otlp": {"severity": 9}}, {}]), list(sent[2])]  # one plain
    _, entries, _ = codec.decode(["t", events])
    assert [time for time, _ in entries] == [1, EventTime(2, 0), 3]
    assert [record for _, record in entries] == [
        {"log": "a", "fluent_metadata": {"otlp": {"severity": 9}}},
        {"log": "b"},
        {"log": "c"},
    ]


def test_message_mode_with_metadata():
    message = ["t", [EventTime(7, 8), {"k": "v"}], {"log": "a"}, {"chunk": "c"}]
    assert codec.decode(message) == (
        "t",
        [(EventTime(7, 8), {"log": "a", "fluent_metadata": {"k": "v"}})],
        {"chunk": "c"},
    )


@pytest.mark.parametrize(
    "time",
    [[], [EventTime(1, 0), "not a map"], ["not a time", {}], [[1, {}], {}], [True, {}]],
    ids=["empty", "metadata not a map", "no time", "nested", "bool time"],
)
def test_a_time_with_bad_metadata_is_not_an_entry(time):
    with pytest.raises(codec.ProtocolError, match="not an entry"):
        codec.decode(["t", [[1, {"log": "a"}], [time, {"log": "b"}]]])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["forward", "packed"]), entries, st.data())
def test_any_events_with_metadata_read_as_their_plain_entries(mode, batch, data):
    metadata = data.draw(st.lists(st.one_of(st.just({}), records), min_size=len(batch), max_size=len(batch)))
    events = _with_metadata(batch, metadata)
    body = events if mode == "forward" else _packed(events)
    _, got, _ = through_the_wire(msgpack.packb(["t", body, {}], use_bin_type=True))
    assert [time for time, _ in got] == [time for time, _ in batch]
    expected = [
        record | ({"fluent_metadata": meta} if meta else {})
        for (_, record), meta in zip(batch, metadata, strict=True)
    ]
    assert [record for _, record in got] == expected


def test_a_compression_other_than_gzip_is_refused_by_name():
    packed = _packed([[1, {"log": "a"}]])
    for plain in ("text", "none"):  # "text" is Fluentd's word for none; entries that read are read
        assert codec.decode(["t", packed, {"compressed": plain}])[1] == [(1, {"log": "a"})]
    with pytest.raises(codec.ProtocolError, match="compressed with 'zstd': only gzip is read here"):
        codec.decode(["t", b"\x28\xb5\x2f\xfd" + packed, {"compressed": "zstd"}])


def fluentd_frame(tag: str, entries: bytes, options: dict) -> bytes:
    """A PackedForward frame as Fluentd's out_forward writes it: entries as a msgpack str32."""
    return (
        b"\x93"
        + msgpack.packb(tag)
        + b"\xdb"
        + len(entries).to_bytes(4, "big")
        + entries
        + msgpack.packb(options)
    )


@settings(max_examples=200, deadline=None)
@given(entries, st.booleans())
def test_entries_sent_as_a_msgpack_str_read_as_the_bytes_they_are(batch, compressed):
    packed = _packed([list(entry) for entry in batch])
    body, options = (gzip.compress(packed), {"compressed": "gzip"}) if compressed else (packed, {})
    frame = fluentd_frame("t", body, {"size": len(batch), "compressed": "text", **options})
    assert codec.decode(protocol.unpack_frame(frame))[:2] == ("t", batch)


def test_a_short_str_and_a_two_item_frame_are_read_too():
    packed = _packed([[1, {}]])  # 3 bytes: a fixstr
    frame = b"\x92" + msgpack.packb("t") + bytes([0xA0 | len(packed)]) + packed
    assert codec.decode(protocol.unpack_frame(frame)) == ("t", [(1, {})], {})


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12), st.binary(max_size=40), st.sampled_from([b"\x92", b"\x93"]))
def test_a_frame_with_str_entries_of_any_bytes_decodes_or_is_refused(body, rest, array):
    frame = array + b"\xa1t" + bytes([0xD9, len(body)]) + body + rest  # [tag "t", str8 body, ...]
    try:
        message = protocol.unpack_frame(frame)
    except (ValueError, msgpack.UnpackException):
        return
    assert message[1] == body  # read whole, as sent: never cut short


def test_str_entries_that_claim_more_bytes_than_the_frame_holds_are_refused():
    with pytest.raises(ValueError, match="runs past the end of the frame"):
        protocol.unpack_frame(b"\x92\xa1t\xdb\x00\x00\x10\x00" + b"abc")
