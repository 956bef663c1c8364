"""Moving sealed backup files between the backup storage, a private staging dir under the data
dir, and their readers and writers: what the engine's operations and the API's downloads and
uploads share. Below the actions and the engine (it reads the store, never decides a state)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.backups.sealed import SealedInfo, partial_path, read_sealed, write_sealed
from tether.errors import OperationError
from tether.providers.base import ClusterSpec
from tether.store.db import Store
from tether.store.models import Backup, BackupFile, Cluster
from tether.store.records import cluster_spec

#: the backup storage on a cluster, given the secret box (which names this installation)
StorageFor = Callable[[ClusterSpec, Any], Any]


def default_storage(spec: ClusterSpec, box: Any) -> Any:
    from tether.backups.storage import backup_storage, install_id

    return backup_storage(spec, install_id(box))


def storage_key(backup_id: int, file_id: int) -> str:
    """Where a backup file lives in the backup storage: ids only, no names of users' things."""
    return f"sets/{int(backup_id)}/{int(file_id)}.tbk"


def staging_dir(data_dir: Path) -> Path:
    """A private dir for sealed files on their way to or from the storage."""
    path = Path(data_dir) / "backups" / "staging"
    path.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    path.chmod(0o700)
    return path


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)
    partial_path(path).unlink(missing_ok=True)


def storage_of(store: Store, box: Any, backup_id: int,
               storage_for: StorageFor = default_storage) -> Any:
    """The backup storage that holds (or will hold) a set's files, made if missing."""
    with store.session() as s:
        backup = s.get(Backup, backup_id)
        assert backup is not None
        cluster = (s.get(Cluster, backup.storage_cluster_id)
                   if backup.storage_cluster_id else None)
        if cluster is None:
            raise OperationError(f"the storage cluster of backup {backup_id} is gone: its "
                                 "files cannot be reached")
        spec = cluster_spec(box, cluster)
    target = storage_for(spec, box)
    target.ensure()
    return target


@dataclass(frozen=True)
class StoredFile:
    """A stored backup file's record, read out of its session."""

    id: int
    backup_id: int
    prefix: str
    kind: str
    format: str
    size: int
    storage_key: str
    key_sealed: str
    sha256: str


def stored_file(store: Store, file_id: int) -> StoredFile:
    with store.session() as s:
        f = s.get(BackupFile, file_id)
        assert f is not None
        if f.status != "stored" or not f.storage_key or not f.key_sealed or not f.sha256:
            raise OperationError(f"the backup file of {f.prefix} is {f.status}: it cannot be "
                                 "read")
        return StoredFile(f.id, f.backup_id, f.prefix, f.kind, f.format, f.size,
                          f.storage_key, f.key_sealed, f.sha256)


def fetch(store: Store, box: Any, data_dir: Path, file_id: int, name: str,
          storage_for: StorageFor = default_storage) -> tuple[Path, StoredFile]:
    """A stored file copied into staging as `name` (the caller `clear`s it), and its record."""
    record = stored_file(store, file_id)
    staged = staging_dir(data_dir) / name
    clear(staged)
    storage_of(store, box, record.backup_id, storage_for).get(record.storage_key, staged)
    return staged, record


def plain_chunks(store: Store, box: Any, data_dir: Path, file_id: int, name: str,
                 storage_for: StorageFor = default_storage) -> Generator[bytes, None, None]:
    """A stored file's content as it was dumped (e.g. a `pg_dump -Fc` archive), checked against
    its checksum before the first byte is given; the staging copy goes when the stream ends or
    is closed."""
    staged, record = fetch(store, box, data_dir, file_id, name, storage_for)
    try:
        chunks = read_sealed(staged, record.key_sealed, box, record.sha256)
        try:
            yield from chunks
        finally:
            chunks.close()
    finally:
        clear(staged)


def seal_into_staging(data_dir: Path, box: Any, chunks: Iterable[bytes],
                      name: str) -> tuple[Path, SealedInfo]:
    """Seal a stream (an uploaded dump) into staging as `name`; no plaintext touches disk."""
    staged = staging_dir(data_dir) / name
    clear(staged)
    return staged, write_sealed(staged, chunks, box)
