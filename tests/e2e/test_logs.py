"""`tether logs` through the real CLI against a real `tether up`: the running release's last
lines, `--json`, `--follow` showing a line the app prints after it started, and the app's output
surviving a restart and a `kill -9` of Tether (the app adopted, still logging to its file)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.e2e.conftest import BIN, ROOT, Tether
from tether.net import free_port
from tether.store.db import Store
from tether.store.models import Environment, Project

pytestmark = pytest.mark.e2e

# "/say/WORD" prints WORD; "/health" answers 200.
APP = textwrap.dedent(
    """
    import os
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/say/"):
                print(self.path[len("/say/"):], flush=True)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    print("the app starts, secret", os.environ["API_TOKEN"], flush=True)
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """
)
TOKEN = "logs-e2e-token-" + secrets.token_hex(4)


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(AssertionError, httpx.HTTPError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.2)


def app_groups(marker: str) -> set[int]:
    """Process groups of live processes with `marker` on their command line."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if marker.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    stat = (entry / "stat").read_text().rpartition(")")[2].split()
                    if stat[0] not in ("Z", "X"):
                        groups.add(int(stat[2]))
    return groups


class Follower:
    """`tether logs ENV --follow` in the background, collecting what it prints."""

    def __init__(self, t: Tether, *args: str) -> None:
        self.proc = subprocess.Popen([str(BIN / "tether"), "logs", *args], env=t.env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        """Ctrl-C, as a user ends `--follow`."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        finally:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self._reader.join(5)


@pytest.fixture(scope="module")
def app(tether: Tether, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("logs-app") / "app.py"
    path.write_text(APP)
    marker = "logs-marker-" + secrets.token_hex(4)
    # the app's own directory, copied for each release (its user cannot read the test's tmp dir)
    tether.ok("project", "create", "logs", "--app-command", f"{sys.executable} app.py {marker}",
              "--app-dir", str(path.parent), "--health-path", "/health", "--no-database")
    tether.ok("project", "env-vars", "-p", "logs", "-e", "test", "--set", "API_TOKEN", TOKEN)
    # An ephemeral port for the stable address rather than the first free one of 8100-8999,
    # which other test runs on this machine may take while this Tether restarts.
    store = Store(f"sqlite:///{tether.data_dir / 'tether.db'}")
    with store.session() as s:
        env = s.scalars(select(Environment).join(Project).where(
            Project.name == "logs", Environment.name == "test")).one()
        env.port = free_port()
    store.dispose()
    deployed = tether.cli("deploy", "test", "-p", "logs")
    assert deployed.code == 0, deployed.out + deployed.err
    shown = tether.ok("project", "show", "-p", "logs", "--json").json()
    url = next(e["url"] for e in shown["environments"] if e["name"] == "test")
    return {"url": url, "marker": marker}


def say(url: str, *words: str) -> None:
    for word in words:
        assert httpx.get(f"{url}/say/{word}", timeout=10).status_code == 200


def last_lines(t: Tether, count: int) -> list[str]:
    """`tether logs test --lines N`, without the times."""
    out = t.ok("logs", "test", "-p", "logs", "--lines", str(count)).out
    return [line.split(" ", 2)[-1] for line in out.splitlines()]


def test_logs_shows_the_last_lines_and_json(tether: Tether, app: dict[str, str]) -> None:
    say(app["url"], *(f"line-{n}" for n in range(1, 8)))
    assert eventually(lambda: last_lines(tether, 5) == [f"line-{n}" for n in range(3, 8)])
    everything = tether.ok("logs", "test", "-p", "logs", "--lines", "100").out
    assert "the app starts, secret ***" in everything and TOKEN not in everything
    # each line starts with its local date and time
    first = tether.ok("logs", "test", "-p", "logs", "--lines", "1").out.splitlines()[0]
    assert time.strptime(" ".join(first.split()[:2]), "%Y-%m-%d %H:%M:%S")

    doc = tether.ok("logs", "test", "-p", "logs", "--lines", "2", "--json").json()
    assert [entry["line"] for entry in doc["lines"]] == ["line-6", "line-7"]
    assert doc["release_id"] and doc["cursor"] and doc["missed"] is False
    assert all(entry["at"] for entry in doc["lines"])

    bad = tether.cli("logs", "test", "-p", "logs", "--lines", "-1")
    assert bad.code == 2
    missing = tether.cli("logs", "nope", "-p", "logs")
    assert missing.code == 2 and "no environment" in missing.err


def test_follow_shows_lines_printed_after_it_started(tether: Tether,
                                                     app: dict[str, str]) -> None:
    follower = Follower(tether, "test", "-p", "logs", "--follow", "--lines", "1")
    json_follower = Follower(tether, "test", "-p", "logs", "--follow", "--lines", "1", "--json")
    try:
        # a first line, seen by both (by their first look or by following): they are running
        first = "first-" + secrets.token_hex(3)
        say(app["url"], first)
        assert eventually(lambda: any(line.endswith(" " + first) for line in follower.lines))
        assert eventually(lambda: any(f'"line": "{first}"' in line
                                      for line in json_follower.lines))
        # then a line printed after they started: only following can show it
        word = "followed-" + secrets.token_hex(3)
        say(app["url"], word)
        assert eventually(lambda: any(line.endswith(" " + word) for line in follower.lines),
                          timeout=20), follower.lines
        assert eventually(lambda: any(f'"line": "{word}"' in line
                                      for line in json_follower.lines), timeout=20), \
            json_follower.lines
    finally:
        code = follower.stop()
        json_follower.stop()
    assert code == 0  # Ctrl-C is how one ends following


def test_the_output_survives_a_restart_and_a_crash_of_tether(tether: Tether,
                                                             app: dict[str, str]) -> None:
    say(app["url"], "before-the-restart")
    tether.stop()
    assert app_groups(app["marker"]) == set()  # stopped with Tether...
    tether.start()  # ... and started again: its log file goes on
    eventually(lambda: httpx.get(app["url"] + "/health", timeout=5).status_code == 200)
    assert "before-the-restart" in last_lines(tether, 50)

    (group,) = app_groups(app["marker"])
    assert tether.proc is not None
    os.kill(tether.proc.pid, signal.SIGKILL)  # a crash: the app goes on
    tether.proc.wait()
    tether.start()  # adopts it: the same process, still writing to its log
    eventually(lambda: httpx.get(app["url"] + "/health", timeout=5).status_code == 200)
    assert app_groups(app["marker"]) == {group}
    say(app["url"], "after-the-crash")
    assert eventually(lambda: last_lines(tether, 1) == ["after-the-crash"])
