"""Backups: create, list, show, delete, restore, copy between environments, upload a dump made
elsewhere, download, verify.

Each action checks what can be checked at once (the instances exist and have data, their kind can
be backed up, a restore's target reads the backup's format, the typed confirmation) and records
the backup set with its operation in one transaction; the engine (`tether.engine.backups`) does
the work. Only `completed` sets are listed as restorable."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tether.access import Need
from tether.actions.common import (
    Context,
    audit,
    find_environment,
    get_environment,
    get_project,
    iso,
    live_instance,
    operation_view,
    queue_operation,
)
from tether.backups import sets, transfer
from tether.backups.engines import HAS_DATA, BackupEngine, engine_for
from tether.errors import Conflict, NotFound, UserError
from tether.paging import ALL, Page, PageArgs, keyset
from tether.store.models import (
    Backup,
    BackupFile,
    BackupSchedule,
    Environment,
    Instance,
    Operation,
    utcnow,
)
from tether.store.records import UNFINISHED


def _env(s: Session, ctx: Context, project: str | None, env: str, need: Need) -> Environment:
    return find_environment(s, ctx, project, env, need)


def _has_data(inst: Instance, env: Environment) -> None:
    if inst.state not in HAS_DATA or not inst.credentials_enc:
        raise UserError(f"{inst.prefix} in {env.name} is {inst.state}: it has no data yet; "
                        f"provision it first (`tether service provision {env.name} "
                        f"{inst.prefix}`)")


def _instance(s: Session, env: Environment, prefix: str) -> Instance:
    inst = live_instance(s, env, prefix)
    if inst is None:
        raise NotFound(f"{env.name} has no service with prefix {prefix}: see "
                       f"`tether service list {env.name}`")
    return inst


def _backup(s: Session, ctx: Context, backup_id: int, need: Need) -> tuple[Backup, Environment]:
    backup = s.get(Backup, backup_id)
    env = s.get(Environment, backup.environment_id) if backup is not None else None
    if backup is None or env is None or backup.status == "deleted" or \
            not ctx.principal.sees(env.project.name):
        raise NotFound(f"no backup {backup_id}: see `tether backup list`")
    ctx.require(need, env.project.name)
    return backup, env


def _new_set(s: Session, ctx: Context, env: Environment, instances: list[Instance],
             origin: str) -> Backup:
    return sets.new_set(s, env, instances, origin, ctx.actor)


def backup_view(s: Session, backup: Backup, operation: Operation | None = None,
                looked_up: bool = False) -> dict[str, object]:
    """A backup with its files and its unfinished operation (`operation`; looked up unless
    `looked_up` says the caller did, as a list does for all its backups at once)."""
    env = s.get(Environment, backup.environment_id)
    assert env is not None
    if operation is None and not looked_up:
        operation = s.scalar(select(Operation).where(
            Operation.backup_id == backup.id, Operation.status.in_(UNFINISHED))
            .order_by(Operation.id.desc()).limit(1))
    return {
        "id": backup.id,
        "project": env.project.name,
        "environment": env.name,
        "origin": backup.origin,
        "status": backup.status,
        "restorable": backup.status == "completed",
        "size": backup.size,
        "requested_by": backup.requested_by,
        "created_at": iso(backup.created_at),
        "finished_at": iso(backup.finished_at),
        "error": backup.error,
        "verification": backup.verification,
        "verified_at": iso(backup.verified_at),
        "verification_detail": backup.verification_detail,
        "files": [{"prefix": f.prefix, "service": f.service, "kind": f.kind,
                   "format": f.format, "status": f.status, "size": f.size,
                   "sha256": f.sha256} for f in backup.files],
        "operation": operation_view(operation) if operation is not None else None,
    }


# -- create, list, show, delete ------------------------------------------------------------------


def create(ctx: Context, project: str | None, env_name: str, prefixes: list[str] | None = None,
           verify: bool = False) -> dict[str, object]:
    """Back up the named instances of an environment (all that have data and can be backed up
    when none is named) as one set."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.CHANGE)
        if prefixes:
            chosen = []
            for prefix in dict.fromkeys(prefixes):
                inst = _instance(s, env, prefix)
                _has_data(inst, env)
                engine_for(inst.kind)  # refuses a kind that cannot be backed up
                chosen.append(inst)
        else:
            chosen = sets.backed_up_by_default(s, env)
            if not chosen:
                raise UserError(f"{env.name} has no provisioned service that can be backed "
                                f"up: see `tether service list {env.name}`")
        backup = _new_set(s, ctx, env, chosen, "manual")
        op = sets.queue_backup(s, env, backup, ctx.actor, verify)
        audit(s, ctx.actor, "backup requested", environment_id=env.id,
              detail=f"backup {backup.id} of {', '.join(i.prefix for i in chosen)}")
        view = backup_view(s, backup, op)
    ctx.notify()
    return view


