"""The whole story through the real CLI against a real `tether up`: projects (with their DEFAULT
PostgreSQL database by default), PostgreSQL and media services under prefixes, provisioning in
advance, deploys of a real app, a failing deploy that changes nothing, detach, remove, restart —
and no failed request at the stable address."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Tether

pytestmark = pytest.mark.e2e

APP = f"{sys.executable} examples/hello/app.py"


class Poller(threading.Thread):
    """A client polling the environment's stable address; every failure is kept."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop_at = time.monotonic() + 300  # bounded even if a test forgets to stop it
        self.failures: list[str] = []
        self.count = 0
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._halt.is_set() and time.monotonic() < self.stop_at:
                try:
                    r = client.get(self.url + "/health")
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.count += 1
                time.sleep(0.01)

    def finish(self) -> None:
        self._halt.set()
        self.join(15)


def states(t: Tether, env: str) -> dict[str, str]:
    return {i["prefix"]: i["state"] for i in t.ok("service", "list", env, "--json").json()}


def app_status(url: str) -> dict[str, Any]:
    return httpx.get(url + "/status.json", timeout=10).json()


def env_url(t: Tether, project: str, env: str) -> str:
    shown = t.ok("project", "show", "-p", project, "--json").json()
    return next(e["url"] for e in shown["environments"] if e["name"] == env)


