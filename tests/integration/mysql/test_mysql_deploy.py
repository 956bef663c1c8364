"""MySQL through the engine: shared and private (a dedicated MariaDB run by Tether), deploy,
detach, remove — the database and the dedicated server really go."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
import pytest

from tests.conftest import world_traversable_tmpdir
from tests.plane import APP_COMMAND, wait_op
from tests.plane import plane as make_plane
from tether.actions import deployments, projects, services, variables
from tether.actions.common import Context
from tether.engine.core import Engine

pytestmark = pytest.mark.integration


@pytest.fixture
def plane(mysql_server: Any) -> Iterator[tuple[Context, Engine]]:
    data_dir = world_traversable_tmpdir("tether-test-engine-mysql-")
    try:
        with make_plane(data_dir, "mysql", "local", mysql_server.admin_url, "maria") as made:
            yield made
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def connect(dsn: str) -> pymysql.Connection:
    parts = urlsplit(dsn)
    return pymysql.connect(host=parts.hostname, port=parts.port, user=unquote(parts.username or ""),
                           password=unquote(parts.password or ""), database=parts.path[1:],
                           connect_timeout=5)


def test_shared_and_private_mysql(plane: tuple[Context, Engine], unique_id: str) -> None:
    ctx, _ = plane
    name = f"my{unique_id}"
    projects.create_project(ctx, name, app_command=APP_COMMAND)
    services.add(ctx, name, "test", "mysql", "DEFAULT")
    own = services.add(ctx, name, "test", "mysql", "OWN", private=True, provision=True)
    assert wait_op(ctx, own["operation"]["id"])["status"] == "succeeded", \
        services.show(ctx, name, "test", "OWN")["last_error"]
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    env = {v["name"]: v["value"] for v in variables.list_variables(ctx, name, "test", True)}
    assert env["DATABASE_URL"] == env["DEFAULT_DATABASE_DSN"]
    assert urlsplit(env["OWN_DATABASE_DSN"]).port != urlsplit(env["DEFAULT_DATABASE_DSN"]).port
    for var in ("DEFAULT_DATABASE_DSN", "OWN_DATABASE_DSN"):
        with connect(env[var]) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (x int)")
    private_dir = ctx.data_dir / "private" / f"tether_i{own['id']}"
    assert private_dir.exists()

    for prefix in ("DEFAULT", "OWN"):
        services.detach(ctx, name, "test", prefix)
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    for prefix in ("DEFAULT", "OWN"):
        removed = services.remove(ctx, name, "test", prefix, prefix)
        assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    assert not private_dir.exists()
    for var in ("DEFAULT_DATABASE_DSN", "OWN_DATABASE_DSN"):
        with pytest.raises(pymysql.err.OperationalError):
            connect(env[var]).close()
