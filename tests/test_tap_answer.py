"""Reading a SIEM API answer: its shape checked, lone surrogate escapes mended in place, any cut
of the file."""

import json

import ijson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofpoint_shipper.tap import answer
from proofpoint_shipper.tap.answer import MalformedAnswer, mend_lone_surrogates, read_answer

# Text as the API may escape it: plain and escaped characters, backslashes (also a run longer than
# the bytes read again at a cut), whole emoji, and halves of one alone. json.dumps writes every
# one of them as an escape (ensure_ascii).
PIECES = st.sampled_from(
    ["a", "\\", "\\" * 7, "\\u", "u", "d83d", '"', "é", "😀", "\ud83d", "\ude00", "\udbff"]
)
TEXTS = st.lists(PIECES, max_size=30).map("".join)


def _mended(text: str) -> str:
    """What the answer should hold once read: every lone half as U+FFFD, pairs whole."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=4), chunk=st.integers(2 * answer._LONGEST_ESCAPE, 64))
def test_every_lone_half_is_mended_whatever_the_chunk_cuts(texts, chunk, tmp_path_factory):
    path = tmp_path_factory.mktemp("answer") / "answer.json"
    events = [{"id": str(n), "subject": text} for n, text in enumerate(texts)]
    path.write_bytes(json.dumps({"queryEndTime": "x", "messagesDelivered": events}).encode())
    lone = sum(_mended(text).count("\ufffd") for text in texts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(answer, "_CHUNK_BYTES", chunk)
        assert mend_lone_surrogates(path) == lone
    read = [event for _, event in read_answer(path)]
    assert read == [{**event, "subject": _mended(event["subject"])} for event in events]


def test_an_answer_without_surrogate_escapes_is_left_as_it_was(tmp_path):
    path = tmp_path / "answer.json"
    body = json.dumps({"messagesDelivered": [{"subject": "\\ud83d is text here, 😀 an emoji"}]}).encode()
    path.write_bytes(body)
    assert mend_lone_surrogates(path) == 0
    assert path.read_bytes() == body


def test_a_surrogate_written_as_utf8_bytes_is_a_malformed_answer_not_a_crash(tmp_path):
    path = tmp_path / "answer.json"
    path.write_bytes(b'{"messagesDelivered": [{"subject": "\xed\xa0\xbd"}]}')  # CESU-8, not UTF-8
    with pytest.raises(MalformedAnswer, match="not valid UTF-8"):
        list(read_answer(path))


def _read(tmp_path, body: bytes) -> list[tuple[str, dict]]:
    path = tmp_path / "answer.json"
    path.write_bytes(body)
    return list(read_answer(path))


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        # Its values read as events would be records of whatever the object held.
        ({"messagesDelivered": {"first": {"GUID": "g"}}}, "messagesDelivered is not an array but an object"),
        ({"clicksBlocked": "none"}, "clicksBlocked is not an array but 'none'"),
        ({"messagesBlocked": None}, "messagesBlocked is not an array but None"),
        ({"clicksPermitted": [[{"GUID": "g"}]]}, "an event in clicksPermitted is not an object but an array"),
        ({"messagesDelivered": [{"GUID": "g"}, 7]}, "an event in messagesDelivered is not an object but 7"),
    ],
)
def test_an_answer_of_another_shape_is_malformed_by_name(tmp_path, shape, reason):
    with pytest.raises(MalformedAnswer) as raised:
        _read(tmp_path, json.dumps(shape).encode())
    assert str(raised.value) == reason


def test_what_the_api_may_add_is_read_past_and_an_unknown_arrays_items_given_by_its_name(tmp_path):
    """A key of a newer API made the whole answer malformed, and its window was skipped."""
    body = {
        "queryStartTime": "2022-02-20T14:00:00Z",
        "tenant": {"name": "t", "regions": [{"id": 1}]},
        "messagesQuarantined": [{"GUID": "q", "parts": [[1]]}, 7, None, ["a"]],
        "messagesDelivered": [{"GUID": "g"}],
    }
    assert _read(tmp_path, json.dumps(body).encode()) == [
        ("messagesQuarantined", {"GUID": "q", "parts": [[1]]}),
        ("messagesQuarantined", 7),
        ("messagesQuarantined", None),
        ("messagesQuarantined", ["a"]),
        ("messagesDelivered", {"GUID": "g"}),
    ]


def test_query_end_time_is_passed_over_whatever_it_holds(tmp_path):
    """Not read (the windows are ours): objects in it were events of an array named queryEndTime,
    which the fetch had no table for and stopped on with a traceback."""
    body = {"queryEndTime": [{"GUID": "not an event"}, {"k": [1]}], "messagesDelivered": [{"GUID": "g"}]}
    assert _read(tmp_path, json.dumps(body).encode()) == [("messagesDelivered", {"GUID": "g"})]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"messagesDelivered": [{"GUID": "g"}]} {}', "not valid JSON (parse error: trailing garbage)"),
        (b'{"messagesDelivered": [{"GUID": "g"}', "not valid JSON (parse error: premature EOF)"),
        (b"<html>down for maintenance</html>", "not valid JSON (lexical error: invalid char in json text.)"),
    ],
)
def test_invalid_json_is_told_in_one_line_without_quoting_the_answer(tmp_path, body, reason):
    """yajl's own message quotes the answer around the fault on the lines after its reason: event
    data in the log, and a log line broken in three."""
    with pytest.raises(MalformedAnswer) as raised:
        _read(tmp_path, body)
    assert str(raised.value) == reason


def test_ijson_still_reads_a_lone_half_its_own_way():
    """Why the answer is mended first: should ijson come to read halves as U+FFFD itself, this
    fails, and the mending can go."""
    with pytest.raises(UnicodeDecodeError):
        list(ijson.items(b'["\\ude00"]', "item"))
