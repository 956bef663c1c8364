"""`tether service rotate ENV PREFIX` against a real `tether up` (issue 8): refused with exit 2
before the service is provisioned; on a deployed app (the example app, on the embedded
PostgreSQL) it makes a new login, follows the deployment that gives it to the app, and revokes
the old one, while a client polling the app sees every request log in."""

from __future__ import annotations

import sys
import threading
import time
from urllib.parse import unquote, urlsplit

import httpx
import psycopg
import pytest

from tests.e2e.conftest import ROOT, Tether

pytestmark = pytest.mark.e2e

APP = f"{sys.executable} examples/hello/app.py"


class Poller(threading.Thread):
    """Asks the app to log in to its database (`/status.json`) until stopped; every answer
    that is not a working login is kept."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.failures: list[str] = []
        self.users: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        stop_at = time.monotonic() + 300
        with httpx.Client(timeout=10) as client:
            while not self._halt.is_set() and time.monotonic() < stop_at:
                try:
                    answer = client.get(self.url + "/status.json")
                    db = answer.json()["services"]["DEFAULT_DATABASE_DSN"]
                    if answer.status_code != 200 or not db["ok"]:
                        self.failures.append(f"{answer.status_code}: {str(db)[:200]}")
                    else:
                        self.users.add(str(urlsplit(db["dsn"]).username))
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.02)

    def finish(self) -> None:
        self._halt.set()
        self.join(15)


def logs_in(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


def test_rotate_from_the_command_line(tether: Tether) -> None:
    t, name = tether, "rotcli"
    t.ok("project", "create", name, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT), "--no-database")
    t.ok("service", "add", "test", "postgres", "-p", name)
    refused = t.cli("service", "rotate", "test", "DEFAULT", "-p", name)
    assert refused.code == 2, (refused.out, refused.err)
    assert "provision it first" in refused.out + refused.err
    t.ok("deploy", "test", "-p", name)
    shown = t.ok("project", "show", "-p", name, "--json").json()
    url = next(e["url"] for e in shown["environments"] if e["name"] == "test")
    old_dsn = t.ok("project", "env-vars", "-e", "test", "--all", "--get",
                   "DEFAULT_DATABASE_DSN", "-p", name).out.strip()
    old_user = unquote(urlsplit(old_dsn).username or "")

    poller = Poller(url)
    poller.start()
    try:
        time.sleep(0.5)
        rotated = t.ok("service", "rotate", "test", "DEFAULT", "-p", name, "--json").json()
        time.sleep(0.5)
    finally:
        poller.finish()
    assert poller.failures == [], poller.failures[:5]
    assert poller.users == {old_user, f"{old_user}_1"}, poller.users
    assert rotated["operation"]["status"] == "succeeded"
    assert rotated["deployment"]["status"] == "succeeded"
    assert rotated["rotations"] == 1 and rotated["retiring_logins"] == []
    assert not logs_in(old_dsn)
    new_dsn = t.ok("project", "env-vars", "-e", "test", "--all", "--get",
                   "DEFAULT_DATABASE_DSN", "-p", name).out.strip()
    assert logs_in(new_dsn) and urlsplit(new_dsn).username == f"{old_user}_1"

    # for people: the deployment's progress, then what happened
    again = t.ok("service", "rotate", "test", "DEFAULT", "-p", name)
    assert "Deploying" in again.out
    assert f"Rotated DEFAULT in test: it logs in as {old_user}_2 now" in again.out
    assert urlsplit(new_dsn).password not in again.out + again.err
    assert not logs_in(new_dsn)
    history = t.ok("service", "show", "test", "DEFAULT", "-p", name, "--json").json()["history"]
    actions = [h["action"] for h in history]
    assert actions.count("credentials rotated") == 2
    assert actions.count("old credentials revoked") == 2
