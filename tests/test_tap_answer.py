"""Reading a SIEM API answer: lone surrogate escapes mended in place, any cut of the file."""

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


def test_ijson_still_reads_a_lone_half_its_own_way():
    """Why the answer is mended first: should ijson come to read halves as U+FFFD itself, this
    fails, and the mending can go."""
    with pytest.raises(UnicodeDecodeError):
        list(ijson.items(b'["\\ude00"]', "item"))
