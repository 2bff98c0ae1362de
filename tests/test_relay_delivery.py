"""The relay's delivery loop in this process, against real forward peers on 127.0.0.1.

Mostly run in-process so the upstream's retry policy can be one attempt: the relay's own retry
loop is what is under test, and the command's five-attempt default would make the test slow.
"""

import asyncio
import logging
import socket
import threading
import time
from zoneinfo import ZoneInfo

from fluent.sender import EventTime

from proofpoint_shipper.fluent import codec, protocol
from proofpoint_shipper.fluent import command as relay_command
from proofpoint_shipper.fluent.delivery_thread import DeliveryThread
from proofpoint_shipper.fluent.relay import ForwardRelay, RelaySettings
from proofpoint_shipper.fluent.table_upstream import TableUpstream
from proofpoint_shipper.gateway.parser import GatewayParser
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.sinks.forward import ForwardSink
from tests.conftest import wait_for
from tests.forward_receiver import ForwardReceiver
from tests.test_relay import FILTER_LINE, SENDMAIL_LINE, start_relay


class RelayInThread:
    """A ForwardRelay on its own event loop in a thread, started and stopped from the test."""

    def __init__(self, upstream, **settings):
        parser = GatewayParser(zone=ZoneInfo("UTC"))
        self.relay = ForwardRelay(parser, upstream, RelaySettings(port=0, **settings))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever)

    def __enter__(self) -> int:
        self.thread.start()
        _, port = asyncio.run_coroutine_threadsafe(self.relay.start(), self.loop).result(10)
        return port

    def __exit__(self, *exc_info) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_delivery_retried_after_upstream_was_down_is_sent_once():
    receiver = ForwardReceiver().start()
    upstream_port = receiver.port
    receiver.stop()  # upstream is down when the chunk arrives
    sink = ForwardSink("127.0.0.1", upstream_port, retry=RetryPolicy(attempts=1), timeout=1.0)
    entries = [
        (EventTime(1645367700, 5), {"log": FILTER_LINE}),
        (EventTime(1645367701, 6), {"log": SENDMAIL_LINE}),
    ]
    relay = RelayInThread(sink, retry_seconds=0.1)
    with relay as port, socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="once"))
        client.settimeout(1.0)
        try:
            early = client.recv(4096)  # several delivery attempts fail meanwhile
        except TimeoutError:
            early = None
        assert early is None
        receiver.start(upstream_port)
        client.settimeout(30)
        unpacker = protocol.unpacker()
        unpacker.feed(client.recv(4096))
        assert next(unpacker) == {"ack": "once"}
    sink.close()
    receiver.stop()
    assert sorted(record["log"] for _, _, record in receiver.entries) == sorted([FILTER_LINE, SENDMAIL_LINE])
    times = sorted(time for _, time, _ in receiver.entries)
    assert times == [EventTime(1645367700, 5), EventTime(1645367701, 6)]


def test_a_handshake_of_garbage_too_much_or_nothing_closes_with_a_logged_reason(caplog):
    unused = ForwardSink("127.0.0.1", 9, retry=RetryPolicy(attempts=1))  # no chunk gets this far
    with RelayInThread(unused, shared_key="key", handshake_seconds=0.5) as port:
        for sent, reason in (
            (b"\xc1\xc1", "not a PING: a byte that starts no msgpack object"),
            (b"\xdb\x00\x10\x00\x00" + b"x" * 70_000, "not a PING: BufferFull"),  # a 1 MiB str
            (b"\x96\xa4PING", "no PING within 0.5 s of our HELO"),  # and then silence
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                unpacker = protocol.unpacker()
                unpacker.feed(client.recv(4096))
                assert next(unpacker)[0] == "HELO"
                client.sendall(sent)
                assert client.recv(4096) == b""  # closed by the relay
            assert any(reason in message for message in caplog.messages), (reason, caplog.messages)


class FaultyUpstream:
    """Fault injection, not a stand-in for a peer: an upstream that fails in a way no real one
    should (a bug), to check that the relay does not go on accepting data it can never ack."""

    def stage(self, tag, entries):
        pass

    def flush(self):
        raise RuntimeError("a bug in delivery")

    def abandon(self):
        pass


def test_delivery_stopped_by_a_fault_is_logged_and_marks_the_relay_broken(caplog):
    relay = RelayInThread(FaultyUpstream(), drain_seconds=0.5)
    entries = [(EventTime(1645367700, 5), {"log": FILTER_LINE})]
    with relay as port, socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="lost?"))
        future = asyncio.run_coroutine_threadsafe(relay.relay.broken.wait(), relay.loop)
        future.result(10)  # raises TimeoutError if delivery died silently
    assert any(
        "delivery stopped on an unexpected error" in m and "a bug in delivery" in m for m in caplog.messages
    )


