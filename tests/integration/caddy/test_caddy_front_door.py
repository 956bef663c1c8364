"""Tether driving a real Caddy in front of its front door (issue 12): one route per environment
through Caddy's admin API, added and removed atomically with the environment; HTTPS with
certificates of Caddy's own CA (no public CA is reachable here; a real domain uses Caddy's ACME
issuers the same way); switches stay in Tether's front door, so no request through Caddy fails
across one (kept-alive connections included) and a stop waits for the one in flight."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.caddy.conftest import Caddy
from tests.integration.test_runtime import gone, tiny, tiny_spec  # noqa: F401
from tether.errors import OperationError, UserError
from tether.frontdoor import FrontDoor
from tether.net import free_port
from tether.runtime.caddy import CaddyRoutes
from tether.runtime.process import ProcessRuntime

pytestmark = pytest.mark.integration

DOMAIN = "apps.example.test"


class Client:
    """HTTPS to Caddy's port on this machine, by host name (SNI and Host), trusting Caddy's CA."""

    def __init__(self, routes: CaddyRoutes) -> None:
        self.port = routes.door.port
        self.tls = ssl.create_default_context(cadata=routes.root_certificate())

    def get(self, host: str, path: str = "/", client: httpx.Client | None = None
            ) -> httpx.Response:
        own = client or httpx.Client(verify=self.tls, trust_env=False, timeout=10)
        try:
            return own.get(f"https://127.0.0.1:{self.port}{path}", headers={"Host": host},
                           extensions={"sni_hostname": host})
        finally:
            if client is None:
                own.close()

    def ready(self, host: str) -> None:
        """Wait until Caddy has the host's certificate: it gets it in the background once the
        route is there (at once from its own CA; an ACME CA takes longer), and the handshake
        fails meanwhile."""
        deadline = time.monotonic() + 15
        while True:
            try:
                self.get(host)
                return
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.fixture
def driven(caddy: Caddy) -> Iterator[tuple[ProcessRuntime, CaddyRoutes]]:
    runtime = ProcessRuntime()
    runtime.open_front_door(0, DOMAIN)
    routes = CaddyRoutes(caddy.admin_url, FrontDoor(DOMAIN, free_port(), "https"), "internal")
    runtime.drive_caddy(routes)
    try:
        yield runtime, routes
    finally:
        runtime.shutdown()
        cleanup = CaddyRoutes(caddy.admin_url, routes.door, "internal")
        for host in list(cleanup.routes()):
            env, project = host.split(".")[:2]
            cleanup.remove_route(f"{project}/{env}")
        cleanup.close()


def test_each_environment_is_routed_over_https_and_switched_atomically(
    driven: tuple[ProcessRuntime, CaddyRoutes], tiny: str  # noqa: F811
) -> None:
    runtime, routes = driven
    door = Client(routes)
    assert runtime.front_door == routes.door
    assert runtime.ensure_address("shop/live", None) == f"https://live.shop.{DOMAIN}:{door.port}"
    # each host's certificate before the next route: a config change while Caddy 2.6 obtains
    # one cancels that (its old config's) obtain and the host goes without until a retry ~1 s
    # later — a handshake or two may still meet the old config's server meanwhile, so a ready
    # host then failed the next request (seen in full runs; Caddy's debug log said why)
    door.ready(f"live.shop.{DOMAIN}")
    runtime.ensure_address("blog/live", None)
    door.ready(f"live.blog.{DOMAIN}")
    door.ready(f"live.shop.{DOMAIN}")
    waiting = door.get(f"live.shop.{DOMAIN}")
    assert waiting.status_code == 503 and "no release of shop/live" in waiting.text

    first = runtime.start(tiny_spec(tiny, 1, key="shop/live"))
    runtime.switch("shop/live", first)
    runtime.switch("blog/live", runtime.start(tiny_spec(tiny, 7, key="blog/live")))
    assert routes.routes()[f"live.shop.{DOMAIN}"] == routes.upstream  # Tether's front door
    assert door.get(f"live.shop.{DOMAIN}").text == "version 1"
    assert door.get(f"live.blog.{DOMAIN}").text == "version 7"

    # clients keep asking across a switch: every answer a 200, the old release never after
    answers: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(verify=door.tls, trust_env=False, timeout=10) as client:
            while not stop.is_set() and len(answers) < 3000:
                try:
                    r = door.get(f"live.shop.{DOMAIN}", client=client)
                    answers.append((r.status_code, r.text))
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    while len(answers) < 20 and poller.is_alive():
        time.sleep(0.01)
    second = runtime.start(tiny_spec(tiny, 2, key="shop/live"))
    switched_at = len(answers)
    assert runtime.switch("shop/live", second) is first
    runtime.stop(first)
    seen = len(answers)
    while len(answers) < seen + 20 and poller.is_alive():
        time.sleep(0.01)
    stop.set()
    poller.join(timeout=10)
    assert errors == []
    assert {code for code, _ in answers} == {200}
    bodies = [text for _, text in answers]
    first_new = bodies.index("version 2")
    assert first_new <= switched_at + 1 and "version 1" not in bodies[first_new:]
    assert gone(first.pid)

    runtime.remove_address("blog/live")
    assert f"live.blog.{DOMAIN}" not in routes.routes()
    assert door.get(f"live.shop.{DOMAIN}").text == "version 2"


def test_a_stop_waits_for_the_request_caddy_has_open(
    driven: tuple[ProcessRuntime, CaddyRoutes], tiny: str  # noqa: F811
) -> None:
    runtime, routes = driven
    door = Client(routes)
    runtime.ensure_address("shop/test", None)
    door.ready(f"test.shop.{DOMAIN}")
    old = runtime.start(tiny_spec(tiny, 1))
    runtime.switch("shop/test", old)
    new = runtime.start(tiny_spec(tiny, 2))
    result: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: result.update(r=door.get(f"test.shop.{DOMAIN}", "/slow")))
    slow.start()
    deadline = time.monotonic() + 5
    while old._in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert old._in_flight == 1  # through Caddy, counted by Tether's front door
    runtime.switch("shop/test", new)
    started = time.monotonic()
    runtime.stop(old)
    assert time.monotonic() - started >= 0.3  # it waited for the request
    slow.join(timeout=10)
    assert result["r"].status_code == 200 and result["r"].text == "slow 1"
    assert door.get(f"test.shop.{DOMAIN}").text == "version 2"


def test_routes_outlive_a_restart_of_tether_and_hosts_of_no_environment_get_404(
    caddy: Caddy, driven: tuple[ProcessRuntime, CaddyRoutes], tiny: str  # noqa: F811
) -> None:
    runtime, routes = driven
    runtime.ensure_address("shop/live", None)
    release = runtime.start(tiny_spec(tiny, 3, key="shop/live"))
    runtime.switch("shop/live", release)
    # a new Tether installs its server again: the route (and its traffic) is still there
    again = CaddyRoutes(caddy.admin_url, routes.door, "internal")
    again.upstream = routes.upstream
    again.install()
    again.ensure_route("shop/live")
    assert again.routes()[f"live.shop.{DOMAIN}"] == routes.upstream
    client = Client(again)
    client.ready(f"live.shop.{DOMAIN}")
    assert client.get(f"live.shop.{DOMAIN}").text == "version 3"
    again.close()
    # plain HTTP on a door of its own: any other host is told what to ask for
    plain = CaddyRoutes(caddy.admin_url, FrontDoor(DOMAIN, free_port(), "http"), "off")
    plain.upstream = routes.upstream
    plain.install()
    answer = httpx.get(f"http://127.0.0.1:{plain.door.port}/", headers={"Host": "example.org"},
                       trust_env=False)
    assert answer.status_code == 404 and f"ENV.PROJECT.{DOMAIN}" in answer.text
    plain.close()
    routes.install()  # back to the https door for the fixture's clean-up


def test_bad_settings_and_an_unreachable_caddy_are_clear_errors(caddy: Caddy) -> None:
    door = FrontDoor(DOMAIN, free_port(), "https")
    with pytest.raises(UserError, match="unknown Caddy TLS mode"):
        CaddyRoutes(caddy.admin_url, door, "letsencrypt")
    with pytest.raises(UserError, match="unless its TLS mode is off"):
        CaddyRoutes(caddy.admin_url, door, "off")
    nowhere = CaddyRoutes(f"http://127.0.0.1:{free_port()}", door, "internal")
    nowhere.upstream = "127.0.0.1:1"
    with pytest.raises(OperationError, match=r"did not answer .* is Caddy running"):
        nowhere.install()
    runtime = ProcessRuntime()
    try:
        with pytest.raises(OperationError, match="open the front door before"):
            runtime.drive_caddy(nowhere)
        inner = runtime.open_front_door(0, "other.test")
        with pytest.raises(UserError, match="is not the front door's"):
            runtime.drive_caddy(nowhere)
        runtime2 = ProcessRuntime()
        runtime2.open_front_door(0, DOMAIN)
        with pytest.raises(OperationError, match="is Caddy running"):
            runtime2.drive_caddy(nowhere)
        assert runtime2.front_door is not None and runtime2.front_door.scheme == "http"
        runtime2.shutdown()
        assert runtime.front_door == inner
    finally:
        runtime.shutdown()
