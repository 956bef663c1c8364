"""The Services view in a real browser against a real `tether up`: the whole story of the
PostgreSQL database a new project has by default (provision, deploy, detach, a failing deploy,
deploy, remove with the typed confirmation — and the database really gone), a project created in
the browser with or without it (and a service added with provision), what a signed-out browser
sees, forged requests refused, and user-supplied markup shown as text."""

from __future__ import annotations

import http.server
import re
import sys
import threading
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.e2e.conftest import ROOT, Tether
from tests.web.conftest import LAPTOP, PHONE, SIGN_IN_URL, sign_in

pytestmark = pytest.mark.web

APP = f"{sys.executable} examples/hello/app.py"
PROJECT = "webshop"
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def project(tether: Tether) -> str:
    """The only thing made outside the browser: a project with the example app (via the CLI),
    with its DEFAULT database in test and live (the default)."""
    tether.ok("project", "create", PROJECT, "--app-command", APP, "--health-path", "/health",
              "--app-dir", str(ROOT))
    return PROJECT


def api(t: Tether, method: str, path: str, **kwargs: object) -> httpx.Response:
    """The REST API as the CLI calls it (bearer token), to check what the browser did."""
    return httpx.request(method, t.url + "/api/v1" + path, timeout=30,
                         headers={"Authorization": f"Bearer {t.token()}"}, **kwargs)  # type: ignore[arg-type]


def service_row(page: Page, prefix: str) -> Locator:
    return page.locator(f"#panel-test tr[data-prefix='{prefix}']")


def action(row: Locator, name: str) -> Locator:
    return row.locator(f"button[data-action='{name}']")


def deploy_and_wait(page: Page, outcome: str) -> Locator:
    """Press Deploy, watch the live progress, and wait for the deployment's result."""
    page.locator("#deploy-test").click()
    live = page.locator("#panel-test .deploy-live")
    expect(live).to_be_visible()
    expect(live).to_have_attribute("data-status", outcome, timeout=90_000)
    expect(page.locator("#deploy-test")).to_be_enabled()
    return live


