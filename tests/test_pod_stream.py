"""The PoD stream client against the PoD simulator over loopback."""

import io
import json
import logging
import re
import socket
import stat
import threading
from datetime import UTC, datetime, timedelta

import pytest
from websockets.sync.client import connect

from proofpoint_shipper.checkpoint import FileCursorStore
from proofpoint_shipper.errors import ConfigError, DeliveryError
from proofpoint_shipper.gateway.parser import GatewayParser
from proofpoint_shipper.pod.events import Timeline, spell_ts
from proofpoint_shipper.pod.shape import event_time
from proofpoint_shipper.pod.simulator import PodSimulator
from proofpoint_shipper.pod.stream import PodStream, StreamSettings
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.service import StopEvent
from proofpoint_shipper.sinks.forward import ForwardSink
from proofpoint_shipper.sinks.stdout import StdoutSink
from tests.answer_cutter import AnswerCutter
from tests.conftest import wait_for
from tests.forward_receiver import ForwardReceiver

TOKEN, CLUSTER = "pod-token-1", "hosted_cid"
FAST = RetryPolicy(attempts=20, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def timeline():
    return Timeline(5, datetime.now(UTC) - timedelta(days=2), rate=20)


@pytest.fixture
def simulator(timeline):
    with PodSimulator(timeline, TOKEN, CLUSTER, seed=3) as server:
        yield server


def stream(simulator, tmp_path, kind="maillog", token=TOKEN, dedupe_window=10_000, **run):
    out = io.BytesIO()
    settings = StreamSettings(
        dead_letter_dir=tmp_path / "dead-letter", retry=FAST, flush_every=100, dedupe_window=dedupe_window
    )
    client = PodStream(
        simulator.url,
        token,
        CLUSTER,
        kind,
        StdoutSink(out),
        FileCursorStore(tmp_path / f"pod-{kind}.json"),
        settings,
    )
    summary = client.run(**run)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def maillog_client(url: str, tmp_path, out: io.BytesIO, settings: StreamSettings, stop=None) -> PodStream:
    """A maillog stream of `url` written to `out`, its resume file in `tmp_path`."""
    return PodStream(
        url, TOKEN, CLUSTER, "maillog", StdoutSink(out), FileCursorStore(tmp_path / "c.json"), settings, stop
    )


def index_of(timeline, kind, record, around: int) -> int:
    key = "id" if kind == "maillog" else "guid"
    return next(i for i in range(around - 500, around + 500) if timeline.event(kind, i)[key] == record[key])


def test_forced_disconnects_deliver_every_event_once(simulator, timeline, tmp_path):
    simulator.drop_every, simulator.resend_rate = 200, 0.02
    records, summary = stream(simulator, tmp_path, max_events=1500)
    assert summary.reconnects >= 6 and summary.duplicates > 0
    first = index_of(
        timeline, "maillog", records[0], timeline.index_at(datetime.now(UTC) - timedelta(hours=1))
    )
    expected = [timeline.event("maillog", i)["id"] for i in range(first, first + 1500)]
    assert [r["id"] for r in records] == expected  # each once, none missing, in order


def test_a_live_session_reset_mid_stream_tells_what_it_cut_off_with_the_backfill(
    simulator, timeline, tmp_path, caplog
):
    """A connection reset (no close frame: a load balancer, a flaky path) loses what the API had
    sent and the connection had not delivered, as the API resumes after the last event it sent.
    It was logged as a drop like any other: a loss in silence. The proxy resets the connection on
    real sockets after the handshake and some 20 kB of events."""
    port = simulator.address[1]
    cutter = AnswerCutter(port, b"GET /v1/stream", body_bytes=20_000)
    out = io.BytesIO()
    settings = StreamSettings(dead_letter_dir=tmp_path / "dl", retry=FAST, flush_every=100)
    url = simulator.url.replace(f":{port}/", f":{cutter.port}/")
    try:
        with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
            maillog_client(url, tmp_path, out, settings).run(max_events=1500)
    finally:
        cutter.close()
    assert cutter.cut == 1
    (told,) = [m for m in caplog.messages if "cut off" in m]
    since = re.search(r"--since (\S+) --until \S+$", told).group(1)
    assert told.startswith("!!! PoD maillog stream dropped without the API closing it (")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    first = index_of(
        timeline, "maillog", records[0], timeline.index_at(datetime.now(UTC) - timedelta(hours=1))
    )
    got = {r["id"] for r in records}
    span = [timeline.event("maillog", i) for i in range(first, first + len(records) + 2000)]
    last_got = max(i for i, event in enumerate(span) if event["id"] in got)
    lost = [event for event in span[:last_got] if event["id"] not in got]
    assert lost, "the reset cut nothing off: the test shows nothing"
    assert all(event_time(event) > event_time({"ts": since}) for event in lost)  # all in the backfill


def test_a_stopped_stream_keeps_the_events_on_their_way_and_the_next_run_goes_on_after_them(
    simulator, timeline, tmp_path, caplog
):
    """Catching up on the last hour, the API has sent thousands of events the stream has not read
    yet (socket buffers, the library's queue), and resumes the next session after them. A stream
    that stops (here at --duration, as at SIGTERM) takes them before it closes: its run and the
    next one hold every event, once, in order. Past --max-events they are told, not taken."""
    first_run, _ = stream(simulator, tmp_path, duration=1.0)
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        second_run, _ = stream(simulator, tmp_path, max_events=500)
    both = first_run + second_run
    first = index_of(timeline, "maillog", both[0], timeline.index_at(datetime.now(UTC) - timedelta(hours=1)))
    expected = [timeline.event("maillog", i)["id"] for i in range(first, first + len(both))]
    assert [r["id"] for r in both] == expected
    (told,) = [m for m in caplog.messages if "--max-events" in m]
    assert told.startswith("PoD maillog: stopped at --max-events; ")
    assert told.endswith(
        " more frames the API had sent were not taken, and its next session resumes after them"
    )


def test_the_live_stream_comes_back_after_a_server_restart_and_an_outage_past_its_retry_bound(
    timeline, tmp_path, caplog
):
    first = PodSimulator(timeline, TOKEN, CLUSTER, seed=3).start()
    first.stall_seconds = 0.005  # events come one by one: the outage falls in the middle
    port = first.address[1]
    out = io.BytesIO()
    client = PodStream(
        first.url,
        TOKEN,
        CLUSTER,
        "maillog",
        StdoutSink(out),
        FileCursorStore(tmp_path / "pod-maillog.json"),
        StreamSettings(
            dead_letter_dir=tmp_path / "dl",
            retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05),
            flush_every=10,
        ),
    )
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        running = threading.Thread(target=client.run, kwargs={"max_events": 400})
        running.start()
        try:
            wait_for(lambda: client.summary.events > 0)
            first.stop()  # a normal close (1001), then no API for longer than the retry bound
            wait_for(lambda: sum("no working connection after" in m for m in caplog.messages) >= 3)
            PodSimulator(timeline, TOKEN, CLUSTER, port=port, seed=4).start()  # and comes back
            running.join(60)
        finally:
            client.stop.set()
            running.join(30)
    assert client.summary.events == 400 and len(out.getvalue().splitlines()) == 400
    assert any(m.startswith("PoD maillog stream dropped (ConnectionClosedOK)") for m in caplog.messages)
    assert any(
        m.startswith("PoD maillog stream: no working connection after 3 tries") for m in caplog.messages
    )


