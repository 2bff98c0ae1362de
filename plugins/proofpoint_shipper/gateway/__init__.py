"""On-prem gateway syslog: grammar loading, line parsing, timestamp normalisation, text rendering.

Entry points: `parse_line(line)` and `GatewayParser`; `render_text(record)` for the text tables.
"""

from proofpoint_shipper.gateway.parser import GatewayParser, parse_line
from proofpoint_shipper.gateway.record import render_text

__all__ = ["GatewayParser", "parse_line", "render_text"]
