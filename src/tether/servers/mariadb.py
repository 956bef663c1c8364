"""Dedicated MariaDB servers Tether runs itself, one per `--private` mysql instance (and the
MariaDB of the tests): Debian's `mariadb-server` binaries (`mariadb-install-db`, `mariadbd`), a
data dir, pid file, socket and error log per server in its own home, 127.0.0.1 only, an admin
with a password. The mysql provider (`tether.providers.mysql`) administers them like any other
MySQL/MariaDB server."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tether.errors import ClusterError
from tether.net import wait_for_port
from tether.providers.base import ResourceNames
from tether.providers.common import check_names
from tether.providers.mysql import native_password_hash
from tether.servers.common import cmdline as _cmdline
from tether.servers.common import is_root as _is_root
from tether.servers.common import pid_alive as _pid_alive
from tether.sysaccess import first_untraversable

log = logging.getLogger("tether.mariadb")


ADMIN_USER = "tether_admin"
RUN_AS = "mysql"  # the system user of Debian's mariadb-server, which runs the servers as root
_SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
_INSTALL_HINT = ("install the Debian package mariadb-server (`apt-get install mariadb-server`, "
                 "or scripts/servers/mariadb.sh)")
_SECRET_LINE = re.compile(r"password|identified", re.IGNORECASE)


def _binary(name: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    found = shutil.which(name, path=search)
    if found is None:
        raise ClusterError(f"MariaDB is not installed here (no `{name}` found), so Tether "
                           f"cannot run private MySQL servers: {_INSTALL_HINT}")
    return found


@functools.cache
def _server_version(mariadbd: str) -> str:
    proc = subprocess.run([mariadbd, "--version"], capture_output=True, text=True, check=False,
                          timeout=30, env=_clean_env(), stdin=subprocess.DEVNULL)
    match = re.search(r"Ver\s+(\d+(?:\.\d+)+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise ClusterError(f"`{mariadbd} --version` failed: reinstall mariadb-server")
    return match.group(1)


def _run_as() -> pwd.struct_passwd | None:
    """The account the servers run as: `mysql` when we are root, else ourselves (None)."""
    if not _is_root():
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        raise ClusterError(f"the system user {RUN_AS!r} that runs MariaDB is missing: "
                           f"{_INSTALL_HINT}") from None


def _clean_env() -> dict[str, str]:
    """No MYSQL_* variables of the caller (MYSQL_PWD, MYSQL_UNIX_PORT...), C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    env.update(LC_ALL="C", LANG="C")
    return env


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if not _SECRET_LINE.search(line)]
    return "\n".join(kept[-lines:]) or "(empty)"


