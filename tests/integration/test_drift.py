"""The reconciler against a real PostgreSQL cluster, through the store and the actions: drift made
by hand (a dropped database, CONNECT granted to PUBLIC again) is found, shown on the instance and
in the audit trail, and repaired; instances an operation is working on are left alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import delete, select

from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import projects, services, variables
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.engine.reconcile import Reconciler
from tether.naming import resource_names
from tether.net import free_port
from tether.providers.registry import get_provider
from tether.store.models import AuditEntry, Cluster, Instance, Operation, utcnow
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def plane(tmp_path: Path, pg_server: Any) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "postgres", "local", pg_server.admin_url, "pg") as (ctx, engine):
        yield ctx, engine
        with ctx.store.session() as s:  # leave nothing behind on the shared server
            spec = cluster_spec(ctx.box, s.scalars(select(Cluster)).one())
            ids = list(s.scalars(select(Instance.id)))
    for inst_id in ids:
        get_provider("postgres").deprovision(spec, resource_names(inst_id))


def provisioned(ctx: Context, unique_id: str) -> tuple[str, int, str]:
    """A project with a provisioned PostgreSQL instance: (project, instance id, its DSN)."""
    name = f"d{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "postgres", "DEFAULT", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    dsn = {v["name"]: v["value"] for v in variables.list_variables(ctx, name, "test", True)}[
        "DEFAULT_DATABASE_DSN"]
    return name, int(added["id"]), str(dsn)


DROP = "DROP DATABASE {} WITH (FORCE)"
GRANT = "GRANT CONNECT ON DATABASE {} TO PUBLIC"


def by_hand(pg_server: Any, statement: str, inst_id: int) -> str:
    """Change the instance's database behind Tether's back, through the admin connection
    (`{}` in `statement` is the database); returns the database's name."""
    database = resource_names(inst_id).database
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(database)))
    return database


def trail(ctx: Context, inst_id: int) -> list[tuple[str, str, str | None]]:
    """The reconciler's audit entries of an instance: (actor, action, detail)."""
    with ctx.store.session() as s:
        return [(a.actor, a.action, a.detail) for a in s.scalars(
            select(AuditEntry).where(AuditEntry.instance_id == inst_id,
                                     AuditEntry.actor == "reconciler").order_by(AuditEntry.id))]


def test_a_dropped_database_is_found_shown_and_made_again(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    ctx, _engine = plane
    project, inst_id, dsn = provisioned(ctx, unique_id)
    reconciler = Reconciler(ctx.store, ctx.box, ctx.data_dir)

    first = reconciler.run_once()
    assert inst_id in first.in_sync and inst_id not in first.drifted
    shown = services.show(ctx, project, "test", "DEFAULT")
    assert shown["drift"] is None and shown["observed_at"] is not None
    assert trail(ctx, inst_id) == []

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
    database = by_hand(pg_server, DROP, inst_id)

    # observed only: the drift is shown on the instance and audited once
    lost = f"database {database} is missing: its data is lost (a repair makes it again, EMPTY)"
    watcher = Reconciler(ctx.store, ctx.box, ctx.data_dir, repair=False)
    found = watcher.run_once()
    assert inst_id in found.drifted and inst_id in found.unrepaired
    assert services.show(ctx, project, "test", "DEFAULT")["drift"] == lost
    assert trail(ctx, inst_id) == [("reconciler", "drift found", lost)]
    watcher.run_once()
    assert trail(ctx, inst_id) == [("reconciler", "drift found", lost)]  # unchanged: no entry

    # repaired: the database is back, empty, and the same credentials reach it
    repaired = reconciler.run_once()
    assert inst_id in repaired.drifted and inst_id in repaired.repaired
    assert services.show(ctx, project, "test", "DEFAULT")["drift"] is None
    assert trail(ctx, inst_id) == [("reconciler", "drift found", lost),
                                   ("reconciler", "drift repaired", f"repaired: {lost}")]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)

    # a later pass finds it as it should be, and writes no entry
    again = reconciler.run_once()
    assert inst_id in again.in_sync
    assert services.show(ctx, project, "test", "DEFAULT")["drift"] is None
    assert len(trail(ctx, inst_id)) == 2


def test_connect_granted_to_public_again_is_found_and_revoked(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    ctx, _engine = plane
    project, inst_id, _dsn = provisioned(ctx, unique_id)
    database = by_hand(pg_server, GRANT, inst_id)

    report = Reconciler(ctx.store, ctx.box, ctx.data_dir).run_once()
    assert inst_id in report.repaired
    grant = f"CONNECT on {database} is granted to PUBLIC"
    assert trail(ctx, inst_id) == [("reconciler", "drift found", grant),
                                   ("reconciler", "drift repaired", f"repaired: {grant}")]
    assert services.show(ctx, project, "test", "DEFAULT")["drift"] is None
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        assert conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')",
                            (database,)).fetchone() == (False,)


