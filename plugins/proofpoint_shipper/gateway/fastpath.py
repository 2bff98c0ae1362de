"""The fast path: regular expressions assembled from the grammars' own terminals.

A fast expression accepts a line only where Lark's contextual lexer would tokenise it the same
way; anything else returns None and goes to the Lark parse. Two rules keep that true:
  - a lower-priority branch is guarded by a negative lookahead of the higher ones, because the
    lexer commits to the first terminal that matches and never comes back (`_first_of`);
  - a terminal is matched atomically unless it can end in one place only, given what must
    follow it (a key ends before its "=", a bare value before a space, a quoted value at its
    first unescaped quote, a sendmail value before the next ", key="): those are left plain,
    because atomic groups cost CPython's regex engine about half its speed.
Where a key is followed by its "=" in the expression itself, the key's own lookahead for that
"=" is dropped (`_key_then_equals`): it asserts what the next character already matches.
Pairs are read with `re.split`: when every piece between two matches is empty, the matches tile
the body exactly as the lexer reads it.

Before those expressions, the token path (`token_filter_fields`, `token_sendmail_fields`) reads the
plainest bodies with string splitting alone, about twice as fast: every space-separated word of a
filter line is `KEY=value` up to any free text, with no quote; every ", "-separated piece of a
sendmail line is `KEY=value`, or there is no "=" at all. It declines anything else, and checks
its keys against the KEY terminal. tests/test_fastpath.py proves all the paths agree.
"""

import re

from proofpoint_shipper.gateway.grammar import common_terminal, terminal
from proofpoint_shipper.gateway.syntax import FilterBody, Header, SendmailBody, split_tag, unquote


def _atom(pattern: str) -> str:
    return f"(?>{pattern})"


def _bare_key(key: str) -> str:
    """The KEY terminal without its closing lookahead for "=", for where the "=" is matched or known."""
    bare = key.removesuffix("(?==)")
    if bare == key:
        raise ValueError(f"KEY no longer ends in its lookahead for '=': {key}")
    return bare


def _key_then_equals(key: str) -> str:
    """The key terminal, captured, then its "=": the key's own lookahead for "=" is redundant."""
    return f"({_bare_key(key)})="


def _first_of(*alternatives: tuple[str, str, str]) -> str:
    """Branches tried in lexer order, each (group name, leading terminal, rest of the branch)."""
    branches, earlier = [], []
    for name, lead, rest in alternatives:
        guard = f"(?!{'|'.join(earlier)})" if earlier else ""
        branches.append(f"{guard}(?P<{name}>{_atom(lead)}){rest}")
        earlier.append(lead)
    return "(?:" + "|".join(branches) + ")"


def _pri(space_group: str | None = None) -> str:
    """An optional PRI (not one of RFC 5424, whose version follows it), then maybe one space,
    captured as `space_group` when named.

    Atomic: the lexer takes the space after a PRI before BODY could, and never gives it back.
    """
    pri, version, space = (terminal("syslog", name) for name in ("PRI", "VERSION", "_SPACE"))
    space = f"(?P<{space_group}>{space})" if space_group else space
    return f"(?>(?P<pri>{pri})?)(?(pri)(?!{version})(?>(?:{space})?))"


def _header_regex() -> re.Pattern[str]:
    def t(name: str) -> str:
        return terminal("syslog", name)

    host, tag = _atom(t("HOST")), _atom(t("TAG"))
    leads = {"rfc3339": t("RFC3339_TIME"), "bsd": t("BSD_TIME"), "onbox": t("ONBOX_TIME"), "tag3": t("TAG")}
    header = _first_of(
        ("rfc3339", leads["rfc3339"], f" (?P<host1>{host}) (?P<tag1>{tag})"),
        ("bsd", leads["bsd"], f" (?P<host2>{host}) (?P<tag2>{tag})"),
        ("onbox", leads["onbox"], ""),
        ("tag3", leads["tag3"], ""),
    )
    no_header = f"(?!{'|'.join(leads.values())})(?P<bare>.+)?"
    rfc5424 = (
        f"(?P<pri5424>{t('PRI')}){t('VERSION')} (?:(?P<time5424>{_atom(t('RFC3339_TIME'))})|-)"
        f" (?P<host5424>{_atom(t('HOST'))}) (?P<app>{_atom(t('APP_NAME'))})"
        f" (?P<procid>{_atom(t('PROCID'))}) (?P<msgid>{_atom(t('MSGID'))})"
        f" (?P<sd>{_atom(t('STRUCTURED_DATA'))})"
    )
    rfc5424_lead = f"(?:{t('_BOM')})?(?:{t('_SPACE')})?"  # a BOM, then rsyslog's extra space
    tail = f"(?:(?P<sep> )(?(pri5424){rfc5424_lead})(?P<body>.+)?)?"  # RFC 5424 only
    return re.compile(f"(?:{rfc5424}|{_pri('pri_space')}(?:{header}|{no_header})){tail}\\Z")


