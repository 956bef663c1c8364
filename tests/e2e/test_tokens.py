"""`tether token create|list|revoke` through the real CLI and a real `tether up`: a developer
token scoped to one project sees and changes only that project, may not administer tokens, and
is refused by its very next call once revoked."""

from __future__ import annotations

from tests.e2e.conftest import Result, Tether


def as_token(t: Tether, secret: str, *args: str) -> Result:
    """The CLI with another token (TETHER_URL/TETHER_TOKEN override the config)."""
    saved = dict(t.env)
    t.env.update({"TETHER_URL": t.url, "TETHER_TOKEN": secret})
    try:
        return t.cli(*args)
    finally:
        t.env.clear()
        t.env.update(saved)


def test_a_scoped_developer_token_from_creation_to_revocation(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "tokshop")
    t.ok("project", "create", "tokother")
    made = t.ok("token", "create", "bob-laptop", "--role", "developer", "--project", "tokshop",
                "--owner", "bob", "--expires", "30", "--json").json()
    secret = made["token"]
    assert made["role"] == "developer" and made["projects"] == ["tokshop"]
    assert made["expires_at"] is not None

    status = as_token(t, secret, "status", "--json")
    assert status.code == 0, status.err
    assert status.json()["actor"] == "bob (bob-laptop)"
    assert status.json()["role"] == "developer"

    listed = as_token(t, secret, "project", "list", "--json")
    assert [p["name"] for p in listed.json()] == ["tokshop"]
    added = as_token(t, secret, "service", "add", "test", "local-media", "--prefix", "BOB",
                     "--json")
    assert added.code == 0, added.err
    refused = as_token(t, secret, "service", "add", "test", "local-media", "-p", "tokother")
    assert refused.code == 2
    assert "not granted project 'tokother'" in refused.err
    no_admin = as_token(t, secret, "token", "list")
    assert no_admin.code == 2
    assert "needs an admin token" in no_admin.err

    listing = t.ok("token", "list", "--json").json()
    mine = next(tok for tok in listing if tok["name"] == "bob-laptop")
    assert mine["owner"] == "bob" and mine["status"] == "active"
    assert secret not in t.ok("token", "list").out

    t.ok("token", "revoke", "bob-laptop")
    after = as_token(t, secret, "status")
    assert after.code == 2
    assert "revoked" in after.err
    assert "bob-laptop" not in [tok["name"] for tok in t.ok("token", "list", "--json").json()]
    assert "bob-laptop" in t.ok("token", "list", "--revoked").out


def test_bad_token_input_exits_2(tether: Tether) -> None:
    bad_role = tether.cli("token", "create", "x", "--role", "root")
    assert bad_role.code == 2
    assert "unknown role" in bad_role.err
    unknown = tether.cli("token", "revoke", "nobody-at-all")
    assert unknown.code == 2
    assert "no live token" in unknown.err
