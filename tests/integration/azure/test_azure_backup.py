"""Media backups (tether.backups.media) of Azure Blob instances made by the real
AzureBlobProvider on Azurite, reached with each instance's own SAS token: sealed round trips of
binary blobs with content types, headers and metadata (one larger than an upload block: staged
blocks), into the same and another instance, damaged and hostile archives refused with the
container untouched, no SAS in any error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.storage.blob import ContainerClient, ContentSettings
from cryptography.fernet import Fernet

from tests.media_content import (
    MB,
    Files,
    expected_summary,
    flip_byte,
    hand_made_archive,
    headers_of,
    media_files,
)
from tether.backups.media import (
    AzureBlobTarget,
    BadMediaArchive,
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
from tether.providers.azure_blob import AzureBlobProvider
from tether.providers.base import ClusterSpec, ResourceNames

pytestmark = pytest.mark.integration

PROVIDER = AzureBlobProvider()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def cluster(azurite_url: str) -> ClusterSpec:
    return ClusterSpec(id=1, kind="azure-blob", region="eu-azure", url=azurite_url, settings={})


def admin_endpoint(url: str) -> str:
    """Where Tether reaches Azurite (the credentials hold the applications' address)."""
    parts = urlsplit(url)
    return f"http://{parts.hostname}:{parts.port}{parts.path}"


@pytest.fixture
def instance(cluster: ClusterSpec, unique_id: str
             ) -> Iterator[Callable[[str], AzureBlobTarget]]:
    made: list[ResourceNames] = []

    def make(suffix: str) -> AzureBlobTarget:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        creds = PROVIDER.provision(cluster, names, "unused")
        return AzureBlobTarget.from_credentials(creds.values,
                                                endpoint=admin_endpoint(cluster.url))

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


def client(target: AzureBlobTarget) -> ContainerClient:
    """The instance's SAS token, as an application holds it."""
    return ContainerClient(target.endpoint, target.container, credential=target.sas_token)


def put_files(container: ContainerClient, files: Files) -> None:
    for key, (data, kind) in files.items():
        h = headers_of(key)
        settings = ContentSettings(content_type=kind, cache_control=h.cache_control,
                                   content_disposition=h.content_disposition)
        container.upload_blob(key, data, overwrite=True, content_settings=settings,
                              metadata=h.metadata)


def props(container: ContainerClient) -> dict[str, tuple[Any, ...]]:
    """name -> (content type, cache-control, content-disposition, metadata)."""
    found = {}
    for blob in container.list_blobs(include=["metadata"]):
        s = blob.content_settings
        found[blob.name] = (s.content_type, s.cache_control, s.content_disposition,
                            dict(blob.metadata or {}))
    return found


def names(container: ContainerClient) -> set[str]:
    return {blob.name for blob in container.list_blobs()}


def delete_all(container: ContainerClient) -> None:
    for name in names(container):
        container.delete_blob(name)


def test_round_trip_back_up_delete_restore(instance: Callable[[str], AzureBlobTarget],
                                           box: SecretBox, tmp_path: Path) -> None:
    target = instance("a")
    files = media_files()
    with client(target) as container:
        put_files(container, files)
        before = summary(target)
        assert before == expected_summary(files)
        props_before = props(container)
        assert props_before["photos/2026/header.png"] == ("image/png", "max-age=86400", None,
                                                          {"origin": "upload"})

        dest = tmp_path / "az.sealed"
        info, dumped = dump_sealed_with_summary(target, dest, box)
        assert dumped == before

        delete_all(container)
        container.upload_blob("not/in/the/backup.txt", b"x")
        assert summary(target).objects == 1

        restore_sealed(target, dest, info.key_sealed, box, info.sha256)
        assert summary(target) == before
        assert props(container) == props_before
        big = container.download_blob("uploads/big-video.mp4").readall()
        assert big == files["uploads/big-video.mp4"][0]


def test_restore_into_a_second_instance(instance: Callable[[str], AzureBlobTarget],
                                        box: SecretBox, tmp_path: Path) -> None:
    source, other = instance("a"), instance("b")
    files = media_files(big=1 * MB)
    with client(source) as a, client(other) as b:
        put_files(a, files)
        put_files(b, {"old.txt": (b"old", "text/plain"), "empty.txt": (b"full", "text/html")})
        info = dump_sealed(source, tmp_path / "b.sealed", box)
        restore_sealed(other, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
        assert summary(other) == summary(source)
        assert props(b) == props(a)


def test_a_corrupted_sealed_backup_is_refused_before_anything_is_deleted(
        instance: Callable[[str], AzureBlobTarget], box: SecretBox, tmp_path: Path) -> None:
    target = instance("a")
    files = media_files(big=1 * MB)
    with client(target) as container:
        put_files(container, files)
        dest = tmp_path / "c.sealed"
        info = dump_sealed(target, dest, box)
        container.delete_blob("data.bin")
        container.upload_blob("extra.txt", b"kept")
        big_before = container.download_blob("uploads/big-video.mp4").readall()
        container.upload_blob("uploads/big-video.mp4", b"changed since", overwrite=True)
        state = summary(target)

        flip_byte(dest)
        with pytest.raises(ChecksumMismatch):
            restore_sealed(target, dest, info.key_sealed, box, info.sha256)
        with pytest.raises(DamagedChunk):
            restore_sealed(target, dest, info.key_sealed, box, file_sha256(dest))
        assert summary(target) == state  # not one blob written or deleted
        # one pass over the damaged file (the damage is inside the big blob's blocks): that
        # blob keeps its old content (its staged blocks are never committed), nothing is deleted
        with pytest.raises(DamagedChunk):
            restore_stream(target, read_sealed(dest, info.key_sealed, box, None))
        assert container.download_blob("extra.txt").readall() == b"kept"
        assert container.download_blob("uploads/big-video.mp4").readall() == b"changed since"
        assert big_before == files["uploads/big-video.mp4"][0]


@pytest.mark.parametrize("name", ["../x", "/x"])
def test_a_member_that_would_escape_is_refused(instance: Callable[[str], AzureBlobTarget],
                                               box: SecretBox, tmp_path: Path,
                                               name: str) -> None:
    target = instance("a")
    with client(target) as container:
        container.upload_blob("keep.txt", b"kept")
        archive = hand_made_archive([("fine.txt", b"fine"), (name, b"escaped")])
        info = write_sealed(tmp_path / "e.sealed", [archive], box)
        with pytest.raises(BadMediaArchive, match="would escape"):
            restore_sealed(target, tmp_path / "e.sealed", info.key_sealed, box, info.sha256)
        assert names(container) == {"keep.txt"}
        with pytest.raises(BadMediaArchive, match="would escape"):
            restore_stream(target, [archive])
        assert "keep.txt" in names(container)


def test_errors_name_no_sas(instance: Callable[[str], AzureBlobTarget]) -> None:
    target = instance("a")
    assert target.sas_token not in repr(target)
    other = AzureBlobTarget(account=target.account, container=target.container + "-none",
                            sas_token=target.sas_token, endpoint=target.endpoint)
    with pytest.raises(BackupError) as err:
        list(dump_stream(other))
    message = err.value.message
    assert other.container in message
    sig = dict(p.split("=", 1) for p in target.sas_token.split("&"))["sig"]
    assert target.sas_token not in message and sig not in message
