"""Backup storage on an Azure Blob cluster (tether.backups.storage), against a real Azurite: the
installation's private container, a round trip of a ~20 MB file in staged blocks with its
checksum, no anonymous access, a put killed with SIGKILL midway leaving no key (and
`sweep_incomplete` removing its staged blocks), `keys`, a container of that name that is not
Tether's refused, errors that may pass told from final ones without secrets. Every container made
is deleted."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.integration.azure.conftest import ACCOUNT, ACCOUNT_KEY, cluster_url
from tests.integration.test_local_files_backup_storage import (
    check_keys_listing,
    check_round_trip,
    feed_fifo,
    kill,
    start_put,
    wait_for,
)
from tether.backups.storage import (
    AzureBackupStorage,
    BackupFileMissing,
    backup_storage,
)
from tether.errors import ClusterError, TransientError
from tether.net import free_port
from tether.providers.base import ClusterSpec

pytestmark = pytest.mark.integration

BLOCK = 4 << 20


def spec(url: str) -> ClusterSpec:
    return ClusterSpec(id=9, kind="azure-blob", region="az-test", url=url)


def endpoint(url: str) -> str:
    """The blob endpoint of an Azurite cluster URL (http://HOST:PORT/ACCOUNT)."""
    return "http://" + url.split("@", 1)[1]


def admin(url: str) -> BlobServiceClient:
    return BlobServiceClient(endpoint(url), credential={"account_name": ACCOUNT,
                                                        "account_key": ACCOUNT_KEY})


@pytest.fixture
def install(azurite_url: str) -> Iterator[str]:
    """A fresh install id; its backup container removed after."""
    made = secrets.token_hex(8)
    yield made
    with contextlib.suppress(ResourceNotFoundError):
        admin(azurite_url).get_container_client(f"tether-backups-{made}").delete_container()


@pytest.fixture
def storage(azurite_url: str, install: str) -> AzureBackupStorage:
    store = AzureBackupStorage(spec(azurite_url), install, block_size=BLOCK)
    store.ensure()
    return store


def container(storage: AzureBackupStorage, url: str) -> ContainerClient:
    return admin(url).get_container_client(storage.container)


def test_ensure_makes_a_private_marked_container(azurite_url: str, install: str) -> None:
    store = backup_storage(spec(azurite_url), install)
    assert isinstance(store, AzureBackupStorage)
    assert store.container == f"tether-backups-{install}"
    assert store.container in store.where and ACCOUNT_KEY not in store.where
    store.ensure()
    client = container(store, azurite_url)
    assert client.get_container_properties().metadata == {"tether_backups": install}
    assert client.get_container_access_policy()["public_access"] is None

    client.set_container_access_policy(signed_identifiers={}, public_access="container")
    store.ensure()  # opened by hand: made private again
    assert client.get_container_access_policy()["public_access"] is None


def test_round_trip_in_staged_blocks(azurite_url: str, storage: AzureBackupStorage,
                                     tmp_path: Path) -> None:
    key = "live/2026-12-03/b1.tbk"
    blocks: list[int] = []

    original = storage.put

    def put_and_count(key: str, source: Path) -> None:
        original(key, source)
        committed, _ = container(storage, azurite_url).get_blob_client(key).get_block_list()
        blocks.append(len(committed))

    storage.put = put_and_count  # type: ignore[method-assign]
    check_round_trip(storage, tmp_path, key)
    assert blocks == [5, 5]  # ~20 MB in 4 MiB blocks, twice: staged and committed


def test_container_is_not_readable_anonymously(azurite_url: str, storage: AzureBackupStorage,
                                               tmp_path: Path) -> None:
    source = tmp_path / "staged.tbk"
    source.write_bytes(os.urandom(1000))
    key = "live/b1.tbk"
    storage.put(key, source)
    try:
        base = f"{endpoint(azurite_url)}/{storage.container}"
        for url in (f"{base}/{key}", f"{base}?restype=container&comp=list"):
            answer = httpx.get(url, timeout=10)
            assert answer.status_code in (401, 403, 404), (url, answer.status_code)
            assert source.read_bytes() not in answer.content
            assert "b1.tbk" not in answer.text
        planted = httpx.put(f"{base}/planted.tbk", content=b"x", timeout=10,
                            headers={"x-ms-blob-type": "BlockBlob"})
        assert planted.status_code in (401, 403, 404)
        assert storage.size("planted.tbk") is None
    finally:
        storage.delete(key)


def test_keys_lists_exactly_what_was_put(storage: AzureBackupStorage, tmp_path: Path) -> None:
    check_keys_listing(storage, tmp_path)


def test_put_killed_midway_leaves_no_key_and_sweep_removes_its_blocks(
        azurite_url: str, storage: AzureBackupStorage, install: str, tmp_path: Path) -> None:
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo)
    key = "live/b9.tbk"
    client = container(storage, azurite_url)
    proc = start_put(spec(azurite_url), key, fifo, install=install,
                     extra={"block_size": BLOCK})
    writer = feed_fifo(fifo, proc, 3 * BLOCK)

    def stored() -> int:
        """Blocks of the key, staged or (wrongly, for the assertions below) committed."""
        try:
            committed, uncommitted = client.get_blob_client(key).get_block_list("all")
        except ResourceNotFoundError:
            return 0
        return len(committed) + len(uncommitted)

    try:
        wait_for(lambda: stored() >= 3, "three stored blocks", proc)
        kill(proc)
    finally:
        writer.close()
    assert storage.size(key) is None
    assert list(storage.keys()) == []
    with pytest.raises(BackupFileMissing):
        storage.get(key, tmp_path / "out.tbk")
    leftovers = [b.name for b in client.list_blobs(include=["uncommittedblobs"])]
    assert leftovers == [key]  # the staged blocks the killed put left

    assert storage.sweep_incomplete() == 0  # fresh: it might be a put still running
    assert storage.sweep_incomplete(older_than=0) == 1
    assert list(client.list_blobs(include=["uncommittedblobs"])) == []
    assert storage.sweep_incomplete(older_than=0) == 0


