"""TapFetcher: every TAP event into the lake once, across late indexing, restarts and kills.

A poll plans its windows (tap.window), saves them with the cursor as an intent, then for each
window: download, read event by event, drop events seen before (hash of the canonical event),
write under a name derived from the window, flush, and only then save cursor, seen-set and the
windows still to do. A killed run is re-run with exactly the saved windows, so an object store
rewrites the same keys. Malformed answers go to a dead-letter file; after a bound, the window is
skipped with an error naming it, and the poll goes on.
"""

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from proofpoint_shipper.checkpoint import refuse_foreign
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.metrics import CURSOR_LAG, PARSE_ERRORS, RECORDS_IN, RECORDS_OUT
from proofpoint_shipper.tap import ARRAYS
from proofpoint_shipper.tap.answer import MalformedAnswer, mend_lone_surrogates, read_answer
from proofpoint_shipper.tap.client import TapClient
from proofpoint_shipper.tap.events import creation_time, wire_time
from proofpoint_shipper.tap.set_aside import SetAside
from proofpoint_shipper.tap.shape import event_key, to_record
from proofpoint_shipper.tap.window import MAX_WINDOW, MIN_WINDOW, plan, still_served

log = logging.getLogger("proofpoint_shipper")
WRITE_GROUP = 500  # events handed to the sink at a time
NO_TIME = "no readable event time (messageTime, clickTime or threatTime)"


@dataclass
class PollSummary:
    windows: int = 0
    events: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)
    resumed: bool = False  # the windows of an interrupted run, not a plan of this poll's


@dataclass
class FetchSettings:
    lookback: timedelta = timedelta(minutes=30)  # re-read before the cursor: late-indexed events
    lag: timedelta = timedelta(minutes=2)  # do not ask for the last minutes: still being indexed
    window_attempts: int = 3  # tries of a window whose answer is malformed
    dead_letter_dir: Path = Path("ppship-state/dead-letter")


