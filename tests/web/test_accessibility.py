"""Accessibility checked by a machine (issue 13): axe-core runs on every page of the Services
view with data on it — sign-in (also with its error), projects (with the new-project form open),
a project's environments after a deployment (the remove dialog open too), a service's page,
sessions, the operators' clusters (register form open), regions and tokens (revoke dialog
open) pages, and the page a developer is refused on — at a laptop's and a phone's width: no
serious or critical violation."""

from __future__ import annotations

import sys

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ROOT, Tether
from tests.web.axe import assert_accessible
from tests.web.conftest import PHONE, SIGN_IN_URL, sign_in

pytestmark = pytest.mark.web

APP = f"{sys.executable} examples/hello/app.py"
PROJECT = "a11yshop"


@pytest.fixture(scope="module")
def project(tether: Tether) -> str:
    """A project with data on every page: the example app deployed to test with its DEFAULT
    database and a media storage, a custom variable, a backup, and changes waiting for the next
    deploy (a detachment, a new service)."""
    t = tether
    t.ok("project", "create", PROJECT, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT))
    t.ok("service", "add", "test", "local-media", "--prefix", "MEDIA", "-p", PROJECT)
    t.ok("project", "env-vars", "-e", "test", "--set", "GREETING", "hello", "-p", PROJECT)
    t.ok("deploy", "test", "-p", PROJECT)
    t.ok("backup", "create", "test", "MEDIA", "-p", PROJECT)  # rows on the Backups pages
    t.ok("service", "detach", "test", "MEDIA", "-p", PROJECT)
    t.ok("service", "add", "test", "local-media", "--prefix", "SPARE", "-p", PROJECT)
    return PROJECT


def loaded(page: Page) -> None:
    """The page's data is in: nothing is marked busy any more."""
    expect(page.locator("[aria-busy='true']")).to_have_count(0)


def visit_every_page(page: Page, t: Tether, project: str, width: str) -> None:
    page.goto("/sign-in")
    assert_accessible(page, f"the sign-in page ({width})")
    page.get_by_label("Access token").fill("tth_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).not_to_be_empty()
    assert_accessible(page, f"the sign-in page with its error ({width})")

    sign_in(page, t)
    loaded(page)
    page.locator("#new-project summary").click()
    expect(page.locator("#project-region option")).not_to_have_count(0)
    assert_accessible(page, f"the projects page ({width})")

    page.goto(f"/projects/{project}")
    loaded(page)
    expect(page.locator("#panel-test tr[data-prefix='MEDIA']")).to_be_visible()
    expect(page.locator("#panel-test tr[data-prefix='DEFAULT']")).to_be_visible()
    assert_accessible(page, f"the project page, environment test ({width})")
    page.locator("#panel-test tr[data-prefix='SPARE'] button[data-action='remove']").click()
    expect(page.locator("dialog")).to_be_visible()
    assert_accessible(page, f"the remove dialog ({width})")
    page.locator("dialog").get_by_role("button", name="Cancel").click()
    page.get_by_role("tab", name="live").click()
    loaded(page)
    assert_accessible(page, f"the project page, environment live ({width})")

    page.goto(f"/projects/{project}/test/services/DEFAULT")
    loaded(page)
    expect(page.locator("#instance")).to_contain_text("attached")
    assert_accessible(page, f"a service's page ({width})")

    page.goto("/sessions")
    loaded(page)
    assert_accessible(page, f"the sessions page ({width})")

    page.goto("/clusters")
    loaded(page)
    expect(page.locator("td.health")).not_to_have_count(0)
    expect(page.locator("td.health[data-health='checking']")).to_have_count(0)
    page.get_by_text("Register a cluster").click()
    page.get_by_role("button", name="Register cluster").click()  # empty: the form's own error
    expect(page.locator("#cluster-error")).not_to_be_empty()
    assert_accessible(page, f"the clusters page ({width})")

    page.goto("/regions")
    loaded(page)
    expect(page.locator("section[data-region='local']")).to_be_visible()
    assert_accessible(page, f"the regions page ({width})")

    page.goto("/backups")
    loaded(page)
    page.get_by_label("Show running and failed backups too").check()
    loaded(page)
    assert_accessible(page, f"the backups page ({width})")

    page.goto("/tokens")
    loaded(page)
    page.get_by_label("Show revoked tokens too").check()
    expect(page.locator("tr[data-token]")).not_to_have_count(0)
    assert_accessible(page, f"the tokens page ({width})")
    page.locator("tr[data-token] button[data-revoke]").first.click()
    expect(page.locator("dialog")).to_be_visible()
    assert_accessible(page, f"the revoke dialog ({width})")
    page.locator("dialog").get_by_role("button", name="Cancel").click()


def test_every_page_has_no_serious_violation(tether: Tether, project: str, page: Page) -> None:
    visit_every_page(page, tether, project, "laptop")


def test_every_page_has_no_serious_violation_on_a_phone(tether: Tether, project: str,
                                                        page: Page) -> None:
    page.set_viewport_size(PHONE)
    visit_every_page(page, tether, project, "phone")


def test_the_refused_operators_page_has_no_serious_violation(tether: Tether,
                                                             page: Page) -> None:
    secret = tether.ok("token", "create", "a11y-dev", "--role", "developer",
                       "--json").json()["token"]
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    page.get_by_label("Access token").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(tether.url + "/")
    page.goto("/clusters")
    expect(page.get_by_role("alert")).to_contain_text("Operators only")
    assert_accessible(page, "the clusters page refused to a developer")


def test_the_check_finds_what_it_must(tether: Tether, page: Page) -> None:
    """The helper itself: an unlabelled field and grey-on-white text are found and fail."""
    page.goto("/sign-in")
    page.evaluate("""() => {
        const form = document.getElementById('sign-in-form');
        form.append(Object.assign(document.createElement('input'), { id: 'nolabel' }));
        const faint = Object.assign(document.createElement('p'), { textContent: 'faint' });
        faint.style.color = '#dddddd';
        form.append(faint);
    }""")
    with pytest.raises(AssertionError) as failed:
        assert_accessible(page, "a page broken on purpose")
    said = str(failed.value)
    assert "critical label" in said and "#nolabel" in said, said
    assert "serious color-contrast" in said, said
