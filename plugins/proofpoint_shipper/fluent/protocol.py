"""Forward protocol v1 pieces the sinks and peers share: Forward-mode chunks, acks, handshake.

EventTime is fluent-logger's (msgpack ext type 0, seconds and nanoseconds). The handshake is
HELO (server) → PING (client) → PONG (server), each side proving the shared key with
sha512_hex(salt + hostname + nonce + shared_key).
"""

import functools
import hashlib
import os
import uuid
from datetime import datetime

import msgpack
from fluent.sender import EventTime

from proofpoint_shipper.errors import DeliveryError, SharedKeyRefused

MAX_SERVER_MESSAGE_BYTES = 64 * 1024  # acks and handshake messages are tiny


def event_time(moment: datetime) -> EventTime:
    nanoseconds = moment.microsecond * 1000
    return EventTime(int(moment.timestamp()), nanoseconds)


def new_chunk_id() -> str:
    """A chunk id as a msgpack *string*: Fluent Bit acks nothing it received as binary."""
    return uuid.uuid4().hex


def forward_chunk(tag: str, entries: list[list], chunk_id: str) -> bytes:
    """[tag, [[time, record], ...], {"size": n, "chunk": id}] packed."""
    return msgpack.packb([tag, entries, {"size": len(entries), "chunk": chunk_id}], use_bin_type=True)


def unpacker(max_buffer_size: int = MAX_SERVER_MESSAGE_BYTES) -> msgpack.Unpacker:
    """A streaming reader that decodes EventTime and refuses to buffer more than the bound.

    A string that is not UTF-8 (an agent tailing a Latin-1 file sends such) is read with U+FFFD
    in place of the bad bytes: refusing it would refuse the chunk, which the agent resends forever.
    """
    return msgpack.Unpacker(
        raw=False, max_buffer_size=max_buffer_size, ext_hook=_ext_hook, unicode_errors="replace"
    )


def unpack_frame(frame: bytes) -> object:
    """One whole msgpack object, decoded as `unpacker()` would."""
    return msgpack.unpackb(frame, raw=False, ext_hook=_ext_hook, unicode_errors="replace")


# EventTime is a msgpack ExtType, a (code, data) tuple: built from the bytes as they came, it
# skips packing seconds and nanoseconds again, which the relay would pay for every record.
_event_time_of_bytes = functools.partial(tuple.__new__, EventTime)


def _ext_hook(code: int, data: bytes):
    if code == 0 and len(data) == 8:
        return _event_time_of_bytes((0, data))
    return msgpack.ExtType(code, data)


def shared_key_digest(salt: bytes, hostname: str, nonce: bytes, shared_key: str) -> str:
    return hashlib.sha512(salt + hostname.encode() + nonce + shared_key.encode()).hexdigest()


def ping(helo: object, hostname: str, shared_key: str) -> tuple[bytes, bytes, bytes]:
    """The PING answering a HELO: (packed message, our salt, the server's nonce)."""
    if not (isinstance(helo, list) and len(helo) == 2 and helo[0] == "HELO" and isinstance(helo[1], dict)):
        raise DeliveryError(f"forward receiver sent no HELO but {str(helo)[:80]!r}")
    nonce = as_bytes(helo[1].get("nonce", b""))
    salt = os.urandom(16)
    message = ["PING", hostname, salt, shared_key_digest(salt, hostname, nonce, shared_key), "", ""]
    return msgpack.packb(message, use_bin_type=True), salt, nonce


def check_pong(pong: object, salt: bytes, nonce: bytes, shared_key: str) -> None:
    if not (isinstance(pong, list) and len(pong) == 5 and pong[0] == "PONG"):
        raise DeliveryError(f"forward receiver sent no PONG but {str(pong)[:80]!r}")
    _, accepted, reason, server_hostname, digest = pong
    if not accepted:
        raise SharedKeyRefused(f"forward receiver refused our shared key: {reason}")
    if digest != shared_key_digest(salt, server_hostname, nonce, shared_key):
        raise SharedKeyRefused("forward receiver does not know our shared key (its PONG digest differs)")


def as_bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
