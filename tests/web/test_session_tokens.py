"""The pure parts of browser sessions: where sign-in may send a browser, and that a CSRF token
belongs to one session only."""

from __future__ import annotations

import pytest

from tether.api.auth import CsrfRefused, check_csrf, csrf_token
from tether.web.routes import _safe_next


@pytest.mark.parametrize("target", ["/", "/projects/shop", "/projects/shop?env=live"])
def test_sign_in_returns_to_a_page_of_this_site(target: str) -> None:
    assert _safe_next(target) == target


@pytest.mark.parametrize("target", [None, "", "https://evil.example/", "//evil.example/x",
                                    "/\\evil.example", "projects", "/x\r\nSet-Cookie: a=b"])
def test_sign_in_never_sends_a_browser_elsewhere(target: str | None) -> None:
    assert _safe_next(target) == "/"


def test_a_csrf_token_belongs_to_its_session_only() -> None:
    mine, other = "tth_" + "a" * 43, "tth_" + "b" * 43
    assert csrf_token(mine) == csrf_token(mine)  # stable: survives restarts, any node
    assert csrf_token(mine) != csrf_token(other)
    assert mine not in csrf_token(mine)
    check_csrf(mine, csrf_token(mine))
    for presented in (None, "", csrf_token(other), csrf_token(mine)[:-1]):
        with pytest.raises(CsrfRefused) as refused:
            check_csrf(mine, presented)
        assert refused.value.status == 403