def test_sessions_closed_at_once_are_retried_under_growing_delays(simulator, tmp_path, caplog):
    """A back end that is down behind an API that takes the handshake: each session closes at
    once. Counted as served, each reset the count, and the collector came back once a second
    for as long as it was down, "reconnect 1 of 19" told every time."""
    simulator.refuse_sessions = 4
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, summary = stream(simulator, tmp_path, max_events=50)
    told = [m.split(" in ")[0] for m in caplog.messages if "stream dropped" in m]
    assert told == [
        f"PoD maillog stream dropped (ConnectionClosedError); reconnect {n} of 19" for n in (1, 2, 3, 4)
    ]
    assert summary.reconnects == 4 and len(records) == 50


def test_handshakes_refused_by_a_busy_or_restarting_api_are_retried(simulator, tmp_path, caplog):
    """A load balancer answers 502 or 503 while the API behind it restarts, 429 while it is busy:
    each was taken for a refusal, and the live stream, which nothing restarts, stopped for good."""
    simulator.refuse_handshakes.extend([503, 502, 429])
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, summary = stream(simulator, tmp_path, max_events=50)
    told = [m.split(";")[0] for m in caplog.messages if "stream dropped" in m]
    assert told == [f"PoD maillog stream dropped (handshake refused with {s})" for s in (503, 502, 429)]
    assert summary.reconnects == 3 and len(records) == 50


