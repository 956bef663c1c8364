"""The project page's findings of issue 13 in a real browser against a shared `tether up`:
application settings edited in the page, and deploys refused without an application command
(finding 3); deployments listed, paged and opened, the running release's log, and the
environment's activity (finding 5); removal progress, actions held during a deploy, state
tooltips, a fresh "running release" and a toast clear of the tables (finding 8)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ROOT, Tether
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

    # now the deploy starts the application, which answers at the stable address
    deploy_and_wait(page, "succeeded")
    url = page.locator("#panel-test .panel-head a").get_attribute("href")
    assert url
    assert page.request.get(url + "/health").ok
    expect(service_row(page, "DEFAULT")).to_have_count(0)
    expect(page.locator("#panel-test .deploy-live .log")).to_contain_text(
        re.compile(r"starting release \d+"))
