"""Issue 13's "How it is shown": the whole story in Chromium against one real `tether up`, twice.

1. Keyboard only: Tab, Shift+Tab, Enter, Space and typing (page.keyboard; no click), and after
   each step focus is where a keyboard user needs it, never dropped to the page body.
2. On a phone (390x844, touch): the same story by tapping, and at each step what is needed is in
   the viewport once scrolled to (not cut off, not covered) and the page never scrolls sideways.

The story: sign in; create a project, then its application settings (command, health path,
directory); add a PostgreSQL with the free prefix suggested; provision it; deploy and watch the
live log; open a past deployment; detach both services and see the pending changes; deploy;
remove both (Enter in the typed confirmation; the last removal empties the table, and focus goes
to the add form; the same for the custom variables' table); register a cluster as an admin on
the operators' Clusters page; and see a developer token refused on the operators' pages.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Locator, Page, Route, expect

from tests.e2e.conftest import ROOT, Tether
from tests.web.conftest import LAPTOP, PHONE, SIGN_IN_URL

pytestmark = pytest.mark.web

APP = f"{sys.executable} examples/hello/app.py"
DEPLOY_TIMEOUT = 90_000
SIGNED_OUT = re.compile(r"/sign-in$")

#: focus somewhere real: not the page body (where a disabled or removed control drops it)
FOCUS_WHERE = "() => { const el = document.activeElement; " \
    "return el && el !== document.body ? el.outerHTML.slice(0, 160) : 'the page body'; }"


def story_page(browser: Browser, tether: Tether, **options: object) -> Iterator[Page]:
    """A fresh profile's page that fails the test on any script error or alert/confirm."""
    context: BrowserContext = browser.new_context(base_url=tether.url, **options)  # type: ignore[arg-type]
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", on_dialog)
    yield page
    context.close()
    assert errors == [], f"script errors on the page: {errors}"
    assert dialogs == [], f"unexpected dialogs: {dialogs}"


@pytest.fixture
def keyboard_page(browser: Browser, tether: Tether) -> Iterator[Page]:
    yield from story_page(browser, tether, viewport=LAPTOP)


@pytest.fixture
def phone_page(browser: Browser, tether: Tether) -> Iterator[Page]:
    yield from story_page(browser, tether, viewport=PHONE, is_mobile=True, has_touch=True)


def developer_token(t: Tether, name: str) -> str:
    return str(t.ok("token", "create", name, "--role", "developer", "--json").json()["token"])


def row(page: Page, prefix: str) -> Locator:
    return page.locator(f"#panel-test tr[data-prefix='{prefix}']")


# --- keyboard only -------------------------------------------------------------------------------

def focused(page: Page, selector: str) -> bool:
    return bool(page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector))


def tab_to(page: Page, selector: str, back: bool = False, limit: int = 150) -> None:
    """Press Tab (Shift+Tab with `back`) until the focused element matches `selector`."""
    for _ in range(limit):
        if focused(page, selector):
            return
        page.keyboard.press("Shift+Tab" if back else "Tab")
    raise AssertionError(f"{'Shift+' if back else ''}Tab never reached {selector}; "
                         f"focus is on {page.evaluate(FOCUS_WHERE)}")


def press_on(page: Page, selector: str, key: str = "Enter", back: bool = False) -> None:
    tab_to(page, selector, back)
    page.keyboard.press(key)


def focus_lands(page: Page, selector: str, after: str) -> None:
    """Wait until focus is on `selector`: say where it is instead when it never gets there."""
    try:
        page.wait_for_function(
            "(s) => document.activeElement?.matches(s) ?? false", arg=selector, timeout=10_000)
    except Exception as exc:  # the message says where focus went
        notices = page.locator("#notices").all_inner_texts()
        raise AssertionError(f"after {after}, focus is on {page.evaluate(FOCUS_WHERE)}, "
                             f"not on {selector} (notices: {notices})") from exc


def keyboard_sign_in(page: Page, t: Tether, token: str) -> None:
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    tab_to(page, "#token")
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_url(t.url + "/")


