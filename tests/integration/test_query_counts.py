"""A request makes a bounded number of store queries whatever the number of rows it lists (issue
12: "N+1 queries (each instance in a list looks up its cluster and operation and decrypts its
credentials)"): the same list with ten times the instances, projects or deployments costs the same
number of statements.

Real rows: local media storages provisioned by the engine's own handler (directories and
credentials), on a SQLite store; the statements are counted on the store's engine during the
request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from tests.plane import APP_COMMAND, api_client, local_plane
from tether.actions import clusters, deployments, projects, services, variables
from tether.actions.common import Context
from tether.api.auth import create_session, create_token
from tether.engine.core import Engine
from tether.store.db import Store
from tether.store.models import Backup, BackupFile, Environment, Instance

pytestmark = pytest.mark.integration


@dataclass
class World:
    ctx: Context
    engine: Engine
    client: TestClient
    store: Store

    def count(self, request: Callable[[], Any]) -> int:
        """How many statements the store ran while `request` ran, nothing kept from earlier
        calls (the API keeps answers until the store changes: tether.store.readcache)."""
        for cache in self.client.app.state.read_caches.values():  # type: ignore[attr-defined]
            cache.clear()
        seen = 0

        def counted(*_: Any) -> None:
            nonlocal seen
            seen += 1

        event.listen(self.store.engine, "before_cursor_execute", counted)
        try:
            answer = request()
            assert answer.status_code in (200, 201), answer.text
        finally:
            event.remove(self.store.engine, "before_cursor_execute", counted)
        return seen

    def fill(self, project: str, env: str, count: int, start: int = 0) -> None:
        """`count` more provisioned local media storages in the environment."""
        for n in range(start, start + count):
            services.add(self.ctx, project, env, "local-media", f"M{n}")
        with self.store.session() as s:
            ids = list(s.scalars(select(Instance.id).where(Instance.state == "new")))
        for inst_id in ids:
            self.engine.provision_instance(inst_id, "tests")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with local_plane(tmp_path) as ctx, api_client(ctx) as client:
        engine = Engine(ctx.store, ctx.box, tmp_path)  # its handlers only: no worker runs
        yield World(ctx, engine, client, ctx.store)


ENV = "/api/v1/projects/shop/environments/test"


def test_listing_instances_costs_the_same_for_3_and_30(world: World) -> None:
    projects.create_project(world.ctx, "shop")
    world.fill("shop", "test", 3)
    few = {path: world.count(lambda p=path: world.client.get(p)) for path in (
        f"{ENV}/services", f"{ENV}/variables?all=true", f"{ENV}/services?removed=true")}
    world.fill("shop", "test", 27, start=3)
    assert len(world.client.get(f"{ENV}/services").json()) == 30
    many = {path: world.count(lambda p=path: world.client.get(p)) for path in few}
    assert many == few


def test_listing_projects_costs_the_same_for_2_and_20(world: World) -> None:
    for n in range(2):
        projects.create_project(world.ctx, f"p{n}")
    few = world.count(lambda: world.client.get("/api/v1/projects"))
    for n in range(2, 20):
        projects.create_project(world.ctx, f"p{n}")
    assert len(world.client.get("/api/v1/projects").json()) == 20
    assert world.count(lambda: world.client.get("/api/v1/projects")) == few


def test_listing_deployments_costs_the_same_for_2_and_20(world: World) -> None:
    projects.create_project(world.ctx, "shop", app_command=APP_COMMAND)
    for _ in range(2):
        deployments.deploy(world.ctx, "shop", "test")
    few = world.count(lambda: world.client.get(f"{ENV}/deployments"))
    for _ in range(18):
        deployments.deploy(world.ctx, "shop", "test")
    assert world.count(lambda: world.client.get(f"{ENV}/deployments")) == few


def _fill_rest(world: World, start: int, count: int) -> None:
    """`count` more of each row the other lists show: clusters (each holding an instance),
    tokens and their browser sessions, completed backups with a file each, custom variables
    and, through all of them, history entries."""
    ctx = world.ctx
    world.fill("shop", "test", count, start=start)
    with world.store.session() as s:
        env_id = s.scalar(select(Environment.id).where(Environment.name == "test"))
        for n in range(start, start + count):
            backup = Backup(environment_id=env_id, status="completed", requested_by="tests")
            s.add(backup)
            s.flush()
            s.add(BackupFile(backup_id=backup.id, prefix=f"M{n}", kind="local-files",
                             service="local-media", format="tar", status="stored"))
    for n in range(start, start + count):
        media = ctx.data_dir / f"media{n}"
        media.mkdir()
        made = clusters.add_cluster(ctx, "local-files", "local", f"file://{media}",
                                    name=f"m{n}", settings={
                                        "base_dir": str(media),
                                        "public_url": "http://127.0.0.1:1/media/"})
        with world.store.session() as s:
            inst = s.scalar(select(Instance).where(Instance.prefix == f"M{n}"))
            assert inst is not None
            inst.cluster_id = int(str(made["id"]))  # every cluster holds one
        secret = create_token(world.store, f"t{n}")
        create_session(world.store, secret, f"browser {n}")
        variables.set_variable(ctx, "shop", "test", f"V{n}", "x")


REST = ("/api/v1/clusters", "/api/v1/tokens", "/api/v1/sessions", "/api/v1/projects/shop/backups",
        "/api/v1/projects/shop/backups?all=true&env=test", f"{ENV}/variables",
        f"{ENV}/history", f"{ENV}/history?prefix=M1")


def test_the_other_lists_cost_the_same_for_2_and_20(world: World) -> None:
    """Clusters (with their instance counts), tokens, sessions (with their tokens), backups
    (with their files and operations), variables and history (with the services' prefixes)."""
    projects.create_project(world.ctx, "shop")
    _fill_rest(world, 0, 2)
    few = {path: world.count(lambda p=path: world.client.get(p)) for path in REST}
    _fill_rest(world, 2, 18)
    assert len(world.client.get("/api/v1/projects/shop/backups").json()) == 20
    assert len(world.client.get(f"{ENV}/variables").json()) == 20
    many = {path: world.count(lambda p=path: world.client.get(p)) for path in REST}
    assert many == few


def test_a_page_costs_the_same_deep_in_a_long_list(world: World) -> None:
    """A page of 5 costs the same at the start and deep in a list of 40, with every service's
    variables and the custom ones (`all`)."""
    projects.create_project(world.ctx, "shop")
    _fill_rest(world, 0, 20)
    for path in (*REST[:-1], f"{ENV}/variables?all=true", f"{ENV}/services"):
        sep = "&" if "?" in path else "?"
        first = world.client.get(f"{path}{sep}limit=5")
        assert first.status_code == 200 and "next" in first.links, path
        start = world.count(lambda p=path, s=sep: world.client.get(f"{p}{s}limit=5"))
        deep = first
        for _ in range(2):
            deep = world.client.get(deep.links["next"]["url"])
        url = deep.links["next"]["url"]
        assert world.count(lambda u=url: world.client.get(u)) == start, path


def test_adding_with_provision_asks_nothing_a_new_instance_cannot_have(world: World) -> None:
    """`POST …/services` with `provision` (the first step of issue 12's provisioning benchmark)
    knows that a new instance is in no release and has no other operation: it does not look
    them up, nor its project a second time (10 statements with the token check, was 15; the
    project and its environment are one statement since), and answers the same view a `GET`
    of it gives."""
    projects.create_project(world.ctx, "shop")
    world.fill("shop", "test", 2)  # other instances, released or not, are not asked about
    answers: list[Any] = []

    def add() -> Any:
        answers.append(world.client.post(f"{ENV}/services", json={
            "service": "local-media", "prefix": "NEW", "provision": True}))
        return answers[-1]

    count = world.count(add)
    added = answers[0].json()
    assert count <= 10, count
    shown = world.client.get(f"{ENV}/services/NEW").json()
    assert added["operation"]["status"] == "queued"
    for key in set(added) & set(shown):
        assert added[key] == shown[key], key
    assert added["actions"] == shown["actions"]


def test_showing_an_instance_looks_its_environment_up_once(world: World) -> None:
    """The view's facts took the environment again although the action had just looked it up
    (the session holds it): one statement more for every single-instance answer."""
    projects.create_project(world.ctx, "shop")
    world.fill("shop", "test", 1)
    seen: list[str] = []

    def statement(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()))

    event.listen(world.store.engine, "before_cursor_execute", statement)
    try:
        services.show(world.ctx, "shop", "test", "M0")
    finally:
        event.remove(world.store.engine, "before_cursor_execute", statement)
    assert sum("FROM environments" in s for s in seen) == 1, seen
