"""Peak memory of a child process, measured as the child alone uses it.

`ru_maxrss` from wait4 also counts the instant between fork and exec, when the child still maps
its parent, so a large parent (a simulator, a local S3) inflates it. VmHWM in /proc/<pid>/status
starts again at exec; it is sampled while the child runs, and the last value is its peak.
"""

import os
import subprocess
import threading
import time
from pathlib import Path

CORES = sorted(os.sched_getaffinity(0))  # read at import, before a bench pins itself to one core


class PeakMemory:
    def __init__(self, pid: int, every: float = 0.02):
        self.pid = pid
        self.every = every
        self.peak_kib = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while True:
            try:
                text = status.read_text()
            except (FileNotFoundError, ProcessLookupError):
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            if "State:\tZ" in text:
                return  # exited, not yet reaped: the last reading stands
            time.sleep(self.every)

    def result(self) -> int:
        """Call after the child exited (before it is reaped is best; after is fine)."""
        self._thread.join(timeout=5)
        return self.peak_kib


def run_on_own_core(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run a child on the second core (when there is one): (wall seconds, its peak KiB).

    Raises SystemExit with the end of its stderr when it fails.
    """
    began = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if len(CORES) > 1:
        os.sched_setaffinity(child.pid, {CORES[1]})
    memory = PeakMemory(child.pid)
    stderr = child.stderr.read()
    if child.wait() != 0:
        raise SystemExit(f"{' '.join(command[2:5])} failed: {stderr.decode()[-500:]}")
    return time.perf_counter() - began, memory.result()
