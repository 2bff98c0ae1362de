"""`ppship tap fetch` (the collector) and `ppship simulate tap` (the local API stand-in).

Entry points: `register(subcommands)`. Credentials come from TAP_PRINCIPAL and TAP_SECRET or
--secret-file; they are never printed or logged.
"""

import argparse
import hashlib
import logging
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from proofpoint_shipper.bucket.access import open_client
from proofpoint_shipper.bucket.object_settings import object_settings
from proofpoint_shipper.checkpoint import FileCursorStore, S3CursorStore
from proofpoint_shipper.errors import ConfigError, FetchError, Stopped
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
    read_secret,
    seconds,
    serve_until_stopped,
    share,
    stop_on_signals,
    url_of,
    whole_number,
    writable_dir,
)
from proofpoint_shipper.sinks.options import add_output_arguments, open_sink
from proofpoint_shipper.tap import DEFAULT_BASE_URL
from proofpoint_shipper.tap.window import API_LOOKBACK

if TYPE_CHECKING:
    from proofpoint_shipper.tap.fetcher import TapFetcher

log = logging.getLogger("proofpoint_shipper")
DEFAULT_INTERVAL = timedelta(minutes=5)  # of --follow


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add `tap fetch`."""
    tap = subcommands.add_parser(
        "tap",
        help="Proofpoint TAP SIEM API collector",
        description="Collect the four TAP tables from the SIEM API.",
    )
    actions = tap.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch",
        help="fetch TAP events into the data lake",
        description="Fetch TAP messages and clicks, every event once: windows of at most an hour "
        "from the cursor to now minus --lag, each poll re-reading --lookback for late-indexed "
        "events. The cursor moves only after the output confirmed the data.",
    )
    fetch.add_argument(
        "--base-url",
        type=url_of("https", "http"),
        default=DEFAULT_BASE_URL,
        help="SIEM API (default: %(default)s)",
    )
    fetch.add_argument(
        "--secret-file",
        type=filesystem_path,
        help="file holding the TAP secret (default: $TAP_SECRET); the principal comes from $TAP_PRINCIPAL",
    )
    mode = fetch.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="catch up to now and exit (the default)")
    mode.add_argument(
        "--follow",
        action="store_true",
        help="keep polling every --interval until SIGTERM; a poll the API failed past the retry bound "
        "is logged and the next poll tries again",
    )
    fetch.add_argument(
        "--interval",
        type=_period,
        help=f"polling period with --follow, e.g. 300, 5m (default: {DEFAULT_INTERVAL.seconds // 60}m)",
    )
    fetch.add_argument(
        "--lookback",
        type=_seconds,
        default=timedelta(minutes=30),
        help="overlap re-read on every poll for late-indexed events (default: 30m)",
    )
    fetch.add_argument(
        "--lag",
        type=_seconds,
        default=timedelta(minutes=2),
        help="leave out the newest minutes, still being indexed (default: 2m)",
    )
    fetch.add_argument(
        "--since",
        type=_since,
        help="where a first run (no cursor yet) starts: ISO 8601 time (UTC unless it names a "
        "zone) or an age like 6h, 2d (at most 7 days; default 1h)",
    )
    fetch.add_argument(
        "--backfill",
        action="store_true",
        help="with --since: re-fetch from that time although a cursor exists "
        "(records already delivered may arrive again)",
    )
    fetch.add_argument(
        "--cursor",
        default="ppship-state/tap-cursor.json",
        help="cursor file, or s3://bucket/key (default: %(default)s)",
    )
    fetch.add_argument(
        "--dead-letter-dir",
        type=filesystem_path,
        help="where malformed API answers are kept (default: next to the cursor)",
    )
    add_output_arguments(fetch)
    add_operability_arguments(fetch)
    fetch.set_defaults(run=run_fetch)


def _seconds(text: str) -> timedelta:
    """A duration of 0 or more, in seconds or with a unit: 300, 5m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        duration = timedelta(seconds=float(number) * units[unit])
    except (ValueError, OverflowError):  # not a number; NaN; beyond what a timedelta holds
        duration = None
    if duration is None or duration < timedelta(0):
        raise argparse.ArgumentTypeError(f"not a duration of 0 or more: {text!r} (e.g. 300, 5m, 2h)")
    return duration


