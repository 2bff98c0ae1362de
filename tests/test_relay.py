"""`ppship relay` as a real process between real forward clients and a real receiver."""

import contextlib
import gzip
import http.server
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import pytest
from fluent.sender import EventTime, FluentSender

from proofpoint_shipper.errors import SharedKeyRefused
from proofpoint_shipper.fluent import codec, protocol
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.sinks.forward import ForwardSink
from tests.certificates import self_signed
from tests.conftest import golden_lines, one_error_line, process_alive, run_ppship, wait_for
from tests.forward_receiver import ForwardReceiver
from tests.test_cli_ship import LOCAL_ENV
from tests.test_codec import fluentd_frame

FILTER_LINE = (
    "2022-02-20T08:35:00.157994-06:00 myserver123 filter_instance1[21074]: rprt s=3ebnb6gs7y "
    "mod=session cmd=disconnect"
)
SENDMAIL_LINE = "Feb  3 08:35:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"


PPSHIP_RELAY = [sys.executable, "-m", "proofpoint_shipper", "relay", "--timezone", "UTC"]


def start_relay(upstream_port: int | None, *extra: str, env=None) -> tuple[subprocess.Popen, int]:
    """The real relay command; upstream_port None leaves the output to `extra`."""
    upstream = ["--upstream", f"127.0.0.1:{upstream_port}"] if upstream_port is not None else []
    command = [
        sys.executable,
        "-m",
        "proofpoint_shipper",
        "relay",
        "--listen",
        "127.0.0.1:0",
        *upstream,
        "--timezone",
        "UTC",
        *extra,
    ]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    port = int(re.search(rb"listening on 127\.0\.0\.1:(\d+)", relay.stdout.readline()).group(1))
    return relay, port


def stop_relay(relay: subprocess.Popen) -> bytes:
    relay.send_signal(signal.SIGTERM)
    _, stderr = relay.communicate(timeout=60)
    assert relay.returncode == 0, stderr.decode()[-1000:]
    return stderr


@pytest.fixture
def pipeline():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    yield receiver, port
    stop_relay(relay)
    receiver.stop()


def send_chunk(port: int, mode: str, entries, chunk="chunk-1", timeout=10.0):
    """Send one frame of our encoder's; the relay's reply, as `send_raw` gives it."""
    return send_raw(port, codec.encode(mode, "gateway.raw", entries, chunk=chunk), timeout)


def send_raw(port: int, frame: bytes, timeout=10.0, host="127.0.0.1"):
    """Send these bytes and return the relay's reply (None when no ack came within the timeout)."""
    with socket.create_connection((host, port), timeout=timeout) as client:
        client.sendall(frame)
        unpacker = protocol.unpacker()
        try:
            while True:
                data = client.recv(4096)
                if not data:
                    return None
                unpacker.feed(data)
                for reply in unpacker:
                    return reply
        except TimeoutError:
            return None


def test_fluent_logger_message_mode_is_parsed_and_retagged(pipeline):
    receiver, port = pipeline
    sender = FluentSender("gateway", host="127.0.0.1", port=port, nanosecond_precision=True)
    assert sender.emit_with_time("raw", EventTime(1645367700, 157994000), {"log": FILTER_LINE})
    assert sender.emit_with_time("raw", EventTime(1645367701, 5), {"message": SENDMAIL_LINE})
    sender.close()
    wait_for(lambda: len(receiver.entries) == 2, seconds=30)
    (tag1, time1, rec1), (tag2, time2, rec2) = receiver.entries
    assert (tag1, tag2) == ("proofpoint.gateway.filter", "proofpoint.gateway.sendmail")
    assert (time1, time2) == (EventTime(1645367700, 157994000), EventTime(1645367701, 5))  # original times
    assert rec1["log"] == FILTER_LINE and rec1["fields"]["cmd"] == "disconnect"
    assert rec2["qid"] == "w3HMWjG3039079" and rec2["time"].endswith("-02-03T08:35:00.000000+00:00")


def test_records_a_syslog_input_took_apart_are_told_once_in_the_log_and_on_each_record():
    """Fluent Bit's syslog-rfc3164 parser keeps the program under `ident` and only the text after
    the header under `message`: those lines would go to no table, and nothing would say why."""
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    taken_apart = {"pri": "22", "time": "Feb  3 08:35:00", "host": "mx1", "ident": "sendmail", "pid": "1"}
    try:
        sender = FluentSender("gateway", host="127.0.0.1", port=port, nanosecond_precision=True)
        for n in range(3):
            assert sender.emit("raw", {**taken_apart, "message": f"w3HMWjG303907{n}: to=<a@b>, stat=Sent"})
        sender.close()
        wait_for(lambda: len(receiver.entries) == 3, seconds=30)
    finally:
        stderr = stop_relay(relay).decode()
        receiver.stop()
    told = "the agent's syslog input took the line apart (its program is under ident)"
    assert all(record["error"].startswith(told) for _, _, record in receiver.entries)
    assert {tag for tag, _, _ in receiver.entries} == {"proofpoint.gateway.other"}
    assert stderr.count(told) == 1


