"""RabbitMQ backups (tether.backups.rabbitmq) on the suite's real RabbitMQ, with vhosts made by the
real RabbitMQProvider and topology declared by a real AMQP client as the instance: sealed round
trips into the same and into another vhost, "replace" semantics, hostile uploads kept inside the
vhost, damaged backups refused with the vhost left as it was."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.fernet import Fernet
from kombu import Connection, Exchange, Queue

from tests.integration.rabbitmq.conftest import RabbitServer
from tether.backups.postgres import BackupError
from tether.backups.rabbitmq import (
    FORMAT,
    NotARabbitBackup,
    RabbitAdmin,
    RabbitTarget,
    dump_sealed,
    dump_stream,
    restore_sealed,
    restore_stream,
    summary,
)
from tether.backups.sealed import ChecksumMismatch, DamagedChunk, file_sha256, write_sealed
from tether.crypto import SecretBox
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.rabbitmq import RabbitMQProvider, broker_url

pytestmark = pytest.mark.integration

PROVIDER = RabbitMQProvider()


@dataclass(frozen=True)
class Vhost:
    names: ResourceNames
    creds: Credentials
    target: RabbitTarget


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def cluster(rabbit: RabbitServer) -> ClusterSpec:
    return ClusterSpec(id=1, kind="rabbitmq", region="local", url=rabbit.admin_url,
                       settings=rabbit.settings)


@pytest.fixture
def admin(cluster: ClusterSpec) -> RabbitAdmin:
    return RabbitAdmin.from_cluster(cluster)


@pytest.fixture
def instance(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], Vhost]]:
    """Provision vhosts with the real provider (deprovisioned at the end)."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> Vhost:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        return Vhost(names, creds, RabbitTarget.from_credentials(creds.values))

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


def mgmt(rabbit: RabbitServer, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{rabbit.api}/api{path}", json=body, timeout=30,
                         auth=(rabbit.admin_user, rabbit.admin_password))


def fill(vhost: Vhost, rabbit: RabbitServer) -> None:
    """Exchanges of four types, queues with arguments, queue and exchange bindings (one with
    binding arguments), a policy, and messages, declared as the instance (AMQP)."""
    with Connection(broker_url(vhost.creds)) as conn:
        channel = conn.default_channel
        events = Exchange("events", "topic", durable=True)
        fan = Exchange("fan", "fanout", durable=True, auto_delete=False)
        hdr = Exchange("hdr", "headers", durable=True)
        direct = Exchange("inner", "direct", durable=True, internal=False,
                          arguments={"alternate-exchange": "fan"})
        for exchange in (events, fan, hdr, direct):
            exchange(channel).declare()
        Queue("orders", events, routing_key="order.#", durable=True,
              queue_arguments={"x-max-length": 1000, "x-message-ttl": 60000})(channel).declare()
        Queue("audit", fan, durable=True,
              queue_arguments={"x-queue-mode": "lazy"})(channel).declare()
        Queue("tmp", durable=False, auto_delete=True)(channel).declare()
        Queue("pdf", hdr, durable=True, binding_arguments={"x-match": "all",
                                                          "type": "pdf"})(channel).declare()
        channel.exchange_bind(destination="fan", source="events", routing_key="audit.*")
        conn.Producer().publish(b"a message", exchange="events", routing_key="order.new")
    response = mgmt(rabbit, "PUT", f"/policies/{quote(vhost.names.base, safe='')}/limit",
                    {"pattern": "^orders$", "definition": {"max-length": 500},
                     "apply-to": "queues", "priority": 1})
    assert response.status_code in (201, 204), response.text


def queue_names(vhost: Vhost, rabbit: RabbitServer) -> dict[str, int]:
    """Queue name -> messages ready, as the admin sees them."""
    queues = mgmt(rabbit, "GET", f"/queues/{quote(vhost.names.base, safe='')}").json()
    return {q["name"]: int(q.get("messages") or 0) for q in queues}


def messages(vhost: Vhost, queue: str) -> int:
    with Connection(broker_url(vhost.creds)) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def wipe(vhost: Vhost) -> None:
    """Delete everything the instance declared, as the instance (AMQP)."""
    with Connection(broker_url(vhost.creds)) as conn:
        channel = conn.default_channel
        for queue in ("orders", "audit", "tmp", "pdf"):
            channel.queue_delete(queue)
        for exchange in ("events", "fan", "hdr", "inner"):
            channel.exchange_delete(exchange)


def sealed(vhost: Vhost, admin: RabbitAdmin, box: SecretBox, path: Path) -> tuple[str, str]:
    info = dump_sealed(vhost.target, path, box, admin)
    return info.key_sealed, info.sha256


