"""`make bench`: gateway message assembly throughput, against the parse alone, in the same run.

Everything runs pinned to one core, on the same file of whole interleaved sessions
(tests/gateway_sessions.py). End to end: `ppship gateway assemble FILE` against
`ppship gateway parse --format json FILE` (what an agent runs today); the target is an
overhead of at most 30 %. In process, for the assembler's own cost: parse alone against
parse and assemble. Memory: the assemble child's peak with 100 and with 50,000 (the default)
open sessions allowed (--max-open), on the same input.

The machine's speed drifts by a fifth and more over tens of seconds, so each overhead is the
median of several pairs of runs, the two runs of a pair one right after the other: best-of runs
of one command and then of the other compared one slow spell with another.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from proofpoint_shipper.gateway.assembler import Assembler, AssemblySettings
from proofpoint_shipper.service import tune_gc_for_long_lived_state
from tests.bench.measure import run_on_own_core
from tests.conftest import golden_parser
from tests.gateway_sessions import session_lines

SESSIONS = 12_000
PAIRS = 5
TARGET_OVERHEAD = 0.30
SETTINGS = ["--timezone", "UTC"]


class Pairs:
    """Seconds of a baseline and of a measured run, taken in pairs; the overhead is the median of
    the pairs' ratios, the rates are from each side's fastest run."""

    def __init__(self) -> None:
        self.baseline: list[float] = []
        self.measured: list[float] = []

    def add(self, baseline: float, measured: float) -> None:
        self.baseline.append(baseline)
        self.measured.append(measured)

    @property
    def overheads(self) -> list[float]:
        return sorted(m / b - 1 for b, m in zip(self.baseline, self.measured, strict=True))

    @property
    def overhead(self) -> float:
        return statistics.median(self.overheads)

    def rates(self, items: int) -> tuple[float, float]:
        return items / min(self.baseline), items / min(self.measured)


def end_to_end(path: Path) -> tuple[Pairs, int]:
    """`gateway parse --format json` and `gateway assemble` of the file, in pairs; and the
    assemble child's peak memory (KiB)."""
    ppship = [sys.executable, "-m", "proofpoint_shipper", "gateway"]
    pairs, peak = Pairs(), 0
    for _ in range(PAIRS):
        parse_seconds, _ = run_on_own_core(
            [*ppship, "parse", "--format", "json", *SETTINGS, str(path)], {**os.environ}
        )
        assemble_seconds, assemble_peak = run_on_own_core(
            [*ppship, "assemble", *SETTINGS, str(path)], {**os.environ}
        )
        pairs.add(parse_seconds, assemble_seconds)
        peak = max(peak, assemble_peak)
    return pairs, peak


def narrow_peak(path: Path) -> int:
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "assemble", "--max-open", "100"]
    return run_on_own_core([*command, *SETTINGS, str(path)], {**os.environ})[1]


def in_process(lines: list[str]) -> Pairs:
    """The parse alone, and parse and assembly, of the same lines, in pairs.

    With the garbage collector set as `ppship gateway assemble` sets it.
    """
    tune_gc_for_long_lived_state()
    parser = golden_parser()
    pairs = Pairs()
    for _ in range(PAIRS):
        began = time.perf_counter()
        for line in lines:
            parser.parse(line)
        parse_only = time.perf_counter() - began
        assembler = Assembler(AssemblySettings())
        began = time.perf_counter()
        for line in lines:
            assembler.feed(parser.parse(line))
        assembler.finish()
        pairs.add(parse_only, time.perf_counter() - began)
    return pairs


def main() -> int:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    lines = session_lines(SESSIONS)
    with tempfile.TemporaryDirectory(prefix="ppship-bench-") as folder:
        path = Path(folder) / "sessions.log"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(
            f"gateway assembly benchmark: {SESSIONS:,} sessions, {len(lines):,} lines, one core", flush=True
        )
        commands, wide_peak = end_to_end(path)
        narrow = narrow_peak(path)
    parse_rate, assemble_rate = commands.rates(len(lines))
    print(f"  ppship gateway parse --format json  {parse_rate:>10,.0f} lines/s  (baseline, end to end)")
    print(f"  ppship gateway assemble             {assemble_rate:>10,.0f} lines/s  (end to end)")
    print(
        f"  overhead over the parse             {commands.overhead:>10.0%}         "
        f"(target <= {TARGET_OVERHEAD:.0%}; median of {PAIRS} pairs of runs, "
        f"{commands.overheads[0]:.0%} to {commands.overheads[-1]:.0%})"
    )
    alone = in_process(lines)
    parse_only, with_assembly = alone.rates(len(lines))
    print(
        f"  in process: parse {parse_only:,.0f} lines/s, parse + assemble "
        f"{with_assembly:,.0f} lines/s: the assembler adds {alone.overhead:.0%}"
    )
    print(f"  peak memory, --max-open 100         {narrow / 1024:>10.1f} MiB")
    ratio = wide_peak / narrow
    print(f"  peak memory, --max-open 50000       {wide_peak / 1024:>10.1f} MiB  (ratio {ratio:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
