"""Errors that may pass are retried, not failed: a PostgreSQL cluster stopped for 20 s while an
instance is provisioned (connection refused is a TransientError); the worker retries with backoff
until the operation's deadline, and the provision succeeds once the server is back."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.conftest import own_postgres, world_traversable_tmpdir
from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import deployments, projects, services
from tether.servers.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL of this test's own, so it can be stopped without disturbing the others."""
    with own_postgres("tether-test-transient-") as (server, password):
        yield server, server.admin_url(password)


def test_a_cluster_stopped_for_20_s_does_not_fail_the_provision(
        own_server: tuple[EmbeddedPostgres, str], unique_id: str) -> None:
    server, url = own_server
    data_dir = world_traversable_tmpdir("tether-test-transient-plane-")
    try:
        with make_plane(data_dir, "postgres", "local", url, "flaky") as (ctx, _engine):
            name = f"t{unique_id}"
            projects.create_project(ctx, name)
            services.add(ctx, name, "test", "postgres", "DB")
            server.stop()
            op = services.provision(ctx, name, "test", "DB")["operation"]
            time.sleep(20)
            op_now = deployments.get_operation(ctx, op["id"])
            assert op_now["status"] in ("queued", "running"), op_now
            assert "retrying" in str(op_now["message"]), op_now
            shown = services.show(ctx, name, "test", "DB")
            assert shown["state"] == "provisioning"
            assert "retrying" in str(shown["last_error"])
            server.start()
            assert wait_op(ctx, op["id"], timeout=60)["status"] == "succeeded"
            shown = services.show(ctx, name, "test", "DB")
            assert shown["state"] == "pending attachment" and shown["last_error"] is None
            removed = services.remove(ctx, name, "test", "DB", "DB")["operation"]
            assert wait_op(ctx, removed["id"])["status"] == "succeeded"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
