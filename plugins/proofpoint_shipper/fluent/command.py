"""`ppship relay`: the gateway parser inside a Fluent pipeline, over the forward protocol.

Entry point: `register(subcommands)`. `--workers N` starts N processes sharing the port
(SO_REUSEPORT); each one acks a client's chunk only after its upstream acked it.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from proofpoint_shipper.errors import ConfigError, DeliveryAbandoned
from proofpoint_shipper.fluent.relay import MEMORY_PER_WIRE_BYTE, ForwardRelay, RelaySettings
from proofpoint_shipper.fluent.server_tls import PASSWORD_ENV, server_tls
from proofpoint_shipper.fluent.table_upstream import TableUpstream
from proofpoint_shipper.gateway.assembler import Assembler, AssemblySettings
from proofpoint_shipper.gateway.options import record_key, reference_time
from proofpoint_shipper.gateway.timestamps import resolve_zone
from proofpoint_shipper.listening import (
    AcceptFailures,
    bound_socket,
    is_loopback,
    raise_open_file_limit,
    url_host,
)
from proofpoint_shipper.service import (
    STOP_SIGNALS,
    add_operability_arguments,
    ending_with_this_process,
    filesystem_path,
    host_and_port,
    operate,
    peer_address,
    positive_int,
    positive_seconds,
    read_secret,
    seconds,
    set_up_operability,
)
from proofpoint_shipper.sinks.forward import ForwardSink
from proofpoint_shipper.sinks.options import add_s3_arguments, check_output_flags, open_s3_sink, output_only
from proofpoint_shipper.trust import agent_tls

log = logging.getLogger("proofpoint_shipper")


def register(subcommands: argparse._SubParsersAction) -> None:
    relay = subcommands.add_parser(
        "relay",
        help="parse gateway lines inside a Fluent pipeline (forward protocol in and out)",
        description="Accept Fluent forward traffic, parse the gateway line of each record, re-tag it "
        "proofpoint.gateway.filter|sendmail|other and pass it upstream (or write the gateway text tables "
        "in S3); a client's chunk is acked only after upstream acked it (or S3 stored it). "
        "SIGTERM stops accepting, drains and exits 0.",
    )
    relay.add_argument(
        "--listen",
        default="127.0.0.1:24224",
        metavar="HOST:PORT",
        help="where clients connect (default: %(default)s)",
    )
    relay.add_argument(
        "--output",
        choices=["forward", "s3"],
        default="forward",
        help="forward: to the agent's forward input at --upstream; s3: straight into the gateway "
        "text tables, a chunk acked once its objects are written (default: %(default)s)",
    )
    only = output_only(relay, relay)
    only(
        "forward",
        "--upstream",
        metavar="HOST:PORT",
        help="the agent's forward input that receives the parsed records",
    )
    relay.add_argument(
        "--key", action="append", type=record_key, help="record key of the line (default: log, then message)"
    )
    relay.add_argument("--timezone", default="local", help="zone of BSD timestamps (default: local)")
    relay.add_argument(
        "--reference-time",
        type=reference_time,
        metavar="ISO8601",
        help="time BSD years are inferred against (default: now); set it to re-process old logs",
    )
    relay.add_argument(
        "--shared-key-file", type=filesystem_path, help="shared key clients must prove (default: none)"
    )
    only("forward", "--upstream-shared-key-file", type=filesystem_path, help="shared key for the upstream")
    relay.add_argument("--tls-cert", type=filesystem_path, help="serve TLS with this certificate (PEM)")
    relay.add_argument("--tls-key", type=filesystem_path, help="the certificate's private key (PEM)")
    relay.add_argument(
        "--tls-key-password-file",
        type=filesystem_path,
        help=f"file holding the passphrase of an encrypted --tls-key (default: ${PASSWORD_ENV})",
    )
    only("forward", "--upstream-tls", action="store_true", help="connect upstream with TLS")
    only(
        "forward",
        "--upstream-ca",
        type=filesystem_path,
        help="CA bundle to verify the upstream agent with, for an agent whose certificate a private "
        "CA signed (implies --upstream-tls; default: the system's CAs)",
    )
    relay.add_argument(
        "--upstream-timeout",
        type=positive_seconds,
        default=30.0,
        help="seconds to wait for upstream's ack before trying again (default: %(default)s)",
    )
    relay.add_argument(
        "--max-frame-bytes",
        type=positive_int,
        default=16 * 1024 * 1024,
        help="larger frames close their connection (default: %(default)s)",
    )
    relay.add_argument(
        "--max-in-flight-bytes",
        type=positive_int,
        default=64 * 1024 * 1024,
        help="memory of the records being delivered upstream at once, over all clients, estimated "
        f"as {MEMORY_PER_WIRE_BYTE} times their size on the wire; frames still arriving are held to "
        "as much again (default: %(default)s)",
    )
    relay.add_argument(
        "--drain-seconds",
        type=seconds,
        default=30.0,
        help="on SIGTERM, how long chunks in delivery may take; unacked ones are "
        "sent again by their clients (default: %(default)s)",
    )
    relay.add_argument(
        "--assemble",
        action="store_true",
        help="also join each gateway message's lines into one record, tagged proofpoint.gateway.message "
        "(S3 table proofpoint_gateway_messages); messages open at a crash are lost, their lines are not; "
        "with --workers, each worker joins the lines of its own connections",
    )
    relay.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        help="with --assemble: seconds a message may go without a line before it is sent with "
        f"complete=false (default: {AssemblySettings.idle_timeout})",
    )
    relay.add_argument(
        "--max-open",
        type=positive_int,
        help="with --assemble: sessions held open at once; beyond it the least recently active is "
        f"sent with complete=false (default: {AssemblySettings.max_open})",
    )
    relay.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help=f"processes sharing the port, one per core is the point (default: 1, at most {MAX_WORKERS})",
    )
    add_s3_arguments(relay, relay.add_argument_group("s3 output"))
    add_operability_arguments(relay)
    relay.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    relay.set_defaults(run=run)


MAX_WORKERS = 128  # beyond any gateway host's cores: a typo (--workers 1000) starts no fork storm


def worker_count(text: str) -> int:
    count = positive_int(text)
    if count > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS} workers, one per core: got {text!r}")
    return count


def _secret(path: Path | None) -> str | None:
    return None if path is None else read_secret(path, "the shared key file")


def run(args: argparse.Namespace) -> int:
    if args.workers > 1:
        set_up_operability(args)  # each worker serves its own metrics: none here
        _, upstream = _prepare(args)  # a setting at fault: one error line here, not one per worker
        upstream.close()
        return _run_workers(args)
    with operate(args):
        return _run_one(args)


def _tell_an_open_door(host: str, port: int, keyed: bool) -> None:
    """Other hosts can reach the relay and it asks no shared key (not `keyed`): any of them can
    write lines into the gateway tables of a security data lake."""
    if not keyed and not is_loopback(host):
        log.warning(
            "relay: listening on %s:%d with no --shared-key-file: any host that reaches the port can "
            "write gateway lines into the data lake; give the relay and its agents a shared key "
            "(and --tls-cert, as the key proves who connects but does not encrypt)",
            url_host(host),
            port,
        )


def _prepare(args: argparse.Namespace):
    """The relay's settings and its upstream, every flag, file and the bucket checked:
    ConfigError with one line for the first at fault."""
    _check_assemble_flags(args)
    host, port = host_and_port(args.listen, "--listen")
    upstream = _upstream(args)
    tls = server_tls(args.tls_cert, args.tls_key, args.tls_key_password_file)
    settings = RelaySettings(
        host=host,
        port=port,
        keys=tuple(args.key or ("log", "message")),
        shared_key=_secret(args.shared_key_file),
        tls=tls,
        max_frame_bytes=args.max_frame_bytes,
        max_in_flight_bytes=args.max_in_flight_bytes,
        reuse_port=args.reuse_port,
        drain_seconds=args.drain_seconds,
    )
    return settings, upstream


def _run_one(args: argparse.Namespace) -> int:
    settings, upstream = _prepare(args)
    raise_open_file_limit()  # one descriptor per client connection
    from proofpoint_shipper.gateway.parser import GatewayParser  # builds the grammars: only when run

    assembler = Assembler(_assembly_settings(args)) if args.assemble else None
    relay = ForwardRelay(
        GatewayParser(zone=resolve_zone(args.timezone), reference=args.reference_time),
        upstream,
        settings,
        assembler,
    )
    code = asyncio.run(_serve(relay))
    if not relay.delivery_left_running:  # else the delivery thread holds the upstream still
        with contextlib.suppress(DeliveryAbandoned):  # unacked chunks: their clients send them again
            upstream.close()
    return code


def _check_assemble_flags(args: argparse.Namespace) -> None:
    """The assembler's flags without --assemble would be ignored: a ConfigError instead."""
    for flag, value in (("--idle-timeout", args.idle_timeout), ("--max-open", args.max_open)):
        if value is not None and not args.assemble:
            raise ConfigError(f"{flag} is for --assemble, which is not given")