def test_requests_without_a_token_are_refused(tether: Tether) -> None:
    assert httpx.get(tether.url + "/api/v1/projects").status_code == 401
    bad = httpx.get(tether.url + "/api/v1/projects", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    good = httpx.get(tether.url + "/api/v1/projects",
                     headers={"Authorization": f"Bearer {tether.token()}"})
    assert good.status_code == 200
    assert "/api/v1/projects" in httpx.get(tether.url + "/api/v1/openapi.json").json()["paths"]


def test_the_whole_story(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "shop", "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(Path.cwd()))
    assert states(t, "test") == {"DEFAULT": "new"}  # the project's database, made by default
    catalog = {o["service"] for o in t.ok("service", "catalog", "--json").json()}
    assert {"local-media"} <= catalog and any(s.startswith("postgres-") for s in catalog)

    # bad input is refused with exit 2 and a fix
    bad = t.cli("service", "add", "test", "postgres", "--prefix", "lower")
    assert bad.code == 2 and "upper-case" in (bad.out + bad.err)
    bad = t.cli("service", "add", "test", "mysql-10")
    assert bad.code == 2 and "not offered" in (bad.out + bad.err)

    # DEFAULT provisioned in advance and filled before the app sees it
    provisioned = t.ok("service", "provision", "test", "DEFAULT", "--json").json()
    assert provisioned["state"] == "pending attachment"
    t.ok("service", "add", "test", "postgres", "--prefix", "ANALYTICS")
    t.ok("service", "add", "test", "local-media", "--prefix", "MEDIA")
    dsn = t.ok("project", "env-vars", "-e", "test", "--all", "--get",
               "DEFAULT_DATABASE_DSN").out.strip()
    assert dsn.startswith("postgres://")
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE filled_in_advance (x int)")
        conn.execute("INSERT INTO filled_in_advance VALUES (42)")

    deployed = t.cli("deploy", "test")
    assert deployed.code == 0, deployed.out + deployed.err
    assert states(t, "test") == {"DEFAULT": "attached", "ANALYTICS": "attached",
                                 "MEDIA": "attached"}
    url = env_url(t, "shop", "test")
    status = app_status(url)
    assert status["stage"] == "test"
    assert status["services"]["DEFAULT_DATABASE_DSN"]["ok"]
    assert "filled_in_advance" in status["services"]["DEFAULT_DATABASE_DSN"]["tables"]
    assert status["services"]["ANALYTICS_DATABASE_DSN"]["ok"]
    assert status["services"]["MEDIA_STORAGE_DSN"]["ok"]
    env_vars = {v["name"]: v for v in t.ok("project", "env-vars", "-e", "test", "--all",
                                            "--reveal", "--json").json()}
    assert env_vars["DEFAULT_DATABASE_DSN"]["in_running_release"]
    assert env_vars["DEFAULT_DATABASE_DSN"]["state"] == "attached"
    # without --reveal, --all shows where each service points but no secret
    masked = {v["name"]: v for v in t.ok("project", "env-vars", "-e", "test", "--all",
                                          "--json").json()}
    password = urlsplit(env_vars["DEFAULT_DATABASE_DSN"]["value"]).password
    assert password and password not in json.dumps(masked)
    assert env_vars["SECRET_KEY"]["value"] not in json.dumps(masked)
    assert masked["DEFAULT_DATABASE_DSN"]["hidden"] and masked["SECRET_KEY"]["value"] == "***"
    assert urlsplit(masked["DEFAULT_DATABASE_DSN"]["value"]).password == "***"
    assert masked["STAGE"]["value"] == "test" and not masked["STAGE"]["hidden"]
    table = t.ok("project", "env-vars", "-e", "test", "--all")
    assert password not in table.out and "--reveal" in table.err
    # local media: a directory of its own, its files served over HTTP by Tether
    media = urlsplit(env_vars["MEDIA_STORAGE_DSN"]["value"])
    assert media.scheme == "file"
    public = parse_qs(media.query)["url"][0]
    (Path(unquote(media.path)) / "hello.txt").write_text("media works")
    assert httpx.get(public + "hello.txt").text == "media works"

    # remove while attached: refused, exit 2, with the way out
    refused = t.cli("service", "remove", "test", "DEFAULT", "--confirm", "DEFAULT")
    assert refused.code == 2
    assert "detach it and deploy" in refused.out + refused.err

    # the app now crashes without DEFAULT_DATABASE_DSN: detach DEFAULT, deploy -> it fails,
    # nothing changes, the old release keeps answering (and no request fails meanwhile)
    t.ok("project", "env-vars", "-e", "test", "--set", "REQUIRED_VARIABLES",
         "DEFAULT_DATABASE_DSN")
    t.ok("service", "detach", "test", "DEFAULT")
    poller = Poller(url)
    poller.start()
    failed = t.cli("deploy", "test")
    time.sleep(0.3)
    poller.finish()
    assert failed.code == 1, failed.out + failed.err
    assert poller.count > 10 and poller.failures == []
    assert states(t, "test")["DEFAULT"] == "pending detachment"
    assert app_status(url)["services"]["DEFAULT_DATABASE_DSN"]["ok"]
    last = t.ok("deployments", "test", "--json").json()[0]
    assert last["success"] is False and "exited" in last["error"]

    # a successful deploy while a client polls: zero failed requests
    t.ok("project", "env-vars", "-e", "test", "--unset", "REQUIRED_VARIABLES")
    poller = Poller(url)
    poller.start()
    t.ok("deploy", "test")
    time.sleep(0.3)
    poller.finish()
    assert poller.count > 10 and poller.failures == []
    assert states(t, "test")["DEFAULT"] == "detached"
    assert "DEFAULT_DATABASE_DSN" not in app_status(url)["services"]

    # remove: needs the typed prefix, then the database is really gone
    assert t.cli("service", "remove", "test", "DEFAULT").code == 2
    t.ok("service", "remove", "test", "DEFAULT", "--confirm", "DEFAULT")
    assert states(t, "test").get("DEFAULT") is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()
    history = t.ok("service", "show", "test", "DEFAULT", "--json").json()["history"]
    assert [h["to"] for h in history if h["to"]][-1] == "removed"
    assert all(h["actor"] for h in history)

    # secrets are encrypted at rest and never logged: the password is nowhere in the data dir
    # (store, keys, embedded PostgreSQL data and logs) nor in tether up's own output
    password = unquote(urlsplit(dsn).password or "")
    assert len(password) >= 16
    assert password.encode() not in Path(t.data_dir.parent / "up.log").read_bytes()
    for path in t.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert password.encode() not in path.read_bytes(), path

    # the release comes back after tether up restarts
    t.stop()
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    assert app_status(url)["services"]["ANALYTICS_DATABASE_DSN"]["ok"]


def test_private_postgres_gets_its_own_server(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "private-shop")
    added = t.ok("service", "add", "test", "postgres", "--prefix", "OWN",
                 "--private", "--provision", "-p", "private-shop", "--json").json()
    assert added["state"] == "pending attachment"
    assert added["visibility"] == "private"
    dsn = t.ok("project", "env-vars", "-p", "private-shop", "-e", "test", "--all", "--get",
               "OWN_DATABASE_DSN").out.strip()
    shared = t.ok("cluster", "list", "--json").json()
    local_pg = next(c for c in shared if c["name"] == "local-postgres")
    assert f":{local_pg['location'].split(':')[1]}/" not in dsn  # its own port
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    private_dir = t.data_dir / "private" / f"tether_i{added['id']}"
    assert private_dir.exists()
    t.ok("service", "remove", "test", "OWN", "--confirm", "OWN", "-p", "private-shop")
    assert not private_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()


def test_no_wait_returns_the_operation(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "nowait", "--no-database")
    out = t.ok("service", "add", "test", "postgres", "--provision", "--no-wait", "--json",
               "-p", "nowait").json()
    assert out["operation"]["id"] > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = t.ok("service", "show", "test", "DEFAULT", "-p", "nowait", "--json").json()
        if shown["state"] == "pending attachment":
            break
        time.sleep(0.1)
    assert shown["state"] == "pending attachment"
    t.ok("service", "remove", "test", "DEFAULT", "--confirm", "DEFAULT", "-p", "nowait")


def test_service_wait_follows_an_operation_started_without_waiting(tether: Tether) -> None:
    t = tether
    t.ok("project", "create", "waiting")
    t.ok("service", "add", "test", "postgres", "--prefix", "W", "--provision", "--no-wait",
         "-p", "waiting")
    waited = t.ok("service", "wait", "test", "W", "-p", "waiting", "--json").json()
    assert waited["state"] == "pending attachment"
    again = t.ok("service", "wait", "test", "W", "-p", "waiting")  # nothing left to wait for
    assert "nothing to wait for" in again.out + again.err
    t.ok("service", "remove", "test", "W", "--confirm", "W", "-p", "waiting", "--no-wait")
    removed = t.ok("service", "wait", "test", "W", "-p", "waiting", "--json").json()
    assert removed["state"] == "removed"
    missing = t.cli("service", "wait", "test", "NOPE", "-p", "waiting")
    assert missing.code == 2


def test_the_api_docs_load_nothing_from_elsewhere(tether: Tether) -> None:
    """FastAPI's default docs page loaded Swagger UI from a public CDN into the control plane's
    origin: now every file it needs is Tether's own, and its CSP allows nothing else."""
    page = httpx.get(tether.url + "/api/v1/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    referenced = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert referenced and all(ref.startswith("/") and not ref.startswith("//")
                              for ref in referenced), referenced
    for ref in referenced:
        assert httpx.get(tether.url + ref).status_code == 200, ref
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "http" not in csp


def test_cluster_kinds_lists_what_each_kind_declares(tether: Tether) -> None:
    """`tether cluster kinds` (issue 9): every kind with the service names, settings and
    variables its provider module declares, read through the API."""
    kinds = {k["kind"]: k for k in tether.ok("cluster", "kinds", "--json").json()}
    assert set(kinds) >= {"postgres", "mysql", "rabbitmq", "s3", "azure-blob", "local-files",
                          "elasticsearch"}
    assert all(k["available"] for k in kinds.values())
    pg = kinds["postgres"]
    assert pg["service"] == "postgres" and pg["versioned"] and pg["private_servers"]
    assert pg["variables"] == ["{P}_DATABASE_DSN"]
    assert pg["default_aliases"] == {"DATABASE_URL": "{P}_DATABASE_DSN"}
    assert "connection_limit" in pg["settings"]
    assert kinds["s3"]["region_family"] == "s3" and not kinds["s3"]["versioned"]
    assert kinds["elasticsearch"]["variables"] == ["{P}_ELASTICSEARCH_DSN", "{P}_HAYSTACK_URL"]
    shown = tether.ok("cluster", "kinds").out
    assert "local-media" in shown and "PREFIX_AMQP_BROKER_URL" in shown


def _instances(t: Tether, project: str, env: str) -> dict[str, dict[str, Any]]:
    return {i["prefix"]: i for i in t.ok("service", "list", env, "-p", project, "--json").json()}


def test_a_new_project_has_a_default_database_that_its_first_deploy_attaches(
        tether: Tether) -> None:
    """`tether project create` adds DEFAULT (the region's newest PostgreSQL, state new) to test
    and live, like `tether service add ENV postgres`; the first deploy provisions and attaches
    it, and the app logs in with DEFAULT_DATABASE_DSN. `--json` says what was added."""
    t = tether
    made = t.ok("project", "create", "dbfirst", "--app-command", APP, "--health-path",
                "/health", "--app-dir", str(Path.cwd()), "--json").json()
    database = made["database"]
    assert database["service"].startswith("postgres-"), made
    assert database == {"service": database["service"], "prefix": "DEFAULT",
                        "environments": ["test", "live"], "reason": None}
    for env in ("test", "live"):
        [default] = _instances(t, "dbfirst", env).values()
        assert (default["prefix"], default["state"], default["service"], default["visibility"]) \
            == ("DEFAULT", "new", database["service"], "shared")
        history = t.ok("service", "show", env, "DEFAULT", "-p", "dbfirst", "--json").json()[
            "history"]
        assert [(h["action"], h["to"]) for h in history] == [("add", "new")]
        assert history[0]["actor"]

    deployed = t.cli("deploy", "test", "-p", "dbfirst")
    assert deployed.code == 0, deployed.out + deployed.err
    assert _instances(t, "dbfirst", "test")["DEFAULT"]["state"] == "attached"
    assert _instances(t, "dbfirst", "live")["DEFAULT"]["state"] == "new"  # its own first deploy
    status = app_status(env_url(t, "dbfirst", "test"))
    assert status["services"]["DEFAULT_DATABASE_DSN"]["ok"] is True, status
    assert status["services"]["DATABASE_URL"]["ok"] is True, status


def test_project_create_says_what_it_added_and_no_database_opts_out(tether: Tether) -> None:
    t = tether
    said = t.ok("project", "create", "dbsaid")
    assert re.search(r"DEFAULT: postgres-\d+ in test and live, provisioned and attached by the "
                     r"first deploy; --no-database to create a project without", " ".join(
                         (said.out + said.err).split())), said
    assert set(_instances(t, "dbsaid", "live")) == {"DEFAULT"}

    without = t.ok("project", "create", "dbnone", "--no-database", "--json").json()
    assert without["database"] is None
    assert _instances(t, "dbnone", "test") == {} and _instances(t, "dbnone", "live") == {}
    said = t.ok("project", "create", "dbnone2", "--no-database")
    assert "DEFAULT" not in said.out + said.err
    assert "tether service add test postgres" in " ".join((said.out + said.err).split())
    assert "--no-database" in t.ok("project", "create", "--help").out


def test_the_api_adds_the_database_unless_told_not_to(tether: Tether) -> None:
    """`POST /api/v1/projects`: `database` defaults to true; false makes none; it is a strict
    boolean (no 0, no "false")."""
    auth = {"Authorization": f"Bearer {tether.token()}"}
    with httpx.Client(base_url=tether.url + "/api/v1", headers=auth, timeout=30) as http:
        made = http.post("/projects", json={"name": "apidb"})
        assert made.status_code == 201, made.text
        assert made.json()["database"]["environments"] == ["test", "live"]
        listed = http.get("/projects/apidb/environments/live/services").json()
        assert [(i["prefix"], i["state"]) for i in listed] == [("DEFAULT", "new")]

        made = http.post("/projects", json={"name": "apinodb", "database": False})
        assert made.status_code == 201, made.text
        assert made.json()["database"] is None
        for env in ("test", "live"):
            assert http.get(f"/projects/apinodb/environments/{env}/services").json() == []

        for loose in (0, "false"):
            refused = http.post("/projects", json={"name": "apiloose", "database": loose})
            assert refused.status_code == 422, refused.text
        assert "apiloose" not in [p["name"] for p in http.get("/projects").json()]


def test_a_region_without_postgres_makes_the_project_without(tether: Tether,
                                                            tmp_path: Path) -> None:
    """A region whose clusters offer no PostgreSQL (here only local files): the project is
    created all the same, without a database, and the answer says why and what to do."""
    t = tether
    t.ok("cluster", "add", "local-files", "--region", "files-only", "--region-family", "local",
         "--url", f"file://{tmp_path}", "--name", "files-only-media",
         "--setting", f"base_dir={tmp_path / 'media'}",
         "--setting", "public_url=http://127.0.0.1:1/media/")
    made = t.ok("project", "create", "filesonly", "--region", "files-only", "--json").json()
    assert made["region"] == "files-only"
    assert made["database"]["service"] is None and made["database"]["environments"] == []
    assert "region files-only offers no shared PostgreSQL" in made["database"]["reason"]
    assert _instances(t, "filesonly", "test") == {} and _instances(t, "filesonly", "live") == {}
    said = t.ok("project", "create", "filesonly2", "--region", "files-only")
    text = " ".join((said.out + said.err).split())
    assert "No database added: region files-only offers no shared PostgreSQL" in text, text
    assert "tether cluster add postgres --region files-only" in text, text
