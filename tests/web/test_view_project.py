"""The project page's findings of issue 13 in a real browser against a shared `tether up`:
application settings edited in the page, and deploys refused without an application command
(finding 3); deployments listed, paged and opened, the running release's log, and the
environment's activity (finding 5); removal progress, actions held during a deploy, state
tooltips, a fresh "running release" and a toast clear of the tables (finding 8)."""

from __future__ import annotations

import re
import sys

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ROOT, Tether
from tests.web.axe import assert_accessible
from tests.web.conftest import sign_in
from tests.web.test_services_view import APP, api, deploy_and_wait, service_row

pytestmark = pytest.mark.web


def open_project(page: Page, t: Tether, name: str) -> None:
    sign_in(page, t)
    page.goto(f"/projects/{name}")
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")


def test_app_settings_in_the_page_and_no_deploy_without_a_command(tether: Tether,
                                                                  page: Page) -> None:
    """Finding 3: without an application command a deploy is refused with the reason (in the
    page, the API and the CLI) and nothing is started; the command, health path and directory
    are set in the page, a bad value refused with the API's message at its field; then the
    deploy works."""
    name = "app-settings"
    tether.ok("project", "create", name, "--no-database")
    open_project(page, tether, name)
    settings = page.locator("#app-settings")
    expect(settings).to_have_attribute("open", "")  # no command yet: the settings are open
    expect(page.locator("#project-meta")).to_contain_text("no application command")

    # Deploy says why, in the browser's words, and nothing is started
    page.locator("#deploy-test").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("has no application command")
    expect(alert).to_contain_text("Application settings")
    expect(alert).not_to_contain_text("tether ")
    expect(page.locator("#deploy-test")).to_be_enabled()
    path = f"/projects/{name}/environments/test/deployments"
    assert api(tether, "GET", path).json() == []
    # the same refusal through the API (409) and the CLI (exit 2, how to fix it)
    refused = api(tether, "POST", path)
    assert refused.status_code == 409, refused.text
    assert "--app-command" in refused.json()["error"]["message"]
    cli = tether.cli("deploy", "test", "-p", name)
    assert cli.code == 2 and "tether project update" in cli.err, (cli.out, cli.err)
    assert api(tether, "GET", path).json() == []

    # a bad health path: refused with the API's message at its field, nothing saved
    command = page.get_by_label("Command", exact=True)
    health = page.get_by_label("Health check path")
    directory = page.get_by_label("Directory")
    command.fill(APP)
    health.fill("health")
    directory.fill(str(ROOT))
    page.get_by_role("button", name="Save settings").click()
    expect(health).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#app-health-path-help")).to_have_text(
        "invalid health path 'health': it must start with / (e.g. /health)")
    expect(health).to_be_focused()
    assert api(tether, "GET", f"/projects/{name}").json()["app_command"] is None
    # a directory that is not absolute: the API's message at the directory
    health.fill("/health")
    directory.fill("srv/shop")
    page.get_by_role("button", name="Save settings").click()
    expect(directory).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#app-dir-help")).to_contain_text("is not an absolute path")
    # a health timeout out of range: the API's rule, checked before sending
    directory.fill(str(ROOT))
    timeout = page.get_by_label("Health timeout (s)")
    timeout.fill("0")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#app-health-timeout-help")).to_have_text(
        "invalid health timeout: use 1 to 600 seconds")
    timeout.fill("60")

    # good values: saved (the API has them), the page says so
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").filter(has_text="Saved the application settings")
           ).to_be_visible()
    expect(health).to_have_attribute("aria-invalid", "false")
    shown = api(tether, "GET", f"/projects/{name}").json()
    assert (shown["app_command"], shown["health_path"], shown["app_dir"],
            shown["health_timeout"]) == (APP, "/health", str(ROOT), 60)
    expect(page.locator("#project-meta")).to_contain_text(f"application: {APP}")
    # the CLI changes the same settings (and the page shows them when opened again)
    tether.ok("project", "update", "-p", name, "--health-timeout", "45", "--app-dir", str(ROOT))
    bad = tether.cli("project", "update", "-p", name, "--health-timeout", "0")
    assert bad.code == 2 and "invalid health timeout" in bad.err, (bad.out, bad.err)
    page.reload()
    expect(timeout).to_have_value("45")
    expect(settings).not_to_have_attribute("open", "")  # it has a command: closed

    # now the deploy starts the application, which answers at the stable address
    deploy_and_wait(page, "succeeded")
    url = page.locator("#panel-test .panel-head a").get_attribute("href")
    assert url
    assert page.request.get(url + "/health").ok
    expect(service_row(page, "DEFAULT")).to_have_count(0)
    expect(page.locator("#panel-test .deploy-live .log")).to_contain_text(
        re.compile(r"starting release \d+"))


