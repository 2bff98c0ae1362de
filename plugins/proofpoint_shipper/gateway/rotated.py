"""The files a followed log was rotated to: a look at its folders that logrotate's renames do not fool.

logrotate renames maillog.3 to maillog.4, maillog.2 to maillog.3 and so on, one after the other.
A folder read during those renames can miss a file: it was moved to a name the read had already
passed. `files_by_identity` reads the folders again until two reads agree, and keeps every file
any of the reads saw, under the newest name it was seen by.
"""

import os
import re
import stat
import time
from pathlib import Path
from typing import NamedTuple

# The names logrotate gives a rotated file: a number (maillog.1) or, with dateext, a date
# (maillog-20261130); a compressed one adds its suffix, and cannot be followed.
_COMPRESSED_SUFFIX = r"\.(?:gz|xz|zst|bz2|lz4|Z)"
READS = 20  # at most, while renames go on; a burst of them ends in milliseconds
READ_PAUSE_SECONDS = 0.01


class Found(NamedTuple):
    path: Path
    status: os.stat_result


class RotatedName(NamedTuple):
    """How a name reads as a rotated copy of the followed file."""

    number: int  # maillog.2's 2, older than maillog.1; 0 for a dated name
    compressed: bool


def rotated_name(followed: str, name: str) -> RotatedName | None:
    """What `name` says as a rotated copy of the file `followed`, or None when it is not one."""
    plain = rf"{re.escape(followed)}(?:\.(?P<number>\d+)|-\d[\d-]*)"
    named = re.fullmatch(plain, name)
    compressed = None if named else re.fullmatch(f"{plain}{_COMPRESSED_SUFFIX}", name)
    if not named and not compressed:
        return None
    return RotatedName(int((named or compressed).group("number") or 0), compressed is not None)


def files_by_identity(folders: list[Path]) -> dict[tuple, Found]:
    """The regular files in `folders` (links not followed), by (device, inode)."""
    seen: dict[tuple, Found] = {}
    last_names = None
    for _ in range(READS):
        found = _read(folders)
        seen.update(found)
        names = {identity: entry.path for identity, entry in found.items()}
        if names == last_names:
            break
        last_names = names
        time.sleep(READ_PAUSE_SECONDS)
    return seen


def _read(folders: list[Path]) -> dict[tuple, Found]:
    found = {}
    for folder in folders:
        for entry in _entries(folder):
            status = _file_status(entry)
            if status is not None:
                found[(status.st_dev, status.st_ino)] = Found(Path(entry.path), status)
    return found


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []


def _file_status(entry: os.DirEntry) -> os.stat_result | None:
    """The entry's status if it is a regular file (not a link), else None."""
    try:
        status = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return status if stat.S_ISREG(status.st_mode) else None
