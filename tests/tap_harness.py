"""Shared pieces for the TAP tests: a settable clock, a fetch against a simulator, record ids."""

import io
import json
from datetime import datetime, timedelta

from proofpoint_shipper.checkpoint import FileCursorStore
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.sinks.stdout import StdoutSink
from proofpoint_shipper.tap.client import TapClient
from proofpoint_shipper.tap.fetcher import FetchSettings, TapFetcher

FAST = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05)
PRINCIPAL, SECRET = "principal-123", "s3cret-456"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def tap_fetcher(simulator, tmp_path, out: io.BytesIO, secret=SECRET, **clock) -> tuple[TapClient, TapFetcher]:
    """The real client (fast retries) and fetcher, writing NDJSON to `out`, the cursor in tmp_path."""
    client = TapClient(simulator.url, PRINCIPAL, secret, retry=FAST)
    fetcher = TapFetcher(
        client,
        StdoutSink(out),
        FileCursorStore(tmp_path / "cursor.json"),
        FetchSettings(dead_letter_dir=tmp_path / "dead-letter"),
        **clock,
    )
    return client, fetcher


def fetch(simulator, clock, tmp_path, since=None, secret=SECRET):
    """One poll through the real client, fetcher and stdout sink; (records, summary)."""
    out = io.BytesIO()
    client, fetcher = tap_fetcher(simulator, tmp_path, out, secret, now=clock)
    try:
        summary = fetcher.poll(since=since)
    finally:
        client.close()
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def record_id(record: dict) -> str:
    return record["id"]
