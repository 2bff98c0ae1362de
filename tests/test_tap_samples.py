"""The seed document's four TAP samples go through simulator, client, fetcher and sink and come
out in the data lake's expected shapes, field for field (tests/data/tap_seed_samples.ndjson is the
document's samples, with only its one broken line, `"domain": }`, fixed)."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proofpoint_shipper.tap.events import TapEvent, creation_time
from proofpoint_shipper.tap.shape import CLICK_FIELDS
from proofpoint_shipper.tap.simulator import TapSimulator
from tests.tap_harness import PRINCIPAL, SECRET, Clock, fetch

SAMPLES_FILE = Path(__file__).parent / "data" / "tap_seed_samples.ndjson"
SAMPLES = [json.loads(line) for line in SAMPLES_FILE.read_text().splitlines()]


def as_wire(array: str, expected: dict) -> dict:
    """What the API sends for an expected record: messages as they are, clicks in camelCase."""
    if array.startswith("messages"):
        return dict(expected)
    wire = {wire_name: expected[name] for name, wire_name in CLICK_FIELDS}
    for name in ("clickTime", "threatTime"):  # the API's own time form
        moment = datetime.fromisoformat(wire[name])
        wire[name] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return wire


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["array"] for s in SAMPLES])
def test_seed_sample_comes_out_field_for_field(sample, tmp_path):
    array, expected = sample["array"], sample["expected"]
    wire = as_wire(array, expected)
    created = creation_time(array, wire)
    clock = Clock(created + timedelta(hours=1))
    with TapSimulator([TapEvent(array, created, created, wire)], PRINCIPAL, SECRET, now=clock) as simulator:
        (record,), _ = fetch(simulator, clock, tmp_path, since=created - timedelta(minutes=5))
    assert (
        record.pop("table")
        == {
            "messagesDelivered": "proofpoint_tap_messages_delivered",
            "messagesBlocked": "proofpoint_tap_messages_blocked",
            "clicksPermitted": "proofpoint_tap_clicks_permitted",
            "clicksBlocked": "proofpoint_tap_clicks_blocked",
        }[array]
    )
    assert record.pop("eventType") == array  # added so that an agent can route
    expected = {k: v for k, v in expected.items() if k != "eventType"}
    assert record == expected
    assert list(record) == list(expected)  # and in the document's order
