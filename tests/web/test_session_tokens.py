"""The pure part of signing in: where the sign-in page may send a browser afterwards."""

from __future__ import annotations

import pytest

from tether.web.routes import _safe_next


@pytest.mark.parametrize("target", ["/", "/projects/shop", "/projects/shop?env=live"])
def test_sign_in_returns_to_a_page_of_this_site(target: str) -> None:
    assert _safe_next(target) == target


@pytest.mark.parametrize("target", [None, "", "https://evil.example/", "//evil.example/x",
                                    "/\\evil.example", "projects", "/x\r\nSet-Cookie: a=b"])
def test_sign_in_never_sends_a_browser_elsewhere(target: str | None) -> None:
    assert _safe_next(target) == "/"
