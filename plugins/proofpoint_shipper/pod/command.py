"""`ppship pod stream` (the collector) and `ppship simulate pod` (the local stream stand-in).

Entry point: `register(subcommands, simulate)`. The token comes from POD_TOKEN or --token-file and
the cluster id from --cluster-id or POD_CLUSTER_ID; neither is printed or logged.
"""

import argparse
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from proofpoint_shipper import json_input
from proofpoint_shipper.checkpoint import FileCursorStore
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.pod import DEFAULT_URL
from proofpoint_shipper.proxies import check_client_settings
from proofpoint_shipper.rawio import stop_when_reader_goes
from proofpoint_shipper.service import (
    add_listen_arguments,
    add_operability_arguments,
    days,
    env_value,
    filesystem_path,
    operate,
    positive_int,
    positive_number,
    positive_seconds,
    read_secret,
    serve_until_stopped,
    share,
    stop_on_signals,
    url_of,
    writable_dir,
)
from proofpoint_shipper.sinks.options import add_output_arguments, open_sink

log = logging.getLogger("proofpoint_shipper")


def register(subcommands: argparse._SubParsersAction) -> None:
    pod = subcommands.add_parser(
        "pod",
        help="Proofpoint on Demand log stream collector",
        description="Collect the two PoD tables from the log stream.",
    )
    actions = pod.add_subparsers(dest="action", required=True, metavar="ACTION")
    stream = actions.add_parser(
        "stream",
        help="stream PoD message or maillog events into the data lake",
        description="Stream PoD events (live, or an archive backfill with --since/--until), every "
        "event once: resent events are removed, the resume point is saved only after the output "
        "confirmed the data. SIGTERM closes the stream, flushes, saves and exits 0.",
    )
    stream.add_argument("--type", choices=["message", "maillog"], required=True, help="the event type")
    stream.add_argument(
        "--url", type=url_of("wss", "ws"), default=DEFAULT_URL, help="log stream URL (default: %(default)s)"
    )
    stream.add_argument(
        "--token-file", type=filesystem_path, help="file holding the token (default: $POD_TOKEN)"
    )
    stream.add_argument(
        "--cluster-id",
        default=env_value("POD_CLUSTER_ID") or None,
        help="PoD cluster id (default: $POD_CLUSTER_ID)",
    )
    stream.add_argument(
        "--max-events",
        type=positive_int,
        help="stop after this many new events; those the API had sent beyond them are told, not taken",
    )
    stream.add_argument("--duration", type=positive_seconds, help="stop after this many seconds")
    stream.add_argument(
        "--since",
        type=_time,
        help="archive backfill from this ISO 8601 time (UTC unless it names a zone; rounded down "
        "to the hour)",
    )
    stream.add_argument(
        "--until",
        type=_time,
        help="archive backfill up to this ISO 8601 time (UTC unless it names a zone; rounded up to the hour)",
    )
    stream.add_argument(
        "--cursor", type=filesystem_path, help="resume file (default: ppship-state/pod-<type>.json)"
    )
    stream.add_argument(
        "--dead-letter-dir",
        type=filesystem_path,
        help="where bad frames are kept with their reason (default: dead-letter beside the cursor)",
    )
    add_output_arguments(stream)
    add_operability_arguments(stream)
    stream.set_defaults(run=run_stream)


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def token(
    token_file: Path | None, cluster_id: str | None, flags: tuple[str, str] = ("--token-file", "--cluster-id")
) -> str:
    """The token from `token_file` or $POD_TOKEN; ConfigError if it or the cluster id is missing.

    `flags` are the calling command's names for the token file and the cluster id, for the error.
    """
    token_flag, cluster_flag = flags
    secret = read_secret(token_file, "the token file") if token_file is not None else env_value("POD_TOKEN")
    if not secret:
        raise ConfigError(f"PoD token missing: set POD_TOKEN or {token_flag}")
    if not secret.isprintable() or any(character.isspace() for character in secret):
        raise ConfigError(  # the handshake would fail on it, retried as a dropped stream
            "the PoD token holds white space or control characters, which no Authorization "
            f"header carries: check POD_TOKEN or {token_flag}"
        )
    if not cluster_id:
        raise ConfigError(f"PoD cluster id missing: set POD_CLUSTER_ID or {cluster_flag}")
    return secret


