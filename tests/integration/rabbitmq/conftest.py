"""A real RabbitMQ with the management plugin (Debian `rabbitmq-server`, installed by
scripts/servers/rabbitmq.sh) for the rabbitmq provider tests.

The session fixture starts a node of its own: its own node name, free loopback ports for AMQP,
the management API, Erlang distribution and a private epmd, and its own config, cookie, data and
log dirs in a temp dir, so it neither needs nor disturbs the package's default node. Its admin
is a dedicated user with a random password (`default_user`), so no `guest` exists. As root the
node runs as the `rabbitmq` user (Erlang's cookie rules and the Debian scripts expect it). At the
end it is stopped with `rabbitmqctl stop`, its epmd is killed and the temp dir deleted.

`TETHER_TEST_RABBITMQ_URL` reuses a running server instead: its management URL with
administrator credentials, e.g. `http://admin:PASSWORD@127.0.0.1:15672/`; AMQP is then expected
on the same host, port `TETHER_TEST_RABBITMQ_AMQP_PORT` (default 5672).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest

from tests.conftest import world_traversable_tmpdir
from tether.net import free_port, wait_for_port
from tether.redact import redact

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's real scripts (/usr/sbin has wrappers)
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class RabbitServer:
    """A RabbitMQ server the tests may administer."""

    admin_url: str  # management API with administrator credentials
    api: str  # the management API's base URL, without credentials
    admin_user: str
    admin_password: str
    amqp_host: str
    amqp_port: int

    @property
    def settings(self) -> dict[str, Any]:
        return {"amqp_host": self.amqp_host, "amqp_port": self.amqp_port}


def _script(name: str) -> str | None:
    if (RABBITMQ_BIN / name).exists():
        return str(RABBITMQ_BIN / name)
    return shutil.which(name)


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class RabbitNode:
    """One RabbitMQ node of our own, isolated from any other on the machine."""

    def __init__(self, server_script: str, ctl_script: str) -> None:
        self.server_script = server_script
        self.ctl_script = ctl_script
        self.amqp_port, self.http_port, self.dist_port, self.epmd_port = _distinct_free_ports(4)
        self.nodename = f"tether_test_{secrets.token_hex(4)}@localhost"
        self.admin_user = "tether-test-admin"
        self.admin_password = secrets.token_hex(16)
        self.base = world_traversable_tmpdir("tether-test-rabbitmq-")
        self.home = self.base / "home"
        self.proc: subprocess.Popen[bytes] | None = None
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("rabbitmq")
                self.run_as = "rabbitmq"
            except KeyError:
                self.run_as = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        return (f"http://{quote(self.admin_user, safe='')}:{quote(self.admin_password, safe='')}"
                f"@127.0.0.1:{self.http_port}/")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(self.base / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_LOGS": str(self.base / "log" / "node.log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
        })
        return env

    def _write_files(self) -> None:
        for sub in ("home", "conf.d", "mnesia", "log"):
            (self.base / sub).mkdir()
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        conf = self.base / "rabbitmq.conf"
        conf.write_text(
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.http_port}\n"
            f"default_user = {self.admin_user}\n"
            f"default_pass = {self.admin_password}\n"
            "default_user_tags.administrator = true\n"
            "log.console = false\n")
        conf.chmod(0o600)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _log_tail(self) -> str:
        parts = []
        for path in (self.base / "stdout.log", self.base / "log" / "node.log"):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace")[-2000:])
        return redact("\n".join(parts), (self.admin_password,))

    def _api_ready(self) -> bool:
        try:
            response = httpx.get(f"{self.api}/api/overview", timeout=2,
                                 auth=(self.admin_user, self.admin_password))
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def start(self) -> None:
        self._write_files()
        with open(self.base / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                [self.server_script], env=self._env(), cwd=self.base, user=self.run_as,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._api_ready() and wait_for_port(self.amqp_port, timeout=1):
                return
            time.sleep(0.25)
        tail = self._log_tail()
        self.stop()
        raise RuntimeError(f"RabbitMQ did not start (AMQP 127.0.0.1:{self.amqp_port}, "
                           f"management {self.api}):\n{tail}")

    def _ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.ctl_script, "-n", self.nodename, *args], env=self._env(),
                              cwd=self.base, user=self.run_as, capture_output=True,
                              timeout=timeout, check=False)

    def _signal_group(self, sig: signal.Signals) -> None:
        """The node runs in a session of its own (start_new_session): its group id is its pid."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """Stop the node (rabbitmqctl stop, then signals), our epmd, and delete everything."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._ctl("stop")
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:  # signal the node's own process group
                    self._signal_group(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        self._signal_group(signal.SIGKILL)
                        self.proc.wait(timeout=10)
            epmd = shutil.which("epmd") or next(
                iter(sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))), None)
            if epmd:  # ours alone: it listens on a port of our own
                subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"],
                               capture_output=True, timeout=10, check=False)
        finally:
            self.proc = None
            shutil.rmtree(self.base, ignore_errors=True)


def _server_from_url(url: str) -> RabbitServer:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 15672
    return RabbitServer(
        admin_url=url, api=f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}",
        admin_user=unquote(parts.username or ""), admin_password=unquote(parts.password or ""),
        amqp_host=host, amqp_port=int(os.environ.get("TETHER_TEST_RABBITMQ_AMQP_PORT", "5672")))


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitServer]:
    """TETHER_TEST_RABBITMQ_URL when set, else a node of our own for the session."""
    url = os.environ.get("TETHER_TEST_RABBITMQ_URL")
    if url:
        yield _server_from_url(url)
        return
    server_script, ctl_script = _script("rabbitmq-server"), _script("rabbitmqctl")
    if server_script is None or ctl_script is None:
        pytest.fail("RabbitMQ is not installed: run scripts/servers/rabbitmq.sh (or set "
                    "TETHER_TEST_RABBITMQ_URL to the management URL of a running RabbitMQ)")
    node = RabbitNode(server_script, ctl_script)
    node.start()
    try:
        yield RabbitServer(admin_url=node.admin_url, api=node.api, admin_user=node.admin_user,
                           admin_password=node.admin_password, amqp_host="127.0.0.1",
                           amqp_port=node.amqp_port)
    finally:
        node.stop()
