"""The Services view's findings of issue 13, each in a real browser against the shared
`tether up`: focus kept after every action (keyboard only), the add-service form's defaults, no
CLI wording in the page, and the pending changes the next deploy will make."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ROOT, Tether
from tests.web.conftest import sign_in
from tests.web.test_services_view import APP, action, api, deploy_and_wait, service_row

pytestmark = pytest.mark.web

IN_SERVICES_TABLE = """() => {
  const el = document.activeElement;
  return Boolean(el && el !== document.body && el.closest('#panel-test table.services'));
}"""


def make_project(t: Tether, name: str) -> None:
    """A project with the example app and (the default) a DEFAULT PostgreSQL, new, in each
    environment."""
    t.ok("project", "create", name, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT))


def open_project(page: Page, t: Tether, name: str) -> None:
    sign_in(page, t)
    page.goto(f"/projects/{name}")
    expect(page.get_by_role("tab", name="test")).to_have_attribute("aria-selected", "true")
    expect(service_row(page, "DEFAULT").locator(".badge")).to_be_visible()


def tab_to(page: Page, selector: str, limit: int = 120) -> None:
    """Press Tab (only) until the focused element matches `selector`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def assert_focus_in_table(page: Page, after: str) -> None:
    try:
        page.wait_for_function(IN_SERVICES_TABLE, timeout=5_000)
    except Exception as exc:  # the message says where focus went
        where = page.evaluate("document.activeElement?.outerHTML.slice(0, 120)")
        raise AssertionError(f"after {after}, focus is on {where}, not in the services table"
                             ) from exc


def test_focus_stays_in_the_table_after_each_action(tether: Tether, page: Page) -> None:
    """Finding 2: keyboard only, focus lands in the services table after adding a service and
    after each row action (the pressed button is disabled during the request)."""
    name = "focus-kept"
    make_project(tether, name)
    open_project(page, tether, name)

    # add a service (no provision): Tab to the form, type a prefix, Enter on Add service
    tab_to(page, "#add-test summary")
    page.keyboard.press("Enter")
    tab_to(page, "#add-prefix-test")
    page.keyboard.press("Control+A")
    page.keyboard.type("EXTRA")
    tab_to(page, "#add-test button[type=submit]")
    page.keyboard.press("Enter")
    expect(service_row(page, "EXTRA").locator(".badge")).to_have_text("new")
    assert_focus_in_table(page, "adding a service")

    row = service_row(page, "DEFAULT")
    badge = row.locator(".badge")
    # Provision (Space), Detach (Enter), Attach (Enter): each row action keeps focus in the table
    for name_, key, state in (("provision", "Space", "pending attachment"),
                              ("detach", "Enter", "detached"),
                              ("attach", "Enter", "pending attachment")):
        tab_to(page, f"#panel-test tr[data-prefix='DEFAULT'] button[data-action='{name_}']")
        page.keyboard.press(key)
        expect(badge).to_have_text(state, timeout=60_000)
        assert_focus_in_table(page, f"pressing {name_}")
    # and a removal (Enter in the dialog): focus on a row left in the table
    tab_to(page, "#panel-test tr[data-prefix='EXTRA'] button[data-action='remove']")
    page.keyboard.press("Enter")
    page.keyboard.type("EXTRA")
    page.keyboard.press("Enter")
    expect(service_row(page, "EXTRA")).to_have_count(0, timeout=60_000)
    assert_focus_in_table(page, "removing a service")


def test_the_add_form_opens_with_postgres_and_a_free_prefix(tether: Tether, page: Page) -> None:
    """Finding 6: the service list defaults to the region's newest postgres-N; the prefix is a
    free one (DEFAULT is taken by the project's default database), so the form never opens in
    red; lower case is upper-cased as typed; after an add the next free prefix is offered, with
    no error shown."""
    name = "add-form-defaults"
    make_project(tether, name)
    catalog = api(tether, "GET", f"/catalog?project={name}").json()
    newest = max((o["service"] for o in catalog if re.fullmatch(r"postgres-\d+", o["service"])),
                 key=lambda s: int(s.split("-")[1]))
    assert sorted(o["service"] for o in catalog)[0] != newest  # not merely the first one
    open_project(page, tether, name)

    page.locator("#add-test summary").click()
    select = page.locator("#add-service-test")
    prefix = page.locator("#add-prefix-test")
    help_ = page.locator("#add-prefix-help-test")
    submit = page.locator("#add-test button[type=submit]")
    expect(select).to_have_value(newest)
    expect(prefix).to_have_value("DATABASE")
    expect(prefix).to_have_attribute("aria-invalid", "false")
    expect(help_).to_have_class(re.compile(r"\bgood\b"))
    expect(help_).to_have_text("DATABASE is free in test.")
    expect(submit).to_be_enabled()

    # typed in lower case: upper-cased as typed (the caret stays where it was)
    prefix.fill("")
    prefix.press_sequentially("cache")
    expect(prefix).to_have_value("CACHE")
    prefix.press("ArrowLeft")
    prefix.press("ArrowLeft")
    prefix.press_sequentially("x")
    expect(prefix).to_have_value("CACXHE")
    expect(prefix).to_have_attribute("aria-invalid", "false")
    submit.click()
    expect(service_row(page, "CACXHE").locator(".badge")).to_have_text("new")

    # the form again: the next free prefix, no error shown
    page.locator("#add-test summary").click()
    expect(prefix).to_have_value("DATABASE")
    expect(help_).to_have_class(re.compile(r"\bgood\b"))
    expect(prefix).to_have_attribute("aria-invalid", "false")
    submit.click()
    expect(service_row(page, "DATABASE").locator(".badge")).to_have_text("new")
    page.locator("#add-test summary").click()
    expect(prefix).to_have_value("DB2")
    expect(help_).to_have_text("DB2 is free in test.")
    expect(submit).to_be_enabled()


