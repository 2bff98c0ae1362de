"""`ppship gateway parse --follow`: tail -F semantics and a saved position, in a real child process
(in this process where the follower's wall clock is set ahead)."""

import gzip
import hashlib
import itertools
import os
import queue
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proofpoint_shipper.checkpoint import FileCursorStore
from proofpoint_shipper.gateway import follow, rotated
from proofpoint_shipper.gateway.follow import FollowedFile, PositionSaver

TIMEOUT = 20  # seconds to wait for an expected line; the follower polls every 0.25 s


def line(n: int) -> str:
    return (
        f"2022-02-20T08:35:{n % 60:02d}.157994-06:00 gw1 filter_instance1[21074]: rprt s=id{n} "
        "mod=session cmd=disconnect"
    )


def append(path: Path, numbers) -> None:
    with path.open("a") as log:
        log.write("".join(line(n) + "\n" for n in numbers))


def rotate(path: Path, keep: int = 4) -> None:
    """As logrotate does by default: maillog.N to maillog.N+1, maillog to maillog.1."""
    for generation in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{generation}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{generation + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))


class Follower:
    """The real command following one file; its stdout lines arrive on a queue."""

    def __init__(
        self, path: Path, position: Path | None, *extra: str, cwd: Path | None = None, rotate_wait: float = 1
    ):
        command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", "--follow", str(path)]
        command += ["--position-file", str(position)] if position else []
        command += ["--format", "text", "--timezone", "UTC", "--rotate-wait", str(rotate_wait), *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            self.lines.put(raw.decode().rstrip("\n"))

    def expect(self, numbers) -> None:
        wanted, got = [line(n) for n in numbers], []
        try:
            while len(got) < len(wanted):
                got.append(self.lines.get(timeout=TIMEOUT))
        except queue.Empty:
            pass  # fewer lines than wanted: the comparison shows which
        assert got == wanted

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=TIMEOUT)
        self.reader.join(TIMEOUT)
        assert self.process.returncode == 0, stderr.decode()
        assert self.lines.empty(), f"unexpected extra line: {self.lines.get_nowait()}"
        return stderr.decode()


def stopped_after_line_one(path: Path, position: Path) -> None:
    """A follower read the file's first line, saved its position and stopped."""
    append(path, [1])
    follower = Follower(path, position)
    follower.expect([1])
    follower.stop()


def stopped_then_rotated_twice(path: Path, position: Path) -> None:
    """Stopped after line 1: line 2 written, the path rotated, line 3 written, rotated again."""
    stopped_after_line_one(path, position)
    append(path, [2])
    rotate(path)
    append(path, [3])
    rotate(path)


@pytest.fixture
def files(tmp_path):
    return tmp_path / "maillog", tmp_path / "state" / "position.json"


def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(files):
    path, position = files
    append(path, [1, 2])
    follower = Follower(path, position)
    follower.expect([1, 2])
    path.rename(path.with_name("maillog.1"))
    append(path.with_name("maillog.1"), [3])  # the writer still had the old file open
    append(path, [4, 5])
    follower.expect([3, 4, 5])
    assert "was rotated" in follower.stop()


def test_lines_written_to_the_old_file_after_the_new_one_appeared_are_read_first(files):
    """logrotate renames the file and creates the new one; syslog writes on to the old one until
    postrotate makes it reopen the path. Those lines come out, before the new file's."""
    path, position = files
    append(path, [1])
    follower = Follower(path, position, rotate_wait=3)
    follower.expect([1])
    path.rename(path.with_name("maillog.1"))
    append(path, [3])  # the new file, as logrotate's `create` makes it, and its first line
    time.sleep(1)  # the follower sees the new file (it polls every 0.25 s) ...
    append(path.with_name("maillog.1"), [2])  # ... and syslog has not reopened the path yet
    follower.expect([2, 3])
    assert "was rotated" in follower.stop()


def test_rotation_by_truncation_reads_again_from_the_start(files):
    path, position = files
    append(path, [1, 2, 3])
    follower = Follower(path, position)
    follower.expect([1, 2, 3])
    os.truncate(path, 0)
    append(path, [4])
    follower.expect([4])
    assert "was truncated" in follower.stop()


