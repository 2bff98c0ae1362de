"""Following one log file as `tail -F` does, with the read position kept across restarts.

`FollowedFile(path, positions, max_line_bytes, keep_going).batches()` yields (batch, position):
whole lines, and the position to save once they were written; `PositionSaver` saves it, at most
once a second. Rotation by rename (a new file appears under the path) and by truncation (the file
shrinks: read again from its start) are followed; a missing file is waited for. After a restart
the saved position is used if the file is the same one and not shorter; if it was rotated
meanwhile, the rotated file is found in the same folder (`rotated.py`) and its rest is read first,
then the files rotated after it, then the file now under the path. A file is the
same one when its device, inode and first bytes are: filesystems hand a deleted file's inode to the
next file made (ext4 does, after two rotations), and copytruncate keeps the inode with other
lines in it, so the inode alone would resume the new file in the middle of a line.

A file renamed away is read on until it stayed quiet for `rotate_wait` seconds: syslog writes to
it until logrotate's postrotate signal makes it reopen the path, and on a busy gateway those are
hundreds of lines. A rotated file found by a look at the folder (after a restart, or rotated
while another was read on) is done at its end once it was neither written nor renamed for that
long: rotated a day before, it needs no wait. Then come the files rotated after it, if the path
was rotated more than once meanwhile (a follower stopped for two days of daily rotation, or
catching up a backlog): the rotated names logrotate gives (`maillog.1`, `maillog-20261130`)
written to since, oldest first. Only then does the new file's first line come out. A rotated
file logrotate compressed with gzip (`maillog.2.gz`) is read inflated (`inflated.py`), from the
saved offset if it holds the saved position; other compressions are told, not read.
"""

import contextlib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from proofpoint_shipper.checkpoint import refuse_foreign
from proofpoint_shipper.errors import ConfigError, InputError
from proofpoint_shipper.gateway.inflated import InflatedFile, inflated_start, is_gzip
from proofpoint_shipper.gateway.rotated import Found, RotatedName, files_by_identity, rotated_name
from proofpoint_shipper.gunzip import MAGIC as GZIP_MAGIC
from proofpoint_shipper.gunzip import other_compression
from proofpoint_shipper.lines import UTF8_BOM, Batch, LineReader

log = logging.getLogger("proofpoint_shipper")
POLL_SECONDS = 0.25
SAVE_SECONDS = 1.0  # between position saves
DEFAULT_ROTATE_WAIT_SECONDS = 5.0  # as Fluent Bit's tail input waits (Rotate_Wait)
REFUSED_TELL_SECONDS = 60.0  # between two lines about a file this user may not read
HEAD_BYTES = 1024  # the first bytes of a file that tell it from another
# Found by its first bytes alone (no inode in common: a copytruncate's copy), a file must have
# this many in common with the saved one: a timestamped line, not a lone line break.
FIND_BY_HEAD_BYTES = 64
_POSITION_KEYS = frozenset({"device", "inode", "offset", "head_bytes", "head_sha256", "modified_ns", "path"})
REOPENS = 3  # a file found, then renamed by logrotate before it was opened: looked for again
wall_clock_ns = time.time_ns  # what a file's status change time is compared with


