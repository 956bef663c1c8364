"""What the operators' pages read about clusters: how many instances each holds (in the list),
and whether Tether can administer it right now (`GET /clusters/{id}/health`, admins only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tether.actions import clusters, projects, services
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.store.db import Store
from tether.store.models import Cluster, Instance

pytestmark = pytest.mark.integration


@dataclass
class World:
    ctx: Context
    engine: Engine
    client: TestClient
    store: Store
    admin: dict[str, str]
    developer: dict[str, str]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    box = SecretBox.from_data_dir(tmp_path)
    ctx = Context(store=store, box=box, data_dir=tmp_path)
    for name in ("media", "spare"):
        (tmp_path / name).mkdir()
        clusters.add_cluster(ctx, "local-files", "local", f"file://{tmp_path / name}", name=name,
                             settings={"base_dir": str(tmp_path / name),
                                       "public_url": "http://127.0.0.1:1/media/"})
    engine = Engine(store, box, tmp_path)  # its handlers only: no worker runs
    admin = {"Authorization": f"Bearer {create_token(store, 'root')}"}
    developer = {"Authorization": f"Bearer {create_token(store, 'dev', 'developer')}"}
    with TestClient(create_app(ctx)) as client:
        yield World(ctx, engine, client, store, admin, developer)
    store.dispose()


def _provision_new(world: World) -> None:
    with world.store.session() as s:
        ids = list(s.scalars(select(Instance.id).where(Instance.state == "new")))
    for inst_id in ids:
        world.engine.provision_instance(inst_id, "tests")


def test_the_cluster_list_counts_the_instances_each_holds(world: World) -> None:
    projects.create_project(world.ctx, "shop", database=False)
    for prefix in ("MEDIA", "FILES", "GONE"):
        services.add(world.ctx, "shop", "test", "local-media", prefix)
    _provision_new(world)
    with world.store.session() as s:  # all three on one cluster, whichever it is
        s.execute(Instance.__table__.update().values(cluster_id=s.scalar(
            select(Cluster.id).where(Cluster.name == "media"))))
    with world.store.session() as s:  # a removed instance no longer counts
        s.execute(Instance.__table__.update().where(Instance.prefix == "GONE")
                  .values(state="removed"))
    listed = world.client.get("/api/v1/clusters", headers=world.developer)
    assert listed.status_code == 200, listed.text
    assert {c["name"]: c["instances"] for c in listed.json()} == {"media": 2, "spare": 0}


def test_health_says_reachable_with_the_version(world: World) -> None:
    answer = world.client.get("/api/v1/clusters/1/health", headers=world.admin)
    assert answer.status_code == 200, answer.text
    health = answer.json()
    assert health["reachable"] is True and health["version"] == "1"
    assert health["message"] is None and health["seconds"] >= 0


def test_health_says_why_a_cluster_is_not_usable(world: World, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with world.store.session() as s:  # its directory can no longer be made: unusable
        cluster = s.scalar(select(Cluster).where(Cluster.name == "spare"))
        assert cluster is not None
        cluster.settings = {**cluster.settings, "base_dir": str(blocker / "media")}
    health = world.client.get("/api/v1/clusters/2/health", headers=world.admin).json()
    assert health["reachable"] is False and health["version"] is None
    assert "cannot write to the media directory" in health["message"]


def test_health_is_for_admins_and_names_unknown_clusters(world: World) -> None:
    refused = world.client.get("/api/v1/clusters/1/health", headers=world.developer)
    assert refused.status_code == 403
    assert "needs an admin token" in refused.json()["error"]["message"]
    missing = world.client.get("/api/v1/clusters/99/health", headers=world.admin)
    assert missing.status_code == 404
    assert "no cluster with id 99" in missing.json()["error"]["message"]