def keyboard_deploy(page: Page) -> None:
    """Shift+Tab up to Deploy test, Enter: focus goes to the live log, which fills until the
    deployment succeeds; then Deploy test can be pressed again."""
    press_on(page, "#deploy-test", back=True)
    live = page.locator("#panel-test .deploy-live")
    focus_lands(page, "#panel-test .deploy-live [role=log]", "pressing Deploy")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=DEPLOY_TIMEOUT)
    expect(live.locator("[role=log] li").first).to_be_visible()
    expect(live.locator(".result")).to_contain_text("succeeded")
    expect(page.locator("#deploy-test")).to_be_enabled()


def keyboard_remove(page: Page, prefix: str) -> None:
    """Remove… on the row, the prefix typed in the dialog and Enter (which confirms)."""
    press_on(page, f"#panel-test tr[data-prefix='{prefix}'] button[data-action='remove']")
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text(f"Remove {prefix}?")
    expect(dialog.locator("input")).to_be_focused()
    page.keyboard.type(prefix)
    page.keyboard.press("Enter")
    expect(row(page, prefix)).to_have_count(0, timeout=60_000)


def test_the_projects_page_says_what_to_press_when_empty(tether: Tether, page: Page) -> None:
    """Before any project: the empty state names the button, not the CLI's command."""
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    page.get_by_label("Access token").fill(tether.token())
    page.keyboard.press("Enter")
    empty = page.locator("#projects .empty")
    expect(empty).to_contain_text("New project")
    assert "tether " not in empty.inner_text()


