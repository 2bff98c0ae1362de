"""SIGTERM while a write to a full pipe is blocked: every record arrives once, whole, in order.

Agents stop their exec children with SIGTERM while the pipe to the agent may be full. Through
`sys.stdout.buffer` this lost and mixed records; both writers below must not.
"""

import json
import signal
import subprocess
import sys
import time

from tests.conftest import GOLDEN, read_lines

SINK_WRITER = r"""
import signal, sys, threading
from proofpoint_shipper.sinks.stdout import StdoutSink
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
sink = StdoutSink()
print("ready", file=sys.stderr, flush=True)
for n in range(3000):
    sink.write("proofpoint_on_demand_message", [{"n": n, "pad": "x" * 1500}])
    if n % 100 == 99:
        sink.flush()
sink.flush()
"""


def test_stdout_sink_under_sigterm_into_a_slow_pipe():
    with subprocess.Popen(
        [sys.executable, "-c", SINK_WRITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        child.stderr.readline()
        first = child.stdout.readline()  # the pipe is full behind this line: writes are blocked
        child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        rest = child.stdout.read()
        child.wait(timeout=60)
    numbers = [json.loads(line)["n"] for line in [first, *rest.splitlines()]]
    assert numbers == list(range(3000))


def test_gateway_parse_under_sigterm_into_a_slow_pipe(tmp_path):
    line = read_lines(GOLDEN / "gateway_filter" / "seed.log")[0]
    log = tmp_path / "big.log"
    log.write_text((line + "\n") * 200_000)
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", str(log)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        first = child.stdout.readline()
        child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        rest = child.stdout.read()
        stderr = child.stderr.read().decode()
        child.wait(timeout=60)
    assert child.returncode == 0
    records = [json.loads(out) for out in [first, *rest.splitlines()]]  # every line whole
    assert all(record["raw"] == line for record in records)
    reported = int(stderr.split("ppship gateway parse: ")[1].split()[0])
    assert len(records) == reported  # every parsed line was written, none lost
