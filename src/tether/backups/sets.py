"""Backup sets in the store, below the actions and the engine: where a project's backups go, a
new set with its pending files and its operation, which instances an environment backs up, and
which scheduled backups retention keeps."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.backups.engines import HAS_DATA, BackupsUnsupported, engine_for
from tether.errors import UserError
from tether.providers.registry import backup_storage_kinds
from tether.store.models import (
    Backup,
    BackupFile,
    Cluster,
    Environment,
    Instance,
    Operation,
    Project,
)


def storage_cluster(s: Session, region: str) -> Cluster:
    """Where a project's backups go: a shared storage cluster of its region (the kinds whose
    provider declares `backup_storage`, by its rank: S3 or Azure Blob before local files; the
    oldest first)."""
    kinds = backup_storage_kinds()
    found = s.scalars(select(Cluster).where(
        Cluster.region == region, Cluster.kind.in_(kinds),
        Cluster.private.is_(False), Cluster.owner_instance_id.is_(None))).all()
    if not found:
        raise UserError(f"region {region} has no storage cluster to keep backups on: register "
                        f"one with `tether cluster add s3 --region {region} --url …` (or "
                        "azure-blob, local-files)")
    return min(found, key=lambda c: (kinds.index(c.kind), c.id))


def backed_up_by_default(s: Session, env: Environment) -> list[Instance]:
    """The instances a backup of the whole environment takes: those with data whose kind can
    be backed up, by prefix."""
    chosen = []
    for inst in s.scalars(select(Instance).where(
            Instance.environment_id == env.id, Instance.state.in_(HAS_DATA),
            Instance.credentials_enc.is_not(None)).order_by(Instance.prefix)):
        try:
            engine_for(inst.kind)
        except BackupsUnsupported:
            continue
        chosen.append(inst)
    return chosen


def new_set(s: Session, env: Environment, instances: Iterable[Instance], origin: str,
            actor: str, created_at: datetime | None = None) -> Backup:
    """A `running` set with one pending file per instance (flushed: it has its ids).
    `created_at`: the moment it is of (a scheduled backup: its scheduler's clock, which
    retention reads); default now."""
    project = s.get(Project, env.project_id)
    assert project is not None
    backup = Backup(environment_id=env.id, origin=origin, status="running",
                    storage_cluster_id=storage_cluster(s, project.region).id,
                    requested_by=actor, size=0,
                    **({"created_at": created_at} if created_at is not None else {}))
    s.add(backup)
    s.flush()
    for inst in instances:
        s.add(BackupFile(backup_id=backup.id, instance_id=inst.id, prefix=inst.prefix,
                         kind=inst.kind, service=inst.service,
                         format=engine_for(inst.kind).format, status="pending", size=0))
    s.flush()
    return backup


def queue_backup(s: Session, env: Environment, backup: Backup, actor: str,
                 verify: bool = False) -> Operation:
    op = Operation(kind="backup", environment_id=env.id, requested_by=actor,
                   backup_id=backup.id, params={"verify": True} if verify else None)
    s.add(op)
    s.flush()
    return op


def kept(backups: Iterable[tuple[int, datetime]], daily: int, weekly: int,
         monthly: int) -> set[int]:
    """Which backups a retention of `daily` days, `weekly` weeks and `monthly` months keeps
    (grandfather-father-son): the newest backup of each of the newest `daily` days that have
    one, of each of the newest `weekly` ISO weeks, and of each of the newest `monthly` months.
    A backup may count for several; the rest go."""
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    keep: set[int] = set()

    def newest_per(bucket: Callable[[date], Hashable], count: int) -> None:
        seen: list[Hashable] = []
        for backup_id, at in ordered:
            key = bucket(at.date())
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep.add(backup_id)

    newest_per(lambda d: d, daily)
    newest_per(lambda d: d.isocalendar()[:2], weekly)
    newest_per(lambda d: (d.year, d.month), monthly)
    return keep