def test_a_truncation_the_file_grew_back_past_before_the_follower_looked_is_seen(files):
    """copytruncate on a busy gateway: by the follower's next look (every 0.25 s) the writer may
    have filled the file past the old offset, so its size no longer tells. Its first bytes do.
    Here the new lines land in one write over the old ones, so no look can fall in between."""
    path, position = files
    append(path, [1, 2, 3])
    follower = Follower(path, position)
    follower.expect([1, 2, 3])
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, "".join(line(n) + "\n" for n in range(10, 20)).encode(), 0)
    finally:
        os.close(fd)
    follower.expect(range(10, 20))
    assert "was truncated" in follower.stop()


def test_a_restart_resumes_after_the_last_written_line_without_duplicates(files):
    path, position = files
    append(path, [1, 2, 3])
    follower = Follower(path, position)
    follower.expect([1, 2, 3])
    follower.stop()
    append(path, [4, 5])
    follower = Follower(path, position)
    follower.expect([4, 5])
    follower.stop()


def test_a_rotation_while_stopped_reads_the_rest_of_the_rotated_file_first(files):
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    path.rename(path.with_name("maillog.1"))
    append(path, [3])
    follower = Follower(path, position)
    follower.expect([2, 3])
    follower.stop()


def test_a_rotation_into_logrotates_olddir_while_stopped_is_found_there_with_rotated_dir(files):
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    old = path.parent / "old"
    old.mkdir()
    path.rename(old / "maillog.1")
    append(path, [3])
    follower = Follower(path, position, "--rotated-dir", str(old))
    follower.expect([2, 3])
    assert "is gone" not in follower.stop()


def test_a_rotated_folder_not_made_yet_is_told(files):
    path, position = files
    append(path, [1])
    old = path.parent / "old"
    follower = Follower(path, position, "--rotated-dir", str(old))
    follower.expect([1])
    told = follower.stop()
    assert f"the rotated folder {old} does not exist (yet)" in told


TWO_HOURS_NS = 2 * 3600 * 10**9


def in_process(path: Path, position: Path, rotate_wait: float, keep_going=lambda: True) -> Iterator[str]:
    """The lines of a FollowedFile in this process, for TIMEOUT seconds at most."""
    deadline = time.monotonic() + TIMEOUT
    followed = FollowedFile(
        path,
        FileCursorStore(position),
        64 * 1024,
        lambda: keep_going() and time.monotonic() < deadline,
        rotate_wait,
    )
    for batch, _ in followed.batches():
        yield from (text.decode() for text in batch.lines)


def test_a_file_rotated_long_before_the_restart_is_left_at_its_end_not_after_the_rotate_wait(
    files, monkeypatch
):
    """Neither written nor renamed for longer than --rotate-wait (an hour here), the rotated file
    holding the saved position is done once read to its end. A file's status change time cannot
    be set back, so the follower's wall clock is set two hours ahead instead: the one thing faked."""
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    rotate(path)
    append(path, [3])
    monkeypatch.setattr(follow, "wall_clock_ns", lambda: time.time_ns() + TWO_HOURS_NS)
    assert list(itertools.islice(in_process(path, position, rotate_wait=3600), 2)) == [line(2), line(3)]


def test_a_rotation_seen_happening_is_read_on_for_the_rotate_wait_whatever_the_clock_says(
    files, monkeypatch, caplog
):
    """Renamed just now, the old file may still be written until syslog reopens the path: a
    clock that makes it look quiet for long (a file server's running behind) does not end that."""
    path, position = files
    append(path, [1])
    monkeypatch.setattr(follow, "wall_clock_ns", lambda: time.time_ns() + TWO_HOURS_NS)
    asked_while_draining = itertools.count()

    def write_to_the_old_file_after_its_end_was_reached() -> bool:
        draining = any("was rotated: finishing the old file" in m for m in caplog.messages)
        if draining and next(asked_while_draining) == 1:  # asked before the first read, then after its end
            append(path.with_name("maillog.1"), [2])  # syslog, before it reopened the path
        return True

    lines = in_process(
        path, position, rotate_wait=3, keep_going=write_to_the_old_file_after_its_end_was_reached
    )
    with caplog.at_level("INFO", logger="proofpoint_shipper"):
        assert next(lines) == line(1)
        rotate(path)
        append(path, [3])
        assert list(itertools.islice(lines, 2)) == [line(2), line(3)]


