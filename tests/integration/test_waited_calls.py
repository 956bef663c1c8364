"""Calls that queue an operation and wait for its end (`POST …/services?wait=`, issue 12): the
answer is the instance once provisioned, in one request; the operation runs on the request's
own thread when the worker has a free slot, else the loop runs it and the call still waits; a
call whose wait runs out answers with the operation still running."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.plane import local_plane
from tether.actions import projects, services
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.engine.core import Engine
from tether.errors import NotFound
from tether.store.models import Operation

pytestmark = pytest.mark.integration

SERVICES = "/api/v1/projects/shop/environments/{env}/services"


class Gate:
    """Wraps the provision handler: records the thread each provision ran on, and holds each
    one while the gate is closed."""

    def __init__(self, handler: Callable[[Operation], str | None]) -> None:
        self.handler = handler
        self.open = threading.Event()
        self.open.set()
        self.threads: list[str] = []

    def __call__(self, op: Operation) -> str | None:
        self.threads.append(threading.current_thread().name)
        self.open.wait(30)
        return self.handler(op)


def world(tmp_path: Path, max_parallel: int = 4) -> Iterator[tuple[Context, TestClient, Gate]]:
    with local_plane(tmp_path) as ctx:
        engine = Engine(ctx.store, ctx.box, ctx.data_dir, max_parallel=max_parallel)
        ctx.notify = engine.notify
        gate = Gate(engine.worker.handlers["provision"])
        engine.worker.handlers["provision"] = gate
        # the loop wakes only when told (a call that could not run its operation here tells
        # it): its periodic look could otherwise claim a waited add's operation between the
        # add's commit and the request's own claim, which is allowed, but not what the test
        # of the request's own thread looks at (it did, once, on a loaded CI machine)
        engine.worker.poll_interval = 30
        engine.start()
        try:
            projects.create_project(ctx, "shop", database=False)
            token = create_token(ctx.store, "admin")
            with TestClient(create_app(ctx, engine.worker),
                            headers={"Authorization": f"Bearer {token}"}) as client:
                yield ctx, client, gate
        finally:
            gate.open.set()
            engine.stop()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Context, TestClient, Gate]]:
    yield from world(tmp_path)


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[tuple[Context, TestClient, Gate]]:
    yield from world(tmp_path, max_parallel=1)


def add(client: TestClient, env: str, prefix: str, wait: float) -> dict[str, Any]:
    answer = client.post(SERVICES.format(env=env), params={"wait": wait},
                         json={"service": "local-media", "prefix": prefix, "provision": True})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_an_add_that_waits_answers_with_the_provisioned_instance(
        api: tuple[Context, TestClient, Gate]) -> None:
    """Old main: the add answered at once (`provisioning`, operation queued) whatever `wait`
    said, and the client asked again for the end."""
    _ctx, client, gate = api
    view = add(client, "test", "MEDIA", wait=30)
    assert view["state"] == "pending attachment"
    assert view["operation"]["status"] == "succeeded"
    assert view["operation"]["kind"] == "provision"
    # ran on a thread of the request, not on a handler thread of the worker's loop
    assert len(gate.threads) == 1 and not gate.threads[0].startswith("tether-op-")
    shown = client.get(SERVICES.format(env="test") + "/MEDIA").json()
    assert {k: v for k, v in view.items() if k != "operation"} == {
        k: v for k, v in shown.items() if k not in ("operation", "history")}
    # and a later provision call of the same endpoint family waits too
    client.post(SERVICES.format(env="test"),
                json={"service": "local-media", "prefix": "LATER"}).raise_for_status()
    provisioned = client.post(SERVICES.format(env="test") + "/LATER/provision",
                              params={"wait": 30})
    assert provisioned.status_code == 200, provisioned.text
    assert provisioned.json()["state"] == "pending attachment"
    assert provisioned.json()["operation"]["status"] == "succeeded"


def test_without_wait_the_add_answers_at_once(api: tuple[Context, TestClient, Gate]) -> None:
    _ctx, client, gate = api
    gate.open.clear()
    began = time.monotonic()
    view = add(client, "test", "MEDIA", wait=0)
    assert time.monotonic() - began < 5
    assert view["operation"]["status"] in ("queued", "running")
    gate.open.set()


def test_a_wait_that_runs_out_answers_with_the_operation_running(
        api: tuple[Context, TestClient, Gate]) -> None:
    _ctx, client, gate = api
    gate.open.clear()
    began = time.monotonic()
    view = add(client, "test", "MEDIA", wait=0.5)
    took = time.monotonic() - began
    assert 0.5 <= took < 5, took
    assert view["operation"]["status"] == "running"
    assert view["state"] == "provisioning"
    gate.open.set()
    final = client.get(f"/api/v1/operations/{view['operation']['id']}",
                       params={"wait": 30}).json()
    assert final["status"] == "succeeded"
    assert client.get(SERVICES.format(env="test") + "/MEDIA").json()["state"] == \
        "pending attachment"


def test_with_no_free_slot_the_loop_runs_it_and_the_call_still_waits(
        one_slot: tuple[Context, TestClient, Gate]) -> None:
    """The one slot works on another environment's provision: the waiting add's operation is
    left queued for the loop, and the answer comes when the loop has run it."""
    _ctx, client, gate = one_slot
    gate.open.clear()
    first = add(client, "live", "FIRST", wait=0.2)
    assert first["operation"]["status"] == "running"
    answers: list[dict[str, Any]] = []
    waiting = threading.Thread(target=lambda: answers.append(add(client, "test", "SECOND",
                                                                 wait=30)))
    waiting.start()
    time.sleep(0.5)
    assert not answers  # the slot is taken, the operation queued: still waiting
    gate.open.set()
    waiting.join(30)
    (second,) = answers
    assert second["state"] == "pending attachment"
    assert second["operation"]["status"] == "succeeded"
    assert gate.threads[1].startswith("tether-op-")  # the loop's handler thread ran it


def test_a_refused_add_that_waits_is_refused_as_without_wait(
        api: tuple[Context, TestClient, Gate]) -> None:
    _ctx, client, gate = api
    add(client, "test", "MEDIA", wait=30)
    again = client.post(SERVICES.format(env="test"), params={"wait": 30},
                        json={"service": "local-media", "prefix": "MEDIA", "provision": True})
    assert again.status_code == 409, again.text
    assert "MEDIA" in again.json()["error"]["message"]
    missing = client.post(SERVICES.format(env="test") + "/NOPE/provision", params={"wait": 30})
    assert missing.status_code == 404, missing.text
    assert len(gate.threads) == 1


def test_the_answer_names_only_an_operation_of_the_instance_asked_about(
        api: tuple[Context, TestClient, Gate]) -> None:
    """`after_operation` reads the operation with its instance in one statement; asked about
    another instance than the operation's, it answers that instance without the operation."""
    ctx, _client, _gate = api
    media = services.add(ctx, "shop", "test", "local-media", "MEDIA")
    files = services.add(ctx, "shop", "test", "local-media", "FILES", provision=True)
    op_id = files["operation"]["id"]
    own = services.after_operation(ctx, "shop", "test", "FILES", op_id)
    assert own["id"] == files["id"] and own["operation"]["id"] == op_id
    other = services.after_operation(ctx, "shop", "test", "MEDIA", op_id)
    assert other["id"] == media["id"] and other["operation"] is None
    with pytest.raises(NotFound):
        services.after_operation(ctx, "shop", "live", "FILES", op_id)