def test_the_story_keyboard_only(tether: Tether, keyboard_page: Page, tmp_path: Path) -> None:
    page, t, name = keyboard_page, tether, "by-keys"
    keyboard_sign_in(page, t, t.token())

    # a new project (its DEFAULT database kept), then its application settings
    press_on(page, "#new-project summary")
    tab_to(page, "#project-name")
    page.keyboard.type(name)
    expect(page.locator("#project-region option")).not_to_have_count(0)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(f"/projects/{name}$"))
    expect(page.locator("#app-settings")).to_have_attribute("open", "")  # no command yet
    tab_to(page, "#app-command")
    page.keyboard.type(APP)
    page.keyboard.press("Tab")
    expect(page.locator("#app-health-path")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("/health")
    tab_to(page, "#app-dir")
    page.keyboard.type(str(ROOT))
    page.keyboard.press("Enter")
    expect(page.locator(".notice.success")).to_contain_text("Saved the application settings")
    expect(page.locator("#project-meta")).to_contain_text("examples/hello/app.py")
    focus_lands(page, "#app-dir", "saving the settings")

    # a service with the free prefix suggested (DEFAULT is taken): DATABASE
    expect(row(page, "DEFAULT").locator(".badge")).to_have_text("new")
    press_on(page, "#add-test summary")
    tab_to(page, "#add-service-test")
    expect(page.locator("#add-service-test")).to_have_value(re.compile(r"^postgres-\d+$"))
    page.keyboard.press("Tab")
    expect(page.locator("#add-prefix-test")).to_be_focused()
    expect(page.locator("#add-prefix-test")).to_have_value("DATABASE")
    expect(page.locator("#add-prefix-help-test")).to_have_text("DATABASE is free in test.")
    press_on(page, "#add-test button[type=submit]")
    expect(row(page, "DATABASE").locator(".badge")).to_have_text("new")
    focus_lands(page, "#panel-test tr[data-prefix='DATABASE'] a.prefix", "adding a service")

    # provision it (Space on the button): focus stays in its row
    press_on(page, "#panel-test tr[data-prefix='DATABASE'] button[data-action='provision']",
             "Space")
    expect(row(page, "DATABASE").locator(".badge")).to_have_text("pending attachment",
                                                                 timeout=60_000)
    focus_lands(page, "#panel-test tr[data-prefix='DATABASE'] :is(a, button)",
                "provisioning")
    expect(page.locator("#pending-test")).to_contain_text("provision and attach DEFAULT")
    expect(page.locator("#pending-test")).to_contain_text("attach DATABASE")

    # deploy, with the live log
    keyboard_deploy(page)
    for prefix in ("DEFAULT", "DATABASE"):
        expect(row(page, prefix).locator(".badge")).to_have_text("attached")
    expect(page.locator("#pending-test")).to_be_hidden()
    # the running release's own output, followed live
    press_on(page, "#app-log-box-test summary")
    expect(page.locator("#app-log-test")).to_contain_text("hello app listening")
    page.keyboard.press("Enter")  # closed again

    # a past deployment opened from the list, and back by the breadcrumb
    link = "#panel-test table.deployments tbody tr:first-child a"
    expect(page.locator(link)).to_be_visible()
    press_on(page, link)
    page.wait_for_url(re.compile(f"/projects/{name}/test/deployments/\\d+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Deployment #")
    expect(page.locator("#deployment-log")).to_contain_text("deployment succeeded")
    expect(page.locator("#changes")).to_contain_text("DATABASE")
    press_on(page, "#crumbs a[href$='?env=test']")
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")

    # detach both: the pending changes say so beside Deploy
    for prefix in ("DEFAULT", "DATABASE"):
        press_on(page, f"#panel-test tr[data-prefix='{prefix}'] button[data-action='detach']")
        expect(row(page, prefix).locator(".badge")).to_have_text("pending detachment")
        focus_lands(page, f"#panel-test tr[data-prefix='{prefix}'] :is(a, button)",
                    f"detaching {prefix}")
    pending = page.locator("#pending-test")
    expect(pending).to_contain_text("detach DEFAULT")
    expect(pending).to_contain_text("detach DATABASE")
    keyboard_deploy(page)
    for prefix in ("DEFAULT", "DATABASE"):
        expect(row(page, prefix).locator(".badge")).to_have_text("detached")

    # remove both, Enter in the typed confirmation; focus stays in the table, and once the
    # table is empty it goes to the add form
    keyboard_remove(page, "DATABASE")
    focus_lands(page, "#panel-test table.services a.prefix", "removing DATABASE")
    keyboard_remove(page, "DEFAULT")
    expect(page.locator("#panel-test table.services")).to_be_hidden()
    expect(page.locator("#panel-test .empty", has_text="No service in test")).to_be_visible()
    focus_lands(page, "#add-test summary", "removing the last service")

    # the custom variables' table likewise: two set, both unset; focus on the row that took
    # the unset one's place, then, the table empty, on the form that sets one
    for var in ("GREETING", "MOOD"):
        tab_to(page, "#var-name-test")
        page.keyboard.type(var)
        page.keyboard.press("Tab")
        page.keyboard.type("hello")
        page.keyboard.press("Enter")
        expect(page.locator(f"#panel-test table.custom tr[data-name='{var}']")).to_be_visible()
    tab_to(page, "#panel-test button[aria-label='Unset GREETING']", back=True)
    page.keyboard.press("Enter")
    expect(page.locator("#panel-test tr[data-name='GREETING']")).to_have_count(0)
    focus_lands(page, "#panel-test button[aria-label='Unset MOOD']",
                "unsetting a variable")
    page.keyboard.press("Enter")
    expect(page.locator("#panel-test table.custom")).to_be_hidden()
    focus_lands(page, "#var-name-test", "unsetting the last variable")

    # an operator registers a cluster: the Operators link, then the Clusters page's form
    press_on(page, "header .operators-link", back=True)
    page.wait_for_url(re.compile("/clusters$"))
    expect(page.locator("td.health")).not_to_have_count(0)
    press_on(page, "#register-cluster summary")
    tab_to(page, "#cluster-kind")
    page.keyboard.type("local-files")  # a select picks the option typed
    expect(page.locator("#cluster-kind")).to_have_value("local-files")
    tab_to(page, "#cluster-url")
    media = tmp_path / "media"
    page.keyboard.type(f"file://{media}")
    page.keyboard.press("Tab")
    page.keyboard.type("keys-files")
    page.keyboard.press("Tab")
    page.keyboard.type(f"base_dir={media}")
    page.keyboard.press("Enter")
    page.keyboard.type("public_url=http://127.0.0.1:1/media/")
    press_on(page, "#cluster-form button[type=submit]")
    new = page.locator("tr[data-cluster='keys-files']")
    expect(new).to_contain_text("local-files")
    focus_lands(page, "tr[data-cluster='keys-files'] th", "registering a cluster")

    # a developer signs in (after Sign out) and is refused on every operators' page
    press_on(page, "form.sign-out button", back=True)
    page.wait_for_url(SIGNED_OUT)
    keyboard_sign_in(page, t, developer_token(t, "keys-dev"))
    for path in ("/clusters", "/regions", "/tokens"):
        page.goto(path)
        refused = page.get_by_role("alert")
        expect(refused).to_contain_text("Operators only")
        expect(refused).to_contain_text("keys-dev (developer)")
        expect(page.locator("table")).to_have_count(0)


# --- on a phone ----------------------------------------------------------------------------------

WITHIN_VIEW = """(el) => {
  const r = el.getBoundingClientRect();
  const w = document.documentElement.clientWidth, h = document.documentElement.clientHeight;
  const inside = r.width > 0 && r.height > 0 && r.left >= -0.5 && r.right <= w + 0.5 &&
    r.top >= -0.5 && r.top < h;
  const x = Math.min(Math.max(r.left + Math.min(r.width, w) / 2, 0), w - 1);
  const y = Math.min(Math.max(r.top + Math.min(r.height, h) / 2, 0), h - 1);
  const hit = document.elementFromPoint(x, y);
  const shown = Boolean(hit && (el.contains(hit) || hit.contains(el)));
  return inside && shown ? '' : `${el.outerHTML.slice(0, 120)}: rect ${JSON.stringify(r)}, ` +
    `viewport ${w}x${h}, at its centre ${hit ? hit.outerHTML.slice(0, 120) : 'nothing'}`;
}"""


def no_sideways_scroll(page: Page, where: str) -> None:
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= PHONE["width"], f"{where}: the page scrolls sideways ({width} px wide)"


def seen(page: Page, locator: Locator, where: str) -> Locator:
    """`locator` scrolled to: wholly in the viewport across, not covered by anything, and the
    page itself no wider than the phone."""
    expect(locator).to_be_visible()
    # scrolled to the middle of the screen, where one looks (a notice sits at its foot a while)
    locator.evaluate("(el) => el.scrollIntoView({ block: 'center', inline: 'nearest' })")
    problem = locator.evaluate(WITHIN_VIEW)
    assert problem == "", f"{where}: cut off or covered: {problem}"
    no_sideways_scroll(page, where)
    return locator


def tap(page: Page, locator: Locator, where: str) -> None:
    seen(page, locator, where).tap()


def phone_deploy(page: Page) -> None:
    tap(page, page.locator("#deploy-test"), "Deploy")
    live = page.locator("#panel-test .deploy-live")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=DEPLOY_TIMEOUT)
    seen(page, live.locator("[role=log]"), "the live log")
    seen(page, live.locator(".result"), "the deployment's result")
    expect(page.locator("#deploy-test")).to_be_enabled()


def phone_remove(page: Page, prefix: str) -> None:
    tap(page, row(page, prefix).locator("button[data-action='remove']"), f"Remove {prefix}")
    dialog = page.locator("dialog")
    seen(page, dialog, "the remove dialog")
    field = dialog.locator("input")
    seen(page, field, "the remove dialog's field")
    seen(page, dialog.get_by_role("button", name="Remove for good"), "Remove for good")
    field.fill(prefix)
    page.keyboard.press("Enter")
    expect(row(page, prefix)).to_have_count(0, timeout=60_000)


def test_the_story_on_a_phone(tether: Tether, phone_page: Page, tmp_path: Path,
                              screenshots: Path) -> None:
    page, t, name = phone_page, tether, "by-phone"

    def shot(step: str) -> None:
        """The whole page as the phone shows it, to look at (build/screenshots)."""
        page.screenshot(path=str(screenshots / f"phone-{step}.png"), full_page=True)
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    seen(page, page.get_by_label("Access token"), "sign in").fill(t.token())
    tap(page, page.get_by_role("button", name="Sign in"), "sign in")
    page.wait_for_url(t.url + "/")
    seen(page, page.locator("header .operators-link"), "the top bar")
    seen(page, page.locator("form.sign-out button"), "the top bar")

    # a new project, then its application settings
    tap(page, page.locator("#new-project summary"), "New project")
    seen(page, page.locator("#project-name"), "the project form").fill(name)
    expect(page.locator("#project-region option")).not_to_have_count(0)
    seen(page, page.locator("#project-region"), "the project form")
    seen(page, page.locator("#project-database"), "the project form")
    tap(page, page.get_by_role("button", name="Create project"), "the project form")
    page.wait_for_url(re.compile(f"/projects/{name}$"))
    seen(page, page.locator("#project-title"), "the project page")
    for field, value in (("#app-command", APP), ("#app-health-path", "/health"),
                         ("#app-dir", str(ROOT))):
        seen(page, page.locator(field), "the application settings").fill(value)
    seen(page, page.locator("#app-health-timeout"), "the application settings")
    tap(page, page.get_by_role("button", name="Save settings"), "the application settings")
    seen(page, page.locator(".notice.success"), "the saved notice")
    expect(page.locator("#project-meta")).to_contain_text("examples/hello/app.py")

    # the tabs, the Deploy button and the services table, stacked into rows
    seen(page, page.get_by_role("tab", name="live"), "the environment tabs")
    seen(page, page.locator("#deploy-test"), "Deploy")
    default = row(page, "DEFAULT")
    expect(default.locator(".badge")).to_have_text("new")
    for part in ("a.prefix", ".badge", "button[data-action='provision']",
                 "button[data-action='remove']"):
        seen(page, default.locator(part), f"DEFAULT's row ({part})")

    # a service with the free prefix suggested
    tap(page, page.locator("#add-test summary"), "Add service")
    seen(page, page.locator("#add-service-test"), "the add form")
    expect(page.locator("#add-prefix-test")).to_have_value("DATABASE")
    seen(page, page.locator("#add-prefix-help-test"), "the prefix's help")
    seen(page, page.locator("#add-provision-test"), "the add form")
    tap(page, page.locator("#add-test button[type=submit]"), "Add service")
    database = row(page, "DATABASE")
    expect(database.locator(".badge")).to_have_text("new")

    # provision it; deploy with the live log
    tap(page, database.locator("button[data-action='provision']"), "Provision")
    expect(database.locator(".badge")).to_have_text("pending attachment", timeout=60_000)
    seen(page, page.locator("#pending-test"), "the pending changes")
    phone_deploy(page)
    expect(database.locator(".badge")).to_have_text("attached")
    seen(page, database.locator(".badge"), "DATABASE's state")
    database.locator(".badge").tap()  # its meaning, at once
    seen(page, database.locator("[role=tooltip]"), "the state's meaning")
    page.screenshot(path=str(screenshots / "phone-0-state-meaning.png"))
    tap(page, page.locator("#app-log-box-test summary"), "the running release's log")
    expect(page.locator("#app-log-test")).to_contain_text("hello app listening")
    seen(page, page.locator("#app-log-test"), "the running release's log")
    shot("1-deployed")

    # a past deployment
    link = page.locator("#panel-test table.deployments tbody tr:first-child a")
    tap(page, link, "the deployments list")
    page.wait_for_url(re.compile(f"/projects/{name}/test/deployments/\\d+$"))
    seen(page, page.get_by_role("heading", level=1), "a deployment's page")
    expect(page.locator("#deployment-log")).to_contain_text("deployment succeeded")
    seen(page, page.locator("#deployment-log"), "a deployment's log")
    seen(page, page.locator("#changes"), "what a deployment changed")
    shot("2-deployment")
    page.go_back()
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")

    # detach both, see the pending changes, deploy
    for prefix in ("DEFAULT", "DATABASE"):
        tap(page, row(page, prefix).locator("button[data-action='detach']"), f"Detach {prefix}")
        expect(row(page, prefix).locator(".badge")).to_have_text("pending detachment")
    pending = seen(page, page.locator("#pending-test"), "the pending changes")
    expect(pending).to_contain_text("detach DEFAULT")
    expect(pending).to_contain_text("detach DATABASE")
    shot("3-pending")
    phone_deploy(page)
    for prefix in ("DEFAULT", "DATABASE"):
        expect(row(page, prefix).locator(".badge")).to_have_text("detached")

    # remove both (Enter in the confirmation): the empty table says what to do
    phone_remove(page, "DATABASE")
    phone_remove(page, "DEFAULT")
    seen(page, page.locator("#panel-test .empty", has_text="No service in test"), "no service")
    seen(page, page.locator("#add-test summary"), "Add service")

    # an operator registers a cluster
    tap(page, page.locator("header .operators-link"), "the Operators link")
    page.wait_for_url(re.compile("/clusters$"))
    expect(page.locator("td.health")).not_to_have_count(0)
    seen(page, page.locator("#operator-nav"), "the operators' tabs")
    tap(page, page.locator("#register-cluster summary"), "Register a cluster")
    seen(page, page.locator("#cluster-kind"), "the cluster form").select_option("local-files")
    media = tmp_path / "media"
    seen(page, page.locator("#cluster-url"), "the cluster form").fill(f"file://{media}")
    seen(page, page.locator("#cluster-name"), "the cluster form").fill("phone-files")
    seen(page, page.locator("#cluster-settings"), "the cluster form").fill(
        f"base_dir={media}\npublic_url=http://127.0.0.1:1/media/")
    tap(page, page.locator("#cluster-form button[type=submit]"), "the cluster form")
    new = page.locator("tr[data-cluster='phone-files']")
    expect(new.locator("td.health")).to_contain_text("reachable")
    seen(page, new.locator("th"), "the new cluster's row")
    seen(page, new.locator("td.health"), "the new cluster's health")
    shot("4-clusters")

    # a developer is refused on the operators' pages, and sees why
    tap(page, page.locator("form.sign-out button"), "Sign out")
    page.wait_for_url(SIGNED_OUT)
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    seen(page, page.get_by_label("Access token"), "sign in").fill(
        developer_token(t, "phone-dev"))
    tap(page, page.get_by_role("button", name="Sign in"), "sign in")
    page.wait_for_url(t.url + "/")
    for path in ("/clusters", "/regions", "/tokens"):
        page.goto(path)
        refused = seen(page, page.get_by_role("alert"), f"{path} refused")
        expect(refused).to_contain_text("Operators only")
        expect(refused).to_contain_text("phone-dev (developer)")
    shot("5-refused")


def test_deploy_focuses_its_log_when_a_poll_saw_it_first(tether: Tether, page: Page) -> None:
    """The answer to Deploy held back until the page's own poll (every 5 s when idle) has seen
    the deployment running and started following it: focus still goes to the log."""
    name = "slow-answer"
    tether.ok("project", "create", name, "--no-database", "--app-command",
              f"/bin/sh -c 'sleep 12; exec {APP}'", "--health-path", "/health",
              "--app-dir", str(ROOT))

    def held_back(route: Route) -> None:
        response = route.fetch()
        time.sleep(7)  # only this request waits: the page's other requests go on
        route.fulfill(response=response)

    page.route(f"**/api/v1/projects/{name}/environments/test/deployments", held_back)
    keyboard_sign_in(page, tether, tether.token())
    page.goto(f"/projects/{name}")
    expect(page.locator("#panel-test .empty", has_text="No service in test")).to_be_visible()
    tab_to(page, "#deploy-test")
    page.keyboard.press("Enter")
    expect(page.locator("#deploy-test")).to_have_text("Deploying test…", timeout=10_000)
    focus_lands(page, "#panel-test .deploy-live [role=log]", "pressing Deploy")
    expect(page.locator("#panel-test .deploy-live")).to_have_attribute(
        "data-status", "succeeded", timeout=DEPLOY_TIMEOUT)
