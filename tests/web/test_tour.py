"""The screenshot tour linked from the README: the main story in a real browser against a real
`tether up`, a picture at each step (1280x800). With TETHER_TOUR=1 it writes them to docs/tour/
(to be committed); otherwise to build/tour/, so the normal suite never rewrites the docs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ROOT, Tether
from tests.web.conftest import sign_in

pytestmark = pytest.mark.web

APP = "python examples/hello/app.py"  # the venv's python: first on tether up's PATH
PROJECT = "shop"
VIEWPORT = {"width": 1280, "height": 800}


def tour_dir() -> Path:
    folder = ROOT / ("docs" if os.environ.get("TETHER_TOUR") == "1" else "build") / "tour"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_screenshot_tour(tether: Tether, page: Page) -> None:
    t = tether
    shots = tour_dir()
    t.ok("project", "create", PROJECT, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT))
    page.set_viewport_size(VIEWPORT)

    def shot(name: str) -> None:
        for close in page.locator(".notice .close").all():  # no toast over the picture
            close.click()
        page.wait_for_timeout(200)  # transitions and focus rings settled
        page.screenshot(path=str(shots / f"{name}.png"))

    sign_in(page, t, shots / "01-sign-in.png")
    expect(page.get_by_role("link", name=PROJECT)).to_be_visible()
    shot("02-projects")

    # the project: its DEFAULT database, and a media storage added with a free prefix
    page.get_by_role("link", name=PROJECT).click()
    expect(page.locator("#panel-test tr[data-prefix='DEFAULT']")).to_be_visible()
    page.locator("#add-test summary").click()
    page.locator("#add-service-test").select_option("local-media")
    expect(page.locator("#add-prefix-test")).to_have_value("MEDIA")
    page.locator("#add-test").scroll_into_view_if_needed()
    shot("03-add-service")
    page.locator("#add-test button[type=submit]").click()
    expect(page.locator("#panel-test tr[data-prefix='MEDIA']")).to_be_visible()
    expect(page.locator("#panel-test .pending-changes")).to_contain_text("MEDIA")
    page.evaluate("window.scrollTo(0, 0)")
    shot("04-pending-changes")

    # deploy: live progress and log until the app serves
    page.locator("#deploy-test").click()
    live = page.locator("#panel-test .deploy-live")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=90_000)
    expect(page.locator("#panel-test tr[data-prefix='MEDIA'] .badge").first).to_have_text(
        "attached")
    live.scroll_into_view_if_needed()
    shot("05-deployed")

    # a service's own page: what each action would do, its variables, its history
    page.goto(f"/projects/{PROJECT}/test/services/DEFAULT")
    expect(page.locator("#instance-title")).to_contain_text("DEFAULT")
    expect(page.locator("table.history")).to_contain_text("provisioned")
    shot("06-service")

    # the operators' pages
    page.goto("/clusters")
    expect(page.locator("td.health")).not_to_have_count(0)
    expect(page.locator("td.health[data-health='checking']")).to_have_count(0)
    shot("07-clusters")
    page.goto("/regions")
    expect(page.locator("section[data-region='local']")).to_be_visible()
    shot("08-regions")

    for name in ("01-sign-in", "02-projects", "03-add-service", "04-pending-changes",
                 "05-deployed", "06-service", "07-clusters", "08-regions"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
