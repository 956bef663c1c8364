"""Backup, restore, copy, verify and delete backups, as operations of the worker.

A backup set (`store.models.Backup`) is made by one `backup` operation of its environment: for
each of its files, the instance is dumped into a sealed file in a private staging dir under the
data dir (`tether.backups.sealed`: encrypted with a key of its own, checksummed), the file is put
into the storage cluster the set names (`tether.backups.storage`: the key exists only once
complete), and only then is the file recorded (`stored`, with its checksums, its sealed key and
the summary of what it holds). The set becomes `completed`, the only status listed as restorable,
once every file is recorded. Every step is keyed by ids, so an operation a crash interrupted is
run again and converges: a file not yet recorded is dumped again over its staging file and put
again under the same key. An operation that fails for good marks its set `failed` and deletes the
files it stored.

A restore (`restore` operation of the *target* environment, so it never runs beside a deployment
or a removal there) fetches the file into staging, where `read_sealed` checks its checksum and key
before the engine's restore program sees a byte, and replaces the instance's data (what
"replaces" means per engine: `tether.backups.engines`). A copy is a backup of the source instance
and a restore into the target in one operation (Divio's "copy data between environments",
Heroku's `pg:copy`). A verification restores every file of a set into a scratch database made
for it on the cluster of the instance it was taken from, compares the scratch's summary with the
recorded one, records the result, and removes the scratch.

Crash points for the crash tests: `backup.dumped`, `backup.stored`, `restore.fetched`."""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from tether.backups import transfer
from tether.backups.engines import HAS_DATA, engine_for
from tether.backups.transfer import StorageFor, StoredFile, clear, storage_key
from tether.engine.parts import EngineParts, before, reason_of
from tether.errors import OperationError, TetherError, TransientError
from tether.faults import crash_point
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.registry import get_provider
from tether.redact import redact
from tether.store.models import Backup, BackupFile, Cluster, Instance, Operation, utcnow
from tether.store.records import audit, cluster_spec

log = logging.getLogger("tether.engine")


def scratch_names(file_id: int) -> ResourceNames:
    """The scratch resources a verification restores a file into: `tether_v<file id>`, a name
    no instance (`tether_i<id>`) ever has."""
    return ResourceNames(base=f"tether_v{int(file_id)}")


def mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class _Source:
    """What dumping one file needs, read from the store in one session."""

    file_id: int
    prefix: str
    kind: str
    credentials: dict[str, Any]
    names: ResourceNames
    cluster: ClusterSpec


