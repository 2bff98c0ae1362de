"""The grammars ship inside the wheel and load from the installed package; the dependencies'
lower bounds are the ones `make test-lowest` runs on."""

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from proofpoint_shipper.gateway import grammar

GRAMMARS = {"common.lark", "syslog.lark", "filter_instance.lark", "sendmail.lark"}


def test_every_grammar_loads_with_lalr_and_the_contextual_lexer():
    for name in grammar.GRAMMARS:
        lark = grammar.parser(name)
        assert lark.options.parser == "lalr" and lark.options.lexer == "contextual"
    assert {p.name for p in grammar.grammar_dir().glob("*.lark")} >= GRAMMARS


@pytest.mark.slow
def test_wheel_contains_the_grammars_and_runs_from_them(tmp_path):
    root = grammar.grammar_dir().parent
    if root.name == "proofpoint_shipper":
        pytest.skip("running from an installed wheel already: nothing to build")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr.decode()
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"proofpoint_shipper/grammars/{name}" for name in GRAMMARS} <= names
    assert "proofpoint_shipper/data/gateway-demo.log" in names  # `ppship demo` needs it installed
    # Load the grammars from the unpacked wheel alone, as an installed package would.
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    probe = (
        "from proofpoint_shipper.gateway import grammar, parse_line; "
        "print(grammar.grammar_dir()); print(parse_line('x[1]: y')['program'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr.decode()
    where, program = run.stdout.decode().split()
    assert where.startswith(str(tmp_path / "site")) and program == "x"


# Each command imports its own engine when it runs: `ppship --help`, and an agent starting
# `ppship gateway parse`, do not pay for the clients and grammars of every other command.
HEAVY = ("lark", "httpx", "websockets", "boto3", "proofpoint_shipper.gateway.parser")


def loaded_after(code: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `modules` a fresh interpreter holds after running `code`."""
    probe = f"import sys; {code}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, check=True)
    return run.stdout.decode().split()


def test_the_cli_imports_no_command_engine_until_one_runs():
    assert loaded_after("import proofpoint_shipper.cli; proofpoint_shipper.cli.build_parser()") == []


def test_the_gateway_parse_command_loads_the_grammars_and_no_network_client():
    code = "from proofpoint_shipper import cli; cli.main(['gateway', 'parse', '/dev/null'])"  # no output
    assert loaded_after(code) == ["lark", "proofpoint_shipper.gateway.parser"]
    assert loaded_after(code, ("http.server", "asyncio")) == []


COMMAND_MODULES = (
    "proofpoint_shipper.gateway.command",
    "proofpoint_shipper.tap.command",
    "proofpoint_shipper.pod.command",
    "proofpoint_shipper.fluent.command",
    "proofpoint_shipper.ship",
    "proofpoint_shipper.local_s3",
    "proofpoint_shipper.bucket.command",
    "proofpoint_shipper.demo",
    "proofpoint_shipper.doctor",
)


def test_a_command_line_imports_the_modules_of_its_command_alone():
    code = "from proofpoint_shipper import cli; cli.main(['gateway', 'parse', '/dev/null'])"
    assert loaded_after(code, COMMAND_MODULES) == ["proofpoint_shipper.gateway.command"]
    code = "from proofpoint_shipper import cli; cli.build_parser(['simulate', 'tap'])"
    simulators = ["proofpoint_shipper.tap.command", "proofpoint_shipper.pod.command"]
    assert loaded_after(code, COMMAND_MODULES) == simulators


def test_help_and_unknown_command_words_import_every_command():
    for argv in ([], ["--help"], ["gatway", "parse"]):
        code = f"from proofpoint_shipper import cli; cli.build_parser({argv!r})"
        assert loaded_after(code, COMMAND_MODULES) == list(COMMAND_MODULES)


ROOT = Path(__file__).resolve().parent.parent


def declared_lower_bounds() -> dict[str, Requirement]:
    """Each dependency of pyproject.toml (the extras' too), by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [text for group in project["optional-dependencies"].values() for text in group]
    declared: dict[str, Requirement] = {}
    for text in project["dependencies"] + extras:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert declared.setdefault(name, requirement).specifier == requirement.specifier, text
    return declared


def lowest_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "tests" / "lowest-versions.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (pin,) = requirement.specifier
            assert pin.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(pin.version)
    return pins


def test_the_lowest_versions_file_pins_every_dependency_at_its_lower_bound():
    declared, pins = declared_lower_bounds(), lowest_pins()
    assert sorted(pins) == sorted(declared)
    for name, requirement in declared.items():
        floors = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
        assert len(floors) == 1, f"{requirement}: one lower bound (>=, or == for a pinned tool)"
        # A bound names a release series (lark>=1.2); the pin is that series' first release (1.2.1).
        (floor,) = floors
        pin = pins[name]
        assert pin in requirement.specifier, f"{name}=={pin} is outside {requirement}"
        assert pin.release[: len(floor.release)] == floor.release, f"{name}=={pin} is not {floor}"


OLD_PYTHON = """#!/bin/sh
# Python 3.10, as far as the Makefile asks: -V names it, and the version check fails.
[ "$1" = -V ] && echo "Python 3.10.13" && exit 0
exit 1
"""


@pytest.mark.parametrize("python", ["old", "missing"])
def test_make_tells_of_a_python_older_than_3_11_before_making_an_environment(tmp_path, python):
    """A machine whose python3 is 3.10 (Ubuntu 22.04) got a half-made environment of it, which
    every later `make ... PYTHON=python3.11` reused and failed on in the same way."""
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    interpreter = tmp_path / "python3.10"
    if python == "old":  # an interpreter that is not there cannot run on CI machines: a stand-in
        interpreter.write_text(OLD_PYTHON)
        interpreter.chmod(0o755)
    # Not the settings of a make this suite may run under (`make test-lowest` sets CONSTRAINTS):
    # they reach a child make through MAKEFLAGS.
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run = subprocess.run(
        ["make", "-C", str(tmp_path), "lint", f"PYTHON={interpreter}"],
        capture_output=True,
        timeout=60,
        env=clean,
    )
    said = "Python 3.10.13" if python == "old" else "not found"
    assert run.returncode != 0
    assert (
        f"make: this project needs Python 3.11 or newer, and PYTHON={interpreter} is {said}: "
        "run make lint PYTHON=python3.11"
    ) in run.stderr.decode()
    assert not (tmp_path / ".venv").exists()