def test_a_line_sent_as_bytes_or_with_its_line_terminator_is_parsed(pipeline):
    receiver, port = pipeline
    entries = [(1645367700, {"log": FILTER_LINE.encode()}), (1645367701, {"log": SENDMAIL_LINE + "\r\n"})]
    assert send_chunk(port, "forward", entries) == {"ack": "chunk-1"}
    (_, _, as_bytes), (_, _, with_crlf) = receiver.entries
    assert as_bytes["raw"] == FILTER_LINE and as_bytes["fields"]["cmd"] == "disconnect"
    assert with_crlf["raw"] == SENDMAIL_LINE and "error" not in with_crlf


@pytest.mark.parametrize("mode", ["forward", "packed", "compressed"])
def test_our_encoder_in_every_batched_mode_is_acked_after_upstream(pipeline, mode):
    receiver, port = pipeline
    lines = [line for line in golden_lines() if line][::2]  # every stream, bad lines included
    entries = [(EventTime(1645367700 + n, n), {"log": line}) for n, line in enumerate(lines)]
    assert send_chunk(port, mode, entries, chunk=f"c-{mode}") == {"ack": f"c-{mode}"}
    assert [record["log"] for _, _, record in receiver.entries] == lines  # by the time of the ack
    assert [time for _, time, _ in receiver.entries] == [time for time, _ in entries]
    assert {tag for tag, _, _ in receiver.entries} == {
        "proofpoint.gateway.filter",
        "proofpoint.gateway.sendmail",
        "proofpoint.gateway.other",
    }


@pytest.mark.parametrize("compressed", [False, True], ids=["forward", "compressed"])
def test_fluent_bit_5_events_with_metadata_are_relayed_as_plain_entries(pipeline, compressed):
    """Fluent Bit 5.0.4 and later sends [[time, {metadata}], record] by default (forward
    protocol v1.5); what goes upstream is [time, record], which every receiver reads."""
    receiver, port = pipeline
    times = [EventTime(1645367700, 157994000), EventTime(1645367701, 5)]
    events = [[[times[0], {}], {"log": FILTER_LINE}], [[times[1], {}], {"log": SENDMAIL_LINE}]]
    options = {"size": 2, "chunk": "fb5", "fluent_signal": 0}
    if compressed:
        packed = b"".join(msgpack.packb(event, use_bin_type=True) for event in events)
        message = ["gateway.raw", gzip.compress(packed), {**options, "compressed": "gzip"}]
    else:
        message = ["gateway.raw", events, options]
    assert send_raw(port, msgpack.packb(message, use_bin_type=True)) == {"ack": "fb5"}
    assert [(tag, time) for tag, time, _ in receiver.entries] == [
        ("proofpoint.gateway.filter", times[0]),
        ("proofpoint.gateway.sendmail", times[1]),
    ]
    assert [record["raw"] for _, _, record in receiver.entries] == [FILTER_LINE, SENDMAIL_LINE]
    assert not any("fluent_metadata" in record for _, _, record in receiver.entries)


def test_fluentd_packed_entries_sent_as_a_msgpack_str_are_relayed(pipeline):
    """Fluentd's out_forward writes PackedForward entries as str32, its option `compressed` as
    "text" or "gzip", and its chunk id in base64 with a line break."""
    receiver, port = pipeline
    times = [EventTime(1645367700, 157994000), EventTime(1645367701, 5)]
    lines = [FILTER_LINE, SENDMAIL_LINE]
    packed = b"".join(
        msgpack.packb([time, {"message": line}], use_bin_type=True)
        for time, line in zip(times, lines, strict=True)
    )
    for compression, entries in (("text", packed), ("gzip", gzip.compress(packed))):
        options = {"size": 2, "compressed": compression, "chunk": "Y2h1bmsx\n"}
        assert send_raw(port, fluentd_frame("gateway.raw", entries, options)) == {"ack": "Y2h1bmsx\n"}
    assert [(time, record["raw"]) for _, time, record in receiver.entries] == list(
        zip(times, lines, strict=True)
    ) * 2


def test_no_ack_while_upstream_is_down_and_nothing_lost_when_it_returns():
    silent = ForwardReceiver(ack=False).start()
    port_up = silent.port
    relay, port = start_relay(port_up, "--upstream-timeout", "0.3")
    try:
        entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
        with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
            client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="held"))
            client.settimeout(1.5)
            with pytest.raises(TimeoutError):
                client.recv(4096)  # upstream has not acked: neither do we
            silent.stop()
            acking = ForwardReceiver().start(port_up)  # upstream comes back
            client.settimeout(60)
            unpacker = protocol.unpacker()
            unpacker.feed(client.recv(4096))
            assert next(unpacker) == {"ack": "held"}
        assert [record["log"] for _, _, record in acking.entries] == [FILTER_LINE]
        acking.stop()
    finally:
        stop_relay(relay)


