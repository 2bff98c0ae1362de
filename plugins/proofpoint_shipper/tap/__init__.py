"""Proofpoint TAP SIEM API: window maths, event shapes, the client and fetcher, and a simulator."""

DEFAULT_BASE_URL = "https://tap-api-v2.proofpoint.com"

# The four arrays of a SIEM API response, the table each lands in, and the endpoint that serves it.
ARRAYS = {
    "messagesDelivered": ("proofpoint_tap_messages_delivered", "messages/delivered"),
    "messagesBlocked": ("proofpoint_tap_messages_blocked", "messages/blocked"),
    "clicksPermitted": ("proofpoint_tap_clicks_permitted", "clicks/permitted"),
    "clicksBlocked": ("proofpoint_tap_clicks_blocked", "clicks/blocked"),
}
