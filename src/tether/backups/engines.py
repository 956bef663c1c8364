"""Which backup engine handles which kind of instance, behind one interface for the worker.

Each engine module (`tether.backups.postgres`, …) knows one kind of server; this module adapts
each to `BackupEngine`, the only thing `tether.engine.backups` calls: dump an instance into a
sealed file (and summarise exactly what was dumped), restore a sealed or a plain file into an
instance, summarise an instance, and say how a restored summary differs from a recorded one.
A file restores only into an instance whose engine reads its `format`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from tether.backups.sealed import SealedInfo
from tether.errors import UserError
from tether.lifecycle import State
from tether.providers.base import ClusterSpec, ResourceNames

#: the states in which an instance has credentials and data to back up or restore into
HAS_DATA = (State.PENDING_ATTACHMENT.value, State.ATTACHED.value,
            State.PENDING_DETACHMENT.value, State.DETACHED.value)


class BackupsUnsupported(UserError):
    """A kind of instance Tether cannot back up (yet)."""

    code = "backups_unsupported"


class BackupEngine(Protocol):
    #: the format of its files, recorded with each one
    format: str
    #: what `tether backup upload` accepts, in words
    upload_accepts: str

    def dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
             dest: Path, box: Any) -> tuple[SealedInfo, dict[str, Any]]:
        """Back the instance up into the new sealed file `dest`; return what `write_sealed`
        recorded and the summary of exactly the data backed up."""
        ...

    def restore(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, path: Path, key_sealed: str, box: Any,
                sha256: str) -> None: ...

    def check_plain(self, head: bytes) -> None:
        """Refuse (UserError) a file made elsewhere, by its first bytes (at least 512, unless
        the file is shorter), that this engine cannot restore."""
        ...

    def summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, like: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What `differences` compares. `like` is the recorded summary it will be compared
        with, for an engine with more than one way of summarising (PostgreSQL's checksums)."""
        ...

    def differences(self, recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
        """How a restore's summary differs from the recorded one, in words (empty: none)."""
        ...


class PostgresEngine:
    """`pg_dump -Fc` / `pg_restore` with the instance's own login (tether.backups.postgres)."""

    format = "pg_dump-custom"
    upload_accepts = "a PostgreSQL custom-format dump (`pg_dump -Fc`)"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @staticmethod
    def _target(credentials: Mapping[str, Any], names: ResourceNames) -> Any:
        from tether.backups.postgres import PgTarget

        return PgTarget.from_credentials(credentials, role=names.role)

    def dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
             dest: Path, box: Any) -> tuple[SealedInfo, dict[str, Any]]:
        from tether.backups.postgres import dump_sealed_with_summary

        info, found = dump_sealed_with_summary(self._target(credentials, names), dest, box)
        return info, dataclasses.asdict(found)

    def restore(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, path: Path, key_sealed: str, box: Any,
                sha256: str) -> None:
        from tether.backups.postgres import restore_sealed

        restore_sealed(self._target(credentials, names), path, key_sealed, box, sha256)

    def check_plain(self, head: bytes) -> None:
        from tether.backups.postgres import CUSTOM_MAGIC, NotACustomDump

        if not head.startswith(CUSTOM_MAGIC):
            raise NotACustomDump(
                "the file is not a PostgreSQL custom-format dump: make it with `pg_dump -Fc` "
                "(plain SQL, directory and tar formats are not accepted)")

    def summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, like: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from tether.backups.postgres import summary

        target = self._target(credentials, names)
        return dataclasses.asdict(summary(target.conninfo(with_password=True), like))

    def differences(self, recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
        out: list[str] = []
        want, got = recorded.get("tables", {}), found.get("tables", {})
        for name in sorted(set(want) | set(got)):
            if name not in got:
                out.append(f"table {name} is missing")
            elif name not in want:
                out.append(f"table {name} is not in the backup")
            elif want[name]["rows"] != got[name]["rows"]:
                out.append(f"table {name} has {got[name]['rows']} rows, the backup "
                           f"{want[name]['rows']}")
            elif want[name].get("method", "md5") != got[name].get("method", "md5"):
                out.append(f"the rows of table {name} could not be summarised as the "
                           f"backup's were ({want[name].get('method', 'md5')})")
            elif want[name]["checksum"] != got[name]["checksum"]:
                out.append(f"the rows of table {name} differ from the backup's")
        if [list(r) for r in recorded.get("relations", [])] != \
                [list(r) for r in found.get("relations", [])]:
            out.append("the tables, views, indexes or sequences differ from the backup's")
        # pg_dump reads sequences outside the snapshot: a restore may only be ahead
        for name, value in recorded.get("sequences", {}).items():
            now = found.get("sequences", {}).get(name)
            if value is not None and (now is None or now < value):
                out.append(f"sequence {name} is at {now}, the backup at {value}")
        if recorded.get("large_objects") != found.get("large_objects"):
            out.append("the number of large objects differs from the backup's")
        return out


#: the summary recorded for a backup of a service written to while it was backed up, by an
#: engine without a snapshot shared with its summary: a verification then checks that the file
#: restores, not its content
CHANGED_DURING_BACKUP = {"changed_during_backup": True}


class _SummedAround:
    """An engine whose summary cannot read the dump's snapshot: the instance is summarised
    before and after the dump; when the two agree, nothing changed meanwhile and that is the
    summary of the backup, else the backup records `CHANGED_DURING_BACKUP`."""

    format: str
    upload_accepts: str

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                 cluster: ClusterSpec) -> Any:
        raise NotImplementedError

    def _dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
              dest: Path, box: Any) -> SealedInfo:
        raise NotImplementedError

    def summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, like: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return _plain(self._summary(credentials, names, cluster))

    def dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
             dest: Path, box: Any) -> tuple[SealedInfo, dict[str, Any]]:
        before = self.summary(credentials, names, cluster)
        info = self._dump(credentials, names, cluster, dest, box)
        after = self.summary(credentials, names, cluster)
        return info, (before if before == after else dict(CHANGED_DURING_BACKUP))

    def differences(self, recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
        if recorded.get("changed_during_backup"):
            return []
        return [f"{key}: the restore differs from the backup" for key in
                sorted(set(recorded) | set(found)) if recorded.get(key) != found.get(key)]


def _plain(summary: Any) -> dict[str, Any]:
    """A summary dataclass as JSON-able data (tuples as lists, as the store gives them back)."""
    import json

    data = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else summary
    return dict(json.loads(json.dumps(data, sort_keys=True, default=str)))


class MySQLEngine(_SummedAround):
    """`mariadb-dump --single-transaction` in, the dump's statements checked and run by Tether
    out (tether.backups.mysql), with the instance's own login."""

    format = "mysql-sql-v1"
    upload_accepts = "a plain SQL dump (`mysqldump` or `mariadb-dump`, uncompressed)"

    @staticmethod
    def _target(credentials: Mapping[str, Any]) -> Any:
        from tether.backups.mysql import MySQLTarget

        return MySQLTarget.from_credentials(credentials)

    @staticmethod
    def _reader(names: ResourceNames, cluster: ClusterSpec) -> Any:
        """The admin, to read the routines an earlier login made (after a rotation only)."""
        if not names.rotation:
            return None
        from urllib.parse import unquote, urlsplit

        from tether.backups.mysql import MySQLTarget

        url = urlsplit(cluster.url)
        return MySQLTarget(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                           user=unquote(url.username or ""),
                           password=unquote(url.password or ""), database=names.database)

    def _summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                 cluster: ClusterSpec) -> Any:
        from tether.backups.mysql import summary

        return summary(self._target(credentials), self._reader(names, cluster))

    def _dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
              dest: Path, box: Any) -> SealedInfo:
        from tether.backups.mysql import dump_sealed

        return dump_sealed(self._target(credentials), dest, box, self._reader(names, cluster))

    def restore(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, path: Path, key_sealed: str, box: Any,
                sha256: str) -> None:
        from tether.backups.mysql import restore_sealed

        restore_sealed(self._target(credentials), path, key_sealed, box, sha256)

    def check_plain(self, head: bytes) -> None:
        from tether.backups.mysql import NotAMySQLDump

        if head.startswith((b"TETHERBK", b"PGDMP", b"\x1f\x8b", b"PK\x03\x04")) or \
                b"\0" in head:
            raise NotAMySQLDump("the file is not a SQL dump: upload the plain SQL file that "
                                "`mysqldump`/`mariadb-dump` writes (uncompressed)")