def test_tls_clients_are_served_and_a_plain_one_is_told_in_the_log(tmp_path):
    cert, key = self_signed(tmp_path)
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        secure = ForwardSink("127.0.0.1", port, tls=ssl.create_default_context(cafile=str(cert)))
        secure.write_entries("gateway.raw", [[EventTime(1645367700, 7), {"log": FILTER_LINE}]])
        secure.flush()  # acked by the relay once the receiver acked: over TLS both ways
        secure.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:  # a TCP health check
            pass
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:  # TLS left off
            plain.sendall(codec.encode("forward", "gateway.raw", [(EventTime(1645367700, 8), {"log": "x"})]))
            assert plain.recv(4096) == b""  # closed
        untrusting = ssl.create_default_context()
        untrusting.check_hostname, untrusting.verify_mode = False, ssl.CERT_NONE
        tls = untrusting.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        with tls, socket.socket(fileno=os.dup(tls.fileno())) as under:  # the TCP stream beneath TLS
            under.settimeout(10)  # the shared descriptor is non-blocking, for the timeout of `tls`
            under.sendall(b"\x17\x03\x03\x00\x20" + b"G" * 32)  # a record no key decrypts
            while under.recv(4096):  # the relay's TLS alert, then the close
                pass
    finally:
        stderr = stop_relay(relay).decode()
        receiver.stop()
    assert [(tag, record["raw"]) for tag, _, record in receiver.entries] == [
        ("proofpoint.gateway.filter", FILTER_LINE)
    ]
    closed = [line.split(": ", 2)[-1] for line in stderr.splitlines() if "closing the connection" in line]
    assert closed == [  # the health check: no line
        "TLS handshake failed: WRONG_VERSION_NUMBER (no TLS: the client's TLS is off)",
        "TLS error: DECRYPTION_FAILED_OR_BAD_RECORD_MAC",
    ]
    assert "Traceback" not in stderr


def test_an_upstream_whose_certificate_a_private_ca_signed_is_verified_with_upstream_ca(tmp_path):
    cert, key = self_signed(tmp_path)  # the agent's own CA, which the system does not trust
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    receiver = ForwardReceiver(tls=server_context).start()
    try:
        relay, port = start_relay(receiver.port, "--upstream-ca", str(cert))
        try:
            send_chunk(port, "forward", [(EventTime(1645367700, 7), {"log": FILTER_LINE})])
        finally:
            stop_relay(relay)
        assert [record["raw"] for _, _, record in receiver.entries] == [FILTER_LINE]

        # The system's CAs only; delivery stops at once, and the relay with it, without a drain.
        relay, port = start_relay(receiver.port, "--upstream-tls", "--drain-seconds", "600")
        assert send_chunk(port, "forward", [(EventTime(1645367700, 8), {"log": "x"})]) is None  # no ack
        _, stderr = relay.communicate(timeout=60)
    finally:
        receiver.stop()
    assert relay.returncode == 2
    assert "Traceback" not in stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == (
        f"ppship: error: forward receiver 127.0.0.1:{receiver.port} presented a certificate we do not "
        "trust: self-signed certificate; give the CA that signed it with --upstream-ca"
    )
    assert len(receiver.entries) == 1

    missing = run_ppship("relay", "--upstream", "127.0.0.1:1", "--upstream-ca", str(tmp_path / "gone.pem"))
    assert one_error_line(missing) == (
        f"ppship: error: --upstream-ca {tmp_path / 'gone.pem'} cannot be used as a CA bundle: "
        "No such file or directory"
    )


@pytest.mark.parametrize(
    "listen, key, told",
    [("0.0.0.0:0", False, True), ("0.0.0.0:0", True, False), ("localhost:0", False, False)],
    ids=["all addresses, no key", "all addresses, a key", "loopback"],
)
def test_a_relay_other_hosts_can_reach_without_a_shared_key_is_told_at_start(listen, key, told, tmp_path):
    """Any host reaching it could write lines into the gateway tables of a security data lake."""
    (tmp_path / "key").write_text("k\n")
    extra = ["--shared-key-file", str(tmp_path / "key")] if key else []
    command = [*PPSHIP_RELAY, "--listen", listen, "--upstream", "127.0.0.1:1", *extra]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    port = re.search(rb"listening on [\d.]+:(\d+)", relay.stdout.readline()).group(1).decode()
    warnings = [line for line in stop_relay(relay).decode().splitlines() if "WARNING" in line]
    expected = (
        f"relay: listening on 0.0.0.0:{port} with no --shared-key-file: any host that reaches the "
        "port can write gateway lines into the data lake"
    )
    assert [expected in line for line in warnings] == ([True] if told else [])


# The relay with an open-file limit of its own, set in the child (preexec_fn is not safe beside
# the servers' threads in the test process).
_LIMITED_FILES = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
sys.argv = ["ppship", *sys.argv[3:]]
runpy.run_module("proofpoint_shipper", run_name="__main__")
"""


def _relay_with_file_limit(upstream_port: int, soft: int, hard: int) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-c", _LIMITED_FILES, str(soft), str(hard), "relay", "--listen", "127.0.0.1:0"]
    command += ["--upstream", f"127.0.0.1:{upstream_port}", "--timezone", "UTC"]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return relay, int(re.search(rb"listening on 127\.0\.0\.1:(\d+)", relay.stdout.readline()).group(1))


def _idle_connections(port: int, count: int) -> list[socket.socket]:
    """Connections that send nothing; the kernel completes them whether or not the relay accepts."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


