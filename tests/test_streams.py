"""The eight data types of the mission, as the one table the code reads."""

from proofpoint_shipper.streams import BY_NAME, BY_TABLE, STREAMS

MISSION_TABLES = {
    "proofpoint_tap_messages_delivered": "ndjson",
    "proofpoint_tap_messages_blocked": "ndjson",
    "proofpoint_tap_clicks_permitted": "ndjson",
    "proofpoint_tap_clicks_blocked": "ndjson",
    "proofpoint_on_demand_message": "ndjson",
    "proofpoint_on_demand_maillog": "ndjson",
    "proofpoint_gateway_filter_logs": "text",
    "proofpoint_gateway_sendmail_logs": "text",
}


def test_eight_tables_with_their_formats():
    assert {s.table: s.format for s in STREAMS} == MISSION_TABLES


def test_names_tables_and_tags_are_unique_and_dotted():
    assert len(BY_NAME) == len(BY_TABLE) == len({s.tag for s in STREAMS}) == 8
    for stream in STREAMS:
        assert stream.tag.startswith("proofpoint.") and stream.tag.count(".") == 2
        assert stream.collection in {"tap_api", "pod_stream", "gateway_syslog"}
