"""The `ppship` console command: one entry point, one subcommand per job.

`main(argv)` returns the exit code: 0 done, 2 a clear one-line error (bad flag, missing file).
"""

import argparse
import importlib
import sys
from collections.abc import Callable

from proofpoint_shipper import __version__
from proofpoint_shipper.errors import ShipperError
from proofpoint_shipper.proxies import bypass_proxies_for_loopback
from proofpoint_shipper.rawio import forgiving_stderr, occupy_closed_standard_streams
from proofpoint_shipper.service import tune_gc_for_long_lived_state

Registrar = Callable[[argparse._SubParsersAction], None]


def _from_module(name: str) -> Registrar:
    """The `register(subcommands)` of a command's module, imported only when called."""
    return lambda subcommands: importlib.import_module(name).register(subcommands)


def _register_simulators(subcommands: argparse._SubParsersAction) -> None:
    simulate = subcommands.add_parser(
        "simulate",
        help="local stand-ins for the Proofpoint APIs",
        description="Local stand-ins for the Proofpoint APIs, for tests and demos.",
    )
    simulators = simulate.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name in ("proofpoint_shipper.tap.command", "proofpoint_shipper.pod.command"):
        importlib.import_module(name).register_simulator(simulators)


# Each command word and what registers it, in the order `ppship --help` lists them. A command
# line naming one imports that command's modules alone: an agent starting `ppship gateway
# parse`, or a script starting many short commands, does not wait for every other command's.
COMMANDS: dict[str, Registrar] = {
    "gateway": _from_module("proofpoint_shipper.gateway.command"),
    "tap": _from_module("proofpoint_shipper.tap.command"),
    "simulate": _register_simulators,
    "pod": _from_module("proofpoint_shipper.pod.command"),
    "relay": _from_module("proofpoint_shipper.fluent.command"),
    "ship": _from_module("proofpoint_shipper.ship"),
    "dev": _from_module("proofpoint_shipper.local_s3"),
    "s3": _from_module("proofpoint_shipper.bucket.command"),
    "demo": _from_module("proofpoint_shipper.demo"),
    "doctor": _from_module("proofpoint_shipper.doctor"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the command `argv` names, or of every command (for --help, or a typo)."""
    parser = argparse.ArgumentParser(
        prog="ppship",
        description="Collect Proofpoint email-security logs (TAP, PoD, on-prem gateway) and ship them "
        "to S3 in the layout a SIEM data lake ingests, alone or inside Fluent Bit, Vector or Fluentd.",
        epilog="Run 'ppship COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = argv[0] if argv else None
    for name in [named] if named in COMMANDS else COMMANDS:
        COMMANDS[name](subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    occupy_closed_standard_streams()
    forgiving_stderr()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    tune_gc_for_long_lived_state()
    bypass_proxies_for_loopback()
    try:
        return args.run(args)
    except ShipperError as exc:
        one_line = " ".join(str(exc).splitlines())  # a library's message may span lines
        print(f"ppship: error: {one_line}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine's fault (a full disk, a file size limit): one line, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"ppship: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