def _filter_regexes() -> dict[str, re.Pattern[str]]:
    def t(name: str) -> str:
        return terminal("filter_instance", name)

    key = _key_then_equals(t("KEY"))
    pair = f"{t('_SP')}{key}((?:{t('QUOTED')}|{t('BARE')})?)"
    tail = f"{t('_SP')}(?!{t('KEY')})(?P<tail>{t('TAIL')})"
    return {
        "split": re.compile(pair),
        "severity": re.compile(t("SEVERITY") + r"\Z"),
        "end": re.compile(f"(?:{tail}|{t('_SP')})\\Z"),
        "whole": re.compile(f"{_atom(t('SEVERITY'))}(?P<pairs>(?:{pair})*)(?:{tail})?(?:{t('_SP')})?\\Z"),
        "pair": re.compile(pair),
    }


def _sendmail_regexes() -> dict[str, re.Pattern[str]]:
    def t(name: str) -> str:
        return terminal("sendmail", name)

    key = _key_then_equals(t("KEY"))
    return {
        "qid": re.compile(f"(?P<qid>{_atom(t('QID'))}):"),
        "key_first": re.compile(t("KEY")),
        "split": re.compile(f", {key}((?:{t('VALUE')})?)"),
    }


def _common_header_regex() -> re.Pattern[str]:
    """The shape of nearly every real line: RFC 3339 or BSD time, host, prog[pid]:, a body."""

    def t(name: str) -> str:
        return terminal("syslog", name)

    stamp = _first_of(("rfc3339", t("RFC3339_TIME"), ""), ("bsd", t("BSD_TIME"), ""))
    # TAG is PROGRAM ("[" PID "]")? ":" followed by a space; here its parts are captured.
    tag = f"(?P<program>{common_terminal('PROGRAM')})(?:\\[(?P<pid>{common_terminal('PID')})\\])?:"
    return re.compile(f"{_pri()}{stamp} (?P<host>{_atom(t('HOST'))}) (?>{tag}) (?P<body>.+)\\Z")


class _Vocabulary:
    """Whether words are whole matches of a terminal; the words seen once are remembered.

    A gateway writes the same few dozen keys on every line: a set lookup, not a regex, per word.
    """

    LIMIT = 4096  # bounded: a flood of odd words cannot grow it without end

    def __init__(self, pattern: str):
        self._word = re.compile(pattern + r"\Z")
        self._seen: set[str] = set()

    def accepts_all(self, words) -> bool:
        if self._seen.issuperset(words):
            return True
        new = [word for word in words if word not in self._seen]
        if not all(self._word.match(word) for word in new):
            return False
        if len(self._seen) + len(new) > self.LIMIT:
            self._seen.clear()
        self._seen.update(new)
        return True


HEADER = _header_regex()
COMMON_HEADER = _common_header_regex()
FILTER = _filter_regexes()
SENDMAIL = _sendmail_regexes()


FILTER_KEYS = _Vocabulary(_bare_key(terminal("filter_instance", "KEY")))
SENDMAIL_KEYS = _Vocabulary(_bare_key(terminal("sendmail", "KEY")))
SEVERITIES = _Vocabulary(terminal("filter_instance", "SEVERITY"))


def token_filter_fields(body: str) -> FilterBody | None:
    """A filter body of `KEY=value` words, maybe then free text; None for anything else.

    Printable with no quote: the only white space is the space the grammar separates with, and
    every value is a BARE word. Where no key repeats, the pairs come as a dict.
    """
    if '"' in body or not body.isprintable():
        return None
    severity, _, rest = body.partition(" ")
    if not SEVERITIES.accepts_all((severity,)):
        return None
    words = [word.partition("=") for word in rest.split()]
    fields = {key: value for key, equals, value in words if equals}
    if len(fields) == len(words) and FILTER_KEYS.accepts_all(fields):
        return FilterBody(severity, fields, None)
    return _word_by_word(severity, rest, words)


def _word_by_word(severity: str, rest: str, words: list[tuple[str, str, str]]) -> FilterBody:
    """Repeated keys, or free text: pairs up to the first word that is not `KEY=value`, then TAIL."""
    count = 0
    for key, equals, _ in words:
        if not (equals and FILTER_KEYS.accepts_all((key,))):
            break
        count += 1
    pairs = [(key, value) for key, _, value in words[:count]]
    tail = rest.split(maxsplit=count)[count] if count < len(words) else None
    return FilterBody(severity, pairs, tail)