def test_an_instance_with_a_waiting_operation_is_left_alone(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    ctx, _engine = plane
    project, inst_id, _dsn = provisioned(ctx, unique_id)
    by_hand(pg_server, DROP, inst_id)
    with ctx.store.session() as s:  # an operation that waits (its retry is not due yet)
        inst = s.get(Instance, inst_id)
        assert inst is not None
        s.add(Operation(kind="provision", environment_id=inst.environment_id,
                        instance_id=inst_id, status="queued", requested_by="test",
                        not_before=utcnow() + timedelta(hours=1)))
    reconciler = Reconciler(ctx.store, ctx.box, ctx.data_dir)
    report = reconciler.run_once()
    assert inst_id in report.skipped and inst_id not in report.drifted
    assert services.show(ctx, project, "test", "DEFAULT")["observed_at"] is None
    with ctx.store.session() as s:
        s.execute(delete(Operation).where(Operation.requested_by == "test"))
    assert inst_id in reconciler.run_once().repaired


def test_an_unreachable_cluster_records_nothing_new(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    ctx, _engine = plane
    project, inst_id, _dsn = provisioned(ctx, unique_id)
    reconciler = Reconciler(ctx.store, ctx.box, ctx.data_dir)
    reconciler.run_once()
    seen_at = services.show(ctx, project, "test", "DEFAULT")["observed_at"]
    with ctx.store.session() as s:  # the cluster moved away for a moment
        cluster = s.scalars(select(Cluster)).one()
        real = cluster.url_enc
        cluster.url_enc = ctx.box.seal(pg_server.admin_url.replace(
            f":{pg_server.port}/", f":{free_port()}/"))
    try:
        report = reconciler.run_once()
    finally:
        with ctx.store.session() as s:
            s.scalars(select(Cluster)).one().url_enc = real
    assert inst_id in report.unreachable and inst_id not in report.failed
    shown = services.show(ctx, project, "test", "DEFAULT")
    assert shown["drift"] is None and shown["observed_at"] == seen_at
    assert trail(ctx, inst_id) == []


def test_the_background_pass_runs_soon_after_start(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    ctx, _engine = plane
    project, inst_id, _dsn = provisioned(ctx, unique_id)
    by_hand(pg_server, GRANT, inst_id)
    reconciler = Reconciler(ctx.store, ctx.box, ctx.data_dir)
    reconciler.start(interval_s=3600, first_delay_s=0.1)
    try:
        for _ in range(200):
            if [a for _, a, _ in trail(ctx, inst_id)] == ["drift found", "drift repaired"]:
                break
            time.sleep(0.05)
    finally:
        reconciler.stop()
    assert [a for _, a, _ in trail(ctx, inst_id)] == ["drift found", "drift repaired"]
    assert services.show(ctx, project, "test", "DEFAULT")["observed_at"] is not None


def test_an_instance_another_node_reconciles_is_left_to_it(
        tmp_path: Path, pg_server: Any, unique_id: str) -> None:
    """On a PostgreSQL store several nodes run the pass: one instance is reconciled by one node
    at a time (two repairs at once would, e.g., each make an S3 key, and the next pass delete
    both, the deployed one with them)."""
    from sqlalchemy import BigInteger, func, literal

    from tests.nodeproc import pg_store
    from tether.engine import reconcile

    with pg_store(pg_server.admin_url, f"tether_drift_{unique_id}") as store, \
            make_plane(tmp_path, "postgres", "local", pg_server.admin_url, "pg",
                       store=store) as (ctx, _engine):
        project, inst_id, _dsn = provisioned(ctx, unique_id)
        try:
            database = by_hand(pg_server, GRANT, inst_id)
            key = literal(reconcile._INSTANCE_LOCK_SPACE << 32, BigInteger) + inst_id
            with store.engine.begin() as other_node:  # another node reconciles it now
                assert other_node.scalar(select(func.pg_try_advisory_xact_lock(key)))
                busy = Reconciler(ctx.store, ctx.box, ctx.data_dir, node_id="b").run_once()
                assert inst_id in busy.skipped and inst_id not in busy.repaired
                assert trail(ctx, inst_id) == []
            done = Reconciler(ctx.store, ctx.box, ctx.data_dir, node_id="b").run_once()
            assert inst_id in done.repaired
            assert services.show(ctx, project, "test", "DEFAULT")["drift"] is None
            with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
                assert conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')",
                                    (database,)).fetchone() == (False,)
        finally:
            with ctx.store.session() as s:
                spec = cluster_spec(ctx.box, s.scalars(select(Cluster)).one())
            get_provider("postgres").deprovision(spec, resource_names(inst_id))
