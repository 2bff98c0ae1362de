"""StdoutSink: routable NDJSON, text lines, msgpack, the line limit, a closed pipe."""

import io
import json
import os

import msgpack
import pytest

from proofpoint_shipper.errors import ConfigError, DeliveryError
from proofpoint_shipper.sinks.stdout import StdoutSink


def test_json_records_carry_their_table():
    out = io.BytesIO()
    sink = StdoutSink(out)
    sink.write("proofpoint_tap_clicks_blocked", [{"id": "a"}])
    sink.write("proofpoint_gateway_filter_logs", [{"table": "proofpoint_gateway_filter_logs", "raw": "x"}])
    assert out.getvalue() == b""  # nothing before flush
    sink.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"id": "a", "table": "proofpoint_tap_clicks_blocked"},
        {"table": "proofpoint_gateway_filter_logs", "raw": "x"},
    ]


def test_text_format_writes_the_line_itself():
    out = io.BytesIO()
    sink = StdoutSink(out, format="text")
    sink.write(
        "proofpoint_gateway_sendmail_logs", [{"text": "2022-02-20T08:35:00.000000-06:00 h sendmail[1]: x"}]
    )
    sink.flush()
    assert out.getvalue() == b"2022-02-20T08:35:00.000000-06:00 h sendmail[1]: x\n"


def test_msgpack_format():
    out = io.BytesIO()
    sink = StdoutSink(out, format="msgpack")
    sink.write("proofpoint_on_demand_maillog", [{"id": "m1"}, {"id": "m2"}])
    sink.flush()
    assert list(msgpack.Unpacker(io.BytesIO(out.getvalue()), raw=False)) == [
        {"id": "m1", "table": "proofpoint_on_demand_maillog"},
        {"id": "m2", "table": "proofpoint_on_demand_maillog"},
    ]


def test_an_overlong_line_is_refused_counted_and_reported():
    out, errors = io.BytesIO(), io.StringIO()
    sink = StdoutSink(out, max_line_bytes=100, errors=errors)
    sink.write("proofpoint_tap_messages_blocked", [{"id": "short"}, {"id": "x" * 200}, {"id": "after"}])
    sink.flush()
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == ["short", "after"]
    assert sink.refused == 1
    assert "refused a" in errors.getvalue() and "100-byte line limit" in errors.getvalue()


def test_unknown_table_is_refused():
    with pytest.raises(ConfigError):
        StdoutSink(io.BytesIO()).write("nope", [{}])


def test_a_closed_reader_is_a_delivery_error():
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "wb") as output:
        sink = StdoutSink(output)
        sink.write("proofpoint_tap_messages_blocked", [{"id": "a"}])
        with pytest.raises(DeliveryError, match="cannot write to stdout: Broken pipe"):
            sink.flush()
        output.write = lambda data: len(data)  # let the close at exit succeed
        output.flush = lambda: None
