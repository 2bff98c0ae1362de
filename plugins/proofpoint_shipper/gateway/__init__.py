"""On-prem gateway syslog: grammar loading, line parsing, timestamp normalisation, text rendering.

Entry points: `parse_line(line)` and `GatewayParser`; `render_text(record)` for the text tables.
They are loaded on first use: building the grammars takes a tenth of a second, which commands
that only import a helper of this package (a time zone, the assembler's record) need not pay.
"""

__all__ = ["GatewayParser", "parse_line", "render_text"]


def __getattr__(name: str):
    if name in ("GatewayParser", "parse_line"):
        from proofpoint_shipper.gateway import parser

        return getattr(parser, name)
    if name == "render_text":
        from proofpoint_shipper.gateway.record import render_text

        return render_text
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