def _period(text: str) -> timedelta:
    """A polling period: a duration above 0."""
    duration = _seconds(text)
    if not duration:
        raise argparse.ArgumentTypeError(f"a polling period must be above 0, got {text!r}")
    return duration


def _since(text: str) -> datetime:
    if text[-1:] in "smhd" and text[:-1].replace(".", "", 1).isdigit():
        moment = datetime.now(UTC) - _seconds(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a time or age: {text!r}") from exc
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    # `7d` itself is taken (it is the documented bound) and starts at the oldest time the API
    # serves; the minute of slack covers the time from reading the flag to this check.
    if moment < datetime.now(UTC) - API_LOOKBACK - timedelta(minutes=1):
        raise argparse.ArgumentTypeError("--since reaches further back than the API's 7 days")
    if moment > datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"--since {text} is in the future: nothing to fetch yet")
    return moment


def credentials(secret_file: Path | None, secret_flag: str = "--secret-file") -> tuple[str, str]:
    """(principal, secret) from $TAP_PRINCIPAL and `secret_file` or $TAP_SECRET; ConfigError if missing.

    `secret_flag` is the calling command's name for `secret_file`, for the error.
    """
    principal = env_value("TAP_PRINCIPAL")
    if secret_file is not None:
        secret = read_secret(secret_file, "the secret file")
    else:
        secret = env_value("TAP_SECRET")
    missing = [
        name
        for name, value in (("TAP_PRINCIPAL", principal), (f"TAP_SECRET or {secret_flag}", secret))
        if not value
    ]
    if missing:
        raise ConfigError(f"TAP credentials missing: set {' and '.join(missing)}")
    return principal, secret


def object_writer(cursor: str) -> str:
    """Whose window-named S3 objects these are. With the cursor in S3, the cursor's: a collector
    that comes back on another host (a Kubernetes pod has a new name) re-runs a killed window
    under the same keys, so its objects replace what the killed run wrote. With a local cursor,
    the host's and the cursor file's: a new host starts a cursor of its own, and two collectors
    of one host (two tenants, each with its cursor) whose windows coincide, as they do when they
    start together, do not replace each other's objects."""
    if cursor.startswith("s3://"):
        return "tap-" + _digest(cursor)
    return f"{socket.gethostname()}-tap-{_digest(str(Path(cursor).resolve()))}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cursor_store(args: argparse.Namespace):
    """The --cursor store: a file, or an S3 object reached and written as the S3 output writes."""
    if args.cursor.startswith("s3://"):
        bucket, _, key = args.cursor[5:].partition("/")
        if not bucket or not key:
            raise ConfigError(f"--cursor wants s3://bucket/key, got {args.cursor!r}")
        client = open_client(args.endpoint_url, args.region, fail_fast=False)
        return S3CursorStore(client, bucket, key, object_settings(args))  # as the S3 output writes
    return FileCursorStore(Path(args.cursor))


def run_fetch(args: argparse.Namespace) -> int:
    with operate(args):
        return _fetch(args)


DAILY_REQUESTS = 1800  # about what the API allows these credentials in a rolling day, all tools included


def _warn_of_quota(interval: timedelta) -> None:
    """A poll is a request at least: polling faster than the day's budget allows ends in 429s."""
    polls = timedelta(days=1) / interval
    if polls > DAILY_REQUESTS:
        log.warning(
            "--interval %s: about %d polls a day, over the ~%d requests the TAP API allows these "
            "credentials a day (shared by every tool that uses them); expect 429 answers and delays",
            f"{interval.total_seconds():g} s",
            polls,
            DAILY_REQUESTS,
        )


def _fetch(args: argparse.Namespace) -> int:
    if args.interval is not None and not args.follow:
        raise ConfigError("--interval needs --follow: without it, one catch-up run and no polling")
    args.interval = args.interval or DEFAULT_INTERVAL
    principal, secret = credentials(args.secret_file)
    check_client_settings()  # before the first request, which would fail its own way
    if args.follow:
        _warn_of_quota(args.interval)
    store = cursor_store(args)
    store.claim()  # a second collector on this cursor stops here
    store.load()  # an unreadable cursor fails now, before any request
    beside_cursor = Path("ppship-state") if args.cursor.startswith("s3://") else Path(args.cursor).parent
    dead_letters = writable_dir(
        args.dead_letter_dir or beside_cursor / "dead-letter", "the dead-letter folder"
    )
    from proofpoint_shipper.tap.client import TapClient  # httpx: only when run
    from proofpoint_shipper.tap.fetcher import FetchSettings, TapFetcher

    sink = open_sink(args, object_writer(args.cursor))
    stop = stop_on_signals()
    if args.output == "stdout":
        stop_when_reader_goes(stop)
    client = TapClient(args.base_url, principal, secret, stop=stop)
    settings = FetchSettings(lookback=args.lookback, lag=args.lag, dead_letter_dir=dead_letters)
    fetcher = TapFetcher(client, sink, store, settings, progress=sys.stderr if sys.stderr.isatty() else None)
    skipped = poll_loop(fetcher, args, stop)
    sink.close()
    client.close()
    return 1 if skipped else 0