def test_round_trip_into_the_same_vhost(instance: Callable[[str], Vhost], admin: RabbitAdmin,
                                        rabbit: RabbitServer, box: SecretBox,
                                        tmp_path: Path) -> None:
    live = instance("a")
    fill(live, rabbit)
    before = summary(live.target, admin)
    assert len(before.exchanges) == 4 and len(before.queues) == 4
    assert len(before.bindings) == 4 and len(before.policies) == 1
    assert any('"x-match":"all"' in b for b in before.bindings)
    assert any('"destination_type":"exchange"' in b for b in before.bindings)
    key, sha = sealed(live, admin, box, tmp_path / "b.sealed")

    wipe(live)
    mgmt(rabbit, "DELETE", f"/policies/{quote(live.names.base, safe='')}/limit")
    assert summary(live.target, admin) != before
    restore_sealed(live.target, tmp_path / "b.sealed", key, box, sha, admin)
    after = summary(live.target, admin)
    assert after == before
    assert queue_names(live, rabbit).keys() == {"orders", "audit", "tmp", "pdf"}


def test_the_backup_holds_definitions_not_messages(instance: Callable[[str], Vhost],
                                                   admin: RabbitAdmin,
                                                   rabbit: RabbitServer) -> None:
    live = instance("a")
    fill(live, rabbit)
    assert messages(live, "orders") == 1
    doc = json.loads(b"".join(dump_stream(live.target, admin)))
    assert doc["format"] == FORMAT and doc["vhost"] == live.names.base
    assert set(doc) == {"format", "vhost", "rabbit_version", "exchanges", "queues", "bindings",
                        "policies"}  # no users, permissions, limits or parameters
    assert "a message" not in json.dumps(doc)


def test_restore_replaces_what_differs_and_keeps_equal_queues(
        instance: Callable[[str], Vhost], admin: RabbitAdmin, rabbit: RabbitServer,
        box: SecretBox, tmp_path: Path) -> None:
    live = instance("a")
    fill(live, rabbit)
    before = summary(live.target, admin)
    key, sha = sealed(live, admin, box, tmp_path / "b.sealed")
    with Connection(broker_url(live.creds)) as conn:
        channel = conn.default_channel
        Queue("extra", durable=True)(channel).declare()  # not in the backup
        channel.queue_delete("audit")  # back with other arguments
        Queue("audit", durable=True, queue_arguments={"x-max-length": 3})(channel).declare()
        channel.exchange_unbind(destination="fan", source="events", routing_key="audit.*")
        channel.queue_bind("orders", "events", routing_key="stray.#")
        channel.exchange_delete("hdr")  # its binding goes with it
    mgmt(rabbit, "PUT", f"/policies/{quote(live.names.base, safe='')}/stray",
         {"pattern": "^extra$", "definition": {"max-length": 1}, "apply-to": "queues"})

    restore_sealed(live.target, tmp_path / "b.sealed", key, box, sha, admin)
    assert summary(live.target, admin) == before
    assert "extra" not in queue_names(live, rabbit)
    assert messages(live, "orders") == 1  # an equal queue is kept with its messages


def test_restore_into_another_vhost(instance: Callable[[str], Vhost], admin: RabbitAdmin,
                                    rabbit: RabbitServer, box: SecretBox,
                                    tmp_path: Path) -> None:
    live, test = instance("a"), instance("b")
    fill(live, rabbit)
    key, sha = sealed(live, admin, box, tmp_path / "b.sealed")
    restore_sealed(test.target, tmp_path / "b.sealed", key, box, sha, admin)
    assert summary(test.target, admin) == summary(live.target, admin)
    # the instance's own user uses the restored topology
    with Connection(broker_url(test.creds)) as conn:
        conn.Producer().publish(b"x", exchange="events", routing_key="order.1")
    assert messages(test, "orders") == 1
    assert messages(live, "orders") == 1


def test_a_damaged_sealed_backup_changes_nothing(instance: Callable[[str], Vhost],
                                                 admin: RabbitAdmin, rabbit: RabbitServer,
                                                 box: SecretBox, tmp_path: Path) -> None:
    live = instance("a")
    fill(live, rabbit)
    path = tmp_path / "small.sealed"
    # small chunks: damage past the first chunk is only found while reading
    info = write_sealed(path, dump_stream(live.target, admin), box, chunk_size=64)
    with Connection(broker_url(live.creds)) as conn:
        Queue("extra", durable=True)(conn.default_channel).declare()
    changed = summary(live.target, admin)

    data = bytearray(path.read_bytes())
    data[-200] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        restore_sealed(live.target, path, info.key_sealed, box, info.sha256, admin)
    with pytest.raises(DamagedChunk):  # the record replaced too: found by authentication
        restore_sealed(live.target, path, info.key_sealed, box, file_sha256(path), admin)
    assert summary(live.target, admin) == changed
    assert "extra" in queue_names(live, rabbit)