def test_a_rotation_between_the_last_look_at_the_folder_and_the_open_of_the_new_file_loses_nothing(
    files, monkeypatch
):
    """After the rest of the file rotated while stopped, the follower looks for files rotated
    since (none: the new one is still under the path) and opens the file under the path. logrotate
    may rotate in between: made to here, right after that look, by wrapping the folder look."""
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    rotate(path)
    append(path, [3])
    armed = []

    def look_then_logrotate(folders):
        found = rotated.files_by_identity(folders)
        if armed and armed.pop():
            rotate(path)
            append(path, [4])
        return found

    monkeypatch.setattr(follow, "files_by_identity", look_then_logrotate)
    lines = in_process(path, position, rotate_wait=0.3)
    assert next(lines) == line(2)
    armed.append(True)  # the next look is the one after the rest of maillog.1 was read
    assert list(itertools.islice(lines, 2)) == [line(3), line(4)]


def test_a_copytruncate_while_stopped_reads_the_rest_of_the_copy_then_the_new_start(files):
    """The file under the path keeps its inode but holds other lines, more of them than the saved
    offset: the position no longer belongs to it. Its first bytes tell, and find the copy."""
    path, position = files
    append(path, [1, 2, 3])
    follower = Follower(path, position)
    follower.expect([1, 2, 3])
    follower.stop()
    append(path, [4])
    shutil.copyfile(path, path.with_name("maillog.1"))
    os.truncate(path, 0)
    append(path, range(10, 30))
    follower = Follower(path, position)
    follower.expect([4, *range(10, 30)])
    assert "was rotated while stopped" in follower.stop()


def test_a_copy_of_the_log_under_another_name_is_not_taken_for_its_rotated_file(files):
    """`ppship gateway parse maillog --format text > maillog.txt` writes the same bytes as the
    log's (its headers are already normalised): when the saved file is gone, such a copy, or a
    backup, has the saved first bytes but is not the log. Only a rotated name is read as one."""
    path, position = files
    stopped_after_line_one(path, position)
    path.with_name("maillog.txt").write_text(line(1) + "\n" + line(99) + "\n")
    append(path, [2])
    path.unlink()  # rotated away and deleted, say
    append(path, [3])
    follower = Follower(path, position)
    follower.expect([3])
    assert "the file of the saved position is gone" in follower.stop()


def test_two_rotations_while_stopped_read_the_new_file_from_its_start_and_tell_what_is_gone(files):
    """Rotated twice, the oldest copy deleted (compressed, say): the saved file is gone, and on
    ext4 the new file often gets its freed inode. Either way the file rotated in between and the
    new file are read from their start, and the lines written to the file that is gone after the
    saved position are told lost, not skipped in silence."""
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    rotated = path.with_name("maillog.1")
    path.rename(rotated)
    append(path, [3])
    rotated.unlink()
    path.rename(rotated)
    append(path, range(10, 30))
    follower = Follower(path, position)
    follower.expect([3, *range(10, 30)])  # the file between the two is read: written since the save
    told = follower.stop()
    assert "the file of the saved position is gone" in told
    assert "as is any file rotated after it that is gone too" in told  # none here, but it cannot know


def test_a_file_rotated_in_between_is_read_though_written_before_the_last_save_when_the_saved_is_gone(
    files,
):
    """A follower behind the writer saves positions in the old file while the writer fills the
    next one, which is rotated in turn. Stopped, and the old file deleted meanwhile: the next
    file, last written before the last save, is read all the same; it came after the saved file."""
    path, position = files
    stopped_after_line_one(path, position)
    saved_file_written = path.stat().st_mtime_ns
    rotate(path)
    append(path, [2])
    rotate(path)
    append(path, [3])
    between = path.with_name("maillog.1")
    os.utime(between, ns=(saved_file_written + 1_000_000, saved_file_written + 1_000_000))
    assert between.stat().st_mtime_ns < position.stat().st_mtime_ns  # before the last save
    path.with_name("maillog.2").unlink()
    follower = Follower(path, position)
    follower.expect([2, 3])
    assert "the file of the saved position is gone" in follower.stop()


def test_a_position_saved_without_the_first_bytes_of_its_file_still_resumes(files):
    """Position files of earlier releases name the file by device and inode alone."""
    path, position = files
    append(path, [1, 2])
    status = path.stat()
    offset = len(line(1)) + 1
    FileCursorStore(position).save({"device": status.st_dev, "inode": status.st_ino, "offset": offset})
    follower = Follower(path, position)
    follower.expect([2])
    follower.stop()


