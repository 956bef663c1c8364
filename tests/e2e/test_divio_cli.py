"""The official Divio CLI (`divio-cli` 4.0.5 from PyPI, unmodified) against a real `tether up`:
`DIVIO_ZONE=http://HOST:PORT` and a Tether token in ~/.netrc, as docs/divio-api.md says.

The CLI is installed once into a venv of its own, cached under /var/cache/tether (or build/ when
that is not writable), so a second run reuses it; nothing here depends on a pre-installed one."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import clean_env
from tests.e2e.conftest import ROOT, Result, Tether
from tether.crypto import SecretBox
from tether.publicids import Kind, find, public_id

DIVIO_CLI = "divio-cli==4.0.5"


def _cache_dir() -> Path:
    shared = Path("/var/cache/tether")
    with_write = shared.is_dir() and os.access(shared, os.W_OK)
    return (shared if with_write else ROOT / "build") / "divio-cli-4.0.5"


@pytest.fixture(scope="session")
def divio_bin() -> Path:
    """The `divio` command of a venv holding divio-cli 4.0.5, made on first use. A venv's scripts
    name their interpreter by its path, so it is built in its final place, under a lock (another
    test run may be building it too), and marked whole only once pip has finished: a venv left
    half-made by a run that was cut short is removed and built again."""
    venv = _cache_dir()
    divio, whole = venv / "bin" / "divio", venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not whole.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                            "--disable-pip-version-check", DIVIO_CLI], check=True, timeout=600)
            whole.write_text(DIVIO_CLI + "\n")
    assert divio.exists()
    return divio


@dataclass
class Divio:
    """Runs the real `divio` against one `tether up`, as a user whose ~/.netrc holds `token`."""

    bin: Path
    tether: Tether
    home: Path

    def as_user(self, token: str) -> Divio:
        home = self.home.parent / f"home-{secrets.token_hex(4)}"
        (home / ".config" / "divio").mkdir(parents=True)
        host = httpx.URL(self.tether.url).host
        netrc = home / ".netrc"
        netrc.write_text(f"machine {host}\n\tlogin tester\n\tpassword {token}\n")
        netrc.chmod(0o600)
        # no PyPI look-up for a newer divio-cli (it checks daily: "checked just now") and no
        # error reports to Sentry (an empty DSN turns it off). `disable_update_check` is not
        # used: divio-cli 4.0.5 then fails on its own None.
        (home / ".config" / "divio" / "config.json").write_text(json.dumps(
            {"update_check_timestamp": int(time.time()) + 86400 * 365, "sentry-dsn": ""}))
        return Divio(self.bin, self.tether, home)

    def run(self, *args: str, cwd: Path | None = None) -> Result:
        env = clean_env()
        for key in ("NETRC_PATH", "DIVIO_ZONE", "XDG_CONFIG_HOME"):
            env.pop(key, None)
        env.update({"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                    "DIVIO_ZONE": self.tether.url, "NO_COLOR": "1", "PAGER": "cat"})
        proc = subprocess.run([str(self.bin), *args], env=env, cwd=cwd or self.home,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, cwd: Path | None = None) -> Result:
        result = self.run(*args, cwd=cwd)
        assert result.code == 0, (args, result.out, result.err)
        return result


ZERO_UUID = "00000000-0000-0000-0000-000000000000"
#: custom variables put in `live`, so that its variables fill more than one page
PAGED = 101


@dataclass
class App:
    """A project with a custom variable in each environment and a provisioned local media
    storage (MEDIA) in `test`, and what every `divio` command of these tests answered."""

    name: str
    uuid: str
    number: int
    region: str
    ran: dict[str, Result]

    def result(self, label: str) -> Result:
        result = self.ran[label]
        assert result.code == 0, (label, result.out, result.err)
        return result


def _api(t: Tether, path: str, **params: str) -> Any:
    response = httpx.get(t.url + path, params=params,
                         headers={"Authorization": f"Token {t.token()}"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def app(tether: Tether, divio_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> App:
    """Every `divio` command of this module, run at once (each starts a Python that imports a
    lot: seconds apiece on a busy machine), against one project; the tests read the answers."""
    t = tether
    name = f"dv{secrets.token_hex(3)}"
    made = t.ok("project", "create", name, "--json").json()
    t.ok("project", "env-vars", "-p", name, "-e", "test", "--set", "FOO", "bar")
    t.ok("project", "env-vars", "-p", name, "-e", "live", "--set", "LIVEONLY", "1")
    # more variables than one page holds (100 when the client names no page_size): the CLI
    # must follow `next` to see them all
    with httpx.Client(base_url=f"{t.url}/api/v1/projects/{name}/environments/live",
                      headers={"Authorization": f"Bearer {t.token()}"}) as api:
        for n in range(PAGED):
            api.put(f"/variables/PAGED_{n:03d}", json={"value": str(n)}).raise_for_status()
    t.ok("service", "add", "test", "local-media", "--prefix", "MEDIA", "--provision", "-p", name)
    other = f"dv{secrets.token_hex(3)}"
    t.ok("project", "create", other)
    viewer_token = t.ok("token", "create", f"view-{name}", "--role", "viewer", "--project", name,
                        "--json").json()["token"]
    stranger_token = t.ok("token", "create", f"dev-{other}", "--role", "developer", "--project",
                          other, "--json").json()["token"]
    found = _api(t, "/apps/v3/applications/", slug=name)
    assert found["count"] == 1, found
    uuid = found["results"][0]["uuid"]
    region = next(r["uuid"] for r in _api(t, "/apps/v3/regions/")["results"]
                  if r["name"] == "local")

    base = tmp_path_factory.mktemp("divio")
    admin = Divio(divio_bin, t, base / "unused").as_user(t.token())
    wrong = admin.as_user("tth_" + secrets.token_urlsafe(32))
    viewer, stranger = admin.as_user(viewer_token), admin.as_user(stranger_token)
    workdir = base / "checkout"
    (workdir / ".divio").mkdir(parents=True)
    (workdir / ".divio" / "config.json").write_text(json.dumps(
        {"application_uuid": uuid, "zone": t.url}))
    (workdir / "sub").mkdir()
    by_uuid = ("--remote-id", uuid)
    calls: dict[str, tuple[Divio, tuple[str, ...], Path | None]] = {
        "doctor": (admin, ("doctor", "-c", "login"), None),
        "doctor wrong": (wrong, ("doctor", "-c", "login"), None),
        "regions": (admin, ("regions", "list", "--json"), None),
        "services": (admin, ("services", "list", "--region", region, "--json"), None),
        "services table": (admin, ("services", "list", "--region", region), None),
        "services unknown": (admin, ("services", "list", "--region", ZERO_UUID), None),
        "json": (admin, ("app", "env-vars", "--json", "list", *by_uuid), None),
        "txt all": (admin, ("app", "env-vars", "--txt", "list", "--all-envs", "--remote-id",
                            str(made["id"])), None),
        "limit": (admin, ("app", "env-vars", "list", "--limit", "2", *by_uuid), None),
        # no --remote-id: the application of .divio/config.json (in a directory above)
        "get": (admin, ("app", "env-vars", "--json", "get", "LIVEONLY", "-e", "live"),
                workdir / "sub"),
        "instances": (admin, ("app", "service-instances", "list", "test", "--json", *by_uuid),
                      None),
        "instances live": (admin, ("app", "service-instances", "list", "live", *by_uuid), None),
        "viewer": (viewer, ("app", "env-vars", "--json", "list", *by_uuid), None),
        "stranger": (stranger, ("app", "env-vars", "--json", "list", *by_uuid), None),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {label: pool.submit(who.run, *args, cwd=cwd)
                   for label, (who, args, cwd) in calls.items()}
        ran = {label: future.result() for label, future in futures.items()}
    return App(name, uuid, int(made["id"]), region, ran)


def _by_name(variables: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in variables}


def test_doctor_checks_the_login_with_a_good_and_a_wrong_token(app: App) -> None:
    assert "Login" in app.result("doctor").out
    bad = app.ran["doctor wrong"]
    assert bad.code != 0
    assert "Login failed. Invalid token specified" in bad.out + bad.err
    assert "invalid token" in bad.out + bad.err  # Tether's own reason, under the CLI's


def test_regions_and_the_services_of_a_region(app: App, tether: Tether) -> None:
    regions = app.result("regions").json()
    assert {r["uuid"]: r["name"] for r in regions}[app.region] == "local"
    offered = {s["name"]: s for s in app.result("services").json()}
    catalog = tether.ok("service", "catalog", "--region", "local", "--json").json()
    assert set(offered) == {c["service"] for c in catalog}
    assert offered["local-media"]["type"] == "STORAGE"
    assert app.region in offered["local-media"]["regions"]
    assert "local-media" in app.result("services table").out
    unknown = app.ran["services unknown"]
    assert unknown.code != 0
    assert "Resource not found" in unknown.out + unknown.err
    assert "no region with the id" in unknown.out + unknown.err


def test_env_vars_list_and_get(app: App, tether: Tether) -> None:
    # --json: the test environment's variables, values as Tether's own API reveals them
    [group] = app.result("json").json()
    assert group["environment"] == "test"
    mine = _by_name(group["environment_variables"])
    theirs = httpx.get(f"{tether.url}/api/v1/projects/{app.name}/environments/test/variables",
                       params={"all": "true", "reveal": "true"},
                       headers={"Authorization": f"Bearer {tether.token()}"}).json()
    assert {n: v["value"] for n, v in mine.items()} == \
        {v["name"]: v["value"] for v in theirs if v["next_release"]}
    assert mine["FOO"]["value"] == "bar" and mine["FOO"]["is_sensitive"] is False
    assert mine["STAGE"]["value"] == "test"
    assert mine["MEDIA_STORAGE_DSN"]["is_sensitive"] is True
    assert mine["MEDIA_STORAGE_DSN"]["value"].startswith("file://")
    assert mine["SECRET_KEY"]["is_sensitive"] is True

    # --txt --all-envs by the numeric id: both environments, without the sensitive ones
    txt = app.result("txt all").out
    assert "Environment: test" in txt and "Environment: live" in txt
    assert "FOO=bar" in txt and "LIVEONLY=1" in txt and "STAGE=live" in txt
    assert "SECRET_KEY" not in txt and "MEDIA_STORAGE_DSN" not in txt
    assert all(f"PAGED_{n:03d}={n}\n" in txt for n in range(PAGED))  # every page was read

    # --limit: the first page only (a table), and the CLI's note that there were more
    limited = app.result("limit").out
    assert "STAGE" in limited and "SECRET_KEY" in limited and "FOO" not in limited
    assert f"There were {len(mine)} results available, but the limit is currently set at 2" \
        in limited

    # get NAME in another environment, the application read from .divio/config.json
    [found] = app.result("get").json()
    assert found["environment"] == "live"
    assert [(v["name"], v["value"]) for v in found["environment_variables"]] == [("LIVEONLY", "1")]


def test_service_instances_list(app: App) -> None:
    media = next(i for i in app.result("instances").json() if i["prefix"] == "MEDIA")
    assert media["type"] == "STORAGE"
    assert media["service_status"] == "PENDING_ATTACHMENT"
    assert media["region"] == app.region
    local_media = next(s for s in app.result("services").json() if s["name"] == "local-media")
    assert media["service"] == local_media["uuid"]
    assert "MEDIA" not in app.result("instances live").out


def test_a_new_project_has_its_default_database(app: App) -> None:
    """The project was made by `tether project create` without --no-database: each
    environment lists its DEFAULT PostgreSQL, a DATABASE, NEW until the first deploy."""
    default = next(i for i in app.result("instances").json() if i["prefix"] == "DEFAULT")
    assert (default["type"], default["service_status"]) == ("DATABASE", "NEW")
    assert default["service_name"].startswith("postgres-")
    assert "DEFAULT" in app.result("instances live").out


def test_token_scope_and_role_decide_as_in_tethers_own_api(app: App) -> None:
    """A viewer of the project reads its variables with every value masked (as /api/v1 shows
    them to it); a token of another project does not find the application at all."""
    values = _by_name(app.result("viewer").json()[0]["environment_variables"])
    assert values["FOO"]["value"] != "bar" and values["FOO"]["is_sensitive"] is True
    assert values["SECRET_KEY"]["value"] != _by_name(
        app.result("json").json()[0]["environment_variables"])["SECRET_KEY"]["value"]
    refused = app.ran["stranger"]
    assert refused.code != 0
    assert "Resource not found" in refused.out + refused.err
    assert "no application with the id" in refused.out + refused.err


def test_public_ids_are_derived_from_the_installation_key(app: App, tether: Tether) -> None:
    """The UUIDs the CLI was given are uuid5("<kind>:<key>") in the namespace derived from the
    data dir's secret key (docs/divio-api.md): a pure function of what never changes."""
    box = SecretBox.from_data_dir(tether.data_dir)
    assert app.uuid == public_id(box, Kind.PROJECT, app.number)
    assert app.region == public_id(box, Kind.REGION, "local")
    assert find(box, Kind.PROJECT, app.uuid, [app.number + 1, app.number]) == app.number
    [group] = app.result("json").json()
    environments = next(p for p in tether.ok("project", "list", "--json").json()
                        if p["name"] == app.name)["environments"]
    test_env = next(e for e in environments if e["name"] == "test")
    assert group["environment_uuid"] == public_id(box, Kind.ENVIRONMENT, test_env["id"])


