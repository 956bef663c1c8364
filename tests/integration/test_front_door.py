"""The front door (issue 12): one listener reaching every environment's current release by host
name, `ENV.PROJECT.DOMAIN`, beside or instead of a port per environment; switches through it
lose no request."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx
import pytest

from tests.integration.test_runtime import Poller, runtime, tiny, tiny_spec  # noqa: F401
from tests.plane import local_plane
from tether.actions import projects
from tether.errors import UserError
from tether.frontdoor import FrontDoor, check_domain
from tether.net import free_port
from tether.runtime.process import ProcessRuntime, ReleaseFailed

pytestmark = pytest.mark.integration


def get(door: FrontDoor, host: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{door.port}{path}", headers={"Host": host},
                     trust_env=False, timeout=10)


def test_host_names_map_to_environments_and_back() -> None:
    door = FrontDoor(domain="Apps.Example.com.", port=8443, scheme="https")
    assert door.domain == "apps.example.com"
    assert door.url_for("shop", "test") == "https://test.shop.apps.example.com:8443"
    assert FrontDoor(port=80).url_for("shop", "live") == "http://live.shop.localhost"
    assert door.key_for_host("test.shop.apps.example.com") == "shop/test"
    assert door.key_for_host("LIVE.my-shop.apps.example.com:8443") == "my-shop/live"
    assert door.key_for_host("live.my-shop.apps.example.com.") == "my-shop/live"
    for other in ("shop.apps.example.com", "a.test.shop.apps.example.com", "127.0.0.1:8443",
                  "test.shop.example.com", "[::1]:8443", "", "test.9shop.apps.example.com",
                  "test.shop.xapps.example.com"):
        assert door.key_for_host(other) is None, other
    for bad in ("", "-x.com", "a..b", "exa mple.com", "*.apps.example.com", "x" * 64):
        with pytest.raises(UserError, match="is not a domain name"):
            check_domain(bad)


def test_one_listener_reaches_every_environment_by_host_name(
    runtime: ProcessRuntime, tiny: str  # noqa: F811
) -> None:
    door = runtime.open_front_door(0)
    assert door.port > 0 and door.domain == "localhost"
    # one environment with a port of its own as well, two through the front door only
    own = runtime.ensure_address("shop/test", free_port())
    assert own is not None and own.startswith("http://127.0.0.1:")
    assert runtime.ensure_address("shop/live", None) == f"http://live.shop.localhost:{door.port}"
    assert runtime.ensure_address("blog/live", None) == f"http://live.blog.localhost:{door.port}"
    for key, version in (("shop/test", 1), ("shop/live", 2), ("blog/live", 3)):
        runtime.switch(key, runtime.start(tiny_spec(tiny, version, key=key)))

    assert get(door, f"test.shop.localhost:{door.port}").text == "version 1"
    assert get(door, "live.shop.localhost").text == "version 2"
    assert get(door, "LIVE.BLOG.localhost").text == "version 3"
    assert httpx.get(own, trust_env=False).text == "version 1"  # its own port still answers
    answer = httpx.post(f"http://127.0.0.1:{door.port}/echo?x=1", content=b"hi",
                        headers={"Host": "live.blog.localhost"}, trust_env=False)
    assert answer.status_code == 201 and answer.text == "POST /echo?x=1 hi 127.0.0.1"

    stranger = get(door, "127.0.0.1")
    assert stranger.status_code == 404
    assert "ask for an environment by its host name, ENV.PROJECT.localhost" in stranger.text
    unknown = get(door, "test.blog.localhost")
    assert unknown.status_code == 404
    assert "no release of blog/test has been deployed here" in unknown.text

    runtime.remove_address("blog/live")
    assert get(door, "live.blog.localhost").status_code == 404
    with pytest.raises(Exception, match="open already"):
        runtime.open_front_door(0)


def test_no_request_fails_across_a_switch_through_the_front_door(
    runtime: ProcessRuntime, tiny: str  # noqa: F811
) -> None:
    door = runtime.open_front_door(0)
    runtime.ensure_address("shop/live", None)
    old = runtime.start(tiny_spec(tiny, 1, key="shop/live"))
    runtime.switch("shop/live", old)
    base = f"http://127.0.0.1:{door.port}"
    pollers = [Poller(base, host="live.shop.localhost") for _ in range(3)]
    with contextlib.ExitStack() as stack:
        for poller in pollers:
            stack.enter_context(poller)
        for poller in pollers:
            poller.wait_for(20)
        new = runtime.start(tiny_spec(tiny, 2, key="shop/live"))
        switched_at = [len(p.answers) for p in pollers]
        runtime.switch("shop/live", new)
        runtime.stop(old)
        with pytest.raises(ReleaseFailed):
            runtime.start(tiny_spec(tiny, 3, key="shop/live", EXIT_AT_START="1"))
        for poller, seen in zip(pollers, switched_at, strict=True):
            poller.wait_for(seen + 30)
    for poller, switched in zip(pollers, switched_at, strict=True):
        assert poller.errors == []
        assert {code for code, _ in poller.answers} == {200}
        bodies = [text for _, text in poller.answers]
        first_new = bodies.index("version 2")
        assert first_new <= switched + 1
        assert "version 1" not in bodies[first_new:]


def test_the_front_door_port_taken_is_a_user_error(runtime: ProcessRuntime) -> None:  # noqa: F811
    port = free_port()
    with (socket.create_server(("127.0.0.1", port)),
          pytest.raises(UserError, match=r"taken by another program .* the front door")):
        runtime.open_front_door(port)


def test_environments_get_no_port_of_their_own_past_the_range_or_with_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = free_port()
    monkeypatch.setenv("TETHER_ENV_PORTS", f"{first}-{first}")
    with local_plane(tmp_path) as ctx:
        # without a front door the range is a cap, and says how to lift it
        with pytest.raises(UserError, match=r"no free port left .* widen TETHER_ENV_PORTS"):
            projects.create_project(ctx, "shop", database=False)
        ctx.front_door = FrontDoor(port=8072)
        shop = projects.create_project(ctx, "shop", database=False)
        ports = {e["name"]: e["port"] for e in shop["environments"]}
        assert sorted(ports.values(), key=str) == [first, None]  # the one port, then none
        for env in shop["environments"]:
            assert env["front_door_url"] == f"http://{env['name']}.shop.localhost:8072"
            assert env["url"] == (f"http://127.0.0.1:{first}" if env["port"] else
                                  env["front_door_url"])
        monkeypatch.setenv("TETHER_ENV_PORTS", "none")
        blog = projects.create_project(ctx, "blog", database=False)
        assert [e["port"] for e in blog["environments"]] == [None, None]
        assert [e["url"] for e in projects.show_project(ctx, "blog")["environments"]] == [
            "http://test.blog.localhost:8072", "http://live.blog.localhost:8072"]
        ctx.front_door = None
        with pytest.raises(UserError, match="TETHER_ENV_PORTS=none, but no front door"):
            projects.create_project(ctx, "news", database=False)