def run_stream(args: argparse.Namespace) -> int:
    with operate(args):
        return _stream(args)


def _stream(args: argparse.Namespace) -> int:
    if args.until is not None and args.since is None:
        raise ConfigError("--until needs --since (an archive backfill)")
    if args.since is not None and args.since >= datetime.now(UTC):
        raise ConfigError(f"--since {args.since.isoformat()} is in the future: nothing to backfill yet")
    if args.until is not None and args.until <= args.since:
        raise ConfigError("--until must be later than --since")
    secret = token(args.token_file, args.cluster_id)
    check_client_settings(websocket=True)  # before the first handshake, which would fail its own way
    store = FileCursorStore(args.cursor or Path(f"ppship-state/pod-{args.type}.json"))
    store.claim()  # a second collector on this resume file stops here
    store.load()  # an unreadable resume file fails now
    from proofpoint_shipper.pod.stream import PodStream, StreamSettings  # websockets: only when run

    if args.output == "s3" and args.spool_dir is None:
        # The API never sends again what it sent once: without a spool, an S3 outage past the
        # upload retries would end the stream with the unflushed events lost.
        args.spool_dir = store.path.parent / "spool"
    # Beside the cursor, as the spool: a service's state folder (the current one may be "/").
    dead_letters = args.dead_letter_dir or store.path.parent / "dead-letter"
    sink = open_sink(args)
    stop = stop_on_signals()
    if args.output == "stdout":
        stop_when_reader_goes(stop)
    stream = PodStream(
        args.url,
        secret,
        args.cluster_id,
        args.type,
        sink,
        store,
        StreamSettings(dead_letter_dir=writable_dir(dead_letters, "the dead-letter folder")),
        stop=stop,
    )
    summary = stream.run(
        max_events=args.max_events, duration=args.duration, since=args.since, until=args.until
    )
    sink.close()
    replaced = f", {summary.replaced} with {json_input.REPLACED}" if summary.replaced else ""
    log.info(
        "PoD %s: %d events, %d resent removed, %d bad frames, %d reconnects%s",
        args.type,
        summary.events,
        summary.duplicates,
        summary.bad,
        summary.reconnects,
        replaced,
    )
    return 0


def register_simulator(simulators: argparse._SubParsersAction) -> None:
    """Add `simulate pod`."""
    pod = simulators.add_parser(
        "pod",
        help="a local PoD log stream on 127.0.0.1",
        description="Serve a local PoD log stream (websocket) with seeded events. "
        "Token and cluster id: $POD_TOKEN and $POD_CLUSTER_ID.",
    )
    add_listen_arguments(pod)
    pod.add_argument(
        "--rate", type=positive_number, default=5.0, help="events per second and type (default: %(default)s)"
    )
    pod.add_argument(
        "--days", type=days, default=2.0, help="days of history for the archive (default: %(default)s)"
    )
    pod.add_argument("--resend-rate", type=share, default=0.01, help="share of events sent twice")
    pod.add_argument(
        "--drop-every", type=positive_int, help="close each session abruptly after this many events"
    )
    pod.set_defaults(run=run_simulator)


def run_simulator(args: argparse.Namespace) -> int:
    from proofpoint_shipper.pod.events import Timeline
    from proofpoint_shipper.pod.simulator import PodSimulator

    token, cluster = env_value("POD_TOKEN"), env_value("POD_CLUSTER_ID")
    if not token or not cluster:
        raise ConfigError("set POD_TOKEN and POD_CLUSTER_ID: the simulator checks them as the API does")
    timeline = Timeline(args.seed, datetime.now(UTC) - timedelta(days=args.days), args.rate)
    simulator = PodSimulator(timeline, token, cluster, host=args.host, port=args.port)
    simulator.resend_rate, simulator.drop_every = args.resend_rate, args.drop_every
    return serve_until_stopped(simulator, lambda sim: f"PoD simulator at {sim.url}")
