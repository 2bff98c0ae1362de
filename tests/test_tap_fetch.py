"""The TAP fetcher against the simulator over loopback, with one clock for both."""

import dataclasses
import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.sinks.records import EARLIEST, LATEST, record_time
from proofpoint_shipper.tap import ARRAYS
from proofpoint_shipper.tap.events import creation_time, generate
from proofpoint_shipper.tap.shape import event_key, to_record
from proofpoint_shipper.tap.simulator import TapSimulator
from tests.tap_harness import PRINCIPAL, SECRET, Clock, fetch, record_id

END = datetime(2022, 2, 20, 15, 0, tzinfo=UTC)
LAG = timedelta(minutes=2)


def serve(events, clock, **settings):
    simulator = TapSimulator(events, PRINCIPAL, SECRET, now=clock, **settings)
    return simulator


def test_a_multi_day_catch_up_fetches_every_event_exactly_once(tmp_path):
    events = list(generate(11, END - timedelta(days=3), END, 40))
    clock = Clock(END + timedelta(hours=1))  # everything indexed by now
    with serve(events, clock) as simulator:
        records, summary = fetch(simulator, clock, tmp_path, since=END - timedelta(days=3))
    ids = Counter(record_id(r) for r in records)
    assert set(ids) == {e.wire["id"] for e in events}
    assert max(ids.values()) == 1
    assert summary.windows >= 72 and not summary.skipped
    assert {r["eventType"] for r in records} == {
        "messagesDelivered",
        "messagesBlocked",
        "clicksPermitted",
        "clicksBlocked",
    }


def test_late_indexed_events_are_caught_by_the_overlap(tmp_path):
    events = list(generate(12, END - timedelta(hours=3), END, 120))
    clock = Clock(END)
    with serve(events, clock) as simulator:
        first, _ = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=3))
        later = []
        for _ in range(6):  # polls every 10 minutes for an hour
            clock.advance(timedelta(minutes=10))
            records, _ = fetch(simulator, clock, tmp_path)
            later += records
    first_ids = {record_id(r) for r in first}
    late = [e for e in events if e.created < END - LAG and e.wire["id"] not in first_ids]
    assert late, "the generator made no late-indexed events: the test would prove nothing"
    all_ids = Counter(record_id(r) for r in first + later)
    assert {e.wire["id"] for e in events if e.created < END} <= set(all_ids)  # none lost
    assert max(all_ids.values()) == 1  # none twice


def test_per_recipient_events_are_all_kept(tmp_path):
    events = list(generate(13, END - timedelta(hours=6), END, 60))
    by_guid = Counter(e.wire["GUID"] for e in events if e.array.startswith("messages"))
    shared = {guid for guid, count in by_guid.items() if count > 1}
    assert shared
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator:
        records, _ = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=6))
    kept = Counter(r["GUID"] for r in records if r["eventType"].startswith("messages"))
    assert all(kept[guid] == by_guid[guid] for guid in shared)


@pytest.mark.parametrize("retry_after", [0, "nan"], ids=["retry-after 0", "retry-after nan"])
def test_a_429_storm_is_survived_within_the_quota(tmp_path, retry_after):
    events = list(generate(14, END - timedelta(hours=2), END, 60))
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock, quota=50) as simulator:
        simulator.throttle_next = 4
        simulator.retry_after = retry_after  # "nan" from a broken proxy: the back-off applies
        records, _ = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=2))
        statuses = Counter(status for _, status in simulator.requests)
    assert statuses[429] == 4
    assert {record_id(r) for r in records} == {e.wire["id"] for e in events}


def test_a_week_old_cursor_is_clamped_with_a_loud_warning(tmp_path, caplog):
    events = list(generate(15, END - timedelta(hours=2), END, 30))
    clock = Clock(END + timedelta(hours=1))
    (tmp_path / "cursor.json").write_text(json.dumps({"cursor": (END - timedelta(days=9)).isoformat()}))
    with serve(events, clock) as simulator, caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, _ = fetch(simulator, clock, tmp_path)
        statuses = {status for _, status in simulator.requests}
    assert statuses <= {200, 204}  # never a 400 for a too-old start
    warning = next(m for m in caplog.messages if "can no longer be fetched" in m)
    assert "2022-02-11T15:00:00" in warning  # names the gap's start: the old cursor
    assert {record_id(r) for r in records} == {e.wire["id"] for e in events}