def make_project(t: Tether, name: str, *extra: str) -> None:
    """A project with the example app; `extra` options for `tether project create`."""
    t.ok("project", "create", name, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT), *extra)


# Records every text a row of the services table showed in its State cell, and its tooltip.
WATCH_STATES = """(prefix) => {
  window.seenStates = [];
  const body = document.querySelector('#panel-test table.services tbody');
  const look = () => {
    const row = body.querySelector(`tr[data-prefix='${prefix}']`);
    const badge = row?.querySelector('.badge');
    if (badge) {
      window.seenStates.push([badge.textContent,
        row.querySelector('[role=tooltip]')?.textContent || '', row.innerText]);
    }
  };
  new MutationObserver(look).observe(body, { childList: true, subtree: true,
    characterData: true });
}"""


def test_a_removal_shows_removing(tether: Tether, page: Page) -> None:
    """Finding 8: while a removal runs, the row says `removing` (its badge and tooltip), shown
    from the API's answer at once, so even a removal that ends before the next poll shows it."""
    name = "removing-shown"
    make_project(tether, name, "--no-database")
    tether.ok("service", "add", "test", "postgres", "--prefix", "EXTRA", "--provision",
              "-p", name)
    open_project(page, tether, name)
    row = service_row(page, "EXTRA")
    expect(row.locator(".badge")).to_have_text("pending attachment")
    page.evaluate(WATCH_STATES, "EXTRA")
    row.locator("button[data-action='remove']").click()
    page.keyboard.type("EXTRA")
    page.keyboard.press("Enter")
    expect(row).to_have_count(0, timeout=60_000)
    seen = page.evaluate("window.seenStates")
    removing = [s for s in seen if s[0] == "removing"]
    assert removing, f"the row never said removing: {seen}"
    assert "being deleted for good" in removing[0][1]
    assert "remove" in removing[0][2]  # the operation under way, beside the badge


def test_attach_and_detach_wait_for_a_running_deploy(tether: Tether, page: Page) -> None:
    """Finding 8: while a deployment runs, Detach and Attach are disabled, the reason in their
    tooltip and description; enabled again once it has ended."""
    name = "held-during-deploy"
    make_project(tether, name)
    open_project(page, tether, name)
    row = service_row(page, "DEFAULT")
    detach = row.locator("button[data-action='detach']")
    row.locator("button[data-action='provision']").click()
    expect(row.locator(".badge")).to_have_text("pending attachment", timeout=60_000)
    expect(detach).to_be_enabled()

    page.locator("#deploy-test").click()
    expect(detach).to_be_disabled()
    reason = re.compile(r"wait: deployment #\d+ of test is running; detach DEFAULT once it "
                        r"has ended")
    expect(detach).to_have_attribute("title", reason)
    expect(row.locator(f"#{detach.get_attribute('aria-describedby')}")).to_have_text(
        re.compile("Not available: " + reason.pattern))
    expect(page.locator("#panel-test .deploy-live")).to_have_attribute(
        "data-status", "succeeded", timeout=90_000)
    expect(row.locator(".badge")).to_have_text("attached")
    expect(detach).to_be_enabled()
    # detached: Attach is held the same way during the next deploy
    detach.click()
    expect(row.locator(".badge")).to_have_text("pending detachment")
    page.locator("#deploy-test").click()
    expect(row.locator("button[data-action='attach']")).to_have_attribute(
        "title", re.compile(r"wait: deployment #\d+ of test is running"))
    expect(page.locator("#panel-test .deploy-live")).to_have_attribute(
        "data-status", "succeeded", timeout=90_000)
    expect(row.locator(".badge")).to_have_text("detached")
    expect(row.locator("button[data-action='attach']")).to_be_enabled()


def test_a_success_notice_never_covers_the_table_headers(tether: Tether, page: Page) -> None:
    """Finding 8: with the services table's headers at the top of the window, an action's
    success notice does not cover them (it sits at the bottom right)."""
    name = "notice-placed"
    make_project(tether, name)
    open_project(page, tether, name)
    row = service_row(page, "DEFAULT")
    thead = page.locator("#panel-test table.services thead")
    thead.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    row.locator("button[data-action='provision']").click()
    notice = page.locator("#notices .notice.success")
    expect(notice).to_be_visible()
    expect(row.locator(".badge")).to_have_text("pending attachment", timeout=60_000)
    expect(notice).to_be_visible()
    box, head = notice.bounding_box(), thead.bounding_box()
    assert box and head
    overlap = (box["x"] < head["x"] + head["width"] and head["x"] < box["x"] + box["width"]
               and box["y"] < head["y"] + head["height"] and head["y"] < box["y"] + box["height"])
    assert not overlap, f"the notice {box} covers the table headers {head}"
    # and it covers no other table's headers either
    for other in page.locator("#panel-test table:visible thead").all():
        rect = other.bounding_box()
        assert rect is not None
        assert not (box["x"] < rect["x"] + rect["width"] and rect["x"] < box["x"] + box["width"]
                    and box["y"] < rect["y"] + rect["height"]
                    and rect["y"] < box["y"] + box["height"]), f"the notice covers {rect}"


