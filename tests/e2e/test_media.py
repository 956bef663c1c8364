"""Local media files on an origin of their own (issue 8, finding 1), over plain HTTP against a
real `tether up`: the API's port serves no media at all; the media port answers every request
with `nosniff` and a sandboxing CSP, and active types as downloads; nothing outside an instance's
directory is reachable (no listing, no traversal, no symlink out); a data dir whose media were
served at the API's /media/ moves to the media origin on the next start; a taken media port, or
a media URL on the API's origin, stops the start with a fix."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from tests.e2e.conftest import BIN, Tether, new_tether, processes_mentioning
from tether.net import free_port

pytestmark = pytest.mark.e2e

#: file name -> (content, shown by the browser rather than downloaded)
FILES = {
    "page.html": ("<script>alert(document.cookie)</script>", False),
    "page.htm": ("<script>alert(1)</script>", False),
    "image.svg": ('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
                  False),
    "page.xhtml": ('<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>',
                   False),
    "data.xml": ('<?xml version="1.0"?><x:script xmlns:x="http://www.w3.org/1999/xhtml">'
                 "alert(1)</x:script>", False),
    "code.js": ("alert(1)", False),
    "style.css": ("body{}", False),
    "doc.pdf": ("%PDF-1.4\n", False),
    "data.json": ("{}", False),
    "blob.unknownext": ("<script>alert(1)</script>", False),
    "noextension": ("<script>alert(1)</script>", False),  # application/octet-stream
    "page.shtml": ("<script>alert(1)</script>", False),
    "doc.mht": ("Content-Type: text/html\n\n<script>alert(1)</script>", False),
    "notes.txt": ("<script>alert(1)</script>", True),  # text/plain, never sniffed
    "photo.png": ("\x89PNG\r\n\x1a\n", True),
    "photo.jpg": ("\xff\xd8\xff", True),
    "anim.gif": ("GIF89a", True),
    "sound.mp3": ("ID3", True),
    "clip.mp4": ("\0\0\0\x18ftypmp42", True),
}


def _media_instance(t: Tether, project: str) -> tuple[Path, str]:
    """A provisioned local-media instance of `project`'s test environment: its directory and
    its public URL (the `url=` of its DSN, as an application reads it)."""
    t.ok("project", "create", project)
    t.ok("service", "add", "test", "local-media", "--prefix", "MEDIA", "--provision",
         "-p", project)
    return _dsn_parts(t, project)


def _dsn_parts(t: Tether, project: str) -> tuple[Path, str]:
    dsn = t.ok("project", "env-vars", "-p", project, "-e", "test", "--all", "--get",
               "MEDIA_STORAGE_DSN").out.strip()
    parts = urlsplit(dsn)
    assert parts.scheme == "file", dsn
    return Path(unquote(parts.path)), parse_qs(parts.query)["url"][0]


def _raw_get(url: str, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A request with `path` sent exactly as written (httpx would remove dot segments)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def _assert_media_headers(headers: dict[str, str] | httpx.Headers, what: str) -> None:
    assert headers.get("x-content-type-options") == "nosniff", (what, headers)
    csp = [p.strip() for p in headers.get("content-security-policy", "").split(";")]
    assert "sandbox" in csp and "default-src 'none'" in csp, (what, headers)


def test_media_files_are_served_on_their_own_origin_with_safe_headers(tether: Tether) -> None:
    directory, public = _media_instance(tether, f"media{secrets.token_hex(3)}")
    media = urlsplit(public)
    assert media.port != tether.port and media.port == tether.media_port, public
    for name, (content, _inline) in FILES.items():
        (directory / name).write_bytes(content.encode("latin-1"))

    for name, (content, inline) in FILES.items():
        answer = httpx.get(public + name, timeout=10)
        assert answer.status_code == 200, (name, answer.status_code)
        assert answer.content == content.encode("latin-1"), name
        _assert_media_headers(answer.headers, name)
        disposition = answer.headers.get("content-disposition", "")
        if inline:
            assert not disposition.startswith("attachment"), (name, answer.headers)
        else:
            assert disposition.startswith("attachment"), (name, answer.headers)

        # the API's port serves no media file, under no path
        for path in (f"/media/{directory.name}/{name}", f"/{directory.name}/{name}"):
            on_api = httpx.get(tether.url + path, timeout=10)
            assert on_api.status_code == 404, (path, on_api.status_code)
            assert content.encode("latin-1") not in on_api.content
    assert httpx.get(tether.url + "/media/", timeout=10).status_code == 404


def test_nothing_outside_an_instance_directory_is_reachable(tether: Tether) -> None:
    directory, public = _media_instance(tether, f"media{secrets.token_hex(3)}")
    base = directory.parent  # the media dir: its marker file must not be served
    (directory / "ok.txt").write_text("fine")
    (directory / "sub").mkdir()
    (directory / "sub" / "deep.txt").write_text("deep")
    secret_key = tether.data_dir / "secret.key"
    (directory / "key-link").symlink_to(secret_key)
    (directory / "etc-link").symlink_to("/etc")
    origin = public.split(f"{directory.name}/")[0]  # http://host:port/
    name = directory.name

    assert httpx.get(public + "ok.txt", timeout=10).text == "fine"
    assert httpx.get(public + "sub/deep.txt", timeout=10).text == "deep"
    refused = [
        "/", f"/{name}", f"/{name}/", f"/{name}/sub", f"/{name}/sub/",  # no listing
        "/.tether-server-id", f"/{name}/../.tether-server-id",  # the top of the media dir
        f"/{name}/%2e%2e/.tether-server-id", f"/{name}/./ok.txt", f"/{name}//ok.txt",
        "/../secret.key", f"/{name}/../../secret.key", f"/{name}/..%2f..%2fsecret.key",
        f"/{name}/%2e%2e/%2e%2e/secret.key", f"/{name}/key-link",  # out of the media dir
        f"/{name}/etc-link/passwd", f"/{name}/..\\..\\secret.key", f"/{name}/%00",
        "/tether_i0/../../../../etc/passwd",
    ]
    key = secret_key.read_bytes().strip()
    marker = (base / ".tether-server-id").read_bytes().strip()
    for path in refused:
        status, headers, body = _raw_get(origin, path)
        assert status in (400, 404), (path, status, body[:200])
        assert key not in body and marker not in body and b"root:" not in body, path
        if status == 404:
            _assert_media_headers(headers, path)
    # read only: every other method refused, with the same headers
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _body = _raw_get(origin, f"/{name}/ok.txt", method)
        assert status == 405, (method, status)
        _assert_media_headers(headers, method)
    assert (directory / "ok.txt").read_text() == "fine"


@pytest.fixture
def own_tethers() -> Iterator[list[Tether]]:
    """`tether up` processes of a test's own, stopped and deleted at the end whatever happened."""
    made: list[Tether] = []
    yield made
    for t in made:
        t.stop()
        for pid in processes_mentioning(t.data_dir.parent):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(t.data_dir.parent, ignore_errors=True)


