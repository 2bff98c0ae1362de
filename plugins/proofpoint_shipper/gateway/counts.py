"""Lines counted per stream and outcome, as `gateway parse` and `gateway exec-filter` report them.

Outcomes: parsed (no error), partial (an error, but a header or fields were understood), failed
(neither), skipped (parsed, but its stream was not asked for).
"""

from collections import Counter

from proofpoint_shipper.gateway.record import FILTER, SENDMAIL
from proofpoint_shipper.streams import OTHER

OUTCOMES = ("parsed", "partial", "failed", "skipped")


def outcome(record: dict) -> str:
    """parsed, partial or failed: how much of the record's line was understood."""
    if "error" not in record:
        return "parsed"
    if record["fields"] or "program" in record or "time_source" not in record:
        return "partial"
    return "failed"


class StreamCounts:
    """`parsed[stream]` for the common case (one Counter step a line), `others[stream, outcome]`."""

    def __init__(self):
        self.parsed: Counter[str] = Counter()
        self.others: Counter[tuple[str, str]] = Counter()

    def add(self, record: dict) -> None:
        if "error" in record:
            self.others[record["stream"], outcome(record)] += 1
        else:
            self.parsed[record["stream"]] += 1

    def total(self) -> int:
        """Lines counted, each once: skipped lines were counted as parsed, partial or failed too."""
        return self.parsed.total() + sum(n for (_, kind), n in self.others.items() if kind != "skipped")

    def summary(self) -> str:
        """`gateway_filter 3 parsed, 1 partial; gateway_sendmail 2 parsed; other 0 parsed`."""
        counts = self.others + Counter({(stream, "parsed"): n for stream, n in self.parsed.items()})
        return "; ".join(
            f"{stream} "
            + ", ".join(
                f"{counts[stream, kind]} {kind}"
                for kind in OUTCOMES
                if counts[stream, kind] or kind == "parsed"
            )
            for stream in (FILTER, SENDMAIL, OTHER)
        )
