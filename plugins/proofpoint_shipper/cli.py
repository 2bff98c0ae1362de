"""The `ppship` console command: one entry point, one subcommand per job.

`main(argv)` returns the exit code: 0 done, 2 a clear one-line error (bad flag, missing file).
"""

import argparse
import sys

from proofpoint_shipper import __version__, demo, doctor, local_s3, ship
from proofpoint_shipper.bucket import command as bucket_command
from proofpoint_shipper.errors import ShipperError
from proofpoint_shipper.fluent import command as relay_command
from proofpoint_shipper.gateway import command as gateway_command
from proofpoint_shipper.pod import command as pod_command
from proofpoint_shipper.proxies import bypass_proxies_for_loopback
from proofpoint_shipper.rawio import occupy_closed_standard_streams
from proofpoint_shipper.service import tune_gc_for_long_lived_state
from proofpoint_shipper.tap import command as tap_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppship",
        description="Collect Proofpoint email-security logs (TAP, PoD, on-prem gateway) and ship them "
        "to S3 in the layout a SIEM data lake ingests, alone or inside Fluent Bit, Vector or Fluentd.",
        epilog="Run 'ppship COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gateway_command.register(subcommands)
    simulate = tap_command.register(subcommands)
    pod_command.register(subcommands, simulate)
    relay_command.register(subcommands)
    ship.register(subcommands)
    local_s3.register(subcommands)
    bucket_command.register(subcommands)
    demo.register(subcommands)
    doctor.register(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    occupy_closed_standard_streams()
    args = build_parser().parse_args(argv)
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
