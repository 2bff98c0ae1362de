"""Every golden line gives exactly its expected record and text rendering, on both parse paths."""

import json

import pytest

from proofpoint_shipper.gateway import render_text
from proofpoint_shipper.sinks.records import line_of_another_table, text_line_problem
from proofpoint_shipper.streams import BY_NAME
from tests.conftest import golden_cases, read_lines


def _pairs():
    for case in golden_cases():
        lines = read_lines(case)
        expected = json.loads(case.with_suffix(".expected.json").read_text(encoding="utf-8"))
        assert len(lines) == len(expected), f"{case.name}: lines and expected records differ in count"
        for number, (line, want) in enumerate(zip(lines, expected, strict=True), 1):
            yield pytest.param(line, want, id=f"{case.parent.name}/{case.stem}:{number}")


@pytest.mark.parametrize(("line", "want"), list(_pairs()))
@pytest.mark.parametrize("path", ["fast", "lark"])
def test_golden_line(line, want, path, fast_parser, lark_parser):
    parser = fast_parser if path == "fast" else lark_parser
    record, body = parser.parse_with_body(line)
    assert list(record.items()) == list(want["record"].items())  # key order is part of the output
    assert render_text(record, body) == want["text"]


def test_golden_corpus_is_large_and_covers_every_stream():
    lines = [line for case in golden_cases() for line in read_lines(case)]
    streams = {case.parent.name for case in golden_cases()}
    assert len(set(lines)) >= 60
    assert streams == {"gateway_filter", "gateway_sendmail", "other"}


def test_golden_files_match_their_folder():
    """A line filed under a stream's folder parses into that stream (bad lines included)."""
    for case in golden_cases():
        expected = json.loads(case.with_suffix(".expected.json").read_text(encoding="utf-8"))
        assert {entry["record"]["stream"] for entry in expected} == {case.parent.name}, case.name


def test_every_text_line_that_names_a_program_is_in_the_text_tables_form():
    """The text a gateway line lands as is read `<time> <host> <program>[<pid>]: ...`, by the data
    lake and by `ppship s3 check`: a line that names no host must not lose that place, or its
    program is read as its host (`sendmail[21652]:`) and its queue id as its program."""
    for case in golden_cases():
        for entry in json.loads(case.with_suffix(".expected.json").read_text(encoding="utf-8")):
            record, text = entry["record"], entry["text"]
            if "program" not in record or record["stream"] not in BY_NAME:
                continue
            assert text_line_problem(text) is None, text
            assert line_of_another_table(text, BY_NAME[record["stream"]]) is None, text
            assert text.split(" ")[1] == record.get("host", "-"), text
