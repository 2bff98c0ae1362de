"""Loads the gateway grammars shipped with the package and builds their LALR parsers once.

`parser(name)` gives the cached Lark parser; `terminal(name, terminal)` gives the regular
expression Lark compiled for one terminal, from which the fast path is built.
"""

import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lark import Lark

GRAMMARS = ("syslog", "filter_instance", "sendmail")


def grammar_dir() -> Path:
    """The installed package's grammars; in an editable checkout, the repository's grammars/."""
    shipped = Path(str(resources.files("proofpoint_shipper"))) / "grammars"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[3] / "grammars"


@functools.cache
def parser(name: str) -> "Lark":
    """The LALR parser (contextual lexer) for one of GRAMMARS, built on first use."""
    if name not in GRAMMARS:
        raise KeyError(name)
    from lark import Lark  # imported on first use, with the grammars it builds

    path = grammar_dir() / f"{name}.lark"
    return Lark.open(str(path), parser="lalr", lexer="contextual", start="start")


@functools.cache
def terminal(name: str, terminal_name: str) -> str:
    """The regular expression of one terminal exactly as Lark's lexer uses it."""
    for definition in parser(name).terminals:
        if definition.name == terminal_name:
            return definition.pattern.to_regexp()
    raise KeyError(f"{name}.lark has no terminal {terminal_name}")


@functools.cache
def common_terminal(terminal_name: str) -> str:
    """A terminal of common.lark that no line grammar uses directly (program names, for one)."""
    from lark import Lark

    probe = f"start: {terminal_name}\n%import .common ({terminal_name})\n"
    lark = Lark(probe, parser="lalr", source_path=str(grammar_dir() / "_probe.lark"))
    return lark.terminals[0].pattern.to_regexp()
