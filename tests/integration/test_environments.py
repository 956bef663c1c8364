"""More environments than test and live (SPEC: "more may be added"; issue 12's scale benchmark
needs ten per project): `POST /api/v1/projects/P/environments` and `tether project add-env`. A
new environment has its own address, SECRET_KEY and variables, a DEFAULT PostgreSQL unless told
not to, and is refused when the name is taken or invalid, or the token may not change the
project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.plane import api_client, local_plane
from tether.actions import clusters, projects
from tether.actions.common import Context
from tether.api.auth import create_token

pytestmark = pytest.mark.integration

PROJECT = "/api/v1/projects/shop"


@pytest.fixture
def shop(tmp_path: Path, pg_server: Any) -> Iterator[Context]:
    """A project on a plane whose region offers PostgreSQL too (the test server)."""
    with local_plane(tmp_path) as ctx:
        clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url, name="pg")
        projects.create_project(ctx, "shop", "local", database=False)
        yield ctx


def variables(client: TestClient, env: str) -> dict[str, str]:
    answer = client.get(f"{PROJECT}/environments/{env}/variables",
                        params={"all": "true", "reveal": "true"})
    assert answer.status_code == 200, answer.text
    return {v["name"]: v["value"] for v in answer.json()}


def test_an_environment_is_added_with_its_own_address_key_and_database(shop: Context) -> None:
    """Old main: no way to add one (404 on this path)."""
    with api_client(shop) as client:
        made = client.post(f"{PROJECT}/environments", json={"name": "staging"})
        assert made.status_code == 201, made.text
        env = made.json()
        assert env["name"] == "staging" and env["url"] and env["uuid"]
        assert env["database"]["service"].startswith("postgres")
        assert env["database"]["environments"] == ["staging"]
        shown = client.get(PROJECT).json()
        assert [e["name"] for e in shown["environments"]] == ["test", "live", "staging"]
        assert len({e["url"] for e in shown["environments"]}) == 3
        staging, test = variables(client, "staging"), variables(client, "test")
        assert staging["STAGE"] == "staging"
        assert staging["SECRET_KEY"] and staging["SECRET_KEY"] != test["SECRET_KEY"]
        listed = client.get(f"{PROJECT}/environments/staging/services").json()
        assert [(i["prefix"], i["state"]) for i in listed] == [("DEFAULT", "new")]
        assert client.get(f"{PROJECT}/environments/test/services").json() == []
        # its own variables, apart from the others'
        client.put(f"{PROJECT}/environments/staging/variables/GREETING",
                   json={"value": "hi"}).raise_for_status()
        assert "GREETING" not in variables(client, "test")


def test_without_database_and_refusals(shop: Context) -> None:
    with api_client(shop) as client:
        made = client.post(f"{PROJECT}/environments", json={"name": "preview",
                                                           "database": False})
        assert made.status_code == 201, made.text
        assert made.json()["database"] is None
        assert client.get(f"{PROJECT}/environments/preview/services").json() == []
        again = client.post(f"{PROJECT}/environments", json={"name": "preview"})
        assert again.status_code == 409
        assert "preview already" in again.json()["error"]["message"]
        for bad in ("Staging", "1st", "a" * 21):
            refused = client.post(f"{PROJECT}/environments", json={"name": bad})
            assert refused.status_code in (400, 422), (bad, refused.text)
        missing = client.post("/api/v1/projects/nope/environments", json={"name": "x"})
        assert missing.status_code == 404
    viewer = create_token(shop.store, "watcher", "viewer")
    with api_client(shop, viewer) as client:
        refused = client.post(f"{PROJECT}/environments", json={"name": "mine"})
        assert refused.status_code == 403
    developer = create_token(shop.store, "dev", "developer", projects=["other"])
    with api_client(shop, developer) as client:
        refused = client.post(f"{PROJECT}/environments", json={"name": "mine"})
        assert refused.status_code in (403, 404)
