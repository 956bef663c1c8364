"""Scheduled backups and retention (tether.engine.schedules) with an injected clock: nothing
before the set time, one backup (verified: the first one) at it, none again that day, one the
next day; retention prunes scheduled backups only, never one an operation uses; two nodes
ticking at once queue one backup; refusals of bad schedules."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import PgServer
from tests.plane import backup_plane, wait_op
from tether.actions import backups
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.engine.schedules import Scheduler
from tether.errors import UserError
from tether.store.models import Backup, Environment, Operation

pytestmark = pytest.mark.integration

DAY = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path, pg_server: PgServer, unique_id: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Context, Engine]]:
    monkeypatch.setenv("TETHER_BACKUP_TICK", "0")  # only the test's ticks
    with backup_plane(tmp_path, "postgres", pg_server.admin_url, f"pg{unique_id}", "postgres",
                      envs=("live",), app_command="python -m http.server") as made:
        yield made.ctx, made.engine


def at(hours: int, minutes: int = 0, days: int = 0) -> datetime:
    return DAY + timedelta(days=days, hours=hours, minutes=minutes)


def ops_done(ctx: Context) -> None:
    with ctx.store.session() as s:
        ids = list(s.scalars(select(Operation.id).where(Operation.status.in_(("queued",
                                                                             "running")))))
    for op_id in ids:
        wait_op(ctx, op_id, timeout=120)


def test_daily_backups_at_the_set_time(env: tuple[Context, Engine]) -> None:
    ctx, engine = env
    shown = backups.set_schedule(ctx, "shop", "live", "03:30", keep_daily=2, keep_weekly=0,
                                 keep_monthly=0)
    assert shown["enabled"] and shown["at"] == "03:30"
    scheduler = Scheduler(engine.parts)
    assert scheduler.tick(at(3, 29)) == []
    first = scheduler.tick(at(3, 30))
    assert len(first) == 1
    assert scheduler.tick(at(3, 31)) == [] and scheduler.tick(at(23, 59)) == []
    ops_done(ctx)
    made = backups.show(ctx, first[0])
    assert made["origin"] == "scheduled" and made["status"] == "completed"
    assert made["verification"] == "passed"  # the first scheduled backup is verified
    # the next day: a backup, not verified again (the last verification is a day old)
    second = scheduler.tick(at(4, 0, days=1))
    ops_done(ctx)
    assert backups.show(ctx, second[0])["verification"] is None
    third = scheduler.tick(at(3, 30, days=2))
    ops_done(ctx)
    # retention keeps the newest 2 days: the first is deleted at the next pass
    scheduler.prune(at(3, 31, days=2))
    ops_done(ctx)
    listed = [b["id"] for b in backups.list_backups(ctx, "shop", "live")]
    assert listed == [third[0], second[0]]
    with pytest.raises(Exception, match="no backup"):
        backups.show(ctx, first[0])
    # a manual backup is never pruned
    manual = backups.create(ctx, "shop", "live")
    ops_done(ctx)
    scheduler.prune(at(3, 0, days=30))
    assert manual["id"] in [b["id"] for b in backups.list_backups(ctx, "shop", "live")]
    # off: no more scheduled backups
    assert backups.remove_schedule(ctx, "shop", "live")["enabled"] is False
    assert scheduler.tick(at(3, 30, days=3)) == []


def test_retention_of_a_year_and_busy_backups(env: tuple[Context, Engine]) -> None:
    """400 completed scheduled backups (records only): retention keeps at most 7+4+12, and
    none that an operation still uses."""
    ctx, engine = env
    backups.set_schedule(ctx, "shop", "live", "03:00")
    with ctx.store.session() as s:
        env_row = s.scalars(select(Environment).where(Environment.name == "live")).one()
        ids = []
        for day in range(400):
            b = Backup(environment_id=env_row.id, origin="scheduled", status="completed",
                       requested_by="schedule", size=0,
                       created_at=at(3, 0, days=-day), finished_at=at(3, 5, days=-day))
            s.add(b)
            s.flush()
            ids.append(b.id)
        busy = ids[-1]  # the oldest, in use by a restore waiting to run
        holder = Operation(kind="restore", environment_id=env_row.id, requested_by="t",
                           backup_id=busy, status="queued",
                           not_before=datetime.now(UTC) + timedelta(days=365))
        s.add(holder)
        s.flush()
        holder_id = holder.id
    deleted = Scheduler(engine.parts).prune(at(4, 0))
    with ctx.store.session() as s:  # let the environment's later operations run
        s.get(Operation, holder_id).status = "failed"
    engine.notify()
    with ctx.store.session() as s:
        left = s.scalar(select(func.count()).select_from(Backup).where(
            Backup.status == "completed"))
    assert left is not None and 7 <= left - 1 <= 7 + 4 + 12
    assert busy not in deleted and len(deleted) == 400 - left


def test_two_nodes_queue_one_backup_and_bad_schedules_are_refused(
        env: tuple[Context, Engine]) -> None:
    ctx, engine = env
    backups.set_schedule(ctx, "shop", "live", "01:00")
    a, b = Scheduler(engine.parts), Scheduler(engine.parts)
    assert len(a.tick(at(2, 0)) + b.tick(at(2, 0))) == 1
    ops_done(ctx)
    for bad in ("3:30", "24:00", "03:60", "noon", ""):
        with pytest.raises(UserError, match="HH:MM"):
            backups.set_schedule(ctx, "shop", "live", bad)
    with pytest.raises(UserError, match="keeps no backup"):
        backups.set_schedule(ctx, "shop", "live", "03:00", 0, 0, 0)


def test_the_hourly_pass_sweeps_what_interrupted_uploads_left(
        env: tuple[Context, Engine], tmp_path: Path) -> None:
    """A put killed midway leaves a partial file in the backup storage; a node's schedule pass
    removes it once a day old (an upload of another node may still be writing a newer one)."""
    ctx, engine = env
    made = backups.create(ctx, "shop", "live")
    ops_done(ctx)
    root = tmp_path / "media-backups"  # the embedded local files keep backups beside the media
    assert any(root.rglob("*.tbk")), list(root.rglob("*"))
    old, fresh = root / "sets" / "old.tbk.partial", root / "sets" / "fresh.tbk.partial"
    for path in (old, fresh):
        path.write_bytes(b"cut short")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    scheduler = Scheduler(engine.parts)
    scheduler.tick(at(12, 0))
    assert not old.exists() and fresh.exists()
    assert backups.show(ctx, int(made["id"]))["restorable"]
    fresh.unlink()