def test_a_409_after_a_drop_is_retried_while_the_api_holds_the_dropped_session(simulator, tmp_path):
    """The API may not notice a dropped session at once and refuse the next handshakes with 409,
    as when another consumer holds the token: that stopped the collector at its first drop."""
    simulator.drop_every, simulator.linger_after_drop = 30, 2
    records, summary = stream(simulator, tmp_path, max_events=50)
    assert len(records) == len({record["id"] for record in records}) == 50
    assert summary.reconnects == 3  # the drop, then two handshakes refused with 409


def test_a_page_or_a_not_found_at_a_reconnect_is_retried_not_the_end_of_the_live_stream(
    simulator, tmp_path, caplog
):
    """A proxy's page (200) or a 404 from a load balancer between deployments, met at a
    reconnect: settings that served cannot be wrong, and the live stream, which nothing
    restarts under an agent's exec input, stopped for good."""
    simulator.drop_every = 30
    simulator.refuse_after_drop.extend([200, 404])
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, _ = stream(simulator, tmp_path, max_events=50)
    told = [m.split(";")[0] for m in caplog.messages if "handshake refused" in m]
    assert told == [f"PoD maillog stream dropped (handshake refused with {s})" for s in (200, 404)]
    assert len(records) == len({record["id"] for record in records}) == 50


def test_a_refused_token_at_a_reconnect_still_stops(simulator, tmp_path):
    simulator.drop_every = 30
    simulator.refuse_after_drop.append(401)
    with pytest.raises(ConfigError, match=r"refused the token \(401\)"):
        stream(simulator, tmp_path, max_events=50)


def test_a_409_at_the_first_handshake_is_still_a_refusal(simulator, tmp_path):
    simulator.refuse_handshakes.append(409)
    with pytest.raises(ConfigError, match=r"refused a second session for this token \(409"):
        stream(simulator, tmp_path, max_events=10)


def test_a_page_for_a_handshake_is_not_called_a_refusal_of_the_api(simulator, tmp_path):
    """A proxy's block page (200) was told as "the PoD log API refused the request (200)"."""
    simulator.refuse_handshakes.append(200)
    with pytest.raises(ConfigError, match=r"^the handshake was answered 200, not with a websocket: a proxy"):
        stream(simulator, tmp_path, max_events=10)


def test_a_wait_to_reconnect_that_would_outlast_duration_ends_with_it(tmp_path, caplog):
    """No API at all, and the first wait (30 s here; up to 60 s by default) past a one-second
    --duration: the run went on for the whole wait, then stopped without the try it waited for."""
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = StreamSettings(dead_letter_dir=tmp_path / "dl", retry=RetryPolicy(attempts=5, base_delay=30.0))
    client = maillog_client(f"ws://127.0.0.1:{port}/v1/stream", tmp_path, io.BytesIO(), settings)
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        summary = client.run(duration=1.0)
    assert summary.reconnects == 0
    assert [m for m in caplog.messages if "stream dropped" in m] == [
        "PoD maillog stream dropped (ConnectionRefusedError); --duration ends before the next try"
    ]


def test_events_the_output_does_not_confirm_are_held_until_it_does(simulator, tmp_path, caplog):
    """An agent restarting for longer than the forward output's retries: nothing is dropped."""
    simulator.stall_seconds = 0.002
    receiver = ForwardReceiver().start()
    client = PodStream(
        simulator.url,
        TOKEN,
        CLUSTER,
        "maillog",
        ForwardSink(
            "127.0.0.1", receiver.port, retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)
        ),
        FileCursorStore(tmp_path / "pod-maillog.json"),
        StreamSettings(dead_letter_dir=tmp_path / "dl", retry=FAST, flush_every=50),
    )
    with caplog.at_level(logging.ERROR, "proofpoint_shipper"):
        running = threading.Thread(target=client.run, kwargs={"max_events": 600})
        running.start()
        try:
            wait_for(lambda: receiver.counted > 0)
            receiver.stop()  # the agent goes away
            wait_for(lambda: sum("holding them" in m for m in caplog.messages) >= 3)
            receiver.start()  # and comes back on its port
            running.join(60)
        finally:
            client.stop.set()
            running.join(30)
            client.sink.close()
            receiver.stop()
    ids = [record["id"] for _, _, record in receiver.entries]
    assert len(set(ids)) == client.summary.events == 600  # resent chunks may repeat, none is missing
    assert any(m.startswith("PoD maillog: the output did not confirm 50 events") for m in caplog.messages)


