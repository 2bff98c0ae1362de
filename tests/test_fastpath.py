"""The fast path gives exactly the record of the Lark parse: on generated lines, on mutated real
lines and on every golden line. The grammars stay the single definition of the syntax."""

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import golden_lines, golden_parser
from tests.strategies import common_line, mutated_line, well_formed_line

FAST, LARK = golden_parser(fast=True), golden_parser(fast=False)


def assert_same(line: str) -> None:
    fast_record, fast_body = FAST.parse_with_body(line)
    lark_record, lark_body = LARK.parse_with_body(line)
    assert list(fast_record.items()) == list(lark_record.items()), line
    assert fast_body == lark_body, line


@pytest.mark.parametrize("line", golden_lines())
def test_golden_lines_agree(line):
    assert_same(line)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed_line)
def test_generated_lines_agree(line):
    assert_same(line)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(common_line)
def test_common_shape_lines_agree(line):
    assert_same(line)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_line())
def test_mutated_lines_agree(line):
    assert_same(line)


def test_fast_path_really_takes_the_common_lines():
    """Guard against a fast path that silently declines everything (and so agrees trivially)."""
    from proofpoint_shipper.gateway import fastpath

    taken = [line for line in golden_lines() if fastpath.COMMON_HEADER.match(line)]
    bodies = [FAST._common_line(line) for line in taken]
    assert len(taken) >= 50
    assert sum(body is not None for body in bodies) >= 0.8 * len(taken)
