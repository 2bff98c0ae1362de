"""Relay throughput against the parse alone, and relay memory with upstream stalled.

Client threads send Forward-mode chunks of 1000 records through the real `ppship relay` child (on a
core of its own) to a forward receiver that acks and counts, decoding in C only as an agent's own
forward input would (a receiver decoding in Python was slower than the relay, and the relay sat
idle waiting for its acks); the parse-only baseline parses the same lines in this process. Then
upstream stops acking and the clients keep pushing: the relay's peak memory must stay within its
in-flight bound (plus its idle footprint).
"""

import os
import socket
import subprocess
import threading
import time

from fluent.sender import EventTime

from proofpoint_shipper.fluent import codec, protocol
from tests.bench.measure import PeakMemory
from tests.bench.mixed_log import mixed_lines
from tests.conftest import golden_parser
from tests.forward_receiver import ForwardReceiver
from tests.test_relay import start_relay as started_relay

CORES = sorted(os.sched_getaffinity(0))
CHUNK = 1000
IN_FLIGHT = 8 * 1024 * 1024
STALLED_CLIENTS = 8


def start_relay(upstream: int, *extra: str) -> tuple[subprocess.Popen, int]:
    """The tests' relay, on a core of its own."""
    relay, port = started_relay(upstream, *extra)
    if len(CORES) > 1:
        os.sched_setaffinity(relay.pid, {CORES[1]})
    return relay, port


def client(port: int, frames: list[bytes], acked: list[int], stop: threading.Event | None = None) -> None:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(600)
        unpacker = protocol.unpacker()
        for frame in frames:
            if stop is not None and stop.is_set():
                return
            try:
                connection.sendall(frame)
            except OSError:
                return  # the relay was stopped under us
            if stop is not None:
                continue  # stalled upstream: keep pushing until the relay stops reading
            while not any(True for _ in _one(unpacker, connection)):
                pass
            acked.append(1)


def _one(unpacker, connection):
    for reply in unpacker:
        yield reply
        return
    unpacker.feed(connection.recv(4096))
    yield from unpacker


def frames_for(lines: list[str]) -> list[bytes]:
    return [
        codec.encode(
            "forward",
            "gateway.raw",
            [(EventTime(1645367700 + i, 0), {"log": line}) for i, line in enumerate(lines[s : s + CHUNK])],
            chunk=f"c{s}",
        )
        for s in range(0, len(lines), CHUNK)
    ]


def throughput(lines: list[str]) -> float:
    receiver = ForwardReceiver(keep=False).start()
    relay, port = start_relay(receiver.port)
    frames = frames_for(lines)
    acked: list[int] = []
    threads = [threading.Thread(target=client, args=(port, frames[i::4], acked)) for i in range(4)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    relay.terminate()
    relay.wait()
    receiver.stop()
    assert len(acked) == len(frames)
    assert receiver.counted == len(lines), f"{receiver.counted} of {len(lines)} records arrived"
    return len(lines) / elapsed


def parse_only(lines: list[str]) -> float:
    parser = golden_parser()
    began = time.perf_counter()
    for line in lines:
        parser.parse(line)
    return len(lines) / (time.perf_counter() - began)


def stalled_memory(lines: list[str]) -> tuple[int, int]:
    """(idle KiB, peak KiB) of a relay whose upstream never acks while clients keep pushing."""
    receiver = ForwardReceiver(ack=False).start()
    relay, port = start_relay(
        receiver.port, "--max-in-flight-bytes", str(IN_FLIGHT), "--upstream-timeout", "600"
    )
    memory = PeakMemory(relay.pid)
    time.sleep(0.5)
    idle = memory.peak_kib
    stop = threading.Event()
    frames = frames_for(lines)
    threads = [
        threading.Thread(target=client, args=(port, frames, [], stop), daemon=True)
        for _ in range(STALLED_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(8)
    stop.set()
    relay.terminate()
    relay.wait()
    receiver.stop()
    return idle, memory.result()


def main() -> int:
    os.sched_setaffinity(0, {CORES[0]})
    lines = list(mixed_lines(200_000))
    print("relay benchmark: forward chunks of 1000 records through ppship relay to a receiver", flush=True)
    relay_rate = throughput(lines)
    parse_rate = parse_only(lines)
    print(f"  through the relay                    {relay_rate:>10,.0f} records/s")
    print(f"  parse alone (baseline, same lines)   {parse_rate:>10,.0f} records/s")
    overhead = 1 - relay_rate / parse_rate
    print(f"  relay overhead over the parse        {overhead:>10.0%}         (target <= 25 %)")
    idle, peak = stalled_memory(lines)
    print(f"  relay memory idle                    {idle / 1024:>10.1f} MiB")
    bound = IN_FLIGHT / 2**20
    print(
        f"  relay memory, upstream stalled       {peak / 1024:>10.1f} MiB  (in-flight bound {bound:.0f} MiB)"
    )
    growth = (peak - idle) / (IN_FLIGHT / 1024)
    print(f"  growth under stall / in-flight bound {growth:>10.2f}")
    frame_bytes = max(len(frame) for frame in frames_for(lines[: CHUNK * 4]))
    expected = IN_FLIGHT + STALLED_CLIENTS * 3 * frame_bytes
    label = f"growth / (bound + {STALLED_CLIENTS} connections x 3 frames)"
    print(f"  {label} {(peak - idle) * 1024 / expected:>6.2f}         (bounded: at most about 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