class TapFetcher:
    def __init__(
        self,
        client: TapClient,
        sink,
        store,
        settings: FetchSettings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress=None,
    ):
        self.client = client
        self.sink = sink
        self.store = store
        self.settings = settings
        self.now = now
        self.progress = progress  # a stream for progress lines, or None
        self._unconfirmed: Counter[str] = Counter()  # records handed to the sink, per table

    def poll(self, since: datetime | None = None, backfill: bool = False) -> PollSummary:
        """Catch up to now minus the lag: first the windows of an interrupted run, else from the
        cursor; `since` starts a first run (no cursor yet), or re-plans with `backfill`."""
        document = _checked(self.store.load() or {}, self.store.where)
        windows = self._still_served([(_time(a), _time(b)) for a, b in document.get("pending") or []])
        resumed = bool(windows)
        if resumed:
            log.info("finishing the %d windows of an interrupted run first", len(windows))
        else:
            if since is not None and document.get("cursor") and not backfill:
                log.info("a cursor exists: --since is ignored (add --backfill to re-fetch from it)")
                since = None
            windows = self._plan(document, since)
            document["pending"] = [[a.isoformat(), b.isoformat()] for a, b in windows]
            self.store.save(document)  # the intent first: a re-run repeats exactly these windows
        summary = PollSummary(resumed=resumed)
        seen: dict[str, str] = dict(document.get("seen") or {})
        for number, (start, end) in enumerate(windows):
            self._fetch_window(start, end, seen, summary)
            self.sink.flush()
            self._confirmed(end)
            self._prune(seen, end)
            remaining = [[a.isoformat(), b.isoformat()] for a, b in windows[number + 1 :]]
            self.store.save(
                {"cursor": end.isoformat(), "seen": seen, "pending": remaining}
            )  # after the flush
            summary.windows += 1
            self._report(number + 1, len(windows), summary)
        return summary

    def _confirmed(self, cursor: datetime) -> None:
        for table, count in self._unconfirmed.items():
            RECORDS_OUT.inc(count, table)
        self._unconfirmed.clear()
        lag = (self.now() - cursor).total_seconds()
        for table, _ in ARRAYS.values():
            CURSOR_LAG.set(lag, table)

    def _plan(self, document: dict, since: datetime | None) -> list[tuple[datetime, datetime]]:
        now = self.now()
        if since is not None or not document.get("cursor"):
            start = since or now - timedelta(hours=1)
            result = plan(start, now, timedelta(0), self.settings.lag)
        else:
            cursor = _time(document["cursor"])
            if cursor > now:
                log.warning(
                    "!!! the saved TAP cursor %s is ahead of this host's clock (%s): nothing is "
                    "fetched until the clock passes it. Check the clock (ppship doctor) or the cursor.",
                    wire_time(cursor),
                    wire_time(now),
                )
            result = plan(cursor, now, self.settings.lookback, self.settings.lag)
        if result.lost:
            _tell_lost(*result.lost)
        return result.windows

    def _still_served(self, pending: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
        """The windows of an interrupted run that the API still serves (window.still_served)."""
        result = still_served(pending, self.now())
        if result.lost:
            _tell_lost(*result.lost)
        return result.windows

    def _fetch_window(
        self, start: datetime, end: datetime, seen: dict[str, str], summary: PollSummary
    ) -> None:
        name = f"{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}"
        for attempt in range(1, self.settings.window_attempts + 1):
            answer = self._download(start, end)
            try:
                self._take(answer, name, end, seen, summary)
                answer.unlink()
                return
            except MalformedAnswer as exc:
                kept = self._dead_letter(answer, name, attempt)
                PARSE_ERRORS.inc(label="tap_answer")  # the table of a malformed answer is unknown
                log.error("TAP window %s: malformed answer (%s); raw answer kept in %s", name, exc, kept)
        summary.skipped.append(name)
        log.error(
            "TAP window %s skipped after %d malformed answers; its events are not fetched",
            name,
            self.settings.window_attempts,
        )

    def _download(self, start: datetime, end: datetime) -> Path:
        folder = self.settings.dead_letter_dir.parent / "partial"
        try:
            return self._download_into(folder, start, end)
        except OSError as exc:  # a full disk, a file size limit: the windows stay pending
            raise ConfigError(f"the TAP answer cannot be written to {folder}: {exc.strerror}") from exc

    def _download_into(self, folder: Path, start: datetime, end: datetime) -> Path:
        """The answer in a new file of `folder`; nothing is left behind when it fails."""
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=folder, suffix=".json")
        os.close(descriptor)
        path = Path(name)
        try:
            self.client.download(start, end, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _take(
        self, answer: Path, name: str, end: datetime, seen: dict[str, str], summary: PollSummary
    ) -> None:
        """Write the answer's new events. A key enters `seen` only once its record was handed
        to the sink, so a retry after a broken answer writes whatever had not been written."""
        groups: dict[str, list[tuple[str, str, dict]]] = {}
        received: Counter[str] = Counter()
        timeless: Counter[str] = Counter()
        set_aside = SetAside(self.settings.dead_letter_dir / f"tap-{name}-unknown-arrays.ndjson")
        if mended := mend_lone_surrogates(answer):
            log.warning("TAP window %s: %d lone UTF-16 surrogate escapes, read as U+FFFD", name, mended)
        try:
            for array, event in read_answer(answer):
                if array not in ARRAYS:
                    set_aside.keep(array, event)
                    continue
                table = ARRAYS[array][0]
                received[table] += 1
                key = event_key(array, event)
                if key in seen:
                    summary.duplicates += 1
                    continue
                record, created = to_record(array, event), creation_time(array, event)
                if created is None:  # kept, not dropped: marked, and remembered as of the window's end
                    timeless[table] += 1
                    record, created = {**record, "error": NO_TIME}, end
                group = groups.setdefault(table, [])
                group.append((key, _stamp(created), record))
                if len(group) >= WRITE_GROUP:
                    self._write(table, groups.pop(table), name, seen, summary)
        finally:
            set_aside.close()
            for table, count in received.items():
                RECORDS_IN.inc(count, table)
        set_aside.report(name)
        for table, group in groups.items():
            self._write(table, group, name, seen, summary)
        _report_timeless(name, timeless)

    def _write(
        self,
        table: str,
        group: list[tuple[str, str, dict]],
        name: str,
        seen: dict[str, str],
        summary: PollSummary,
    ) -> None:
        fresh = {}
        for key, created, record in group:
            if key not in seen and key not in fresh:  # the same event twice in one answer
                fresh[key] = (created, record)
        self.sink.write(table, [record for _, record in fresh.values()], name=name)
        self._unconfirmed[table] += len(fresh)
        seen.update((key, created) for key, (created, _) in fresh.items())
        summary.events += len(fresh)
        summary.duplicates += len(group) - len(fresh)

    def _dead_letter(self, answer: Path, name: str, attempt: int) -> Path:
        self.settings.dead_letter_dir.mkdir(parents=True, exist_ok=True)
        target = self.settings.dead_letter_dir / f"tap-{name}-attempt{attempt}.json"
        answer.replace(target)
        return target

    def _prune(self, seen: dict[str, str], cursor: datetime) -> None:
        """Keep only hashes a later poll can meet again: events inside the next overlap."""
        oldest = _stamp(cursor - self.settings.lookback - timedelta(minutes=1))
        for key in [key for key, created in seen.items() if created < oldest]:
            del seen[key]

    def _report(self, done: int, total: int, summary: PollSummary) -> None:
        if self.progress is not None:
            left = 1800 - self.client.requests["main"]
            print(
                f"\rTAP windows {done}/{total}, {summary.events} events, about {left} requests "
                "left in today's quota",
                end="" if done < total else "\n",
                file=self.progress,
                flush=True,
            )


CURSOR_KEYS = frozenset({"cursor", "seen", "pending"})


def _checked(document: dict, where: str) -> dict:
    """The saved cursor, its fields as this fetcher writes them; else one clear ConfigError."""
    refuse_foreign(document, CURSOR_KEYS, where, "--cursor")
    try:
        if document.get("cursor"):
            _time(document["cursor"])
        for start, end in document.get("pending") or []:
            if not MIN_WINDOW <= _time(end) - _time(start) <= MAX_WINDOW:
                raise ValueError(f"the pending window {start} to {end} is not one the API serves")
        seen = dict(document.get("seen") or {})
        if not all(isinstance(key, str) and isinstance(stamp, str) for key, stamp in seen.items()):
            raise ValueError("'seen' is not a map of event keys to times")
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the TAP cursor holds what this version does not write ({exc}); "
            "move it aside and start again with --since"
        ) from exc
    return document


def _tell_lost(start: datetime, end: datetime) -> None:
    log.warning(
        "!!! TAP events from %s to %s can no longer be fetched: the API serves only "
        "the last 7 days. Fetching from %s on.",
        wire_time(start),
        wire_time(end),
        wire_time(end),
    )


def _report_timeless(name: str, timeless: Counter[str]) -> None:
    for table, count in timeless.items():
        PARSE_ERRORS.inc(count, table)
        log.warning(
            "TAP window %s: %d %s events without a readable time; written with an error field",
            name,
            count,
            table,
        )


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError(f"{text} has no UTC offset")
    return moment


def _stamp(moment: datetime) -> str:
    """One fixed form (UTC, microseconds always), so that stamps compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