def list_backups(ctx: Context, project: str | None, env_name: str | None = None,
                 include_all: bool = False, page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The project's restorable backups, newest first (a page of them); with `include_all`,
    also the running and failed ones. A page costs the same few queries however long: the
    files and unfinished operations of its backups are read at once."""
    with ctx.store.session() as s:
        proj = get_project(s, project, ctx, Need.READ)
        envs = ([get_environment(s, proj, env_name)] if env_name else proj.environments)
        q = (select(Backup).where(Backup.environment_id.in_([e.id for e in envs]))
             .options(selectinload(Backup.files)))
        q = q.where(Backup.status != "deleted") if include_all else \
            q.where(Backup.status == "completed")
        rows, after = keyset(s, q, Backup.id, page, descending=True)
        return Page(_views(s, rows), after)


def _views(s: Session, rows: list[Backup]) -> list[dict[str, object]]:
    """The views of a page of backups, their unfinished operations read at once."""
    running: dict[int, Operation] = {}
    if rows:
        for op in s.scalars(select(Operation).where(
                Operation.backup_id.in_([b.id for b in rows]),
                Operation.status.in_(UNFINISHED)).order_by(Operation.id)):
            if op.backup_id is not None:  # the newest wins, as backup_view's own look-up
                running[op.backup_id] = op
    return [backup_view(s, b, running.get(b.id), looked_up=True) for b in rows]


def list_every_backup(ctx: Context, include_all: bool = False,
                      page: PageArgs = ALL) -> Page[dict[str, object]]:
    """Every project's backups, newest first (a page of them), for the operators' page: admin
    only. With `include_all`, the running and failed ones too. A page costs the same few queries
    however long: its environments and projects, files and unfinished operations read at once."""
    ctx.require(Need.ADMIN)
    with ctx.store.session() as s:
        q = select(Backup).options(selectinload(Backup.files))
        q = q.where(Backup.status != "deleted") if include_all else \
            q.where(Backup.status == "completed")
        rows, after = keyset(s, q, Backup.id, page, descending=True)
        # held while the views are made: backup_view finds them in the session, not the store
        envs = list(s.scalars(select(Environment).options(selectinload(Environment.project))
                              .where(Environment.id.in_({b.environment_id for b in rows}))))
        views = _views(s, rows)
        del envs
        return Page(views, after)


def show(ctx: Context, backup_id: int) -> dict[str, object]:
    with ctx.store.session() as s:
        backup, _ = _backup(s, ctx, backup_id, Need.READ)
        return backup_view(s, backup)


def delete(ctx: Context, backup_id: int) -> dict[str, object]:
    """Forget a backup at once (never listed or restored again) and delete its files."""
    with ctx.store.session() as s:
        backup, env = _backup(s, ctx, backup_id, Need.CHANGE)
        busy = s.scalar(select(Operation).where(Operation.backup_id == backup.id,
                                                Operation.status.in_(UNFINISHED)).limit(1))
        if busy is not None:
            raise Conflict(f"backup {backup_id} is used by {busy.kind} operation {busy.id} "
                           f"({busy.status}): wait for it, then delete")
        backup.status = "deleted"
        backup.deleted_at = utcnow()
        op = queue_operation(s, ctx, "delete-backup", env)
        op.backup_id = backup.id
        audit(s, ctx.actor, "backup deleted", environment_id=env.id,
              detail=f"backup {backup_id}")
        view = backup_view(s, backup, op)
    ctx.notify()
    return view


# -- restore, copy, upload -----------------------------------------------------------------------


def _file_of(backup: Backup, prefix: str | None, what: str) -> BackupFile:
    """The file of `prefix` in a completed backup (the only file when no prefix is named)."""
    if backup.status != "completed":
        raise UserError(f"backup {backup.id} is {backup.status}: only a completed backup can "
                        f"be {what} from")
    files = {f.prefix: f for f in backup.files}
    if prefix is None:
        if len(files) != 1:
            raise UserError(f"backup {backup.id} holds {', '.join(sorted(files))}: name the one "
                            f"to {what} with --prefix")
        prefix = next(iter(files))
    found = files.get(prefix)
    if found is None:
        raise UserError(f"backup {backup.id} holds no {prefix}: it holds "
                        f"{', '.join(sorted(files))}")
    return found


def _confirm(prefix: str, confirm: str | None, what: str) -> None:
    if confirm != prefix:
        raise UserError(f"{what} replaces the data of {prefix}: confirm with "
                        f"`--confirm {prefix}`")


def _restore_target(s: Session, env: Environment, prefix: str, fmt: str) -> Instance:
    inst = _instance(s, env, prefix)
    _has_data(inst, env)
    engine = engine_for(inst.kind)
    if engine.format != fmt:
        raise UserError(f"this backup ({fmt}) cannot be restored into {prefix} in {env.name}, "
                        f"a {inst.service} service: restore it into a service of the same kind")
    return inst


def _not_busy(s: Session, env: Environment, inst: Instance) -> None:
    busy = s.scalar(select(Operation).where(Operation.instance_id == inst.id,
                                            Operation.status.in_(UNFINISHED)).limit(1))
    if busy is not None:
        raise Conflict(f"{inst.prefix} in {env.name} has a {busy.kind} operation "
                       f"{busy.status}: wait for it (`tether service wait {env.name} "
                       f"{inst.prefix}`), then restore")


def _queue_restore(s: Session, ctx: Context, env: Environment, inst: Instance, backup: Backup,
                   file_id: int, kind: str = "restore") -> Operation:
    _not_busy(s, env, inst)
    op = queue_operation(s, ctx, kind, env, inst)
    op.backup_id = backup.id
    op.params = {"file_id": file_id}
    return op


def restore(ctx: Context, backup_id: int, to_env: str | None = None,
            prefix: str | None = None, confirm: str | None = None) -> dict[str, object]:
    """Restore a backup into the same environment (or `to_env` of the same project): the file
    of `prefix` (required when the set holds several) into that environment's instance of the
    same prefix."""
    with ctx.store.session() as s:
        backup, env = _backup(s, ctx, backup_id, Need.CHANGE)
        source = _file_of(backup, prefix, "restore")
        prefix = source.prefix
        target_env = get_environment(s, env.project, to_env) if to_env else env
        ctx.require(Need.CHANGE, target_env.project.name)
        inst = _restore_target(s, target_env, prefix, source.format)
        _confirm(prefix, confirm, "restoring")
        op = _queue_restore(s, ctx, target_env, inst, backup, source.id)
        audit(s, ctx.actor, "restore requested", instance=inst,
              detail=f"from backup {backup_id} ({env.name} {prefix})")
        view = backup_view(s, backup, op)
    ctx.notify()
    return view


def copy(ctx: Context, project: str | None, prefix: str, from_env: str, to_env: str,
         confirm: str | None = None) -> dict[str, object]:
    """Copy an instance's data to the instance of the same prefix in another environment of the
    project: a backup (kept, origin `copy`) restored at once, in one operation."""
    if from_env == to_env:
        raise UserError("copy needs two different environments (--from and --to)")
    with ctx.store.session() as s:
        proj = get_project(s, project, ctx, Need.CHANGE)
        source_env = get_environment(s, proj, from_env)
        target_env = get_environment(s, proj, to_env)
        source = _instance(s, source_env, prefix)
        _has_data(source, source_env)
        fmt = engine_for(source.kind).format
        target = _restore_target(s, target_env, prefix, fmt)
        _confirm(prefix, confirm, "copying")
        backup = _new_set(s, ctx, source_env, [source], "copy")
        op = _queue_restore(s, ctx, target_env, target, backup, backup.files[0].id, "copy")
        audit(s, ctx.actor, "copy requested", instance=target,
              detail=f"from {from_env} (backup {backup.id})")
        view = backup_view(s, backup, op)
    ctx.notify()
    return view


def upload_engine(ctx: Context, project: str | None, env_name: str, prefix: str,
                  confirm: str | None) -> BackupEngine:
    """The engine that will read an upload into `prefix`: everything about the target is
    checked before the body is read."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.CHANGE)
        inst = _instance(s, env, prefix)
        _has_data(inst, env)
        engine = engine_for(inst.kind)
        _confirm(prefix, confirm, "restoring an uploaded dump")
        sets.storage_cluster(s, env.project.region)
        _not_busy(s, env, inst)
        return engine


def upload(ctx: Context, project: str | None, env_name: str, prefix: str,
           chunks: Iterable[bytes], confirm: str | None = None) -> dict[str, object]:
    """Restore a dump made elsewhere (e.g. a plain `pg_dump -Fc` file) into an instance. The
    stream is sealed on the way into staging (no plaintext on disk), kept as a backup set of
    origin `upload` in the backup storage, and restored by a `restore` operation. The caller
    checked the first bytes with `upload_engine(...).check_plain`."""
    engine = upload_engine(ctx, project, env_name, prefix, confirm)
    staged, info = transfer.seal_into_staging(ctx.data_dir, ctx.box, chunks,
                                              f"upload-{secrets.token_hex(8)}.tbk")
    try:
        with ctx.store.session() as s:
            env = _env(s, ctx, project, env_name, Need.CHANGE)
            inst = _instance(s, env, prefix)
            _has_data(inst, env)
            backup = _new_set(s, ctx, env, [inst], "upload")
            f = backup.files[0]
            f.instance_id = None
            f.format = engine.format
            backup_id, file_id = backup.id, f.id
        key = transfer.storage_key(backup_id, file_id)
        try:
            transfer.storage_of(ctx.store, ctx.box, backup_id).put(key, staged)
        except Exception as exc:
            with ctx.store.session() as s:
                backup = s.get(Backup, backup_id)
                assert backup is not None
                backup.status, backup.error = "failed", f"storing the upload failed: {exc}"
            raise
    finally:
        transfer.clear(staged)
    with ctx.store.session() as s:
        backup = s.get(Backup, backup_id)
        f = s.get(BackupFile, file_id)
        assert backup is not None and f is not None
        f.status, f.storage_key, f.size = "stored", key, info.size
        f.sha256, f.plain_sha256, f.key_sealed = info.sha256, info.plain_sha256, info.key_sealed
        backup.status, backup.size, backup.finished_at = "completed", info.size, utcnow()
        env = s.get(Environment, backup.environment_id)
        assert env is not None
        inst = _instance(s, env, prefix)
        op = _queue_restore(s, ctx, env, inst, backup, file_id)
        audit(s, ctx.actor, "upload restore requested", instance=inst,
              detail=f"a dump made elsewhere, kept as backup {backup_id} "
                     f"({info.plain_size} bytes)")
        view = backup_view(s, backup, op)
    ctx.notify()
    return view


def verify(ctx: Context, backup_id: int) -> dict[str, object]:
    with ctx.store.session() as s:
        backup, env = _backup(s, ctx, backup_id, Need.CHANGE)
        if backup.status != "completed":
            raise UserError(f"backup {backup_id} is {backup.status}: only a completed backup "
                            "can be verified")
        op = queue_operation(s, ctx, "verify", env)
        op.backup_id = backup.id
        view = backup_view(s, backup, op)
    ctx.notify()
    return view


def download_file(ctx: Context, backup_id: int, prefix: str | None) -> tuple[int, str, str]:
    """Which file of a backup to download: (file id, file name, format). Needs the right to
    see secrets: the file holds the service's data."""
    with ctx.store.session() as s:
        backup, env = _backup(s, ctx, backup_id, Need.REVEAL)
        f = _file_of(backup, prefix, "download")
        prefix = f.prefix
        ext = {"pg_dump-custom": "dump"}.get(f.format, "bin")
        audit(s, ctx.actor, "backup downloaded", environment_id=env.id,
              detail=f"backup {backup_id} ({prefix})")
        return f.id, f"{env.project.name}-{env.name}-{prefix}-{backup_id}.{ext}", f.format


# -- schedules -----------------------------------------------------------------------------------

_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def schedule_view(schedule: BackupSchedule | None, env: Environment) -> dict[str, object]:
    if schedule is None:
        return {"environment": env.name, "enabled": False}
    return {"environment": env.name, "enabled": True, "at": schedule.at, "timezone": "UTC",
            "keep_daily": schedule.keep_daily, "keep_weekly": schedule.keep_weekly,
            "keep_monthly": schedule.keep_monthly,
            "verify_every_days": schedule.verify_every_days,
            "last_run_on": schedule.last_run_on, "updated_by": schedule.updated_by,
            "updated_at": iso(schedule.updated_at)}


def show_schedule(ctx: Context, project: str | None, env_name: str) -> dict[str, object]:
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.READ)
        return schedule_view(s.get(BackupSchedule, env.id), env)