SHOWN_TEXT = """() => [document.body.innerText,
  ...[...document.querySelectorAll('[title], [aria-label]')].map(
    (e) => `${e.getAttribute('title') || ''} ${e.getAttribute('aria-label') || ''}`),
  ...[...document.querySelectorAll('.visually-hidden')].map((e) => e.textContent)].join('\\n')"""


def assert_no_cli_wording(page: Page, state: str) -> str:
    text = page.evaluate(SHOWN_TEXT)
    for cli in ("`tether ", "tether deploy", "tether service", "--confirm", "--prefix"):
        assert cli not in text, f"{state}: the page says {cli!r}: " + next(
            line for line in text.splitlines() if cli in line)
    return text


def test_the_project_page_names_buttons_not_cli_commands(tether: Tether, page: Page) -> None:
    """Finding 7: reasons and hints name the button to press, never a CLI command, whatever
    the state of the service (the API's messages, shared with the CLI, name commands)."""
    name = "no-cli-words"
    make_project(tether, name)
    open_project(page, tether, name)
    row = service_row(page, "DEFAULT")
    badge = row.locator(".badge")
    # new: Detach is refused ("remove it with `tether service remove …`")
    expect(action(row, "detach")).to_be_disabled()
    text = assert_no_cli_wording(page, "new")
    assert "press Remove" in text

    action(row, "provision").click()
    expect(badge).to_have_text("pending attachment", timeout=60_000)
    assert_no_cli_wording(page, "pending attachment")

    deploy_and_wait(page, "succeeded")
    expect(badge).to_have_text("attached")
    expect(action(row, "remove")).to_have_attribute(
        "title", re.compile(r"press Detach, then Deploy test"))
    assert_no_cli_wording(page, "attached")

    action(row, "detach").click()
    expect(badge).to_have_text("pending detachment")
    expect(action(row, "remove")).to_have_attribute("title", re.compile(r"press Deploy test"))
    assert_no_cli_wording(page, "pending detachment")
    deploy_and_wait(page, "succeeded")
    expect(badge).to_have_text("detached")
    assert_no_cli_wording(page, "detached")


def test_pending_changes_are_shown_until_deployed(tether: Tether, page: Page,
                                                  screenshots: Path) -> None:
    """Finding 4: beside Deploy, what the next deploy will change (instances to attach and
    detach, variables added, changed, removed); gone once deployed."""
    name = "pending-changes"
    make_project(tether, name)
    open_project(page, tether, name)
    note = page.locator("#pending-test")
    row = service_row(page, "DEFAULT")
    badge = row.locator(".badge")
    # the first deploy provisions and attaches the default database, and adds Tether's variables
    expect(note).to_be_visible()
    expect(note).to_contain_text("Pending changes")
    expect(note).to_contain_text("provision and attach DEFAULT")
    deploy_and_wait(page, "succeeded")
    expect(badge).to_have_text("attached")
    expect(note).to_be_hidden()

    # detach: the note names it
    action(row, "detach").click()
    expect(badge).to_have_text("pending detachment")
    expect(note).to_be_visible()
    expect(note).to_contain_text("detach DEFAULT")
    # a variable set: added
    page.locator("#var-name-test").fill("GREETING")
    page.locator("#var-value-test").fill("hello")
    page.get_by_role("button", name="Save variable").first.click()
    expect(note).to_contain_text(re.compile(r"add variables\s+GREETING"))
    page.locator("#panel-test .panel-head").screenshot(
        path=str(screenshots / "10-pending-changes.png"))
    deploy_and_wait(page, "succeeded")
    expect(badge).to_have_text("detached")
    expect(note).to_be_hidden()

    # the variable changed, then unset: changed, then removed; attach: attach
    page.locator("#var-name-test").fill("GREETING")
    page.locator("#var-value-test").fill("bonjour")
    page.get_by_role("button", name="Save variable").first.click()
    expect(note).to_contain_text(re.compile(r"change variables\s+GREETING"))
    page.get_by_role("button", name="Unset GREETING").click()
    expect(note).to_contain_text(re.compile(r"remove variables\s+GREETING"))
    expect(note).not_to_contain_text("change variables")
    action(row, "attach").click()
    expect(badge).to_have_text("pending attachment")
    expect(note).to_contain_text("attach DEFAULT")
    deploy_and_wait(page, "succeeded")
    expect(badge).to_have_text("attached")
    expect(note).to_be_hidden()
