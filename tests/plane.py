"""A control plane without HTTP for the engine-level tests: a store, the secret box, the engine's
worker, and one registered cluster; plus waiting on an operation. For the API tests:
`local_plane` (SQLite and a local-files cluster, no worker) and `api_client`. For the backup
operation tests: `backup_plane` (a project with one instance per environment) and
`instance_credentials`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tether.actions import clusters, deployments, projects, services
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store
from tether.store.models import Environment, Instance

#: the app command of a project deployed where no runtime runs applications (the worker settles
#: the services' states, nothing is started): a deploy is refused without a command
APP_COMMAND = "python app.py"


@contextlib.contextmanager
def local_plane(data_dir: Path) -> Iterator[Context]:
    """The actions of a control plane without a worker or HTTP server: a migrated SQLite store
    in `data_dir`, its secret box, and one local-files cluster `media` in the region `local`
    (files under `data_dir/media`), so local media storages can be added and provisioned;
    the store is disposed at the end. The API tests' world (`api_client` serves it)."""
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    store.migrate()
    ctx = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir)
    media = data_dir / "media"
    media.mkdir()
    clusters.add_cluster(ctx, "local-files", "local", f"file://{media}", name="media",
                         settings={"base_dir": str(media),
                                   "public_url": "http://127.0.0.1:1/media/"})
    try:
        yield ctx
    finally:
        store.dispose()


@contextlib.contextmanager
def api_client(ctx: Context, token: str | None = None) -> Iterator[TestClient]:
    """The REST API of `ctx` in a test client that sends `token` (default: a new admin
    token) as its bearer."""
    if token is None:
        token = create_token(ctx.store, "admin")
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@contextlib.contextmanager
def plane(data_dir: Path, kind: str, region: str, url: str, name: str,
          settings: dict[str, Any] | None = None,
          store: Store | None = None,
          runtime: ProcessRuntime | None = None) -> Iterator[tuple[Context, Engine]]:
    """Actions and a running worker on `store` (default: SQLite in `data_dir`), with one cluster;
    with `runtime`, deployments really start the application (and the runtime is shut down at
    the end)."""
    own_store = store is None
    if store is None:
        store = Store(f"sqlite:///{data_dir / 'tether.db'}")
        store.migrate()
    box = SecretBox.from_data_dir(data_dir)
    engine = Engine(store, box, data_dir, runtime=runtime)
    ctx = Context(store=store, box=box, data_dir=data_dir, actor="alice", notify=engine.notify)
    clusters.add_cluster(ctx, kind, region, url, name=name, settings=settings)
    engine.worker.start()
    try:
        yield ctx, engine
    finally:
        engine.stop()
        if own_store:
            store.dispose()


def wait_op(ctx: Context, op_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = deployments.get_operation(ctx, op_id)
        if op["status"] in ("succeeded", "failed"):
            return op
        time.sleep(0.02)
    raise AssertionError(f"operation {op_id} did not finish in {timeout} s")


def succeeded(ctx: Context, view: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Wait for the view's operation; it succeeded (else its error is the failure's message)."""
    assert view["operation"] is not None
    op = wait_op(ctx, view["operation"]["id"], timeout=timeout)
    assert op["status"] == "succeeded", op["error"]
    return op


@dataclass(frozen=True)
class BackupPlane:
    """What `backup_plane` made: the actions' context and the engine, the project, and the
    environments that each hold an instance `prefix`."""

    ctx: Context
    engine: Engine
    project: str
    envs: tuple[str, ...]
    prefix: str


@contextlib.contextmanager
def backup_plane(tmp_path: Path, kind: str, url: str, name: str, service: str,
                 settings: dict[str, Any] | None = None, *, region: str = "local",
                 prefix: str = "DEFAULT", envs: tuple[str, ...] = ("test", "live"),
                 project: str = "shop", app_command: str | None = None,
                 clean_up: Callable[[Context], None] | None = None) -> Iterator[BackupPlane]:
    """`plane` with the cluster of `kind` at `url` in `region`, and `project` with `service`
    provisioned as `prefix` in each of `envs`. In the local region a local-files cluster
    (`tmp_path/media`) keeps the backups; an S3 or Azure region keeps them on its own media
    cluster. At the end every instance of `envs` is removed, then `clean_up` runs (e.g. the
    backup bucket's removal), even after a failure."""
    with plane(tmp_path, kind, region, url, name, settings=settings) as (ctx, engine):
        if region == "local":
            media = tmp_path / "media"
            media.mkdir()
            clusters.add_cluster(ctx, "local-files", "local", f"file://{media}", name="media",
                                 settings={"base_dir": str(media),
                                           "public_url": "http://127.0.0.1:1/media/"})
        projects.create_project(ctx, project, region=region, app_command=app_command)
        try:
            for env in envs:
                view = services.add(ctx, project, env, service, prefix, provision=True)
                assert wait_op(ctx, view["operation"]["id"])["status"] == "succeeded"
            yield BackupPlane(ctx, engine, project, envs, prefix)
        finally:
            try:
                for env in envs:
                    for inst in services.list_instances(ctx, project, env):
                        view = services.remove(ctx, project, env, str(inst["prefix"]),
                                               str(inst["prefix"]))
                        if view.get("operation"):
                            wait_op(ctx, view["operation"]["id"])
            finally:
                if clean_up is not None:
                    clean_up(ctx)


def instance_credentials(ctx: Context, env: str, prefix: str) -> dict[str, Any]:
    """The current credentials of the instance `prefix` of the environment `env` (the one
    not removed), as its application gets them."""
    with ctx.store.session() as s:
        for inst in s.scalars(select(Instance).where(Instance.prefix == prefix,
                                                     Instance.state != "removed")):
            e = s.get(Environment, inst.environment_id)
            if e is not None and e.name == env:
                return dict(ctx.box.open(inst.credentials_enc))
    raise AssertionError(f"no {prefix} in {env}")