def test_state_tooltips_on_hover_and_focus_at_once(tether: Tether, page: Page) -> None:
    """Finding 8: a state's meaning (as the seed page says it: functional, usable by the
    application) is a tooltip shown at once on hover and on focus, not the browser's delayed
    `title`; Escape hides it."""
    name = "state-tooltips"
    make_project(tether, name)
    open_project(page, tether, name)
    row = service_row(page, "DEFAULT")
    badge = row.locator(".badge")
    tip = row.get_by_role("tooltip", include_hidden=True)
    expect(badge).to_have_text("new")
    assert badge.get_attribute("title") is None
    expect(tip).to_be_hidden()
    tip_id = tip.get_attribute("id")
    expect(badge).to_have_attribute("aria-describedby", tip_id or "?")
    badge.hover()
    expect(tip).to_be_visible(timeout=300)  # no delay
    expect(tip).to_have_text("new: not functional; the application has no variables. "
                             "Functional: no. Usable by the application: no.")
    page.mouse.move(0, 0)
    expect(tip).to_be_hidden(timeout=300)
    badge.focus()
    expect(tip).to_be_visible(timeout=300)
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden(timeout=300)
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    expect(badge).to_be_focused()
    expect(tip).to_be_visible(timeout=300)


def test_running_release_column_after_a_deploy_that_changes_no_state(tether: Tether,
                                                                     page: Page) -> None:
    """Finding 8: after a deploy that changes no service's state, the variables' "Running
    release" column says what the new release has, without a reload."""
    name = "running-release"
    make_project(tether, name, "--no-database")
    open_project(page, tether, name)
    running = page.locator("#panel-test table.given tr[data-name='STAGE'] "
                           "td[data-label='Running release']")
    expect(running).to_have_text("no")
    page.locator("#var-name-test").fill("GREETING")
    page.locator("#var-value-test").fill("hello")
    page.get_by_role("button", name="Save variable").first.click()
    expect(page.locator("#panel-test tr[data-name='GREETING']")).to_be_visible()
    deploy_and_wait(page, "succeeded")
    expect(running).to_have_text("yes")
    # a second deploy: nothing changes state, the column stays right
    deploy_and_wait(page, "succeeded")
    expect(running).to_have_text("yes")


FAILING = f"{sys.executable} -c 'raise SystemExit(3)'"