class RabbitEngine(_SummedAround):
    """A vhost's definitions (exchanges, queues, bindings, policies; not messages), read and
    imported with the cluster's admin (tether.backups.rabbitmq)."""

    format = "rabbitmq-definitions-1"
    upload_accepts = "a Tether RabbitMQ definitions backup"

    @staticmethod
    def _parts(credentials: Mapping[str, Any], cluster: ClusterSpec) -> tuple[Any, Any]:
        from tether.backups.rabbitmq import RabbitAdmin, RabbitTarget

        return RabbitTarget.from_credentials(credentials), RabbitAdmin.from_cluster(cluster)

    def _summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                 cluster: ClusterSpec) -> Any:
        from tether.backups.rabbitmq import summary

        return summary(*self._parts(credentials, cluster))

    def _dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
              dest: Path, box: Any) -> SealedInfo:
        from tether.backups.rabbitmq import dump_sealed

        target, admin = self._parts(credentials, cluster)
        return dump_sealed(target, dest, box, admin)

    def restore(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, path: Path, key_sealed: str, box: Any,
                sha256: str) -> None:
        from tether.backups.rabbitmq import restore_sealed

        target, admin = self._parts(credentials, cluster)
        restore_sealed(target, path, key_sealed, box, sha256, admin)

    def check_plain(self, head: bytes) -> None:
        if not head.lstrip().startswith(b"{"):
            raise UserError("the file is not a RabbitMQ definitions backup (JSON): upload a "
                            "file made by `tether backup download`")


