"""Browser tests of the Services view: a real `tether up` (the end-to-end fixture) driven through
Debian's Chromium by Playwright. `playwright install` is never needed (nor run): the browser is
the system's, installed by scripts/servers/chromium.sh."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect, sync_playwright

from tests.e2e.conftest import ROOT, Tether, tether  # noqa: F401 - the fixture, reused as is

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: where a signed-out browser is sent: the sign-in page, to come back afterwards
SIGN_IN_URL = re.compile(r"/sign-in\?next=/")
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Live updates poll every second and deployments start a real app: give assertions time.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed: run scripts/servers/chromium.sh "
                    "(Debian's `chromium`; never `playwright install`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the run saves its screenshots: $TETHER_SCREENSHOTS, else build/screenshots."""
    folder = Path(os.environ.get("TETHER_SCREENSHOTS") or ROOT / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def context(browser: Browser, tether: Tether) -> Iterator[BrowserContext]:  # noqa: F811
    """A fresh browser profile (no cookies) aimed at the test's `tether up`."""
    ctx = browser.new_context(base_url=tether.url, viewport=LAPTOP)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails the test on any script error or any alert/confirm/prompt (which only
    injected markup could open: the Services view never uses them)."""
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", on_dialog)
    yield page
    assert errors == [], f"script errors on the page: {errors}"
    assert dialogs == [], f"unexpected dialogs (injected script?): {dialogs}"


def sign_in(page: Page, t: Tether, screenshot: Path | None = None) -> None:
    """Sign in through the form, as a user would, with the token the CLI config holds."""
    page.goto("/")
    page.wait_for_url(SIGN_IN_URL)
    if screenshot is not None:
        page.screenshot(path=str(screenshot))
    page.get_by_label("Access token").fill(t.token())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(t.url + "/")
