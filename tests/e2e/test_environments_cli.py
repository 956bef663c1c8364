"""`tether project add-env`: an environment beside test and live, from the command line."""

from __future__ import annotations

from tests.e2e.conftest import Tether


def test_add_env_adds_an_environment_and_refuses_a_taken_name(tether: Tether) -> None:
    """Old main: no such command (exit 2, "No such command")."""
    tether.ok("project", "create", "envshop", "--no-database")
    added = tether.ok("project", "add-env", "staging", "-p", "envshop")
    assert "Added environment staging to envshop: http" in added.out, added.out
    assert "tether deploy staging" in added.err + added.out
    made = tether.ok("project", "add-env", "preview", "--no-database", "-p", "envshop",
                     "--json").json()
    assert made["name"] == "preview" and made["database"] is None
    shown = tether.ok("project", "show", "-p", "envshop", "--json").json()
    assert [e["name"] for e in shown["environments"]] == ["test", "live", "staging", "preview"]
    variables = tether.ok("project", "env-vars", "-e", "staging", "--all", "-p", "envshop",
                          "--json").json()
    assert {"name": "STAGE", "value": "staging"}.items() <= next(
        v for v in variables if v["name"] == "STAGE").items()
    taken = tether.cli("project", "add-env", "staging", "-p", "envshop")
    assert taken.code == 2 and "staging already" in taken.err, taken.err
    invalid = tether.cli("project", "add-env", "Staging", "-p", "envshop")
    assert invalid.code == 2 and "invalid environment name" in invalid.err, invalid.err