class Backups:
    def __init__(self, parts: EngineParts,
                 storage_for: StorageFor = transfer.default_storage) -> None:
        self.parts = parts
        self._storage_for = storage_for

    @property
    def staging(self) -> Path:
        return transfer.staging_dir(self.parts.data_dir)

    def storage(self, backup_id: int) -> Any:
        return transfer.storage_of(self.parts.store, self.parts.box, backup_id,
                                   self._storage_for)

    def _progress(self, op_id: int, text: str) -> None:
        with self.parts.store.session() as s:
            s.execute(update(Operation).where(Operation.id == op_id).values(progress=text))

    # -- backup ---------------------------------------------------------------------------------

    def run_backup(self, op: Operation) -> str:
        """The `backup` operation: make every file of its set (see the module doc)."""
        assert op.backup_id is not None
        try:
            message = self.make_set(op.id, op.backup_id, op.requested_by)
            if (op.params or {}).get("verify"):
                message += "; " + self.verify_set(op.id, op.backup_id, op.requested_by)
            return message
        except Exception as exc:
            self._fail_or_retry(op, exc, "backing up")
            raise  # not reached: _fail_or_retry raises

    def make_set(self, op_id: int, backup_id: int, actor: str) -> str:
        with self.parts.store.session() as s:
            backup = s.get(Backup, backup_id)
            assert backup is not None
            if backup.status == "completed":
                return f"backup {backup_id} is complete"
            if backup.status != "running":
                raise OperationError(f"backup {backup_id} is {backup.status}")
            pending = [f.id for f in backup.files if f.status != "stored"]
        store = self.storage(backup_id)
        for file_id in pending:
            self._store_file(op_id, backup_id, file_id, store)
        with self.parts.store.session() as s:
            backup = s.get(Backup, backup_id)
            assert backup is not None
            backup.status = "completed"
            backup.size = sum(f.size for f in backup.files)
            backup.finished_at = utcnow()
            backup.error = None
            names = ", ".join(f.prefix for f in backup.files)
            audit(s, actor, "backup completed", environment_id=backup.environment_id,
                  detail=f"backup {backup_id} of {names}: {mib(backup.size)}")
            return f"backup {backup_id} of {names} is complete ({mib(backup.size)})"

    def _source(self, file_id: int) -> _Source:
        with self.parts.store.session() as s:
            f = s.get(BackupFile, file_id)
            assert f is not None
            inst = s.get(Instance, f.instance_id) if f.instance_id else None
            if inst is None or inst.state not in HAS_DATA or not inst.credentials_enc:
                state = inst.state if inst is not None else "gone"
                raise OperationError(f"{f.prefix} cannot be backed up: it is {state}, "
                                     "with no data to back up")
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            if cluster is None:
                raise OperationError(f"{f.prefix} has no cluster recorded")
            from tether.engine.rotation import names_of

            return _Source(file_id, f.prefix, inst.kind,
                           dict(self.parts.box.open(inst.credentials_enc)), names_of(inst),
                           cluster_spec(self.parts.box, cluster))

    def _store_file(self, op_id: int, backup_id: int, file_id: int, store: Any) -> None:
        src = self._source(file_id)
        engine = engine_for(src.kind)
        staged = self.staging / f"backup-{file_id}.tbk"
        clear(staged)
        try:
            self._progress(op_id, f"{src.prefix}: dumping")
            info, summary = engine.dump(src.credentials, src.names, src.cluster, staged,
                                        self.parts.box)
            crash_point("backup.dumped")
            self._progress(op_id, f"{src.prefix}: storing {mib(info.size)}")
            key = storage_key(backup_id, file_id)
            store.put(key, staged)
            crash_point("backup.stored")
            with self.parts.store.session() as s:
                f = s.get(BackupFile, file_id)
                assert f is not None
                f.status = "stored"
                f.format = engine.format
                f.storage_key = key
                f.size = info.size
                f.sha256 = info.sha256
                f.plain_sha256 = info.plain_sha256
                f.key_sealed = info.key_sealed
                f.summary = summary
        finally:
            clear(staged)

    def _fail_or_retry(self, op: Operation, exc: Exception, doing: str) -> None:
        """An error that may pass is retried until the operation's deadline; any other ends
        the set: `failed`, with its stored files deleted (best effort: a file left behind is
        unlisted and unreadable without its key, which goes with the record)."""
        reason = reason_of(exc)
        if isinstance(exc, TransientError) and before(op.deadline):
            raise TransientError(f"{doing}: {reason}") from None
        assert op.backup_id is not None
        self.fail_set(op.backup_id, op.requested_by, reason)
        raise OperationError(f"{doing} failed: {reason}") from None

    def fail_set(self, backup_id: int, actor: str, reason: str) -> None:
        with self.parts.store.session() as s:
            backup = s.get(Backup, backup_id)
            if backup is None or backup.status != "running":
                return
            backup.status = "failed"
            backup.error = reason
            backup.finished_at = utcnow()
            audit(s, actor, "backup failed", environment_id=backup.environment_id,
                  detail=f"backup {backup_id}: {reason}")
        try:
            self.delete_files(backup_id)
        except Exception:  # the storage is unreachable: the files stay, unreadable for good
            with self.parts.store.session() as s:
                for f in s.scalars(select(BackupFile).where(BackupFile.backup_id == backup_id)):
                    f.key_sealed = None

    def delete_files(self, backup_id: int) -> int:
        """Delete a set's files from storage (idempotent); the records lose their keys."""
        with self.parts.store.session() as s:
            backup = s.get(Backup, backup_id)
            assert backup is not None
            keys = [(f.id, f.storage_key or storage_key(backup_id, f.id)) for f in backup.files]
        if not keys:
            return 0
        try:
            store = self.storage(backup_id)
            for _, key in keys:
                store.delete(key)
        except Exception as exc:
            log.warning("deleting the files of backup %s: %s", backup_id, reason_of(exc))
            raise
        with self.parts.store.session() as s:
            for file_id, _ in keys:
                f = s.get(BackupFile, file_id)
                if f is not None:
                    f.key_sealed = None
                    f.status = "deleted"
        return len(keys)

    def run_delete(self, op: Operation) -> str:
        """The `delete-backup` operation: the set was marked `deleted` by the action (never
        listed or restored again); its files go now."""
        assert op.backup_id is not None
        try:
            count = self.delete_files(op.backup_id)
        except Exception as exc:
            if isinstance(exc, TransientError) and before(op.deadline):
                raise TransientError(f"deleting backup {op.backup_id}: {reason_of(exc)}") \
                    from None
            raise
        return f"backup {op.backup_id} is deleted ({count} file(s))"

    # -- restore --------------------------------------------------------------------------------

    def _fetch(self, op_id: int, file_id: int) -> tuple[Path, StoredFile]:
        """The stored file, in staging (the caller clears it), and its record."""
        record = transfer.stored_file(self.parts.store, file_id)
        self._progress(op_id, f"{record.prefix}: fetching {mib(record.size)}")
        staged, record = transfer.fetch(self.parts.store, self.parts.box, self.parts.data_dir,
                                        file_id, f"restore-{op_id}-{file_id}.tbk",
                                        self._storage_for)
        crash_point("restore.fetched")
        return staged, record

    def _target(self, instance_id: int, fmt: str) -> tuple[_Source, Instance]:
        with self.parts.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            s.expunge(inst)
            if inst.state not in HAS_DATA or not inst.credentials_enc:
                raise OperationError(f"{inst.prefix} cannot be restored into: it is "
                                     f"{inst.state}; provision it first")
            engine = engine_for(inst.kind)
            if engine.format != fmt:
                raise OperationError(f"a {fmt} backup cannot be restored into {inst.prefix}, "
                                     f"a {inst.kind} service ({engine.format})")
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            assert cluster is not None
            from tether.engine.rotation import names_of

            return _Source(0, inst.prefix, inst.kind,
                           dict(self.parts.box.open(inst.credentials_enc)), names_of(inst),
                           cluster_spec(self.parts.box, cluster)), inst

    def restore_file(self, op_id: int, file_id: int, instance_id: int, actor: str) -> str:
        staged, f = self._fetch(op_id, file_id)
        try:
            target, inst = self._target(instance_id, f.format)
            self._progress(op_id, f"{target.prefix}: restoring {mib(f.size)}")
            engine_for(target.kind).restore(target.credentials, target.names, target.cluster,
                                            staged, f.key_sealed, self.parts.box, f.sha256)
        finally:
            clear(staged)
        with self.parts.store.session() as s:
            live = s.get(Instance, instance_id)
            assert live is not None
            audit(s, actor, "restored", instance=live,
                  detail=f"data replaced by backup {f.backup_id} of {f.prefix}")
        return f"{inst.prefix} now holds the data of backup {f.backup_id} ({f.prefix})"

    def run_restore(self, op: Operation) -> str:
        """The `restore` operation: `params.file_id` into the operation's instance."""
        assert op.instance_id is not None
        try:
            return self.restore_file(op.id, int((op.params or {})["file_id"]), op.instance_id,
                                     op.requested_by)
        except Exception as exc:
            reason = reason_of(exc)
            if isinstance(exc, TransientError) and before(op.deadline):
                raise TransientError(f"restoring: {reason}") from None
            raise OperationError(f"restoring failed: {reason}") from None

    def run_copy(self, op: Operation) -> str:
        """The `copy` operation: a backup of the source instance (its set was made with the
        operation, origin `copy`) restored into the operation's instance."""
        assert op.instance_id is not None and op.backup_id is not None
        try:
            self.make_set(op.id, op.backup_id, op.requested_by)
            with self.parts.store.session() as s:
                backup = s.get(Backup, op.backup_id)
                assert backup is not None
                file_id = backup.files[0].id
            return self.restore_file(op.id, file_id, op.instance_id, op.requested_by)
        except Exception as exc:
            self._fail_or_retry(op, exc, "copying")
            raise

    # -- verify ---------------------------------------------------------------------------------

    def run_verify(self, op: Operation) -> str:
        assert op.backup_id is not None
        try:
            return self.verify_set(op.id, op.backup_id, op.requested_by)
        except Exception as exc:
            if isinstance(exc, TransientError) and before(op.deadline):
                raise TransientError(f"verifying: {reason_of(exc)}") from None
            raise

    def verify_set(self, op_id: int, backup_id: int, actor: str) -> str:
        """Restore every file of the set into a scratch database on its instance's cluster,
        compare summaries, record the result, remove the scratch. A file that cannot be
        fetched, opened or restored fails the verification like a difference does."""
        with self.parts.store.session() as s:
            backup = s.get(Backup, backup_id)
            assert backup is not None
            if backup.status != "completed":
                raise OperationError(f"backup {backup_id} is {backup.status}: only a "
                                     "completed backup can be verified")
            files = [f.id for f in backup.files]
        problems: list[str] = []
        for file_id in files:
            problems += self._verify_file(op_id, file_id)
        passed = not problems
        detail = ("every file restored and matched its summary" if passed
                  else "; ".join(problems))
        with self.parts.store.session() as s:
            backup = s.get(Backup, backup_id)
            assert backup is not None
            backup.verification = "passed" if passed else "failed"
            backup.verified_at = utcnow()
            backup.verification_detail = detail[:4000]
            audit(s, actor, "backup verified" if passed else "backup verification failed",
                  environment_id=backup.environment_id, detail=f"backup {backup_id}: {detail}")
        if not passed:
            raise OperationError(f"backup {backup_id} failed its verification: {detail}")
        return f"backup {backup_id} verified: {detail}"

    def _verify_file(self, op_id: int, file_id: int) -> list[str]:
        with self.parts.store.session() as s:
            f = s.get(BackupFile, file_id)
            assert f is not None
            inst = s.get(Instance, f.instance_id) if f.instance_id else None
            cluster = s.get(Cluster, inst.cluster_id) if inst and inst.cluster_id else None
            if cluster is None:
                return [f"{f.prefix}: the cluster it was taken from is gone, so there is no "
                        "scratch to restore it into"]
            spec = cluster_spec(self.parts.box, cluster)
            kind, prefix, recorded = f.kind, f.prefix, dict(f.summary or {})
        staged, record = self._fetch(op_id, file_id)
        names = scratch_names(file_id)
        provider = get_provider(kind)
        engine = engine_for(kind)
        try:
            self._progress(op_id, f"{prefix}: restoring into a scratch copy to verify it")
            creds = provider.provision(spec, names, secrets.token_urlsafe(24)).values
            try:
                engine.restore(creds, names, spec, staged, record.key_sealed, self.parts.box,
                               record.sha256)
                found = engine.summary(creds, names, spec, like=recorded)
            except TetherError as exc:
                return [f"{prefix}: {redact(exc.message, [spec.url])}"]
            return [f"{prefix}: {d}" for d in engine.differences(recorded, found)]
        finally:
            clear(staged)
            with contextlib.suppress(Exception):
                provider.deprovision(spec, names)

    # -- leftovers ------------------------------------------------------------------------------

    def sweep_staging(self) -> None:
        """Remove staging files no running operation owns (a crash left them). Called before
        the worker starts: an operation still `running` under this node's own id is a leftover
        of its previous life (the crash itself), which owns nothing any more; it is run again
        and writes its staging file anew."""
        root = self.parts.data_dir / "backups" / "staging"
        if root.is_dir():
            with self.parts.store.session() as s:
                running = s.scalar(select(Operation.id).where(
                    Operation.kind.in_(("backup", "restore", "copy", "verify")),
                    Operation.status == "running",
                    Operation.claimed_by.is_distinct_from(self.parts.node_id)).limit(1))
            if running is None:
                shutil.rmtree(root, ignore_errors=True)