def test_an_archive_backfill_whose_output_stays_away_stops_past_the_bound(simulator, tmp_path, caplog):
    """A backfill can be run again: it does not hold its events for good, as the live stream does."""
    receiver = ForwardReceiver().start()
    receiver.stop()  # nothing listens on its port
    sink = ForwardSink(
        "127.0.0.1", receiver.port, retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
    )
    client = PodStream(
        simulator.url,
        TOKEN,
        CLUSTER,
        "maillog",
        sink,
        FileCursorStore(tmp_path / "pod-maillog.json"),
        StreamSettings(dead_letter_dir=tmp_path / "dl", retry=FAST, flush_every=50),
    )
    since = datetime.now(UTC) - timedelta(hours=5)
    with caplog.at_level(logging.ERROR, "proofpoint_shipper"), pytest.raises(DeliveryError):
        client.run(since=since, until=since + timedelta(hours=1))
    assert sum("holding them" in m for m in caplog.messages) == FAST.attempts - 1


def test_a_second_consumer_gets_the_409_message(simulator, tmp_path):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        connect(f"{simulator.url}?cid={CLUSTER}&type=message", additional_headers=headers, close_timeout=0.5),
        pytest.raises(ConfigError, match="another consumer, for example your SIEM vendor, holds"),
    ):
        stream(simulator, tmp_path, max_events=5)


def test_a_wrong_token_is_refused_with_one_line(simulator, tmp_path):
    with pytest.raises(ConfigError, match=r"refused the token \(401\)"):
        stream(simulator, tmp_path, token="wrong", max_events=5)


def test_a_two_hour_outage_is_reported_and_backfilled_from_the_archive(tmp_path, caplog):
    timeline = Timeline(6, datetime.now(UTC) - timedelta(days=1), rate=1)
    last = datetime.now(UTC) - timedelta(hours=3)
    (tmp_path / "pod-maillog.json").write_text(json.dumps({"last_ts": last.isoformat(), "recent": []}))
    with PodSimulator(timeline, TOKEN, CLUSTER) as simulator:
        with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
            # The backfill below holds up to about 11,000 events (3 h from the rounded hour) before
            # it reaches the live ones: the window must hold them all, whatever the time of day.
            live, summary = stream(simulator, tmp_path, max_events=5, dedupe_window=20_000)
        gap_start, gap_end = (datetime.fromisoformat(t) for t in summary.gap)
        assert gap_start == last
        assert abs(gap_end - (datetime.now(UTC) - timedelta(hours=1))) < timedelta(minutes=1)
        assert any("can no longer be replayed live" in m and "--since" in m for m in caplog.messages)
        backfill, _ = stream(simulator, tmp_path, since=gap_start, until=gap_end, dedupe_window=20_000)
    hour = gap_start.replace(minute=0, second=0, microsecond=0)  # the archive rounds down to the hour
    first = timeline.index_at(hour)
    delivered_live = {r["id"] for r in live}  # the hour-rounded archive covers them: not sent again
    archived = (timeline.event("maillog", i)["id"] for i in range(first, first + len(backfill) + 5))
    expected = [i for i in archived if i not in delivered_live][: len(backfill)]
    assert [r["id"] for r in backfill] == expected  # from the rounded hour on, contiguous, each once
    assert event_time(backfill[-1]) >= gap_end - timedelta(seconds=2)  # the whole gap is covered


def test_a_backfill_keeps_a_killed_live_runs_mark_for_the_next_live_start(tmp_path, caplog):
    """The mark of a live run killed before its last save is told at the next live start; a
    backfill run in between on the same resume file wrote it away, and nothing was told."""
    timeline, since, until = _three_archived_hours(rate=0.2)
    unsaved_from = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    killed = {"type": "maillog", "last_ts": unsaved_from, "recent": [], "unsaved_from": unsaved_from}
    (tmp_path / "pod-maillog.json").write_text(json.dumps(killed))
    with PodSimulator(timeline, TOKEN, CLUSTER) as simulator:
        stream(simulator, tmp_path, since=since, until=until)
        assert json.loads((tmp_path / "pod-maillog.json").read_text())["unsaved_from"] == unsaved_from
        with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
            stream(simulator, tmp_path, max_events=5)
    assert any(f"sent it after {unsaved_from}" in m for m in caplog.messages)


