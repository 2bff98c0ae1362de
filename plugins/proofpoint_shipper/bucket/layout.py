"""The key layout of the data lake: the S3 output writes keys with it, `ppship s3 check` reads them.

    <prefix>/<table>/<YYYY>/<MM>/<DD>/<HH>/<leaf>.<ndjson|log>[.gz]

`table_prefix` is where a table's objects live (lifecycle rules and notifications filter on it);
`misplacement` says what is wrong with a key found under a table, or None.
"""

import argparse
import re

from proofpoint_shipper.streams import Stream

_PARTITIONED = re.compile(
    r"(?P<year>\d{4})/(?P<month>\d\d)/(?P<day>\d\d)/(?P<hour>\d\d)/[^/]+\.(?P<ext>ndjson|log)(\.gz)?"
)
EXTENSION = {"ndjson": "ndjson", "text": "log"}
# Folders beside the tables that are ours and expected: write probes and cursors.
KNOWN_FOLDERS = ("_ppship_probe", "ppship-state")


def clean_prefix(prefix: str) -> str:
    return prefix.strip("/")


def key_prefix(text: str) -> str:
    """--prefix: folders of plain names, the slashes around them dropped; argparse's type.

    S3 takes any key, but "a//b", "../x" or " logs" put the tables where the data lake, and the
    S3 console, do not look (".." is even dropped by some clients on the way).
    """
    prefix = clean_prefix(text)
    for folder in prefix.split("/") if prefix else ():
        fault = _folder_fault(folder)
        if fault is not None:
            raise argparse.ArgumentTypeError(f"{text!r}: {fault}")
    return prefix


def _folder_fault(folder: str) -> str | None:
    if not folder:
        return "an empty folder between two slashes"
    if folder in (".", ".."):
        return f"a {folder!r} folder"
    if folder != folder.strip():
        return f"the folder {folder!r} has white space around it"
    if not folder.isprintable():
        return f"the folder {folder!r} holds a control character"
    if "\\" in folder:
        return f"the folder {folder!r} holds a backslash (folders are separated by '/')"
    return None


def under(prefix: str, name: str) -> str:
    """`name` below the prefix, as a key prefix ending in "/"."""
    return f"{clean_prefix(prefix)}/{name}/" if clean_prefix(prefix) else f"{name}/"


def table_prefix(prefix: str, stream: Stream) -> str:
    return under(prefix, stream.table)


def misplacement(stream: Stream, key: str, prefix: str) -> str | None:
    """Why `key` (under the table's prefix) does not follow the layout, or None when it does."""
    rest = key[len(table_prefix(prefix, stream)) :]
    found = _PARTITIONED.fullmatch(rest)
    if found is None:
        return "not <table>/YYYY/MM/DD/HH/<name>.<ndjson|log>[.gz]"
    month, day, hour = int(found["month"]), int(found["day"]), int(found["hour"])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23):
        return "its YYYY/MM/DD/HH folders are not a date and hour"
    if found["ext"] != EXTENSION[stream.format]:
        return f"a .{found['ext']} object in a table of {stream.format} objects (.{EXTENSION[stream.format]})"
    return None
