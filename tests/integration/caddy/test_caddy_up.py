"""`tether up --caddy-admin` (issue 12): a real Caddy in front of the applications, HTTPS with its
own CA; environments' URLs are Caddy's, and a deployed app answers there."""

from __future__ import annotations

import ssl
import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import ROOT, new_tether
from tests.integration.caddy.conftest import Caddy
from tether.net import free_port

pytestmark = pytest.mark.e2e

APP = f"{sys.executable} examples/hello/app.py"


def test_tether_up_puts_caddy_in_front_with_https(caddy: Caddy) -> None:
    port = free_port()
    t = new_tether("tether-caddy-up-", {"TETHER_CADDY_ADMIN": caddy.admin_url,
                                        "TETHER_CADDY_PORT": str(port),
                                        "TETHER_CADDY_TLS": "internal",
                                        "TETHER_APPS_DOMAIN": "apps.example.test",
                                        "TETHER_ENV_PORTS": "none"})
    t.start()
    try:
        t.ok("project", "create", "shop", "--no-database", "--app-command", APP,
             "--health-path", "/health", "--app-dir", str(ROOT))
        shown = t.ok("project", "show", "-p", "shop", "--json").json()
        assert [e["url"] for e in shown["environments"]] == [
            f"https://test.shop.apps.example.test:{port}",
            f"https://live.shop.apps.example.test:{port}"]
        deployed = t.ok("deploy", "test", "--json").json()
        host = "test.shop.apps.example.test"
        assert deployed["url"] == f"https://{host}:{port}"
        root = httpx.get(f"{caddy.admin_url}/pki/ca/local", trust_env=False).json()
        tls = ssl.create_default_context(cadata=root["root_certificate"])
        with httpx.Client(verify=tls, trust_env=False, timeout=10) as client:
            answer = client.get(f"https://127.0.0.1:{port}/status.json", headers={"Host": host},
                                extensions={"sni_hostname": host})
        assert answer.status_code == 200 and answer.json()["stage"] == "test"
        routes = httpx.get(f"{caddy.admin_url}/config/apps/http/servers/tether/routes",
                           trust_env=False).json()
        hosts = {h for r in routes for m in r.get("match", []) for h in m.get("host", [])}
        # a route from the first deploy on (live has none yet)
        assert "test.shop.apps.example.test" in hosts
        assert "live.shop.apps.example.test" not in hosts
    finally:
        t.stop()
        subprocess.run(["rm", "-rf", str(t.data_dir.parent)], check=False)
    # a Caddy that does not answer stops the start with the reason
    bad = new_tether("tether-caddy-bad-", {"TETHER_CADDY_ADMIN": f"http://127.0.0.1:{free_port()}",
                                          "TETHER_CADDY_TLS": "internal"})
    try:
        proc = subprocess.run([str(ROOT / ".venv" / "bin" / "tether"), "up", "--data-dir",
                               str(bad.data_dir), "--port", str(bad.port)], env=bad.env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 1, proc.stderr
        assert "did not answer" in proc.stderr and "is Caddy running?" in proc.stderr
    finally:
        subprocess.run(["rm", "-rf", str(bad.data_dir.parent)], check=False)
