"""RabbitMQProvider against a real RabbitMQ (management API for administration, a real AMQP client
for the application side): credential isolation, the admin's own rights on tenant vhosts,
idempotence, removal and clear check() errors. No mocks."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from amqp.exceptions import AccessRefused, NotAllowed
from kombu import Connection, Exchange, Queue

from tests.integration.provider_contract import (
    check_final,
    check_observe_follows_provision,
    check_unreachable_is_transient,
)
from tests.integration.rabbitmq.conftest import RabbitServer
from tether.errors import ClusterError
from tether.net import free_port
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.rabbitmq import RabbitMQProvider, _Target, broker_url

pytestmark = pytest.mark.integration

PROVIDER = RabbitMQProvider()


def spec(url: str, rabbit: RabbitServer) -> ClusterSpec:
    return ClusterSpec(id=1, kind="rabbitmq", region="local", url=url, settings=rabbit.settings)


def url_for(rabbit: RabbitServer, user: str, password: str) -> str:
    """The management URL of the test server with other credentials."""
    scheme, rest = rabbit.api.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}/"


class Admin:
    """The management API as the test server's admin, for looking behind the provider."""

    def __init__(self, rabbit: RabbitServer) -> None:
        self.rabbit = rabbit
        self.auth = (rabbit.admin_user, rabbit.admin_password)

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{self.rabbit.api}/api{path}", auth=self.auth, json=body,
                             timeout=30)

    def status(self, path: str) -> int:
        return self.request("GET", path).status_code

    def get(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()


def amqp_url(creds: Credentials, vhost: str | None = None, password: str | None = None) -> str:
    values = dict(creds.values)
    if vhost is not None:
        values["vhost"] = vhost
    if password is not None:
        values["password"] = password
    return broker_url(Credentials(values))


def connect(url: str) -> Connection:
    conn = Connection(url, connect_timeout=5)
    try:
        conn.connect()
    except BaseException:
        conn.release()
        raise
    return conn


@pytest.fixture
def admin(rabbit: RabbitServer) -> Admin:
    return Admin(rabbit)


@pytest.fixture
def cluster(rabbit: RabbitServer) -> ClusterSpec:
    return spec(rabbit.admin_url, rabbit)


@pytest.fixture
def make_names(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this run; whatever they name is deprovisioned at the end."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> ResourceNames:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        return names

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


@pytest.fixture
def make_user(admin: Admin, unique_id: str) -> Iterator[Callable[[str], tuple[str, str]]]:
    """Make a user with the given tags on the server; returns (name, password)."""
    made: list[str] = []

    def make(tags: str) -> tuple[str, str]:
        name = f"tether_t{unique_id}u{len(made)}"
        password = secrets.token_urlsafe(12)
        admin.request("PUT", f"/users/{name}", {"password": password, "tags": tags}
                      ).raise_for_status()
        made.append(name)
        return name, password

    yield make
    for name in made:
        admin.request("DELETE", f"/users/{name}")


# -- provisioning -------------------------------------------------------------------------------


def test_check_returns_the_version(cluster: ClusterSpec) -> None:
    assert re.fullmatch(r"\d+(\.\d+)+", PROVIDER.check(cluster))


def test_provision_twice_is_idempotent(cluster: ClusterSpec, admin: Admin,
                                       make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("a")
    secret = secrets.token_urlsafe(24)
    first = PROVIDER.provision(cluster, names, secret)
    second = PROVIDER.provision(cluster, names, secret)
    assert first == second
    assert set(first.values) == {"user", "password", "host", "port", "vhost"}
    assert first.values["user"] == names.base and first.values["vhost"] == names.base
    assert PROVIDER.exists(cluster, names)
    assert [v["name"] for v in admin.get("/vhosts")].count(names.base) == 1
    assert admin.get(f"/users/{names.base}")["tags"] in ([], "")  # no management, no admin
    with connect(amqp_url(second)) as conn:
        conn.default_channel  # noqa: B018 -- opening a channel proves the vhost is usable


def test_broker_url_round_trips_a_message(cluster: ClusterSpec,
                                          make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("m")
    creds = PROVIDER.provision(cluster, names, "p@ss/word:%" + secrets.token_hex(6))
    default = PROVIDER.env_vars("DEFAULT", creds)
    assert set(default) == {"DEFAULT_AMQP_BROKER_URL", "BROKER_URL"}
    assert default["BROKER_URL"] == default["DEFAULT_AMQP_BROKER_URL"]
    assert default["BROKER_URL"].startswith(f"amqp://{names.base}:")
    assert default["BROKER_URL"].endswith(f"/{names.base}")
    assert set(PROVIDER.env_vars("WORKERS", creds)) == {"WORKERS_AMQP_BROKER_URL"}

    with Connection(default["BROKER_URL"], connect_timeout=5) as conn:  # as an app gets it
        queue = conn.SimpleQueue("tether-test-jobs")
        try:
            queue.put({"job": 42})
            message = queue.get(timeout=10)
            assert message.payload == {"job": 42}
            message.ack()
        finally:
            queue.close()


def test_credentials_reach_only_their_own_vhost(
        cluster: ClusterSpec, rabbit: RabbitServer,
        make_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_names("a"), make_names("b")
    creds_a = PROVIDER.provision(cluster, a, secrets.token_urlsafe(24))
    creds_b = PROVIDER.provision(cluster, b, secrets.token_urlsafe(24))
    with connect(amqp_url(creds_a)):
        pass
    with pytest.raises(NotAllowed, match="530"):
        connect(amqp_url(creds_b, vhost=a.base))
    with pytest.raises(NotAllowed, match="530"):
        connect(amqp_url(creds_a, vhost=b.base))
    with pytest.raises(NotAllowed, match="530"):
        connect(amqp_url(creds_a, vhost="/"))
    with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
        connect(amqp_url(creds_a, password="not-" + str(creds_a.values["password"])))
    # and no management API for tenants
    response = httpx.get(f"{rabbit.api}/api/overview", timeout=10,
                         auth=(str(creds_a.values["user"]), str(creds_a.values["password"])))
    assert response.status_code == 401


def test_the_admin_has_no_permission_left_on_tenant_vhosts(
        cluster: ClusterSpec, rabbit: RabbitServer, admin: Admin,
        make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("v")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    permissions = admin.get(f"/vhosts/{names.base}/permissions")
    assert [(p["user"], p["configure"], p["write"], p["read"]) for p in permissions] == [
        (names.base, ".*", ".*", ".*")]
    assert admin.get(f"/vhosts/{names.base}/topic-permissions") == []
    assert names.base not in {p["vhost"] for p in
                              admin.get(f"/users/{rabbit.admin_user}/permissions")}
    admin_creds = Credentials({**creds.values, "user": rabbit.admin_user,
                               "password": rabbit.admin_password})
    with pytest.raises(NotAllowed, match="530"):
        connect(amqp_url(admin_creds))


def test_provision_again_with_another_secret_rotates_the_password(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("r")
    old = PROVIDER.provision(cluster, names, "first-" + secrets.token_urlsafe(12))
    new = PROVIDER.provision(cluster, names, "second-" + secrets.token_urlsafe(12))
    with connect(amqp_url(new)):
        pass
    with pytest.raises(AccessRefused):
        connect(amqp_url(old))


def test_remove_deletes_the_vhost_its_queues_and_the_user(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("d")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    exchange = Exchange("tether-test", type="direct", durable=True)
    queue = Queue("tether-test-kept", exchange, routing_key="kept", durable=True)
    app = connect(amqp_url(creds))
    try:
        with app.Producer() as producer:
            producer.publish({"kept": True}, exchange=exchange, routing_key="kept",
                             declare=[queue], delivery_mode=2)
        assert admin.status(f"/queues/{names.base}/tether-test-kept") == 200
        PROVIDER.deprovision(cluster, names)
    finally:
        app.release()
    assert admin.status(f"/queues/{names.base}/tether-test-kept") == 404
    assert admin.status(f"/vhosts/{names.base}") == 404
    assert admin.status(f"/users/{names.base}") == 404
    assert not [q for q in admin.get("/queues") if q["vhost"] == names.base]
    assert not PROVIDER.exists(cluster, names)
    with pytest.raises(AccessRefused):
        connect(amqp_url(creds))
    PROVIDER.deprovision(cluster, names)  # already gone: still succeeds


def test_a_vhost_of_someone_else_is_never_taken_over(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("o")
    admin.request("PUT", f"/vhosts/{names.base}", {"description": "someone's"}
                  ).raise_for_status()
    try:
        with pytest.raises(ClusterError, match="exists already"):
            PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        assert admin.status(f"/users/{names.base}") == 404
        assert not PROVIDER.exists(cluster, names)
        PROVIDER.deprovision(cluster, names)
        assert admin.status(f"/vhosts/{names.base}") == 200  # not ours: left alone
    finally:
        admin.request("DELETE", f"/vhosts/{names.base}")


def test_a_tagged_user_of_that_name_is_never_taken_over(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("t")
    password = secrets.token_urlsafe(12)
    admin.request("PUT", f"/users/{names.base}", {"password": password, "tags": "monitoring"}
                  ).raise_for_status()
    try:
        with pytest.raises(ClusterError, match="exists already"):
            PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        assert admin.status(f"/vhosts/{names.base}") == 404
        PROVIDER.deprovision(cluster, names)
        assert admin.get(f"/users/{names.base}")["tags"] == ["monitoring"]
    finally:
        admin.request("DELETE", f"/users/{names.base}")


# -- drift: observe, repair by provisioning again --------------------------------------------------


def test_observe_is_in_sync_after_provision_and_absent_after_deprovision(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    check_observe_follows_provision(PROVIDER, cluster, make_names("s"))


def test_the_admin_permission_granted_again_is_found_and_removed(
        cluster: ClusterSpec, rabbit: RabbitServer, admin: Admin,
        make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("p")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    v, u = names.base, rabbit.admin_user
    admin.request("PUT", f"/permissions/{v}/{quote(u, safe='')}",
                  {"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    admin_creds = Credentials({**creds.values, "user": u, "password": rabbit.admin_password})
    with connect(amqp_url(admin_creds)):  # the hole is real
        pass
    assert PROVIDER.observe(cluster, names).differences == (
        f"user {u} has a permission on vhost {v}",)
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync
    with pytest.raises(NotAllowed, match="530"):
        connect(amqp_url(admin_creds))


def test_tags_and_permissions_changed_by_hand_are_reset(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names, other = make_names("q"), make_names("w")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    v = names.base
    admin.request("PUT", f"/users/{v}", {"password": str(creds.values["password"]),
                                         "tags": "administrator"}).raise_for_status()
    admin.request("PUT", f"/permissions/{v}/{v}",
                  {"configure": "", "write": ".*", "read": ".*"}).raise_for_status()
    admin.request("PUT", f"/permissions/{other.base}/{v}",
                  {"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    assert set(PROVIDER.observe(cluster, names).differences) == {
        f"user {v} has the tags administrator",
        f"the permission of user {v} on vhost {v} is configure='' write='.*' read='.*', not "
        "'.*' for all",
        f"user {v} has a permission on vhost {other.base}"}
    assert PROVIDER.observe(cluster, other).differences == (
        f"user {v} has a permission on vhost {other.base}",)
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync
    assert PROVIDER.observe(cluster, other).in_sync
    assert admin.get(f"/users/{v}")["tags"] in ([], "")


def test_a_deleted_vhost_is_found_and_made_again_empty(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("x")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    admin.request("DELETE", f"/vhosts/{names.base}").raise_for_status()
    assert PROVIDER.observe(cluster, names).differences == (
        f"vhost {names.base} is missing: its data is lost (a repair makes it again, EMPTY)",)
    assert PROVIDER.provision(cluster, names, str(creds.values["password"])) == creds
    assert PROVIDER.observe(cluster, names).in_sync
    with connect(amqp_url(creds)) as conn:
        conn.default_channel  # noqa: B018 -- opening a channel proves the vhost is usable


# -- errors that may pass, and final ones ----------------------------------------------------------


def test_a_server_where_nothing_listens_is_a_transient_error(
        rabbit: RabbitServer, make_names: Callable[[str], ResourceNames]) -> None:
    url = f"http://{rabbit.admin_user}:{quote(rabbit.admin_password)}@127.0.0.1:{free_port()}/"
    check_unreachable_is_transient(
        PROVIDER, spec(url, rabbit), make_names("t"),
        "cannot reach the RabbitMQ management API at 127.0.0.1:", rabbit.admin_password)


def test_a_wrong_password_is_a_final_error(rabbit: RabbitServer,
                                           make_names: Callable[[str], ResourceNames]) -> None:
    url = url_for(rabbit, rabbit.admin_user, "Wr0ng-" + secrets.token_hex(6))
    check_final(lambda: PROVIDER.provision(spec(url, rabbit), make_names("v"),
                                           secrets.token_urlsafe(24)), "refused the user")


# -- check() and admin errors ---------------------------------------------------------------------


def test_check_says_how_to_fix_a_wrong_password(rabbit: RabbitServer) -> None:
    wrong = "Wr0ng-" + secrets.token_hex(6)
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url_for(rabbit, rabbit.admin_user, wrong), rabbit))
    message = err.value.message
    assert "refused the user" in message and "fix the user and password" in message
    assert wrong not in message and rabbit.admin_password not in message


def test_check_says_how_to_fix_an_unreachable_server(rabbit: RabbitServer) -> None:
    port = free_port()
    url = f"http://{rabbit.admin_user}:{quote(rabbit.admin_password)}@127.0.0.1:{port}/"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url, rabbit))
    message = err.value.message
    assert f"cannot reach the RabbitMQ management API at 127.0.0.1:{port}" in message
    assert "host and port" in message and "rabbitmq_management" in message
    assert rabbit.admin_password not in message


@pytest.mark.parametrize("tags", ["management", ""])
def test_check_says_the_user_must_be_an_administrator(
        rabbit: RabbitServer, make_user: Callable[[str], tuple[str, str]], tags: str) -> None:
    user, password = make_user(tags)
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url_for(rabbit, user, password), rabbit))
    message = err.value.message
    assert "administrator" in message and f"set_user_tags {user} administrator" in message
    assert password not in message


def test_provision_as_a_non_administrator_fails_cleanly(
        rabbit: RabbitServer, admin: Admin, make_user: Callable[[str], tuple[str, str]],
        make_names: Callable[[str], ResourceNames]) -> None:
    user, password = make_user("management")
    names = make_names("n")
    secret = "instance-secret-" + secrets.token_hex(8)
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(spec(url_for(rabbit, user, password), rabbit), names, secret)
    message = err.value.message
    assert "administrator" in message
    assert secret not in message and password not in message
    assert admin.status(f"/vhosts/{names.base}") == 404
    assert admin.status(f"/users/{names.base}") == 404


def test_a_bad_url_is_refused_without_echoing_it(rabbit: RabbitServer) -> None:
    for url in ("http://u:s3cret-pw@h:notaport/", "amqp://u:s3cret-pw@127.0.0.1:5672/"):
        with pytest.raises(ClusterError, match="management") as err:
            PROVIDER.check(spec(url, rabbit))
        assert "s3cret-pw" not in err.value.message


def test_amqp_settings_default_to_the_api_host_and_5672() -> None:
    """The module docstring's promise: AMQP on the API's host, port 5672, unless set."""
    bare = ClusterSpec(id=1, kind="rabbitmq", region="local",
                       url="http://admin:pw@rabbit.example.com:15672/")
    target = _Target.of(bare)
    assert (target.amqp_host, target.amqp_port) == ("rabbit.example.com", 5672)
    assert target.api == "http://rabbit.example.com:15672/api"
    prefixed = ClusterSpec(id=1, kind="rabbitmq", region="local",
                           url="https://admin:pw@h.example.com/rabbit/api/",
                           settings={"amqp_host": "amqp.example.com", "amqp_port": "5671"})
    target = _Target.of(prefixed)
    assert target.api == "https://h.example.com:443/rabbit/api"
    assert (target.amqp_host, target.amqp_port) == ("amqp.example.com", 5671)