@pytest.mark.parametrize("hard", [40, 4096], ids=["hard limit reached", "soft limit raised"])
def test_a_relay_out_of_file_descriptors_says_so_in_one_line_and_serves_once_they_free(hard):
    """systemd starts services with a soft limit of 1024 open files; each client holds one."""
    receiver = ForwardReceiver().start()
    relay, port = _relay_with_file_limit(receiver.port, 40, hard)
    try:
        idle = _idle_connections(port, 60)
        time.sleep(1.5)  # the relay tries to accept them all
        for connection in idle:
            connection.close()
        reply = send_chunk(port, "forward", [(EventTime(1645367700, 7), {"log": FILTER_LINE})], timeout=30)
    finally:
        stderr = stop_relay(relay).decode()
        receiver.stop()
    assert reply == {"ack": "chunk-1"}
    assert "Traceback" not in stderr
    told = [line for line in stderr.splitlines() if "cannot accept new connections" in line]
    if hard == 40:  # asyncio logged a traceback per failed accept, hundreds a second
        assert len(told) == 1
        assert "(Too many open files, open-file limit 40): they wait until connections close" in told[0]
    else:
        assert told == []  # the relay raised its soft limit to the hard one


def test_an_encrypted_tls_key_opens_with_its_passphrase_from_a_file_or_the_environment(tmp_path):
    cert, key = self_signed(tmp_path, passphrase=b"open sesame")
    (tmp_path / "passphrase").write_text("open sesame\n")
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    for extra, env in (
        (("--tls-key-password-file", str(tmp_path / "passphrase")), None),
        ((), {**os.environ, "PPSHIP_TLS_KEY_PASSWORD": "open sesame\n"}),  # as `echo` leaves it
    ):
        relay, port = start_relay(1, *tls, *extra, env=env)
        try:
            with ssl.create_default_context(cafile=str(cert)).wrap_socket(
                socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
            ) as client:
                assert client.version() is not None  # the handshake went through
        finally:
            stop_relay(relay)
    (tmp_path / "passphrase").write_text("wrong")
    wrong = ("--tls-key-password-file", str(tmp_path / "passphrase"))
    refused = run_ppship("relay", "--upstream", "127.0.0.1:1", *tls, *wrong)
    assert one_error_line(refused) == (
        f"ppship: error: {cert} and {key}: not a PEM certificate with its private key, "
        "or the passphrase does not open the key"
    )


# Runs `ppship ARGS` with the terminal ARGV[1] as its controlling terminal, as a shell would: in a
# fresh process, which no thread of the test suite shares (forking the suite itself is unsafe).
ON_A_TERMINAL = """
import os, sys
os.setsid()  # a session of its own: the first terminal it opens becomes its controlling one
terminal = os.open(sys.argv[1], os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(terminal, fd)
os.execv(sys.executable, [sys.executable, "-m", "proofpoint_shipper", *sys.argv[2:]])
"""


def _read_if_any(terminal: int) -> bytes:
    """What the terminal holds for us, waiting a tenth of a second at most."""
    data = b""
    while select.select([terminal], [], [], 0.1)[0]:
        data += os.read(terminal, 4096)
    return data


def test_an_encrypted_tls_key_without_its_passphrase_stops_at_once_even_on_a_terminal(tmp_path):
    """OpenSSL would ask for the passphrase on the terminal, and the relay wait for an answer."""
    cert, key = self_signed(tmp_path, passphrase=b"open sesame")
    environment = {name: value for name, value in os.environ.items() if name != "PPSHIP_TLS_KEY_PASSWORD"}
    terminal, its_end = os.openpty()
    relay = ["relay", "--upstream", "127.0.0.1:1", "--tls-cert", str(cert), "--tls-key", str(key)]
    child = subprocess.Popen(
        [sys.executable, "-c", ON_A_TERMINAL, os.ttyname(its_end), *relay], env=environment
    )
    output, deadline = b"", time.monotonic() + 30  # not done in 30 s: it waits for an answer
    while child.poll() is None and time.monotonic() < deadline:
        output += _read_if_any(terminal)
    if child.poll() is None:
        child.kill()
    child.wait()
    output += _read_if_any(terminal)  # what it wrote last
    os.close(its_end)
    os.close(terminal)
    assert b"pass phrase" not in output.lower()
    assert output.decode().strip().splitlines()[-1] == (
        f"ppship: error: the private key in {key} is encrypted: give its passphrase in "
        "--tls-key-password-file or $PPSHIP_TLS_KEY_PASSWORD"
    )
    assert child.returncode == 2


def test_a_wrong_shared_key_is_refused(tmp_path):
    receiver = ForwardReceiver().start()
    (tmp_path / "key").write_text("right-key")
    relay, port = start_relay(receiver.port, "--shared-key-file", str(tmp_path / "key"))
    try:
        wrong = ForwardSink("127.0.0.1", port, shared_key="wrong-key", retry=RetryPolicy(attempts=1))
        wrong.write_entries("gateway.raw", [[EventTime(1, 0), {"log": FILTER_LINE}]])
        with pytest.raises(SharedKeyRefused):
            wrong.flush()
        right = ForwardSink("127.0.0.1", port, shared_key="right-key", retry=RetryPolicy(attempts=1))
        right.write_entries("gateway.raw", [[EventTime(1, 0), {"log": FILTER_LINE}]])
        right.close()
        assert len(receiver.entries) == 1
    finally:
        stop_relay(relay)
        receiver.stop()


