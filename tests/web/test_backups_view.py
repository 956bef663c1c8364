"""Backups in the Services view (issue 10), in a real browser against a real `tether up` (the
embedded PostgreSQL, backups kept on the embedded local-files storage): back up an environment
from its page with verification and see it listed with the result, download the file (a plain
`pg_dump -Fc` archive, fetched with the session header: no cookie), restore it with the typed
confirmation (wrong text refused, Enter confirms), set and turn off the schedule; on the
instance's page, its backups and a copy from another environment, typed-confirmed too."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import Tether
from tests.web.conftest import sign_in

pytestmark = pytest.mark.web

PROJECT = "bkweb"


def api(t: Tether, method: str, path: str, **kwargs: object) -> httpx.Response:
    """The REST API as the CLI calls it, to set up and to check what the browser did."""
    return httpx.request(method, t.url + "/api/v1" + path, timeout=30,
                         headers={"Authorization": f"Bearer {t.token()}"}, **kwargs)  # type: ignore[arg-type]


def provisioned_dsn(t: Tether, env: str) -> str:
    """Add a PostgreSQL service DEFAULT to `env`, provisioned at once; its DSN once it has one."""
    catalog = api(t, "GET", f"/catalog?project={PROJECT}").json()
    postgres = next(o["service"] for o in catalog if o["service"].startswith("postgres"))
    api(t, "POST", f"/projects/{PROJECT}/environments/{env}/services",
        json={"service": postgres, "prefix": "DEFAULT", "provision": True}).raise_for_status()
    path = f"/projects/{PROJECT}/environments/{env}/services/DEFAULT"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = api(t, "GET", path, params={"reveal": "true"}).json()
        if shown["state"] == "pending attachment":
            return str(shown["variables"]["DEFAULT_DATABASE_DSN"])
        assert shown["state"] in ("new", "provisioning"), shown
        time.sleep(0.3)
    raise AssertionError(f"DEFAULT in {env} was not provisioned: {shown}")


def rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM fruit ORDER BY name")]


def confirm_typed(page: Page, button: str) -> Locator:
    """The typed-confirmation dialog: its button is disabled, and Enter does nothing, until the
    prefix is typed exactly; then Enter confirms (it never cancels)."""
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("now is lost")
    confirm = dialog.get_by_role("button", name=button, exact=True)
    field = dialog.get_by_label("Type DEFAULT to confirm")
    expect(confirm).to_be_disabled()
    field.fill("DEFAUL")
    field.press("Enter")
    expect(dialog).to_be_visible()
    expect(confirm).to_be_disabled()
    field.fill("DEFAULT")
    expect(confirm).to_be_enabled()
    field.press("Enter")
    expect(dialog).to_have_count(0)
    return dialog


def test_back_up_verify_download_restore_schedule_copy(tether: Tether, page: Page,
                                                       tmp_path: Path,
                                                       screenshots: Path) -> None:
    tether.ok("project", "create", PROJECT, "--no-database")
    test_dsn, live_dsn = provisioned_dsn(tether, "test"), provisioned_dsn(tether, "live")
    with psycopg.connect(test_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fruit (name text)")
        conn.execute("INSERT INTO fruit VALUES ('apple'), ('pear'), ('plum')")
    with psycopg.connect(live_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fruit (name text)")
        conn.execute("INSERT INTO fruit VALUES ('live-only')")

    sign_in(page, tether)
    page.goto(f"/projects/{PROJECT}?env=test")
    section = page.locator("#backups-test")
    expect(section.locator(".empty")).to_contain_text("No backup of test yet")
    expect(section.locator(".last-verification")).to_contain_text("was verified yet")
    expect(section.locator(".schedule-text")).to_contain_text("No schedule")

    # back up now, verified: the operation's progress, then the backup listed with its result
    section.get_by_label("verify", exact=True).check()
    section.get_by_role("button", name="Back up now").click()
    live = section.locator(".backup-live")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(live.locator(".result")).to_contain_text("verified")
    made = api(tether, "GET", f"/projects/{PROJECT}/backups", params={"env": "test"}).json()
    assert len(made) == 1 and made[0]["verification"] == "passed", made
    backup_id = made[0]["id"]
    row = section.locator(f"tr[data-id='{backup_id}']")
    expect(row).to_contain_text("DEFAULT")
    expect(row).to_contain_text("on demand")
    expect(row.locator("[data-verification]")).to_have_text("passed")
    expect(section.locator(".last-verification")).to_contain_text("Last verification: passed")
    page.screenshot(path=str(screenshots / "20-backups-listed.png"), full_page=True)

    # download: a link to the route, fetched with the session header (no cookie): pg_dump -Fc
    link = row.get_by_role("link", name=f"Download DEFAULT of backup #{backup_id}")
    expect(link).to_have_attribute("href", f"/api/v1/backups/{backup_id}/download?prefix=DEFAULT")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == f"{PROJECT}-test-DEFAULT-{backup_id}.dump"
    saved = tmp_path / "test.dump"
    download.save_as(saved)
    assert saved.read_bytes()[:5] == b"PGDMP"
    assert page.context.cookies() == []

    # restore with the typed confirmation: the data as it was backed up
    with psycopg.connect(test_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM fruit WHERE name <> 'apple'")
        conn.execute("INSERT INTO fruit VALUES ('not backed up')")
    row.get_by_role("button", name=f"Restore DEFAULT from backup #{backup_id}").click()
    expect(page.locator("dialog")).to_contain_text("replaces all data of DEFAULT in test")
    page.screenshot(path=str(screenshots / "21-restore-dialog.png"))
    confirm_typed(page, "Restore")
    expect(live.locator(".result")).to_contain_text(
        f"Restore of DEFAULT in test from backup #{backup_id}: done", timeout=60_000)
    expect(live).to_have_attribute("data-status", "succeeded")
    assert rows(test_dsn) == ["apple", "pear", "plum"]

    # the schedule: set (time and retention), shown, turned off
    section.get_by_label("Daily at (UTC)").fill("04:15")
    section.get_by_label("Keep daily").fill("3")
    section.get_by_label("Keep monthly").fill("6")
    section.get_by_role("button", name="Save schedule").click()
    expect(section.locator(".schedule-text")).to_contain_text(
        "Daily at 04:15 UTC, keeping 3 daily, 4 weekly and 6 monthly")
    schedule = api(tether, "GET", f"/projects/{PROJECT}/environments/test/backup-schedule").json()
    assert (schedule["enabled"], schedule["at"], schedule["keep_daily"],
            schedule["keep_monthly"]) == (True, "04:15", 3, 6)
    page.reload()  # shown as Tether has it, not as typed
    expect(section.locator(".schedule-text")).to_contain_text("Daily at 04:15 UTC")
    section.get_by_role("button", name="Turn off").click()
    expect(section.locator(".schedule-text")).to_contain_text("No schedule")
    assert api(tether, "GET", f"/projects/{PROJECT}/environments/test/backup-schedule"
               ).json()["enabled"] is False

    # the instance's page: its backups, and a copy from live with the typed confirmation
    page.goto(f"/projects/{PROJECT}/test/services/DEFAULT")
    mine = page.locator("#backups")
    expect(mine.locator(f"tr[data-id='{backup_id}']")).to_contain_text("passed")
    mine.locator("#copy summary").click()
    mine.get_by_label("Copy from environment").select_option("live")
    mine.get_by_role("button", name="Copy…").click()
    expect(page.locator("dialog")).to_contain_text("DEFAULT in live")
    confirm_typed(page, "Copy")
    result = mine.locator(".backup-live .result")
    expect(result).to_contain_text("Copy of DEFAULT from live: done", timeout=60_000)
    assert rows(test_dsn) == ["live-only"]
    # the copy's backup (of live) is listed among those holding DEFAULT
    expect(mine.locator("tbody tr")).to_have_count(2)
    expect(mine.locator("tbody tr").first).to_contain_text("live")
    page.screenshot(path=str(screenshots / "22-instance-backups.png"), full_page=True)

    # the remove dialog keeps to the same rule: Enter in the typed field confirms (Cancel is
    # not the form's default button); before, Enter pressed Cancel and nothing was removed
    page.goto(f"/projects/{PROJECT}?env=live")
    removed = page.locator("#panel-live tr[data-prefix='DEFAULT']")
    removed.locator("button[data-action='remove']").click()
    field = page.locator("dialog").get_by_label("Type DEFAULT to confirm")
    field.fill("DEFAULT")
    field.press("Enter")
    expect(page.locator("dialog")).to_have_count(0)
    expect(removed).to_have_count(0, timeout=60_000)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(live_dsn, connect_timeout=5).close()
