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
        """Refuse (UserError) a file made elsewhere, by its first bytes, that this engine
        cannot restore."""
        ...

    def summary(self, credentials: Mapping[str, Any], names: ResourceNames,
                cluster: ClusterSpec) -> dict[str, Any]: ...

    def differences(self, recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
        """How a restore's summary differs from the recorded one, in words (empty: none)."""
        ...


class PostgresEngine:
    """`pg_dump -Fc` / `pg_restore` with the instance's own login (tether.backups.postgres)."""

    format = "pg_dump-custom"
    upload_accepts = "a PostgreSQL custom-format dump (`pg_dump -Fc`)"

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
                cluster: ClusterSpec) -> dict[str, Any]:
        from tether.backups.postgres import summary

        target = self._target(credentials, names)
        return dataclasses.asdict(summary(target.conninfo(with_password=True)))

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


_ENGINES: dict[str, BackupEngine] = {"postgres": PostgresEngine()}


def supported_kinds() -> list[str]:
    return sorted(_ENGINES)


def engine_for(kind: str) -> BackupEngine:
    engine = _ENGINES.get(kind)
    if engine is None:
        raise BackupsUnsupported(
            f"Tether cannot back up {kind} services yet: backups are supported for "
            f"{', '.join(supported_kinds())}")
    return engine