def test_pending_windows_past_the_7_day_limit_are_told_lost_not_asked_for(tmp_path, caplog):
    """A catch-up from the 7-day limit, interrupted and run again minutes later: the API refused
    its oldest pending windows (400), and every run stopped there, for good."""
    events = list(generate(21, END - timedelta(hours=2), END, 30))
    clock = Clock(END + timedelta(hours=1))
    edge = clock() - timedelta(days=7)  # the API's limit now
    pending = [
        (edge - timedelta(hours=1), edge),
        (edge - timedelta(minutes=20), edge + timedelta(minutes=40)),
    ]
    start = END - timedelta(hours=2)
    pending += [(start + timedelta(hours=n), start + timedelta(hours=n + 1)) for n in range(3)]
    cursor = {
        "cursor": (edge - timedelta(hours=1)).isoformat(),
        "pending": [[a.isoformat(), b.isoformat()] for a, b in pending],
    }
    (tmp_path / "cursor.json").write_text(json.dumps(cursor))
    with serve(events, clock) as simulator, caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, summary = fetch(simulator, clock, tmp_path)
        statuses = {status for _, status in simulator.requests}
    assert statuses <= {200, 204} and summary.windows == 4  # one dropped, one cut to the limit
    (warning,) = [m for m in caplog.messages if "can no longer be fetched" in m]
    assert warning.startswith("!!! TAP events from 2022-02-13T15:00:00.000Z to 2022-02-13T16:05:00.000Z")
    assert {record_id(r) for r in records} == {e.wire["id"] for e in events}
    assert json.loads((tmp_path / "cursor.json").read_text())["pending"] == []


def test_a_cursor_ahead_of_the_clock_is_a_loud_warning_not_a_silent_stall(tmp_path, caplog):
    clock = Clock(END)
    (tmp_path / "cursor.json").write_text(json.dumps({"cursor": (END + timedelta(hours=3)).isoformat()}))
    with serve([], clock) as simulator, caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        _, summary = fetch(simulator, clock, tmp_path)
    assert summary.windows == 0
    warning = next(m for m in caplog.messages if "ahead of this host's clock" in m)
    assert "2022-02-20T18:00:00.000Z" in warning and "2022-02-20T15:00:00.000Z" in warning


@pytest.mark.parametrize("corruption", ["invalid_json", "truncated", "not_object", "too_deep"])
def test_a_malformed_answer_is_dead_lettered_and_the_window_retried(tmp_path, corruption):
    events = list(generate(16, END - timedelta(hours=2), END, 60))
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator:
        simulator.corruptions.append(corruption)
        records, summary = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=2))
    assert not summary.skipped
    (dead,) = (tmp_path / "dead-letter").iterdir()
    assert dead.name.startswith("tap-") and dead.stat().st_size > 0
    ids = Counter(record_id(r) for r in records)
    assert set(ids) == {e.wire["id"] for e in events} and max(ids.values()) == 1


def test_an_array_the_api_adds_is_set_aside_and_the_known_events_land(tmp_path, caplog):
    """An answer with an array no table takes was malformed: dead-lettered, tried again, and
    once the API sent it in every answer, every window was skipped with all its events."""
    events = list(generate(20, END - timedelta(hours=2), END, 60))
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator, caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        simulator.corruptions.extend(["unknown_array"] * 10)  # every answer of the run
        records, summary = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=2))
    assert not summary.skipped
    assert Counter(record_id(r) for r in records) == Counter(e.wire["id"] for e in events)
    kept = sorted((tmp_path / "dead-letter").iterdir())
    assert kept and all(path.name.endswith("-unknown-arrays.ndjson") for path in kept)
    assert {path.stat().st_mode & 0o777 for path in kept} == {0o600}  # mail data: ours only
    lines = [json.loads(line) for path in kept for line in path.read_text().splitlines()]
    assert lines == [
        {"array": "messagesQuarantined", "item": {"id": "x"}},
        {"array": "messagesQuarantined", "item": 7},
    ] * len(kept)
    told = [m for m in caplog.messages if "an array no table takes" in m]
    assert len(told) == len(kept) and "2 items of 'messagesQuarantined'" in told[0]


def test_a_window_that_stays_malformed_is_skipped_by_name_and_the_rest_fetched(tmp_path, caplog):
    events = list(generate(17, END - timedelta(hours=2), END, 60))
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator, caplog.at_level(logging.ERROR, "proofpoint_shipper"):
        simulator.corruptions.extend(["invalid_json"] * 3)
        records, summary = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=2))
    assert len(summary.skipped) == 1
    assert any(summary.skipped[0] in m and "skipped" in m for m in caplog.messages)
    assert len(list((tmp_path / "dead-letter").iterdir())) == 3
    assert records  # the later windows still came