def test_sweep_leaves_committed_blobs_alone(storage: AzureBackupStorage,
                                            tmp_path: Path) -> None:
    source = tmp_path / "staged.tbk"
    source.write_bytes(os.urandom(1000))
    storage.put("live/b1.tbk", source)
    storage.put("live/b2.tbk", source)
    (tmp_path / "empty").write_bytes(b"")
    storage.put("live/zero.tbk", tmp_path / "empty")
    assert storage.sweep_incomplete(older_than=0) == 0
    assert list(storage.keys()) == ["live/b1.tbk", "live/b2.tbk", "live/zero.tbk"]
    assert storage.size("live/zero.tbk") == 0
    for key in ("live/b1.tbk", "live/b2.tbk", "live/zero.tbk"):
        storage.delete(key)


def test_refuses_a_container_that_is_not_tethers(azurite_url: str, install: str) -> None:
    name = f"tether-backups-{install}"
    admin(azurite_url).create_container(name)
    store = AzureBackupStorage(spec(azurite_url), install)
    with pytest.raises(ClusterError, match="not this Tether installation's"):
        store.ensure()
    other = AzureBackupStorage(spec(azurite_url), secrets.token_hex(8))
    other.ensure()
    try:
        with pytest.raises(ClusterError, match="not this Tether installation's"):
            # another installation's container under this installation's name
            admin(azurite_url).get_container_client(name).set_container_metadata(
                {"tether_backups": other.install})
            store.ensure()
    finally:
        admin(azurite_url).get_container_client(other.container).delete_container()


def test_unreachable_is_transient_and_secret_free(install: str) -> None:
    url = cluster_url(free_port())
    store = AzureBackupStorage(spec(url), install)
    for call in (store.ensure, lambda: store.size("b.tbk"), lambda: list(store.keys())):
        with pytest.raises(TransientError) as err:
            call()
        assert ACCOUNT_KEY not in err.value.message
        assert quote(ACCOUNT_KEY, safe="") not in err.value.message


def test_wrong_key_is_final_and_secret_free(azurite_url: str, install: str,
                                            tmp_path: Path) -> None:
    wrong = "A" * 86 + "=="
    port = int(azurite_url.rsplit(":", 1)[1].split("/")[0])
    store = AzureBackupStorage(spec(cluster_url(port, key=wrong)), install)
    source = tmp_path / "staged.tbk"
    source.write_bytes(b"x")
    with pytest.raises(ClusterError) as err:
        store.put("b.tbk", source)
    assert not isinstance(err.value, TransientError)
    assert "account key" in err.value.message
    assert wrong not in err.value.message and ACCOUNT_KEY not in err.value.message
