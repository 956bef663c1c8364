"""Routes of the Services view: its pages.

The pages are static shells holding no data: their scripts load everything from the REST API
with the browser's *session* as a bearer token, kept in this origin's localStorage (see
`static/js/api.js`). A page without a session sends the browser to the sign-in page before it
asks for anything. The sign-in page trades the token typed into its form for a session
(`POST /api/v1/sessions`, `tether.api.auth`).

No cookie is used at all. Cookies ignore ports: every application Tether runs on this host, and
the media origin, is "same-site" with the control plane, so a session cookie would reach each of
them (through the stable address's proxy, to the app's server) and come with any request they
forge. A header that only these pages' scripts add reaches nobody else.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
PAGES_DIR = WEB_DIR / "pages"

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
    sign-in page cannot be used to send users elsewhere (its script checks it again)."""
    if (not target or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 32 for c in target)):
        return "/"
    return target


def web_router() -> APIRouter:
    """The Services view's pages."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def projects_page() -> Response:
        return _page("projects.html")

    @router.get("/projects/{project}")
    async def project_page(project: str) -> Response:
        return _page("project.html")

    @router.get("/projects/{project}/{env}/services/{prefix}")
    async def instance_page(project: str, env: str, prefix: str) -> Response:
        return _page("instance.html")

    @router.get("/projects/{project}/{env}/deployments/{deployment}")
    async def deployment_page(project: str, env: str, deployment: str) -> Response:
        return _page("deployment.html")

    @router.get("/sessions")
    async def sessions_page() -> Response:
        return _page("sessions.html")

    @router.get("/clusters")
    async def clusters_page() -> Response:
        """Operators' page (its script shows it to admin tokens only)."""
        return _page("clusters.html")

    @router.get("/regions")
    async def regions_page() -> Response:
        """Operators' page (its script shows it to admin tokens only)."""
        return _page("regions.html")

    @router.get("/backups")
    async def backups_page() -> Response:
        """Operators' page (its script shows it to admin tokens only)."""
        return _page("backups.html")

    @router.get("/tokens")
    async def tokens_page() -> Response:
        """Operators' page (its script shows it to admin tokens only)."""
        return _page("tokens.html")

    @router.get("/sign-in")
    async def sign_in_page(next: str | None = None) -> Response:
        return _page("sign-in.html", fill={"next": _safe_next(next)})

    return router