def test_a_hostile_upload_stays_inside_the_vhost(instance: Callable[[str], Vhost],
                                                 admin: RabbitAdmin, rabbit: RabbitServer,
                                                 unique_id: str) -> None:
    live = instance("a")
    evil_user, evil_vhost = f"evil{unique_id}", f"evil_vhost{unique_id}"
    doc = {
        "rabbit_version": "3.10.8",
        "users": [{"name": evil_user, "password_hash": "", "tags": "administrator"}],
        "vhosts": [{"name": evil_vhost}],
        "permissions": [{"user": evil_user, "vhost": "/", "configure": ".*", "write": ".*",
                         "read": ".*"}],
        "topic_permissions": [{"user": live.names.base, "vhost": "/", "exchange": ".*",
                               "write": ".*", "read": ".*"}],
        "parameters": [{"vhost": live.names.base, "component": "vhost-limits",
                        "name": "limits", "value": {"max-queues": 1}}],
        "global_parameters": [{"name": "cluster_name", "value": f"pwned{unique_id}"}],
        "queues": [{"name": "q", "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {}}],
        "exchanges": [{"name": "x", "vhost": "/", "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "bindings": [{"source": "x", "vhost": "/", "destination": "q",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
        "policies": [],
    }
    restore_stream(live.target, [json.dumps(doc).encode()], admin)
    assert queue_names(live, rabbit) == {"q": 0}
    assert mgmt(rabbit, "GET", "/queues/%2F/q").status_code == 404
    assert mgmt(rabbit, "GET", f"/users/{evil_user}").status_code == 404
    assert mgmt(rabbit, "GET", f"/vhosts/{evil_vhost}").status_code == 404
    assert mgmt(rabbit, "GET", f"/permissions/%2F/{live.names.base}").status_code == 404
    assert mgmt(rabbit, "GET", f"/topic-permissions/%2F/{live.names.base}").status_code == 404
    limits = mgmt(rabbit, "GET", f"/vhost-limits/{live.names.base}").json()
    assert limits[0]["value"]["max-queues"] == 1000
    name = mgmt(rabbit, "GET", "/global-parameters/cluster_name")
    assert f"pwned{unique_id}" not in name.text
    assert PROVIDER.observe(ClusterSpec(id=1, kind="rabbitmq", region="local",
                                        url=rabbit.admin_url, settings=rabbit.settings),
                            live.names).differences == ()


@pytest.mark.parametrize("content", [
    b"not json", b"[]", b'{"format": "search-ndjson-1", "queues": []}',
    b'{"queues": [{"name": "q", "durable": "yes"}]}',
    b'{"queues": [{"name": "a", "vhost": "v1"}, {"name": "b", "vhost": "v2"}]}',
    b'{"bindings": [{"source": "x", "destination": "q", "destination_type": "table"}]}',
    b'{"queues": [{"name": "q"}, {"name": "q", "durable": false}]}',
])
def test_a_malformed_backup_is_refused_before_any_change(
        instance: Callable[[str], Vhost], admin: RabbitAdmin, rabbit: RabbitServer,
        content: bytes) -> None:
    live = instance("a")
    fill(live, rabbit)
    before = summary(live.target, admin)
    with pytest.raises(NotARabbitBackup):
        restore_stream(live.target, [content], admin)
    assert summary(live.target, admin) == before


def test_the_instance_user_cannot_read_definitions(instance: Callable[[str], Vhost],
                                                   rabbit: RabbitServer) -> None:
    """Why the admin is needed: the instance's user has no tags, the management API refuses
    it; the message says an administrator is needed and holds no password."""
    live = instance("a")
    as_instance = RabbitAdmin(api=f"{rabbit.api}/api", where="rabbit", user=live.target.user,
                              password=live.target.password)
    with pytest.raises(BackupError) as caught:
        list(dump_stream(live.target, as_instance))
    assert "administrator" in caught.value.message
    assert live.target.password not in caught.value.message
    assert live.target.password not in repr(live.target)
    assert rabbit.admin_password not in repr(RabbitAdmin.from_cluster(ClusterSpec(
        id=1, kind="rabbitmq", region="local", url=rabbit.admin_url)))