def token_sendmail_fields(body: str) -> SendmailBody | None:
    """A sendmail body whose ", "-separated pieces are all `KEY=value`, or free text with no "=".

    Anything else declines (None): a piece that is not `KEY=value` belongs to the value before
    it, or opens with free text; a repeated key. The pairs come as a dict.
    """
    qid_match = SENDMAIL["qid"].match(body)
    qid, content = None, body
    if qid_match is not None:
        qid, content = qid_match.group("qid"), body[qid_match.end() + 1 :]
    if not content:
        return None
    if "=" not in content:
        return SendmailBody(qid, content, {})  # no "KEY=" anywhere: all of it is TEXT
    pieces = [piece.partition("=") for piece in content.split(", ")]
    fields = {key: value for key, equals, value in pieces if equals}
    if len(fields) != len(pieces) or not SENDMAIL_KEYS.accepts_all(fields):
        return None
    return SendmailBody(qid, None, fields)


def fast_header(line: str) -> Header | None:
    match = HEADER.match(line)
    if match is None:
        return None
    g = match.group
    body = (g("body") or "") if g("sep") else None
    if g("bare") is not None:
        return Header(pri=g("pri"), body=g("bare"))  # no header: the whole line is the body
    if g("pri5424"):
        return _rfc5424_header(g, body)
    if g("rfc3339"):
        return _header_with_tag(g("pri"), "rfc3339", g("rfc3339"), g("host1"), g("tag1"), body)
    if g("bsd"):
        return _header_with_tag(g("pri"), "bsd", g("bsd"), g("host2"), g("tag2"), body)
    if g("onbox"):
        return Header(g("pri"), "onbox", g("onbox"), body=body)
    if g("tag3"):
        program, pid = split_tag(g("tag3"))
        return Header(pri=g("pri"), program=program, pid=pid, body=body)
    if body is None and g("pri_space"):
        body = ""  # `<PRI> ` and nothing after: the grammar reads an empty body after the space
    return Header(pri=g("pri"), body=body)


def _rfc5424_header(g, body: str | None) -> Header:
    def value(name: str) -> str | None:
        text = g(name)
        return None if text == "-" else text

    time_text = g("time5424")
    return Header(
        g("pri5424"),
        "rfc3339" if time_text else None,
        time_text,
        value("host5424"),
        value("app"),
        value("procid"),
        value("msgid"),
        value("sd"),
        body,
    )


def _header_with_tag(pri, kind, stamp, host, tag, body) -> Header:
    program, pid = split_tag(tag)
    return Header(pri, kind, stamp, host, program, pid, body=body)


def fast_filter_body(body: str) -> FilterBody | None:
    parts = FILTER["split"].split(body)
    if len(parts) == 1 or not FILTER["severity"].match(parts[0]) or any(parts[3:-1:3]):
        return _filter_whole(body)  # no pairs, or free text between them: the slower reading
    tail = None
    if parts[-1]:
        end = FILTER["end"].match(parts[-1])
        if end is None:
            return None
        tail = end.group("tail")
    values = parts[2::3]
    if '"' in body:
        values = [unquote(value) for value in values]
    return FilterBody(parts[0], list(zip(parts[1::3], values, strict=True)), tail)


def _filter_whole(body: str) -> FilterBody | None:
    match = FILTER["whole"].match(body)
    if match is None:
        return None
    pairs = [(key, unquote(value)) for key, value in FILTER["pair"].findall(match.group("pairs"))]
    return FilterBody(body[: match.start("pairs")], pairs, match.group("tail"))


def fast_sendmail_body(body: str) -> SendmailBody | None:
    qid_match = SENDMAIL["qid"].match(body)
    qid, content = None, body
    if qid_match is not None:
        qid, content = qid_match.group("qid"), body[qid_match.end() + 1 :]
    if not content:
        return SendmailBody(qid, None, [])
    if "\n" in content:
        return None  # no sendmail terminal matches a line break
    key_first = SENDMAIL["key_first"].match(content) is not None
    parts = SENDMAIL["split"].split(", " + content if key_first else content)
    if any(parts[3::3]):
        return None  # cannot happen for one line: a value runs up to the next ", key="
    if not (key_first or parts[0]):
        return None  # ", key=..." right after the queue id: free text is never empty
    text = None if key_first else parts[0]
    return SendmailBody(qid, text, list(zip(parts[1::3], parts[2::3], strict=True)))
