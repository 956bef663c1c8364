"""Credential rotation without downtime on RabbitMQ (issue 8): a second user `NAME_<n>` with the
same permission on the instance's vhost, deployed, then the old user deleted and its connections
closed. Real broker, real application process, no mocks."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp
import httpx
import pytest
from sqlalchemy import select

from tests.integration.rabbitmq.conftest import RabbitServer
from tests.integration.rotation_app import instance_row, observe, zero_downtime_rotation
from tests.integration.rotation_drift import drift_during_a_rotation
from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.errors import ClusterError
from tether.naming import resource_names
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.rabbitmq import RabbitMQProvider, broker_url
from tether.runtime.process import ProcessRuntime
from tether.store.models import Cluster, Instance
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration

PROVIDER = RabbitMQProvider()


def connection(url: str) -> amqp.Connection:
    """An AMQP login with a broker URL (the app does the same)."""
    parts = urlsplit(url)
    conn = amqp.Connection(host=f"{parts.hostname}:{parts.port}",
                           userid=unquote(parts.username or ""),
                           password=unquote(parts.password or ""),
                           virtual_host=unquote(parts.path[1:]), connect_timeout=5)
    conn.connect()
    return conn


def logs_in(url: str) -> bool:
    try:
        conn = connection(url)
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed, ConnectionError,
            OSError):
        return False
    conn.close()
    return True


def users(rabbit: RabbitServer, base: str) -> list[str]:
    listed = httpx.get(f"{rabbit.api}/api/users", auth=(rabbit.admin_user,
                                                        rabbit.admin_password), timeout=30)
    listed.raise_for_status()
    return sorted(u["name"] for u in listed.json()
                  if u["name"] == base or u["name"].startswith(base + "_"))


def closed(conn: amqp.Connection, within: float = 20) -> bool:
    """Whether the broker closes a connection within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.5)
        except TimeoutError:
            continue
        except (amqp.exceptions.ConnectionForced, ConnectionError, OSError,
                amqp.exceptions.RecoverableConnectionError):
            return True
    return False


def test_a_second_user_works_beside_the_first_until_the_first_is_revoked(
        rabbit: RabbitServer, unique_id: str) -> None:
    cluster = ClusterSpec(id=1, kind="rabbitmq", region="local", url=rabbit.admin_url,
                          settings=rabbit.settings)
    names = ResourceNames(base=f"tether_t{unique_id}r")
    try:
        first = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        second_names = names.rotated(1)
        second = PROVIDER.add_login(cluster, second_names, secrets.token_urlsafe(24))
        assert second.values["user"] == f"{names.base}_1"
        assert second.values["vhost"] == names.base
        assert PROVIDER.add_login(cluster, second_names, str(second.values["password"])) == \
            second  # idempotent: a retry converges to the same user
        assert logs_in(broker_url(first)) and logs_in(broker_url(second))
        held = connection(broker_url(first))  # the running release's connection
        try:
            assert PROVIDER.observe(cluster, second_names).differences == (
                f"user {names.base} has a permission on vhost {names.base}",)
            PROVIDER.revoke_login(cluster, second_names, names.base)
            PROVIDER.revoke_login(cluster, second_names, names.base)  # idempotent
            assert closed(held), "the old user's open connection was not closed"
        finally:
            held.collect()
        assert not logs_in(broker_url(first)) and logs_in(broker_url(second))
        assert users(rabbit, names.base) == [second_names.login]
        assert PROVIDER.observe(cluster, second_names).differences == ()
        assert PROVIDER.provision(cluster, second_names, str(second.values["password"])) == \
            second  # a repair keeps the rotated state
        assert users(rabbit, names.base) == [second_names.login]

        third_names = names.rotated(2)
        third = PROVIDER.add_login(cluster, third_names, secrets.token_urlsafe(24))
        with pytest.raises(ClusterError, match="refusing to revoke"):
            PROVIDER.revoke_login(cluster, third_names, third_names.login)
        PROVIDER.revoke_login(cluster, third_names, second_names.login)
        assert not logs_in(broker_url(second)) and logs_in(broker_url(third))
        assert PROVIDER.observe(cluster, third_names).differences == ()
    finally:
        PROVIDER.deprovision(cluster, names)
    assert users(rabbit, names.base) == []  # every login went with it
    assert not PROVIDER.exists(cluster, names)


@pytest.fixture
def plane(tmp_path: Path, rabbit: RabbitServer) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "rabbitmq", "local", rabbit.admin_url, "rabbit",
                    settings=rabbit.settings, runtime=ProcessRuntime()) as (ctx, engine):
        yield ctx, engine
        with ctx.store.session() as s:
            spec = cluster_spec(ctx.box, s.scalars(select(Cluster)).one())
            ids = list(s.scalars(select(Instance.id)))
    for inst_id in ids:
        PROVIDER.deprovision(spec, resource_names(inst_id))


def test_the_app_keeps_serving_through_a_rotation_and_the_old_password_stops_working(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    ctx, _ = plane
    zero_downtime_rotation(ctx, tmp_path, f"mqr{unique_id}", "rabbitmq", logs_in)


def test_a_detached_instance_is_rotated_and_revoked_at_once(
        plane: tuple[Context, Engine], rabbit: RabbitServer, unique_id: str) -> None:
    ctx, _ = plane
    name = f"mqd{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "rabbitmq", "DEFAULT", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    old = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    op: dict[str, Any] = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"] is None, op
    new = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    assert not logs_in(broker_url(old)) and logs_in(broker_url(new))
    assert observe(ctx, name) == ()
    removed = services.remove(ctx, name, "test", "DEFAULT", "DEFAULT")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    assert users(rabbit, f"tether_i{added['id']}") == []


def test_drift_during_a_rotation_is_reported_not_repaired_until_the_deployment(
        plane: tuple[Context, Engine], tmp_path: Path, rabbit: RabbitServer,
        unique_id: str) -> None:
    """Second review, finding 8: the pass skipped an instance whose old login a running release
    still used, so a permission on another vhost given to that login, or a vhost limit
    changed, went unnoticed until the next deployment."""
    ctx, _ = plane
    other = f"tether_t{unique_id}other"  # a vhost of no instance
    api, auth = f"{rabbit.api}/api", (rabbit.admin_user, rabbit.admin_password)

    def make_drift(base: str) -> None:
        httpx.put(f"{api}/vhosts/{other}", auth=auth, timeout=30).raise_for_status()
        httpx.put(f"{api}/permissions/{other}/{base}", auth=auth, timeout=30,
                  json={"configure": "", "write": "", "read": ".*"}).raise_for_status()
        httpx.put(f"{api}/vhost-limits/{base}/max-connections", auth=auth, timeout=30,
                  json={"value": 50}).raise_for_status()

    try:
        drift_during_a_rotation(
            ctx, tmp_path, f"mqdr{unique_id}", "rabbitmq", logs_in, make_drift,
            lambda base: [f"user {base} has a permission on vhost {other}",
                          f"vhost {base} has max-connections 50"])
    finally:
        httpx.delete(f"{api}/vhosts/{other}", auth=auth, timeout=30)
