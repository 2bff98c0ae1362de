"""Window maths for the SIEM API, as pure functions of the cursor and the clock.

Every poll re-reads `lookback` before the cursor (late-indexed events), walks forward in windows
of at most an hour up to `now - lag`, never starts earlier than the API's 7-day limit, and never
asks for less than its 30-second minimum. `still_served` holds the saved windows of an interrupted
run to the same limit, which they may have aged past meanwhile.
"""

from datetime import datetime, timedelta
from typing import NamedTuple

MAX_WINDOW = timedelta(hours=1)
MIN_WINDOW = timedelta(seconds=30)
API_LOOKBACK = timedelta(days=7)
CLAMP_MARGIN = timedelta(minutes=5)  # stay clear of the 7-day edge while a catch-up runs


class Plan(NamedTuple):
    windows: list[tuple[datetime, datetime]]
    lost: tuple[datetime, datetime] | None  # a gap older than the API serves, if any


def oldest_served(now: datetime) -> datetime:
    """The oldest start asked for: the API's 7-day limit, with a margin."""
    return now - API_LOOKBACK + CLAMP_MARGIN


def plan(cursor: datetime, now: datetime, lookback: timedelta, lag: timedelta) -> Plan:
    oldest = oldest_served(now)
    lost = (cursor, oldest) if cursor < oldest else None
    start = max(cursor - lookback, oldest)
    end = now - lag
    if end - start < MIN_WINDOW:
        return Plan([], lost)
    windows = []
    while start < end:
        stop = min(start + MAX_WINDOW, end)
        if stop - start < MIN_WINDOW:
            start = stop - MIN_WINDOW  # re-read a little: de-duplication absorbs the overlap
        windows.append((start, stop))
        start = stop
    return Plan(windows, lost)


def still_served(pending: list[tuple[datetime, datetime]], now: datetime) -> Plan:
    """The saved windows the API still serves, one that crosses its limit cut to it, and what is
    lost before. A catch-up from that limit, run again minutes later, asked for windows the API
    refuses (400), at every run, for good. With none left, nothing is called lost here: the plan
    from the cursor tells it."""
    oldest = oldest_served(now)
    kept = [(max(start, oldest), end) for start, end in pending if end - oldest >= MIN_WINDOW]
    lost = (pending[0][0], kept[0][0]) if kept and kept[0][0] > pending[0][0] else None
    return Plan(kept, lost)