def test_the_position_of_another_followed_file_is_refused_not_taken_for_a_rotation(files):
    """Given another file's position file (two followers configured alike, or a path changed in
    the config), the follower took that file for this one rotated while stopped, and wrote the
    lines written to it since as this file's."""
    from tests.conftest import run_ppship

    path, position = files
    other = path.with_name("other.log")
    stopped_after_line_one(other, position)
    append(other, [2])  # written on since: that file's, not this one's
    append(path, [10])
    result = run_ppship("gateway", "parse", "--follow", str(path), "--position-file", str(position))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == (
        f"ppship: error: position file {position} is that of the follower of {other}, not of {path}: "
        "give each followed file its own --position-file\n"
    )


def test_the_same_file_followed_under_a_new_path_resumes_where_it_was(files):
    """A mount or a config that names the followed file anew: its own position still holds."""
    path, position = files
    stopped_after_line_one(path, position)
    renamed = path.with_name("mail.log")
    path.rename(renamed)
    append(renamed, [2])
    follower = Follower(renamed, position)
    follower.expect([2])
    follower.stop()


@pytest.mark.parametrize(
    "saved",
    [
        {"offset": -1},
        {"offset": 10, "head_bytes": "10", "head_sha256": "0" * 64},
        {"offset": 1, "head_bytes": 1},
        {"offset": 1, "head_bytes": 1, "head_sha256": "0" * 64, "modified_ns": -5},
    ],
)
def test_a_position_file_with_no_usable_position_is_one_error_line(files, saved):
    from tests.conftest import run_ppship

    path, position = files
    append(path, [1])
    FileCursorStore(position).save({"device": 1, "inode": 2, **saved})
    result = run_ppship("gateway", "parse", "--follow", str(path), "--position-file", str(position))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode().startswith(
        f"ppship: error: position file {position} holds no read position"
    )
    assert result.stderr.decode().count("\n") == 1


def test_a_rotation_while_stopped_is_found_beside_the_file_a_followed_link_names(tmp_path):
    """/var/log/maillog as a link to a log kept on another disk: logrotate rotates the real file
    (it refuses links), so the rotated file is beside that one, not beside the link."""
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()
    real, link, position = data / "maillog", logs / "maillog", tmp_path / "position.json"
    link.symlink_to(real)
    append(real, [1])
    follower = Follower(link, position)
    follower.expect([1])
    follower.stop()
    append(real, [2])
    real.rename(data / "maillog.1")
    append(real, [3])
    follower = Follower(link, position)
    follower.expect([2, 3])
    assert "was rotated while stopped" in follower.stop()


def test_a_file_rotated_away_while_the_one_before_it_was_read_on_is_read_too(files):
    """Rotated twice before the first rotated file stayed quiet: the file in between, now
    maillog.1, is read after the first one and before the new one, not skipped."""
    path, position = files
    append(path, [1])
    follower = Follower(path, position, rotate_wait=2)
    follower.expect([1])
    rotate(path)
    append(path, [2])
    time.sleep(0.6)  # the follower reads the first rotated file on, until it is quiet for 2 s
    rotate(path)
    append(path, [3])
    follower.expect([2, 3])
    follower.stop()


@pytest.mark.parametrize("linked", [False, True], ids=["the file", "a link to a file of another name"])
def test_two_rotations_while_stopped_read_the_rest_then_each_rotated_file_in_order(tmp_path, linked):
    """Followed through a link (/var/log/maillog naming /data/mail.log), the rotated files are
    named after the file it names, as logrotate rotates that one: mail.log.1, not maillog.1."""
    path, position = tmp_path / "mail.log", tmp_path / "position.json"
    followed = tmp_path / "logs" / "maillog" if linked else path
    if linked:
        followed.parent.mkdir()
        followed.symlink_to(path)
    stopped_after_line_one(followed, position)
    append(path, [2])
    rotate(path)
    append(path, [3])
    rotate(path)
    append(path, [4])
    follower = Follower(followed, position)
    follower.expect([2, 3, 4])
    follower.stop()


def test_rotations_while_the_file_rotated_while_stopped_is_read_on_keep_the_order(files):
    """The file under the path at start is rotated away twice while the rest of the file rotated
    while stopped is read on: it is read before the files rotated after it."""
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    rotate(path)
    append(path, [3])
    follower = Follower(path, position, rotate_wait=2)
    follower.expect([2])  # and reads maillog.1 on, until it is quiet for 2 s
    rotate(path)
    append(path, [4])
    rotate(path)
    append(path, [5])
    follower.expect([3, 4, 5])
    follower.stop()


