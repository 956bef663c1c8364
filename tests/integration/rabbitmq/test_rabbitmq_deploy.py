"""RabbitMQ through the engine: catalogued as rabbitmq-N, provisioned by a deploy, BROKER_URL
works with kombu, remove deletes the vhost and the user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kombu import Connection

from tests.plane import APP_COMMAND, wait_op
from tests.plane import plane as make_plane
from tether.actions import deployments, projects, services, variables
from tether.actions.common import Context
from tether.engine.core import Engine

pytestmark = pytest.mark.integration


@pytest.fixture
def plane(tmp_path: Path, rabbit: Any) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "rabbitmq", "local", rabbit.admin_url, "rabbit",
                     settings=rabbit.settings) as made:
        yield made


def test_broker_through_deploy_and_remove(plane: tuple[Context, Engine], rabbit: Any,
                                          unique_id: str) -> None:
    ctx, _ = plane
    name = f"mq{unique_id}"
    projects.create_project(ctx, name, app_command=APP_COMMAND)
    offered = [o["service"] for o in services.catalog_view(ctx, "local", None)]
    assert any(o.startswith("rabbitmq-") for o in offered), offered
    added = services.add(ctx, name, "test", "rabbitmq", "DEFAULT")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    assert services.show(ctx, name, "test", "DEFAULT")["state"] == "attached"
    env = {v["name"]: v["value"] for v in variables.list_variables(ctx, name, "test", True)}
    assert env["BROKER_URL"] == env["DEFAULT_AMQP_BROKER_URL"]
    with Connection(env["BROKER_URL"], connect_timeout=10) as conn:
        queue = conn.SimpleQueue(f"q{unique_id}")
        queue.put({"hello": "world"})
        message = queue.get(timeout=10)
        assert message.payload == {"hello": "world"}
        message.ack()
        queue.close()

    services.detach(ctx, name, "test", "DEFAULT")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    removed = services.remove(ctx, name, "test", "DEFAULT", "DEFAULT")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    vhost = f"tether_i{added['id']}"
    auth = (rabbit.admin_user, rabbit.admin_password)
    assert httpx.get(f"{rabbit.api}/api/vhosts/{vhost}", auth=auth).status_code == 404
    assert httpx.get(f"{rabbit.api}/api/users/{vhost}", auth=auth).status_code == 404
