"""PoD stream throughput and memory: simulator → `ppship pod stream` → NDJSON.

The simulator (this process, one core) holds an hour of maillog events at a high rate, which a live
session sends at once; the real `ppship pod stream --max-events N` child (the other core) writes
NDJSON to /dev/null. Printed: events/s over 1M events, and the child's peak memory for 100k and 1M
events (flat: the stream keeps only a bounded window of recent hashes).
"""

import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta

from proofpoint_shipper.pod.events import Timeline
from proofpoint_shipper.pod.simulator import PodSimulator
from tests.bench.measure import CORES, run_on_own_core

RATE = 400  # events per second of simulated time: an hour holds 1.44M


def run(events: int) -> tuple[float, int]:
    timeline = Timeline(9, datetime.now(UTC) - timedelta(days=1), RATE)
    with PodSimulator(timeline, "bench", "cid") as simulator, tempfile.TemporaryDirectory() as state:
        command = [
            sys.executable,
            "-m",
            "proofpoint_shipper",
            "pod",
            "stream",
            "--type",
            "maillog",
            "--url",
            simulator.url,
            "--cursor",
            f"{state}/pod.json",
            "--max-events",
            str(events),
            "--dead-letter-dir",
            f"{state}/dl",
        ]
        env = {**os.environ, "POD_TOKEN": "bench", "POD_CLUSTER_ID": "cid"}
        return run_on_own_core(command, env)


def main() -> int:
    os.sched_setaffinity(0, {CORES[0]})
    print("PoD stream benchmark: simulator → ppship pod stream (maillog) → NDJSON", flush=True)
    _, small_rss = run(100_000)
    seconds, big_rss = run(1_000_000)
    rate = 1_000_000 / seconds
    print(f"  1,000,000 maillog events                {rate:>10,.0f} events/s (process start included)")
    print(f"  peak memory, 100k events             {small_rss / 1024:>10.1f} MiB")
    print(f"  peak memory, 1M events               {big_rss / 1024:>10.1f} MiB")
    print(f"  memory 1M / 100k                     {big_rss / small_rss:>10.2f}         (flat: about 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
