"""Forward protocol v1 pieces the sinks and peers share: Forward-mode chunks, acks, handshake.

EventTime is fluent-logger's (msgpack ext type 0, seconds and nanoseconds). The handshake is
HELO (server) → PING (client) → PONG (server), each side proving the shared key with
sha512_hex(salt + hostname + nonce + shared_key).
"""

import functools
import hashlib
import hmac
import os
import uuid
from datetime import datetime

import msgpack
from fluent.sender import EventTime

from proofpoint_shipper.errors import DeliveryError, SharedKeyRefused

MAX_SERVER_MESSAGE_BYTES = 64 * 1024  # acks and handshake messages are tiny


def msgpack_fault(exc: Exception) -> str:
    """What msgpack refused, in words: its C reader's StackError (nested past its depth) and
    FormatError (a byte no msgpack object starts with, as 0xc1) have none."""
    if isinstance(exc, msgpack.StackError):
        return "nested deeper than msgpack reads"
    if isinstance(exc, msgpack.FormatError) and not str(exc):
        return "a byte that starts no msgpack object"
    return str(exc) or type(exc).__name__


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
    """One whole msgpack object, decoded as `unpacker()` would; but PackedForward entries sent
    as a msgpack str come as the bytes they are.

    Fluentd's out_forward always sends its entries as str32 (a format older than msgpack's bin):
    read as text, their bytes would be mangled into U+FFFD and the chunk lost.
    """
    if frame[:1] in _ARRAYS_OF_2_OR_3:
        message = _with_raw_entries(frame)
        if message is not None:
            return message
    return msgpack.unpackb(frame, raw=False, ext_hook=_ext_hook, unicode_errors="replace")


_ARRAYS_OF_2_OR_3 = (b"\x92", b"\x93")  # [tag, entries] or [tag, entries, options]


def _with_raw_entries(frame: bytes) -> list | None:
    """[tag, entries, options?] with entries as bytes when both tag and entries were sent as
    msgpack str; None otherwise (the frame is then decoded whole)."""
    tag = _str_extent(frame, 1)
    entries = tag and _str_extent(frame, tag[1])
    if entries is None:
        return None
    message = [frame[tag[0] : tag[1]].decode("utf-8", "replace"), frame[entries[0] : entries[1]]]
    if frame[0] == 0x93:
        message.append(unpack_frame(frame[entries[1] :]))  # the options: exactly one object
    elif entries[1] != len(frame):
        raise msgpack.ExtraData(message, frame[entries[1] :])
    return message


def _str_extent(frame: bytes, at: int) -> tuple[int, int] | None:
    """Where the body of the msgpack str at `at` begins and ends; None for any other type."""
    kind = frame[at] if at < len(frame) else None
    if kind is not None and 0xA0 <= kind <= 0xBF:  # fixstr
        begin, end = at + 1, at + 1 + (kind & 0x1F)
    elif (width := _STR_LENGTH_WIDTHS.get(kind)) is not None:
        begin = at + 1 + width
        end = begin + int.from_bytes(frame[at + 1 : begin], "big")
    else:
        return None
    if end > len(frame):
        raise ValueError(f"a str of {end - begin} bytes runs past the end of the frame")
    return begin, end


_STR_LENGTH_WIDTHS = {0xD9: 1, 0xDA: 2, 0xDB: 4}  # str8, str16, str32


# EventTime is a msgpack ExtType, a (code, data) tuple: built from the bytes as they came, it
# skips packing seconds and nanoseconds again, which the relay would pay for every record.
_event_time_of_bytes = functools.partial(tuple.__new__, EventTime)


def _ext_hook(code: int, data: bytes):
    if code == 0 and len(data) == 8:
        return _event_time_of_bytes((0, data))
    return msgpack.ExtType(code, data)


def shared_key_digest(salt: bytes, hostname: str, nonce: bytes, shared_key: str) -> str:
    return hashlib.sha512(salt + hostname.encode() + nonce + shared_key.encode()).hexdigest()


def digest_matches(digest: object, salt: bytes, hostname: str, nonce: bytes, shared_key: str) -> bool:
    """Whether a peer's digest (msgpack str or bin) is the one the shared key gives.

    Compared in constant time: how long a refusal took tells nothing of the digest expected.
    """
    if not isinstance(digest, bytes | str):
        return False
    expected = shared_key_digest(salt, hostname, nonce, shared_key).encode()
    return hmac.compare_digest(as_bytes(digest), expected)


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
    if not isinstance(server_hostname, str) or not digest_matches(
        digest, salt, server_hostname, nonce, shared_key
    ):
        raise SharedKeyRefused("forward receiver does not know our shared key (its PONG digest differs)")


def as_bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
