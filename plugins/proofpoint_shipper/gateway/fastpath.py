"""The fast path: regular expressions assembled from the grammars' own terminals.

Each terminal is wrapped in an atomic group, so a token is never re-split by backtracking, and
a lower-priority choice is guarded by a negative lookahead of the higher ones: the expressions
accept a line only where Lark's contextual lexer would tokenise it the same way. Anything they
do not accept returns None and goes to the Lark parse. tests/test_fastpath.py proves agreement.
"""

import re

from proofpoint_shipper.gateway.grammar import terminal
from proofpoint_shipper.gateway.syntax import FilterBody, Header, SendmailBody, split_tag, unquote


def _atom(pattern: str) -> str:
    return f"(?>{pattern})"


def _first_of(*alternatives: tuple[str, str, str]) -> str:
    """Branches tried in lexer order, each (group name, leading terminal, rest of the branch).

    A branch is taken only where no earlier branch's leading terminal matches, as the lexer
    would commit to that terminal and never come back.
    """
    branches, earlier = [], []
    for name, lead, rest in alternatives:
        guard = f"(?!{'|'.join(earlier)})" if earlier else ""
        branches.append(f"{guard}(?P<{name}>{_atom(lead)}){rest}")
        earlier.append(lead)
    return "(?:" + "|".join(branches) + ")"


def _header_regex() -> re.Pattern[str]:
    def t(name: str) -> str:
        return terminal("syslog", name)

    host, tag = _atom(t("HOST")), _atom(t("TAG"))
    leads = {"rfc3339": t("RFC3339_TIME"), "bsd": t("BSD_TIME"), "onbox": t("ONBOX_TIME"),
             "tag3": t("TAG")}
    header = _first_of(
        ("rfc3339", leads["rfc3339"], f" (?P<host1>{host}) (?P<tag1>{tag})"),
        ("bsd", leads["bsd"], f" (?P<host2>{host}) (?P<tag2>{tag})"),
        ("onbox", leads["onbox"], ""),
        ("tag3", leads["tag3"], ""),
    )
    no_header = f"(?!{'|'.join(leads.values())})(?P<bare>.+)?"
    pri = f"(?>(?P<pri>{t('PRI')})?)(?!{t('VERSION')})"  # RFC 5424 is left to Lark
    return re.compile(f"{pri}(?:{header}(?:(?P<sep> )(?P<body>.+)?)?|{no_header})\\Z")


def _filter_regexes() -> tuple[re.Pattern[str], re.Pattern[str]]:
    def t(name: str) -> str:
        return terminal("filter_instance", name)

    key, value = _atom(t("KEY")), _atom(f"{t('QUOTED')}|{t('BARE')}")
    spaces = _atom(t("_SP"))
    body = (
        f"{_atom(t('SEVERITY'))}(?P<pairs>(?:{spaces}{key}={value}?)*)"
        f"(?:{spaces}(?!{t('KEY')})(?P<tail>{_atom(t('TAIL'))}))?{spaces}?\\Z"
    )
    pair = f"{spaces}({key})=({value}?)"
    return re.compile(body), re.compile(pair)


def _sendmail_regexes() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    def t(name: str) -> str:
        return terminal("sendmail", name)

    key, value = _atom(t("KEY")), _atom(t("VALUE"))
    qid = re.compile(f"(?P<qid>{_atom(t('QID'))}):")
    content = re.compile(
        f"(?:(?!{t('KEY')})(?P<text>{_atom(t('TEXT'))})|{key}={value}?)(?:, {key}={value}?)*\\Z"
    )
    pair = re.compile(f", ({key})=({value}?)")
    return qid, content, pair


HEADER = _header_regex()
FILTER_BODY, FILTER_PAIR = _filter_regexes()
SENDMAIL_QID, SENDMAIL_CONTENT, SENDMAIL_PAIR = _sendmail_regexes()


def fast_header(line: str) -> Header | None:
    match = HEADER.match(line)
    if match is None:
        return None
    g = match.group
    if not (g("rfc3339") or g("bsd") or g("onbox") or g("tag3")):
        return Header(pri=g("pri"), body=g("bare"))
    body = (g("body") or "") if g("sep") else None
    for time_kind in ("rfc3339", "bsd", "onbox"):
        if g(time_kind):
            tag = g("tag1") or g("tag2")
            program, pid = split_tag(tag) if tag else (None, None)
            return Header(g("pri"), time_kind, g(time_kind), g("host1") or g("host2"), program, pid,
                          body=body)
    program, pid = split_tag(g("tag3"))
    return Header(pri=g("pri"), program=program, pid=pid, body=body)


def fast_filter_body(body: str) -> FilterBody | None:
    match = FILTER_BODY.match(body)
    if match is None:
        return None
    pairs_text = match.group("pairs")
    pairs = FILTER_PAIR.findall(pairs_text)
    if '"' in pairs_text:
        pairs = [(key, unquote(value)) for key, value in pairs]
    return FilterBody(body[: match.start("pairs")], pairs, match.group("tail"))


def fast_sendmail_body(body: str) -> SendmailBody | None:
    qid_match = SENDMAIL_QID.match(body)
    qid, content = None, body
    if qid_match is not None:
        qid, content = qid_match.group("qid"), body[qid_match.end() + 1 :]
    if not content:
        return SendmailBody(qid, None, [])
    match = SENDMAIL_CONTENT.match(content)
    if match is None:
        return None
    text = match.group("text")
    rest = content[len(text) :] if text is not None else ", " + content
    return SendmailBody(qid, text, SENDMAIL_PAIR.findall(rest))
