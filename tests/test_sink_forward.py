"""ForwardSink against a real msgpack forward receiver on 127.0.0.1: acks, restarts, shared keys."""

import socket
import struct
import threading
import time

import msgpack
import pytest
from fluent.sender import EventTime

from proofpoint_shipper.errors import ConfigError, DeliveryError, SharedKeyRefused
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.sinks.forward import DEFAULT_CHUNK_BYTES, ForwardSink
from tests.certificates import self_signed
from tests.forward_receiver import ForwardReceiver

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1)
TABLE = "proofpoint_tap_clicks_blocked"


def clicks(start: int, n: int) -> list[dict]:
    return [
        {"clickTime": f"2021-11-29T19:46:{s % 60:02}.123456+00:00", "id": f"c{s}"}
        for s in range(start, start + n)
    ]


def test_flush_returns_once_every_chunk_is_acked(receiver):
    sink = ForwardSink("127.0.0.1", receiver.port, retry=FAST, chunk_records=4)
    sink.write(TABLE, clicks(0, 10))
    sink.write(
        "proofpoint_gateway_sendmail_logs", [{"time": "2022-02-20T08:35:00.157994-06:00", "text": "x"}]
    )
    sink.flush()
    assert len(receiver.chunks) == 4  # 10 clicks in chunks of 4, and one gateway record
    tags = [tag for tag, _, _ in receiver.entries]
    assert (
        tags.count("proofpoint.tap.clicks_blocked") == 10 and tags.count("proofpoint.gateway.sendmail") == 1
    )
    assert [record["id"] for tag, _, record in receiver.entries if tag.startswith("proofpoint.tap")] == [
        f"c{n}" for n in range(10)
    ]
    for _, _, options in receiver.chunks:
        assert isinstance(options["chunk"], str) and options["size"] >= 1
    sink.close()


def test_times_are_event_times_that_fluent_logger_decodes():
    receiver = ForwardReceiver().start()
    try:
        sink = ForwardSink("127.0.0.1", receiver.port, retry=FAST)
        sink.write(TABLE, clicks(5, 1))
        sink.flush()
        ((_, time, record),) = receiver.entries
        assert isinstance(time, EventTime)  # decoded as fluent-logger's own type
        assert time == EventTime(1638215165, 123456000)  # 2021-11-29T19:46:05.123456Z
        assert record == clicks(5, 1)[0]
        sink.close()
    finally:
        receiver.stop()


