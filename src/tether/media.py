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

Symlinks are not followed at all, and not by a check that comes before the open: the media server
runs as root while each instance's directory belongs to its application's user, who may swap a
file for a link (to the secret key) between a check of the path and its open. So every path is
opened one component at a time, each relative to the descriptor of the directory before it, with
`O_NOFOLLOW`, and the answer is read from the descriptor of the file opened that way (a regular
file, by `fstat`: never a FIFO or a device). A symlink anywhere in the path is a 404.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from mimetypes import guess_type
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import NotModifiedResponse, StaticFiles
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


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: should a FIFO take a file's place after it was looked at, its open does not wait
#: for a writer (and `fstat` then refuses it); it changes nothing for a regular file's reads
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: what an open along a path gives when the path names no file that may be served: missing, a
#: symlink (ELOOP under O_NOFOLLOW), a file where a directory should be, unreadable, too long
_NOT_SERVED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EPERM,
                         errno.ENAMETOOLONG, errno.ENXIO, errno.ENODEV, errno.EISDIR})


def open_regular_file(root: Path, parts: Sequence[str]) -> tuple[int, os.stat_result] | None:
    """Open `root/parts[0]/.../parts[-1]` without following any symlink under `root`: each
    component is opened relative to the descriptor of the one before with `O_NOFOLLOW`, so no
    swap of a component for a link, before or during the walk, leads anywhere else. The
    descriptor (the caller closes it) and its `fstat` when it is a regular file; None when the
    path names nothing that may be served (missing, a symlink, a directory, a FIFO, a device,
    a file with more than one name: a hard link)."""
    if not parts or any(p in ("", ".", "..") or "/" in p or "\x00" in p for p in parts):
        return None
    try:
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _NOT_SERVED:
            return None
        raise
    try:
        for name in parts[:-1]:
            inner = os.open(name, _DIRECTORY_FLAGS, dir_fd=directory)
            os.close(directory)
            directory = inner
        # looked at before the open, so a FIFO or a device in place is never opened at all
        if not stat.S_ISREG(os.stat(parts[-1], dir_fd=directory, follow_symlinks=False).st_mode):
            return None
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=directory)
    except OSError as exc:
        if exc.errno in _NOT_SERVED:
            return None
        raise
    finally:
        os.close(directory)
    try:
        stat_result = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    # a hard link is another name of a file that may live anywhere on this file system (an
    # application could link the secret key into its media directory where the kernel's
    # protected_hardlinks is off): a media file has one name, in its media directory
    if not stat.S_ISREG(stat_result.st_mode) or stat_result.st_nlink != 1:
        os.close(fd)
        return None
    return fd, stat_result


class DescriptorResponse(FileResponse):
    """A FileResponse (Content-Length, Last-Modified, ETag, HEAD, Range) read from a descriptor
    opened by `open_regular_file`, never by a path lookup of its own; the descriptor is closed
    once the answer is sent (or failed).

    Starlette reads the file through `_open_file`, overridden here to read the descriptor. Its
    `path` is `/proc/self/fd/N` anyway, should a Starlette version open `path` itself: opening
    that link reopens the very file the descriptor holds, whatever its name now leads to. The
    `http.response.pathsend` extension is hidden from it: the server would open the path after
    the descriptor is closed."""

    def __init__(self, fd: int, stat_result: os.stat_result, media_type: str) -> None:
        self.fd = fd
        super().__init__(f"/proc/self/fd/{fd}", stat_result=stat_result, media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {k: v for k, v in scope.get("extensions", {}).items()
                      if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self.close()

    def close(self) -> None:
        """Close the descriptor (once)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        file = anyio.AsyncFile(open(self.fd, "rb", closefd=False))  # noqa: SIM115
        try:
            await file.seek(0)
            yield file
        finally:
            with anyio.CancelScope(shield=True):
                await file.aclose()


class MediaFiles(StaticFiles):
    """StaticFiles that serves what `open_regular_file` opens: the same answers (405 but for
    GET and HEAD, 404, 304 on If-None-Match or If-Modified-Since, Range), without its check of
    the resolved path before an open by path (which a swap in between defeats)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory.absolute())
        self.root = directory.absolute()

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD"})
        parts = path.split(os.sep)
        opened = await anyio.to_thread.run_sync(open_regular_file, self.root, parts)
        if opened is None:
            raise HTTPException(status_code=404)
        fd, stat_result = opened
        try:
            # the type from the name, as StaticFiles gave it (an absolute path: never a URL)
            media_type = guess_type(os.path.join(self.root, *parts))[0]
            response = DescriptorResponse(fd, stat_result,
                                          media_type or "application/octet-stream")
        except BaseException:
            os.close(fd)
            raise
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            response.close()
            return NotModifiedResponse(response.headers)
        return response


def create_media_app(media_dir: Path) -> ASGIApp:
    """The media origin's ASGI app: the files under `media_dir`, read only (GET and HEAD),
    never through a symlink (see the module docstring)."""
    media_dir.mkdir(parents=True, exist_ok=True)
    files = Starlette(routes=[Mount("/", app=MediaFiles(media_dir))])
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
