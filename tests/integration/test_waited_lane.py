"""A waited add by a caller known already is answered in front of FastAPI (`tether.api.lane`,
issue 12: overhead under 10 ms): not routed, the same answer, the same errors; anything the lane
cannot prove FastAPI would accept goes on to FastAPI, body and all, and gets FastAPI's answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.test_waited_calls import SERVICES, Gate, add, world
from tether.actions import tokens
from tether.actions.common import Context
from tether.api.auth import create_token
from tether.store.models import Instance

pytestmark = pytest.mark.integration

ADD = SERVICES.format(env="test")


class Routed:
    """Counts the calls to the add route (POST …/services) that reach FastAPI, and records
    every call that does (method and path)."""

    def __init__(self, client: TestClient) -> None:
        self.reached: list[tuple[str, str]] = []
        app: Any = client.app
        front = app.front

        def counting(inner: Any) -> Any:
            async def reach(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    self.reached.append((scope["method"], scope["path"]))
                await inner(scope, receive, send)

            return front(reach)

        app.front, app._front = counting, None  # made again by the next call

    @property
    def calls(self) -> int:
        return sum(1 for method, path in self.reached
                   if method == "POST" and path.endswith("/services"))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Context, TestClient, Gate]]:
    yield from world(tmp_path)


def post(client: TestClient, body: Any, query: str = "wait=30",
         headers: dict[str, str] | None = None) -> Any:
    if isinstance(body, bytes):
        return client.post(f"{ADD}?{query}", content=body,
                           headers={"Content-Type": "application/json", **(headers or {})})
    return client.post(f"{ADD}?{query}", json=body, headers=headers)


def test_a_waited_add_by_a_known_caller_is_not_routed(
        api: tuple[Context, TestClient, Gate]) -> None:
    """Old main: every waited add went through FastAPI's routing, dependencies and
    validation (~1 ms of a provision's overhead)."""
    ctx, client, _gate = api
    routed = Routed(client)
    client.get("/api/v1/status").raise_for_status()  # the caller, kept as signed in
    first = add(client, "test", "ONE", wait=30)
    assert routed.reached == [("GET", "/api/v1/status")]
    # the same answer FastAPI gives (the first add with no caller known yet, in a new app)
    assert first["state"] == "pending attachment"
    assert first["operation"]["status"] == "succeeded"
    shown = client.get(f"{ADD}/ONE").json()
    assert {k: v for k, v in first.items() if k != "operation"} == {
        k: v for k, v in shown.items() if k not in ("operation", "history")}
    answer = post(client, {"service": "local-media", "prefix": "TWO", "provision": True})
    assert answer.status_code == 201
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert routed.calls == 0
    with ctx.store.session() as s:
        assert s.query(Instance).filter(Instance.prefix.in_(["ONE", "TWO"])).count() == 2
    # not waited: the same lane, answered at once with the operation queued or running
    queued = post(client, {"service": "local-media", "prefix": "THREE", "provision": True},
                  query="wait=0")
    assert queued.status_code == 201 and queued.json()["prefix"] == "THREE"
    assert routed.calls == 0


def test_a_first_call_goes_through_fastapi_and_answers_the_same(
        api: tuple[Context, TestClient, Gate]) -> None:
    _ctx, client, _gate = api
    routed = Routed(client)
    first = post(client, {"service": "local-media", "prefix": "ONE", "provision": True})
    assert first.status_code == 201 and routed.calls == 1  # nobody known yet
    second = post(client, {"service": "local-media", "prefix": "TWO", "provision": True})
    assert second.status_code == 201 and routed.calls == 1  # the lane
    one, two = first.json(), second.json()
    assert sorted(one) == sorted(two)
    assert as_one(two) == as_one(one)


def as_one(view: dict[str, Any]) -> str:
    """An answer with what differs between two adds left out (ids, times, the login, the
    variables' values, the operation) and its prefix spelled ONE."""
    kept = {k: v for k, v in view.items() if k not in (
        "id", "uuid", "created_at", "updated_at", "observed_at", "login", "operation")}
    kept["variables"] = sorted(kept["variables"])
    return json.dumps(kept, sort_keys=True).replace(view["prefix"], "ONE")


def test_the_lanes_errors_are_the_apis(api: tuple[Context, TestClient, Gate]) -> None:
    """Each refusal asked twice by a new token: first FastAPI answers it (the caller is not
    known yet), then the lane; the answers are the same."""
    ctx, client, _gate = api
    add(client, "test", "ONE", wait=30)
    routed = Routed(client)
    cases = [
        ("admin", ADD, {"service": "local-media", "prefix": "ONE", "provision": True}, 409),
        ("admin", ADD, {"service": "no-such-service", "prefix": "TWO"}, 400),
        ("admin", "/api/v1/projects/nope/environments/test/services",
         {"service": "local-media", "prefix": "TWO"}, 404),
        ("admin", "/api/v1/projects/shop/environments/nope/services",
         {"service": "local-media", "prefix": "TWO"}, 404),
        ("viewer", ADD, {"service": "local-media", "prefix": "TWO", "provision": True}, 403),
    ]
    for n, (role, path, body, status) in enumerate(cases):
        headers = {"Authorization": f"Bearer {create_token(ctx.store, f'c{n}', role=role)}"}
        answers = [client.post(f"{path}?wait=30", json=body, headers=headers)
                   for _ in range(2)]
        assert [a.status_code for a in answers] == [status, status], answers[0].text
        assert answers[0].json() == answers[1].json()
        assert "error" in answers[0].json()
        assert routed.calls == n + 1  # the first of the two
    with ctx.store.session() as s:
        assert s.query(Instance).count() == 1


@pytest.mark.parametrize(("body", "query"), [
    (b'{"service": "local-media", "prefix": "TWO"', "wait=30"),  # not JSON
    (b'{"prefix": "TWO"}', "wait=30"),  # no service
    (b'{"service": "local-media", "prefix": "TWO", "private": "maybe"}', "wait=30"),
    (b'{"service": "local-media", "prefix": "TWO"}', "wait=61"),  # waits too long
    (b'{"service": "local-media", "prefix": "TWO"}', "wait=-1"),
    (b'{"service": "local-media", "prefix": "TWO"}', "wait=soon"),
])
def test_what_fastapi_would_refuse_goes_to_fastapi(
        api: tuple[Context, TestClient, Gate], body: bytes, query: str) -> None:
    """The lane never refuses anything itself: the body it read goes on to FastAPI, which
    says what is wrong (422 in the API's error shape)."""
    _ctx, client, _gate = api
    routed = Routed(client)
    client.get("/api/v1/status").raise_for_status()
    answer = post(client, body, query)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert routed.calls == 1


def test_a_revoked_or_unknown_token_is_refused(tmp_path: Path) -> None:
    for ctx, client, _gate in world(tmp_path):
        routed = Routed(client)
        token = create_token(ctx.store, "soon-gone")
        headers = {"Authorization": f"Bearer {token}"}
        client.get("/api/v1/status", headers=headers).raise_for_status()
        tokens.revoke(ctx, "soon-gone")
        gone = post(client, {"service": "local-media", "prefix": "ONE"}, headers=headers)
        assert gone.status_code == 401, gone.text
        stranger = post(client, {"service": "local-media", "prefix": "ONE"},
                        headers={"Authorization": "Bearer nope"})
        assert stranger.status_code == 401
        # FastAPI's: the lane knows neither caller (the dependency refuses them)
        assert routed.calls == 2
