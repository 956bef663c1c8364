"""A real `tether up` in a temporary data dir, and a way to run the real CLI against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import clean_env
from tether.net import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Tether:
    data_dir: Path
    config_home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: the media files' own port, free like the API's (not the default API port + 1, which may
    #: be taken): passed as TETHER_MEDIA_PORT in `env`, so every start of this `tether up` uses it
    media_port: int = field(default_factory=free_port)
    #: the front door's port (TETHER_APPS_PORT), free likewise
    apps_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.env.setdefault("TETHER_MEDIA_PORT", str(self.media_port))
        self.media_port = int(self.env["TETHER_MEDIA_PORT"])
        self.env.setdefault("TETHER_APPS_PORT", str(self.apps_port))
        self.apps_port = int(self.env["TETHER_APPS_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media_url(self) -> str:
        return f"http://127.0.0.1:{self.media_port}"

    def start(self) -> None:
        log = open(self.data_dir.parent / "up.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [str(BIN / "tether"), "up", "--data-dir", str(self.data_dir), "--port",
             str(self.port)], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200 and \
                        (self.config_home / "tether" / "config.json").exists():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("tether up did not start:\n" + self.log_tail())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        path = self.data_dir.parent / "up.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def cli(self, *args: str, timeout: float = 120) -> Result:
        proc = subprocess.run([str(BIN / "tether"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.code == 0, (args, result.out, result.err)
        return result

    def token(self) -> str:
        """The admin token `tether up` wrote to its context (the one with this URL)."""
        config = json.loads((self.config_home / "tether" / "config.json").read_text())
        return str(next(c["token"] for c in config["contexts"].values() if c["url"] == self.url))


@pytest.fixture(scope="module")
def tether() -> Iterator[Tether]:
    base = Path(tempfile.mkdtemp(prefix="tether-e2e-"))
    os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's system user must traverse it
    env = clean_env()
    env["XDG_CONFIG_HOME"] = str(base / "config")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    t = Tether(data_dir=base / "data", config_home=base / "config", port=free_port(), env=env)
    t.start()
    yield t
    t.stop()
    subprocess.run(["rm", "-rf", str(base)], check=False)


def new_tether(prefix: str, extra_env: dict[str, str] | None = None) -> Tether:
    """A `tether up` of its own (not started): a fresh base dir under /tmp (the embedded
    PostgreSQL's system user must traverse it) holding its data dir, CLI config and log, and a
    free API port. Remove `data_dir.parent` when done."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's system user must traverse it
    env = clean_env()
    env["XDG_CONFIG_HOME"] = str(base / "config")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra_env or {})
    return Tether(data_dir=base / "data", config_home=base / "config", port=free_port(),
                  env=env)


def stop_with(t: Tether, *signals: signal.Signals, timeout: float = 60,
              between: float = 0.0) -> int:
    """Send `signals` to `tether up` (`between` seconds apart) and return its exit code, or fail
    (after killing it) if it has not exited within `timeout` seconds of the first."""
    assert t.proc is not None and t.proc.poll() is None, t.log_tail()
    for n, sig in enumerate(signals):
        if n:
            time.sleep(between)
        t.proc.send_signal(sig)
    try:
        return t.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        t.proc.kill()
        t.proc.wait()
        raise AssertionError(f"tether up did not exit within {timeout} s of "
                             f"{signals[0].name}:\n{t.log_tail()}") from None


def _proc_text(pid: str, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def processes_mentioning(path: Path) -> dict[int, str]:
    """Live processes (not zombies) whose command line, environment or working directory
    mentions `path`, by pid, with their command line: what a stopped `tether up` must not
    leave behind. Reads /proc (needs root for other users' environments, as the tests run)."""
    needle = str(path)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = _proc_text(entry.name, "stat")
        if not stat or stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"]):
            continue
        cmdline = _proc_text(entry.name, "cmdline")
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            cwd = ""
        if needle in cmdline or needle in cwd or needle in _proc_text(entry.name, "environ"):
            found[int(entry.name)] = cmdline.strip() or f"(cwd {cwd})"
    return found
