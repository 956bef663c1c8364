"""Routes of the Services view: the pages, and signing a browser in and out.

The pages are static shells; their scripts load every piece of data from the REST API with the
session cookie, so a page route only decides *whether* to serve the shell (signed in) or to send
the browser to the sign-in page. Signing in turns the token typed into the form into two cookies:
the token itself, HttpOnly so no script can read it, and the session's CSRF token, readable by
this origin's scripts, which send it back on every change (see `tether.api.auth`).
"""

from __future__ import annotations

import hmac
import html
import secrets
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.api.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    actor_for,
    bearer_digest,
    csrf_token,
)
from tether.errors import Unauthorized
from tether.store.db import Store

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
PAGES_DIR = WEB_DIR / "pages"

#: the cookie holding the sign-in form's token (login CSRF): only sent to the sign-in post
SIGNIN_COOKIE = "tether_signin"
SIGNIN_PATH = "/web/sign-in"
#: a sign-in or sign-out form is tiny; anything bigger is not ours
MAX_FORM_BYTES = 8 * 1024

#: Every page: scripts and styles only from Tether itself (no inline script can run, so even a
#: value that escaped escaping could not execute), never framed, forms only posted back here.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _page(name: str, status: int = 200, fill: dict[str, str] | None = None) -> HTMLResponse:
    """A page shell from `pages/`; `fill` replaces `{{key}}` markers with HTML-escaped text."""
    text = (PAGES_DIR / name).read_text()
    for key, value in (fill or {}).items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return HTMLResponse(text, status, headers=PAGE_HEADERS)


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL), so the
    sign-in page cannot be used to send users elsewhere."""
    if (not target or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 32 for c in target)):
        return "/"
    return target


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form body (no multipart dependency needed for two fields)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def web_router(store: Store, known_tokens: dict[str, str]) -> APIRouter:
    """The Services view's routes. `known_tokens` is the API's cache of token digests, shared so
    a page load costs no store query once the token has been seen."""
    router = APIRouter(include_in_schema=False)

    async def actor(token: str | None) -> str | None:
        """The token's name, or None when there is no token or it is not valid."""
        if not token:
            return None
        header = f"Bearer {token}"
        found = known_tokens.get(bearer_digest(header) or "")
        if found is not None:
            return found
        try:
            return await run_in_threadpool(actor_for, store, header, known_tokens)
        except Unauthorized:
            return None

    async def guarded(request: Request, page: str) -> Response:
        """The page for a signed-in browser; anyone else goes to the sign-in page first."""
        if await actor(request.cookies.get(SESSION_COOKIE)) is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/sign-in?next={quote(target, safe='/')}", 303,
                                    headers={"Cache-Control": "no-store"})
        return _page(page)

    def sign_in_page(request: Request, next_path: str, error: str = "",
                     status: int = 200) -> HTMLResponse:
        """The sign-in form with a fresh per-form token, kept also in a cookie that only the
        sign-in post receives: a post forged by another site has the cookie but cannot know the
        form's value, so it cannot sign a victim in to an attacker's session (login CSRF)."""
        form_token = secrets.token_urlsafe(32)
        response = _page("sign-in.html", status,
                         {"form_token": form_token, "next": next_path, "error": error})
        response.set_cookie(SIGNIN_COOKIE, form_token, max_age=3600, path=SIGNIN_PATH,
                            httponly=True, samesite="strict", secure=_secure(request))
        return response

    @router.get("/")
    async def projects_page(request: Request) -> Response:
        return await guarded(request, "projects.html")

    @router.get("/projects/{project}")
    async def project_page(request: Request, project: str) -> Response:
        return await guarded(request, "project.html")

    @router.get("/projects/{project}/{env}/services/{prefix}")
    async def instance_page(request: Request, project: str, env: str, prefix: str) -> Response:
        return await guarded(request, "instance.html")

    @router.get("/sign-in")
    async def sign_in_form(request: Request, next: str | None = None) -> Response:
        target = _safe_next(next)
        if await actor(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse(target, 303)
        return sign_in_page(request, target)

    @router.post(SIGNIN_PATH)
    async def sign_in(request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(form.get("next"))
        expected = request.cookies.get(SIGNIN_COOKIE, "")
        given = form.get("form_token", "")
        if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
            return sign_in_page(request, target, "This sign-in form has expired or was not "
                                "sent from this page: please sign in again.", 403)
        token = form.get("token", "").strip()
        if await actor(token) is None:
            return sign_in_page(request, target, "That token is not valid: use the one "
                                "tether up wrote to the CLI config (its token field).", 401)
        response = RedirectResponse(target, 303)
        secure = _secure(request)
        response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True,
                            samesite="strict", secure=secure)
        response.set_cookie(CSRF_COOKIE, csrf_token(token), path="/", httponly=False,
                            samesite="strict", secure=secure)
        response.delete_cookie(SIGNIN_COOKIE, path=SIGNIN_PATH, httponly=True,
                               samesite="strict", secure=secure)
        return response

    @router.post("/web/sign-out")
    async def sign_out(request: Request) -> Response:
        """Forget the session in this browser. Like any change, it needs the CSRF token (form
        field or header), so another site cannot sign a user out behind their back."""
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            form = await _form(request)
            given = request.headers.get(CSRF_HEADER) or form.get("csrf_token", "")
            if not hmac.compare_digest(given.encode(), csrf_token(token).encode()):
                return Response("sign-out refused: the CSRF token is missing or wrong; reload "
                                "the page and try again", 403, media_type="text/plain")
        response = RedirectResponse("/sign-in", 303)
        secure = _secure(request)
        for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
            response.delete_cookie(name, path="/", httponly=http_only, samesite="strict",
                                   secure=secure)
        return response

    return router