def test_the_whole_story_in_the_browser(tether: Tether, project: str, page: Page,
                                        screenshots: Path) -> None:
    seen_urls: list[str] = []
    page.on("request", lambda request: seen_urls.append(request.url))
    sign_in(page, tether, screenshots / "01-sign-in.png")

    # projects list -> the project, its test environment
    expect(page.get_by_role("link", name=project)).to_be_visible()
    page.screenshot(path=str(screenshots / "02-projects.png"))
    page.get_by_role("link", name=project).click()
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="live")).to_be_visible()
    # the project came with its DEFAULT database, new: nothing made yet
    row = service_row(page, "DEFAULT")
    badge = row.locator(".badge")
    expect(badge).to_have_text("new")
    expect(row).to_contain_text("postgres-")

    # Add service: the region's catalog, the prefix checked as typed (DEFAULT is taken)
    page.locator("#add-test summary").click()
    select = page.locator("#add-service-test")
    options = select.locator("option").all_inner_texts()
    assert any(o.startswith("postgres-") for o in options), options
    assert any(o.startswith("local-media") for o in options), options
    postgres = next(o for o in options if o.startswith("postgres-")).split(" ")[0]
    select.select_option(postgres)
    prefix = page.locator("#add-prefix-test")
    submit = page.locator("#add-test button[type=submit]")
    prefix.fill("9lives")  # upper-cased as typed, still not a prefix
    expect(page.locator("#add-prefix-help-test")).to_contain_text("upper-case")
    expect(prefix).to_have_attribute("aria-invalid", "true")
    expect(submit).to_be_disabled()
    prefix.fill("DEFAULT")
    expect(page.locator("#add-prefix-help-test")).to_contain_text("DEFAULT already exists")
    expect(submit).to_be_disabled()
    page.screenshot(path=str(screenshots / "03-add-service.png"))
    page.locator("#add-test summary").click()

    # provisioned in advance (its row's Provision): pending attachment, live (no reload), its
    # meaning in the badge
    action(row, "provision").click()
    expect(badge).to_have_text("pending attachment", timeout=60_000)
    expect(row.get_by_role("tooltip", include_hidden=True)).to_have_text(
        re.compile(r"Functional: yes.*Usable by the application: no"))
    expect(action(row, "attach")).to_be_disabled()
    expect(action(row, "attach")).to_have_attribute("title", re.compile("pending attachment"))
    expect(action(row, "detach")).to_be_enabled()
    expect(action(row, "remove")).to_be_enabled()
    page.screenshot(path=str(screenshots / "04-pending-attachment.png"), full_page=True)

    # the database works already (filled before the app sees it)
    shown = api(tether, "GET", f"/projects/{project}/environments/test/services/DEFAULT",
                params={"reveal": "true"}).json()
    dsn = shown["variables"]["DEFAULT_DATABASE_DSN"]
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE filled_in_advance (x int)")

    # details of the instance: variables hidden until revealed, the cluster, the history
    row.get_by_role("link").click()
    page.wait_for_url("**/projects/webshop/test/services/DEFAULT")
    expect(page.locator("#instance-title")).to_contain_text("DEFAULT")
    values = page.locator("table.variables .value")
    expect(values.first).to_have_text("••••••••")
    expect(page.locator(".facts")).to_contain_text("local-postgres")
    expect(page.locator("#instance-uuid")).to_have_text(shown["uuid"])  # the public id
    expect(page.locator("table.history")).to_contain_text("provisioned")
    expect(page.locator(".action-list")).to_contain_text("DEFAULT is pending attachment")
    page.screenshot(path=str(screenshots / "05-instance-details.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(screenshots / "05-instance-details-phone.png"), full_page=True)
    page.set_viewport_size(LAPTOP)
    page.get_by_role("button", name="Reveal values").click()
    expect(values.first).to_have_text(re.compile(r"^postgres://"))
    assert dsn in values.all_inner_texts()
    page.go_back()

    # deploy: live progress and log, the result, and the state attached
    live = deploy_and_wait(page, "succeeded")
    expect(live.locator(".result")).to_contain_text("succeeded")
    expect(live.locator(".log li").first).to_be_visible()
    expect(live.locator("progress")).to_have_js_property("value", 100)
    expect(badge).to_have_text("attached")
    expect(row.get_by_role("tooltip", include_hidden=True)).to_have_text(
        re.compile("Usable by the application: yes"))
    expect(action(row, "remove")).to_be_disabled()
    expect(action(row, "remove")).to_have_attribute("title", re.compile("detach it and deploy"))
    page.screenshot(path=str(screenshots / "06-deployed-attached.png"), full_page=True)
    # phone width: the tables become stacked rows
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(screenshots / "06-deployed-attached-phone.png"), full_page=True)
    page.set_viewport_size(LAPTOP)

    # detach: pending detachment; a deploy that fails (the app requires the DSN) changes nothing
    action(row, "detach").click()
    expect(badge).to_have_text("pending detachment")
    page.locator("#var-name-test").fill("REQUIRED_VARIABLES")
    page.locator("#var-value-test").fill("DEFAULT_DATABASE_DSN")
    page.get_by_role("button", name="Save variable").first.click()
    expect(page.locator("#panel-test table.custom")).to_contain_text("REQUIRED_VARIABLES")
    live = deploy_and_wait(page, "failed")
    expect(live.locator(".result")).to_contain_text("failed: ")
    expect(badge).to_have_text("pending detachment")
    expect(page.locator("#panel-test table.deployments tbody tr").first).to_contain_text("failed")
    page.screenshot(path=str(screenshots / "07-deploy-failed.png"), full_page=True)

    # the variable unset, deploy again: detached
    page.get_by_role("button", name="Unset REQUIRED_VARIABLES").click()
    expect(page.locator("#panel-test table.custom")).to_be_hidden()
    deploy_and_wait(page, "succeeded")
    expect(badge).to_have_text("detached")
    expect(page.locator("#panel-test table.deployments tbody tr")).to_have_count(3)

    # remove: the dialog says the data goes for good and wants the prefix typed
    action(row, "remove").click()
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("for good")
    confirm = dialog.get_by_role("button", name="Remove for good")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type DEFAULT to confirm").fill("DEFAUL")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type DEFAULT to confirm").fill("DEFAULT")
    expect(confirm).to_be_enabled()
    page.screenshot(path=str(screenshots / "08-remove-dialog.png"))
    confirm.click()
    expect(row).to_have_count(0, timeout=60_000)
    expect(page.locator("#panel-test .empty").first).to_be_visible()

    # ... and the database is really gone on the server
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()
    history = api(tether, "GET", f"/projects/{project}/environments/test/services/DEFAULT"
                  ).json()["history"]
    assert [h["to"] for h in history if h["to"]][-1] == "removed"
    assert all(h["actor"] for h in history)

    # the token never travelled in a URL, and is kept nowhere in the browser: it holds only its
    # session (in localStorage, no cookie)
    token = tether.token()
    assert not [u for u in seen_urls if token in u]
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("Object.keys(localStorage)") == ["tether.session"]
    assert token not in page.evaluate("localStorage.getItem('tether.session')")
    assert page.evaluate("sessionStorage.length") == 0


