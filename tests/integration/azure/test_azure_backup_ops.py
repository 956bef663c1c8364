"""Azure Blob media backups through the worker's operations (tether.actions.backups,
tether.engine.backups, the adapter in tether.backups.engines) on the suite's real Azurite, which
is also the Azure-family region's backup storage: a container's blobs with their content types
backed up into the installation's tether-backups-<install id> container and verified in a
scratch container, restored after a change, copied live -> test. The instances' credentials name
the applications' endpoint (ACCOUNT.blob.localhost): Tether reaches Azurite at the cluster's."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from sqlalchemy import select

from tests.media_content import few_files
from tests.plane import backup_plane, instance_credentials, succeeded
from tether.actions import backups
from tether.actions.common import Context
from tether.backups.storage import install_id
from tether.engine.core import Engine
from tether.store.models import BackupFile

pytestmark = pytest.mark.integration


def endpoint(url: str) -> str:
    """Where Tether (and the test) reach Azurite: the cluster URL's blob endpoint."""
    parts = urlsplit(url)
    return f"http://{parts.hostname}:{parts.port}{parts.path}"


def admin(url: str) -> BlobServiceClient:
    parts = urlsplit(url)
    return BlobServiceClient(endpoint(url), credential={
        "account_name": unquote(parts.username or ""),
        "account_key": unquote(parts.password or "")})


@pytest.fixture
def env(tmp_path: Path, azurite_url: str,
        unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the suite's Azurite in an Azure region (media and backup storage); a
    project with MEDIA provisioned in test and live; every instance and the backup container
    removed at the end."""
    def remove_container(ctx: Context) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            admin(azurite_url).delete_container(f"tether-backups-{install_id(ctx.box)}")

    with backup_plane(tmp_path, "azure-blob", azurite_url, f"azurite{unique_id}",
                      "azure-blob-media", region="eu-azure", prefix="MEDIA",
                      clean_up=remove_container) as made:
        yield made.ctx, made.engine


def container(ctx: Context, url: str, env_name: str) -> ContainerClient:
    """The instance's container with its own SAS token, at the server's address (the
    credentials name the applications' endpoint)."""
    c = instance_credentials(ctx, env_name, "MEDIA")
    assert c["endpoint"].rstrip("/") != endpoint(url)
    return ContainerClient(endpoint(url), c["container"], credential=c["sas_token"])


def blobs(c: ContainerClient) -> dict[str, tuple[str, str]]:
    """name -> (sha256 of the content, content type)."""
    return {b.name: (hashlib.sha256(c.download_blob(b.name).readall()).hexdigest(),
                     b.content_settings.content_type) for b in c.list_blobs()}


def test_backup_verify_restore_and_copy_through_the_worker(
        env: tuple[Context, Engine], azurite_url: str) -> None:
    ctx, _ = env
    live, test = container(ctx, azurite_url, "live"), container(ctx, azurite_url, "test")
    files = few_files()
    for name, (data, kind) in files.items():
        live.upload_blob(name, data, content_settings=ContentSettings(content_type=kind))
    wanted = blobs(live)
    assert set(wanted) == set(files)

    made = backups.create(ctx, "shop", "live", verify=True)
    succeeded(ctx, made)
    shown = backups.show(ctx, int(made["id"]))
    assert shown["status"] == "completed" and shown["verification"] == "passed", shown
    assert [f["format"] for f in shown["files"]] == ["tether-media-tar-1"]
    # the sealed file is in the installation's backup container on the same account
    with ctx.store.session() as s:
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        key, size = str(f.storage_key), f.size
    kept = admin(azurite_url).get_container_client(f"tether-backups-{install_id(ctx.box)}")
    assert kept.get_blob_client(key).get_blob_properties().size == size
    # the verification's scratch container is gone
    names = [c.name for c in admin(azurite_url).list_containers()]
    assert not [n for n in names if n.startswith("tether-v")], names

    # restore after a change: the backup's blobs are back, later ones gone
    live.delete_blob("notes.txt")
    live.upload_blob("img/logo.png", b"changed", overwrite=True,
                     content_settings=ContentSettings(content_type="text/plain"))
    live.upload_blob("later.txt", b"not in the backup")
    succeeded(ctx, backups.restore(ctx, int(made["id"]), confirm="MEDIA"))
    assert blobs(live) == wanted

    # copy live -> test: test gets live's blobs (and loses its own)
    test.upload_blob("own.txt", b"test's own")
    succeeded(ctx, backups.copy(ctx, "shop", "MEDIA", "live", "test", confirm="MEDIA"))
    assert blobs(test) == wanted

    for b in backups.list_backups(ctx, "shop"):
        succeeded(ctx, backups.delete(ctx, int(b["id"])))
    assert not list(kept.list_blobs())
