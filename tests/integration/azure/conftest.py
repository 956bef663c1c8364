"""Azurite, the Azure Blob emulator (npm `azurite`, installed by scripts/servers/azurite.sh), for
the azure-blob provider tests: started on a free loopback port with its own data dir, stopped and
deleted at the end of the session. `TETHER_TEST_AZURE_URL` reuses a running one instead: its
cluster URL, e.g. `azure+http://devstoreaccount1:KEY@127.0.0.1:10000/devstoreaccount1` (on
loopback, with the key URL-encoded; the server must run with `--skipApiVersionCheck`, since the
application-side client in the tests speaks the SDK's newest API version)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import world_traversable_tmpdir
from tether.net import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[3]
LOCAL_BINARY = REPO / ".test-servers" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's one built-in account and its key, published in Azurite's documentation
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


def azurite_binary() -> str | None:
    if LOCAL_BINARY.exists():
        return str(LOCAL_BINARY)
    return shutil.which("azurite-blob")


def cluster_url(port: int, host: str = "127.0.0.1", key: str = ACCOUNT_KEY,
                account: str = ACCOUNT) -> str:
    """The cluster URL of an Azurite blob service (path-style endpoint, plain HTTP)."""
    return f"azure+http://{account}:{quote(key, safe='')}@{host}:{port}/{account}"


class Azurite:
    """One Azurite blob service of our own."""

    def __init__(self, binary: str, skip_api_version_check: bool = True) -> None:
        self.binary = binary
        self.skip_api_version_check = skip_api_version_check
        self.port = free_port()
        self.base = world_traversable_tmpdir("tether-test-azurite-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return cluster_url(self.port)

    def _log_tail(self) -> str:
        try:
            return (self.base / "azurite.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        args = [self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--location", str(self.base / "data"), "--disableTelemetry"]
        if self.skip_api_version_check:
            args.append("--skipApiVersionCheck")
        with open(self.base / "azurite.log", "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_for_port(self.port, timeout=timeout) or self.proc.poll() is not None:
            tail = self._log_tail()
            self.stop()
            raise RuntimeError(f"Azurite did not start on 127.0.0.1:{self.port}:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.base, ignore_errors=True)


def _binary_or_fail() -> str:
    binary = azurite_binary()
    if binary is None and os.environ.get("TETHER_TEST_AZURE_URL"):
        pytest.skip("needs an Azurite of its own, and azurite-blob is not installed")
    if binary is None:
        pytest.fail("Azurite is not installed: run scripts/servers/azurite.sh (or set "
                    "TETHER_TEST_AZURE_URL to the cluster URL of a running Azurite)")
    return binary


@pytest.fixture(scope="session")
def azurite_url() -> Iterator[str]:
    """The cluster URL of an Azurite blob service: TETHER_TEST_AZURE_URL, else one of ours."""
    url = os.environ.get("TETHER_TEST_AZURE_URL")
    if url:
        yield url
        return
    server = Azurite(_binary_or_fail())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def start_azurite() -> Iterator[Callable[..., Azurite]]:
    """Start extra Azurite servers (e.g. one that checks API versions); all stopped at the end."""
    started: list[Azurite] = []

    def start(skip_api_version_check: bool = True) -> Azurite:
        server = Azurite(_binary_or_fail(), skip_api_version_check)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
