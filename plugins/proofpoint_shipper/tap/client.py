"""TapClient: one SIEM API request per window, streamed to a file, with the API's failure modes.

401/403 stop at once (ConfigError: exit 2); 429 waits (Retry-After when sent) and 5xx, timeouts,
dropped connections, a web page for an answer (a proxy's) and a broken content encoding are
retried under the retry policy, each retry logged. Requests are counted per quota pool. The
secret is only ever handed to httpx's auth, never logged.
"""

import email.utils
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx

from proofpoint_shipper import __version__
from proofpoint_shipper.errors import ConfigError, FetchError, Stopped
from proofpoint_shipper.metrics import TAP_QUOTA_USED, RequestLog
from proofpoint_shipper.retry import RetryPolicy
from proofpoint_shipper.service import StopEvent
from proofpoint_shipper.tap.events import wire_time
from proofpoint_shipper.trust import not_trusted, untrusted_certificate

log = logging.getLogger("proofpoint_shipper")
API_RETRY = RetryPolicy(attempts=6, base_delay=2.0, max_delay=300.0)
# The longest one answer may take to arrive. The read timeout bounds each wait for bytes, not the
# answer: a proxy trickling a byte a minute would hold the collector for days. An hour's window
# of a large tenant is tens of megabytes, seconds to fetch.
ANSWER_DEADLINE_SECONDS = 30 * 60


class Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TapClient:
    def __init__(
        self,
        base_url: str,
        principal: str,
        secret: str,
        *,
        timeout: float = 120.0,
        answer_deadline: float = ANSWER_DEADLINE_SECONDS,
        retry: RetryPolicy = API_RETRY,
        stop: StopEvent | None = None,
    ):
        self.http = httpx.Client(
            base_url=base_url,
            auth=(principal, secret),
            timeout=timeout,
            headers={"User-Agent": f"proofpoint-shipper/{__version__}"},
        )
        self.answer_deadline = answer_deadline
        self.retry = retry
        self.stop = stop or StopEvent()  # set by SIGTERM: no more retries, and the request ends
        self.requests = Counter()  # per quota pool, this run
        self._last_day = RequestLog()  # request times of the last 24 h, for the quota metric

    def close(self) -> None:
        self.http.close()

    def download(self, start: datetime, end: datetime, target: Path) -> None:
        """Write the /v2/siem/all answer for [start, end) to `target` (empty for 204)."""
        params = {"interval": f"{wire_time(start)}/{wire_time(end)}", "format": "json"}
        what = f"TAP window {params['interval']}"
        try:
            self.retry.run(
                lambda: self._get(params, target),
                what,
                (Retryable,),
                sleep=self._pause,
                operation="tap_request",
            )
        except Retryable as exc:
            raise FetchError(f"{what}: {exc} (gave up after {self.retry.attempts} tries)") from exc

    def _pause(self, seconds: float) -> None:
        """The wait before a retry, cut short by a stop: a collector told to stop does not
        spend minutes retrying first."""
        if self.stop.wait(seconds):
            raise Stopped("stopped while waiting to retry")

    def _get(self, params: dict, target: Path) -> None:
        self.requests["main"] += 1
        TAP_QUOTA_USED.set(self._last_day.add())
        try:
            with (
                self.stop.interrupting("a request to the API"),
                self.http.stream("GET", "/v2/siem/all", params=params) as response,
            ):
                self._check(response)
                self._save(response, target)
        except httpx.TransportError as exc:  # timeouts, refused and dropped connections
            if self.stop.is_set():  # the stop came first, and cut the request short
                raise Stopped("stopped during a request to the API") from None
            if failure := untrusted_certificate(exc):
                raise not_trusted(f"the TAP API at {self.http.base_url}", failure) from None
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc

    def _save(self, response: httpx.Response, target: Path) -> None:
        """The answer's bytes into `target`, given up (to be retried) past the answer deadline."""
        deadline = time.monotonic() + self.answer_deadline
        with target.open("wb") as out:
            try:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise Retryable(
                            f"the answer was not whole after {self.answer_deadline:g} s "
                            f"({out.tell():,} bytes had come)"
                        )
            except httpx.DecodingError as exc:  # this answer's fault (a proxy's, say): tried again
                encoding = response.headers.get("Content-Encoding")
                raise Retryable(f"the answer's {encoding} encoding is broken ({exc})") from exc

    @staticmethod
    def _check(response: httpx.Response) -> None:
        status = response.status_code
        if status == 200 and is_web_page(response):
            # A proxy's block or login page: read as a malformed answer, it was dead-lettered and
            # its window skipped; the poll went on past every window while the proxy stood.
            raise Retryable(f"the answer is a web page, not the API's JSON: {_page_start(response)}")
        if status in (200, 204):
            return
        if status == 429:
            raise Retryable("quota used up (429)", _retry_after(response))
        if status >= 500:
            raise Retryable(f"server error {status}")
        text = _page_start(response)
        if status in (401, 403):
            raise ConfigError(
                f"the TAP API refused our credentials ({status} {text}); "
                "check TAP_PRINCIPAL and TAP_SECRET, and that SIEM API access is enabled"
            )
        raise FetchError(f"the TAP API refused the request ({status}): {text}")


WEB_PAGE_TYPES = ("text/html", "application/xhtml+xml")


def is_web_page(response: httpx.Response) -> bool:
    """Whether an answer is an HTML page (a proxy's block or login page), not the API's JSON."""
    media_type = response.headers.get("Content-Type", "").partition(";")[0]
    return media_type.strip().lower() in WEB_PAGE_TYPES


def _page_start(response: httpx.Response) -> str:
    """The start of a refusal's page (a proxy's HTML too), on one line: the rest is not waited for."""
    try:
        start = next(response.iter_bytes(), b"")
    except httpx.DecodingError:
        return f"a page whose {response.headers.get('Content-Encoding')} encoding is broken"
    return " ".join(start.decode("utf-8", "replace").split())[:200]


def _retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds to wait as the answer's Retry-After says: a number of seconds, or an HTTP date
    (RFC 9110 allows both); None when it is missing or neither."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None  # "-0000": a date of unknown zone, no time to wait for
    return (moment - (now or datetime.now(UTC))).total_seconds()
