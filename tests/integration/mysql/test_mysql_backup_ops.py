"""MySQL/MariaDB backups through the worker's operations (tether.actions.backups,
tether.engine.backups, the adapter in tether.backups.engines) on the suite's real MariaDB, with
files kept on a local-files storage cluster: a backup verified in a scratch database, a restore
after a change, a copy live -> test. The live instance's credentials were rotated after it made
a procedure, so its routines are read by the cluster's admin (the adapter's routines reader)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import select

from tests.integration.mysql.conftest import MySQLServer
from tests.plane import backup_plane, instance_credentials, succeeded, wait_op
from tether.actions import backups, services
from tether.actions.common import Context
from tether.backups.mysql import MySQLTarget, summary
from tether.engine.core import Engine
from tether.store.models import BackupFile

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, mysql_server: MySQLServer,
        unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the suite's MariaDB and a local-files cluster for the backups; a project with
    DEFAULT provisioned in test and live; every instance removed at the end."""
    with backup_plane(tmp_path, "mysql", mysql_server.admin_url, f"maria{unique_id}",
                      "mysql") as made:
        yield made.ctx, made.engine


def target(ctx: Context, env_name: str) -> MySQLTarget:
    """The DEFAULT instance's database as its application reaches it (current credentials)."""
    return MySQLTarget.from_credentials(instance_credentials(ctx, env_name, "DEFAULT"))


def run(t: MySQLTarget, *statements: str, many: list[Any] | None = None
        ) -> list[tuple[Any, ...]]:
    """Run the statements as the login, on one connection (each once, or with `many`, each
    for every row of arguments); the last one's rows."""
    with pymysql.connect(host=t.host, port=t.port, user=t.user, password=t.password,
                         database=t.database, autocommit=True, connect_timeout=5) as conn, \
            conn.cursor() as cur:
        rows: list[tuple[Any, ...]] = []
        for sql in statements:
            if many is None:
                cur.execute(sql)
            else:
                cur.executemany(sql, many)
            rows = list(cur.fetchall())
        return rows


def test_backup_verify_restore_and_copy_through_the_worker(
        env: tuple[Context, Engine]) -> None:
    ctx, _ = env
    live = target(ctx, "live")
    run(live, "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(40), "
              "data LONGBLOB)",
        "CREATE VIEW labels AS SELECT label FROM items",
        "CREATE PROCEDURE total() SELECT COUNT(*) FROM items")
    run(live, "INSERT INTO items (label, data) VALUES (%s, %s)",
        many=[(f"live {i}", os.urandom(1000)) for i in range(50)])
    # a rotation: the procedure's body is now readable only by its definer and the admin
    rotated = services.rotate(ctx, "shop", "live", "DEFAULT")
    assert wait_op(ctx, rotated["operation"]["id"])["status"] == "succeeded"  # type: ignore[index]
    live = target(ctx, "live")
    assert live.user.endswith("_1")
    assert summary(live).definitions["PROCEDURE total"] == "unreadable"

    made = backups.create(ctx, "shop", "live", verify=True)
    succeeded(ctx, made)
    shown = backups.show(ctx, int(made["id"]))
    assert shown["status"] == "completed" and shown["verification"] == "passed", shown
    assert [f["format"] for f in shown["files"]] == ["mysql-sql-v1"]
    with ctx.store.session() as s:  # the verification compared content, not only a restore
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        assert f.summary and not f.summary.get("changed_during_backup"), f.summary

    # restore after a change: the backup's rows, view and procedure are back
    before = run(live, "SELECT id, label, MD5(data) FROM items ORDER BY id")
    run(live, "DELETE FROM items WHERE id > 5", "DROP PROCEDURE total",
        "CREATE TABLE later (x INT)")
    succeeded(ctx, backups.restore(ctx, int(made["id"]), confirm="DEFAULT"))
    assert run(live, "SELECT id, label, MD5(data) FROM items ORDER BY id") == before
    assert run(live, "CALL total()") == [(50,)]
    assert run(live, "SELECT COUNT(*) FROM labels") == [(50,)]
    assert run(live, "SHOW TABLES") == [("items",), ("labels",)]

    # copy live -> test: test gets live's data (and loses its own)
    test = target(ctx, "test")
    run(test, "CREATE TABLE own (x INT)")
    succeeded(ctx, backups.copy(ctx, "shop", "DEFAULT", "live", "test", confirm="DEFAULT"))
    assert run(test, "SELECT id, label, MD5(data) FROM items ORDER BY id") == before
    assert run(test, "SHOW TABLES") == [("items",), ("labels",)]
    assert run(test, "CALL total()") == [(50,)]
    assert summary(test) == summary(live)

    for b in backups.list_backups(ctx, "shop"):
        succeeded(ctx, backups.delete(ctx, int(b["id"])))