class SearchEngine(_SummedAround):
    """An instance's indices as NDJSON (settings, mappings, documents) with its own
    credentials (tether.backups.search)."""

    format = "search-ndjson-1"
    upload_accepts = "a Tether search backup (NDJSON)"

    @staticmethod
    def _target(credentials: Mapping[str, Any], cluster: ClusterSpec) -> Any:
        """The instance's login and prefix at the address of the cluster URL: the credentials
        hold where applications reach the cluster (`public_host`… settings, e.g. a proxy),
        which Tether may not reach."""
        from tether.backups.search import SearchTarget
        from tether.providers.elasticsearch import _Target

        return dataclasses.replace(SearchTarget.from_credentials(credentials),
                                   base=_Target.of(cluster).base)

    def _summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                 cluster: ClusterSpec) -> Any:
        from tether.backups.search import summary

        return summary(self._target(credentials, cluster))

    def _dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
              dest: Path, box: Any) -> SealedInfo:
        from tether.backups.search import dump_sealed

        return dump_sealed(self._target(credentials, cluster), dest, box)

    def restore(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, path: Path, key_sealed: str, box: Any,
                sha256: str) -> None:
        from tether.backups.search import restore_sealed

        restore_sealed(self._target(credentials, cluster), path, key_sealed, box, sha256)

    def check_plain(self, head: bytes) -> None:
        if not head.lstrip().startswith(b"{"):
            raise UserError("the file is not a search backup (NDJSON): upload a file made by "
                            "`tether backup download`")


class MediaEngine:
    """Every object with its content type, as one tar with a manifest (tether.backups.media),
    with the instance's own credentials; the summary is the manifest's, of exactly what was
    backed up."""

    format = "tether-media-tar-1"
    upload_accepts = "a Tether media archive (tar)"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _target(self, credentials: Mapping[str, Any], cluster: ClusterSpec) -> Any:
        from tether.backups.media import target_from_credentials
        from tether.providers.registry import provider_class

        where = provider_class(self.kind).admin_endpoint(cluster)
        endpoint, api_version = where if where is not None else (None, None)
        return target_from_credentials(self.kind, credentials, endpoint, api_version)

    def dump(self, credentials: Mapping[str, Any], names: ResourceNames, cluster: ClusterSpec,
             dest: Path, box: Any) -> tuple[SealedInfo, dict[str, Any]]:
        from tether.backups.media import dump_sealed_with_summary

        info, found = dump_sealed_with_summary(self._target(credentials, cluster), dest, box)
        return info, _plain(found)

    def restore(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, path: Path, key_sealed: str, box: Any,
                sha256: str) -> None:
        from tether.backups.media import restore_sealed

        restore_sealed(self._target(credentials, cluster), path, key_sealed, box, sha256)

    def check_plain(self, head: bytes) -> None:
        if head[257:262] != b"ustar":  # every tar member header holds its magic there
            raise UserError("the file is not a media archive (tar): upload a file made by "
                            "`tether backup download`")

    def summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec, like: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from tether.backups.media import summary

        return _plain(summary(self._target(credentials, cluster)))

    def differences(self, recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
        out = []
        if recorded.get("objects") != found.get("objects"):
            out.append(f"{found.get('objects')} objects, the backup {recorded.get('objects')}")
        if recorded.get("checksum") != found.get("checksum"):
            out.append("the objects' contents or content types differ from the backup's")
        return out


_ENGINES: dict[str, BackupEngine] = {}


def supported_kinds() -> list[str]:
    """The kinds whose provider declares a backup engine."""
    from tether.providers.registry import kinds, provider_class

    found = []
    for kind in kinds():
        try:
            if provider_class(kind).backup_engine is not None:
                found.append(kind)
        except UserError:  # a kind disabled here (its client library missing)
            continue
    return sorted(found)


def engine_for(kind: str) -> BackupEngine:
    """The backup engine of a kind's instances, as its provider declares it
    (`ProviderBase.backup_engine`)."""
    engine = _ENGINES.get(kind)
    if engine is None:
        from tether.providers.registry import load, provider_class

        where = provider_class(kind).backup_engine
        if where is None:
            raise BackupsUnsupported(
                f"Tether cannot back up {kind} services yet: backups are supported for "
                f"{', '.join(supported_kinds())}")
        engine = _ENGINES[kind] = load(where)(kind)
    return engine
