"""Scheduled backups and their retention, run by every node's engine.

Each environment may have a schedule (`store.models.BackupSchedule`): a backup of every service
with data, every day at a set time (UTC), keeping the newest `keep_daily` days, `keep_weekly`
ISO weeks and `keep_monthly` months of scheduled backups (grandfather-father-son:
`tether.backups.sets.kept`); manual, copied and uploaded backups are never pruned. A scheduled
backup is verified (restored into a scratch copy and compared) when the environment's last
verified scheduled backup is older than `verify_every_days`.

`tick(now)` does one pass; the clock is an argument so tests need no sleeping. A day's backup is
claimed by a conditional update of `last_run_on` in the transaction that queues it, so with
several nodes ticking, each day's backup is queued once. A node that was down at the set time
queues it at its next tick that day (not for days it missed: one backup, not a burst)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from tether.backups import sets
from tether.engine.parts import EngineParts, reason_of
from tether.providers.registry import backup_storage_kinds
from tether.store.models import (
    Backup,
    BackupSchedule,
    Cluster,
    Environment,
    Operation,
    aware,
    utcnow,
)
from tether.store.records import UNFINISHED, audit, cluster_spec

log = logging.getLogger("tether.engine")

#: who the audit trail says asked for a scheduled backup
ACTOR = "schedule"
#: how often a node removes what interrupted uploads left in the backup storages
SWEEP_EVERY = timedelta(hours=1)


def configured_interval() -> float:
    """Seconds between passes (`TETHER_BACKUP_TICK`, default 30; 0 turns scheduling off)."""
    try:
        return max(0.0, float(os.environ.get("TETHER_BACKUP_TICK", "30")))
    except ValueError:
        return 30.0


class Scheduler:
    def __init__(self, parts: EngineParts,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.parts = parts
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._swept_at: datetime | None = None

    def start(self, interval: float, notify: Callable[[], None] | None = None) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    if self.tick() and notify is not None:
                        notify()
                except Exception as exc:  # the next pass tries again
                    log.warning("backup schedule pass failed: %s", reason_of(exc))

        self._thread = threading.Thread(target=loop, name="tether-backup-schedule",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def tick(self, now: datetime | None = None) -> list[int]:
        """Queue the backups that are due, then prune, and at most hourly remove what
        interrupted uploads left in the backup storages; the ids of the backups queued."""
        now = aware(now or self.clock())
        queued = self._queue_due(now)
        self.prune(now)
        if self._swept_at is None or now - self._swept_at >= SWEEP_EVERY:
            self._swept_at = now
            self.sweep_storages()
        return queued

    def sweep_storages(self) -> int:
        """`sweep_incomplete` on the backup storage of every storage cluster: the partial
        files, multipart uploads and uncommitted blobs a crash inside a put left (only those
        unchanged for a day, so no upload another node runs is cut off). Best effort."""
        from tether.backups.transfer import default_storage

        with self.parts.store.session() as s:
            specs = [cluster_spec(self.parts.box, c) for c in s.scalars(
                select(Cluster).where(Cluster.kind.in_(backup_storage_kinds()),
                                      Cluster.private.is_(False)))]
        removed = 0
        for spec in specs:
            try:
                removed += int(default_storage(spec, self.parts.box).sweep_incomplete())
            except Exception as exc:
                log.warning("sweeping the backup storage of cluster %s: %s", spec.id,
                            reason_of(exc))
        return removed

    def _queue_due(self, now: datetime) -> list[int]:
        today = now.date().isoformat()
        queued: list[int] = []
        with self.parts.store.session() as s:
            due = [sch.environment_id for sch in s.scalars(select(BackupSchedule))
                   if sch.at <= now.strftime("%H:%M") and sch.last_run_on != today]
        for env_id in due:
            with self.parts.store.session() as s:
                claimed = s.execute(update(BackupSchedule).where(
                    BackupSchedule.environment_id == env_id,
                    or_(BackupSchedule.last_run_on.is_(None),
                        BackupSchedule.last_run_on != today)).values(last_run_on=today))
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another node queued today's backup
                env = s.get(Environment, env_id)
                schedule = s.get(BackupSchedule, env_id)
                assert env is not None and schedule is not None
                instances = sets.backed_up_by_default(s, env)
                if not instances:
                    audit(s, ACTOR, "scheduled backup skipped", environment_id=env.id,
                          detail="no service with data to back up")
                    continue
                verify = self._verification_due(s, env.id, now, schedule.verify_every_days)
                try:
                    backup = sets.new_set(s, env, instances, "scheduled", ACTOR, now)
                except Exception as exc:  # e.g. no storage cluster: said in the history
                    audit(s, ACTOR, "scheduled backup skipped", environment_id=env.id,
                          detail=reason_of(exc))
                    continue
                sets.queue_backup(s, env, backup, ACTOR, verify)
                audit(s, ACTOR, "backup requested", environment_id=env.id,
                      detail=f"scheduled backup {backup.id} of "
                             f"{', '.join(i.prefix for i in instances)}"
                             + (", verified after" if verify else ""))
                queued.append(backup.id)
        return queued

    @staticmethod
    def _verification_due(s: object, env_id: int, now: datetime, every_days: int) -> bool:
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
        last = s.scalar(select(Backup.verified_at).where(
            Backup.environment_id == env_id, Backup.origin == "scheduled",
            Backup.verification.is_not(None)).order_by(Backup.verified_at.desc()).limit(1))
        return last is None or aware(last) <= now - timedelta(days=max(0, every_days))

    def prune(self, now: datetime) -> list[int]:
        """Delete the completed scheduled backups the retention no longer keeps (their files
        by a `delete-backup` operation); the ids deleted."""
        deleted: list[int] = []
        with self.parts.store.session() as s:
            for schedule in s.scalars(select(BackupSchedule)):
                done = s.scalars(select(Backup).where(
                    Backup.environment_id == schedule.environment_id,
                    Backup.origin == "scheduled", Backup.status == "completed")).all()
                keep = sets.kept([(b.id, aware(b.created_at)) for b in done],
                                 schedule.keep_daily, schedule.keep_weekly,
                                 schedule.keep_monthly)
                for backup in done:
                    if backup.id in keep:
                        continue
                    busy = s.scalar(select(Operation.id).where(
                        Operation.backup_id == backup.id,
                        Operation.status.in_(UNFINISHED)).limit(1))
                    if busy is not None:
                        continue
                    backup.status = "deleted"
                    backup.deleted_at = utcnow()
                    s.add(Operation(kind="delete-backup", environment_id=backup.environment_id,
                                    requested_by=ACTOR, backup_id=backup.id))
                    audit(s, ACTOR, "backup deleted", environment_id=backup.environment_id,
                          detail=f"scheduled backup {backup.id}: past its retention")
                    deleted.append(backup.id)
        return deleted