def _three_archived_hours(rate: float = 1.0):
    """A timeline of `rate` events a second, and a backfill range of three whole hours of it."""
    timeline = Timeline(8, datetime.now(UTC) - timedelta(days=1), rate=rate)
    since = (datetime.now(UTC) - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
    return timeline, since, since + timedelta(hours=3)


def test_a_backfill_dropped_midway_goes_on_from_the_hour_it_reached_each_event_once(tmp_path):
    """The archive sends 8,500 events, then drops. Back from `since`, it sent the same 8,500
    again, and the 3,500 oldest, out of the 5,000 hashes kept, went out twice (and it dropped at
    the same place again, for ever). From the hour of the last event, the replay is under an
    hour: within the hashes kept."""
    timeline, since, until = _three_archived_hours()
    with PodSimulator(timeline, TOKEN, CLUSTER) as simulator:
        simulator.drop_every = 8_500
        total = timeline.index_at(until) - timeline.index_at(since)
        records, summary = stream(
            simulator, tmp_path, since=since, until=until, max_events=total, dedupe_window=5_000
        )
    first = timeline.index_at(since)
    assert [r["id"] for r in records] == [
        timeline.event("maillog", i)["id"] for i in range(first, first + total)
    ]
    assert summary.reconnects == 1


def test_a_backfill_run_again_goes_on_where_the_last_run_stopped(tmp_path):
    timeline, since, until = _three_archived_hours()
    with PodSimulator(timeline, TOKEN, CLUSTER) as simulator:
        first_run, _ = stream(
            simulator, tmp_path, since=since, until=until, max_events=8_000, dedupe_window=5_000
        )
        second_run, _ = stream(simulator, tmp_path, since=since, until=until, dedupe_window=5_000)
        other_range, _ = stream(
            simulator, tmp_path, since=since - timedelta(hours=1), until=until, max_events=10
        )
    first, total = timeline.index_at(since), timeline.index_at(until) - timeline.index_at(since)
    expected = [timeline.event("maillog", i)["id"] for i in range(first, first + total)]
    assert [r["id"] for r in first_run + second_run] == expected  # on from where it stopped, each once
    earlier = timeline.index_at(since - timedelta(hours=1))  # another range: from its own start
    assert [r["id"] for r in other_range] == [
        timeline.event("maillog", i)["id"] for i in range(earlier, earlier + 10)
    ]


def test_an_archive_beside_a_live_session_is_refused(simulator, tmp_path):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        connect(f"{simulator.url}?cid={CLUSTER}&type=maillog", additional_headers=headers, close_timeout=0.5),
        pytest.raises(ConfigError, match="409"),
    ):
        stream(
            simulator,
            tmp_path,
            since=datetime.now(UTC) - timedelta(hours=5),
            until=datetime.now(UTC) - timedelta(hours=4),
        )


def test_resent_events_are_removed(simulator, tmp_path):
    simulator.resend_rate = 0.3
    records, summary = stream(simulator, tmp_path, kind="message", max_events=400)
    assert summary.duplicates > 50
    assert len({r["guid"] for r in records}) == len(records) == 400


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "x", ""])
def test_a_ts_that_is_no_time_in_utc_is_none_not_an_error(ts):
    assert event_time({"ts": ts}) is None


def test_both_ts_spellings_parse_to_the_same_time():
    moment = datetime(2022, 2, 20, 8, 35, 0, 157994, tzinfo=UTC).astimezone()
    assert event_time({"ts": spell_ts(moment, colon=True)}) == event_time(
        {"ts": spell_ts(moment, colon=False)}
    )
    assert spell_ts(moment, colon=False)[-5] in "+-" and ":" not in spell_ts(moment, colon=False)[-5:]


def test_maillog_data_parsed_matches_the_gateway_parser(simulator, tmp_path):
    records, _ = stream(simulator, tmp_path, max_events=50)
    parser = GatewayParser(zone=UTC)
    for record in records:
        assert record["data_parsed"] == parser.parse(record["data"])
        assert record["data_parsed"]["stream"] == "gateway_sendmail" and "error" not in record["data_parsed"]
        original = {k: v for k, v in record.items() if k not in ("data_parsed", "eventType", "table")}
        assert set(original) == {"id", "ts", "data", "pps", "sm", "tls"}  # every field as sent


def test_an_event_with_half_an_emoji_is_kept_with_u_fffd_told_and_counted(simulator, tmp_path, caplog):
    """Text cut inside a surrogate pair: the event went to the dead letters whole; now only the
    half character is lost, once told and always counted."""
    simulator.bad_frames.extend(["lone_surrogate", "lone_surrogate"])  # the second is a resend
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        records, summary = stream(simulator, tmp_path, max_events=5)
    assert summary.bad == 0 and summary.replaced == 1 and summary.duplicates >= 1
    (kept,) = [record for record in records if record["id"] == "half-emoji"]
    assert kept["data"] == "Offer \ufffd"
    told = [message for message in caplog.messages if "lone UTF-16 surrogate" in message]
    assert told == [
        "PoD maillog: event half-emoji holds a lone UTF-16 surrogate escape, read as U+FFFD; "
        "kept so, and counted"
    ]


