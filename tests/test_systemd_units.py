"""The shipped systemd units, checked by systemd's own tools where they are installed: every
setting is one systemd reads (`systemd-analyze verify`), the sandbox is rated (`systemd-analyze
security`), and the system calls and socket families of the commands stay inside what the units'
filters allow, traced with strace while `ppship demo` runs the collectors and the relay. A filter
that refused a call the code makes would fail the service only on a user's host; here it fails
this test. Where systemd-analyze or strace is missing (or may not trace), these tests are skipped
and say so."""

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent_configs import CONFIGS

UNITS = sorted((CONFIGS / "systemd").glob("*.service"))
ANALYZE, STRACE = shutil.which("systemd-analyze"), shutil.which("strace")
PPSHIP = Path(sys.executable).with_name("ppship")
MOST_EXPOSED = 2.0  # of systemd-analyze security's 0 (shut in) to 10 (open); the units rate 1.3
# What MemoryDenyWriteExecute= refuses (as systemd's seccomp filter has it): memory mapped writable
# and executable, and memory made executable afterwards.
WRITABLE_EXECUTABLE = re.compile(
    r"\d+ +(?:mmap\([^)]*(?:PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE)|(?:pkey_)?mprotect\([^)]*PROT_EXEC)"
)
# Files beyond a process's own in /proc that are read and done without: CPython 3.13's mimalloc
# reads the overcommit setting at start and assumes overcommit where it cannot (the demo ran on
# 3.13 with /proc/sys hidden).
DONE_WITHOUT = {"/proc/sys/vm/overcommit_memory"}
NEWER_KEYS = {"RestartSteps": 254, "RestartMaxDelaySec": 254}  # setting → first systemd that reads it

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")


def _systemd_version() -> int:
    output = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", output).group(1))


def _runnable_copy(unit: Path, folder: Path) -> Path:
    """The unit as systemd-analyze can read it here: a template as one instance, and ppship where
    this test environment has it (verify refuses an ExecStart that is not there)."""
    name = unit.name.replace("@.", "@message.")
    copy = folder / name
    copy.write_text(unit.read_text().replace("/usr/local/bin/ppship", str(PPSHIP)))
    return copy


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_reads_every_setting_of_a_unit(unit, tmp_path):
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(_runnable_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
    )
    version = _systemd_version()
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if not any(f"Unknown key '{key}'" in line and version < first for key, first in NEWER_KEYS.items())
    ]
    assert complaints == [], f"systemd {version}"
    assert result.returncode == 0


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_unit_runs_its_service_in_a_sandbox(unit, tmp_path):
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(_runnable_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
    )
    rating = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert rating is not None, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(rating.group(1)) <= MOST_EXPOSED, result.stdout


# -- what the filters allow, against what the code does ------------------------------------------


def _settings(unit: Path, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit.read_text(), re.M)


def _system_calls(names: list[str]) -> set[str]:
    """The calls of filter entries (`@group`s expanded, as systemd does)."""
    calls: set[str] = set()
    for name in names:
        calls |= _group_calls(name) if name.startswith("@") else {name}
    return calls


@functools.cache
def _group_calls(group: str) -> frozenset[str]:
    """The calls of one `@group`, asked of systemd once: every unit names the same groups."""
    listing = subprocess.run(
        [ANALYZE, "syscall-filter", "--no-pager", group], capture_output=True, text=True, check=True
    )
    entries = [line.strip() for line in listing.stdout.splitlines()[1:]]
    return frozenset(_system_calls([entry for entry in entries if entry and not entry.startswith("#")]))


def _allowed_calls(unit: Path) -> set[str]:
    """An allow list, less what a later `~` line takes out of it."""
    allowed: set[str] = set()
    for setting in _settings(unit, "SystemCallFilter"):
        names = setting.removeprefix("~").split()
        if setting.startswith("~"):
            allowed -= _system_calls(names)
        else:
            allowed |= _system_calls(names)
    return allowed


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory) -> tuple[set[str], set[str], list[str], set[str]]:
    """(system calls, socket families, calls that would make memory writable and executable, the
    paths under /proc opened) of `ppship demo` and every process it starts."""
    if ANALYZE is None or STRACE is None:
        pytest.skip("systemd-analyze or strace is not installed here")
    if subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True).returncode:
        pytest.skip("strace may not trace processes here (no ptrace)")
    folder = tmp_path_factory.mktemp("strace")
    trace = folder / "trace"
    demo = subprocess.run(
        [STRACE, "-f", "-qq", "-s", "0", "-o", str(trace), str(PPSHIP), "demo"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    calls, families, executable_memory, proc_paths = set(), set(), [], set()
    with trace.open(errors="replace") as lines:
        for line in lines:
            call = re.match(r"\d+ +([a-z_0-9]+)\((\w*)", line)
            if call is not None:
                calls.add(call.group(1))
                if call.group(1) == "socket":
                    families.add(call.group(2))
                if WRITABLE_EXECUTABLE.match(line):
                    executable_memory.append(line)
                proc_paths.update(re.findall(r'"(/proc/[^"]*)"', line))
    assert {"socket", "connect", "execve"} <= calls  # the trace saw the children, not only the parent
    return calls, families, executable_memory, proc_paths


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_commands_make_only_system_calls_the_units_filter_allows(unit, demo_trace):
    calls, *_ = demo_trace
    assert _settings(unit, "SystemCallFilter"), "no SystemCallFilter="
    assert sorted(calls - _allowed_calls(unit)) == []


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_commands_open_only_sockets_of_families_the_unit_allows(unit, demo_trace):
    _, families, *_ = demo_trace
    (allowed,) = _settings(unit, "RestrictAddressFamilies") or ["(none: every family)"]
    assert families and families <= set(allowed.split())


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_commands_make_no_memory_writable_and_executable(unit, demo_trace):
    """MemoryDenyWriteExecute= would refuse it (a JIT, a library's callback trampolines)."""
    _, _, executable_memory, _ = demo_trace
    assert _settings(unit, "MemoryDenyWriteExecute") == ["yes"]
    assert executable_memory == []


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_commands_read_only_the_process_files_of_proc(unit, demo_trace):
    """ProcSubset=pid hides the rest of /proc (meminfo, sys, ...)."""
    *_, proc_paths = demo_trace
    assert _settings(unit, "ProcSubset") == ["pid"]
    beyond = {path for path in proc_paths if not re.match(r"/proc/(self|thread-self|\d+)(/|$)", path)}
    assert beyond - DONE_WITHOUT == set()
