"""`make bench`: gateway parse throughput and memory, as ratios against baselines from this run.

Everything runs pinned to one core. Throughput: the real `ppship gateway parse --format json`
child, end to end (start-up included), against a Lark-only parse (+ JSON) of the same file.
Memory: the child's peak RSS on 200k and on 1M lines (flat means a ratio near 1).
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tests.bench.measure import PeakMemory
from tests.bench.mixed_log import write_mixed_log
from tests.conftest import golden_parser

TARGET_LINES_PER_SECOND = 150_000
TARGET_RATIO = 20
COMMAND = [
    sys.executable,
    "-m",
    "proofpoint_shipper",
    "gateway",
    "parse",
    "--format",
    "json",
    "--timezone",
    "America/Chicago",
    "--reference-time",
    "2022-03-01T12:00:00-06:00",
]


def run_parse(path: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one end-to-end run, output discarded."""
    start = time.perf_counter()
    with path.open("rb") as source:
        child = subprocess.Popen(
            [*COMMAND, str(path)], stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        memory = PeakMemory(child.pid)
        _, status, _ = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ppship gateway parse failed on {path}")
    child.returncode = 0
    return elapsed, memory.result()


def lark_only(path: Path) -> float:
    parser = golden_parser(fast=False)
    start = time.perf_counter()
    with path.open(encoding="utf-8") as source:
        for line in source:
            orjson.dumps(parser.parse(line.rstrip("\n")))
    return time.perf_counter() - start


def main() -> int:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, children included
    with tempfile.TemporaryDirectory(prefix="ppship-bench-") as folder:
        small = write_mixed_log(Path(folder) / "mixed-200k.log", 200_000)
        large = write_mixed_log(Path(folder) / "mixed-1m.log", 1_000_000)
        size_mb = small.stat().st_size / 1e6
        print(f"gateway parse benchmark: 200,000 mixed lines ({size_mb:.1f} MB), one core", flush=True)
        fast_seconds, small_rss = run_parse(small)
        fast_rate = 200_000 / fast_seconds
        print(f"  ppship gateway parse --format json   {fast_rate:>10,.0f} lines/s  (end to end)", flush=True)
        lark_rate = 200_000 / lark_only(small)
        print(f"  Lark-only parse + JSON (baseline)    {lark_rate:>10,.0f} lines/s", flush=True)
        _, large_rss = run_parse(large)
        ratio = fast_rate / lark_rate
        print(f"  speed-up over Lark-only              {ratio:>10.1f} x       (target >= {TARGET_RATIO} x)")
        print(
            f"  against the {TARGET_LINES_PER_SECOND:,} lines/s target     "
            f"{fast_rate / TARGET_LINES_PER_SECOND:>10.2f}"
        )
        print(f"  peak memory, 200k lines              {small_rss / 1024:>10.1f} MiB")
        print(f"  peak memory, 1M lines                {large_rss / 1024:>10.1f} MiB")
        flat = large_rss / small_rss
        print(f"  memory 1M / 200k                     {flat:>10.2f}         (flat: about 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
