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
from tests.plane import plane, wait_op
from tether.actions import backups, clusters, projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.providers.base import Credentials
from tether.providers.rabbitmq import broker_url
from tether.store.models import BackupFile, Environment, Instance

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, rabbit: RabbitServer,
        unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the suite's RabbitMQ and a local-files cluster for the backups; a project
    with DEFAULT provisioned in test and live; every instance removed at the end."""
    with plane(tmp_path, "rabbitmq", "local", rabbit.admin_url, f"rabbit{unique_id}",
               settings=rabbit.settings) as made:
        ctx, _ = made
        media = tmp_path / "media"
        media.mkdir()
        clusters.add_cluster(ctx, "local-files", "local", f"file://{media}", name="media",
                             settings={"base_dir": str(media),
                                       "public_url": "http://127.0.0.1:1/media/"})
        projects.create_project(ctx, "shop")
        try:
            for e in ("test", "live"):
                view = services.add(ctx, "shop", e, "rabbitmq", "DEFAULT", provision=True)
                assert wait_op(ctx, view["operation"]["id"])["status"] == "succeeded"
            yield made
        finally:
            for e in ("test", "live"):
                for inst in services.list_instances(ctx, "shop", e):
                    view = services.remove(ctx, "shop", e, str(inst["prefix"]),
                                           str(inst["prefix"]))
                    if view.get("operation"):
                        wait_op(ctx, view["operation"]["id"])


def creds(ctx: Context, env_name: str) -> Credentials:
    with ctx.store.session() as s:
        for inst in s.scalars(select(Instance).where(Instance.prefix == "DEFAULT",
                                                     Instance.state != "removed")):
            e = s.get(Environment, inst.environment_id)
            if e is not None and e.name == env_name:
                return Credentials(ctx.box.open(inst.credentials_enc))
    raise AssertionError(f"no DEFAULT in {env_name}")


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


def succeeded(ctx: Context, view: dict[str, Any]) -> None:
    """Wait for the view's operation; it succeeded (else its error is the failure's message)."""
    assert view["operation"] is not None
    op = wait_op(ctx, view["operation"]["id"], timeout=120)
    assert op["status"] == "succeeded", op["error"]


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
