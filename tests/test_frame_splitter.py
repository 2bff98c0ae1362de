"""The relay's frame splitter: whole frames out, however the bytes arrive; garbage refused."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proofpoint_shipper.fluent.codec import ProtocolError
from proofpoint_shipper.fluent.relay import FrameSplitter

FRAMES = [
    msgpack.packb(["gateway.raw", [[1645367700 + i, {"log": "x" * (i * 37 % 300)}]], {"chunk": f"c{i}"}])
    for i in range(20)
]


@given(st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=200))
def test_frames_come_out_whole_and_in_order_however_the_bytes_are_cut(cuts):
    stream, splitter, out, at = b"".join(FRAMES), FrameSplitter(1 << 20), [], 0
    for cut in cuts:
        out.extend(splitter.feed(stream[at : at + cut]))
        at += cut
    out.extend(splitter.feed(stream[at:]))
    assert out == FRAMES


def test_garbage_is_refused():
    with pytest.raises(ProtocolError, match="not msgpack"):
        list(FrameSplitter(1 << 20).feed(b"\xc1\xc1\xc1"))


def test_a_frame_over_the_bound_is_refused():
    with pytest.raises(ProtocolError, match="over 100 bytes"):
        list(FrameSplitter(100).feed(msgpack.packb("y" * 200)))
