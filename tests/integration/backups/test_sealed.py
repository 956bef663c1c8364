"""Sealed backup files (tether.backups.sealed) on a real disk: round trips, every kind of damage
refused with its own error, a writer killed mid-write, and memory that stays bounded."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tether.backups.sealed import (
    HEADER_SIZE,
    TAG_SIZE,
    ChecksumMismatch,
    DamagedChunk,
    NotASealedFile,
    SealedFileError,
    SealedInfo,
    TruncatedFile,
    WrongKey,
    file_sha256,
    partial_path,
    read_sealed,
    write_sealed,
)
from tether.crypto import SecretBox

pytestmark = pytest.mark.integration

CHUNK = 1024  # small chunks: many of them from little data


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


def pieces(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """`data` cut in pieces of the given sizes, in turn."""
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos:pos + size]
        pos += size
        i += 1


def read_all(path: Path, info: SealedInfo, box: SecretBox, expected: str | None = "recorded"
             ) -> bytes:
    sha = info.sha256 if expected == "recorded" else expected
    return b"".join(read_sealed(path, info.key_sealed, box, sha))


@pytest.fixture
def sealed(tmp_path: Path, box: SecretBox) -> tuple[Path, SealedInfo, bytes]:
    """A file of 10 full chunks and a short final one."""
    data = os.urandom(CHUNK * 10 + 100)
    path = tmp_path / "b.sealed"
    return path, write_sealed(path, pieces(data, (333,)), box, chunk_size=CHUNK), data


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(1,), (7777, 1, 65536, 3), (1 << 20,), (3 << 20, 5)])
def test_round_trip_of_several_mb_in_odd_pieces(tmp_path: Path, box: SecretBox,
                                                sizes: tuple[int, ...]) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17) if sizes != (1,) else os.urandom(300_001)
    path = tmp_path / "b.sealed"
    info = write_sealed(path, pieces(data, sizes), box)
    assert info.size == path.stat().st_size
    assert info.sha256 == file_sha256(path)
    assert info.plain_sha256 == hashlib.sha256(data).hexdigest()
    assert info.plain_size == len(data)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not partial_path(path).exists()
    assert read_all(path, info, box) == data
    assert data[:4096] not in path.read_bytes()  # encrypted, not merely framed


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK])
def test_round_trip_at_chunk_boundaries(tmp_path: Path, box: SecretBox, length: int) -> None:
    """A length that is a multiple of the chunk size still ends with a (empty) short chunk."""
    data = os.urandom(length)
    path = tmp_path / "b.sealed"
    info = write_sealed(path, [data], box, chunk_size=CHUNK)
    assert info.size == HEADER_SIZE + (length // CHUNK + 1) * TAG_SIZE + length
    assert read_all(path, info, box) == data


def test_each_file_has_its_own_key(tmp_path: Path, box: SecretBox) -> None:
    a = write_sealed(tmp_path / "a", [b"same"], box)
    b = write_sealed(tmp_path / "b", [b"same"], box)
    assert box.open(a.key_sealed) != box.open(b.key_sealed)
    assert a.sha256 != b.sha256 and a.plain_sha256 == b.plain_sha256


def test_an_existing_file_is_never_overwritten(sealed: tuple[Path, SealedInfo, bytes],
                                               box: SecretBox) -> None:
    path, info, data = sealed
    with pytest.raises(SealedFileError, match="never overwritten"):
        write_sealed(path, [b"other"], box)
    assert read_all(path, info, box) == data


# -- damage ------------------------------------------------------------------------------------


def damage(path: Path, change: str) -> None:
    raw = bytearray(path.read_bytes())
    full = CHUNK + TAG_SIZE
    if change == "flip":
        raw[HEADER_SIZE + 3 * full + 500] ^= 0x01
    elif change == "flip-last":
        raw[-3] ^= 0x80
    elif change == "swap":
        a, b = HEADER_SIZE + 2 * full, HEADER_SIZE + 5 * full
        raw[a:a + full], raw[b:b + full] = raw[b:b + full], raw[a:a + full]
    elif change == "cut-mid-chunk":
        del raw[HEADER_SIZE + 4 * full + 10:]
    elif change == "cut-at-boundary":  # whole chunks, only the final short one missing
        del raw[HEADER_SIZE + 10 * full:]
    elif change == "drop-chunk":
        del raw[HEADER_SIZE + 4 * full:HEADER_SIZE + 5 * full]
    elif change == "cut-header":
        del raw[HEADER_SIZE - 5:]
    elif change == "header-chunk-size":
        raw[12] ^= 0x04
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("change", "error"), [
    ("flip", DamagedChunk), ("flip-last", TruncatedFile), ("swap", DamagedChunk),
    ("cut-mid-chunk", TruncatedFile), ("cut-at-boundary", TruncatedFile),
    ("drop-chunk", DamagedChunk), ("cut-header", NotASealedFile),
    ("header-chunk-size", WrongKey),
])
def test_damage_is_refused(sealed: tuple[Path, SealedInfo, bytes], box: SecretBox,
                           change: str, error: type[SealedFileError]) -> None:
    """With the recorded checksum, any change is refused before a single byte is returned; with
    the checksum of the damaged file (the record replaced too, or no record) the chunks'
    authentication still refuses it, each kind of damage with its own error."""
    path, info, _ = sealed
    damage(path, change)
    with pytest.raises(ChecksumMismatch, match="checksum recorded"):
        read_sealed(path, info.key_sealed, box, info.sha256)
    for expected in (file_sha256(path), None):
        with pytest.raises(error) as err:
            read_all(path, info, box, expected)
        assert "b.sealed" in err.value.message


def test_damage_is_noticed_before_its_chunk_only_without_a_checksum(
        sealed: tuple[Path, SealedInfo, bytes], box: SecretBox) -> None:
    """Without the whole-file check the chunks before the damage are returned (authentic), and
    the iterator raises at the damaged one: why a consumer must discard what it got."""
    path, info, data = sealed
    damage(path, "flip")
    got = []
    with pytest.raises(DamagedChunk, match="chunk 3"):
        for chunk in read_sealed(path, info.key_sealed, box, None):
            got.append(chunk)
    assert b"".join(got) == data[:3 * CHUNK]


def test_wrong_expected_checksum(sealed: tuple[Path, SealedInfo, bytes], box: SecretBox) -> None:
    path, info, _ = sealed
    with pytest.raises(ChecksumMismatch):
        read_sealed(path, info.key_sealed, box, "0" * 64)


def test_the_key_of_another_file_is_refused(sealed: tuple[Path, SealedInfo, bytes],
                                            box: SecretBox, tmp_path: Path) -> None:
    path, info, _ = sealed
    other = write_sealed(tmp_path / "other", [b"x"], box)
    with pytest.raises(WrongKey, match=r"not the key of b\.sealed"):
        read_sealed(path, other.key_sealed, box, info.sha256)


def test_a_key_sealed_by_another_secret_is_refused(sealed: tuple[Path, SealedInfo, bytes],
                                                   box: SecretBox) -> None:
    path, info, _ = sealed
    with pytest.raises(WrongKey, match="key cannot be opened"):
        read_sealed(path, info.key_sealed, SecretBox(Fernet.generate_key()), info.sha256)
    with pytest.raises(WrongKey, match="not a sealed file key"):
        read_sealed(path, box.seal("not base64!"), box, info.sha256)


def test_not_a_sealed_file(tmp_path: Path, box: SecretBox) -> None:
    path = tmp_path / "plain.dump"
    path.write_bytes(b"PGDMP" + os.urandom(5000))
    info = write_sealed(tmp_path / "x", [b""], box)
    with pytest.raises(NotASealedFile, match="not a sealed Tether backup"):
        read_sealed(path, info.key_sealed, box, None)


# -- crashes and failures while writing --------------------------------------------------------


def test_a_failing_source_leaves_no_file(tmp_path: Path, box: SecretBox) -> None:
    def source() -> Iterator[bytes]:
        yield os.urandom(3 * CHUNK)
        raise RuntimeError("pg_dump failed")

    dest = tmp_path / "b.sealed"
    with pytest.raises(RuntimeError, match="pg_dump failed"):
        write_sealed(dest, source(), box, chunk_size=CHUNK)
    assert list(tmp_path.iterdir()) == []


WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from tether.backups.sealed import write_sealed
    from tether.crypto import SecretBox

    def source():
        for _ in range(8):
            yield os.urandom(1 << 20)
        print("written", flush=True)
        time.sleep(600)
        yield b"never"

    write_sealed(Path(sys.argv[1]), source(), SecretBox(os.environ["KEY"].encode()))
""")


