"""The whole exception tree of proofpoint-shipper.

    ShipperError            root: anything the command reports as one line and exit code 2
     ├── ConfigError        a flag, setting or file name is wrong; found at start-up
     │    └── SharedKeyRefused   a forward receiver refused our shared key
     ├── InputError         an input file cannot be opened or read
     ├── FetchError         a source did not answer usefully within its retry bound
     ├── DeliveryError      an output did not confirm data within its retry bound
     │    └── ReaderGone    stdout's reader went away (EPIPE): no retry can deliver again
     ├── DeliveryAbandoned  a delivery given up on purpose (a bounded shutdown); never retried
     ├── CursorConflict     another collector holds or advanced the same cursor
     ├── StageFailed        a step of `ppship demo` (one of its child processes) failed
     ├── Stopped            SIGTERM came during a retry wait; the unfinished work is redone next run
     └── ParseError         part of a line does not follow its grammar (the hot path turns
                            it into a record's `error` field; it never leaves the parser)

Foreign errors (lark, OS) are translated into these at one boundary with `raise ... from exc`.
"""


class ShipperError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ShipperError):
    """A flag, setting or file name is wrong."""


class SharedKeyRefused(ConfigError):
    """A forward receiver and we do not share the same key; retrying cannot help."""


class InputError(ShipperError):
    """An input file cannot be opened or read."""


class FetchError(ShipperError):
    """A source (the TAP or PoD API) did not answer usefully within the retry bound."""


class DeliveryError(ShipperError):
    """An output did not confirm the data within its retry bound; the data was kept."""


class ReaderGone(DeliveryError):
    """The reader of our stdout went away (EPIPE): whatever waits for delivery cannot be delivered."""


class DeliveryAbandoned(ShipperError):
    """A delivery was given up on purpose, at a bounded shutdown; the data was not confirmed."""


class CursorConflict(ShipperError):
    """Another collector holds the same cursor, or advanced it since we read it; this one must stop."""


class StageFailed(ShipperError):
    """A step of `ppship demo` failed: a child process did not start, finish or succeed."""


class Stopped(ShipperError):
    """A stop (SIGTERM) was asked for while waiting to retry, or during a request; the command
    ends cleanly, and what it had not finished is done again on its next run."""


class ParseError(ShipperError):
    """Part of a line does not follow its grammar; the message is one line."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.position = position  # where in the parsed text the grammar stopped, when known
