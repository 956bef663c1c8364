"""The front door through `tether up` (issue 12): with TETHER_ENV_PORTS=none no environment gets
a port of its own, and every one is reached by host name, `ENV.PROJECT.localhost`, on the one
port `--apps-port` names."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import ROOT, Tether, new_tether

pytestmark = pytest.mark.e2e

APP = f"{sys.executable} examples/hello/app.py"


@pytest.fixture(scope="module")
def doorman() -> Iterator[Tether]:
    t = new_tether("tether-door-", {"TETHER_ENV_PORTS": "none"})
    t.start()
    try:
        yield t
    finally:
        t.stop()
        subprocess.run(["rm", "-rf", str(t.data_dir.parent)], check=False)


def through_door(t: Tether, url: str, path: str = "/status.json") -> httpx.Response:
    """GET `url` by connecting to the front door with the URL's host name as the Host header
    (Python's resolver, unlike browsers and curl, does not map *.localhost to this machine)."""
    parts = urlsplit(url)
    return httpx.get(f"http://127.0.0.1:{parts.port}{path}", headers={"Host": parts.netloc},
                     trust_env=False, timeout=10)


def test_environments_without_ports_are_served_by_host_name(doorman: Tether) -> None:
    t = doorman
    t.ok("project", "create", "shop", "--no-database", "--app-command", APP, "--health-path",
         "/health", "--app-dir", str(ROOT))
    t.ok("project", "create", "blog", "--no-database", "--app-command", APP, "--health-path",
         "/health", "--app-dir", str(ROOT))
    shown = t.ok("project", "show", "-p", "shop", "--json").json()
    for env in shown["environments"]:
        assert env["port"] is None
        expected = f"http://{env['name']}.shop.localhost:{t.apps_port}"
        assert env["url"] == env["front_door_url"] == expected
    assert "applications at http://ENV.PROJECT.localhost:" in t.log_tail()

    t.ok("service", "add", "test", "local-media", "--prefix", "MEDIA", "--project", "shop")
    deployed = t.ok("deploy", "test", "--project", "shop", "--json").json()
    assert deployed["url"] == f"http://test.shop.localhost:{t.apps_port}"
    t.ok("deploy", "live", "--project", "blog")

    status = through_door(t, deployed["url"]).json()
    assert status["services"]["MEDIA_STORAGE_DSN"]["ok"] is True
    blog = through_door(t, f"http://live.blog.localhost:{t.apps_port}")
    assert blog.status_code == 200
    not_yet = through_door(t, f"http://live.shop.localhost:{t.apps_port}", "/")
    assert not_yet.status_code == 404 and "deploy it" in not_yet.text


def test_a_taken_front_door_port_stops_the_start_at_once() -> None:
    """The front door's port is held from the start, like the API's and the media files' (a
    port bound only after the embedded PostgreSQL had started was once taken meanwhile)."""
    t = new_tether("tether-door-taken-")
    try:
        with socket.create_server(("127.0.0.1", t.apps_port)):
            started = time.monotonic()
            proc = subprocess.run([str(ROOT / ".venv" / "bin" / "tether"), "up", "--data-dir",
                                   str(t.data_dir), "--port", str(t.port)], env=t.env,
                                  capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, proc.stderr
        assert f"port {t.apps_port} on 127.0.0.1, for the front door, is taken" in proc.stderr
        assert "--apps-port" in proc.stderr
        assert "embedded PostgreSQL" not in proc.stderr  # before anything long started
        assert time.monotonic() - started < 30
    finally:
        subprocess.run(["rm", "-rf", str(t.data_dir.parent)], check=False)