def test_a_frame_too_big_to_read_closes_the_connection_told_and_the_stream_goes_on(
    simulator, tmp_path, caplog
):
    """A frame is held whole before it can be checked; read without a bound, one frame the size
    of the machine's memory ended the collector."""
    simulator.bad_frames.extend(["oversized:600000", "oversized:2000000"])
    out = io.BytesIO()
    settings = StreamSettings(
        dead_letter_dir=tmp_path / "dl", retry=FAST, max_frame_bytes=500_000, max_receive_bytes=1_000_000
    )
    client = maillog_client(simulator.url, tmp_path, out, settings)
    with caplog.at_level(logging.WARNING, "proofpoint_shipper"):
        summary = client.run(max_events=20)
    assert summary.bad == 2 and summary.reconnects == 1
    assert len(out.getvalue().splitlines()) == 20
    (kept,) = (tmp_path / "dl" / "pod-maillog.ndjson").read_text().splitlines()
    assert json.loads(kept)["reason"].endswith("bytes is over the 500000-byte limit")
    assert any("a frame over 1000000 bytes came" in m for m in caplog.messages)


def test_bad_frames_are_counted_dead_lettered_and_the_stream_goes_on(simulator, tmp_path):
    simulator.bad_frames.extend(["not_json", "binary", "no_id", "oversized:5000000", "too_deep"])
    records, summary = stream(simulator, tmp_path, max_events=20)
    assert summary.bad == 5 and len(records) == 20
    entries = [
        json.loads(line)
        for line in (tmp_path / "dead-letter" / "pod-maillog.ndjson").read_text().splitlines()
    ]
    reasons = [entry["reason"] for entry in entries]
    assert reasons[0].startswith("not JSON") and reasons[1] == "binary frame"
    assert reasons[2] == "maillog event without id" and "over the 4194304-byte limit" in reasons[3]
    assert entries[1]["frame_base64"] and entries[3]["bytes"] > 5_000_000
    assert reasons[4].startswith("an event that cannot be written as JSON")
    dead_letters = tmp_path / "dead-letter" / "pod-maillog.ndjson"
    assert stat.S_IMODE(dead_letters.stat().st_mode) == 0o600  # mail data: readable by our user only


def test_a_flood_of_bad_frames_is_all_kept_but_told_ten_at_a_time(simulator, tmp_path, caplog):
    simulator.bad_frames.extend(["not_json"] * 250)
    with caplog.at_level(logging.ERROR, "proofpoint_shipper"):
        _, summary = stream(simulator, tmp_path, max_events=20)
    dead_letters = (tmp_path / "dead-letter" / "pod-maillog.ndjson").read_text().splitlines()
    assert summary.bad == len(dead_letters) == 250
    told = [m for m in caplog.messages if "; kept in " in m]
    assert len(told) == 10 and all(m.startswith("PoD maillog: not JSON") for m in told)
    (held,) = [m for m in caplog.messages if "more bad frames" in m]
    assert held.startswith("PoD maillog: 240 more bad frames in ") and held.endswith("pod-maillog.ndjson")


def test_the_resume_point_is_saved_after_each_flush(simulator, tmp_path):
    records, _ = stream(simulator, tmp_path, max_events=250)
    state = json.loads((tmp_path / "pod-maillog.json").read_text())
    assert state["last_ts"] == records[-1]["ts"]
    assert len(state["recent"]) == 250
    assert state["type"] == "maillog"  # the message stream refuses this file as its own


def test_stop_closes_flushes_and_saves(simulator, tmp_path):
    out = io.BytesIO()
    stop = StopEvent()
    client = maillog_client(
        simulator.url,
        tmp_path,
        out,
        StreamSettings(dead_letter_dir=tmp_path / "dl", retry=FAST, flush_every=10_000),
        stop,
    )
    threading.Timer(1.0, stop.set).start()
    summary = client.run()
    lines = out.getvalue().splitlines()
    assert summary.events == len(lines) > 0  # nothing held back at the stop
    assert json.loads((tmp_path / "c.json").read_text())["last_ts"] == json.loads(lines[-1])["ts"]
