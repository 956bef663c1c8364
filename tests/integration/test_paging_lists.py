"""Paging everywhere (issue 12), the lists beyond projects, services and deployments: clusters,
tokens, browser sessions, backups, variables (custom and all), and an environment's history.
Each is read page by page with a small limit over more rows than a page holds, following the
`Link` headers: every row once, in the order of the whole list; and a cursor that is not one
is a 400 that says so.

Real rows: local media storages provisioned by the engine's own handler, tokens and sessions
made as `tether token create` and a sign-in make them; backups are rows of completed backups
(their files are not needed to list them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.plane import api_client, local_plane
from tether.actions import clusters, projects, services, variables
from tether.actions.common import Context
from tether.api.auth import create_session, create_token
from tether.engine.core import Engine
from tether.store.models import Backup, BackupFile, Environment, Instance

pytestmark = pytest.mark.integration

ENV = "/api/v1/projects/shop/environments/test"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Context]]:
    with local_plane(tmp_path) as ctx:
        token = create_token(ctx.store, "admin")
        with api_client(ctx, token) as client:
            client.headers["X-Test-Token"] = token  # for the sessions: signed in with it
            yield client, ctx


def pages(client: TestClient, path: str, limit: int, **query: Any) -> list[list[Any]]:
    """Every page of a list, `limit` rows a page, following the Link headers."""
    return follow(client, client.get(path, params={**query, "limit": limit}), limit)


def follow(client: TestClient, answer: Any, limit: int) -> list[list[Any]]:
    """This page and the next ones, following the Link headers."""
    out: list[list[Any]] = []
    while True:
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) <= limit
        out.append(answer.json())
        link = answer.links.get("next")
        if link is None:
            return out
        answer = client.get(link["url"])


def check_paged(client: TestClient, path: str, limit: int, rows: int,
                key: Callable[[dict[str, Any]], Any] = lambda row: row["id"],
                **query: Any) -> list[Any]:
    """The list at `path` (with `query`) in pages of `limit`: full pages but the last, every
    row of the whole list once and in its order (the whole list holds `rows`); answers the
    keys."""
    whole = client.get(path, params={**query, "limit": 1000})
    assert whole.status_code == 200 and "next" not in whole.links
    assert len(whole.json()) == rows > limit
    got = pages(client, path, limit, **query)
    assert [len(p) for p in got[:-1]] == [limit] * (len(got) - 1) and 0 < len(got[-1]) <= limit
    keys = [key(row) for page in got for row in page]
    assert keys == [key(row) for row in whole.json()]
    assert len(set(map(str, keys))) == len(keys)  # nothing repeated
    return keys


def refuses_bad_cursors(client: TestClient, path: str, *cursors: str, **query: Any) -> None:
    for cursor in ("nonsense", "W3RydWVd", *cursors):  # not base64 JSON; [true]
        answer = client.get(path, params={**query, "after": cursor})
        assert answer.status_code == 400, (path, cursor, answer.text)
        assert "invalid cursor" in answer.json()["error"]["message"]


def provision_media(ctx: Context, env: str, prefixes: list[str]) -> None:
    """Local media storages added and provisioned (by the engine's handler: no worker runs)."""
    for prefix in prefixes:
        services.add(ctx, "shop", env, "local-media", prefix)
    engine = Engine(ctx.store, ctx.box, ctx.data_dir)
    with ctx.store.session() as s:
        ids = list(s.scalars(select(Instance.id).where(Instance.state == "new",
                                                       Instance.prefix.in_(prefixes))))
    for inst_id in ids:
        engine.provision_instance(inst_id, "tests")


def add_backups(ctx: Context, env: str, count: int, status: str = "completed") -> None:
    with ctx.store.session() as s:
        env_id = s.scalar(select(Environment.id).where(Environment.name == env))
        for n in range(count):
            backup = Backup(environment_id=env_id, status=status, requested_by="tests",
                            size=n)
            s.add(backup)
            s.flush()
            s.add(BackupFile(backup_id=backup.id, prefix="MEDIA", kind="local-files",
                             service="local-media", format="tar", status="stored", size=n))


def test_clusters_come_in_pages(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    for n in range(11):
        media = ctx.data_dir / f"media{n}"
        media.mkdir()
        clusters.add_cluster(ctx, "local-files", "local", f"file://{media}", name=f"m{n:02d}",
                             settings={"base_dir": str(media),
                                       "public_url": "http://127.0.0.1:1/media/"})
    keys = check_paged(client, "/api/v1/clusters", 5, 12)
    assert keys == sorted(keys)  # oldest first
    refuses_bad_cursors(client, "/api/v1/clusters", "WyJ4Il0")  # ["x"]: not an id


def test_tokens_and_sessions_come_in_pages(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    for n in range(9):
        create_token(ctx.store, f"t{n}")
    keys = check_paged(client, "/api/v1/tokens", 4, 10)
    assert keys == sorted(keys)
    assert [t["name"] for page in pages(client, "/api/v1/tokens", 4) for t in page] == \
        ["admin", *(f"t{n}" for n in range(9))]
    refuses_bad_cursors(client, "/api/v1/tokens", "Wy0xXQ")  # [-1]

    for n in range(7):
        create_session(ctx.store, client.headers["X-Test-Token"], f"browser {n}")
    check_paged(client, "/api/v1/sessions", 3, 7)
    refuses_bad_cursors(client, "/api/v1/sessions")


def test_backups_come_in_pages_newest_first(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    projects.create_project(ctx, "shop")
    add_backups(ctx, "test", 8)
    add_backups(ctx, "test", 2, status="failed")
    add_backups(ctx, "live", 3)
    path = "/api/v1/projects/shop/backups"
    keys = check_paged(client, path, 3, 11)
    assert keys == sorted(keys, reverse=True)
    check_paged(client, path, 3, 8, env="test")
    check_paged(client, path, 4, 10, env="test", all="true")
    first = client.get(path, params={"limit": 3}).json()[0]
    assert first["files"][0]["prefix"] == "MEDIA" and first["operation"] is None
    refuses_bad_cursors(client, path, "WyJ4Il0")


def test_every_projects_backups_come_in_pages_for_operators(
        api: tuple[TestClient, Context]) -> None:
    """GET /backups (issue 13, the operators' Backups page): every project's, newest first."""
    client, ctx = api
    projects.create_project(ctx, "shop", database=False)
    projects.create_project(ctx, "blog", database=False)
    with ctx.store.session() as s:
        envs = {f"{e.project.name}/{e.name}": e.id for e in s.scalars(select(Environment))}
        for n, key in enumerate(["shop/test", "blog/live", "shop/live", "blog/test"] * 3):
            s.add(Backup(environment_id=envs[key], requested_by="tests", size=n,
                         status="failed" if n == 5 else "completed"))
    keys = check_paged(client, "/api/v1/backups", 4, 11)
    assert keys == sorted(keys, reverse=True)
    check_paged(client, "/api/v1/backups", 5, 12, all="true")
    listed = client.get("/api/v1/backups", params={"limit": 2}).json()
    assert [(b["project"], b["environment"]) for b in listed] == [("blog", "test"),
                                                                 ("shop", "live")]
    refuses_bad_cursors(client, "/api/v1/backups", "WyJ4Il0")


def test_variables_come_in_pages(api: tuple[TestClient, Context]) -> None:
    """Custom ones by name; `all` in its order — STAGE, SECRET_KEY, each service's, the custom
    ones — with pages that end inside a service's variables."""
    client, ctx = api
    projects.create_project(ctx, "shop")
    provision_media(ctx, "test", ["M0", "M1", "M2"])
    services.add(ctx, "shop", "test", "local-media", "UNPROVISIONED")  # gives none yet
    provision_media(ctx, "test", ["M3"])
    names = [f"VAR_{n:02d}" for n in range(9)]
    for name in reversed(names):
        variables.set_variable(ctx, "shop", "test", name, name.lower())
    custom = check_paged(client, f"{ENV}/variables", 4, 9, key=lambda v: v["name"])
    assert custom == names

    whole = variables.list_variables(ctx, "shop", "test", True, False)
    for limit in (1, 2, 3, 5, 7):
        got = check_paged(client, f"{ENV}/variables", limit, len(whole),
                          key=lambda v: (v["name"], v["source"], v["value"]), all="true")
        assert got == [(v["name"], v["source"], v["value"]) for v in whole]
    assert [v["name"] for v in whole[:2]] == ["STAGE", "SECRET_KEY"]
    sources = [v["source"] for v in whole]
    assert sources.count("service") == 4 and sources[-9:] == ["custom"] * 9

    # rows added between two pages: one before the cursor is not seen, one after it is
    first = client.get(f"{ENV}/variables", params={"limit": 4})
    variables.set_variable(ctx, "shop", "test", "AAA", "before")
    variables.set_variable(ctx, "shop", "test", "VAR_05B", "after")
    rest = [v["name"] for page in follow(client, client.get(first.links["next"]["url"]), 4)
            for v in page]
    assert rest == ["VAR_04", "VAR_05", "VAR_05B", "VAR_06", "VAR_07", "VAR_08"]

    # a cursor of another list, of a place no list has, or not a place at all
    refuses_bad_cursors(client, f"{ENV}/variables", "WzFd", "WyI3LjAuMCJd",
                        "WyIxLngueSJd", all="true")  # [1], ["7.0.0"], ["1.x.y"]
    of_all = client.get(f"{ENV}/variables", params={"all": "true", "limit": 3})
    refuses_bad_cursors(client, f"{ENV}/variables", of_all.links["next"]["url"].split("=")[-1])


def test_history_comes_in_pages_newest_first(api: tuple[TestClient, Context]) -> None:
    client, ctx = api
    projects.create_project(ctx, "shop")
    for n in range(4):
        services.add(ctx, "shop", "test", "local-media", f"M{n}")
        variables.set_variable(ctx, "shop", "test", f"V{n}", "x")
    gone = services.remove(ctx, "shop", "test", "M1", "M1")
    Engine(ctx.store, ctx.box, ctx.data_dir).provisioning.remove_instance(gone["id"], "tests")
    services.add(ctx, "shop", "test", "local-media", "M1")  # the prefix again
    entries = len(client.get(f"{ENV}/history", params={"limit": 1000}).json())
    assert entries >= 11
    keys = check_paged(client, f"{ENV}/history", 3, entries)
    assert keys == sorted(keys, reverse=True)
    newest = client.get(f"{ENV}/history", params={"limit": 1}).json()[0]
    assert newest["action"] == "add" and newest["prefix"] == "M1" and newest["to"] == "new"
    m1 = [e["action"] for page in pages(client, f"{ENV}/history", 1, prefix="M1")
          for e in page]
    assert m1[0] == "add" and m1[-1] == "add" and len(m1) >= 4  # both instances' entries
    assert "remove requested" in m1
    assert all(e["prefix"] is None for e in client.get(f"{ENV}/history").json()
               if e["action"].startswith("variable"))
    assert client.get(f"{ENV}/history", params={"prefix": "NEVER"}).status_code == 404
    refuses_bad_cursors(client, f"{ENV}/history", "WyJ4Il0")