def test_the_relay_command_stops_with_exit_code_1_when_delivery_broke(caplog):
    parser = GatewayParser(zone=ZoneInfo("UTC"))
    relay = ForwardRelay(parser, FaultyUpstream(), RelaySettings(port=0, drain_seconds=0.5))

    def send_a_chunk():
        while relay._server is None:
            time.sleep(0.01)
        port = relay._server.sockets[0].getsockname()[1]
        entries = [(EventTime(1645367700, 5), {"log": FILTER_LINE})]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="c"))
            client.recv(4096)  # closed at the relay's stop, unacked

    sender = threading.Thread(target=send_a_chunk)
    sender.start()
    assert asyncio.run(asyncio.wait_for(relay_command._serve(relay), 30)) == 1
    sender.join(10)


def test_an_upstream_that_refuses_our_shared_key_stops_the_relay_with_its_reason(tmp_path):
    """No retry fixes a wrong key: the relay stops by itself, exit code 2 and the reason in one
    line, as for a setting refused at start; before, "an unexpected error" and a traceback."""
    receiver = ForwardReceiver(shared_key="right-key").start()
    key = tmp_path / "upstream.key"
    key.write_text("wrong-key\n")
    relay, port = start_relay(receiver.port, "--drain-seconds", "1", "--upstream-shared-key-file", str(key))
    with relay:
        try:
            entries = [(EventTime(1645367700, 5), {"log": FILTER_LINE})]
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="c"))
                assert client.recv(4096) == b""  # closed at the relay's stop, unacked: sent again later
            assert relay.wait(timeout=60) == 2
            stderr = relay.stderr.read().decode()
        finally:
            relay.kill()
            receiver.stop()
    reason = "forward receiver refused our shared key: shared key mismatch"
    assert f"ERROR relay: delivery stopped: {reason}" in stderr
    assert stderr.endswith(f"ppship: error: {reason}\n") and "Traceback" not in stderr
    assert receiver.counted == 0


def test_records_of_no_table_are_logged_once_a_minute_not_per_delivery(caplog):
    upstream = TableUpstream(sink=None)  # records of no table never reach the sink
    with caplog.at_level(logging.INFO, "proofpoint_shipper"):
        for _ in range(50):  # a busy gateway: some lines of other programs in every delivery
            upstream.stage("proofpoint.gateway.other", [[EventTime(1, 0), {"log": "x"}]] * 3)
    lines = [m for m in caplog.messages if "belong to no table" in m]
    assert lines == ["relay: 3 records tagged proofpoint.gateway.other belong to no table; not written"]


def test_the_delivery_thread_runs_calls_in_order_and_can_be_left_in_a_call_that_hangs():
    deliveries = DeliveryThread("upstream-test")
    release = threading.Event()
    first = deliveries.submit(lambda: "first")
    failing = deliveries.submit(lambda: 1 / 0)
    hanging = deliveries.submit(release.wait)
    queued = deliveries.submit(lambda: "never run")
    assert first.result(10) == "first"
    assert isinstance(failing.exception(10), ZeroDivisionError)  # handed over, the thread goes on
    wait_for(hanging.running, seconds=10)
    deliveries.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    assert not deliveries.finished_within(0.2)  # the stop leaves it; a daemon, it ends with us
    release.set()
    assert deliveries.finished_within(10) and hanging.result() is True
