"""The operators' pages (issue 13, finding 9), in a real browser against a real `tether up`:
an admin sees the clusters with their kind, region, version, visibility, reachability and how
many instances each holds, registers one through the same API call as `tether cluster add`
(a bad URL refused with the CLI's own message), and sees what each region offers; a developer
token gets no link to them, and is refused on them with a clear message. The registration
also by keyboard only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.conftest import Tether
from tests.web.conftest import SIGN_IN_URL, sign_in

pytestmark = pytest.mark.web

PROJECT = "opsshop"
BAD_URL = "postgres://admin:secret@127.0.0.1:9/postgres"


def one_line(text: str) -> str:
    return " ".join(text.split())


def sign_in_with(page: Page, t: Tether, token: str) -> None:
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(t.url + "/")


def test_an_admin_sees_clusters_registers_one_and_reads_the_regions(
        tether: Tether, page: Page, tmp_path: Path) -> None:
    t = tether
    t.ok("project", "create", PROJECT)
    t.ok("service", "provision", "test", "DEFAULT", "-p", PROJECT)  # on the embedded PostgreSQL
    embedded = next(c for c in t.ok("cluster", "list", "--json").json() if c["kind"] == "postgres")

    sign_in(page, t)
    operators = page.locator("header").get_by_role("link", name="Operators")
    expect(operators).to_be_visible()
    operators.click()
    page.wait_for_url(t.url + "/clusters")
    row = page.locator(f"tr[data-cluster='{embedded['name']}']")
    expect(row).to_contain_text("postgres")
    expect(row).to_contain_text(embedded["version"])
    expect(row).to_contain_text("shared")
    expect(row.locator("td.count")).to_have_text("1")
    expect(row.locator("td.health")).to_contain_text("reachable")
    expect(row.locator("td.health")).not_to_contain_text("unreachable")

    # a bad URL: refused with exactly what `tether cluster add` says
    cli = t.cli("cluster", "add", "postgres", "--region", "local", "--url", BAD_URL)
    assert cli.code == 2, (cli.out, cli.err)
    page.get_by_text("Register a cluster").click()
    page.get_by_label("Kind").select_option("postgres")
    page.get_by_label("Region", exact=True).fill("local")
    page.get_by_label("Admin URL").fill(BAD_URL)
    page.get_by_role("button", name="Register cluster").click()
    error = page.locator("#cluster-error")
    expect(error).to_contain_text("cannot use this postgres cluster")
    said = one_line(error.inner_text())
    assert said in one_line(cli.err), (said, cli.err)
    assert "secret" not in said
    expect(page.locator("tr[data-cluster]")).to_have_count(
        len(t.ok("cluster", "list", "--json").json()))

    # a real one: a local-files storage in a directory of this test
    media = tmp_path / "ops-media"
    page.get_by_label("Kind").select_option("local-files")
    expect(page.locator("#cluster-settings-help")).to_contain_text("base_dir")
    page.get_by_label("Admin URL").fill(f"file://{media}")
    page.get_by_label("Name (optional)").fill("ops-files")
    page.get_by_label("Settings (optional)").fill(
        f"base_dir={media}\npublic_url=http://127.0.0.1:1/media/")
    page.get_by_role("button", name="Register cluster").click()
    expect(page.locator(".notice.success")).to_contain_text("Added cluster ops-files")
    added = page.locator("tr[data-cluster='ops-files']")
    expect(added).to_contain_text("local-files")
    expect(added.locator("td.count")).to_have_text("0")
    expect(added.locator("td.health")).to_contain_text("reachable")
    expect(added.locator("th")).to_be_focused()
    expect(page.locator("#cluster-error")).to_have_text("")
    # the same name again: the CLI's refusal, its option named as this form's field
    page.get_by_label("Admin URL").fill(f"file://{media}")
    page.get_by_label("Name (optional)").fill("ops-files")
    page.get_by_label("Settings (optional)").fill(
        f"base_dir={media}\npublic_url=http://127.0.0.1:1/media/")
    page.get_by_role("button", name="Register cluster").click()
    expect(page.locator("#cluster-error")).to_have_text(
        "a cluster named ops-files exists already: pick another Name")
    page.get_by_label("Settings (optional)").fill("base_dir")
    page.get_by_role("button", name="Register cluster").click()
    expect(page.locator("#cluster-error")).to_contain_text(
        "invalid setting \"base_dir\": use KEY=VALUE")
    expect(page.get_by_label("Settings (optional)")).to_be_focused()
    listed = {c["name"]: c for c in t.ok("cluster", "list", "--json").json()}
    assert listed["ops-files"]["kind"] == "local-files" and listed["ops-files"]["region"] == "local"
    assert listed[embedded["name"]]["instances"] == 1

    # the regions and what each offers
    page.get_by_role("navigation", name="Operators' pages").get_by_role(
        "link", name="Regions").click()
    page.wait_for_url(t.url + "/regions")
    local = page.locator("section[data-region='local']")
    expect(local).to_contain_text("local family")
    expect(local).to_contain_text("ops-files")
    offers = [o["service"] for o in t.ok("service", "catalog", "--region", "local",
                                         "--json").json()]
    assert any(o.startswith("postgres-") for o in offers) and "local-media" in offers
    for service in offers:
        expect(local.locator(f"tr[data-service='{service}']")).to_be_visible()


def test_an_admin_sees_the_tokens_and_revokes_one(tether: Tether, page: Page) -> None:
    t = tether
    secret = t.ok("token", "create", "leaver", "--role", "viewer", "--owner", "lee",
                  "--json").json()["token"]
    sign_in(page, t)
    page.goto("/tokens")
    mine = page.locator("tr[data-token]:has(.chip)")  # the token this browser signed in with
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("admin")
    row = page.locator("tr[data-token='leaver']")
    expect(row).to_contain_text("lee")
    expect(row).to_contain_text("viewer")
    expect(row).to_contain_text("active")

    row.get_by_role("button", name="Revoke leaver").click()
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("Revoke the token leaver?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(row).to_contain_text("active")  # nothing done
    expect(row.get_by_role("button", name="Revoke leaver")).to_be_focused()

    row.get_by_role("button", name="Revoke leaver").click()
    page.keyboard.press("Enter")  # the dialog's default button revokes
    expect(page.locator(".notice.success")).to_contain_text("Token leaver revoked")
    expect(row).to_have_count(0)
    expect(page.locator("tr[data-token] button[data-revoke]").first).to_be_focused()
    status = httpx.get(t.url + "/api/v1/status", headers={"Authorization": f"Bearer {secret}"})
    assert status.status_code == 401, status.text

    page.get_by_label("Show revoked tokens too").check()
    expect(page.locator("tr[data-token='leaver']")).to_contain_text("revoked")
    expect(page.locator("tr[data-token='leaver'] button")).to_have_count(0)


def test_an_admin_sees_every_projects_backups(tether: Tether, page: Page) -> None:
    """The operators' Backups page (issue 13: "backups once that work adds them"): every
    project's backups in one list, each linked to its project."""
    t = tether
    t.ok("project", "create", "bkshop", "--no-database")
    t.ok("service", "add", "test", "local-media", "--prefix", "FILES", "--provision",
         "-p", "bkshop")
    made = t.ok("backup", "create", "test", "-p", "bkshop", "--json").json()
    sign_in(page, t)
    page.goto("/clusters")
    page.locator("#operator-nav").get_by_role("link", name="Backups").click()
    page.wait_for_url(t.url + "/backups")
    row = page.locator(f"tr[data-backup='{made['id']}']")
    expect(row).to_contain_text("bkshop / test")
    expect(row).to_contain_text("FILES")
    expect(row).to_contain_text("not verified")
    expect(row).to_contain_text("on demand")
    page.get_by_label("Show running and failed backups too").check()
    # the list is fetched again and replaced: a click on the row of the list before can be lost
    # with it (seen on a fast machine), so the new list first
    expect(page.locator("#backups")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator(f"tr[data-backup='{made['id']}']")).to_be_visible()
    page.locator(f"tr[data-backup='{made['id']}']").get_by_role("link",
                                                                 name="bkshop / test").click()
    page.wait_for_url(t.url + "/projects/bkshop")