def test_a_ping_digest_sent_as_msgpack_bin_is_taken_as_fluentd_takes_it(tmp_path):
    """Fluentd's in_forward reads a str and a bin alike; a client that packs its digest as bytes
    was refused as if its key were wrong."""
    receiver = ForwardReceiver().start()
    (tmp_path / "key").write_text("right-key")
    relay, port = start_relay(receiver.port, "--shared-key-file", str(tmp_path / "key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            unpacker = protocol.unpacker()
            unpacker.feed(client.recv(4096))
            helo = next(unpacker)
            nonce, salt = protocol.as_bytes(helo[1]["nonce"]), b"salt-of-16-bytes"
            digest = protocol.shared_key_digest(salt, "client", nonce, "right-key").encode()
            client.sendall(msgpack.packb(["PING", "client", salt, digest, "", ""], use_bin_type=True))
            unpacker.feed(client.recv(4096))
            assert next(unpacker)[:3] == ["PONG", True, ""]
    finally:
        stop_relay(relay)
        receiver.stop()


def test_a_ping_of_the_wrong_shape_is_refused_with_a_pong_not_a_traceback(tmp_path):
    receiver = ForwardReceiver().start()
    (tmp_path / "key").write_text("right-key")
    relay, port = start_relay(receiver.port, "--shared-key-file", str(tmp_path / "key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        unpacker = protocol.unpacker()
        unpacker.feed(client.recv(4096))
        assert next(unpacker)[0] == "HELO"
        client.sendall(msgpack.packb(["PING", 42, {"salt": 1}, "digest", "", ""]))
        unpacker.feed(client.recv(4096))
        assert next(unpacker)[:3] == ["PONG", False, "shared key mismatch"]
    stderr = stop_relay(relay).decode()
    receiver.stop()
    assert "refused a client whose shared key does not match" in stderr and "Traceback" not in stderr


def test_a_garbage_frame_closes_only_its_connection(pipeline):
    _, port = pipeline
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as bad,
        socket.create_connection(("127.0.0.1", port), timeout=10) as good,
    ):
        bad.sendall(b"\xc1\xc1\xc1 this is not msgpack")
        assert bad.recv(4096) == b""  # the relay closed it
        entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
        good.sendall(codec.encode("forward", "gateway.raw", entries, chunk="ok"))
        unpacker = protocol.unpacker()
        unpacker.feed(good.recv(4096))
        assert next(unpacker) == {"ack": "ok"}


def test_a_client_refused_in_a_loop_does_not_fill_the_log():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    for _ in range(15):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(b"\xc1 not msgpack")
            assert bad.recv(4096) == b""  # closed by the relay
    stderr = stop_relay(relay).decode()
    receiver.stop()
    assert stderr.count("relay: closing the connection from") == 10  # the first ten of the minute
    assert "relay: 5 more clients refused in " in stderr


@pytest.mark.parametrize("chunk", [b"\x01id", 7, ""], ids=["binary", "a number", "empty"])
def test_a_chunk_id_of_any_kind_is_acked_as_it_came(pipeline, chunk):
    """As Fluentd's in_forward: any chunk but nil and false asks for an ack. One sent as a number
    was relayed and never acked, so its client sent it again and again."""
    _, port = pipeline
    entries = [[EventTime(1645367700, 1), {"log": FILTER_LINE}]]
    frame = msgpack.packb(["gateway.raw", entries, {"chunk": chunk}], use_bin_type=True)
    assert send_raw(port, frame) == {"ack": chunk}


def test_a_frame_nested_past_what_msgpack_reads_is_refused_by_name():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
        bad.sendall(b"\x91" * 100_000 + b"\x01")  # arrays in arrays, 100,000 deep
        assert bad.recv(4096) == b""  # closed by the relay
    stderr = stop_relay(relay).decode()
    receiver.stop()
    assert "not msgpack: nested deeper than msgpack reads" in stderr  # was "not msgpack: " alone


def test_a_tls_client_or_an_http_request_at_a_plain_relay_is_told_by_name():
    """A client with TLS on at a relay without it was told as "not a forward message: '22'" (the
    first byte of a TLS record, read as msgpack), which says nothing of the cause."""
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as tls,
        pytest.raises(OSError),  # the relay closes it in the middle of the handshake
    ):
        context.wrap_socket(tls, server_hostname="relay")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as http:
        http.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: relay\r\n\r\n")
        assert http.recv(4096) == b""  # closed by the relay
    stderr = stop_relay(relay).decode()
    receiver.stop()
    assert "a TLS handshake: the client has TLS on and this relay serves plain forward traffic" in stderr
    assert "an HTTP request: this port takes the Fluent forward protocol, not HTTP" in stderr


def test_float_times_reach_upstream_as_event_times_and_no_time_as_the_time_received():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    entries = [(1645367700.25, {"log": FILTER_LINE}), (float("nan"), {"log": SENDMAIL_LINE})]
    before = int(time.time())
    assert send_chunk(port, "forward", entries) == {"ack": "chunk-1"}
    stderr = stop_relay(relay).decode()
    receiver.stop()
    (_, exact, _), (_, stamped, relayed) = receiver.entries
    assert exact == EventTime(1645367700, 250_000_000)  # Fluentd refuses float times
    assert type(stamped) is EventTime and before <= int.from_bytes(stamped.data[:4], "big") <= time.time()
    assert relayed["qid"] == "w3HMWjG3039079"  # the record itself is passed on
    assert "held 1 float times that are no time" in stderr


def _str8(data: bytes) -> bytes:
    """A msgpack str holding these bytes as they are, UTF-8 or not (as Fluent Bit sends a tailed
    Latin-1 line)."""
    return b"\xd9" + bytes([len(data)]) + data


def test_a_line_that_is_not_utf8_is_relayed_marked_not_refused(pipeline):
    receiver, port = pipeline
    latin1 = SENDMAIL_LINE.replace("stat=Sent", "stat=Envoy\xe9").encode("latin-1")
    record = b"\x81" + _str8(b"log") + _str8(latin1)
    frame = b"\x93" + _str8(b"gateway.raw") + b"\x91\x92\xce" + (1645367700).to_bytes(4, "big") + record
    frame += msgpack.packb({"chunk": "latin1"})
    assert send_raw(port, frame) == {"ack": "latin1"}
    ((tag, _, relayed),) = receiver.entries
    assert tag == "proofpoint.gateway.sendmail" and relayed["fields"]["stat"] == "Envoy\ufffd"
    assert relayed["error"] == "invalid UTF-8 (replaced with U+FFFD)"


def test_a_frame_that_splits_but_does_not_decode_closes_its_connection_with_one_line():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port)
    frame = msgpack.packb(
        ["gateway.raw", [[1645367700, {1: "an int key", "log": FILTER_LINE}]], {"chunk": "c"}]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
        bad.sendall(frame)
        assert bad.recv(4096) == b""  # closed, not acked
    stderr = stop_relay(relay).decode()
    receiver.stop()
    assert "undecodable frame: int is not allowed for map key" in stderr and "Traceback" not in stderr


def _frame_start(size: int) -> bytes:
    """The first bytes of a PackedForward frame whose entries take `size` bytes: a frame that is
    still arriving for as long as the rest is not sent."""
    return b"\x92" + _str8(b"gateway.raw") + b"\xc6" + size.to_bytes(4, "big")


def _closed_by_the_relay(connection: socket.socket, data: bytes) -> bool:
    try:
        connection.sendall(data)
        return connection.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):  # closed with our bytes unread
        return True


def test_frames_still_arriving_on_many_connections_are_bounded_together():
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port, "--max-in-flight-bytes", "1000000")  # 500 kB arriving
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as first,
        socket.create_connection(("127.0.0.1", port), timeout=10) as second,
    ):
        first.sendall(_frame_start(2_000_000) + b"x" * 600_000)  # alone: let in, past the bound
        time.sleep(0.5)
        assert _closed_by_the_relay(second, _frame_start(2_000_000) + b"x" * 400_000)
        first.settimeout(0.5)
        with pytest.raises(TimeoutError):
            first.recv(4096)  # the first is still open, waiting for the rest of its frame
        entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
        assert send_chunk(port, "forward", entries, chunk="small") == {"ack": "small"}
    stderr = stop_relay(relay).decode()
    receiver.stop()
    assert "frames still arriving on all connections take over 1000000 bytes" in stderr


