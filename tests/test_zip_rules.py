"""Reading a zip member (pipeline/ingest/zips.py), rule by rule (written from the mutants that survived
tests/test_ingest.py, docs/mutation.md): the size and ratio limits are enforced while reading, at the byte,
in bounded memory; each failure is one sentence a merchandiser can act on; repeated names are read by their
own entry; open zips are shared, reopened when replaced, and closed oldest first."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import BadInputError
from pipeline.ingest.zips import READ_CHUNK, OpenZips, read_zip_entry, zip_entry

STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name")  # repeated names are what some tests need


def make_zip(path: Path, members: list[tuple[str, bytes]], compression=STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def read(path: Path, member: str, *, max_bytes: int = 10_000_000, max_ratio: float = 100.0) -> bytes:
    return read_zip_entry(path, member, max_bytes=max_bytes, max_ratio=max_ratio, zips=OpenZips())


def refusal(path: Path, member: str, **limits) -> str:
    with pytest.raises(BadInputError) as refused:
        read(path, member, **limits)
    return str(refused.value)


def test_a_member_of_several_chunks_is_read_whole_and_unchanged(tmp_path):
    data = os.urandom(3 * READ_CHUNK + 123)
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", data)])
    assert read(archive, "shirt.jpg") == data


def test_the_size_limit_is_exact(tmp_path):
    size = 2 * READ_CHUNK + 10  # the limit is counted across chunks, not per chunk
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"x" * size)])
    assert len(read(archive, "shirt.jpg", max_bytes=size, max_ratio=1.0)) == size
    assert refusal(archive, "shirt.jpg", max_bytes=size - 1, max_ratio=2.0) == f"This image is larger than {(size - 1) / 1e6:.1f} MB."
    assert refusal(archive, "shirt.jpg", max_bytes=1_500_000 // 16, max_ratio=2.0) == "This image is larger than 0.1 MB."


def test_the_size_sentence_gives_megabytes_to_a_tenth(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"x" * 2_000_000)])
    assert refusal(archive, "shirt.jpg", max_bytes=1_450_000, max_ratio=10.0) == "This image is larger than 1.4 MB."
    assert refusal(archive, "shirt.jpg", max_bytes=1_960_000, max_ratio=10.0) == "This image is larger than 2.0 MB."
    assert refusal(archive, "shirt.jpg", max_bytes=1_050_000, max_ratio=10.0) == "This image is larger than 1.1 MB."  # 10^6 bytes a MB


def test_the_ratio_limit_is_exact_and_says_zip_bomb(tmp_path):
    """A stored member's compressed size is its size: a ratio of 1 reads it, anything less refuses it."""
    size = READ_CHUNK + 1
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"y" * size)])
    assert len(read(archive, "shirt.jpg", max_ratio=1.0)) == size
    assert refusal(archive, "shirt.jpg", max_ratio=(size - 1) / size) == (
        "This zip entry expands far beyond its compressed size (possible zip bomb); skipped.")


def test_over_the_ratio_but_exactly_at_the_size_limit_is_a_zip_bomb_not_too_large(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"z" * READ_CHUNK)])
    assert refusal(archive, "shirt.jpg", max_bytes=READ_CHUNK, max_ratio=0.5) == (
        "This zip entry expands far beyond its compressed size (possible zip bomb); skipped.")


def test_a_zip_bomb_is_refused_in_bounded_memory(tmp_path):
    """64 MB of zeros compress to ~64 KB: the read stops at the budget, holding about one chunk, never the 64 MB."""
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=DEFLATED) as archive, archive.open("bomb.jpg", "w") as member:
        for _ in range(64):
            member.write(bytes(1_000_000))
    tracemalloc.start()
    try:
        message = refusal(path, "bomb.jpg", max_bytes=30_000_000, max_ratio=100.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == "This zip entry expands far beyond its compressed size (possible zip bomb); skipped."
    assert peak < 16_000_000, peak  # the budget (~6.5 MB) and a chunk; reading it all at once would need 64 MB


def test_each_copy_of_a_repeated_name_is_its_own_entry(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"first"), ("other.jpg", b"other"), ("shirt.jpg", b"second")])
    assert read(archive, "shirt.jpg\\0") == b"first" and read(archive, "shirt.jpg\\2") == b"second"
    with zipfile.ZipFile(archive) as opened:
        assert zip_entry(opened, "shirt.jpg\\2").filename == "shirt.jpg"
        assert zip_entry(opened, "other.jpg").filename == "other.jpg"
        for wrong in ("shirt.jpg\\1", "shirt.jpg\\3", "shirt.jpg\\x", "shirt.jpg\\", "shirt.jpg\\-1", "gone.jpg"):
            with pytest.raises(KeyError):
                zip_entry(opened, wrong)


@pytest.mark.parametrize("member", ["gone.jpg", "shirt.jpg\\5", "gone.jpg\\0"])
def test_a_missing_member_is_named_without_its_copy_number(tmp_path, member):
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"a"), ("shirt.jpg", b"b")])
    name = member.split("\\")[0]
    assert refusal(archive, member) == f"{name} is missing from the zip."


def test_a_zip_deleted_since_upload_says_so_by_name(tmp_path):
    archive = make_zip(tmp_path / "photos.zip", [("shirt.jpg", b"a")])
    archive.unlink()
    assert refusal(archive, "shirt.jpg") == "The zip photos.zip no longer exists."


def test_a_damaged_member_says_so(tmp_path):
    data = os.urandom(5000)
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", data)], compression=DEFLATED)
    raw = bytearray(archive.read_bytes())
    start = raw.index(b"shirt.jpg") + len(b"shirt.jpg")  # the local header's name, then the compressed data
    raw[start + 10: start + 400] = bytes(390)
    archive.write_bytes(bytes(raw))
    assert refusal(archive, "shirt.jpg") == "This zip entry is damaged or uses an unsupported compression method."


def test_a_password_protected_member_says_so(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"secret photo")])
    raw = bytearray(archive.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" bit, in both headers
        offset = raw.index(signature) + flag_at
        raw[offset] |= 0x01
    archive.write_bytes(bytes(raw))
    assert refusal(archive, "shirt.jpg") == "This zip entry is password-protected."


def test_open_zips_share_one_open_zip_per_file(tmp_path):
    zips = OpenZips()
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"a")])
    assert zips.get(archive) is zips.get(archive)
    assert zips.get(Path(os.path.relpath(archive))) is zips.get(archive)  # the same file by another path


def test_a_zip_replaced_on_disk_is_opened_again(tmp_path):
    zips = OpenZips()
    archive = make_zip(tmp_path / "a.zip", [("shirt.jpg", b"old")])
    first = zips.get(archive)
    make_zip(archive, [("shirt.jpg", b"a newer photo")])
    second = zips.get(archive)
    assert second is not first and second.read("shirt.jpg") == b"a newer photo"


def test_the_oldest_used_zip_is_closed_beyond_max_open(tmp_path):
    zips = OpenZips(max_open=2)
    assert OpenZips().max_open == 8
    paths = [make_zip(tmp_path / f"{i}.zip", [("shirt.jpg", bytes([i]))]) for i in range(3)]
    zero, one = zips.get(paths[0]), zips.get(paths[1])
    assert zips.get(paths[0]) is zero  # used again: now the newest
    two = zips.get(paths[2])
    assert one.fp is None and zero.fp is not None and two.fp is not None  # 1 was the least recently used
    assert zips.get(paths[1]) is not one
    zips.close()
    assert all(archive.fp is None for archive in (zero, two))
