"""Cursor-based paging of the lists (issue 12: "no paging on any list"): a page of `limit` rows,
the next one named in a `Link: <…>; rel="next"` header; following the links reads every row once,
in order, also when rows are added between two pages; a cursor that is not one is a 400; a token's
project scope applies before paging (its pages are full)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.plane import APP_COMMAND, api_client, local_plane
from tether.actions import deployments, projects, services
from tether.actions.common import Context
from tether.api.auth import create_token

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Context]]:
    with local_plane(tmp_path) as ctx, api_client(ctx) as client:
        yield client, ctx


def pages(client: TestClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following the Link headers as a client would."""
    out = []
    url: str | None = path
    first = True
    while url is not None:
        answer = client.get(url, params=params) if first and params else client.get(url)
        first = False
        assert answer.status_code == 200, answer.text
        out.append(answer.json())
        link = answer.links.get("next")
        url = link["url"] if link else None
    return out


def test_projects_come_in_pages_by_name(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    names = [f"p{n:02d}" for n in range(25)]
    for name in names:
        projects.create_project(ctx, name)
    got = pages(client, "/api/v1/projects", limit=10)
    assert [len(p) for p in got] == [10, 10, 5]
    assert [p["name"] for page in got for p in page] == names
    assert client.get("/api/v1/projects").json() == [p for page in got for p in page]

    # rows added between two pages neither repeat nor push another row out
    first = client.get("/api/v1/projects", params={"limit": 10})
    projects.create_project(ctx, "a-first")  # sorts before the cursor: not in later pages
    projects.create_project(ctx, "p05b")  # after it: in the next page
    after = first.links["next"]["url"]
    rest = [p["name"] for page in pages(client, after) for p in page]
    assert rest == [n for n in sorted([*names, "p05b"]) if n > "p09"]


def test_services_and_deployments_come_in_pages(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    projects.create_project(ctx, "shop", app_command=APP_COMMAND)
    for n in range(12):
        services.add(ctx, "shop", "test", "local-media", f"M{n:02d}")
    env = "/api/v1/projects/shop/environments/test"
    got = pages(client, f"{env}/services", limit=5)
    assert [len(p) for p in got] == [5, 5, 2]
    assert [i["prefix"] for page in got for i in page] == [f"M{n:02d}" for n in range(12)]

    made = [deployments.deploy(ctx, "shop", "test")["id"] for _ in range(7)]
    got = pages(client, f"{env}/deployments", limit=3)
    assert [len(p) for p in got] == [3, 3, 1]
    assert [d["id"] for page in got for d in page] == made[::-1]  # newest first


def test_a_project_scope_applies_before_paging(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    for n in range(6):
        projects.create_project(ctx, f"p{n}")
    scoped = create_token(ctx.store, "dev", role="developer", projects=["p1", "p3", "p4"])
    got = pages(client, "/api/v1/projects", limit=2)
    assert len(got) == 3
    with TestClient(client.app, headers={"Authorization": f"Bearer {scoped}"}) as other:
        mine = pages(other, "/api/v1/projects", limit=2)
    assert [[p["name"] for p in page] for page in mine] == [["p1", "p3"], ["p4"]]


@pytest.mark.parametrize("cursor", ["nonsense", "WzFd", "WyJ4Il0", "W3RydWVd", "Wy0xXQ"])
def test_a_cursor_that_is_not_one_is_refused(api: tuple[TestClient, Context],
                                             cursor: str) -> None:
    """Not base64 JSON; `[1]` for a list by name; `["x"]` for a list by id; `[true]`; `[-1]`."""
    client, ctx = api
    projects.create_project(ctx, "shop")
    path = ("/api/v1/projects" if cursor == "WzFd" else
            "/api/v1/projects/shop/environments/test/services")
    answer = client.get(path, params={"after": cursor})
    assert answer.status_code == 400, answer.text
    assert "cursor" in answer.json()["error"]["message"]


def test_the_link_is_a_url_of_the_same_list(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    for n in range(3):
        projects.create_project(ctx, f"p{n}")
    answer = client.get("/api/v1/projects", params={"limit": 2})
    url = httpx.URL(answer.links["next"]["url"])
    assert url.path == "/api/v1/projects"
    assert url.params["limit"] == "2" and url.params["after"]
