"""Whatever arrives, parse() returns a record that keeps the raw line; it never raises."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import golden_parser
from tests.strategies import mutated_line, well_formed_line

PARSER = golden_parser()
REQUIRED = {"stream", "table", "time", "fields", "raw"}


def check_record(line: str) -> None:
    record = PARSER.parse(line)
    assert record["raw"] == line
    assert record.keys() >= REQUIRED
    assert record["stream"] in {"gateway_filter", "gateway_sendmail", "other"}
    for value in record["fields"].values():
        assert isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if "error" in record:
        assert record["error"] and "\n" not in record["error"]
    orjson.dumps(record)  # always serialisable


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_raises_and_keeps_raw(line):
    check_record(line)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300).map(lambda s: s.replace("\n", " ")))
def test_random_unicode_lines(line):
    check_record(line)


@settings(max_examples=1000, deadline=None)
@given(mutated_line())
def test_mutated_real_lines_never_raise(line):
    check_record(line)


@settings(max_examples=500, deadline=None)
@given(well_formed_line)
def test_generated_lines_never_raise(line):
    check_record(line)