def compress(rotated: Path, suffix: str = ".gz", data: bytes | None = None) -> Path:
    """As logrotate's `compress`: the file's bytes compressed beside it, its time kept, the file
    removed. `data`: other bytes for the compressed file (a compression not read here)."""
    compressed = rotated.with_name(rotated.name + suffix)
    compressed.write_bytes(gzip.compress(rotated.read_bytes()) if data is None else data)
    os.utime(compressed, ns=(rotated.stat().st_atime_ns, rotated.stat().st_mtime_ns))
    rotated.unlink()
    return compressed


def test_the_rest_of_a_file_compressed_while_stopped_is_read_from_the_compressed_file(files):
    """logrotate's `compress` without `delaycompress`, while the follower was stopped: the rest of
    the file it was reading is in maillog.1.gz, found by its first bytes and read inflated."""
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2, 3])
    rotate(path)
    compressed = compress(path.with_name("maillog.1"))
    append(path, [4])
    follower = Follower(path, position)
    follower.expect([2, 3, 4])
    told = follower.stop()
    assert f"reading the rest of {compressed} first" in told
    assert "is gone" not in told


def test_two_rotations_with_delaycompress_while_stopped_read_the_rest_then_each_file_in_order(files):
    """The shipped logrotate rule (`compress`, `delaycompress`) over two rotations: the file the
    follower stopped in is maillog.2.gz by then, the next one maillog.1, plain."""
    path, position = files
    stopped_then_rotated_twice(path, position)
    compress(path.with_name("maillog.2"))
    append(path, [4])
    follower = Follower(path, position)
    follower.expect([2, 3, 4])
    follower.stop()


def test_a_position_inside_a_compressed_file_resumes_there(files):
    """Stopped while reading a compressed rotated file, the follower saved a position in its
    inflated bytes: the next run goes on from there."""
    path, position = files
    append(path, [1, 2, 3])
    first = path.read_bytes().splitlines(keepends=True)[0]
    rotate(path)
    compressed = compress(path.with_name("maillog.1"))
    append(path, [4])
    status = compressed.stat()
    position.parent.mkdir()
    FileCursorStore(position).save(
        {
            "device": status.st_dev,
            "inode": status.st_ino,
            "offset": len(first),
            "head_bytes": len(first),
            "head_sha256": hashlib.sha256(first).hexdigest(),
            "modified_ns": status.st_mtime_ns,
        }
    )
    follower = Follower(path, position)
    follower.expect([2, 3, 4])
    follower.stop()


