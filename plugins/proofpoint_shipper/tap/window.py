"""Window maths for the SIEM API, as pure functions of the cursor and the clock.

Every poll re-reads `lookback` before the cursor (late-indexed events), walks forward in windows
of at most an hour up to `now - lag`, never starts earlier than the API's 7-day limit, and never
asks for less than its 30-second minimum.
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


def plan(cursor: datetime, now: datetime, lookback: timedelta, lag: timedelta) -> Plan:
    oldest = now - API_LOOKBACK + CLAMP_MARGIN
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
