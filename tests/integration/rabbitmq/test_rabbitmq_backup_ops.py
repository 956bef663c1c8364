"""RabbitMQ backups through the worker's operations (tether.actions.backups,
tether.engine.backups, the adapter in tether.backups.engines) on the suite's real RabbitMQ, with
files kept on a local-files storage cluster: a vhost's definitions backed up and verified in a
scratch vhost, restored after a change, copied live -> test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from kombu import Connection, Exchange, Queue
from sqlalchemy import select

from tests.integration.rabbitmq.conftest import RabbitServer
from tests.plane import backup_plane, instance_credentials, succeeded
from tether.actions import backups
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.providers.base import Credentials
from tether.providers.rabbitmq import broker_url
from tether.store.models import BackupFile

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, rabbit: RabbitServer,
        unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the suite's RabbitMQ and a local-files cluster for the backups; a project
    with DEFAULT provisioned in test and live; every instance removed at the end."""
    with backup_plane(tmp_path, "rabbitmq", rabbit.admin_url, f"rabbit{unique_id}", "rabbitmq",
                      settings=rabbit.settings) as made:
        yield made.ctx, made.engine


def creds(ctx: Context, env_name: str) -> Credentials:
    return Credentials(instance_credentials(ctx, env_name, "DEFAULT"))


def definitions(rabbit: RabbitServer, vhost: str) -> dict[str, Any]:
    """What the vhost holds, as the admin sees it: exchanges (name, type, arguments), queues
    (name, durable, arguments), bindings, policies."""
    def get(what: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{rabbit.api}/api/{what}/{quote(vhost, safe='')}", timeout=30,
                             auth=(rabbit.admin_user, rabbit.admin_password))
        assert response.status_code == 200, response.text
        return list(response.json())

    return {
        "exchanges": sorted((x["name"], x["type"], x["durable"], str(x["arguments"]))
                            for x in get("exchanges") if not x["name"].startswith("amq.")
                            and x["name"]),
        "queues": sorted((q["name"], q["durable"], str(q["arguments"]))
                         for q in get("queues")),
        "bindings": sorted((b["source"], b["destination"], b["destination_type"],
                            b["routing_key"], str(b["arguments"]))
                           for b in get("bindings") if b["source"]),
        "policies": sorted((p["name"], p["pattern"], str(p["definition"]))
                           for p in get("policies")),
    }


def fill(c: Credentials, rabbit: RabbitServer) -> None:
    """Exchanges, queues, queue and exchange bindings declared as the instance (AMQP), a policy
    set by the admin, a message."""
    with Connection(broker_url(c), connect_timeout=10) as conn:
        channel = conn.default_channel
        events = Exchange("events", "topic", durable=True)
        fan = Exchange("fan", "fanout", durable=True)
        for exchange in (events, fan):
            exchange(channel).declare()
        Queue("orders", events, routing_key="order.#", durable=True,
              queue_arguments={"x-max-length": 1000})(channel).declare()
        Queue("audit", fan, durable=True)(channel).declare()
        channel.exchange_bind(destination="fan", source="events", routing_key="audit.*")
        conn.Producer().publish(b"a message", exchange="events", routing_key="order.new")
    response = httpx.put(f"{rabbit.api}/api/policies/{quote(c.values['vhost'], safe='')}/limit",
                         json={"pattern": "^orders$", "definition": {"max-length": 500},
                               "apply-to": "queues"}, timeout=30,
                         auth=(rabbit.admin_user, rabbit.admin_password))
    assert response.status_code in (201, 204), response.text


def test_backup_verify_restore_and_copy_through_the_worker(
        env: tuple[Context, Engine], rabbit: RabbitServer) -> None:
    ctx, _ = env
    live, test = creds(ctx, "live"), creds(ctx, "test")
    fill(live, rabbit)
    wanted = definitions(rabbit, live.values["vhost"])
    assert len(wanted["queues"]) == 2 and len(wanted["bindings"]) == 3, wanted

    made = backups.create(ctx, "shop", "live", verify=True)
    succeeded(ctx, made)
    shown = backups.show(ctx, int(made["id"]))
    assert shown["status"] == "completed" and shown["verification"] == "passed", shown
    assert [f["format"] for f in shown["files"]] == ["rabbitmq-definitions-1"]
    with ctx.store.session() as s:  # the verification compared content, not only a restore
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        assert f.summary and not f.summary.get("changed_during_backup"), f.summary

    # restore after a change: the backup's definitions are back, the later ones gone
    with Connection(broker_url(live), connect_timeout=10) as conn:
        channel = conn.default_channel
        channel.queue_delete("audit")
        channel.exchange_delete("events")
        Queue("later", durable=True)(channel).declare()
    assert definitions(rabbit, live.values["vhost"]) != wanted
    succeeded(ctx, backups.restore(ctx, int(made["id"]), confirm="DEFAULT"))
    assert definitions(rabbit, live.values["vhost"]) == wanted

    # copy live -> test: test gets live's definitions (and loses its own)
    with Connection(broker_url(test), connect_timeout=10) as conn:
        Queue("own", durable=True)(conn.default_channel).declare()
    succeeded(ctx, backups.copy(ctx, "shop", "DEFAULT", "live", "test", confirm="DEFAULT"))
    assert definitions(rabbit, test.values["vhost"]) == wanted

    for b in backups.list_backups(ctx, "shop"):
        succeeded(ctx, backups.delete(ctx, int(b["id"])))