def test_deployments_listed_paged_and_opened(tether: Tether, page: Page) -> None:
    """Finding 5: an environment's deployments, newest first, in pages ("Show more" follows the
    API's cursor); each opens with its log, its release's variables' names (never a value) and
    what it changed (attached, detached; a failed one changed nothing); the running release's
    log is followed live."""
    name = "deployments-opened"
    make_project(tether, name)
    secret = "s3cr3t-greeting-value"
    assert api(tether, "PUT", f"/projects/{name}/environments/test/variables/GREETING",
               json={"value": secret}).status_code == 200
    # ten failed deployments (the app exits at once), then two that succeed
    tether.ok("project", "update", "-p", name, "--app-command", FAILING)
    for _ in range(10):
        assert tether.cli("deploy", "test", "-p", name).code == 1
    tether.ok("project", "update", "-p", name, "--app-command", APP)
    open_project(page, tether, name)
    row = service_row(page, "DEFAULT")
    deploy_and_wait(page, "succeeded")  # provisions and attaches DEFAULT
    expect(row.locator(".badge")).to_have_text("attached")
    row.locator("button[data-action='detach']").click()
    expect(row.locator(".badge")).to_have_text("pending detachment")
    deploy_and_wait(page, "succeeded")  # detaches it
    expect(row.locator(".badge")).to_have_text("detached")
    made = [d["id"] for d in api(tether, "GET", f"/projects/{name}/environments/test/deployments"
                                 ).json()]
    assert len(made) == 12

    # the first page: the newest ten, newest first; Show more adds the last two
    rows = page.locator("#panel-test table.deployments tbody tr")
    more = page.locator("#deployments-more-test")
    expect(rows).to_have_count(10)
    assert [int(r) for r in rows.evaluate_all("(rs) => rs.map((r) => r.dataset.id)")] == \
        made[:10]
    expect(more).to_be_visible()
    more.click()
    expect(rows).to_have_count(12)
    assert [int(r) for r in rows.evaluate_all("(rs) => rs.map((r) => r.dataset.id)")] == made
    expect(more).to_be_hidden()
    assert_accessible(page, "the project page with its deployments, activity and settings")

    # the live log of the running release: its output, and the next release's as it comes
    page.locator("#app-log-box-test summary").click()
    app_log = page.locator("#app-log-test")
    expect(app_log).to_contain_text("hello app listening")
    expect(app_log.locator("li", has_text="hello app listening")).to_have_count(1)
    deploy_and_wait(page, "succeeded")
    expect(app_log.locator("li", has_text="hello app listening")).to_have_count(2)

    # the deployment that attached DEFAULT: its log, its variables' names, what it changed
    attach_id, detach_id, failed_id = made[1], made[0], made[-1]
    page.get_by_role("link", name=f"Deployment #{attach_id}: details, log and changes").click()
    page.wait_for_url(re.compile(f"/projects/{name}/test/deployments/{attach_id}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        f"Deployment #{attach_id} of test")
    changes = page.locator("#changes")
    expect(changes.locator("ul").first.locator("li[data-prefix='DEFAULT']")).to_be_visible()
    expect(changes).to_contain_text("Attached")
    names = page.locator("#variables code")
    expect(names.filter(has_text=re.compile(r"^GREETING$"))).to_have_count(1)
    expect(names.filter(has_text=re.compile(r"^DEFAULT_DATABASE_DSN$"))).to_have_count(1)
    expect(names.filter(has_text=re.compile(r"^STAGE$"))).to_have_count(1)
    expect(page.locator("#deployment-log")).to_contain_text("deployment succeeded")
    assert secret not in page.content()
    assert "test" not in [t.strip() for t in names.all_inner_texts()]  # names, not values
    assert_accessible(page, "a deployment's page")

    # the one that detached it
    page.goto(f"/projects/{name}/test/deployments/{detach_id}")
    after_heading = "xpath=following-sibling::*[1]"
    detached = page.locator("#changes h3", has_text="Detached").locator(after_heading)
    expect(detached).to_contain_text("DEFAULT")
    attached = page.locator("#changes h3", has_text="Attached").locator(after_heading)
    expect(attached).to_have_text("No service.")
    expect(page.locator("#variables code").filter(
        has_text=re.compile(r"^DEFAULT_DATABASE_DSN$"))).to_have_count(0)

    # a failed one: it says that nothing changed, and why it failed
    page.goto(f"/projects/{name}/test/deployments/{failed_id}")
    expect(page.locator("#deployment")).to_contain_text("nothing changed")
    expect(page.locator("#deployment-log")).to_contain_text("deployment failed")
    # back to the environment from the breadcrumb
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="test").click()
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")


def test_activity_keeps_removed_services(tether: Tether, page: Page) -> None:
    """Finding 5: the environment's activity, newest first and in pages, names who changed
    what; a removed service's history stays in it after its row has gone."""
    name = "activity-kept"
    make_project(tether, name, "--no-database")
    tether.ok("service", "add", "test", "postgres", "--prefix", "EXTRA", "--provision",
              "-p", name)
    for n in range(20):  # enough entries for a second page
        assert api(tether, "PUT", f"/projects/{name}/environments/test/variables/V{n}",
                   json={"value": "x"}).status_code == 200
    open_project(page, tether, name)
    row = service_row(page, "EXTRA")
    expect(row.locator(".badge")).to_have_text("pending attachment")
    row.locator("button[data-action='remove']").click()
    page.keyboard.type("EXTRA")
    page.keyboard.press("Enter")
    expect(row).to_have_count(0, timeout=60_000)

    activity = page.locator("#panel-test table.activity tbody tr")
    extra = activity.filter(has=page.locator("td[data-label='Service']", has_text="EXTRA"))
    # its removal is the newest; its whole history is there, its addition on a later page
    expect(activity.first).to_contain_text("EXTRA")
    expect(activity.first).to_contain_text("removed")
    expect(activity).to_have_count(20)
    more = page.locator("#activity-more-test")
    expect(more).to_be_visible()
    more.click()
    expect(more).to_be_hidden()
    texts = extra.all_inner_texts()
    assert len(texts) >= 3, texts
    assert any("→ removed" in t for t in texts), texts
    assert any("add" in t for t in texts), texts
    expect(activity.filter(has_text="V0")).to_have_count(1)
    # newest first
    ids = [int(i) for i in activity.evaluate_all("(rs) => rs.map((r) => r.dataset.id)")]
    assert ids == sorted(ids, reverse=True)
