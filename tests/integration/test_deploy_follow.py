"""Following a deployment long-polls (issue 12: "the CLI follows a deploy by polling every 0.3 s
although the long-poll on operations exists"): `GET /api/v1/deployments/{id}?wait=S` answers
as soon as something is new — a log line, a percent or status other than the caller's, the end —
and otherwise only when the wait runs out, so `tether deploy` makes one request per change.

No worker runs here: the deployment stays queued and the test itself writes what a deploy would
(log lines, percent, the end) into the store while a request waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.plane import APP_COMMAND
from tether.actions import deployments, projects
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.crypto import SecretBox
from tether.store.db import Store
from tether.store.models import Deployment, DeploymentLog, Region

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Store, int]]:
    data_dir = tmp_path_factory.mktemp("follow")
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    store.migrate()
    ctx = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir)
    with store.session() as s:
        s.add(Region(name="local", family="local"))
    projects.create_project(ctx, "shop", app_command=APP_COMMAND)
    dep = deployments.deploy(ctx, "shop", "test")
    token = create_token(store, "admin")
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client, store, int(str(dep["id"]))
    store.dispose()


def waiting(client: TestClient, dep_id: int, **params: Any) -> Future[dict[str, Any]]:
    """A request that waits (in a thread), started before the test changes anything."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(lambda: client.get(f"/api/v1/deployments/{dep_id}",
                                            params={"wait": 20, **params}).json())
    pool.shutdown(wait=False)
    return future


def after_a_while(change: Any) -> None:
    """`change` a moment after the request has started waiting."""
    timer = threading.Timer(0.5, change)
    timer.start()


def add_line(store: Store, dep_id: int, line: str) -> None:
    with store.session() as s:
        s.add(DeploymentLog(deployment_id=dep_id, line=line))


def set_fields(store: Store, dep_id: int, **fields: Any) -> None:
    with store.session() as s:
        dep = s.get(Deployment, dep_id)
        assert dep is not None
        for name, value in fields.items():
            setattr(dep, name, value)


def test_a_waiting_request_answers_with_the_next_log_line(
        setup: tuple[TestClient, Store, int]) -> None:
    client, store, dep_id = setup
    first = client.get(f"/api/v1/deployments/{dep_id}").json()
    assert first["status"] == "queued" and first["logs"] == []
    answer = waiting(client, dep_id, logs_after=0, status="queued", percent=0)
    after_a_while(lambda: add_line(store, dep_id, "provisioning DEFAULT"))
    got = answer.result(timeout=15)
    assert [entry["line"] for entry in got["logs"]] == ["provisioning DEFAULT"]


def test_a_waiting_request_answers_with_a_new_percent_status_or_the_end(
        setup: tuple[TestClient, Store, int]) -> None:
    client, store, dep_id = setup
    answer = waiting(client, dep_id, status="queued", percent=0)
    after_a_while(lambda: set_fields(store, dep_id, percent=40))
    assert answer.result(timeout=15)["percent"] == 40

    answer = waiting(client, dep_id, status="queued", percent=40)
    after_a_while(lambda: set_fields(store, dep_id, status="running"))
    assert answer.result(timeout=15)["status"] == "running"

    answer = waiting(client, dep_id, status="running", percent=40)
    after_a_while(lambda: set_fields(store, dep_id, status="failed", success=False))
    assert answer.result(timeout=15)["status"] == "failed"
    # a finished deployment is answered at once, whatever the caller saw
    started = time.monotonic()
    assert client.get(f"/api/v1/deployments/{dep_id}",
                      params={"wait": 20, "status": "failed"}).json()["success"] is False
    assert time.monotonic() - started < 10


def test_without_news_the_answer_comes_when_the_wait_runs_out(
        setup: tuple[TestClient, Store, int]) -> None:
    client, _, dep_id = setup
    started = time.monotonic()
    got = client.get(f"/api/v1/deployments/{dep_id}",
                     params={"wait": 1, "status": "queued", "percent": 0}).json()
    assert got["logs"] == [] and got["status"] == "queued"
    assert time.monotonic() - started >= 1.0
    bad = client.get(f"/api/v1/deployments/{dep_id}", params={"status": "done"})
    assert bad.status_code == 422
