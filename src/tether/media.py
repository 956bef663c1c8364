"""The local media files, served on an origin of their own, as a CDN would serve them.

Media files are written by applications and often by their end users: whatever they hold must
never run as the control plane. So they are never served by the API's listener (a page there
would share the Services view's origin: its session, its CSRF token, its API); `tether up` serves
them from a second listener on another port (or behind another host name, TETHER_MEDIA_URL),
and every answer says, whatever the file:

- `X-Content-Type-Options: nosniff`: the type is the one from the file name, never guessed from
  the content (an HTML body in `photo.png` or `notes.txt` is not HTML);
- `Content-Security-Policy: sandbox; default-src 'none'; ...`: a file the browser shows anyway is
  a document of an opaque origin, without scripts, forms, plugins or pop-ups, loading nothing
  but itself;
- `Content-Disposition: attachment` for every type not on a short allow-list of passive ones
  (images other than SVG, plain text, audio, video): HTML, SVG, XML, XHTML, JavaScript, PDF and
  anything unknown are downloaded, never shown. An allow-list, not a deny-list: a type nobody
  thought of is safe by default. (`attachment` only concerns navigation: an application's page
  may still load such a file as an image, a script or a style sheet.)

Only files inside an instance's directory are served (`/<instance>/<path>`): never the top of
the media directory, never a directory listing, never a path out of it (`..`, symlinks).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.config import MEDIA_PORT_OFFSET
from tether.errors import UserError

#: what every media answer says (see the module docstring); `img-src`/`media-src 'self'` and the
#: inline style let a browser show an image or play a video it was sent directly
CSP = ("sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; "
       "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
#: the types a browser may show inline: passive, no script can run in them
INLINE_TYPES = frozenset({
    "image/apng", "image/avif", "image/bmp", "image/gif", "image/jpeg", "image/png",
    "image/vnd.microsoft.icon", "image/webp", "image/x-icon", "text/plain",
})
INLINE_PREFIXES = ("audio/", "video/")
#: an instance's directory, named as the local-files provider names it
_INSTANCE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def is_served(path: str) -> bool:
    """Whether a (decoded) request path may be served: `/<instance>/<file>`, without an empty,
    `.` or `..` segment (which would reach the top of the media directory, or name a
    directory) or a NUL."""
    parts = path.split("/")
    return (len(parts) >= 3 and parts[0] == "" and bool(_INSTANCE.fullmatch(parts[1]))
            and all(p not in ("", ".", "..") and "\x00" not in p for p in parts[1:]))


def is_inline(content_type: str) -> bool:
    """Whether a type may be shown by the browser rather than downloaded."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in INLINE_TYPES or kind.startswith(INLINE_PREFIXES)


class MediaHeaders:
    """ASGI middleware: the media headers on every answer, whatever produced it (a file, a 404,
    a 405, an error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Content-Security-Policy"] = CSP
                headers["Referrer-Policy"] = "no-referrer"
                if not is_inline(headers.get("content-type", "")):
                    headers["Content-Disposition"] = "attachment"
            await send(message)

        if not is_served(scope["path"]):
            await PlainTextResponse("Not Found", 404)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def create_media_app(media_dir: Path) -> ASGIApp:
    """The media origin's ASGI app: the files under `media_dir`, read only (GET and HEAD)."""
    media_dir.mkdir(parents=True, exist_ok=True)
    # follow_symlink=False (the default): a link out of media_dir is refused, not followed
    files = Starlette(routes=[Mount("/", app=StaticFiles(directory=media_dir))])
    return MediaHeaders(files)


class MediaSettingsError(UserError):
    """The media origin's settings cannot work (exit 2 from `tether up`)."""

    code = "bad_media_settings"


def media_port_for(api_port: int, media_port: int | None) -> int:
    """The media files' port: the one asked for, else the API's port + 1. Never the API's."""
    port = api_port + MEDIA_PORT_OFFSET if media_port is None else media_port
    if port == api_port:
        raise MediaSettingsError(f"the media files cannot share the API's port {api_port}: "
                                 "they need an origin of their own; pick another --media-port")
    if not 0 < port < 65536:
        raise MediaSettingsError(f"the media port {port} is not a TCP port: pick one with "
                                 "--media-port (or TETHER_MEDIA_PORT)")
    return port


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def media_public_url(api_url: str, host: str, media_port: int,
                     media_url: str | None = None) -> str:
    """The public base URL of the media files (ending in `/`): `media_url` (TETHER_MEDIA_URL,
    a host name in front of the media port) when given, else `http://HOST:MEDIA_PORT/`.
    Refused when it is the API's origin (`api_url`): a media file would run as the API."""
    if not media_url:
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{media_port}/"
    parts = urlsplit(media_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or parts.password:
        raise MediaSettingsError(
            "TETHER_MEDIA_URL is not a base URL: give http(s)://HOST[:PORT]/[PATH/], without "
            "credentials, query or fragment (where a proxy or CDN serves Tether's media port)")
    if _origin(media_url) == _origin(api_url):
        raise MediaSettingsError(
            f"TETHER_MEDIA_URL {media_url!r} is the API's origin ({api_url}): media files must be "
            "served from another host name or port, or a file an application's user uploaded "
            "would act as a signed-in admin")
    return media_url if media_url.endswith("/") else media_url + "/"