def set_schedule(ctx: Context, project: str | None, env_name: str, at: str,
                 keep_daily: int = 7, keep_weekly: int = 4, keep_monthly: int = 12,
                 verify_every_days: int = 7) -> dict[str, object]:
    """Back the environment up every day at `at` (HH:MM, UTC), keeping that many daily, weekly
    and monthly backups, and verify one when the last verification is older than
    `verify_every_days`."""
    if not _HHMM.fullmatch(at or ""):
        raise UserError(f"--at {at!r} is not a time of day: give HH:MM in UTC, e.g. 03:30")
    for name, value, top in (("keep-daily", keep_daily, 366), ("keep-weekly", keep_weekly, 520),
                             ("keep-monthly", keep_monthly, 1200),
                             ("verify-every", verify_every_days, 366)):
        if not 0 <= value <= top:
            raise UserError(f"--{name} must be between 0 and {top}, not {value}")
    if keep_daily + keep_weekly + keep_monthly == 0:
        raise UserError("a schedule that keeps no backup deletes each one it makes: keep at "
                        "least one (e.g. --keep-daily 7)")
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.CHANGE)
        sets.storage_cluster(s, env.project.region)  # refused now, not at 3 am
        schedule = s.get(BackupSchedule, env.id)
        if schedule is None:
            schedule = BackupSchedule(environment_id=env.id, at=at, updated_by=ctx.actor)
            s.add(schedule)
        if schedule.at != at:
            schedule.last_run_on = None  # a new time today runs today
        schedule.at, schedule.keep_daily, schedule.keep_weekly = at, keep_daily, keep_weekly
        schedule.keep_monthly, schedule.verify_every_days = keep_monthly, verify_every_days
        schedule.updated_by, schedule.updated_at = ctx.actor, utcnow()
        audit(s, ctx.actor, "backup schedule set", environment_id=env.id,
              detail=f"daily at {at} UTC, keeping {keep_daily} daily, {keep_weekly} weekly, "
                     f"{keep_monthly} monthly")
        s.flush()
        return schedule_view(schedule, env)


def remove_schedule(ctx: Context, project: str | None, env_name: str) -> dict[str, object]:
    """No more scheduled backups (the ones made are kept until deleted)."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.CHANGE)
        schedule = s.get(BackupSchedule, env.id)
        if schedule is not None:
            s.delete(schedule)
            audit(s, ctx.actor, "backup schedule removed", environment_id=env.id)
        return schedule_view(None, env)