class _OpenFile:
    """One open generation of the followed path: its identity, reader and consumed offset."""

    def __init__(self, path: Path, offset: int, max_line_bytes: int):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open would wait for a writer
        status = os.fstat(self.fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(self.fd)
            raise ConfigError(f"cannot follow {path}: not a regular file (pipe it to `ppship gateway parse`)")
        self.identity = (status.st_dev, status.st_ino)
        self.size = status.st_size
        self.lines = LineReader(self.fd, max_line_bytes, name=str(path))
        self._digest: tuple[int, str] | None = None  # (bytes, sha256) of the head, as last given
        self.seek(offset if offset <= status.st_size else 0)

    def seek(self, offset: int) -> None:
        """Read on from `offset`, forgetting any unfinished line."""
        self.read_to = os.lseek(self.fd, offset, os.SEEK_SET)
        self.head = self.first(min(offset, HEAD_BYTES))  # read on from here by `read`
        self._digest = None
        self.lines.finish()

    def first(self, length: int) -> bytes:
        """The file's first `length` bytes (fewer if it is shorter)."""
        try:
            return os.pread(self.fd, length, 0)
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def starts_with(self, length: int, sha256: str) -> bool:
        return _is_head(self.first(length), length, sha256)

    def head_digest(self) -> tuple[int, str]:
        """How many of the first bytes up to the last whole line handed out, and their digest."""
        length = min(self.consumed, len(self.head))
        if self._digest is None or self._digest[0] != length:
            self._digest = (length, hashlib.sha256(self.head[:length]).hexdigest())
        return self._digest

    @property
    def consumed(self) -> int:
        """Bytes up to the end of the last whole line handed out."""
        return self.read_to - self.lines.pending_bytes

    def read(self) -> Batch | None:
        chunk = self.lines.read_chunk()
        if not chunk:
            return None
        if self.first(len(self.head)) != self.head:
            # Truncated, and written past the read offset before this read (copytruncate on a busy
            # gateway): the size did not tell, the first bytes do. The chunk is the new lines'.
            _tell_truncated(self.path)
            self.seek(0)
            return Batch([], {})
        if len(self.head) < HEAD_BYTES:  # the head and the reads are contiguous up to HEAD_BYTES
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        at_start, self.read_to = self.read_to == 0, self.read_to + len(chunk)
        return self.lines.split(chunk.removeprefix(UTF8_BOM) if at_start else chunk)

    def rest(self) -> Batch:
        """The unterminated last line, as a writer that is done with this file left it."""
        return self.lines.finish()

    def unchanged_for(self) -> float:
        """Seconds since the file was last written or renamed (its status change time), by the
        wall clock; 0 when that time is ahead of the clock."""
        return max(0.0, (wall_clock_ns() - os.fstat(self.fd).st_ctime_ns) / 1e9)

    def modified(self) -> int:
        """When the file was last written, in ns: the files rotated after it were written since."""
        return os.fstat(self.fd).st_mtime_ns

    def close(self) -> None:
        self.modified_ns = self.modified()
        os.close(self.fd)


class FollowedFile:
    def __init__(
        self,
        path: Path,
        positions,
        max_line_bytes: int,
        keep_going: Callable[[], bool],
        rotate_wait: float = DEFAULT_ROTATE_WAIT_SECONDS,
        rotated_dir: Path | None = None,
    ):
        self.path = Path(path)
        self._followed = str(self.path.absolute())  # the path followed, as saved with positions
        self.rotated_dir = rotated_dir  # where logrotate's olddir moves rotated files, if it does
        self.positions = positions  # load() -> dict | None, save(dict)
        self.max_line_bytes = max_line_bytes
        self.keep_going = keep_going
        self.rotate_wait = rotate_wait
        self._refused_told_at: float | None = None  # when an unreadable new file was last told

    def batches(self) -> Iterator[tuple[Batch, dict]]:
        current = yield from self._resume()
        if current is not None:
            _refuse_compressed(current)
        while self.keep_going():
            if current is None:
                current = self._open_when_present()
                continue
            batch = current.read()
            if batch is not None:
                if batch.lines:
                    yield batch, self._position(current)
                continue
            current = yield from self._after_end_of(current)
        if current is not None:
            current.close()

    def _resume(self) -> Iterator[tuple[Batch, dict]]:
        saved = self.positions.load()
        if not saved:
            current = self._open_at(0)
            if current is None:  # a typo would otherwise wait in silence, for ever
                log.warning("follow: %s does not exist (yet): waiting for it to appear", self.path)
            return current
        position = self._saved_position(saved)
        current = self._open_at(0)
        if current is not None and position.names(current):
            if current.size >= position.offset:
                current.seek(position.offset)
            else:
                log.warning(
                    "follow: %s is shorter than the saved position: reading it from its start", self.path
                )
            return current  # the file of the position, whatever path it was followed by then
        self._refuse_another_followers(saved, current)
        rotated = self._rotated_file(position, current)
        if current is not None:
            # Read after the files rotated before it, it may be one of them by then: looked for
            # among them, and the file under the path opened anew after them.
            current.close()
        previous = self._open_found(*rotated, position.offset) if rotated else None
        if previous is not None:
            log.info(
                "follow: %s was rotated while stopped: reading the rest of %s first", self.path, previous.path
            )
            yield from self._drain(previous, found=True)
            return (yield from self._then_the_new_file(_LastRead.of(previous), {previous.identity}))
        if position.offset > 0:
            log.warning(
                "follow: the file of the saved position is gone (rotated away and deleted, or "
                "compressed other than with gzip): whatever was written to it after what was read "
                "is lost, as is any file rotated after it that is gone too; reading the files "
                "rotated since, then %s, from their start",
                self.path,
            )
        # The files rotated after the one that is gone: written to since it was, when the
        # position was taken (a follower behind the writer saves positions in a file while the
        # next is written), or since the position was saved, by releases that kept no time.
        since = position.modified_ns
        if since is None:
            since = os.stat(self.positions.path).st_mtime_ns
        return (yield from self._then_the_new_file(_LastRead(since, position.head), set()))

    def _refuse_another_followers(self, saved: dict, current: _OpenFile | None) -> None:
        """A position saved for another path, whose file is not the one under this path: taken
        for a rotation of this file, the rest of that file, written on since, came out as this
        file's lines. Positions saved by earlier releases name no path."""
        followed = saved.get("path", self._followed)
        if followed == self._followed:
            return
        if current is not None:
            current.close()
        raise ConfigError(
            f"position file {self.positions.path} is that of the follower of {followed}, not of "
            f"{self._followed}: give each followed file its own --position-file"
        )

    def _saved_position(self, saved: dict) -> "_SavedPosition":
        refuse_foreign(saved, _POSITION_KEYS, self.positions.where, "--position-file")
        position = _SavedPosition(
            (saved.get("device"), saved.get("inode")),
            saved.get("offset", 0),
            saved.get("head_bytes"),
            saved.get("head_sha256"),
            saved.get("modified_ns"),
        )
        if not position.well_formed():
            when = "" if position.modified_ns is None else f", modified_ns {position.modified_ns!r}"
            raise ConfigError(
                f"position file {self.positions.path} holds no read position: offset "
                f"{position.offset!r}, head_bytes {position.head_bytes!r}{when}"
            )
        return position

    def _rotated_file(
        self, position: "_SavedPosition", current: _OpenFile | None
    ) -> tuple[tuple, Path] | None:
        """The saved file's (device, inode) and name, if it is still in the followed file's
        folder: by its inode, else (a copytruncate's copy) by a rotated name and its first bytes,
        never a copy under another name (a backup, or the text this command wrote, which can be
        the same bytes). Not the file now under the path. A followed link's file is rotated where
        it is (logrotate refuses links): that folder is looked in too."""
        files = files_by_identity(self._folders())
        if current is not None:
            files.pop(current.identity, None)
        saved = files.get(position.identity)
        if saved is not None and position.names_file(saved.path):
            return position.identity, saved.path
        followed = self._followed_names()
        for identity, found in sorted(files.items(), key=lambda item: item[1].path):
            named = _rotated_as(followed, found.path.name)
            size = None if named and named.compressed else found.status.st_size  # inflated: unknown
            if named and position.found_by_head(found.path, size):
                return identity, found.path
        return None

    def _open_found(self, identity: tuple, path: Path, offset: int) -> _OpenFile | InflatedFile | None:
        """The rotated file of `identity`, found at `path`, opened at `offset` (in its inflated
        bytes if logrotate compressed it); None if it is gone. Between the look that found it and
        the open, logrotate may have renamed it: it is looked for again."""
        for _ in range(REOPENS):
            try:
                opened = self._open_rotated(path, offset)
            except FileNotFoundError:
                pass
            else:
                if opened.identity == identity:
                    return opened
                opened.close()  # another file took the name meanwhile
            found = files_by_identity(self._folders()).get(identity)
            if found is None:
                return None
            path = found.path
        return None

    def _open_rotated(self, path: Path, offset: int) -> _OpenFile | InflatedFile:
        if is_gzip(path):
            return InflatedFile(path, offset, self.max_line_bytes, HEAD_BYTES)
        return _OpenFile(path, offset, self.max_line_bytes)

    def _open_at(self, offset: int) -> _OpenFile | None:
        try:
            return _OpenFile(self.path, offset, self.max_line_bytes)
        except FileNotFoundError:
            return None
        except PermissionError as exc:  # at start, one error line; after a rotation, waited out
            raise InputError(f"cannot follow {self.path}: {exc.strerror}") from None

    def _open_when_present(self) -> _OpenFile | None:
        """The file now under the path, once it is there and readable. A rotation that creates it
        with a mode or owner this user cannot read (logrotate's `create 0600 root root`) is
        waited out, as `tail -F` does, and told once a minute: it ends when the mode is fixed."""
        try:
            opened = self._open_at(0)
        except InputError as exc:
            self._tell_refused(exc)
            opened = None
        if opened is None:
            time.sleep(POLL_SECONDS)
        elif self._refused_told_at is not None:
            log.warning("follow: %s can be read again: reading it from its start", self.path)
            self._refused_told_at = None
        return opened

    def _tell_refused(self, exc: InputError) -> None:
        now = time.monotonic()
        if self._refused_told_at is None or now - self._refused_told_at >= REFUSED_TELL_SECONDS:
            log.error(
                "follow: %s; waiting until this user (uid %d) may read it: give the rotated log a mode "
                "or group that lets it (logrotate's `create`)",
                exc,
                os.geteuid(),
            )
            self._refused_told_at = now

    def _after_end_of(self, current: _OpenFile) -> Iterator[tuple[Batch, dict]]:
        """At the end of the file: wait, follow a truncation, or move on to a rotated-in file."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            time.sleep(POLL_SECONDS)  # renamed away, the new one not there yet: keep the old open
            return current
        if (status.st_dev, status.st_ino) != current.identity:
            log.info("follow: %s was rotated: finishing the old file, then reading the new one", self.path)
            yield from self._drain(current)
            return (yield from self._then_the_new_file(_LastRead.of(current), {current.identity}))
        if status.st_size < current.read_to:
            _tell_truncated(self.path)
            current.seek(0)
            return current
        time.sleep(POLL_SECONDS)
        return current

    def _drain(self, old: _OpenFile | InflatedFile, *, found: bool = False) -> Iterator[tuple[Batch, dict]]:
        """What is written to a file rotated away until it stays quiet, its last unterminated
        line included. Stopped sooner, the rest is read after the restart (found by its inode).

        `found`: the file was found rotated, not seen being rotated just now; its status change
        time then tells how long it has been quiet already. Not for a rotation seen: it was
        renamed just now, and a file server's clock running behind ours would end the wait before
        syslog reopened the path.
        """
        try:
            quiet_since = time.monotonic()
            while self.keep_going():
                batch = old.read()
                if batch is not None:
                    quiet_since = time.monotonic()
                    if batch.lines:
                        yield batch, self._position(old)
                elif time.monotonic() - quiet_since >= self.rotate_wait or (
                    found and old.unchanged_for() >= self.rotate_wait
                ):
                    rest = old.rest()
                    if rest.lines:
                        yield rest, self._position(old)
                    return
                else:
                    time.sleep(POLL_SECONDS)
        finally:
            old.close()

    def _then_the_new_file(self, last: "_LastRead", done: set[tuple]) -> Iterator[tuple[Batch, dict]]:
        """The files rotated after `last`, oldest first; then the file under the path, opened once
        there is one (None at a stop). The folder is looked at again after that open: a rotation
        between the last look and the open made the file under the path then one of the rotated
        files, read before the one opened, which is opened anew after it."""
        while self.keep_going():
            last = yield from self._rotated_after(last, done)
            opened = self._open_when_present()
            if opened is None:
                continue
            if self._next_rotated(last, done) is None:
                return opened
            opened.close()
        return None

    def _rotated_after(self, last: "_LastRead", done: set[tuple]) -> Iterator[tuple[Batch, dict]]:
        """Each file rotated after the one just read, oldest first, read as a file rotated away
        is: written to since `last` was; returns the last one read. `done`: files read, or to be
        read next."""
        while self.keep_going():
            found = self._next_rotated(last, done)
            if found is None:
                return last
            identity, name = found
            done.add(identity)
            try:
                rotated = self._open_found(identity, name, 0)
            except OSError as exc:  # unreadable, say: what it held is lost, and said
                log.warning("follow: %s, rotated before it was read, cannot be read: %s", name, exc)
                continue
            if rotated is None:
                log.warning("follow: %s, rotated before it was read, was deleted before it was read", name)
                continue
            log.info("follow: reading %s, rotated before it was read", rotated.path)
            yield from self._drain(rotated, found=True)
            last = _LastRead.of(rotated)
        return last

    def _next_rotated(self, last: "_LastRead", done: set[tuple]) -> tuple[tuple, Path] | None:
        """The (device, inode) and name of the oldest file of a rotated name written to since
        `last` was, not the path's file and none of `done`, nor a compressed one not to read."""
        skip = set(done)
        try:
            status = os.stat(self.path)
            skip.add((status.st_dev, status.st_ino))  # the new file, read after these: for now
        except FileNotFoundError:
            pass
        candidates, followed = [], self._followed_names()
        for identity, found in files_by_identity(self._folders()).items():
            named = _rotated_as(followed, found.path.name)
            if named is None or identity in skip or found.status.st_mtime_ns < last.modified_ns:
                continue
            if named.compressed and not _compressed_to_read(found, last, done):
                continue
            # maillog.2 before maillog.1 when both were last written in the same clock tick
            candidates.append(
                ((found.status.st_mtime_ns, -named.number, found.path.name), identity, found.path)
            )
        return min(candidates)[1:] if candidates else None

    def _folders(self) -> list[Path]:
        """Where the followed file is rotated: beside the path, beside the file a link names
        (logrotate refuses links, and rotates the file where it is), and in the rotated folder
        given (logrotate's olddir)."""
        folders = [self.path.parent, self.path.resolve().parent]
        return list(dict.fromkeys(folders + ([self.rotated_dir] if self.rotated_dir else [])))

    def _followed_names(self) -> list[str]:
        """The names rotated copies are named after: the path's, and that of the file a link
        names, which logrotate rotates under its own name."""
        return list(dict.fromkeys([self.path.name, self.path.resolve().name]))

    def _position(self, current: _OpenFile | InflatedFile) -> dict:
        device, inode = current.identity
        head_bytes, head_sha256 = current.head_digest()
        return {
            "device": device,
            "inode": inode,
            "offset": current.consumed,
            "head_bytes": head_bytes,
            "head_sha256": head_sha256,
            "modified_ns": current.modified(),
            "path": self._followed,
        }


class _SavedPosition(NamedTuple):
    """A saved read position, the file it belongs to, and when that file was last written then.
    Positions saved by releases before the first bytes were kept have no head: their file is the
    one with their device and inode; nor, before the time was kept, a time."""

    identity: tuple
    offset: int
    head_bytes: int | None
    head_sha256: str | None
    modified_ns: int | None

    def well_formed(self) -> bool:
        def count(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        if self.modified_ns is not None and not count(self.modified_ns):
            return False
        if self.head_bytes is None and self.head_sha256 is None:
            return count(self.offset)
        return count(self.offset) and count(self.head_bytes) and isinstance(self.head_sha256, str)

    def names(self, opened: _OpenFile) -> bool:
        if opened.identity != self.identity:
            return False
        return self.head_bytes is None or opened.starts_with(self.head_bytes, self.head_sha256)

    def names_file(self, path: Path) -> bool:
        return self.head_bytes is None or _starts_with(path, self.head_bytes, self.head_sha256)

    @property
    def head(self) -> tuple[int, str] | None:
        return None if self.head_bytes is None else (self.head_bytes, self.head_sha256)

    def found_by_head(self, path: Path, size: int | None) -> bool:
        """Whether `path` is a copy of the saved file (copytruncate's, or compressed); `size`:
        its size, None when compressed (its inflated size is not known)."""
        if size is not None and size < self.offset:
            return False
        return _opens_with(path, self.head)


class _LastRead(NamedTuple):
    """The file read last: when it was last written, and its first bytes (how many, their digest)
    if known. The files rotated after it were written since; its compressed copy opens with them."""

    modified_ns: int
    head: tuple[int, str] | None

    @classmethod
    def of(cls, read: _OpenFile | InflatedFile) -> "_LastRead":
        return cls(read.modified_ns, read.head_digest())

    def compressed_to(self, path: Path) -> bool:
        """Whether the compressed file at `path` is this one: logrotate compressed it after it was
        read (gzip keeps its time, so it looks written since)."""
        return _opens_with(path, self.head)


def _compressed_to_read(found: Found, last: _LastRead, done: set[tuple]) -> bool:
    """Whether a compressed rotated file is one to read: gzip, whole, and not the file read last.
    One logrotate is still writing (the plain file is there until it is done) is looked at again
    later; one of another compression is told and passed over."""
    if found.path.with_suffix("").exists():
        return False
    identity = (found.status.st_dev, found.status.st_ino)
    if not is_gzip(found.path):
        done.add(identity)
        _tell_compressed(found)
        return False
    if last.compressed_to(found.path):
        done.add(identity)
        return False
    return True


def _rotated_as(followed: list[str], name: str) -> RotatedName | None:
    """What `name` says as a rotated copy of a file of one of the `followed` names."""
    for followed_name in followed:
        named = rotated_name(followed_name, name)
        if named is not None:
            return named
    return None


def _tell_compressed(found: Found) -> None:
    log.warning(
        "follow: %s was rotated and compressed before it was read: its lines are not read here (%s)",
        found.path,
        _compression_of(found.path),
    )


def _compression_of(path: Path) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as file:
        return other_compression(file.read(16)) or "a compression not read here"
    return "it cannot be read"


def _refuse_compressed(opened: _OpenFile) -> None:
    """A compressed file given to follow (a rotated log, by mistake) holds no line end for a long
    while: the follower would wait for one with nothing said."""
    start = opened.first(16)
    if start.startswith(GZIP_MAGIC):
        refusal = "it is gzip-compressed, a finished log: read it without --follow"
    else:
        refusal = other_compression(start)
    if refusal:
        opened.close()
        raise InputError(f"cannot follow {opened.path}: {refusal}")


def _tell_truncated(path: Path) -> None:
    log.warning("follow: %s was truncated: reading it again from its start", path)


def _opens_with(path: Path, head: tuple[int, str] | None) -> bool:
    """Whether the file opens with `head` (how many bytes, their digest), found by these alone:
    enough of them to tell a file (FIND_BY_HEAD_BYTES), not a lone line break."""
    return head is not None and head[0] >= FIND_BY_HEAD_BYTES and _starts_with(path, *head)


def _starts_with(path: Path, length: int, sha256: str) -> bool:
    """Whether the file opens with these bytes; a gzip file's inflated bytes are compared."""
    return _is_head(inflated_start(path, length), length, sha256)


def _is_head(first: bytes, length: int, sha256: str) -> bool:
    """Whether `first`, read from a file's start, is the `length` bytes with this digest."""
    return len(first) == length and hashlib.sha256(first).hexdigest() == sha256


class PositionSaver:
    """Saves the position after what was written, at most once per `interval` seconds.

    A save is two fsyncs, and a busy gateway fills hundreds of batches a second: saving each would
    cap the follower at the disk's fsync rate. The newest position is saved once due, also while
    the file is idle (`save_if_due`), and at the end (`flush`). A crash re-reads at most
    `interval` seconds of lines: written again, never skipped.
    """

    def __init__(self, store, interval: float = SAVE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.store, self.interval, self.clock = store, interval, clock
        self._unsaved: dict | None = None
        self._saved_at = -interval  # the first position is saved at once

    def written(self, position: dict) -> None:
        self._unsaved = position
        self.save_if_due()

    def save_if_due(self) -> None:
        if self._unsaved is not None and self.clock() - self._saved_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self._unsaved is not None:
            self.store.save(self._unsaved)
            self._unsaved = None
            self._saved_at = self.clock()
