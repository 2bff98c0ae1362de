"""The eight data types of the mission, as the one table the code reads."""

from proofpoint_shipper.streams import BY_NAME, BY_TABLE, EXTRAS, STREAMS

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
    assert len(STREAMS) == 8
    assert len(BY_NAME) == len(BY_TABLE) == len({s.tag for s in STREAMS + EXTRAS}) == 8 + len(EXTRAS)
    for stream in STREAMS + EXTRAS:
        assert stream.tag.startswith("proofpoint.") and stream.tag.count(".") == 2
        assert stream.collection in {"tap_api", "pod_stream", "gateway_syslog"}


def test_the_extra_table_is_marked_and_not_among_the_eight():
    assert [s.table for s in EXTRAS] == ["proofpoint_gateway_messages"]
    assert not {s.table for s in EXTRAS} & set(MISSION_TABLES)
