"""A Caddy of the tests' own (Debian's `caddy` 2.6, installed by scripts/servers/caddy.sh): `caddy
run` with its admin API on a free loopback port, its data (the internal CA's keys, certificates)
and autosaved config in a temp dir, and no site until Tether installs its server. Stopped and
deleted at the end of the session."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tether.net import free_port


@dataclass
class Caddy:
    admin_url: str
    base: Path


@pytest.fixture(scope="session")
def caddy() -> Iterator[Caddy]:
    binary = shutil.which("caddy")
    if binary is None:
        pytest.fail("Caddy is not installed: run scripts/servers/caddy.sh (Debian's `caddy`)")
    base = Path(tempfile.mkdtemp(prefix="tether-caddy-"))
    admin = f"127.0.0.1:{free_port()}"
    config = {"admin": {"listen": admin},
              "storage": {"module": "file_system", "root": str(base / "data")},
              # TLS handshake errors (and why) are logged at DEBUG only
              "logging": {"logs": {"default": {"level": "DEBUG"}}}}
    (base / "caddy.json").write_text(json.dumps(config))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(base),
           "XDG_CONFIG_HOME": str(base / "config"), "XDG_DATA_HOME": str(base / "xdg")}
    log = open(base / "caddy.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([binary, "run", "--config", str(base / "caddy.json")], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (base / "caddy.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://{admin}/config/", timeout=1, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Caddy did not start"
            time.sleep(0.1)
        yield Caddy(f"http://{admin}", base)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # kept where the test command keeps its logs, for a failure's post-mortem
        kept = Path(__file__).resolve().parents[3] / "build" / "caddy.log"
        with contextlib.suppress(OSError):
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(base / "caddy.log", kept)
        shutil.rmtree(base, ignore_errors=True)
