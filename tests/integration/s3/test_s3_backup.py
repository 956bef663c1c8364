"""Media backups (tether.backups.media) of S3 instances made by the real S3Provider on SeaweedFS,
reached with each instance's own access key: sealed round trips of binary objects with content
types and headers (one larger than an upload part: multipart), into the same and another
instance and into local files, damaged and hostile archives refused with the bucket untouched."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.s3.conftest import S3Server
from tests.media_content import (
    MB,
    Files,
    expected_summary,
    flip_byte,
    hand_made_archive,
    headers_of,
    media_files,
    with_guessed_types,
)
from tether.backups.media import (
    BadMediaArchive,
    LocalFilesTarget,
    S3Target,
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
    read_sealed,
    write_sealed,
)
from tether.crypto import SecretBox
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.s3 import S3Provider

pytestmark = pytest.mark.integration

PROVIDER = S3Provider()


@pytest.fixture
def box() -> SecretBox:
    from cryptography.fernet import Fernet

    return SecretBox(Fernet.generate_key())


@pytest.fixture
def cluster(s3_server: S3Server) -> ClusterSpec:
    return ClusterSpec(id=1, kind="s3", region="eu-test", url=s3_server.url,
                       settings={"endpoint_scheme": "http"})


@pytest.fixture
def instance(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], S3Target]]:
    made: list[ResourceNames] = []

    def make(suffix: str) -> S3Target:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        return S3Target.from_credentials(creds.values)

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


def client(server: S3Server, target: S3Target) -> Any:
    """The instance's own key, as an application holds it."""
    return server.client("s3", target.access_key_id, target.secret_access_key)


def put_files(s3: Any, target: S3Target, files: Files) -> None:
    for key, (data, kind) in files.items():
        h = headers_of(key)
        extra = {name: value for name, value in (("CacheControl", h.cache_control),
                                                 ("ContentDisposition", h.content_disposition),
                                                 ("Metadata", h.metadata)) if value}
        s3.put_object(Bucket=target.bucket, Key=key, Body=data, ContentType=kind, **extra)


def keys(s3: Any, target: S3Target) -> set[str]:
    return {item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=target.bucket) for item in page.get("Contents", [])}


def heads(s3: Any, target: S3Target) -> dict[str, tuple[str, str | None, str | None, dict]]:
    """key -> (content type, cache-control, content-disposition, metadata)."""
    found = {}
    for key in keys(s3, target):
        head = s3.head_object(Bucket=target.bucket, Key=key)
        found[key] = (head.get("ContentType"), head.get("CacheControl"),
                      head.get("ContentDisposition"), head.get("Metadata") or {})
    return found


def delete_all(s3: Any, target: S3Target) -> None:
    for key in keys(s3, target):
        s3.delete_object(Bucket=target.bucket, Key=key)


def test_round_trip_back_up_delete_restore(s3_server: S3Server,
                                           instance: Callable[[str], S3Target],
                                           box: SecretBox, tmp_path: Path) -> None:
    target = instance("a")
    s3 = client(s3_server, target)
    files = media_files()
    put_files(s3, target, files)
    before = summary(target)
    assert before == expected_summary(files)
    types_before = heads(s3, target)
    assert types_before["photos/2026/header.png"][:2] == ("image/png", "max-age=86400")

    dest = tmp_path / "s3.sealed"
    info, dumped = dump_sealed_with_summary(target, dest, box)
    assert dumped == before

    delete_all(s3, target)
    s3.put_object(Bucket=target.bucket, Key="not/in/the/backup.txt", Body=b"x")
    assert summary(target).objects == 1

    restore_sealed(target, dest, info.key_sealed, box, info.sha256)
    assert summary(target) == before
    assert heads(s3, target) == types_before
    big = s3.get_object(Bucket=target.bucket, Key="uploads/big-video.mp4")["Body"].read()
    assert big == files["uploads/big-video.mp4"][0]
    assert s3.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []


