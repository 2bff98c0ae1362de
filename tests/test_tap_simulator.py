"""The TAP simulator's own rules: auth, parameters and their 400 texts, quota, late indexing."""

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.tap.events import TapEvent, generate, replay, wire_time
from proofpoint_shipper.tap.simulator import TOO_OLD, TapSimulator
from tests.tap_harness import PRINCIPAL, SECRET, Clock

NOW = datetime(2022, 2, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def simulator():
    clock = Clock(NOW)
    events = list(generate(3, NOW - timedelta(days=1), NOW, 60))
    with TapSimulator(events, PRINCIPAL, SECRET, now=clock, quota=5) as sim:
        sim.clock = clock
        yield sim


def get(sim, path="/v2/siem/all", auth=(PRINCIPAL, SECRET), **params):
    return httpx.get(sim.url + path, params=params, auth=auth)


def interval(start: datetime, length: timedelta) -> str:
    return f"{wire_time(start)}/{wire_time(start + length)}"


def test_wrong_or_missing_credentials_are_401(simulator):
    assert get(simulator, auth=(PRINCIPAL, "wrong"), sinceSeconds=60).status_code == 401
    assert get(simulator, auth=None, sinceSeconds=60).status_code == 401


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({}, "Exactly one of interval, sinceTime or sinceSeconds must be given"),
        ({"sinceSeconds": "60", "sinceTime": "2022-02-20T14:00:00Z"}, "Exactly one of"),
        (
            {"interval": interval(NOW - timedelta(hours=2), timedelta(seconds=29))},
            "The requested interval is too short",
        ),
        (
            {"interval": interval(NOW - timedelta(hours=3), timedelta(hours=1, seconds=1))},
            "The requested interval is too long",
        ),
        ({"sinceTime": wire_time(NOW - timedelta(days=7, minutes=1))}, TOO_OLD),
        ({"sinceSeconds": "3601"}, "between 1 and 3600"),
        ({"interval": "yesterday/today"}, "malformed"),
        ({"sinceSeconds": "60", "threatStatus": "bogus"}, "threatStatus parameter is invalid"),
    ],
)
def test_parameter_rules_and_their_400_texts(simulator, params, text):
    response = get(simulator, **params)
    assert response.status_code == 400 and text in response.text


def test_query_end_time_and_arrays_per_endpoint(simulator):
    start = NOW - timedelta(hours=5)
    body = get(simulator, interval=interval(start, timedelta(hours=1))).json()
    assert body["queryEndTime"] == wire_time(start + timedelta(hours=1))
    assert set(body) == {
        "queryEndTime",
        "messagesDelivered",
        "messagesBlocked",
        "clicksPermitted",
        "clicksBlocked",
    }
    issues = get(simulator, "/v2/siem/issues", interval=interval(start, timedelta(hours=1))).json()
    assert set(issues) == {"queryEndTime", "clicksPermitted", "messagesDelivered"}
    since = get(simulator, sinceSeconds=120).json()
    assert since["queryEndTime"] == wire_time(NOW.replace(second=0))


def test_quota_is_a_rolling_day_per_pool(simulator):
    for _ in range(5):
        assert get(simulator, sinceSeconds=60).status_code in (200, 204)
    assert get(simulator, sinceSeconds=60).status_code == 429
    assert get(simulator, "/v2/siem/clicks/permitted", sinceSeconds=60).status_code in (200, 204)  # own pool
    simulator.clock.advance(timedelta(hours=24, seconds=1))
    assert get(simulator, sinceSeconds=60).status_code in (200, 204)  # the oldest aged out


def test_events_are_returned_only_once_indexed():
    created = NOW - timedelta(minutes=10)
    wire = {"id": "late", "GUID": "g", "clickTime": wire_time(created), "threatTime": wire_time(created)}
    event = TapEvent("clicksBlocked", created, created + timedelta(minutes=20), wire)
    clock = Clock(NOW)
    with TapSimulator([event], PRINCIPAL, SECRET, now=clock) as sim:
        window = interval(NOW - timedelta(minutes=30), timedelta(minutes=30))
        first = get(sim, interval=window)
        assert first.status_code == 204 or first.json()["clicksBlocked"] == []
        clock.advance(timedelta(minutes=11))
        assert [e["id"] for e in get(sim, interval=window).json()["clicksBlocked"]] == ["late"]


def test_replay_serves_the_events_of_a_file_in_both_shapes(tmp_path):
    clicked, sent = "2022-02-20T14:10:00.000Z", "2022-02-20T14:20:00.000Z"
    path = tmp_path / "events.ndjson"
    lines = [
        {"array": "clicksBlocked", "event": {"clickTime": clicked, "id": "c1"}},
        {"eventType": "messagesDelivered", "messageTime": sent, "id": "m1"},  # bare, as the API sends
    ]
    path.write_text("\n\n".join(json.dumps(line) for line in lines) + "\n")  # blank lines are skipped
    events = list(replay(path))
    assert [(event.array, wire_time(event.created)) for event in events] == [
        ("clicksBlocked", clicked),
        ("messagesDelivered", sent),
    ]
    with TapSimulator(events, PRINCIPAL, SECRET, now=Clock(NOW)) as sim:
        body = get(sim, interval=interval(NOW - timedelta(hours=1), timedelta(hours=1))).json()
    assert [event["id"] for event in body["clicksBlocked"] + body["messagesDelivered"]] == ["c1", "m1"]


@pytest.mark.parametrize(
    "line, fault",
    [
        ("not json", ":2: invalid literal"),
        ("[1]", ":2: not a JSON object"),
        ('{"array": "clicks"}', ":2: 'array' (or 'eventType') is 'clicks', not one of messagesDelivered"),
        ('{"array": "clicksBlocked", "event": 5}', ":2: 'event' is not a JSON object"),
        ('{"eventType": "clicksBlocked", "id": "c"}', ":2: the event has no readable time"),
    ],
)
def test_a_replay_line_that_is_no_event_stops_it_naming_the_line(tmp_path, line, fault):
    path = tmp_path / "events.ndjson"
    path.write_text('{"eventType": "clicksBlocked", "clickTime": "2022-02-20T14:10:00Z"}\n' + line + "\n")
    with pytest.raises(ConfigError) as raised:
        list(replay(path))
    assert str(raised.value).startswith(f"{path}{fault}")