def test_tethers_own_json_shows_the_same_public_ids(app: App, tether: Tether) -> None:
    """`tether … --json` (and so /api/v1 and the Services view) shows the ids the Divio API
    uses, so a script can go from one to the other (`--remote-id`)."""
    t = tether
    shown = next(p for p in t.ok("project", "list", "--json").json() if p["name"] == app.name)
    assert shown["uuid"] == app.uuid
    [group] = app.result("json").json()
    assert next(e for e in shown["environments"] if e["name"] == "test")["uuid"] == \
        group["environment_uuid"]
    media = next(i for i in app.result("instances").json() if i["prefix"] == "MEDIA")
    mine = next(i for i in t.ok("service", "list", "test", "-p", app.name, "--json").json()
                if i["prefix"] == "MEDIA")
    assert mine["uuid"] == media["uuid"]
    catalog = {c["service"]: c["uuid"]
               for c in t.ok("service", "catalog", "--region", "local", "--json").json()}
    assert catalog == {s["name"]: s["uuid"] for s in app.result("services").json()}
    regions = httpx.get(f"{t.url}/api/v1/regions",
                        headers={"Authorization": f"Bearer {t.token()}"}).json()
    assert {r["name"]: r["uuid"] for r in regions}["local"] == app.region


APP = f"{sys.executable} examples/hello/app.py"