class MariaDBServer:
    """One MariaDB data dir in `home/data` and the server running on it (127.0.0.1:`port`).
    `home` also holds the pid file, the socket and the error log. The server is daemonised,
    so it outlives the Python process that started it."""

    def __init__(self, home: Path, port: int, host: str = "127.0.0.1") -> None:
        self.home = Path(os.path.abspath(home))
        self.port = int(port)
        self.host = host

    def __repr__(self) -> str:
        return f"MariaDBServer({str(self.home)!r}, port={self.port})"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def _staging(self) -> Path:
        return self.home / "data.install"

    @property
    def pid_file(self) -> Path:
        return self.home / "mariadbd.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def socket(self) -> Path:
        own = self.home / "mariadbd.sock"
        if len(str(own)) <= _SOCKET_PATH_MAX:
            return own
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"tether-mariadb-{digest}.sock"

    def admin_url(self, password: str) -> str:
        return f"mysql://{ADMIN_USER}:{quote(password, safe='')}@{self.host}:{self.port}/"

    def initialized(self) -> bool:
        return (self.data_dir / "mysql").is_dir()

    # -- init -----------------------------------------------------------------------------------

    def _check_traversable(self, account: pwd.struct_passwd | None) -> None:
        """Every existing ancestor of `home` must be searchable by the server's user."""
        if account is None:
            return
        parent = first_untraversable(self.home, account)
        if parent is not None:
            raise ClusterError(
                f"MariaDB runs as the user {account.pw_name!r}, which cannot reach "
                f"{self.home} ({parent} is not traversable for it): choose a --data-dir "
                f"the {account.pw_name} user can reach (e.g. /var/lib/tether)")

    def _prepare_home(self, account: pwd.struct_passwd | None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._check_traversable(account)
        if account is not None:
            os.chown(self.home, account.pw_uid, account.pw_gid)

    def init(self, password: str) -> None:
        """Create the data dir with the admin `tether_admin`@'%' and `password` (no test
        database, no anonymous users). mariadb-install-db writes into a staging dir that is
        renamed at the end, so an interrupted init never leaves a half-made data dir behind.
        No-op when already initialized."""
        if self.initialized():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} is not empty and is not a MariaDB data dir: "
                               "remove it or choose another data dir")
        install_db = _binary("mariadb-install-db")
        _binary("mariadbd")
        account = _run_as()
        self._prepare_home(account)
        if self._staging.exists():
            shutil.rmtree(self._staging)
        secret_dir = Path(tempfile.mkdtemp(prefix="tether-mariadb-init-"))
        try:
            extra = secret_dir / "admin.sql"
            fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                # bootstrap mode skips the grant tables: FLUSH PRIVILEGES loads them
                f.write("FLUSH PRIVILEGES;\n"
                        f"CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY PASSWORD "
                        f"'{native_password_hash(password)}';\n"
                        f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;\n")
            args = [install_db, "--no-defaults", f"--datadir={self._staging}", "--skip-test-db",
                    "--auth-root-authentication-method=socket", "--skip-name-resolve",
                    f"--extra-file={extra}"]
            if account is not None:
                args.append(f"--user={account.pw_name}")
            proc = subprocess.run(args, capture_output=True, text=True, check=False,
                                  timeout=300, env=_clean_env(), cwd="/",
                                  stdin=subprocess.DEVNULL)
        finally:
            shutil.rmtree(secret_dir, ignore_errors=True)
        if proc.returncode != 0:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise ClusterError(f"mariadb-install-db for {self.data_dir} failed: "
                               f"{_tail(proc.stdout + proc.stderr)}")
        if self.data_dir.exists():
            self.data_dir.rmdir()  # checked empty above
        self._staging.rename(self.data_dir)
        log.info("initialised MariaDB data dir %s", self.data_dir)

    # -- running --------------------------------------------------------------------------------

    def _is_ours(self, pid: int) -> bool:
        cmdline = _cmdline(pid)
        return (bool(cmdline) and os.path.basename(cmdline[0]) in ("mariadbd", "mysqld")
                and f"--datadir={self.data_dir}" in cmdline and _pid_alive(pid))

    def pid(self) -> int | None:
        """The pid of the live server on this data dir, if any: from the pid file, else (a
        server still starting, or aborting before it wrote one) by its command line."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is not None and self._is_ours(pid):  # not a recycled pid
            return pid
        try:
            entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return None
        for name in entries:
            if self._is_ours(int(name)):
                return int(name)
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def _running_port(self, pid: int) -> int | None:
        for arg in _cmdline(pid):
            if arg.startswith("--port="):
                try:
                    return int(arg.split("=", 1)[1])
                except ValueError:
                    return None
        return None

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The end of the error log, without any line that mentions a password."""
        return _tail(self._log_since(max(0, self._log_size() - 16384)), lines)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server on its port (no-op when it already runs there)."""
        if not self.initialized():
            raise ClusterError(f"{self.data_dir} is not an initialised MariaDB data dir: "
                               "initialise it first")
        mariadbd = _binary("mariadbd")
        account = _run_as()
        pid = self.pid()
        if pid is not None and self._running_port(pid) == self.port:
            if self._wait_running(pid, timeout):
                return
            pid = self.pid()  # it died meanwhile (it was crashing): start it again
        if pid is not None:
            log.info("MariaDB in %s runs on another port than %s: restarting it",
                     self.data_dir, self.port)
            self.stop()
        self._prepare_home(account)
        self.pid_file.unlink(missing_ok=True)  # stale, after a crash
        if not self.log_file.exists():
            self.log_file.touch(mode=0o640)
        if account is not None:
            os.chown(self.log_file, account.pw_uid, account.pw_gid)
        offset = self._log_size()
        args = [mariadbd, "--no-defaults", f"--datadir={self.data_dir}", f"--port={self.port}",
                f"--bind-address={self.host}", f"--socket={self.socket}",
                f"--pid-file={self.pid_file}", f"--log-error={self.log_file}",
                "--skip-name-resolve", "--character-set-server=utf8mb4"]
        ids: dict[str, Any] = {}
        if account is not None:
            ids = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        # `sh` starts the server in the background and exits at once: the server is nobody's
        # child, in a session of its own, and outlives this process.
        launcher = subprocess.run(
            ["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh", *args],
            check=False, timeout=30, env=_clean_env(), cwd=str(self.home),
            stdin=subprocess.DEVNULL, start_new_session=True, **ids)
        if launcher.returncode != 0:
            raise ClusterError(f"could not launch MariaDB for {self.data_dir}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new_log = self._log_since(offset)
            if "ready for connections" in new_log and self.is_running():
                log.info("MariaDB started on %s:%s (%s)", self.host, self.port, self.data_dir)
                return
            if "[ERROR] Aborting" in new_log:
                break
            time.sleep(0.05)
        tail = _tail(self._log_since(offset))
        self.stop()
        raise ClusterError(f"MariaDB in {self.data_dir} did not start on "
                           f"{self.host}:{self.port} (is the port taken?); its log ends "
                           f"with:\n{tail}")

    def _wait_running(self, pid: int, timeout: float) -> bool:
        """A server that runs already may still be starting: wait until it accepts connections
        (True), or until it is gone (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return False
            if wait_for_port(self.port, self.host, timeout=0.5):
                return True
        raise ClusterError(f"MariaDB in {self.data_dir} runs but does not accept connections on "
                           f"{self.host}:{self.port} after {timeout:.0f}s; its log ends "
                           f"with:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Clean shutdown (SIGTERM, as `mariadb-admin shutdown` does); no-op when stopped."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not self._wait_dead(pid, timeout):
                log.warning("MariaDB in %s did not stop in %.0fs: killing it", self.data_dir,
                            timeout)
                os.kill(pid, signal.SIGKILL)
                if not self._wait_dead(pid, 10):
                    raise ClusterError(f"MariaDB in {self.data_dir} (pid {pid}) did not stop")
            log.info("MariaDB stopped (%s)", self.data_dir)
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _wait_dead(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.05)
        return not _pid_alive(pid)

    def destroy(self) -> None:
        """Stop the server and delete its data for good."""
        self.stop()
        socket = self.socket
        if socket.parent != self.home:
            socket.unlink(missing_ok=True)
        if self.home.exists():
            shutil.rmtree(self.home)


class PrivateMariaDBServers:
    """Dedicated MariaDB servers, one per `--private` instance, kept in `base_dir/<base>`."""

    kind = "mysql"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)

    def server(self, names: ResourceNames, port: int) -> MariaDBServer:
        check_names(names, max_length=32)
        return MariaDBServer(self.base_dir / names.base, port)

    def version(self) -> str:
        """The version of the installed `mariadbd` (e.g. "10.11.6")."""
        return _server_version(_binary("mariadbd"))

    def create(self, names: ResourceNames, port: int, password: str) -> str:
        """Initialise (once) and start the instance's server; return its admin URL. The
        password only takes effect at the first init: callers persist it before calling."""
        server = self.server(names, port)
        server.init(password)
        server.start()
        return server.admin_url(password)

    def start(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).start()

    def stop(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).stop()

    def destroy(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).destroy()