def test_signed_out_sees_no_project_data(tether: Tether, project: str, page: Page) -> None:
    api(tether, "POST", f"/projects/{project}/environments/live/services",
        json={"service": "local-media", "prefix": "SECRET_MEDIA"}).raise_for_status()
    for path in ("/", f"/projects/{project}", f"/projects/{project}/live/services/SECRET_MEDIA"):
        page.goto(path)
        page.wait_for_url(SIGN_IN_URL)
        expect(page.get_by_label("Access token")).to_be_visible()
        assert "SECRET_MEDIA" not in page.locator("body").inner_text()
        assert "local-media" not in page.content()
    # the API refuses the browser without a session, and with a made-up one
    assert page.request.get("/api/v1/projects").status == 401
    page.context.add_cookies([{"name": "tether_session", "value": "tth_forged",
                               "url": tether.url}])
    assert page.request.get("/api/v1/projects").status == 401
    page.goto(f"/projects/{project}")
    page.wait_for_url(SIGN_IN_URL)
    # a wrong token typed into the form is refused, and nothing is shown
    page.get_by_label("Access token").fill("tth_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid token")
    assert "SECRET_MEDIA" not in page.content()


def test_the_browser_holds_a_session_and_no_cookie(tether: Tether, project: str, page: Page,
                                                   context: BrowserContext) -> None:
    """The browser's credential is a session (not the token) in this origin's localStorage,
    sent as a header by the pages' scripts; no cookie is ever set, so nothing the browser sends
    by itself (to an app on another port of this host, or with a forged request) opens
    anything."""
    # what a cross-site form could send to sign in (no JSON): refused, no session made
    forged = page.request.post(tether.url + "/api/v1/sessions", form={"token": tether.token()})
    assert forged.status == 422

    sign_in(page, tether)
    assert context.cookies() == []
    saved = page.evaluate("JSON.parse(localStorage.getItem('tether.session'))")
    secret = saved["secret"]
    assert secret.startswith("tts_") and secret != tether.token()

    # requests the browser makes on its own carry no credential: refused, nothing changed
    path = f"/api/v1/projects/{project}/environments/test/variables/FORGED"
    assert page.request.put(path, data={"value": "x"}).status == 401
    assert page.request.post(f"/api/v1/projects/{project}/environments/test/deployments"
                             ).status == 401
    names = [v["name"] for v in api(tether, "GET",
                                    f"/projects/{project}/environments/test/variables").json()]
    assert "FORGED" not in names
    # the session as a bearer token works (what the pages' scripts send)
    ok = page.request.put(path, data={"value": "x"}, headers={"Authorization": f"Bearer {secret}"})
    assert ok.status == 200, ok.text()
    assert api(tether, "DELETE", path.removeprefix("/api/v1")).status_code == 200

    # signing out ends the session in Tether: the secret, replayed, is worthless
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in")
    assert page.evaluate("localStorage.getItem('tether.session')") is None
    replay = page.request.get(tether.url + "/api/v1/projects",
                              headers={"Authorization": f"Bearer {secret}"})
    assert replay.status == 401
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)