def _assembly_settings(args: argparse.Namespace) -> AssemblySettings:
    settings = AssemblySettings()
    if args.idle_timeout is not None:
        settings.idle_timeout = args.idle_timeout
    if args.max_open is not None:
        settings.max_open = args.max_open
    return settings


def _upstream(args: argparse.Namespace):
    check_output_flags(args)
    if args.output == "s3":
        return TableUpstream(open_s3_sink(args))
    if not args.upstream:
        raise ConfigError("--output forward needs --upstream HOST:PORT")
    up_host, up_port = peer_address(args.upstream, "--upstream")
    return ForwardSink(
        up_host,
        up_port,
        shared_key=_secret(args.upstream_shared_key_file),
        tls=agent_tls(args.upstream_tls, args.upstream_ca, "--upstream-ca"),
        ca_flag="--upstream-ca",
    )


async def _serve(relay: ForwardRelay) -> int:
    host, port = await _listen(relay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptFailures("relay"))
    for signum in STOP_SIGNALS:  # before the banner: who read it may send one at once
        loop.add_signal_handler(signum, stop.set)
    # One write with its newline: --workers print into one pipe, and unbuffered (PYTHONUNBUFFERED)
    # print() writes the newline apart, so two banners could run together on one line.
    print(f"relay listening on {url_host(host)}:{port}\n", end="", flush=True)
    if not relay.settings.reuse_port:  # a worker: its supervisor told it
        _tell_an_open_door(host, port, relay.settings.shared_key is not None)
    waits = [asyncio.create_task(event.wait()) for event in (stop, relay.broken)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    await relay.stop()
    log.info("relay stopped: %d records relayed", relay.relayed)
    if relay.failure is not None:
        raise relay.failure  # exit code 2, as for any setting refused at start
    return 1 if relay.broken.is_set() else 0


async def _listen(relay: ForwardRelay) -> tuple[str, int]:
    """The address the relay listens on; a ConfigError in one line when it cannot."""
    try:
        return await relay.start()
    except OSError as exc:
        where = f"{url_host(relay.settings.host)}:{relay.settings.port}"
        if isinstance(exc, socket.gaierror):  # a name that does not resolve: its errno is no OS error
            reason = exc.strerror
        else:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's text repeats the address
        raise ConfigError(f"cannot listen on {where}: {reason}") from None


def _run_workers(args: argparse.Namespace) -> int:
    listen, reservation = _one_address_for_all(args.listen)
    _tell_an_open_door(*host_and_port(listen, "--listen"), args.shared_key_file is not None)
    command = [
        sys.executable,
        "-m",
        "proofpoint_shipper",
        *_without_workers(sys.argv[1:]),
        *("--workers", "1", "--reuse-port", "--listen", listen),
    ]
    try:
        ends_with_us = ending_with_this_process()  # a killed supervisor leaves no worker on the port
        children = [
            subprocess.Popen(command + _metrics_port(args, index), preexec_fn=ends_with_us)
            for index in range(args.workers)
        ]
        stopping = []

        def pass_on(signum, _frame) -> None:
            stopping.append(signum)
            _signal_all(children, signum)

        for signum in STOP_SIGNALS:
            signal.signal(signum, pass_on)
        return _supervise(children, stopping)
    finally:
        if reservation is not None:
            reservation.close()


def _one_address_for_all(listen: str) -> tuple[str, socket.socket | None]:
    """The --listen of every worker, and the socket that holds its port if this picked one.

    Port 0 would give each worker a free port of its own, and clients would reach only one. So a
    port is picked here, bound (not listened on: no connection comes to it) with SO_REUSEPORT as
    the workers bind, and held while they run: no other program takes it meanwhile.

    A given port is first bound without SO_REUSEPORT, as a lone relay binds: the workers share
    their port with anything that listens there with it, another relay's workers among them, and
    the clients would be split between the two relays (an old one with another upstream, say)
    in silence. That port is refused at start instead, as a one-worker relay refuses it.
    """
    host, port = host_and_port(listen, "--listen")
    if port != 0:
        bound_socket(host, port, socket.SO_REUSEADDR).close()
        return listen, None
    reservation = bound_socket(host, 0, socket.SO_REUSEPORT)
    return f"{url_host(host)}:{reservation.getsockname()[1]}", reservation


def _supervise(children: list[subprocess.Popen], stopping: list) -> int:
    """Wait for the workers. One that ends on its own (a crash, a fault) takes the others down
    with it: a relay short of a worker looks alive, and its supervisor would not restart it."""
    code = 0
    running = {child.pid: child for child in children}
    while running:
        pid, status = os.wait()
        if running.pop(pid, None) is None:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        code = max(code, exit_code if exit_code >= 0 else 1)  # killed by a signal: a failure
        if not stopping:
            stopping.append(signal.SIGTERM)
            log.error("relay: worker %d ended (exit code %d); stopping the others", pid, exit_code)
            _signal_all(running.values(), signal.SIGTERM)
    for child in children:
        child.returncode = 0  # reaped above: Popen need not wait for them again
    return code


def _signal_all(children, signum: int) -> None:
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)


def _metrics_port(args: argparse.Namespace, index: int) -> list[str]:
    """Each worker serves its own metrics: PORT, PORT+1, ... (0: each a free port, logged)."""
    if args.metrics_port is None:
        return []
    return ["--metrics-port", str(args.metrics_port + index if args.metrics_port else 0)]


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--workers":
            skip = True
        elif not item.startswith("--workers="):
            out.append(item)
    return out
