"""The line reader: lines split across reads, bounded length, CRLF, a last line without newline, gzip."""

import bz2
import gzip
import lzma
import os
import threading

import pytest

from proofpoint_shipper.errors import InputError
from proofpoint_shipper.gunzip import INFLATED_BYTES, Gunzip
from proofpoint_shipper.gunzip import MAGIC as GZIP_MAGIC
from proofpoint_shipper.lines import CHUNK_BYTES, LineReader


def read_all(data: bytes, limit: int = 1000, pieces: int = 1) -> list[tuple[bytes, int]]:
    """Feed `data` through a real pipe in `pieces` writes and collect (line, dropped)."""
    read_end, write_end = os.pipe()
    step = max(1, len(data) // pieces)

    def writer():
        with os.fdopen(write_end, "wb") as out:
            for start in range(0, len(data), step):
                out.write(data[start : start + step])
                out.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    out = []
    with os.fdopen(read_end, "rb") as handle:
        for batch in LineReader(handle.fileno(), limit, name="test input").batches():
            out.extend((line, batch.dropped.get(i, 0)) for i, line in enumerate(batch.lines))
    thread.join()
    return out


def test_lines_split_across_reads_come_out_whole():
    data = b"".join(b"line %d with some text\n" % n for n in range(5000))
    assert [line for line, _ in read_all(data, pieces=997)] == data.split(b"\n")[:-1]


def test_last_line_without_newline_is_kept():
    assert read_all(b"a\nb") == [(b"a", 0), (b"b", 0)]


def test_crlf_is_removed_and_a_lone_cr_kept():
    assert read_all(b"a\r\nb\rc\n") == [(b"a", 0), (b"b\rc", 0)]


def test_a_crlf_cut_between_two_reads_is_removed_too():
    """A CRLF file read in 64 KiB pieces: now and then a read ends between the CR and the LF."""
    reader = LineReader(-1, 1000, name="test input")  # fed by hand: the descriptor is not read
    assert reader.split(b"one\r").lines == []
    assert reader.split(b"\ntwo\r").lines == [b"one"]
    assert reader.split(b"\n").lines == [b"two"]


def test_overlong_lines_are_cut_and_counted_even_across_reads():
    long = b"x" * (3 * CHUNK_BYTES + 17)
    out = read_all(b"short\n" + long + b"\nafter\n", limit=100, pieces=7)
    assert out == [(b"short", 0), (b"x" * 100, len(long) - 100), (b"after", 0)]


def test_memory_is_bounded_by_the_line_limit():
    """An endless line never grows the reader's buffer past its limit."""
    read_end, write_end = os.pipe()
    reader = LineReader(read_end, 1000, name="pipe")
    os.write(write_end, b"y" * 60_000)
    os.close(write_end)
    batches = reader.batches()
    (batch,) = list(batches)
    assert batch.lines == [b"y" * 1000] and batch.dropped == {0: 59_000}
    os.close(read_end)


def test_empty_input_gives_nothing():
    assert read_all(b"") == []


def test_gzip_input_is_inflated_across_members_and_reads():
    """A rotated log (`maillog-20261129.gz`), or two joined with cat; read in small pipe writes."""
    first = b"".join(b"line %d\n" % n for n in range(5000))
    second = b"last line without newline"
    data = gzip.compress(first) + gzip.compress(second) + b"\0\0\0"  # zeros padding the end
    assert read_all(data, pieces=97) == read_all(first + second)


def test_gzip_is_inflated_in_bounded_pieces():
    """A few kilobytes of gzip can hold gigabytes: never more than INFLATED_BYTES at a time."""
    compressed = gzip.compress(b"\n" * (40 * INFLATED_BYTES))
    pieces = list(Gunzip().inflate(compressed))
    assert len(compressed) < INFLATED_BYTES / 10 and len(pieces) >= 40
    assert max(len(piece) for piece in pieces) <= INFLATED_BYTES
    assert sum(len(piece) for piece in pieces) == 40 * INFLATED_BYTES


def test_gzip_that_is_not_whole_is_an_input_error_after_the_lines_before_it():
    data = gzip.compress(b"".join(b"line %d\n" % n for n in range(20000)))
    lines = []
    with pytest.raises(InputError, match="cannot read test input: the gzip stream ends inside a member"):
        for line, _ in read_all_lazily(data[: len(data) // 2]):
            lines.append(line)
    assert lines and lines == [b"line %d" % n for n in range(len(lines))]
    with pytest.raises(InputError, match="cannot read test input: not a gzip stream"):
        read_all(GZIP_MAGIC + b"not gzip at all\n")


def read_all_lazily(data: bytes):
    """The lines of `data` as the reader yields them, from a pipe that holds all of it."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        for batch in LineReader(handle.fileno(), 1000, name="test input").batches():
            yield from ((line, batch.dropped.get(i, 0)) for i, line in enumerate(batch.lines))


@pytest.mark.parametrize(
    ("data", "inflater"),
    [
        (lzma.compress(b"line\n"), "xzcat"),
        (bz2.compress(b"line\n", compresslevel=5), "bzcat"),
        (b"\x28\xb5\x2f\xfd" + b"\x00" * 12, "zstdcat"),  # a zstd frame's magic: no zstd in the stdlib
    ],
    ids=["xz", "bzip2", "zstd"],
)
def test_other_compressions_are_named_with_the_command_that_inflates_them(data, inflater):
    with pytest.raises(
        InputError, match=f"compressed, which is not read here: pipe it in through `{inflater}`"
    ):
        read_all(data)


def test_a_text_line_that_opens_as_bzip2_does_is_read_as_text():
    assert read_all(b"BZh is a line\n") == [(b"BZh is a line", 0)]


def test_a_stopped_reader_takes_what_a_pipe_holds_but_no_line_whose_end_had_not_come():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"one\ntwo\nthree, still being written")
        reader = LineReader(read_end, 1000, lambda: False, name="a pipe")
        assert [line for batch in reader.batches() for line in batch.lines] == [b"one", b"two"]
        assert reader.unfinished_bytes == len(b"three, still being written")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_stopped_reader_of_a_file_reads_no_further(tmp_path):
    path = tmp_path / "maillog"
    path.write_bytes(b"one\ntwo\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LineReader(fd, 1000, lambda: False, name=str(path))
        assert list(reader.batches()) == [] and reader.unfinished_bytes == 0
    finally:
        os.close(fd)


def test_a_stop_inside_a_gzip_stream_is_not_an_input_cut_short():
    read_end, write_end = os.pipe()
    try:
        compressed = gzip.compress(b"one\ntwo\n")
        os.write(write_end, compressed[: len(compressed) - 4])  # the length is still to come
        reader = LineReader(read_end, 1000, lambda: False, name="a pipe")
        assert [line for batch in reader.batches() for line in batch.lines] == [b"one", b"two"]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_utf8_byte_order_mark_opening_the_input_is_dropped():
    assert read_all(b"\xef\xbb\xbf{}\nsecond \xef\xbb\xbf kept\n", pieces=5) == [
        (b"{}", 0),
        (b"second \xef\xbb\xbf kept", 0),
    ]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_its_byte_order_mark_is_read_as_the_same_text(encoding):
    """What Windows PowerShell 5 writes with `>`; pieces split its two-byte units across reads."""
    text = '{"id": "a"}\r\n{"id": "ü €"}\r\nlast'
    data = "\ufeff".encode(encoding) + text.encode(encoding)
    assert read_all(data, pieces=7) == read_all(text.encode())
    cut_short = read_all(data + b"\x00")  # one byte of a unit, and then the end
    assert cut_short[-1] == ("last\ufffd".encode(), 0)