def _stop(t: Tether) -> None:
    assert t.proc is not None
    t.proc.send_signal(signal.SIGTERM)
    assert t.proc.wait(60) == 0, t.log_tail()


def _back_to_the_old_media_url(t: Tether) -> None:
    """Make the stopped data dir look as one from before media had an origin of their own:
    the embedded media cluster's public_url and its instances' URLs on the API's /media/."""
    from sqlalchemy import select

    from tether.crypto import SecretBox
    from tether.store.db import Store, store_url
    from tether.store.models import Cluster, Instance

    store = Store(store_url(t.data_dir))
    box = SecretBox.from_data_dir(t.data_dir)
    old = f"http://127.0.0.1:{t.port}/media/"
    try:
        with store.session() as s:
            cluster = s.scalar(select(Cluster).where(Cluster.name == "local-media"))
            assert cluster is not None
            cluster.settings = {**cluster.settings, "public_url": old}
            for inst in s.scalars(select(Instance).where(Instance.cluster_id == cluster.id)):
                creds = box.open(inst.credentials_enc)
                creds["url"] = f"{old}{Path(creds['directory']).name}/"
                inst.credentials_enc = box.seal(creds)
    finally:
        store.dispose()


def test_a_data_dir_from_before_moves_its_media_to_the_media_origin(
        own_tethers: list[Tether]) -> None:
    t = new_tether("tether-media-move-")
    own_tethers.append(t)
    t.start()
    project = f"media{secrets.token_hex(3)}"
    directory, first = _media_instance(t, project)
    assert first == f"http://127.0.0.1:{t.media_port}/{directory.name}/"
    (directory / "kept.txt").write_text("kept")
    _stop(t)
    _back_to_the_old_media_url(t)
    assert _dsn_parts_offline(t) == f"http://127.0.0.1:{t.port}/media/{directory.name}/"

    # the next start serves them on another port, under a host name of their own
    t.media_port = free_port()
    t.env["TETHER_MEDIA_PORT"] = str(t.media_port)
    t.env["TETHER_MEDIA_URL"] = f"http://localhost:{t.media_port}/"
    t.start()
    moved_dir, moved = _dsn_parts(t, project)
    assert moved_dir == directory
    assert moved == f"http://localhost:{t.media_port}/{directory.name}/"
    assert httpx.get(moved + "kept.txt", timeout=10).text == "kept"
    assert httpx.get(f"{t.url}/media/{directory.name}/kept.txt", timeout=10).status_code == 404
    # a new instance gets the media origin too
    t.ok("service", "add", "test", "local-media", "--prefix", "OTHER", "--provision",
         "-p", project)
    other = t.ok("project", "env-vars", "-p", project, "-e", "test", "--all", "--get",
                 "OTHER_STORAGE_DSN").out.strip()
    assert parse_qs(urlsplit(other).query)["url"][0].startswith(
        f"http://localhost:{t.media_port}/")
    _stop(t)