def poll_loop(fetcher: "TapFetcher", args: argparse.Namespace, stop: threading.Event) -> int:
    """Poll once, or with --follow until `stop`; returns how many windows were skipped."""
    since, skipped = args.since, 0
    while True:
        try:
            summary = fetcher.poll(since=since, backfill=args.backfill)
        except Stopped as exc:
            log.info("TAP fetch %s; its window is fetched on the next run", exc)
            return skipped
        except FetchError as exc:
            if not args.follow:
                raise
            # A follower outlives an outage: under an agent's exec input nothing would restart it.
            log.error(
                "TAP poll failed: %s; the cursor stays where the output last confirmed; next poll in %g s",
                exc,
                args.interval.total_seconds(),
            )
            if stop.wait(args.interval.total_seconds()):
                return skipped
            continue
        skipped += len(summary.skipped)
        log.info(
            "TAP poll done: %d windows, %d new events, %d already seen%s",
            summary.windows,
            summary.events,
            summary.duplicates,
            f", skipped windows: {', '.join(summary.skipped)}" if summary.skipped else "",
        )
        if summary.resumed and since is not None and args.backfill:
            log.info("the interrupted run's windows are done: now the backfill from %s", since.isoformat())
            continue  # else the backfill asked for was never run, with a single line of info
        since = None
        if not args.follow or stop.wait(args.interval.total_seconds()):
            return skipped


def register_simulator(simulators: argparse._SubParsersAction) -> None:
    """Add `simulate tap`."""
    tap = simulators.add_parser(
        "tap",
        help="a local TAP SIEM API on 127.0.0.1",
        description="Serve a local TAP SIEM API with seeded events. Credentials: "
        "$TAP_PRINCIPAL and $TAP_SECRET (the same the fetcher uses).",
    )
    add_listen_arguments(tap)
    tap.add_argument("--days", type=days, default=2.0, help="days of events up to now (default: %(default)s)")
    tap.add_argument(
        "--rate", type=positive_int, default=60, help="messages and clicks per hour (default: %(default)s)"
    )
    tap.add_argument("--replay", type=filesystem_path, help="serve the events of this NDJSON file instead")
    tap.add_argument(
        "--quota", type=whole_number, default=1800, help="requests per 24 h and pool (default: %(default)s)"
    )
    tap.add_argument("--fail-rate", type=share, default=0.0, help="share of requests answered 500")
    tap.add_argument("--drop-rate", type=share, default=0.0, help="share of connections dropped")
    tap.add_argument("--slow", type=seconds, default=0.0, help="seconds of delay before each answer")
    tap.set_defaults(run=run_simulator)


def run_simulator(args: argparse.Namespace) -> int:
    from proofpoint_shipper.tap.events import generate, replay
    from proofpoint_shipper.tap.simulator import TapSimulator

    principal, secret = env_value("TAP_PRINCIPAL"), env_value("TAP_SECRET")
    if not principal or not secret:
        raise ConfigError("set TAP_PRINCIPAL and TAP_SECRET: the simulator checks them as the API does")
    now = datetime.now(UTC)
    events = list(
        replay(args.replay)
        if args.replay
        else generate(args.seed, now - timedelta(days=args.days), now, args.rate)
    )
    simulator = TapSimulator(events, principal, secret, quota=args.quota, host=args.host, port=args.port)
    simulator.fail_rate, simulator.drop_rate = args.fail_rate, args.drop_rate
    simulator.slow_seconds = args.slow
    return serve_until_stopped(simulator, lambda sim: f"TAP simulator at {sim.url} with {len(events)} events")