def test_a_brief_add_answers_only_what_a_waiting_caller_needs(
        api: tuple[Context, TestClient, Gate]) -> None:
    """A waited call reads the instance again once its operation ends, so the add's own view
    (decisions, credentials, ids for each action) was made for nothing: with `brief`, an add
    that queued an operation answers the id, the prefix and the operation; one that queued
    nothing answers the full view, as does the waited API call in the end."""
    ctx, client, _gate = api
    quiet = dataclasses.replace(ctx, notify=lambda: None)  # the operation stays queued
    brief = services.add(quiet, "shop", "test", "local-media", "MEDIA", provision=True,
                         brief=True)
    assert set(brief) == {"id", "prefix", "operation"}
    assert brief["operation"]["kind"] == "provision"
    full = services.add(ctx, "shop", "test", "local-media", "FILES", brief=True)
    assert full["operation"] is None and full["state"] == "new" and "actions" in full
    waited = add(client, "live", "MEDIA", wait=30)
    assert waited["state"] == "pending attachment" and "actions" in waited


def test_a_wait_that_runs_out_while_still_queueing_answers_once_queued(
        api: tuple[Context, TestClient, Gate], monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is slow: `wait` runs out before the add's transaction has ended. The answer
    is what it queued (or its refusal), once it has, never an error of the waiting."""
    _ctx, client, gate = api
    real_add = services.add

    def slow_add(*args: Any, **kwargs: Any) -> dict[str, object]:
        time.sleep(1.0)
        return real_add(*args, **kwargs)

    monkeypatch.setattr(services, "add", slow_add)
    gate.open.clear()
    view = add(client, "test", "MEDIA", wait=0.2)
    assert view["prefix"] == "MEDIA" and view["state"] == "provisioning"
    assert view["operation"]["status"] == "running"
    gate.open.set()
    refused = client.post(SERVICES.format(env="test"), params={"wait": 0.2},
                          json={"service": "local-media", "prefix": "MEDIA",
                                "provision": True})
    assert refused.status_code == 409, refused.text
    assert "MEDIA" in refused.json()["error"]["message"]
