"""`make bench`: gateway message assembly throughput, against the parse alone, in the same run.

Everything runs pinned to one core, on the same file of whole interleaved sessions
(tests/gateway_sessions.py). End to end: `ppship gateway assemble FILE` against
`ppship gateway parse --format json FILE` (what an agent runs today); the target is an
overhead of at most 30 %. In process, for the assembler's own cost: parse alone against
parse and assemble. Memory: the assemble child's peak with 100 and with 50,000 (the default)
open sessions allowed (--max-open), on the same input.
"""

import os
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
TARGET_OVERHEAD = 0.30
SETTINGS = ["--timezone", "UTC"]


def best_of(runs: int, command: list[str]) -> tuple[float, int]:
    results = [run_on_own_core(command, dict(os.environ)) for _ in range(runs)]
    return min(seconds for seconds, _ in results), max(peak for _, peak in results)


def in_process(lines: list[str]) -> tuple[float, float]:
    """Seconds for the parse alone, and for parse and assembly, of the same lines.

    With the garbage collector set as `ppship gateway assemble` sets it.
    """
    tune_gc_for_long_lived_state()
    parser = golden_parser()
    began = time.perf_counter()
    for line in lines:
        parser.parse(line)
    parse_only = time.perf_counter() - began
    assembler = Assembler(AssemblySettings())
    began = time.perf_counter()
    for line in lines:
        assembler.feed(parser.parse(line))
    assembler.finish()
    return parse_only, time.perf_counter() - began


def main() -> int:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    lines = session_lines(SESSIONS)
    with tempfile.TemporaryDirectory(prefix="ppship-bench-") as folder:
        path = Path(folder) / "sessions.log"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ppship = [sys.executable, "-m", "proofpoint_shipper", "gateway"]
        print(
            f"gateway assembly benchmark: {SESSIONS:,} sessions, {len(lines):,} lines, one core", flush=True
        )
        parse_seconds, _ = best_of(3, [*ppship, "parse", "--format", "json", *SETTINGS, str(path)])
        assemble_seconds, wide_peak = best_of(3, [*ppship, "assemble", *SETTINGS, str(path)])
        _, narrow_peak = best_of(1, [*ppship, "assemble", "--max-open", "100", *SETTINGS, str(path)])
    parse_rate, assemble_rate = len(lines) / parse_seconds, len(lines) / assemble_seconds
    overhead = assemble_seconds / parse_seconds - 1
    print(f"  ppship gateway parse --format json  {parse_rate:>10,.0f} lines/s  (baseline, end to end)")
    print(f"  ppship gateway assemble             {assemble_rate:>10,.0f} lines/s  (end to end)")
    print(
        f"  overhead over the parse             {overhead:>10.0%}         (target <= {TARGET_OVERHEAD:.0%})"
    )
    parse_only, with_assembly = in_process(lines)
    print(
        f"  in process: parse {len(lines) / parse_only:,.0f} lines/s, parse + assemble "
        f"{len(lines) / with_assembly:,.0f} lines/s: the assembler adds {with_assembly / parse_only - 1:.0%}"
    )
    print(f"  peak memory, --max-open 100         {narrow_peak / 1024:>10.1f} MiB")
    ratio = wide_peak / narrow_peak
    print(f"  peak memory, --max-open 50000       {wide_peak / 1024:>10.1f} MiB  (ratio {ratio:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
