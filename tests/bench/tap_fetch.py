"""TAP fetch throughput and memory: simulator → `ppship tap fetch` → NDJSON, one window.

The simulator (this process, one core) serves a single window of 10k, then 100k events; the real
`ppship tap fetch --once` child (the other core) writes NDJSON to /dev/null. Printed: events/s for
the 100k window, and the child's peak memory for both, whose ratio shows whether the answer is
streamed (it should not grow ten-fold with the window).
"""

import dataclasses
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from itertools import islice

from proofpoint_shipper.tap.events import generate
from proofpoint_shipper.tap.simulator import TapSimulator
from tests.bench.measure import CORES, run_on_own_core


def window_events(count: int, start: datetime) -> list:
    events = generate(42, start, start + timedelta(minutes=50), rate_per_hour=int(count * 1.0))
    return [dataclasses.replace(e, indexed=e.created) for e in islice(events, count)]


def run(count: int) -> tuple[float, int, int]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    events = window_events(count, start)
    with TapSimulator(events, "bench", "bench") as simulator, tempfile.TemporaryDirectory() as state:
        command = [
            sys.executable,
            "-m",
            "proofpoint_shipper",
            "tap",
            "fetch",
            "--once",
            "--base-url",
            simulator.url,
            "--cursor",
            f"{state}/cursor.json",
            "--since",
            start.isoformat(),
            "--lag",
            "70m",
        ]
        env = {**os.environ, "TAP_PRINCIPAL": "bench", "TAP_SECRET": "bench"}
        elapsed, peak = run_on_own_core(command, env)
    return elapsed, len(events), peak


def main() -> int:
    os.sched_setaffinity(0, {CORES[0]})
    print("TAP fetch benchmark: simulator → ppship tap fetch → NDJSON, one window", flush=True)
    _, small_count, small_rss = run(10_000)
    seconds, count, big_rss = run(100_000)
    rate = count / seconds
    print(f"  window of {count:,} events                {rate:>10,.0f} events/s (process start included)")
    print(f"  peak memory, {small_count:,}-event window     {small_rss / 1024:>10.1f} MiB")
    print(f"  peak memory, {count:,}-event window    {big_rss / 1024:>10.1f} MiB")
    ratio = big_rss / small_rss
    print(f"  memory 100k / 10k                    {ratio:>10.2f}         (streamed: far below 10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