def test_restore_into_a_second_instance_and_into_local_files(
        s3_server: S3Server, instance: Callable[[str], S3Target], box: SecretBox,
        tmp_path: Path) -> None:
    source, other = instance("a"), instance("b")
    files = media_files(big=1 * MB)
    put_files(client(s3_server, source), source, files)
    put_files(client(s3_server, other), other, {"old.txt": (b"old", "text/plain")})
    info = dump_sealed(source, tmp_path / "b.sealed", box)
    restore_sealed(other, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
    assert summary(other) == summary(source)
    assert heads(client(s3_server, other), other) == heads(client(s3_server, source), source)

    # the same format restores into local files: same contents, types from the names there
    directory = tmp_path / "local"
    directory.mkdir(mode=0o700)
    local = LocalFilesTarget(str(directory))
    restore_sealed(local, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
    assert summary(local) == expected_summary(with_guessed_types(files))


def test_public_objects_stay_public(s3_server: S3Server, instance: Callable[[str], S3Target],
                                    box: SecretBox, tmp_path: Path) -> None:
    """django-storage-url uploads media with the ACL public-read: a restore keeps it (and
    keeps a private object private), where the server has object ACLs."""
    target = instance("a")
    s3 = client(s3_server, target)
    s3.put_object(Bucket=target.bucket, Key="public.png", Body=b"p", ContentType="image/png",
                  ACL="public-read")
    s3.put_object(Bucket=target.bucket, Key="private.txt", Body=b"s", ContentType="text/plain")

    def public(key: str) -> bool | None:
        try:
            grants = s3.get_object_acl(Bucket=target.bucket, Key=key)["Grants"]
        except Exception:
            return None
        return any(str(g.get("Grantee", {}).get("URI", "")).endswith("/global/AllUsers")
                   for g in grants)

    if public("public.png") is not True:
        pytest.skip("this S3 server keeps no object ACLs")
    info = dump_sealed(target, tmp_path / "acl.sealed", box)
    delete_all(s3, target)
    restore_sealed(target, tmp_path / "acl.sealed", info.key_sealed, box, info.sha256)
    assert public("public.png") is True
    assert public("private.txt") is False


def test_a_corrupted_sealed_backup_is_refused_before_anything_is_deleted(
        s3_server: S3Server, instance: Callable[[str], S3Target], box: SecretBox,
        tmp_path: Path) -> None:
    target = instance("a")
    s3 = client(s3_server, target)
    files = media_files(big=1 * MB)
    put_files(s3, target, files)
    dest = tmp_path / "c.sealed"
    info = dump_sealed(target, dest, box)
    s3.delete_object(Bucket=target.bucket, Key="data.bin")
    s3.put_object(Bucket=target.bucket, Key="extra.txt", Body=b"kept")
    state = summary(target)

    flip_byte(dest)
    with pytest.raises(ChecksumMismatch):
        restore_sealed(target, dest, info.key_sealed, box, info.sha256)
    with pytest.raises(DamagedChunk):
        restore_sealed(target, dest, info.key_sealed, box, file_sha256(dest))
    assert summary(target) == state  # not one object written or deleted
    # one pass over the damaged file: the object being uploaded is not replaced by a part of
    # it (the multipart upload is aborted), and nothing is deleted
    with pytest.raises(DamagedChunk):
        restore_stream(target, read_sealed(dest, info.key_sealed, box, None))
    assert s3.get_object(Bucket=target.bucket, Key="extra.txt")["Body"].read() == b"kept"
    assert s3.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []


@pytest.mark.parametrize("name", ["../x", "/x"])
def test_a_member_that_would_escape_is_refused(s3_server: S3Server,
                                               instance: Callable[[str], S3Target],
                                               box: SecretBox, tmp_path: Path,
                                               name: str) -> None:
    target = instance("a")
    s3 = client(s3_server, target)
    s3.put_object(Bucket=target.bucket, Key="keep.txt", Body=b"kept")
    archive = hand_made_archive([("fine.txt", b"fine"), (name, b"escaped")])
    info = write_sealed(tmp_path / "e.sealed", [archive], box)
    with pytest.raises(BadMediaArchive, match="would escape"):
        restore_sealed(target, tmp_path / "e.sealed", info.key_sealed, box, info.sha256)
    assert keys(s3, target) == {"keep.txt"}
    with pytest.raises(BadMediaArchive, match="would escape"):
        restore_stream(target, [archive])
    assert "keep.txt" in keys(s3, target)


def unsafe(key: str) -> bool:
    """Whether a key cannot be a tar member's name as it is."""
    return key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/"))


def test_keys_that_would_escape_are_backed_up_under_safe_names(
        s3_server: S3Server, instance: Callable[[str], S3Target]) -> None:
    """S3 keys may be anything: an absolute or `..` key is kept exactly (TETHER.key) under a
    member name that stays in the directory a plain `tar x` extracts into."""
    import io
    import tarfile

    target = instance("a")
    s3 = client(s3_server, target)
    s3.put_object(Bucket=target.bucket, Key="plain.txt", Body=b"p", ContentType="text/plain")
    for key in ("../up.txt", "a/../../b.txt", "/abs.txt", "dir/", "a//b", "x/./y"):
        with contextlib.suppress(ClientError):  # a server may refuse some of them
            s3.put_object(Bucket=target.bucket, Key=key, Body=key.encode(),
                          ContentType="text/plain")
    present = keys(s3, target)  # what this server keeps of them
    if not any(unsafe(k) for k in present):
        pytest.skip("this S3 server keeps none of the keys that need escaping")
    before = summary(target)
    data = b"".join(dump_stream(target))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        names = {m.pax_headers.get("TETHER.key"): m.name for m in tar if m.name != "MANIFEST.json"}
    assert set(names) == present
    for key, name in names.items():
        assert not name.startswith("/") and ".." not in name.split("/") and "//" not in name
        assert name == (f"_tether_escaped/{hashlib.sha256(key.encode()).hexdigest()}"
                        if unsafe(key) else key)
    assert check_archive([data]).summary == before
    delete_all(s3, target)
    restore_stream(target, [data])
    assert summary(target) == before


def test_errors_name_no_secret(s3_server: S3Server, instance: Callable[[str], S3Target]) -> None:
    target = instance("a")
    wrong = S3Target(bucket=target.bucket, access_key_id=target.access_key_id,
                     secret_access_key=target.secret_access_key + "x",
                     endpoint_url=target.endpoint_url, region=target.region)
    assert target.secret_access_key not in repr(target)
    with pytest.raises(BackupError) as err:
        list(dump_stream(wrong))
    assert target.secret_access_key not in err.value.message
    assert target.bucket in err.value.message
