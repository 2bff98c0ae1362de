"""The eight data types of the mission as data: the one table every other module reads.

A stream's `table` is its S3 prefix in the data lake; `tag` is its stable Fluent tag. `EXTRAS`
are tables of our own beyond the eight, made from the same sources; outputs accept them
(`BY_TABLE`), the eight-table views (`STREAMS`) leave them out.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stream:
    name: str  # short id used in records and flags, e.g. "tap_clicks_blocked"
    table: str  # S3 prefix / data-lake table
    format: str  # "ndjson" or "text"
    collection: str  # "tap_api", "pod_stream" or "gateway_syslog"
    tag: str  # Fluent tag


# fmt: off
STREAMS: tuple[Stream, ...] = (
    #      name                      table                                 format    collection        tag
    Stream("tap_messages_delivered", "proofpoint_tap_messages_delivered", "ndjson", "tap_api",        "proofpoint.tap.messages_delivered"),
    Stream("tap_messages_blocked",   "proofpoint_tap_messages_blocked",   "ndjson", "tap_api",        "proofpoint.tap.messages_blocked"),
    Stream("tap_clicks_permitted",   "proofpoint_tap_clicks_permitted",   "ndjson", "tap_api",        "proofpoint.tap.clicks_permitted"),
    Stream("tap_clicks_blocked",     "proofpoint_tap_clicks_blocked",     "ndjson", "tap_api",        "proofpoint.tap.clicks_blocked"),
    Stream("pod_message",            "proofpoint_on_demand_message",      "ndjson", "pod_stream",     "proofpoint.pod.message"),
    Stream("pod_maillog",            "proofpoint_on_demand_maillog",      "ndjson", "pod_stream",     "proofpoint.pod.maillog"),
    Stream("gateway_filter",         "proofpoint_gateway_filter_logs",    "text",   "gateway_syslog", "proofpoint.gateway.filter"),
    Stream("gateway_sendmail",       "proofpoint_gateway_sendmail_logs",  "text",   "gateway_syslog", "proofpoint.gateway.sendmail"),
)
# fmt: on

# Extra, beyond the eight: one record per gateway message, assembled from its filter and
# sendmail lines by `ppship gateway assemble` or `ppship relay --assemble`.
EXTRAS: tuple[Stream, ...] = (
    Stream(
        "gateway_message",
        "proofpoint_gateway_messages",
        "ndjson",
        "gateway_syslog",
        "proofpoint.gateway.message",
    ),
)

BY_NAME: dict[str, Stream] = {s.name: s for s in STREAMS + EXTRAS}
BY_TABLE: dict[str, Stream] = {s.table: s for s in STREAMS + EXTRAS}

# Gateway lines of unrelated programs: kept and tagged, but they belong to no table.
OTHER = "other"
OTHER_TAG = "proofpoint.gateway.other"
