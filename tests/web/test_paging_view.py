"""The Services view sees every row of a paged list (issue 12): the API answers a list one page
at a time (100 rows unless asked otherwise), and the pages' `api('GET', …)` follows the `Link`
headers when it names no limit — here the Sessions page with more sessions than a page."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Tether
from tests.web.conftest import sign_in

pytestmark = pytest.mark.web


def test_the_sessions_page_lists_more_than_a_page(tether: Tether, page: Page) -> None:
    with httpx.Client(base_url=tether.url + "/api/v1", timeout=10) as client:
        for n in range(104):
            made = client.post("/sessions", json={"token": tether.token()},
                               headers={"User-Agent": f"script {n}"})
            assert made.status_code == 201, made.text
        first = client.get("/sessions", headers={"Authorization": f"Bearer {tether.token()}"})
        assert len(first.json()) == 100 and "next" in first.links  # the API pages
    sign_in(page, tether)
    page.goto("/sessions")
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(105)  # the scripts' 104 and this browser's
    expect(rows.filter(has_text="this browser")).to_have_count(1)
    expect(rows.filter(has_text="script 103")).to_have_count(1)
