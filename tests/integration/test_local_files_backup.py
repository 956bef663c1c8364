"""Media backups (tether.backups.media) of local-files instances made by the real
LocalFilesProvider: sealed round trips of binary files (random bytes, an empty file, nested and
unicode names) into the same and another instance, damaged and hostile archives refused with the
instance untouched, and root never following the application's symlinks or hard links. The
content is tests/media_content.py's, shared with the S3 and Azure Blob backup tests."""

from __future__ import annotations

import io
import json
import os
import pwd
import secrets
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.media_content import (
    MB,
    Files,
    expected_summary,
    flip_byte,
    hand_made_archive,
    media_files,
    sha,
    with_guessed_types,
)
from tether.backups.media import (
    FORMAT,
    BadMediaArchive,
    LocalFilesTarget,
    UnrestorableKey,
    check_archive,
    dump_sealed,
    dump_sealed_with_summary,
    dump_stream,
    restore_sealed,
    restore_stream,
    summary,
)
from tether.backups.postgres import BackupError
from tether.backups.sealed import (
    ChecksumMismatch,
    DamagedChunk,
    file_sha256,
    partial_path,
    read_sealed,
    write_sealed,
)
from tether.crypto import SecretBox
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.local_files import LocalFilesProvider

pytestmark = pytest.mark.integration

PROVIDER = LocalFilesProvider()


def pieces(data: bytes, size: int = 65_536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


# -- local files -------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSpec:
    base = tmp_path / "media"
    return ClusterSpec(id=3, kind="local-files", region="local", url=f"file://{base}",
                       settings={"base_dir": str(base),
                                 "public_url": "http://127.0.0.1:8070/media/"})


@pytest.fixture
def instance(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], LocalFilesTarget]]:
    made: list[ResourceNames] = []

    def make(suffix: str) -> LocalFilesTarget:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        creds = PROVIDER.provision(cluster, names, "unused")
        return LocalFilesTarget.from_credentials(creds.values)

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