def test_lone_surrogate_escapes_are_read_as_u_fffd_told_and_the_event_kept(tmp_path, caplog):
    """Half an emoji, escaped (`\\ud83d`, as JavaScript writes it): ijson read a high half as "?"
    in silence, and a low half stopped the fetch with a traceback on every run."""
    events = list(generate(19, END - timedelta(hours=2), END, 60))
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator, caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        simulator.corruptions.append("lone_surrogates")
        records, summary = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=2))
    assert not summary.skipped and not (tmp_path / "dead-letter").exists()
    assert Counter(record_id(r) for r in records) == Counter(e.wire["id"] for e in events)
    (cut,) = [r for r in records if str(r.get("subject")).startswith("cut ")]
    assert cut["subject"] == "cut \ufffd, \\ud83d, \ufffd and \U0001f600"
    assert any("2 lone UTF-16 surrogate escapes, read as U+FFFD" in m for m in caplog.messages)


def test_odd_events_are_written_marked_and_do_not_stop_the_fetch(tmp_path, caplog):
    """A clicked URL no parser reads, and an event with no readable time: the API sends what it
    has, and one odd event must not stop every later window."""
    events = list(generate(18, END - timedelta(hours=2), END, 60))
    click = next(i for i, e in enumerate(events) if e.array.startswith("clicks"))
    message = next(i for i, e in enumerate(events) if e.array.startswith("messages"))
    odd_url = {**events[click].wire, "url": "http://[evil.example/"}
    no_time = {**events[message].wire, "messageTime": 1645367700, "threatsInfoMap": "none"}
    events[click] = dataclasses.replace(events[click], wire=odd_url)
    events[message] = dataclasses.replace(events[message], wire=no_time)
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator, caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, summary = fetch(simulator, clock, tmp_path, since=END - timedelta(hours=2))
    assert not summary.skipped
    by_id = {record_id(r): r for r in records}
    assert set(by_id) == {e.wire["id"] for e in events}
    assert by_id[odd_url["id"]]["domain"] is None and "error" not in by_id[odd_url["id"]]
    assert by_id[no_time["id"]]["error"].startswith("no readable event time")
    assert sum("error" in r for r in records) == 1
    assert any("without a readable time" in m for m in caplog.messages)


def test_wrong_credentials_stop_at_once(tmp_path):
    clock = Clock(END)
    with serve([], clock) as simulator, pytest.raises(ConfigError, match="refused our credentials"):
        fetch(simulator, clock, tmp_path, since=END - timedelta(hours=1), secret="wrong")
    assert len(simulator.requests) == 1  # no retries of a 401


def test_an_interrupted_run_leaves_exactly_its_remaining_windows_and_a_rerun_does_them(tmp_path):
    from proofpoint_shipper.errors import FetchError

    events = list(generate(18, END - timedelta(hours=5), END, 60))
    clock = Clock(END + timedelta(hours=1))
    with serve(events, clock) as simulator:
        simulator.fail_after = 3  # three windows answer, then the API fails for good
        with pytest.raises(FetchError):
            fetch(simulator, clock, tmp_path, since=END - timedelta(hours=5))
        state = json.loads((tmp_path / "cursor.json").read_text())
        requested = [path for path, status in simulator.requests if status == 200 or status == 204]
        assert len(requested) == 3
        assert len(state["pending"]) == 6 - 3  # 5 h + the hour since END: six windows, three done
        assert state["cursor"] == state["pending"][0][0]  # the next window starts where the cursor is
        simulator.fail_after = None
        clock.advance(timedelta(minutes=30))  # later: a fresh plan would have other windows
        records, summary = fetch(simulator, clock, tmp_path)
        assert summary.windows == 3  # exactly the remaining ones, not a new plan
    ids = Counter(record_id(r) for r in records)
    assert max(ids.values()) == 1
    assert {e.wire["id"] for e in events if e.created >= datetime.fromisoformat(state["cursor"])} <= set(ids)


# Whatever JSON an event holds (ijson gives these types; integers past 64 bits are refused
# earlier, as malformed answers), reading it never raises.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TIMES = st.sampled_from(
    [
        "2022-02-20T08:35:00.000Z",
        "2022-02-20T08:35:00",
        "2022-13-01T00:00:00Z",
        "http://[x",
        "0001-01-01T00:00:00+14:00",  # valid, but out of range once moved to UTC
        "9999-12-31T23:59:59-14:00",
    ]
)
EVENT_KEYS = st.sampled_from(
    ["messageTime", "clickTime", "threatTime", "threatsInfoMap", "url", "messageParts"]
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ARRAYS)), st.dictionaries(EVENT_KEYS, JSON_VALUES | TIMES, max_size=6))
def test_reading_any_event_never_raises(array, event):
    created = creation_time(array, event)
    assert created is None or created.utcoffset() == timedelta(0)
    assert isinstance(event_key(array, event), str)
    record = to_record(array, event)
    assert record["eventType"] == array
    assert EARLIEST <= record_time(record) <= LATEST  # a time every sink can file and send
