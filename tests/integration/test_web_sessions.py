"""Browser sessions of the Services view, over HTTP: a sign-in makes a server-side session (the
cookie is not the token), signing out or revoking the token ends it at once, the CSRF token is
in the page and in no cookie, and repeated failed sign-ins are slowed down."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import SESSION_COOKIE, SignInThrottle, create_token
from tether.crypto import SecretBox
from tether.store.db import Store


@pytest.fixture
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    data_dir = tmp_path_factory.mktemp("sessions")
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    store.migrate()
    ctx = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir)
    token = create_token(store, "admin")
    with TestClient(create_app(ctx), follow_redirects=False) as client:
        yield client, token
    store.dispose()


def sign_in(client: TestClient, token: str) -> int:
    form = client.get("/sign-in")
    assert form.status_code == 200
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text)
    assert form_token is not None
    answer = client.post("/web/sign-in", data={"token": token, "next": "/",
                                               "form_token": form_token.group(1)})
    return answer.status_code


def csrf_of_page(client: TestClient) -> str:
    page = client.get("/")
    assert page.status_code == 200, page.text
    found = re.search(r'<meta name="tether-csrf" content="([0-9a-f]{64})">', page.text)
    assert found is not None, "the page carries its session's CSRF token"
    return found.group(1)


def test_the_session_cookie_is_not_the_token_and_no_cookie_holds_the_csrf_token(
        setup: tuple[TestClient, str]) -> None:
    client, token = setup
    assert sign_in(client, token) == 303
    cookies = dict(client.cookies.items())
    assert set(cookies) == {SESSION_COOKIE}, "no script-readable cookie (e.g. a CSRF cookie)"
    assert cookies[SESSION_COOKIE] != token
    assert token not in cookies[SESSION_COOKIE]
    csrf = csrf_of_page(client)
    # a change with the page's token is accepted; without it, refused
    made = client.post("/api/v1/tokens", json={"name": "web-made", "role": "viewer"},
                       headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    refused = client.post("/api/v1/tokens", json={"name": "forged", "role": "viewer"})
    assert refused.status_code == 403


def test_sign_out_ends_the_session_in_the_store(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    assert sign_in(client, token) == 303
    copied = client.cookies.get(SESSION_COOKIE)
    csrf = csrf_of_page(client)
    listed = client.get("/api/v1/sessions").json()
    assert [s["current"] for s in listed] == [True]
    out = client.post("/web/sign-out", data={"csrf_token": csrf})
    assert out.status_code == 303
    # the copied cookie is worthless now, on the API and on the pages
    replay = TestClient(client.app, follow_redirects=False)
    replay.cookies.set(SESSION_COOKIE, copied or "")
    assert replay.get("/api/v1/projects").status_code == 401
    assert replay.get("/").status_code == 303
    # and the token itself still works (only the session ended)
    assert client.get("/api/v1/status", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200


def test_revoking_the_token_ends_its_sessions(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    admin = {"Authorization": f"Bearer {token}"}
    made = client.post("/api/v1/tokens", json={"name": "dev", "role": "developer"},
                       headers=admin).json()
    browser = TestClient(client.app, follow_redirects=False)
    assert sign_in(browser, made["token"]) == 303
    assert browser.get("/api/v1/projects").status_code == 200
    assert client.delete("/api/v1/tokens/dev", headers=admin).status_code == 200
    assert browser.get("/api/v1/projects").status_code == 401


def test_a_session_can_be_ended_from_another(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    other = TestClient(client.app, follow_redirects=False)
    assert sign_in(client, token) == 303
    assert sign_in(other, token) == 303
    csrf = csrf_of_page(client)
    sessions = client.get("/api/v1/sessions").json()
    theirs = next(s for s in sessions if not s["current"])
    assert client.delete(f"/api/v1/sessions/{theirs['id']}",
                         headers={"X-CSRF-Token": csrf}).status_code == 200
    assert other.get("/api/v1/projects").status_code == 401
    assert client.get("/api/v1/projects").status_code == 200


def test_repeated_failed_sign_ins_are_slowed_down(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    statuses = [sign_in(client, "tth_wrong") for _ in range(7)]
    assert statuses[:4] == [401] * 4
    assert 429 in statuses[4:]
    # even the right token waits its turn from this address
    assert sign_in(client, token) == 429


def test_the_throttle_doubles_its_wait_and_forgets_a_success() -> None:
    now = [0.0]
    throttle = SignInThrottle(free=3, window=60, ceiling=8, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("a")
        assert throttle.wait_left("a") == 0
    waits = []
    for _ in range(5):
        throttle.failed("a")
        waits.append(throttle.wait_left("a"))
    assert waits == [1, 2, 4, 8, 8]
    assert throttle.wait_left("b") == 0
    throttle.succeeded("a")
    assert throttle.wait_left("a") == 0