def test_a_time_outside_what_event_time_holds_is_sent_as_of_now(receiver):
    odd = [
        "0001-01-01T00:00:00+14:00",
        "1969-12-31T23:59:59Z",
        "2106-02-08T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ]
    sink = ForwardSink("127.0.0.1", receiver.port, retry=FAST)
    before = time.time()
    sink.write(TABLE, [{"clickTime": when, "id": n} for n, when in enumerate(odd)])
    sink.flush()
    sink.close()
    assert [record["clickTime"] for _, _, record in receiver.entries] == odd  # kept as written
    for _, sent, _ in receiver.entries:
        assert before - 1 <= struct.unpack(">I", sent.data[:4])[0] <= time.time() + 1


def test_chunks_stay_under_the_byte_bound_fluent_bit_accepts(receiver, caplog):
    """Fluent Bit's forward input drops a connection whose message is over 6,144,000 bytes."""
    big = [{"clickTime": "2021-11-29T19:46:00Z", "id": n, "pad": "x" * 100_000} for n in range(100)]
    sink = ForwardSink("127.0.0.1", receiver.port, retry=FAST)
    sink.write(TABLE, big)
    sink.flush()
    assert [record["id"] for _, _, record in receiver.entries] == list(range(100))  # all, in order
    sizes = [len(msgpack.packb([tag, entries, options])) for tag, entries, options in receiver.chunks]
    assert len(sizes) > 2 and max(sizes) <= DEFAULT_CHUNK_BYTES
    lone = ForwardSink("127.0.0.1", receiver.port, retry=FAST, chunk_bytes=50_000)
    lone.write(TABLE, big[:1])  # one record over the bound: sent alone, and said so
    lone.flush()
    assert len(receiver.entries) == 101 and "chunk size; sent alone" in caplog.text
    sink.close()
    lone.close()


def test_no_ack_means_delivery_error_and_nothing_is_dropped():
    silent = ForwardReceiver(ack=False).start()
    port = silent.port
    sink = ForwardSink("127.0.0.1", port, retry=FAST, timeout=0.3)
    sink.write(TABLE, clicks(0, 3))
    with pytest.raises(DeliveryError, match="did not acknowledge 1 chunks"):
        sink.flush()
    silent.stop()
    acking = ForwardReceiver().start(port)
    try:
        sink.flush()  # the unacked chunk is still ours and goes again
        assert [r["id"] for _, _, r in acking.entries] == ["c0", "c1", "c2"]
        sink.close()
    finally:
        acking.stop()


def test_reconnects_after_the_receiver_restarts_with_nothing_lost():
    first = ForwardReceiver().start()
    port = first.port
    sink = ForwardSink("127.0.0.1", port, retry=FAST)
    sink.write(TABLE, clicks(0, 5))
    sink.flush()
    first.stop()  # the agent restarts; our open connection is now dead
    second = ForwardReceiver().start(port)
    try:
        sink.write(TABLE, clicks(5, 5))
        sink.flush()
        received = [r["id"] for _, _, r in first.entries + second.entries]
        assert sorted(received, key=lambda i: int(i[1:])) == [f"c{n}" for n in range(10)]
        assert {r["id"] for _, _, r in second.entries} >= {f"c{n}" for n in range(5, 10)}
        sink.close()
    finally:
        second.stop()


def test_receiver_down_past_the_retries_is_a_delivery_error():
    gone = ForwardReceiver().start()
    port = gone.port
    gone.stop()
    sink = ForwardSink("127.0.0.1", port, retry=FAST)
    sink.write(TABLE, clicks(0, 1))
    with pytest.raises(DeliveryError, match=f"127.0.0.1:{port} did not acknowledge"):
        sink.flush()


def test_shared_key_handshake():
    guarded = ForwardReceiver(shared_key="s3cret").start()
    try:
        sink = ForwardSink("127.0.0.1", guarded.port, shared_key="s3cret", retry=FAST)
        sink.write(TABLE, clicks(0, 2))
        sink.flush()
        assert len(guarded.entries) == 2
        sink.close()
    finally:
        guarded.stop()


def test_a_refused_shared_key_is_a_clear_error_without_retries():
    guarded = ForwardReceiver(shared_key="s3cret").start()
    try:
        sink = ForwardSink("127.0.0.1", guarded.port, shared_key="wrong", retry=FAST)
        sink.write(TABLE, clicks(0, 1))
        with pytest.raises(SharedKeyRefused, match="refused our shared key: shared key mismatch"):
            sink.flush()
        assert guarded.entries == []
    finally:
        guarded.stop()


def test_a_pong_whose_hostname_is_no_string_is_a_refusal_not_a_crash():
    """The receiver's hostname goes into the digest we check: an int there raised AttributeError."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        answered = threading.Thread(target=_answer_with_a_bad_pong, args=(server,), daemon=True)
        answered.start()
        sink = ForwardSink("127.0.0.1", server.getsockname()[1], shared_key="s3cret", retry=FAST)
        sink.write(TABLE, clicks(0, 1))
        with pytest.raises(SharedKeyRefused, match="does not know our shared key"):
            sink.flush()
        answered.join(timeout=10)


def _answer_with_a_bad_pong(server: socket.socket) -> None:
    connection, _ = server.accept()
    with connection:
        connection.sendall(msgpack.packb(["HELO", {"nonce": b"n" * 16, "auth": b"", "keepalive": True}]))
        connection.recv(4096)  # the PING
        connection.sendall(msgpack.packb(["PONG", True, "", 42, "digest"]))
        connection.recv(4096)  # until the sink hangs up


def test_tls_with_a_verified_receiver(tmp_path):
    import ssl

    cert, key = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    secure = ForwardReceiver(tls=server_context, shared_key="k").start()
    try:
        sink = ForwardSink(
            "127.0.0.1",
            secure.port,
            tls=ssl.create_default_context(cafile=str(cert)),
            shared_key="k",
            retry=FAST,
        )
        sink.write(TABLE, clicks(0, 3))
        sink.flush()
        assert [r["id"] for _, _, r in secure.entries] == ["c0", "c1", "c2"]
        sink.close()
        untrusting = ForwardSink("127.0.0.1", secure.port, tls=ssl.create_default_context(), retry=FAST)
        untrusting.write(TABLE, clicks(3, 1))
        with pytest.raises(ConfigError, match="presented a certificate we do not trust: self-signed"):
            untrusting.flush()  # a receiver we cannot verify gets nothing, and we do not retry
    finally:
        secure.stop()
