"""The grammars ship inside the wheel and load from the installed package."""

import subprocess
import sys
import zipfile

import pytest

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


def loaded_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, check=True)
    return run.stdout.decode().split()


def test_the_cli_imports_no_command_engine_until_one_runs():
    assert loaded_after("import proofpoint_shipper.cli; proofpoint_shipper.cli.build_parser()") == []


def test_the_gateway_parse_command_loads_the_grammars_and_no_network_client():
    code = "from proofpoint_shipper import cli; cli.main(['gateway', 'parse', '/dev/null'])"  # no output
    assert loaded_after(code) == ["lark", "proofpoint_shipper.gateway.parser"]
