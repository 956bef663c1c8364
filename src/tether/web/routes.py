"""Routes of the Services view: the pages, and signing a browser in and out.

The pages are static shells; their scripts load every piece of data from the REST API with the
session cookie, so a page route only decides *whether* to serve the shell (signed in) or to send
the browser to the sign-in page. Signing in with a token makes a server-side session
(`tether.api.auth`): the browser gets its random id in an HttpOnly cookie, never the token; each
page shell carries the session's CSRF token in a `<meta>` element, which its scripts send back on
every change. No cookie holds it, so a page of another origin on this host (cookies ignore ports)
cannot read it. Repeated failed sign-ins from one address are slowed down.
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
    CSRF_HEADER,
    SESSION_COOKIE,
    SignedIn,
    SignInThrottle,
    create_session,
    csrf_token,
    end_session,
    session_for,
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


def _client(request: Request) -> str:
    """Where a browser signs in from, as the list of sessions shows it."""
    address = request.client.host if request.client else "?"
    agent = request.headers.get("user-agent", "")[:150]
    return f"{address} {agent}".strip()


def web_router(store: Store, throttle: SignInThrottle) -> APIRouter:
    """The Services view's routes."""
    router = APIRouter(include_in_schema=False)

    async def signed_in(secret: str | None) -> SignedIn | None:
        """The browser's live session, or None (no cookie, or a session that is over)."""
        if not secret:
            return None
        try:
            return await run_in_threadpool(session_for, store, secret)
        except Unauthorized:
            return None

    async def guarded(request: Request, page: str) -> Response:
        """The page for a signed-in browser, carrying its session's CSRF token; anyone else
        goes to the sign-in page first."""
        secret = request.cookies.get(SESSION_COOKIE)
        if secret is None or await signed_in(secret) is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/sign-in?next={quote(target, safe='/')}", 303,
                                    headers={"Cache-Control": "no-store"})
        return _page(page, fill={"csrf": csrf_token(secret)})

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

    @router.get("/sessions")
    async def sessions_page(request: Request) -> Response:
        return await guarded(request, "sessions.html")

    @router.get("/sign-in")
    async def sign_in_form(request: Request, next: str | None = None) -> Response:
        target = _safe_next(next)
        if await signed_in(request.cookies.get(SESSION_COOKIE)) is not None:
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
        address = request.client.host if request.client else "?"
        wait = throttle.wait_left(address)
        if wait > 0:
            response = sign_in_page(request, target, f"Too many failed sign-ins from this "
                                    f"address: try again in {int(wait) + 1} s.", 429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        token = form.get("token", "").strip()
        try:
            secret = await run_in_threadpool(create_session, store, token, _client(request))
        except Unauthorized as exc:
            throttle.failed(address)
            message = exc.message if "revoked" in exc.message or "expired" in exc.message else (
                "That token is not valid: use the one tether up wrote to the CLI config (its "
                "token field), or one an admin made with tether token create.")
            return sign_in_page(request, target, message, 401)
        throttle.succeeded(address)
        response = RedirectResponse(target, 303)
        secure = _secure(request)
        response.set_cookie(SESSION_COOKIE, secret, path="/", httponly=True,
                            samesite="strict", secure=secure)
        response.delete_cookie(SIGNIN_COOKIE, path=SIGNIN_PATH, httponly=True,
                               samesite="strict", secure=secure)
        return response

    @router.post("/web/sign-out")
    async def sign_out(request: Request) -> Response:
        """End the session: revoked in the store (a copied cookie is worthless from now on) and
        forgotten by this browser. Like any change, it needs the CSRF token (form field or
        header), so another site cannot sign a user out behind their back."""
        secret = request.cookies.get(SESSION_COOKIE)
        if secret:
            form = await _form(request)
            given = request.headers.get(CSRF_HEADER) or form.get("csrf_token", "")
            if not hmac.compare_digest(given.encode(), csrf_token(secret).encode()):
                return Response("sign-out refused: the CSRF token is missing or wrong; reload "
                                "the page and try again", 403, media_type="text/plain")
            await run_in_threadpool(end_session, store, secret)
        response = RedirectResponse("/sign-in", 303)
        secure = _secure(request)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=secure)
        # the readable CSRF cookie of earlier versions: gone from browsers that still have it
        response.delete_cookie("tether_csrf", path="/", samesite="strict", secure=secure)
        return response

    return router
