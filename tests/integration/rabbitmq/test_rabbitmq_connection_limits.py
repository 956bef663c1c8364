"""Fair shares on a shared RabbitMQ (issue 8, finding 5): each instance's vhost gets the limits
`max-connections` and `max-queues` (the cluster settings `connection_limit` and `queue_limit`),
so a tenant at its limit is refused over AMQP and another tenant still connects."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from amqp.exceptions import AMQPError
from kombu import Connection

from tests.integration.rabbitmq.conftest import RabbitServer
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.rabbitmq import RabbitMQProvider, broker_url
from tether.providers.registry import provider_class

pytestmark = pytest.mark.integration

PROVIDER = RabbitMQProvider()
LIMIT = 3
QUEUES = 4


def spec(rabbit: RabbitServer, private: bool = False, **settings: Any) -> ClusterSpec:
    return ClusterSpec(id=1, kind="rabbitmq", region="local", url=rabbit.admin_url,
                       private=private, settings={**rabbit.settings, **settings})


def connect(creds: Credentials) -> Connection:
    conn = Connection(broker_url(creds), connect_timeout=5)
    try:
        conn.connect()
    except BaseException:
        conn.release()
        raise
    return conn


def vhost_limits(rabbit: RabbitServer, vhost: str) -> dict[str, int]:
    response = httpx.get(f"{rabbit.api}/api/vhost-limits/{vhost}", timeout=30,
                         auth=(rabbit.admin_user, rabbit.admin_password))
    response.raise_for_status()
    found: dict[str, int] = {}
    for entry in response.json():
        found.update(entry["value"])
    return found


def refused(creds: Credentials, within: float = 15.0) -> Exception:
    """The error of a connection beyond the limit. RabbitMQ counts a vhost's connections
    asynchronously: a connection opened just after others may still get through, so it is
    closed and tried again until refused (never, without a limit)."""
    deadline = time.monotonic() + within
    while True:
        try:
            connect(creds).release()
        except (AMQPError, OSError) as exc:
            return exc
        assert time.monotonic() < deadline, "a connection beyond the vhost's limit got through"
        time.sleep(0.5)


@pytest.fixture
def limited(rabbit: RabbitServer) -> ClusterSpec:
    return spec(rabbit, connection_limit=LIMIT, queue_limit=QUEUES)


@pytest.fixture
def make_names(rabbit: RabbitServer,
               unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this run; whatever they name is deprovisioned at the end."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> ResourceNames:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        return names

    yield make
    for names in made:
        PROVIDER.deprovision(spec(rabbit), names)


def test_a_tenant_at_its_limit_is_refused_and_another_still_connects(
        rabbit: RabbitServer, limited: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("a")
    a = PROVIDER.provision(limited, names, secrets.token_urlsafe(24))
    b = PROVIDER.provision(limited, make_names("b"), secrets.token_urlsafe(24))
    assert vhost_limits(rabbit, names.base) == {"max-connections": LIMIT, "max-queues": QUEUES}
    with contextlib.ExitStack() as held:
        for _ in range(LIMIT):
            held.callback(connect(a).release)
        error = refused(a)
        assert "connection limit" in str(error), error
        other = connect(b)  # the other tenant is not locked out
        try:
            other.default_channel.queue_declare("work", auto_delete=True)
        finally:
            other.release()


def test_queues_beyond_the_limit_are_refused(
        limited: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    creds = PROVIDER.provision(limited, make_names("q"), secrets.token_urlsafe(24))
    conn = connect(creds)
    try:
        channel = conn.channel()
        for i in range(QUEUES):
            channel.queue_declare(f"q{i}")
        with pytest.raises(AMQPError) as err:
            channel.queue_declare(f"q{QUEUES}")
        assert "queue limit" in str(err.value), err.value
    finally:
        conn.release()


def test_the_limits_are_applied_again_when_provisioned_again_and_their_drift_is_seen(
        rabbit: RabbitServer, limited: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("r")
    secret = secrets.token_urlsafe(24)
    PROVIDER.provision(limited, names, secret)
    assert PROVIDER.observe(limited, names).in_sync
    httpx.delete(f"{rabbit.api}/api/vhost-limits/{names.base}/max-connections", timeout=30,
                 auth=(rabbit.admin_user, rabbit.admin_password)).raise_for_status()
    assert PROVIDER.observe(limited, names).differences == (
        f"vhost {names.base} has max-connections none, not {LIMIT}",)
    PROVIDER.provision(limited, names, secret)  # the repair, idempotent
    PROVIDER.provision(limited, names, secret)
    assert vhost_limits(rabbit, names.base) == {"max-connections": LIMIT, "max-queues": QUEUES}
    assert PROVIDER.observe(limited, names).in_sync


def test_defaults_shared_clusters_have_limits_private_ones_none(
        rabbit: RabbitServer, make_names: Callable[[str], ResourceNames]) -> None:
    shared, private = make_names("s"), make_names("p")
    PROVIDER.provision(spec(rabbit), shared, secrets.token_urlsafe(24))
    PROVIDER.provision(spec(rabbit, private=True), private, secrets.token_urlsafe(24))
    defaults = provider_class("rabbitmq").limits
    assert vhost_limits(rabbit, shared.base) == {
        "max-connections": defaults["connection_limit"], "max-queues": defaults["queue_limit"]}
    assert vhost_limits(rabbit, private.base) == {}
    assert PROVIDER.observe(spec(rabbit, private=True), private).in_sync
