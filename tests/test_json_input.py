"""Reading JSON others wrote: a lone UTF-16 surrogate escape costs the one character, not the event."""

import pytest

from proofpoint_shipper.json_input import loads


def test_json_without_a_lone_surrogate_is_read_as_orjson_reads_it():
    assert loads(b'{"a": "\\ud83d\\ude00", "b": [1, 2.5, null]}') == (
        {"a": "\U0001f600", "b": [1, 2.5, None]},
        False,
    )


def test_a_lone_surrogate_is_read_as_u_fffd_in_values_keys_and_lists_and_said():
    text = '{"subject": "Hi \\ud83d", "\\udc00k": ["x\\udbff", "\\ud83d\\ude00"], "n": 7}'
    assert loads(text) == ({"subject": "Hi \ufffd", "\ufffdk": ["x\ufffd", "\U0001f600"], "n": 7}, True)


@pytest.mark.parametrize(
    "text",
    [b"{not json", b'{"a": "\\ud83d", "n": NaN}', b'{"a": "\\ud83d"', b'{"a": "\\ud83d", ' + b"[" * 5000],
    ids=["not JSON", "NaN beside it", "cut short", "too deep"],
)
def test_text_that_is_not_json_beside_a_lone_surrogate_is_still_refused(text):
    with pytest.raises(ValueError):
        loads(text)


def test_json_nested_deeper_than_a_stack_is_refused_not_a_crash():
    """orjson before 3.9.15 recursed without a bound and crashed the process (SIGSEGV) on such a
    line, well within the 1 MB a line may hold: a stream, `ship` or `assemble` killed by one line."""
    depth = 300_000
    with pytest.raises(ValueError):
        loads(b"[" * depth + b"]" * depth)
