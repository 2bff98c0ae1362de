"""The whole exception tree of proofpoint-shipper.

    ShipperError            root: anything the command reports as one line and exit code 2
     ├── ConfigError        a flag, setting or file name is wrong; found at start-up
     ├── InputError         an input file cannot be opened or read
     └── ParseError         part of a line does not follow its grammar (the hot path turns
                            it into a record's `error` field; it never leaves the parser)

Foreign errors (lark, OS) are translated into these at one boundary with `raise ... from exc`.
"""


class ShipperError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ShipperError):
    """A flag, setting or file name is wrong."""


class InputError(ShipperError):
    """An input file cannot be opened or read."""


class ParseError(ShipperError):
    """Part of a line does not follow its grammar; the message is one line."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.position = position  # where in the parsed text the grammar stopped, when known