def test_sigterm_with_upstream_stalled_exits_within_the_drain_bound():
    silent = ForwardReceiver(ack=False).start()
    relay, port = start_relay(silent.port, "--upstream-timeout", "600", "--drain-seconds", "1")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
            client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="never-acked"))
            wait_for(lambda: len(silent.entries) == 1, seconds=30)  # it reached upstream, which never acks
            relay.send_signal(signal.SIGTERM)
            _, stderr = relay.communicate(timeout=30)
            assert client.recv(4096) == b""  # closed without an ack: the client keeps its chunk
        assert relay.returncode == 0, stderr.decode()[-500:]
    finally:
        if relay.poll() is None:
            relay.kill()
        silent.stop()


def test_sigterm_does_not_wait_the_drain_out_for_connections_with_nothing_in_delivery():
    """An agent keeps its forward connection open between chunks: such a connection has nothing
    to drain, and holding the stop for --drain-seconds on it made every restart that long."""
    receiver = ForwardReceiver().start()
    relay, port = start_relay(receiver.port, "--drain-seconds", "120")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
            client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="c1"))
            assert msgpack.unpackb(client.recv(4096)) == {"ack": "c1"}  # then the agent idles
            relay.send_signal(signal.SIGTERM)
            _, stderr = relay.communicate(timeout=30)  # not the 120 s of the drain
            assert client.recv(4096) == b""
        assert relay.returncode == 0, stderr.decode()[-500:]
        assert len(receiver.entries) == 1
    finally:
        if relay.poll() is None:
            relay.kill()
        receiver.stop()


