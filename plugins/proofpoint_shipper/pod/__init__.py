"""Proofpoint on Demand log stream: event shapes, the websocket client, and a simulator."""

DEFAULT_URL = "wss://logstream.proofpoint.com/v1/stream"

# PoD stream type → (data-lake table, routing value written as `eventType`)
TYPES = {
    "message": ("proofpoint_on_demand_message", "pod_message"),
    "maillog": ("proofpoint_on_demand_maillog", "pod_maillog"),
}