def _dsn_parts_offline(t: Tether) -> str:
    """The media URL in the stopped data dir's only local-media instance."""
    from sqlalchemy import select

    from tether.crypto import SecretBox
    from tether.store.db import Store, store_url
    from tether.store.models import Cluster, Instance

    store = Store(store_url(t.data_dir))
    try:
        with store.session() as s:
            cluster = s.scalar(select(Cluster).where(Cluster.name == "local-media"))
            assert cluster is not None
            inst = s.scalars(select(Instance).where(Instance.cluster_id == cluster.id)).one()
            return str(SecretBox.from_data_dir(t.data_dir).open(inst.credentials_enc)["url"])
    finally:
        store.dispose()


def _up_fails(t: Tether, *args: str) -> str:
    """Run `tether up` that must refuse to start (exit 2); its output."""
    proc = subprocess.run([str(BIN / "tether"), "up", "--data-dir", str(t.data_dir), "--port",
                           str(t.port), *args], env=t.env, capture_output=True, text=True,
                          timeout=120, check=False)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out
    assert processes_mentioning(t.data_dir.parent) == {}, out
    return out


def test_a_media_port_taken_or_on_the_api_origin_stops_the_start(
        own_tethers: list[Tether]) -> None:
    t = new_tether("tether-media-port-")
    own_tethers.append(t)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", t.media_port))
    squatter.listen(1)
    try:
        out = _up_fails(t)
        assert f"port {t.media_port}" in out and "--media-port" in out, out
    finally:
        squatter.close()
    out = _up_fails(t, "--media-port", str(t.port))
    assert "cannot share the API's port" in out, out
    t.env["TETHER_MEDIA_URL"] = f"http://127.0.0.1:{t.port}/media/"
    out = _up_fails(t)
    assert "the API's origin" in out, out