def test_an_app_on_another_port_gets_no_credential(tether: Tether, project: str,
                                                   page: Page) -> None:
    """Cookies ignore ports: with a session cookie, every application on this host (and its
    server, through the stable address) would have received the admin's session. Now a page
    of another origin on this host, opened by the signed-in admin, receives no credential and
    can read none."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = (b"<!doctype html><script>document.title = 'storage:' + "
                    b"localStorage.length + ' cookies:' + document.cookie.length;</script>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sign_in(page, tether)
        page.goto(f"/projects/{project}")
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/app")
        expect(page).to_have_title("storage:0 cookies:0")
        assert seen, "the app was asked"
        for headers in seen:
            assert not {k.lower() for k in headers} & {"cookie", "authorization"}, headers
            assert "tts_" not in str(headers) and tether.token() not in str(headers)
    finally:
        server.shutdown()
        server.server_close()


def test_user_markup_is_shown_as_text(tether: Tether, project: str, page: Page,
                                      screenshots: Path) -> None:
    sign_in(page, tether)
    page.goto(f"/projects/{project}?env=live")
    expect(page.get_by_role("tab", name="live")).to_have_attribute("aria-selected", "true")
    page.locator("#var-name-live").fill("GREETING")
    page.locator("#var-value-live").fill(HOSTILE)
    page.locator("#panel-live").get_by_role("button", name="Save variable").click()
    cell = page.locator("#panel-live table.custom tr[data-name='GREETING'] .value")
    expect(cell).to_have_text(HOSTILE)
    assert page.locator("#panel-live table.custom img").count() == 0
    stored = api(tether, "GET", f"/projects/{project}/environments/live/variables").json()
    assert {"GREETING": HOSTILE}.items() <= {v["name"]: v["value"] for v in stored}.items()
    page.locator("#panel-live table.custom").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "09-markup-as-text.png"))
    # a page reload renders it from the API the same way; no alert ever opens (the fixture)
    page.reload()
    expect(cell).to_have_text(HOSTILE)
    # markup in the sign-in page's `next` is escaped as well (and CSP forbids inline scripts)
    page.evaluate("localStorage.clear()")  # signed out: the sign-in page stays
    page.goto('/sign-in?next=/"><script>alert(1)</script>')
    assert page.locator("input[name=next]").get_attribute("value") == \
        '/"><script>alert(1)</script>'
    assert page.locator("script:not([src])").count() == 0


DATABASE_BOX = "Add a PostgreSQL database (DEFAULT) to each environment"


def _states(t: Tether, project: str) -> dict[str, dict[str, str]]:
    return {env: {i["prefix"]: i["state"] for i in api(
        t, "GET", f"/projects/{project}/environments/{env}/services").json()}
        for env in ("test", "live")}


def test_a_project_is_created_in_the_browser(tether: Tether, page: Page) -> None:
    sign_in(page, tether)
    page.get_by_text("New project").click()
    page.get_by_label("Name").fill("made-in-browser")
    expect(page.get_by_label("Region")).to_have_value("local")
    expect(page.get_by_label(DATABASE_BOX)).to_be_checked()  # the default
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url("**/projects/made-in-browser")
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="live")).to_be_visible()
    # with its DEFAULT database in each environment, new until the first deploy
    expect(service_row(page, "DEFAULT").locator(".badge")).to_have_text("new")
    assert _states(tether, "made-in-browser") == {"test": {"DEFAULT": "new"},
                                                  "live": {"DEFAULT": "new"}}
    # its public id, the one the Divio CLI's --remote-id takes
    made = tether.ok("project", "show", "-p", "made-in-browser", "--json").json()
    assert made["uuid"] == api(tether, "GET", "/projects/made-in-browser").json()["uuid"]
    expect(page.locator("#project-meta")).to_contain_text(f"id {made['uuid']}")
    page.get_by_role("link", name="Projects").click()
    expect(page.get_by_role("link", name="made-in-browser")).to_be_visible()


def test_a_project_without_a_database_then_a_service_added_with_provision(
        tether: Tether, page: Page) -> None:
    """The box unchecked: no service at all; the Add service form then offers DEFAULT as free
    and adds it provisioned at once."""
    name = "browser-no-db"
    sign_in(page, tether)
    page.get_by_text("New project").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label(DATABASE_BOX).uncheck()
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(f"**/projects/{name}")
    expect(page.locator("#panel-test .empty").first).to_contain_text("No service in test")
    assert _states(tether, name) == {"test": {}, "live": {}}

    page.locator("#add-test summary").click()
    select = page.locator("#add-service-test")
    options = select.locator("option").all_inner_texts()
    select.select_option(next(o for o in options if o.startswith("postgres-")).split(" ")[0])
    page.locator("#add-prefix-test").fill("DEFAULT")
    expect(page.locator("#add-prefix-help-test")).to_contain_text("DEFAULT is free in test")
    page.locator("#add-provision-test").check()
    page.locator("#add-test button[type=submit]").click()
    expect(service_row(page, "DEFAULT").locator(".badge")).to_have_text("pending attachment",
                                                                       timeout=60_000)
    assert _states(tether, name) == {"test": {"DEFAULT": "pending attachment"}, "live": {}}
    tether.ok("service", "remove", "test", "DEFAULT", "--confirm", "DEFAULT", "-p", name)


def test_sessions_are_listed_and_one_can_end_another(tether: Tether, browser: Browser,
                                                     page: Page) -> None:
    sign_in(page, tether)
    other_context = browser.new_context(base_url=tether.url)
    other = other_context.new_page()
    try:
        sign_in(other, tether)
        page.get_by_role("link", name="Sessions").click()
        page.wait_for_url("**/sessions")
        rows = page.locator("#sessions tbody tr")
        expect(rows.filter(has_text="this browser")).to_have_count(1)
        theirs = rows.filter(has_not_text="this browser").last
        theirs.get_by_role("button", name="End session").click()
        expect(page.get_by_role("status").last).to_contain_text("signed out")
        # the other browser is signed out at once: its next page load asks to sign in
        other.goto("/")
        other.wait_for_url(SIGN_IN_URL)
        assert other.request.get("/api/v1/projects").status == 401
    finally:
        other_context.close()
