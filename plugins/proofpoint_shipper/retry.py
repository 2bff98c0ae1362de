"""The one retry policy every output uses: bounded attempts, exponential delays, jitter.

`RetryPolicy.run(action, what)` retries `action` on the errors it is told to, logging each retry,
and re-raises the last error once the bound is spent. A `Retry-After` (seconds) is honoured.
"""

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from proofpoint_shipper.logs import one_line
from proofpoint_shipper.metrics import RETRIES

log = logging.getLogger("proofpoint_shipper")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    base_delay: float = 0.5  # seconds before the second try
    max_delay: float = 30.0  # cap on any one delay, seconds
    jitter: float = 0.2  # each delay varies by up to this fraction

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 = the second try)."""
        if retry_after is not None and not math.isnan(retry_after):  # a server's "nan" is no delay
            return min(max(retry_after, 0.0), self.max_delay)
        delay = min(self.base_delay * 2 ** (retry - 1), self.max_delay)
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def run(
        self,
        action: Callable[[], T],
        what: str,
        retry_on: tuple[type[BaseException], ...],
        sleep: Callable[[float], None] = time.sleep,
        operation: str = "other",
    ) -> T:
        """`operation` names the kind of work in the retries metric (`what` is for the log)."""
        for attempt in range(1, self.attempts + 1):
            try:
                return action()
            except retry_on as exc:
                if attempt == self.attempts:
                    raise
                wait = self.delay(attempt, getattr(exc, "retry_after", None))
                log.warning(
                    "%s failed (%s); retry %d of %d in %.1f s",
                    what,
                    one_line(exc),
                    attempt,
                    self.attempts - 1,
                    wait,
                )
                RETRIES.inc(label=operation)
                sleep(wait)
        raise AssertionError("unreachable")


DEFAULT_RETRY = RetryPolicy()
