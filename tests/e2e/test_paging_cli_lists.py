"""The CLI's other lists page too (issue 12): `tether cluster list`, `token list` and `project
history` take `--limit N` and `--all`; `backup list` and `project env-vars`, whose `--all` means
something else already, take `--limit N` (and `env-vars --get` looks through every page). JSON
stays one array; a note on stderr says when more exist; a bad limit exits 2."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Tether

pytestmark = pytest.mark.e2e

MORE = "there are more (--limit N or --all)"


def test_cluster_token_and_history_lists_take_limit_and_all(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "pages", "--no-database")
    clusters = t.ok("cluster", "list", "--all", "--json").json()
    assert len(clusters) >= 2  # tether up registers its embedded servers
    one = t.ok("cluster", "list", "--limit", "1", "--json")
    assert one.json() == clusters[:1] and f"showing the first 1 clusters: {MORE}" in one.err
    assert t.cli("cluster", "list", "--limit", "0").code == 2

    for n in range(4):
        t.ok("token", "create", f"page-token-{n}", "--role", "viewer")
    tokens = t.ok("token", "list", "--all", "--json").json()
    assert [x["name"] for x in tokens][-4:] == [f"page-token-{n}" for n in range(4)]
    two = t.ok("token", "list", "--limit", "2", "--json")
    assert two.json() == tokens[:2] and MORE in two.err
    assert "page-token-0" not in t.ok("token", "list", "--limit", "1").out

    for n in range(3):
        t.ok("service", "add", "test", "local-media", "--prefix", f"M{n}", "-p", "pages",
             "--no-wait")
        t.ok("project", "env-vars", "-e", "test", "--set", f"V{n}", "x", "-p", "pages")
    history = t.ok("project", "history", "-e", "test", "-p", "pages", "--all", "--json").json()
    assert len(history) >= 6 and history[0]["detail"] == "V2"  # newest first
    page = t.ok("project", "history", "-e", "test", "-p", "pages", "--limit", "2", "--json")
    assert page.json() == history[:2] and "showing the first 2 entries" in page.err
    m1 = t.ok("project", "history", "-e", "test", "-p", "pages", "--service", "M1", "--json")
    assert {e["prefix"] for e in m1.json()} == {"M1"}
    table = t.ok("project", "history", "-e", "test", "-p", "pages")
    assert "variable set" in table.out and "M0" in table.out
    never = t.cli("project", "history", "-e", "test", "-p", "pages", "--service", "NOPE")
    assert never.code == 2 and "never had a service NOPE" in never.err


def test_env_vars_and_backups_take_limit(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "vars", "--no-database")
    for n in range(5):
        t.ok("project", "env-vars", "-e", "test", "--set", f"VAR_{n}", str(n), "-p", "vars")
    every = t.ok("project", "env-vars", "-e", "test", "-p", "vars", "--json").json()
    assert [v["name"] for v in every] == [f"VAR_{n}" for n in range(5)]
    two = t.ok("project", "env-vars", "-e", "test", "-p", "vars", "--limit", "2", "--json")
    assert [v["name"] for v in two.json()] == ["VAR_0", "VAR_1"]
    assert "showing the first 2 variables: there are more (--limit N)" in two.err
    # --get finds a variable however deep
    got = t.ok("project", "env-vars", "-e", "test", "-p", "vars", "--limit", "1",
               "--get", "VAR_4")
    assert got.out.strip() == "4"
    assert t.cli("project", "env-vars", "-p", "vars", "--limit", "0").code == 2

    t.ok("service", "add", "test", "local-media", "--prefix", "MEDIA", "-p", "vars")
    t.ok("service", "provision", "test", "MEDIA", "-p", "vars")
    made = [t.ok("backup", "create", "test", "-p", "vars", "--json").json()["id"]
            for _ in range(3)]
    listed = t.ok("backup", "list", "-p", "vars", "--limit", "2", "--json")
    assert [b["id"] for b in listed.json()] == made[::-1][:2]  # newest first
    assert "showing the first 2 backups: there are more (--limit N)" in listed.err
    assert len(t.ok("backup", "list", "test", "-p", "vars", "--json").json()) == 3
