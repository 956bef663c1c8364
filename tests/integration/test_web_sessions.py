"""Browser sessions of the Services view, over HTTP: a sign-in trades a token for a session (a
bearer secret of its own, not the token), signing out or revoking the token ends it at once, no
cookie is ever set or read (cookies ignore ports: every app on the host would get one), and
repeated failed sign-ins are slowed down."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import SignInThrottle, create_token
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


def sign_in(client: TestClient, token: str) -> tuple[int, dict[str, Any]]:
    answer = client.post("/api/v1/sessions", json={"token": token})
    return answer.status_code, answer.json()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_session_is_not_the_token_and_no_cookie_is_ever_set(
        setup: tuple[TestClient, str]) -> None:
    client, token = setup
    answer = client.post("/api/v1/sessions", json={"token": token})
    assert answer.status_code == 201
    assert "set-cookie" not in answer.headers
    session = answer.json()
    assert session["session"].startswith("tts_") and token not in session["session"]
    for path in ("/", "/sign-in", "/sessions", "/projects/x"):
        page = client.get(path)
        assert page.status_code == 200 and "set-cookie" not in page.headers
        assert token not in page.text and session["session"] not in page.text
    listed = client.get("/api/v1/tokens", headers=bearer(session["session"]))
    assert listed.status_code == 200, listed.text
    # a session may not mint a token (which would outlive the session's end)
    minted = client.post("/api/v1/tokens", json={"name": "web-made", "role": "viewer"},
                         headers=bearer(session["session"]))
    assert minted.status_code == 403, minted.text


def test_cookies_are_never_credentials(setup: tuple[TestClient, str]) -> None:
    """The old design's cookie, even holding a valid session or token, opens nothing: an app on
    another port of this host receives the browser's cookies for this host."""
    client, token = setup
    _, session = sign_in(client, token)
    for name in ("tether_session", "session"):
        for value in (session["session"], token):
            jar = TestClient(client.app)
            jar.cookies.set(name, value)
            assert jar.get("/api/v1/projects").status_code == 401
            assert jar.post("/api/v1/tokens", json={"name": "c", "role": "viewer"}
                            ).status_code == 401


def test_sign_out_ends_the_session_in_the_store(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    _, session = sign_in(client, token)
    mine = bearer(session["session"])
    listed = client.get("/api/v1/sessions", headers=mine).json()
    assert [s["current"] for s in listed] == [True]
    assert client.delete(f"/api/v1/sessions/{session['id']}", headers=mine).status_code == 200
    # the copied secret is worthless now
    refused = client.get("/api/v1/projects", headers=mine)
    assert refused.status_code == 401
    assert "ended" in refused.json()["error"]["message"]
    # and the token itself still works (only the session ended)
    assert client.get("/api/v1/status", headers=bearer(token)).status_code == 200


def test_revoking_the_token_ends_its_sessions(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    made = client.post("/api/v1/tokens", json={"name": "dev", "role": "developer"},
                       headers=bearer(token)).json()
    _, session = sign_in(client, made["token"])
    assert client.get("/api/v1/projects", headers=bearer(session["session"])).status_code == 200
    assert client.delete("/api/v1/tokens/dev", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/projects", headers=bearer(session["session"])).status_code == 401


def test_a_session_can_be_ended_from_another(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    _, mine = sign_in(client, token)
    _, theirs = sign_in(client, token)
    sessions = client.get("/api/v1/sessions", headers=bearer(mine["session"])).json()
    assert {s["id"] for s in sessions if not s["current"]} == {theirs["id"]}
    assert client.delete(f"/api/v1/sessions/{theirs['id']}",
                         headers=bearer(mine["session"])).status_code == 200
    assert client.get("/api/v1/projects", headers=bearer(theirs["session"])).status_code == 401
    assert client.get("/api/v1/projects", headers=bearer(mine["session"])).status_code == 200


def test_a_developer_sees_and_ends_only_its_own_sessions(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    _, admin_session = sign_in(client, token)
    dev = client.post("/api/v1/tokens", json={"name": "dev2", "role": "developer"},
                      headers=bearer(token)).json()
    _, dev_session = sign_in(client, dev["token"])
    seen = client.get("/api/v1/sessions", headers=bearer(dev_session["session"])).json()
    assert [s["id"] for s in seen] == [dev_session["id"]]
    ended = client.delete(f"/api/v1/sessions/{admin_session['id']}",
                          headers=bearer(dev_session["session"]))
    assert ended.status_code == 404
    assert client.get("/api/v1/status", headers=bearer(admin_session["session"])
                      ).status_code == 200


def test_repeated_failed_sign_ins_are_slowed_down(setup: tuple[TestClient, str]) -> None:
    client, token = setup
    statuses = [sign_in(client, "tth_wrong")[0] for _ in range(7)]
    assert statuses[:4] == [401] * 4
    assert 429 in statuses[4:]
    # even the right token waits its turn from this address, and is told for how long
    answer = client.post("/api/v1/sessions", json={"token": token})
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) >= 1


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
    # after the window, an address starts afresh
    throttle.failed("c")
    now[0] += 61
    assert throttle.wait_left("c") == 0