def kill_workers(relay: subprocess.Popen) -> None:
    """Kill the relay and its workers (its session), whose copies of the pipes would keep
    communicate() waiting; then close the pipes. Also when an assertion failed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(relay.pid, signal.SIGKILL)
    relay.communicate()


@pytest.mark.parametrize("pick_port", [False, True], ids=["given-port", "port-0"])
def test_workers_share_one_port_and_stop_on_sigterm(pick_port):
    receiver = ForwardReceiver().start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = 0 if pick_port else probe.getsockname()[1]  # 0: the relay picks one for all workers
    command = [
        sys.executable,
        "-m",
        "proofpoint_shipper",
        "relay",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        f"127.0.0.1:{receiver.port}",
        "--timezone",
        "UTC",
        "--workers",
        "2",
    ]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        banners = {relay.stdout.readline() for _ in range(2)}
        (banner,) = banners  # one address for both workers
        assert banner.startswith(b"relay listening on 127.0.0.1:")
        port = int(banner.rsplit(b":", 1)[1])
        entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
        replies = [send_chunk(port, "forward", entries, chunk=f"w{n}") for n in range(8)]
        assert replies == [{"ack": f"w{n}"} for n in range(8)]
        assert len(receiver.entries) == 8
        relay.send_signal(signal.SIGTERM)
        relay.communicate(timeout=60)
        assert relay.returncode == 0
    finally:
        kill_workers(relay)
        receiver.stop()


@contextlib.contextmanager
def two_workers():
    """A relay supervising two workers, once both listen: (the supervisor, the workers' pids)."""
    receiver = ForwardReceiver().start()
    command = [sys.executable, "-m", "proofpoint_shipper", "relay", "--listen", "127.0.0.1:0"]
    command += ["--upstream", f"127.0.0.1:{receiver.port}", "--workers", "2"]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        banners = {relay.stdout.readline() for _ in range(2)}
        (banner,) = banners
        assert banner.startswith(b"relay listening on 127.0.0.1:")
        relay.port = int(banner.rsplit(b":", 1)[1])
        yield relay, Path(f"/proc/{relay.pid}/task/{relay.pid}/children").read_text().split()
    finally:
        kill_workers(relay)
        receiver.stop()


def test_a_worker_that_dies_takes_the_relay_down_for_its_supervisor_to_restart():
    with two_workers() as (relay, children):
        os.kill(int(children[0]), signal.SIGKILL)
        _, stderr = relay.communicate(timeout=60)
        assert relay.returncode == 1
        assert f"worker {children[0]} ended (exit code -9); stopping the others".encode() in stderr
        assert not Path(f"/proc/{children[1]}").exists()  # the other one stopped too


def test_a_relay_with_workers_refuses_a_port_another_relays_workers_listen_on():
    """Their SO_REUSEPORT would let it join them: the clients split between two relays, in silence."""
    with two_workers() as (relay, _):
        address = f"127.0.0.1:{relay.port}"
        second = run_ppship("relay", "--listen", address, "--upstream", "127.0.0.1:9", "--workers", "2")
        assert one_error_line(second) == (
            f"ppship: error: cannot listen on 127.0.0.1:{relay.port}: Address already in use"
        )


def test_a_killed_supervisor_leaves_no_worker_on_the_port():
    # SIGKILL (the OOM killer, kill -9) runs no handler of the supervisor: before, its workers
    # served on, and a restarted relay shared the port with them.
    with two_workers() as (relay, children):
        relay.kill()
        relay.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(process_alive(int(pid)) for pid in children):
            time.sleep(0.2)
        assert not any(process_alive(int(pid)) for pid in children)


RFC3339_SENDMAIL_LINE = (
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
)
OTHER_LINE = "Feb 20 08:35:01 gw1 cron[99]: (root) CMD (run-parts /etc/cron.hourly)"


def test_output_s3_writes_the_text_tables_before_acking(local_s3, bucket):
    env = {**os.environ, **LOCAL_ENV}
    s3 = ("--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url, "--prefix", "lake")
    relay, port = start_relay(None, *s3, env=env)
    an_hour_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # the BSD year is this one
    bsd_stamp = f"{an_hour_ago:%b} {an_hour_ago.day:2d} {an_hour_ago:%H:%M:%S}"
    try:
        entries = [
            (EventTime(1645367700, 1), {"log": f"{bsd_stamp} gw1 {FILTER_LINE.split(' ', 2)[2]}"}),
            (EventTime(1645367700, 2), {"log": RFC3339_SENDMAIL_LINE}),
            (EventTime(1645367701, 3), {"log": OTHER_LINE}),
        ]
        assert send_chunk(port, "forward", entries, chunk="to-s3") == {"ack": "to-s3"}
        client = local_s3.client()
        landed = {}
        for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
            body = gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            landed[item["Key"].split("/")[1]] = body.decode().splitlines()
    finally:
        stderr = stop_relay(relay)
    assert landed == {
        "proofpoint_gateway_filter_logs": [
            f"{an_hour_ago.isoformat(timespec='microseconds')} gw1 {FILTER_LINE.split(' ', 2)[2]}"
        ],
        "proofpoint_gateway_sendmail_logs": [RFC3339_SENDMAIL_LINE],
    }
    assert b"belong to no table" in stderr


class _UploadsNeverAnswered(http.server.BaseHTTPRequestHandler):
    """A bucket that answers the relay's start-up check (HEAD) and takes each upload without ever
    answering it, as a path to S3 that swallows requests does: the local S3 cannot be made to."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self):
        self.server.upload_arrived.set()
        self.server.released.wait()  # until the test ends

    def log_message(self, *args):
        pass


def test_sigterm_with_an_upload_never_answered_exits_within_the_drain_bound():
    """The stop waited for the upload: its read timeout (60 s), then the retries after it, far
    past --drain-seconds and a service manager's stop timeout. Its chunk was not acked: the client
    sends it again."""
    bucket = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UploadsNeverAnswered)
    bucket.daemon_threads = False  # server_close() waits for the handler, which closes its socket
    bucket.upload_arrived, bucket.released = threading.Event(), threading.Event()
    threading.Thread(target=bucket.serve_forever, daemon=True).start()
    s3 = ("--output", "s3", "--bucket", "lake", "--endpoint-url", f"http://127.0.0.1:{bucket.server_port}")
    relay, port = start_relay(None, *s3, "--drain-seconds", "1", env={**os.environ, **LOCAL_ENV})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
            client.sendall(codec.encode("forward", "gateway.raw", entries, chunk="never-stored"))
            assert bucket.upload_arrived.wait(30)
            relay.send_signal(signal.SIGTERM)
            _, stderr = relay.communicate(timeout=20)  # not the minutes of the upload's timeouts
            assert client.recv(4096) == b""  # closed without an ack: the client keeps its chunk
        assert relay.returncode == 0, stderr.decode()[-500:]
        assert "a delivery still under way" in stderr.decode()
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
        bucket.released.set()
        bucket.shutdown()
        bucket.server_close()


def test_message_mode_records_asking_no_ack_go_to_s3_together_not_an_object_each(local_s3, bucket):
    """fluent-logger sends one record a frame and asks for no ack. Each waited for its own
    delivery: an S3 object per record, about a hundred records a second."""
    env = {**os.environ, **LOCAL_ENV}
    relay, port = start_relay(
        None, "--output", "s3", "--bucket", bucket, "--endpoint-url", local_s3.endpoint_url, env=env
    )
    client = local_s3.client()

    def landed() -> list[bytes]:
        objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return [
            gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            for item in objects
        ]

    lines = [FILTER_LINE.replace("s=3ebnb6gs7y", f"s=session{n}") for n in range(500)]
    try:
        sender = FluentSender("gateway", host="127.0.0.1", port=port, nanosecond_precision=True)
        for line in lines:
            assert sender.emit("raw", {"log": line}), sender.last_error
        sender.close()
        wait_for(lambda: sum(body.count(b"\n") for body in landed()) == len(lines))
    finally:
        stop_relay(relay)
    sent = {line.split(" ", 3)[3].encode(): number for number, line in enumerate(lines)}
    bodies = landed()
    numbers = [[sent[line.split(b" ", 3)[3]] for line in body.splitlines()] for body in bodies]
    assert sorted(n for body in numbers for n in body) == list(range(len(lines))), "every record once"
    assert all(body == sorted(body) for body in numbers), "in the order sent"
    assert len(bodies) <= len(lines) / 10, f"{len(bodies)} objects for {len(lines)} records"


def test_output_forward_without_upstream_is_one_clear_error():
    result = run_ppship("relay", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        "ppship: error: --output forward needs --upstream HOST:PORT"
    ]


@pytest.mark.parametrize(
    "flags, error",
    [
        ((), "--output forward needs --upstream HOST:PORT"),
        (
            ("--upstream", "127.0.0.1:1", "--max-open", "10"),
            "--max-open is for --assemble, which is not given",
        ),
        (
            ("--upstream", "127.0.0.1:1", "--tls-cert", "/no/such.pem", "--tls-key", "/no/such.key"),
            "/no/such",
        ),
        (("--output", "s3"), "--output s3 needs --bucket"),
    ],
    ids=["no-upstream", "assemble-flag", "tls-files", "s3-bucket"],
)
def test_with_workers_a_setting_at_fault_is_one_error_before_any_worker_starts(flags, error):
    result = run_ppship("relay", "--listen", "127.0.0.1:0", "--workers", "3", *flags)
    line = one_error_line(result)  # not one per worker, and no "worker ended" after them
    assert line.startswith("ppship: error: ") and error in line, line
    assert b"relay listening" not in result.stdout


def test_workers_are_bounded():
    # No --upstream: were the bound lost, each of the workers would stop at once on its own.
    result = run_ppship("relay", "--listen", "127.0.0.1:0", "--workers", "129")
    assert result.returncode == 2  # argparse's usage, then the reason
    assert result.stderr.decode().splitlines()[-1] == (
        "ppship relay: error: argument --workers: at most 128 workers, one per core: got '129'"
    )


def test_on_ipv6_the_banner_gives_an_address_that_can_be_pasted_back():
    receiver = ForwardReceiver().start()
    command = [*PPSHIP_RELAY, "--listen", "[::1]:0", "--upstream", f"127.0.0.1:{receiver.port}"]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = relay.stdout.readline().decode()
        match = re.fullmatch(r"relay listening on \[::1\]:(\d+)\n", banner)
        assert match, banner  # as --listen and --upstream take it: "::1:24224" is no address
        entries = [(EventTime(1645367700, 1), {"log": FILTER_LINE})]
        frame = codec.encode("forward", "gateway.raw", entries, chunk="v6")
        assert send_raw(int(match.group(1)), frame, host="::1") == {"ack": "v6"}
    finally:
        stop_relay(relay)
        receiver.stop()
