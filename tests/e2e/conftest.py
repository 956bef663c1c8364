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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        return str(json.loads((self.config_home / "tether" / "config.json").read_text())["token"])


@pytest.fixture(scope="module")
def tether() -> Iterator[Tether]:
    base = Path(tempfile.mkdtemp(prefix="tether-e2e-"))
    os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's system user must traverse it
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["XDG_CONFIG_HOME"] = str(base / "config")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    t = Tether(data_dir=base / "data", config_home=base / "config", port=free_port(), env=env)
    t.start()
    yield t
    t.stop()
    subprocess.run(["rm", "-rf", str(base)], check=False)