def write_files(target: LocalFilesTarget, files: Files) -> None:
    for key, (data, _) in files.items():
        path = Path(target.directory, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_files(target: LocalFilesTarget) -> dict[str, bytes]:
    root = Path(target.directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_round_trip_back_up_delete_restore(instance: Callable[[str], LocalFilesTarget],
                                           box: SecretBox, tmp_path: Path) -> None:
    target = instance("a")
    files = with_guessed_types(media_files())
    write_files(target, files)
    os.chmod(Path(target.directory, "data.bin"), 0o640)
    before = summary(target)
    assert before == expected_summary(files)
    assert before.objects == len(files) and before.total_bytes > 12 * MB

    dest = tmp_path / "backup.sealed"
    info, dumped = dump_sealed_with_summary(target, dest, box)
    assert dumped == before
    assert info.plain_size > before.total_bytes  # tar headers and the manifest

    # the plaintext is a tar any reader lists: objects in order, the manifest last
    with tarfile.open(fileobj=io.BytesIO(b"".join(
            read_sealed(dest, info.key_sealed, box, info.sha256))), mode="r:") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(names[-1]))  # type: ignore[arg-type]
        member = tar.getmember("photos/2026/header.png")
        assert member.pax_headers["TETHER.content_type"] == "image/png"
    assert names[-1] == "MANIFEST.json" and names.count("MANIFEST.json") == 2
    assert manifest["format"] == FORMAT and manifest["kind"] == "local-files"
    assert {o["key"]: o["sha256"] for o in manifest["objects"]} == {
        k: sha(v) for k, (v, _) in files.items()}

    for key in files:  # delete everything, and add something that is not in the backup
        Path(target.directory, key).unlink()
    Path(target.directory, "photos", "new.txt").write_text("not in the backup")
    assert summary(target).objects == 1

    restore_sealed(target, dest, info.key_sealed, box, info.sha256)
    assert summary(target) == before
    assert read_files(target) == {k: v for k, (v, _) in files.items()}
    assert (os.stat(Path(target.directory, "data.bin")).st_mode & 0o777) == 0o640
    assert not list(Path(target.directory).rglob(".tether-restore-*"))


def test_restore_into_a_second_instance(instance: Callable[[str], LocalFilesTarget],
                                        box: SecretBox, tmp_path: Path) -> None:
    source, other = instance("a"), instance("b")
    files = with_guessed_types(media_files())
    write_files(source, files)
    write_files(other, {"old/leftover.txt": (b"old", "text/plain"),
                        "empty.txt": (b"was not empty", "text/plain")})
    info = dump_sealed(source, tmp_path / "b.sealed", box)
    restore_sealed(other, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
    assert summary(other) == summary(source)
    assert read_files(other) == read_files(source)


def test_a_corrupted_sealed_backup_is_refused_before_anything_changes(
        instance: Callable[[str], LocalFilesTarget], box: SecretBox, tmp_path: Path) -> None:
    target = instance("a")
    files = with_guessed_types(media_files())
    write_files(target, files)
    dest = tmp_path / "c.sealed"
    info = dump_sealed(target, dest, box)
    for key in list(files)[:3]:
        Path(target.directory, key).unlink()
    Path(target.directory, "extra.txt").write_text("kept")
    after_damage = read_files(target)

    flip_byte(dest)
    with pytest.raises(ChecksumMismatch):
        restore_sealed(target, dest, info.key_sealed, box, info.sha256)
    # a damaged chunk with a checksum that matches (recorded after the damage): the first pass
    # finds it before a file is written
    with pytest.raises(DamagedChunk):
        restore_sealed(target, dest, info.key_sealed, box, file_sha256(dest))
    assert read_files(target) == after_damage
    # one pass (restore_stream) over the damaged file: files before the damage may be
    # replaced, but nothing is deleted
    with pytest.raises(DamagedChunk):
        restore_stream(target, read_sealed(dest, info.key_sealed, box, None))
    assert Path(target.directory, "extra.txt").read_text() == "kept"


def test_an_archive_that_does_not_match_its_manifest_changes_nothing(
        instance: Callable[[str], LocalFilesTarget], box: SecretBox, tmp_path: Path) -> None:
    target = instance("a")
    write_files(target, {"keep.txt": (b"kept", "text/plain")})
    archive = hand_made_archive([("new.txt", b"new"), ("b.txt", b"bbb")], bad_sha_for="b.txt")
    dest = tmp_path / "m.sealed"
    info = write_sealed(dest, [archive], box)
    with pytest.raises(BadMediaArchive, match=r"'b\.txt' does not match"):
        restore_sealed(target, dest, info.key_sealed, box, info.sha256)
    assert read_files(target) == {"keep.txt": b"kept"}  # the first pass wrote nothing
    with pytest.raises(BadMediaArchive, match="nothing was deleted"):
        restore_stream(target, [archive])
    assert read_files(target)["keep.txt"] == b"kept"

    cut = hand_made_archive([("new.txt", b"new")], manifest=False)
    with pytest.raises(BadMediaArchive, match=r"no MANIFEST\.json"):
        restore_stream(target, [cut])
    with pytest.raises(BadMediaArchive, match=r"damaged or cut short|ends inside"):
        check_archive([archive[:700]])
    assert read_files(target)["keep.txt"] == b"kept"


@pytest.mark.parametrize("name", ["../x", "/x", "a/../../x", "a//x", "./x"])
def test_a_member_that_would_escape_is_refused(instance: Callable[[str], LocalFilesTarget],
                                               box: SecretBox, tmp_path: Path,
                                               name: str) -> None:
    target = instance("a")
    write_files(target, {"keep.txt": (b"kept", "text/plain")})
    archive = hand_made_archive([("fine.txt", b"fine"), (name, b"escaped")])
    with pytest.raises(BadMediaArchive, match="would escape"):
        check_archive([archive])
    info = write_sealed(tmp_path / "e.sealed", [archive], box)
    with pytest.raises(BadMediaArchive, match="would escape"):
        restore_sealed(target, tmp_path / "e.sealed", info.key_sealed, box, info.sha256)
    assert read_files(target) == {"keep.txt": b"kept"}  # not even fine.txt
    with pytest.raises(BadMediaArchive, match="would escape"):
        restore_stream(target, [archive])
    assert read_files(target)["keep.txt"] == b"kept"
    parent = Path(target.directory).parent
    assert not (parent / "x").exists() and not Path("/x").exists()


def test_links_and_other_members_than_files_are_refused(
        instance: Callable[[str], LocalFilesTarget]) -> None:
    target = instance("a")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(BadMediaArchive, match="not a regular file"):
        restore_stream(target, [out.getvalue()])
    assert not Path(target.directory, "passwd").exists()


def archive_with_keys(objects: list[tuple[str, bytes]]) -> bytes:
    """An archive laid out as Tether writes one for an S3 bucket holding these keys: a key
    that is no safe name goes under `_tether_escaped/`, its exact key in `TETHER.key`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for key, data in objects:
            safe = not key.startswith("/") and "" not in key.split("/")
            info = tarfile.TarInfo(key if safe else f"_tether_escaped/{sha(key.encode())}")
            info.size = len(data)
            info.pax_headers = {"TETHER.key": key, "TETHER.content_type": "text/plain"}
            tar.addfile(info, io.BytesIO(data))
        body = json.dumps({"format": FORMAT, "kind": "s3", "objects": [
            {"key": key, "size": len(data), "sha256": sha(data), "content_type": "text/plain"}
            for key, data in objects]}).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(body)
        info.pax_headers = {"TETHER.manifest": "1"}
        tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@pytest.mark.parametrize("objects", [
    [("fine.txt", b"f"), ("a//b", b"x")],
    [("fine.txt", b"f"), ("/abs", b"x")],
    [("a", b"file"), ("a/b", b"below a file")],
])
def test_keys_no_local_file_can_have_are_refused_before_anything_changes(
        instance: Callable[[str], LocalFilesTarget], box: SecretBox, tmp_path: Path,
        objects: list[tuple[str, bytes]]) -> None:
    """A backup of S3 may hold keys no file can have (the escaped member names keep the
    archive safe to extract anyway); restored into local files they are refused, by the first
    pass of a sealed restore before a file is written."""
    target = instance("a")
    write_files(target, {"keep.txt": (b"kept", "text/plain")})
    archive = archive_with_keys(objects)
    assert check_archive([archive]).summary.objects == 2  # a valid archive, elsewhere
    info = write_sealed(tmp_path / "k.sealed", [archive], box)
    with pytest.raises(UnrestorableKey, match="restore this backup into S3"):
        restore_sealed(target, tmp_path / "k.sealed", info.key_sealed, box, info.sha256)
    assert read_files(target) == {"keep.txt": b"kept"}
    with pytest.raises(UnrestorableKey, match="restore this backup into S3"):
        restore_stream(target, [archive])
    assert read_files(target)["keep.txt"] == b"kept"


def test_symlinks_hard_links_and_foreign_files_are_never_read_or_followed(
        instance: Callable[[str], LocalFilesTarget], tmp_path: Path, box: SecretBox) -> None:
    """The application owns its directory and may plant links to what only root may read:
    a backup leaves them out (listed in the manifest), a restore replaces them instead of
    writing through them, and its files belong to the directory's owner."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the directory is the application's user's")
    app = pwd.getpwnam("nobody")
    target = instance("a")
    root = Path(target.directory)
    secret = tmp_path / "root-only"
    secret.write_text("root's secret")
    secret.chmod(0o600)
    outside = tmp_path / "outside"
    outside.mkdir()
    write_files(target, {"ok.txt": (b"fine", "text/plain"), "sub/a.txt": (b"a", "text/plain")})
    (root / "link").symlink_to(secret)
    (root / "dirlink").symlink_to(outside)
    os.link(secret, root / "hardlink")  # root's file, not the owner's
    for path in [root, *root.rglob("*")]:
        os.chown(path, app.pw_uid, app.pw_gid, follow_symlinks=False)
    os.chown(secret, 0, 0)

    dest = tmp_path / "l.sealed"
    info = dump_sealed(target, dest, box)
    plain = b"".join(read_sealed(dest, info.key_sealed, box, info.sha256))
    assert b"root's secret" not in plain
    manifest = check_archive([plain])
    assert {o.key for o in manifest.objects} == {"ok.txt", "sub/a.txt"}
    assert {s["key"] for s in manifest.skipped} == {"link", "dirlink", "hardlink"}

    # the application swaps its sub directory for a link out of it: the restore makes a real
    # directory again, writes nothing outside, and removes the links
    (root / "sub" / "a.txt").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside)
    restore_sealed(target, dest, info.key_sealed, box, info.sha256)
    assert list(outside.iterdir()) == []
    assert secret.read_text() == "root's secret"
    assert (root / "sub").is_dir() and not (root / "sub").is_symlink()
    assert sorted(p.name for p in root.iterdir()) == ["ok.txt", "sub"]
    for path in (root / "ok.txt", root / "sub", root / "sub" / "a.txt"):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (app.pw_uid, app.pw_gid), path


def test_the_archive_is_a_plain_tar_with_escaped_names(tmp_path: Path) -> None:
    """Objects in listing order, a safe name for each, every header a PAX one, the stream a
    whole number of tar records (what `tarfile` in `w|` mode writes)."""
    directory = tmp_path / "inst"
    directory.mkdir()
    (directory / "b.txt").write_bytes(b"b" * 1000)
    (directory / "a.css").write_bytes(b"body{}")
    data = b"".join(dump_stream(LocalFilesTarget(str(directory))))
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        members = [(m.name, m.size, m.pax_headers.get("TETHER.content_type")) for m in tar]
    assert members[:2] == [("a.css", 6, "text/css"), ("b.txt", 1000, "text/plain")]
    assert members[2][0] == "MANIFEST.json"
    assert check_archive(pieces(data, 100)).summary == summary(LocalFilesTarget(str(directory)))


def test_repr_and_targets() -> None:
    target = LocalFilesTarget.from_credentials({"directory": "/srv/media/tether_i1",
                                                "url": "http://x/"})
    assert target.directory == "/srv/media/tether_i1"
    with pytest.raises(Exception, match="absolute"):
        LocalFilesTarget.from_credentials({"directory": "relative"})
    assert secrets.compare_digest(FORMAT, "tether-media-tar-1")


def test_memory_stays_bounded_for_a_large_file(instance: Callable[[str], LocalFilesTarget],
                                               box: SecretBox, tmp_path: Path) -> None:
    """A 128 MB file is streamed through backup and restore in pieces, never held whole."""
    import tracemalloc

    source, other = instance("a"), instance("b")
    big = Path(source.directory, "big.bin")
    with open(big, "wb") as f:
        f.truncate(128 * MB)  # sparse: quick to make, read as zeros like any other bytes
        f.seek(64 * MB)
        f.write(b"not only zeros")
    tracemalloc.start()
    try:
        info = dump_sealed(source, tmp_path / "big.sealed", box)
        restore_sealed(other, tmp_path / "big.sealed", info.key_sealed, box, info.sha256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * MB, f"peak {peak / MB:.0f} MB"
    assert summary(other) == summary(source)


def test_a_file_cut_short_while_backed_up_fails_the_backup(
        instance: Callable[[str], LocalFilesTarget], box: SecretBox, tmp_path: Path) -> None:
    """Rewritten in place (shorter) after its size went into the tar header: the backup
    fails, and leaves no file, rather than an archive that lies about the object."""
    target = instance("a")
    path = Path(target.directory, "a.bin")
    path.write_bytes(os.urandom(3 * MB))
    stream = dump_stream(target)
    next(stream)  # the header, with the size: the file is open now
    with open(path, "r+b") as f:
        f.truncate(MB)
    with pytest.raises(BackupError, match="became shorter"):
        list(stream)

    dest = tmp_path / "cut.sealed"

    def shrinking() -> Iterator[bytes]:
        for n, data in enumerate(dump_stream(target)):
            if n == 0:
                path.write_bytes(b"")
            yield data

    path.write_bytes(os.urandom(3 * MB))
    with pytest.raises(BackupError, match="became shorter"):
        write_sealed(dest, shrinking(), box)
    assert not dest.exists() and not partial_path(dest).exists()