def test_a_writer_killed_mid_write_leaves_only_the_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "b.sealed"
    env = {**os.environ, "KEY": Fernet.generate_key().decode()}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(dest)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
        assert partial_path(dest).stat().st_size >= 8 << 20
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b.sealed.partial"]


# -- bounded memory ----------------------------------------------------------------------------


STREAMER = textwrap.dedent("""
    import json, os, resource, sys, time
    from pathlib import Path
    from cryptography.fernet import Fernet
    from tether.backups.sealed import read_sealed, write_sealed
    from tether.crypto import SecretBox

    total = int(sys.argv[2])
    block = os.urandom(4 << 20)
    sizes = (1, 65537, (3 << 20) + 5, 1 << 20, 12345)

    def source():
        sent = i = 0
        while sent < total:
            size = min(sizes[i % len(sizes)], total - sent)
            yield block[:size]
            sent += size
            i += 1

    box = SecretBox(Fernet.generate_key())
    dest = Path(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    info = write_sealed(dest, source(), box)
    wrote = time.monotonic() - start
    start = time.monotonic()
    n = sum(len(c) for c in read_sealed(dest, info.key_sealed, box, info.sha256))
    read = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "plain": n, "write_s": wrote,
                      "read_s": read}))
""")


def test_memory_stays_bounded_while_streaming_200_mb(tmp_path: Path) -> None:
    total = 200 << 20
    proc = subprocess.run([sys.executable, "-c", STREAMER, str(tmp_path / "big"), str(total)],
                          capture_output=True, text=True, timeout=240, check=True)
    result = json.loads(proc.stdout)
    print(f"write_sealed {total / result['write_s'] / 1e6:.0f} MB/s, "
          f"read_sealed (with the checksum pass) {total / result['read_s'] / 1e6:.0f} MB/s")
    assert result["plain"] == total
    assert result["growth_kib"] < 32 * 1024, result  # a few chunks, not the file