def test_a_compressed_file_cut_short_gives_the_lines_before_the_cut_and_says_so(files):
    path, position = files
    stopped_after_line_one(path, position)
    append(path, range(2, 2000))
    rotate(path)
    compressed = compress(path.with_name("maillog.1"))
    compressed.write_bytes(compressed.read_bytes()[: compressed.stat().st_size // 2])
    append(path, [5000])
    follower = Follower(path, position)
    got = []
    while not got or got[-1] != line(5000):
        got.append(follower.lines.get(timeout=TIMEOUT))
    *whole, cut, _ = got  # the line the cut fell in is handed out as far as it came
    assert 0 < len(whole) < 1997
    assert whole == [line(n) for n in range(2, len(whole) + 2)]
    assert line(len(whole) + 2).startswith(cut)
    assert f"follow: {compressed}: the gzip stream ends inside a member" in follower.stop()


def test_a_compressed_copy_of_the_file_just_read_is_not_read_again(files):
    """logrotate's `compress` without `delaycompress`: the file rotated away is compressed (its
    time kept) while the follower reads it on; that copy is not one more file rotated since."""
    path, position = files
    append(path, [1])
    follower = Follower(path, position)
    follower.expect([1])
    rotate(path)
    append(path.with_name("maillog.1"), [2])
    compress(path.with_name("maillog.1"))
    append(path, [3])
    follower.expect([2, 3])
    time.sleep(1.5)  # a second look at the folder, after the rotate wait: nothing more comes
    follower.stop()


def test_a_file_logrotate_is_still_compressing_is_not_read_but_its_plain_file(files):
    """maillog.2 beside the maillog.2.gz logrotate is writing: the plain file is the one read."""
    path, position = files
    stopped_then_rotated_twice(path, position)
    plain = path.with_name("maillog.2")
    path.with_name("maillog.2.gz").write_bytes(gzip.compress(plain.read_bytes())[:20])
    append(path, [4])
    follower = Follower(path, position)
    follower.expect([2, 3, 4])
    assert "gzip" not in follower.stop()


@pytest.mark.parametrize(
    "suffix, magic, told",
    [
        (".xz", b"\xfd7zXZ\x00", "it is xz-compressed, which is not read here: pipe it in through `xzcat`"),
        (
            ".zst",
            b"\x28\xb5\x2f\xfd",
            "it is zstd-compressed, which is not read here: pipe it in through `zstdcat`",
        ),
    ],
)
def test_a_rotated_file_of_another_compression_is_told_with_the_command_that_reads_it(
    files, suffix, magic, told
):
    path, position = files
    stopped_after_line_one(path, position)
    append(path, [2])
    rotate(path)
    compressed = compress(path.with_name("maillog.1"), suffix, magic + b"compressed lines")
    append(path, [3])
    follower = Follower(path, position)
    follower.expect([3])
    stderr = follower.stop()
    assert "the file of the saved position is gone" in stderr
    assert (
        f"{compressed} was rotated and compressed before it was read: its lines are not read here ({told})"
    ) in stderr


def rotate_with_delaycompress(path: Path) -> None:
    """As logrotate's `compress` with `delaycompress`: maillog.N.gz to maillog.N+1.gz, maillog.1
    to maillog.2 then compressed, maillog to maillog.1."""
    compressed = sorted((int(older.name.split(".")[-2]), older) for older in path.parent.glob("maillog.*.gz"))
    for number, older in reversed(compressed):
        older.rename(path.with_name(f"maillog.{number + 1}.gz"))
    newest = path.with_name("maillog.1")
    if newest.exists():
        newest.rename(path.with_name("maillog.2"))
        compress(path.with_name("maillog.2"))
    path.rename(newest)


@pytest.mark.parametrize("compressing", [False, True], ids=["plain", "delaycompress"])
def test_every_line_comes_out_through_random_rotations_and_restarts(tmp_path, compressing):
    """A writer appends numbered lines and opens the path anew after each rotation, as syslog
    does on its HUP; the path is rotated at random moments (every rotated file kept, plain or as
    the shipped logrotate rule keeps them); the follower is stopped (SIGTERM) or killed (SIGKILL)
    at random moments and started again.
    Whatever the timing: each run writes consecutive lines; one after a stop begins right after
    the last line written, one after a kill at most there (a kill loses the position saves of up
    to a second); and every line comes out."""
    path, position = tmp_path / "maillog", tmp_path / "position.json"
    total, rng, written = 20_000, random.Random(7), threading.Event()
    reopen = threading.Event()

    def write() -> None:
        log = path.open("a")
        for n in range(total):
            if reopen.is_set():
                reopen.clear()
                log.close()
                log = path.open("a")
            log.write(line(n) + "\n")
            if n % 50 == 0:
                log.flush()
                time.sleep(0.01)
        log.close()
        written.set()

    def rotate_now_and_then() -> None:
        # A follower with no saved position starts at the file under the path when it first looks,
        # as documented: one that a slow start (a loaded machine) brings there after the first
        # rotation starts in the second file, by design. So rotations begin once a run read a line.
        deadline = time.monotonic() + TIMEOUT
        while (
            not any(out.stat().st_size for out in tmp_path.glob("run-*.txt")) and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        generations = 0
        while not written.wait(rng.uniform(0.3, 1.0)):
            generations += 1
            if compressing:
                rotate_with_delaycompress(path)
            else:
                rotate(path, keep=generations + 1)
            time.sleep(rng.uniform(0, 0.2))  # the writer goes on in the renamed file a while
            reopen.set()

    threads = [threading.Thread(target=write), threading.Thread(target=rotate_now_and_then)]
    for thread in threads:
        thread.start()
    runs: list[tuple[list[int], bool]] = []  # the numbers each run wrote, and whether it was killed
    try:
        while not written.is_set() or not runs or total - 1 not in runs[-1][0]:
            command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", "--follow"]
            command += [str(path), "--position-file", str(position), "--format", "text"]
            command += ["--timezone", "UTC", "--rotate-wait", "0.3"]
            output = tmp_path / f"run-{len(runs)}.txt"  # a file: a pipe left unread would stop it
            with output.open("wb") as stdout:
                child = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 1.5) if not written.is_set() else 1)
            killed = rng.random() < 0.3 and not written.is_set()
            child.send_signal(signal.SIGKILL if killed else signal.SIGTERM)
            child.wait(timeout=TIMEOUT)
            lines = output.read_bytes().splitlines()
            runs.append(([int(text.split(b"s=id")[1].split()[0]) for text in lines], killed))
            assert len(runs) < 60, "the follower does not catch up"
    finally:
        written.wait(TIMEOUT)
        for thread in threads:
            thread.join(TIMEOUT)
    end, killed_before = -1, False  # the last line of the run before
    for numbers, killed in runs:
        if numbers:
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            assert numbers[0] <= end + 1 if killed_before else numbers[0] == end + 1
            end = numbers[-1]
        killed_before = killed or (killed_before and not numbers)  # an empty run saved nothing new
    assert end == total - 1


def test_a_file_that_appears_later_is_read_from_its_start(files):
    path, position = files
    follower = Follower(path, position)
    append(path, [1, 2])
    follower.expect([1, 2])
    follower.stop()


def test_a_byte_order_mark_opening_the_file_is_dropped_as_without_follow(files):
    """What Windows tools put before UTF-8 text: kept, it hid the first line's header."""
    path, position = files
    path.write_bytes(b"\xef\xbb\xbf" + f"{line(1)}\n".encode())
    follower = Follower(path, position)
    follower.expect([1])
    follower.stop()


def test_a_file_that_is_not_there_is_told_once_then_waited_for(files):
    path, position = files
    follower = Follower(path, position)
    ready, _, _ = select.select([follower.process.stderr], [], [], TIMEOUT)
    assert ready, "nothing said about the missing file"
    told = follower.process.stderr.readline().decode()
    assert told == f"ppship gateway parse: follow: {path} does not exist (yet): waiting for it to appear\n"
    append(path, [1])
    follower.expect([1])
    assert "does not exist" not in follower.stop()  # said once


def test_a_line_is_not_handed_out_before_its_end_arrives(files):
    path, position = files
    follower = Follower(path, position)
    with path.open("a") as log:
        log.write(line(1)[:30])
        log.flush()
        with pytest.raises(queue.Empty):
            follower.lines.get(timeout=1.0)
        log.write(line(1)[30:] + "\n")
    follower.expect([1])
    follower.stop()


def test_follow_takes_exactly_one_file(tmp_path):
    from tests.conftest import run_ppship

    result = run_ppship("gateway", "parse", "--follow", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "ppship: error: --follow takes exactly one FILE (not stdin)"


def test_a_fifo_or_an_unwritable_position_folder_is_refused_at_start(tmp_path):
    from tests.conftest import run_ppship

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # its open would wait for a writer, and SIGTERM could not stop that wait
    result = run_ppship(
        "gateway", "parse", "--follow", str(fifo), "--position-file", str(tmp_path / "p.json")
    )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"ppship: error: cannot follow {fifo}: not a regular file (pipe it to `ppship gateway parse`)\n"
    )
    log, blocked = tmp_path / "maillog", tmp_path / "a-file"
    append(log, [1])
    blocked.write_text("")
    result = run_ppship("gateway", "parse", "--follow", str(log), "--position-file", str(blocked / "p.json"))
    assert result.returncode == 2 and result.stdout == b""  # before any line, not at the first save
    assert (
        result.stderr.decode()
        == f"ppship: error: the folder of the position file {blocked} is a file, not a folder\n"
    )


@pytest.mark.parametrize(
    ("opening", "told"),
    [
        (b"\x1f\x8b\x08\x00", "it is gzip-compressed, a finished log: read it without --follow"),
        (b"\xfd7zXZ\x00", "it is xz-compressed, which is not read here: pipe it in through `xzcat`"),
    ],
)
def test_a_compressed_file_is_refused_at_start_not_followed_in_silence(tmp_path, opening, told):
    """A rotated log given by mistake: its bytes hold no line end for a long while, and the
    follower waited for one with nothing said."""
    from tests.conftest import run_ppship

    path = tmp_path / "maillog.1.gz"
    path.write_bytes(opening + bytes(range(32, 127)) * 4)
    result = run_ppship(
        "gateway", "parse", "--follow", str(path), "--position-file", str(tmp_path / "p.json"), timeout=20
    )
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == f"ppship: error: cannot follow {path}: {told}\n"


def test_a_second_follower_on_one_position_file_is_refused(files):
    path, position = files
    append(path, [1])
    first = Follower(path, position)
    try:
        first.expect([1])
        command = ["gateway", "parse", "--follow", str(path), "--position-file", str(position)]
        second = subprocess.run(
            [sys.executable, "-m", "proofpoint_shipper", *command], capture_output=True, timeout=TIMEOUT
        )
        assert second.returncode == 2 and second.stdout == b""  # it would write every line again
        assert second.stderr.decode() == (
            f"ppship: error: position file {position} is in use by another process "
            f"(pid {first.process.pid}); only one process may run on one position file\n"
        )
        append(path, [2])
        first.expect([2])
    finally:
        first.stop()


def test_followers_of_one_file_for_different_streams_keep_their_own_position(tmp_path):
    path = tmp_path / "maillog"
    append(path, [1])
    followers = [Follower(path, None, "--streams", name, cwd=tmp_path) for name in ("filter", "sendmail")]
    state = tmp_path / "ppship-state"
    expected = ["follow-maillog-filter.json", "follow-maillog-sendmail.json"]
    try:
        followers[0].expect([1])  # the sendmail follower writes nothing: the line is a filter line
        deadline = time.monotonic() + TIMEOUT
        while sorted(p.name for p in state.glob("*.json")) != expected and time.monotonic() < deadline:
            time.sleep(0.1)  # each saves its position once it has read the line: it is running
        for follower in followers:
            follower.stop()
    finally:
        for follower in followers:
            follower.process.kill()
            follower.process.communicate()
    assert sorted(p.name for p in state.glob("*.json")) == expected


# Root reads any file. The child gives up the two capabilities that let it (CAP_DAC_OVERRIDE,
# CAP_DAC_READ_SEARCH: dropped from its bounding set, they are gone after exec) before it starts
# ppship, so that a file of another user's, mode 0600, is refused to it as to the service user a
# deployment runs the follower as. Another user than root needs nothing dropped.
_WITHOUT_READ_OVERRIDE = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise SystemExit("prctl: " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable, "-m", "proofpoint_shipper", *sys.argv[1:]])
"""


def _unreadable_to_the_follower(path: Path) -> None:
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # nobody's: not the follower's


def test_a_rotated_in_file_the_follower_may_not_read_is_waited_for_and_told_not_a_stop(tmp_path):
    """logrotate's `create 0600 root root` under a follower run as a service user: tail -F waits,
    and so does the follower, saying why; it reads the file once its mode is fixed. At start, the
    same file is one error line and exit code 2: someone is watching then."""
    path, rotated = tmp_path / "maillog", tmp_path / "maillog.1"
    append(path, [1])
    command = [sys.executable, "-c", _WITHOUT_READ_OVERRIDE, "gateway", "parse", "--follow", str(path)]
    command += ["--position-file", str(tmp_path / "position.json"), "--format", "text"]
    command += ["--timezone", "UTC", "--rotate-wait", "0.5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        told: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [told.put(raw.decode()) for raw in child.stderr])
        reader.start()
        try:
            assert child.stdout.readline().decode().rstrip("\n") == line(1)
            path.rename(rotated)
            staged = tmp_path / "staged"
            append(staged, [2])
            _unreadable_to_the_follower(staged)
            staged.rename(path)  # the new log appears as logrotate creates it
            while "waiting until this user" not in (said := told.get(timeout=TIMEOUT)):
                assert "error" not in said.lower(), said
            path.chmod(0o644)
            assert child.stdout.readline().decode().rstrip("\n") == line(2)
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=TIMEOUT)
            reader.join(TIMEOUT)
    assert child.returncode == 0
    assert "can be read again" in told.get_nowait()
    _unreadable_to_the_follower(path)
    at_start = subprocess.run(command, capture_output=True, timeout=TIMEOUT)
    assert at_start.returncode == 2
    assert at_start.stderr.decode() == f"ppship: error: cannot follow {path}: Permission denied\n"


class CountingStore(FileCursorStore):
    """The real store, counting its saves."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.saves = 0

    def save(self, document: dict) -> None:
        super().save(document)
        self.saves += 1


def test_positions_are_saved_at_most_once_a_second_and_the_newest_at_the_end(tmp_path):
    store, now = CountingStore(tmp_path / "position.json"), [0]
    saver = PositionSaver(store, interval=1000, clock=lambda: now[0])  # in milliseconds: exact sums
    for offset in range(1, 501):  # 500 batches in 2.5 s of a busy gateway
        now[0] += 5
        saver.written({"offset": offset})
    assert store.saves == 3  # at once, then once a second: not 500 pairs of fsyncs
    assert store.load() == {"offset": 401}
    saver.save_if_due()  # idle, but not yet due
    assert store.load() == {"offset": 401}
    now[0] += 1000
    saver.save_if_due()  # idle and due: the newest written position
    assert store.load() == {"offset": 500} and store.saves == 4
    saver.written({"offset": 501})
    saver.flush()  # stopping
    assert store.load() == {"offset": 501} and store.saves == 5
