"""Finding the files a followed log was rotated to, on the real filesystem, while renames go on."""

import random
import threading

import pytest

from proofpoint_shipper.gateway.rotated import RotatedName, files_by_identity, rotated_name


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("maillog.1", RotatedName(1, False)),
        ("maillog.12", RotatedName(12, False)),
        ("maillog-20261130", RotatedName(0, False)),
        ("maillog-2026-11-30", RotatedName(0, False)),
        ("maillog.2.gz", RotatedName(2, True)),
        ("maillog-20261130.xz", RotatedName(0, True)),
        ("maillog", None),
        ("maillog.txt", None),
        ("maillog.1.bak", None),
        ("maillog-old", None),
        ("xmaillog.1", None),
        ("maillog.gz", None),
    ],
)
def test_rotated_names_are_the_ones_logrotate_gives(name, read):
    assert rotated_name("maillog", name) == read


def test_every_file_is_found_while_logrotate_renames_them_one_after_the_other(tmp_path):
    """A folder read during renames misses files that moved behind the read (with a single read,
    one look in ten missed some here). The renames are a ring, so the same files are always
    there: every look must find every one of them."""
    count = 300
    for number in range(1, count + 1):
        (tmp_path / f"maillog.{number}").write_text(f"{number}\n")
    identities = set(files_by_identity([tmp_path]))
    assert len(identities) == count
    rng, done = random.Random(3), threading.Event()

    def rotate_in_bursts() -> None:
        while not done.wait(rng.uniform(0.005, 0.05)):
            (tmp_path / f"maillog.{count}").rename(tmp_path / "maillog.0")
            for number in range(count - 1, -1, -1):
                (tmp_path / f"maillog.{number}").rename(tmp_path / f"maillog.{number + 1}")

    renamer = threading.Thread(target=rotate_in_bursts)
    renamer.start()
    try:
        looks = [set(files_by_identity([tmp_path])) for _ in range(60)]
    finally:
        done.set()
        renamer.join()
    assert all(look == identities for look in looks)
    # and each file is under its name now that the renames are over
    assert {found.path.name for found in files_by_identity([tmp_path]).values()} == {
        f"maillog.{number}" for number in range(1, count + 1)
    }


def test_a_missing_folder_or_a_file_in_place_of_one_holds_no_files(tmp_path):
    (tmp_path / "maillog").write_text("")
    assert files_by_identity([tmp_path / "absent", tmp_path / "maillog"]) == {}
