"""The fast path gives exactly the record of the Lark parse: on generated lines, on mutated real
lines and on every golden line. The grammars stay the single definition of the syntax."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# A PRI with or without its space, and nothing or little after it: the fast expression takes the
# space inside the PRI's group, where the grammar reads an empty body after it (found by the
# mutated lines below, once in a while).
@pytest.mark.parametrize("line", ["<22>", "<22> ", "<22>  ", "<22> x", "<22> -", "<22>x", "<22>\t"])
def test_lines_of_a_pri_alone_agree(line):
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


# Edges of the token path (string splitting): white space the grammar does not separate with,
# repeated keys, free text, non-keys, quotes. It reads some of them and declines others; either
# way the record must be the Lark parse's.
TOKEN_PATH_EDGES = [
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=1\tm=2",  # a tab is no separator
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=1\u3000m=2",
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=1 m=2 s=3",  # repeated key
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=1 closed (limit=5)",  # free text
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s=1 1x=2",  # not a key
    '2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt s="a b" m=2',
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[1]: rprt\ts=1",
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: to=<a>, stat=x\ny",
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: to=<a>, stat=Deferred, try b=1",
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: to=<a>, to=<b>",
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: a=1,b=2",  # "," alone
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: , b=",  # no free text before ", "
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: to=<a>,<b>, stat=Sent (ok)",
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: 21KEZ0kl021234: to=<a>, ",
    "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[2]: Milter: data, reject=550",
]


@pytest.mark.parametrize("line", TOKEN_PATH_EDGES)
def test_token_path_edges_agree(line):
    assert_same(line)


# Bodies from the few characters the splitting turns on: separators, "=", quotes, key and
# non-key starts. Random text rarely lines these up; here almost every example does.
tiny_body = st.text(alphabet=list(' =,"ab1.-\t'), max_size=30)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["rprt ", "rprt s=1 ", "21KEZ0kl021234: ", "to=<a>, "]), tiny_body)
def test_token_path_agrees_on_bodies_of_the_characters_it_splits_on(start, body):
    program = "filter_instance1[1]" if start.startswith("rprt") else "sendmail[2]"
    assert_same(f"2022-02-20T08:35:00.157994-06:00 mx1 {program}: {start}{body}")


def test_token_path_really_takes_the_plain_lines():
    """Guard against a token path that declines everything (and so agrees trivially)."""
    from proofpoint_shipper.gateway import fastpath

    bodies = [match.group("body") for line in golden_lines() if (match := fastpath.COMMON_HEADER.match(line))]
    filters = [body for body in bodies if fastpath.FILTER["whole"].match(body)]
    sendmails = [body for body in bodies if body[:1].isalnum() and ", " in body]
    taken_filter = [fastpath.token_filter_fields(body) is not None for body in filters]
    taken_sendmail = [fastpath.token_sendmail_fields(body) is not None for body in sendmails]
    assert sum(taken_filter) >= 0.5 * len(taken_filter) > 10
    assert sum(taken_sendmail) >= 0.5 * len(taken_sendmail) > 10


def test_fast_path_really_takes_the_common_lines():
    """Guard against a fast path that silently declines everything (and so agrees trivially)."""
    from proofpoint_shipper.gateway import fastpath

    taken = [line for line in golden_lines() if fastpath.COMMON_HEADER.match(line)]
    bodies = [FAST._common_line(line) for line in taken]
    assert len(taken) >= 50
    assert sum(body is not None for body in bodies) >= 0.8 * len(taken)