def test_a_developer_token_is_refused_on_the_operators_pages(
        tether: Tether, context: BrowserContext, page: Page) -> None:
    t = tether
    secret = t.ok("token", "create", "dev-ops", "--role", "developer", "--json").json()["token"]
    sign_in_with(page, t, secret)
    expect(page.locator("#projects")).not_to_have_attribute("aria-busy", "true")
    page.wait_for_timeout(300)  # the link would have been shown by now
    expect(page.locator("header .operators-link")).to_be_hidden()
    for path in ("/clusters", "/regions", "/backups", "/tokens"):
        page.goto(path)
        refused = page.get_by_role("alert")
        expect(refused).to_contain_text("Operators only")
        expect(refused).to_contain_text("needs an admin token")
        expect(refused).to_contain_text("dev-ops (developer)")
        expect(page.locator("table")).to_have_count(0)
        expect(page.locator("#cluster-form")).to_have_count(0)


def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Press Tab until the element matching `selector` has focus (as a keyboard user would)."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_a_cluster_is_registered_with_the_keyboard_only(tether: Tether, page: Page,
                                                        tmp_path: Path) -> None:
    t = tether
    media = tmp_path / "keyboard-media"
    sign_in(page, t)
    page.goto("/clusters")
    expect(page.locator("td.health")).not_to_have_count(0)
    tab_to(page, "#register-cluster summary")
    page.keyboard.press("Enter")
    tab_to(page, "#cluster-kind")
    page.keyboard.type("local-files")  # a select picks the option typed
    expect(page.locator("#cluster-kind")).to_have_value("local-files")
    page.keyboard.press("Tab")
    expect(page.locator("#cluster-region")).to_be_focused()  # prefilled: local
    tab_to(page, "#cluster-url")
    page.keyboard.type(f"file://{media}")
    page.keyboard.press("Tab")
    page.keyboard.type("keyboard-files")
    page.keyboard.press("Tab")
    page.keyboard.type(f"base_dir={media}")
    page.keyboard.press("Enter")  # a new line in the settings
    page.keyboard.type("public_url=http://127.0.0.1:1/media/")
    tab_to(page, "#cluster-form button[type=submit]")
    page.keyboard.press("Enter")
    row = page.locator("tr[data-cluster='keyboard-files']")
    expect(row).to_contain_text("local-files")
    expect(row.locator("th")).to_be_focused()  # focus on what was made, not lost to the body
    expect(row.locator("td.health")).to_contain_text("reachable")
