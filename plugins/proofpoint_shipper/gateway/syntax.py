"""The three gateway syntaxes as the shapes both parse paths produce, and the Lark path itself.

`Header`, `FilterBody` and `SendmailBody` are what a line is made of; `lark_header`,
`lark_filter_body` and `lark_sendmail_body` read them with the grammars (the reference parse).
"""

from typing import NamedTuple

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from proofpoint_shipper.errors import ParseError
from proofpoint_shipper.gateway import grammar


class Header(NamedTuple):
    pri: str | None = None
    time_kind: str | None = None  # "rfc3339", "bsd" or "onbox"
    time_text: str | None = None
    host: str | None = None
    program: str | None = None
    pid: str | None = None
    msgid: str | None = None
    structured_data: str | None = None
    body: str | None = None  # None: nothing after the header, not even a space


# The pairs in order; a dict where the reader already knows no key repeats (the token path).
Pairs = list[tuple[str, str]] | dict[str, str]


class FilterBody(NamedTuple):
    severity: str
    pairs: Pairs
    tail: str | None


class SendmailBody(NamedTuple):
    qid: str | None
    text: str | None
    pairs: Pairs


def split_tag(tag: str) -> tuple[str, str | None]:
    """`sendmail[21646]:` → ("sendmail", "21646"); `sm-mta:` → ("sm-mta", None)."""
    name = tag[:-1]
    if name.endswith("]"):
        program, _, pid = name[:-1].partition("[")
        return program, pid
    return name, None


def unquote(value: str) -> str:
    """A filter value as written, quotes removed and backslash escapes resolved."""
    if not value.startswith('"'):
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    out, escaped = [], False
    for char in inner:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def lark_header(line: str) -> Header:
    tree = _parse("syslog", line, "syslog header")
    parts: dict[str, str | None] = {}
    for child in tree.children:
        if isinstance(child, Tree):
            parts.update(_header_parts(child))
        elif child.type == "PRI":
            parts["pri"] = str(child)
        elif child.type == "BODY":
            parts["body"] = str(child)
    if "body" not in parts and _has_separator(line, tree):
        parts["body"] = ""
    return Header(**parts)


def _has_separator(line: str, tree: Tree) -> bool:
    """Whether a header with no body still ends in the space that would open one (and, in RFC
    5424, the byte order mark that may follow it)."""
    return bool(tree.children) and line.endswith((" ", " \ufeff"))


def _header_parts(header: Tree) -> dict[str, str | None]:
    tokens = {token.type: str(token) for token in header.children if isinstance(token, Token)}
    kind = header.data
    if kind == "rfc5424_header":
        return _rfc5424_parts(tokens)
    parts: dict[str, str | None] = {"host": tokens.get("HOST")}
    if "TAG" in tokens:
        parts["program"], parts["pid"] = split_tag(tokens["TAG"])
    for terminal, time_kind in (("RFC3339_TIME", "rfc3339"), ("BSD_TIME", "bsd"), ("ONBOX_TIME", "onbox")):
        if terminal in tokens:
            parts["time_kind"], parts["time_text"] = time_kind, tokens[terminal]
    return parts


def _rfc5424_parts(tokens: dict[str, str]) -> dict[str, str | None]:
    def value(name: str) -> str | None:
        text = tokens.get(name)
        return None if text in (None, "-") else text

    time_text = tokens.get("RFC3339_TIME")
    return {
        "time_kind": "rfc3339" if time_text else None,
        "time_text": time_text,
        "host": value("HOST"),
        "program": value("APP_NAME"),
        "pid": value("PROCID"),
        "msgid": value("MSGID"),
        "structured_data": value("STRUCTURED_DATA"),
    }


def lark_filter_body(body: str) -> FilterBody:
    tokens, pairs = _walk(_parse("filter_instance", body, "filter line"), unquote)
    return FilterBody(tokens.get("SEVERITY", ""), pairs, tokens.get("TAIL"))


def lark_sendmail_body(body: str) -> SendmailBody:
    tokens, pairs = _walk(_parse("sendmail", body, "sendmail line"), str)
    return SendmailBody(tokens.get("QID"), tokens.get("TEXT"), pairs)


def _walk(tree: Tree, convert) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """A body tree's lone tokens by type, and its key=value pairs with values converted."""
    tokens, pairs = {}, []
    for child in tree.children:
        if isinstance(child, Tree):
            pairs.append(_pair(child, convert))
        else:
            tokens[child.type] = str(child)
    return tokens, pairs


def _pair(pair: Tree, convert) -> tuple[str, str]:
    key, *value = pair.children
    return str(key), convert(str(value[0])) if value else ""


def _parse(name: str, text: str, what: str) -> Tree:
    try:
        return grammar.parser(name).parse(text)
    except UnexpectedInput as exc:
        raise ParseError(describe(exc, what), _position(exc)) from exc


def _position(exc: UnexpectedInput) -> int | None:
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        return exc.token.start_pos
    if isinstance(exc, UnexpectedCharacters):
        return exc.pos_in_stream
    return None


def describe(exc: UnexpectedInput, what: str) -> str:
    """One line saying why a parse stopped; where it stopped is the ParseError's position."""
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        return f"{what}: ends too early"
    if isinstance(exc, UnexpectedCharacters):
        return f"{what}: unexpected {exc.char!r}"
    if isinstance(exc, UnexpectedToken):
        return f"{what}: unexpected {str(exc.token)[:20]!r}"
    return f"{what}: does not parse"
