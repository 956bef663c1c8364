"""Who may do what, through the REST API: every route and every kind of token, from one table.

The principals: an admin; a developer granted the project `shop`; a developer granted only
`other`; a viewer; a revoked admin token; an expired one. A route is *allowed* when the answer is
anything but 401/403 (a 404 or 409 of the action itself means the check let it through); denied
routes answer 403 (or 404 where even the existence of an id of another project is not told), and
the revoked and expired tokens 401 everywhere. The table must name every route of the API: a new
route without a row fails `test_the_table_covers_every_route`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.plane import local_plane
from tether.actions import deployments, projects, services
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.store.models import Token

PRINCIPALS = ("admin", "dev_shop", "dev_other", "viewer", "revoked", "expired")
ENV = "/api/v1/projects/shop/environments/test"


@dataclass
class World:
    client: TestClient
    tokens: dict[str, str]
    ctx: Context
    deployment_id: int
    operation_id: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with local_plane(tmp_path_factory.mktemp("access")) as ctx:
        yield from _world(ctx)


def _world(ctx: Context) -> Iterator[World]:
    store = ctx.store
    for name in ("shop", "other"):
        projects.create_project(ctx, name, app_command="python -m http.server")
    services.add(ctx, "shop", "test", "local-media", "MEDIA")
    services.add(ctx, "shop", "test", "local-media", "SPARE")
    dep = deployments.deploy(ctx, "shop", "test")
    operation = dep["operation"]
    assert isinstance(operation, dict)
    tokens = {
        "admin": create_token(store, "root"),
        "dev_shop": create_token(store, "dev-shop", "developer", projects=["shop"],
                                 owner="alice"),
        "dev_other": create_token(store, "dev-other", "developer", projects=["other"]),
        "viewer": create_token(store, "viewer", "viewer"),
        "revoked": create_token(store, "gone", expires_at=datetime.now(UTC) + timedelta(days=1)),
        "expired": create_token(store, "old", expires_at=datetime.now(UTC) + timedelta(days=1)),
    }
    with store.session() as s:
        s.execute(update(Token).where(Token.name == "old")
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    app = create_app(ctx)
    with TestClient(app) as client:
        assert client.delete("/api/v1/tokens/gone", headers=_auth(tokens["admin"])
                             ).status_code == 200
        yield World(client, tokens, ctx, int(str(dep["id"])), int(str(operation["id"])))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Who may call each route: `any` (every valid token), `read`, `reveal`, `change` (in project shop),
# `create` (projects: admin, or a developer without a project scope), `admin`; `public` needs no
# token at all (signing in: it checks the token in its body). A trailing `404`
# means a denied token gets 404 instead of 403 (ids that do not tell which project they are of).
ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/api/v1/status", None, "any"),
    ("GET", "/api/v1/projects", None, "any"),
    ("POST", "/api/v1/projects", {"name": "fresh{n}"}, "create"),
    ("GET", "/api/v1/projects/shop", None, "read"),
    ("PATCH", "/api/v1/projects/shop", {"health_path": "/"}, "change"),
    ("GET", ENV + "/variables", None, "read"),
    ("GET", ENV + "/variables?all=true", None, "read"),
    ("GET", ENV + "/variables?all=true&reveal=true", None, "reveal"),
    ("PUT", ENV + "/variables/GREETING", {"value": "hi"}, "change"),
    ("DELETE", ENV + "/variables/NOPE", None, "change"),
    ("GET", "/api/v1/catalog?region=local", None, "any"),
    ("GET", "/api/v1/catalog?project=shop", None, "read"),
    ("GET", ENV + "/services", None, "read"),
    ("POST", ENV + "/services", {"service": "local-media", "prefix": "NEW{n}"}, "change"),
    ("GET", ENV + "/services/MEDIA", None, "read"),
    ("GET", ENV + "/services/MEDIA?reveal=true", None, "reveal"),
    ("POST", ENV + "/services/SPARE/provision", None, "change"),
    ("POST", ENV + "/services/MEDIA/detach", None, "change"),
    ("POST", ENV + "/services/MEDIA/attach", None, "change"),
    ("POST", ENV + "/services/MEDIA/rotate", None, "change"),
    ("DELETE", ENV + "/services/MEDIA?confirm=MEDIA", None, "change"),
    ("POST", ENV + "/deployments", None, "change"),
    ("GET", ENV + "/deployments", None, "read"),
    ("GET", ENV + "/history", None, "read"),
    ("GET", ENV + "/logs", None, "read"),
    ("GET", "/api/v1/deployments/{deployment}", None, "read 404"),
    ("GET", "/api/v1/deployments/{deployment}/release", None, "read 404"),
    ("GET", "/api/v1/operations/{operation}", None, "read 404"),
    ("GET", "/api/v1/clusters", None, "any"),
    ("GET", "/api/v1/clusters/1/health", None, "admin"),
    ("POST", "/api/v1/clusters", {"kind": "local-files", "region": "local",
                                  "url": "file:///nonexistent/dir"}, "admin"),
    ("GET", "/api/v1/regions", None, "any"),
    ("GET", "/api/v1/kinds", None, "any"),
    ("GET", "/api/v1/backups", None, "admin"),
    ("GET", "/api/v1/tokens", None, "admin"),
    ("POST", "/api/v1/tokens", {"name": "t{n}", "role": "viewer"}, "admin"),
    ("DELETE", "/api/v1/tokens/nobody", None, "admin"),
    ("POST", "/api/v1/sessions", {"token": "tth_not-a-token"}, "public"),
    ("GET", "/api/v1/sessions", None, "any"),
    ("DELETE", "/api/v1/sessions/999999", None, "any"),
]


def allowed(principal: str, need: str) -> bool:
    need = need.split()[0]
    if principal == "admin" or need == "any":
        return True
    if principal == "dev_shop":
        return need in ("read", "reveal", "change")
    if principal == "dev_other":
        return False
    if principal == "viewer":
        return need == "read"
    raise AssertionError(principal)


def test_the_table_covers_every_route(world: World) -> None:
    routes = {(m, r.path) for r in world.client.app.routes  # type: ignore[attr-defined]
              if isinstance(r, APIRoute) and r.include_in_schema
              for m in r.methods}
    covered = set()
    for method, path, _body, _need in ROUTES:
        bare = path.split("?")[0]
        for route_method, template in routes:
            if route_method == method and _matches(template, bare):
                covered.add((route_method, template))
    assert routes - covered == set(), "routes without a row in the access table"


def _matches(template: str, path: str) -> bool:
    a, b = template.strip("/").split("/"), path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_route_for_every_token(world: World, principal: str) -> None:
    wrong = []
    for n, (method, path, body, need) in enumerate(ROUTES):
        url = path.format(deployment=world.deployment_id, operation=world.operation_id)
        payload = ({k: v.format(n=n) if isinstance(v, str) else v for k, v in body.items()}
                   if body is not None else None)
        answer = world.client.request(method, url, json=payload,
                                      headers=_auth(world.tokens[principal]))
        if need == "public":  # signing in needs no token: the body's (invalid) one is refused
            expected = (401, 429)  # 429: this address failed to sign in several times by now
            ok = answer.status_code in expected
        elif principal in ("revoked", "expired"):
            expected: tuple[int, ...] = (401,)
            ok = answer.status_code == 401
        elif allowed(principal, need):
            expected = ()
            ok = answer.status_code not in (401, 403)
        else:
            expected = (404,) if need.endswith("404") else (403,)
            ok = answer.status_code in expected
        if not ok:
            wrong.append(f"{principal} {method} {url}: {answer.status_code} "
                         f"(expected {expected or 'allowed'}) {answer.text[:200]}")
    assert wrong == []


def test_a_scoped_token_sees_only_its_projects(world: World) -> None:
    listed = world.client.get("/api/v1/projects", headers=_auth(world.tokens["dev_shop"])).json()
    assert [p["name"] for p in listed] == ["shop"]
    # "the only project" is the only one it is granted
    assert world.client.get("/api/v1/status", headers=_auth(world.tokens["dev_other"])
                            ).json()["projects"] == ["other"]


def test_a_viewer_reads_masked_values_and_may_not_reveal(world: World) -> None:
    viewer = _auth(world.tokens["viewer"])
    admin = _auth(world.tokens["admin"])
    assert world.client.put(ENV + "/variables/STRIPE_KEY", json={"value": "sk_live_123"},
                            headers=admin).status_code == 200
    custom = world.client.get(ENV + "/variables", headers=viewer).json()
    stripe = next(v for v in custom if v["name"] == "STRIPE_KEY")
    assert stripe["hidden"] is True and "sk_live_123" not in str(custom)
    # a developer of the project sees its own custom values
    mine = world.client.get(ENV + "/variables", headers=_auth(world.tokens["dev_shop"])).json()
    assert next(v for v in mine if v["name"] == "STRIPE_KEY")["value"] == "sk_live_123"
    listed = world.client.get(ENV + "/variables?all=true", headers=viewer).json()
    secret = next(v for v in listed if v["name"] == "SECRET_KEY")
    assert secret["hidden"] is True
    refused = world.client.get(ENV + "/variables?all=true&reveal=true", headers=viewer)
    assert refused.status_code == 403
    assert "may not see secret values" in refused.json()["error"]["message"]


def test_revoke_takes_effect_at_once(world: World) -> None:
    admin = _auth(world.tokens["admin"])
    made = world.client.post("/api/v1/tokens", json={"name": "short-lived", "role": "viewer"},
                             headers=admin)
    assert made.status_code == 201
    secret = made.json()["token"]
    assert world.client.get("/api/v1/status", headers=_auth(secret)).status_code == 200
    assert world.client.delete("/api/v1/tokens/short-lived", headers=admin).status_code == 200
    refused = world.client.get("/api/v1/status", headers=_auth(secret))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    listed = world.client.get("/api/v1/tokens", headers=admin).json()
    assert "short-lived" not in [t["name"] for t in listed]
    assert all("token" not in t and "token_hash" not in t for t in listed)


def test_token_names_are_unique_among_live_tokens(world: World) -> None:
    admin = _auth(world.tokens["admin"])
    body = {"name": "twice", "role": "viewer"}
    assert world.client.post("/api/v1/tokens", json=body, headers=admin).status_code == 201
    again = world.client.post("/api/v1/tokens", json=body, headers=admin)
    assert again.status_code == 409
    assert world.client.delete("/api/v1/tokens/twice", headers=admin).status_code == 200
    assert world.client.post("/api/v1/tokens", json=body, headers=admin).status_code == 201


@pytest.mark.parametrize("body", [
    {"name": "bad name", "role": "viewer"},
    {"name": "x", "role": "root"},
    {"name": "x", "role": "admin", "projects": ["shop"]},
    {"name": "x", "role": "viewer", "projects": ["nowhere"]},
    {"name": "x", "role": "viewer", "expires_days": 0},
    {"name": "x", "role": "developer", "projects": []},  # an empty scope is not "every project"
])
def test_bad_tokens_are_refused(world: World, body: dict[str, Any]) -> None:
    answer = world.client.post("/api/v1/tokens", json=body, headers=_auth(world.tokens["admin"]))
    assert answer.status_code in (400, 404, 422), answer.text


def test_the_audit_trail_names_the_owner(world: World) -> None:
    dev = _auth(world.tokens["dev_shop"])
    added = world.client.post(ENV + "/services", json={"service": "local-media",
                                                       "prefix": "AUDITED"}, headers=dev)
    assert added.status_code == 201, added.text
    shown = world.client.get(ENV + "/services/AUDITED", headers=dev).json()
    assert shown["history"][0]["actor"] == "alice (dev-shop)"
    deployed = world.client.post(ENV + "/deployments", headers=dev).json()
    assert deployed["requested_by"] == "alice (dev-shop)"


def test_a_long_poll_is_cut_short_when_its_token_is_revoked(world: World) -> None:
    admin = _auth(world.tokens["admin"])
    made = world.client.post("/api/v1/tokens", json={"name": "poller", "role": "viewer"},
                             headers=admin).json()
    answers: list[int] = []

    def poll() -> None:
        answers.append(world.client.get(f"/api/v1/operations/{world.operation_id}?wait=20",
                                        headers=_auth(made["token"])).status_code)

    waiter = threading.Thread(target=poll)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)
    assert world.client.delete("/api/v1/tokens/poller", headers=admin).status_code == 200
    waiter.join(timeout=25)
    assert answers == [401]
    assert time.monotonic() - started < 5, "refused by the next pass, not after the whole wait"