def _instances(t: Tether, name: str, env: str = "test") -> dict[str, str]:
    return {i["prefix"]: i["state"]
            for i in t.ok("service", "list", env, "-p", name, "--json").json()}


def test_add_a_service_and_deploy_with_the_divio_cli(tether: Tether, divio_bin: Path,
                                                   tmp_path: Path) -> None:
    """`divio app service-instances add` adds an instance Tether lists as `new`; `divio app
    deploy` provisions and attaches it and exits 0 once the app serves with its variables; a
    failed deploy exits non-zero and changes nothing (rule 4); `deploy-log`, `deployments
    list|get|get-var` show what happened."""
    t = tether
    name = f"dd{secrets.token_hex(3)}"
    t.ok("project", "create", name, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT), "--no-database")
    uuid = _api(t, "/apps/v3/applications/", slug=name)["results"][0]["uuid"]
    region = next(r["uuid"] for r in _api(t, "/apps/v3/regions/")["results"]
                  if r["name"] == "local")
    postgres = next(s["uuid"] for s in _api(t, "/apps/v3/services/", region=region)["results"]
                    if s["kind"] == "postgres")
    divio = Divio(divio_bin, t, tmp_path / "unused").as_user(t.token())
    by_uuid = ("--remote-id", uuid)

    add = ("app", "service-instances", "add", "test", "--region", region, *by_uuid)
    divio.ok(*add, "--prefix", "SHOP", "--service", postgres)
    assert _instances(t, name) == {"SHOP": "new"}
    taken = divio.run(*add, "--prefix", "SHOP", "--service", postgres)
    assert taken.code != 0
    assert "Request could not be processed" in taken.out + taken.err
    assert "SHOP already exists in test" in taken.out + taken.err
    unknown = divio.run(*add, "--prefix", "OTHER", "--service", ZERO_UUID)
    assert unknown.code != 0 and "no service with the id" in unknown.out + unknown.err
    viewer = divio.as_user(t.ok("token", "create", f"view-{name}", "--role", "viewer",
                                "--project", name, "--json").json()["token"])
    refused = viewer.run(*add, "--prefix", "OTHER", "--service", postgres)
    assert refused.code != 0 and "viewer" in refused.out + refused.err
    assert _instances(t, name) == {"SHOP": "new"}

    deployed = divio.ok("app", "deploy", "test", *by_uuid)
    assert "Deploying test environment" in deployed.out
    assert _instances(t, name) == {"SHOP": "attached"}
    url = t.ok("project", "show", "-p", name, "--json").json()["environments"][0]["url"]
    status = httpx.get(url + "/status.json", timeout=10).json()
    assert status["services"]["SHOP_DATABASE_DSN"]["ok"] is True, status

    # a deploy that fails: the app's command exits at once. The new instance is provisioned
    # but stays pending attachment, SHOP stays attached, the previous release keeps serving
    t.ok("project", "update", "--app-command", f"{sys.executable} -c 'raise SystemExit(3)'",
         "-p", name)
    divio.ok(*add, "--prefix", "MORE", "--service", postgres)
    failed = divio.run("app", "deploy", "test", *by_uuid)
    assert failed.code != 0, (failed.out, failed.err)
    assert "Deployment failed" in failed.out + failed.err
    assert _instances(t, name) == {"SHOP": "attached", "MORE": "pending attachment"}
    assert httpx.get(url + "/status.json", timeout=10).json()["services"][
        "SHOP_DATABASE_DSN"]["ok"] is True

    log = divio.ok("app", "deploy-log", "test", *by_uuid).out
    [last] = [d for d in t.ok("deployments", "test", "-p", name, "--json").json()
              if d["status"] == "failed"]
    assert last["error"] and last["error"][:40] in log

    [group] = divio.ok("app", "deployments", "--json", "list", *by_uuid).json()
    assert group["environment"] == "test"
    runs = group["deployments"]
    assert [(d["status"], d["success"]) for d in runs] == [("failed", False),
                                                          ("succeeded", True)]
    good = runs[1]["uuid"]
    [shown] = divio.ok("app", "deployments", "--json", "get", good, *by_uuid).json()
    assert "SHOP_DATABASE_DSN" in shown["deployment"]["environment_variables"]
    assert "MORE_DATABASE_DSN" not in shown["deployment"]["environment_variables"]
    [var] = divio.ok("app", "deployments", "--json", "get-var", good, "SHOP_DATABASE_DSN",
                     *by_uuid).json()
    running = t.ok("project", "env-vars", "-e", "test", "--all", "--get", "SHOP_DATABASE_DSN",
                   "-p", name).out.strip()
    assert var["value"] == running
    missing = divio.run("app", "deployments", "get", ZERO_UUID, *by_uuid)
    assert missing.code != 0 and "Resource not found" in missing.out + missing.err
