"""Local process runtime: runs each release of an environment's application as a process group
and serves it behind the environment's stable address (see `proxy.py`).

The deploy flow is `start` (new process, wait until healthy) -> `switch` (the stable address now
sends new requests to it) -> `stop` the previous release (after its requests in flight are done).
A release that fails to start never receives traffic, so the previous one keeps serving.

Each release runs under its log writer (see `logs.py`), which leads the release's process group
and session: the recorded pid is the writer's, and its start time (`/proc/PID/stat` field 22)
tells a still-running release from a process that later got the same pid. The app's output goes
to the release's log file whether or not Tether runs, so a release survives a crash of Tether
and can be *adopted* by the next one (`adopt`): routed to by its port, stopped by its process
group, its output still flowing to its file. While a release starts, the new lines of its log are
handed to `ReleaseSpec.log` in batches (the deployment log); after that they stay in the file.

The app itself runs as `ReleaseSpec.account` (the environment's system user, see `accounts.py`)
when one is given, from `ReleaseSpec.cwd` (the release's copy of the application directory, see
`appcopy.py`), with the argv `command.command_argv` makes of its command: no shell unless the
command asks for one. Its log writer stays Tether's: the app writes into a pipe, never into the
log file, which it cannot open.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import tether
from tether.errors import OperationError, UserError
from tether.frontdoor import DEFAULT_DOMAIN, FrontDoor
from tether.net import free_port
from tether.runtime import logs
from tether.runtime.accounts import AppAccount
from tether.runtime.caddy import CaddyRoutes
from tether.runtime.command import command_argv
from tether.runtime.proxy import ProxyApp, ProxyHost, ProxyServer

# Variables of the control plane's own environment an app may see: nothing that could hold a
# secret of the operator, only what a shell command needs to run at all.
PASSED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TAIL_LINES = 20
#: seconds the log writer may take to start and report the app's start
WRITER_START_TIMEOUT = 15.0
#: seconds between two batches of new log lines handed to `ReleaseSpec.log` while starting
LOG_BATCH_INTERVAL = 0.25


class ReleaseFailed(OperationError):
    """A release did not become healthy; the message says why (exit code, last health answer)."""


@dataclass
class ReleaseSpec:
    release_id: int
    environment_key: str  # e.g. "shop/test": one stable address per key
    command: str  # split into argv, or run with /bin/sh -c when it asks for a shell (command.py)
    env: dict[str, str]  # the app's variables; PORT is added by the runtime
    health_path: str = "/"
    cwd: str | None = None
    health_timeout: float = 30.0
    # Receives the new lines the app prints (stdout and stderr) while the release starts, in
    # batches, until it is healthy or has failed; its output then goes on in its log file only.
    log: Callable[[Sequence[str]], None] | None = None
    #: the release's log file (default: in the runtime's `log_dir`)
    log_path: Path | None = None
    log_max_bytes: int = logs.MAX_BYTES
    log_backups: int = logs.BACKUPS
    #: values masked in the log file (the release's secrets)
    secrets: Sequence[str] = ()
    #: called once the release's process (its log writer) runs and before its app is started,
    #: to record its pid and start time; if it raises, no app is started and `start` re-raises
    on_start: Callable[[RunningRelease], None] | None = None
    #: the system user the app runs as (None: Tether's own user)
    account: AppAccount | None = None


@dataclass(eq=False)
class RunningRelease:
    release_id: int
    environment_key: str
    port: int
    pid: int  # the leader of the release's process group (its log writer)
    pid_start: str  # the leader's start time: with `pid`, names this process and no other
    log_path: Path
    #: None for a release adopted after a restart of Tether (not a child of this process)
    _process: subprocess.Popen[bytes] | None = field(repr=False)
    _in_flight: int = field(default=0, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def adopted(self) -> bool:
        return self._process is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None (unknown for an adopted
        release that exited: -1)."""
        if self._process is not None:
            return self._process.poll()
        return None if process_matches(self.pid, self.pid_start) else -1

    @property
    def running(self) -> bool:
        return not self._stopped and self.returncode is None

    @property
    def output_tail(self) -> list[str]:
        """The last lines the app printed (for diagnostics; secrets masked)."""
        return logs.tail_text(self.log_path, TAIL_LINES)

    def exit_reason(self) -> str | None:
        if self._stopped:
            return "it was stopped"
        code = self.returncode
        if code is None:
            return None
        if self._process is None:
            return "the app exited (adopted after a restart of Tether: its exit code is unknown)"
        return _describe_exit(code)


@dataclass
class _Address:
    """An environment this runtime serves: on a port of its own, or (port None) only through the
    front door."""

    port: int | None
    proxy: ProxyServer | None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the app was killed by {name}"
    hint = {126: " (command not executable)", 127: " (command not found)"}.get(code, "")
    return f"the app exited with code {code}{hint}"


def _app_environment(spec_env: dict[str, str], port: int, account: AppAccount | None = None,
                     cwd: str | None = None) -> dict[str, str]:
    """A clean environment: the few basics, the app's own variables, and PORT. An app running
    as a user of its own has its release as HOME (Tether's home is not its), and its name as
    USER and LOGNAME."""
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env.setdefault("PATH", os.defpath)
    if account is not None:
        env["HOME"] = cwd or "/"
        env["USER"] = env["LOGNAME"] = account.name
    env["PYTHONUNBUFFERED"] = "1"  # so Python apps' output reaches the log line by line
    env.update(spec_env)
    env["PORT"] = str(port)
    return env


def _writer_environment() -> dict[str, str]:
    """The log writer's own environment: enough to import `tether`, nothing of the operator's."""
    env = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL") if name in os.environ}
    package_root = str(Path(tether.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return env


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, the state, first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rpartition(")")[2].split()


def process_start_token(pid: int) -> str | None:
    """The start time of a live process (field 22 of /proc/PID/stat, in clock ticks since
    boot), None when no live process has that pid (a zombie has ended)."""
    fields = _stat_fields(pid)
    if not fields or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def process_matches(pid: int | None, token: str | None) -> bool:
    """Whether `pid` is still the very process recorded with `token`, and leads its group (a
    release's leader does; a pid reused by another process has another start time)."""
    if not pid or not token or pid <= 1:
        return False
    fields = _stat_fields(pid)
    if not fields or len(fields) < 20 or fields[0] in ("Z", "X"):
        return False
    return fields[19] == token and fields[2] == str(pid)


def kill_process_group(pid: int, token: str, grace: float = TERM_GRACE) -> bool:
    """End a release's process group that this process did not start (a leftover of a previous
    life of Tether): SIGTERM, SIGKILL after `grace`. Only when `pid` is still the recorded
    process; returns whether it was."""
    if not process_matches(pid, token):
        return False
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process_matches(pid, token) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while process_matches(pid, token) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


class ProcessRuntime:
    """Runs releases as local processes behind one stable address per environment.

    Thread-safe: every public method may be called from any worker thread."""

    def __init__(self, host: str = "127.0.0.1", log_dir: Path | None = None) -> None:
        self.host = host
        self._log_dir = log_dir
        #: a log dir this runtime made itself (no `log_dir` given): removed by `shutdown`
        self._own_log_dir: Path | None = None
        self._proxies = ProxyHost()
        self._admin = threading.RLock()  # addresses: start/stop proxies (slow, blocking)
        self._routes = threading.Condition()  # routes and in-flight counters (fast, hot path)
        self._addresses: dict[str, _Address] = {}
        self._front: ProxyServer | None = None
        #: a Caddy driven in front of the front door (`drive_caddy`)
        self._caddy: CaddyRoutes | None = None
        self._front_host = host
        #: where the front door listens and how it names environments (None until opened)
        self.front_door: FrontDoor | None = None
        self._current: dict[str, RunningRelease] = {}
        self._releases: set[RunningRelease] = set()
        self._closed = False
        #: environments whose releases are being restored after a start: deploys wait for them
        self._restoring: dict[str, threading.Event] = {}
        self._shutdown_listeners: list[Callable[[list[int]], None]] = []

    @property
    def closed(self) -> bool:
        """True once `shutdown` (or `abandon`) began: nothing starts any more."""
        return self._closed

    # -- stable addresses ------------------------------------------------------------------

    def _listen(self, port: int, what: str, host: str | None = None) -> socket.socket:
        """A listening socket on host:port, or a UserError that says how to get one."""
        host = host or self.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP; without it every response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise UserError(f"port {port} on {host} is taken by another program "
                            f"({exc.strerror}): free it or pick another port for {what}") from exc
        return sock

    def open_front_door(self, port: int, domain: str = DEFAULT_DOMAIN,
                        host: str | None = None, sock: socket.socket | None = None
                        ) -> FrontDoor:
        """Start the front door on host:port (default: the runtime's host), or on `sock`, a
        socket bound and listening already (`tether up` holds its ports from its start): one
        listener that reaches every environment known to this runtime by its host name
        (`ENV.PROJECT.DOMAIN`). Port 0 takes a free one. Call once."""
        door = FrontDoor(domain=domain, port=port or 80)
        with self._admin:
            if self._front is not None:
                raise OperationError("the front door is open already")
            if sock is None:
                sock = self._listen(port, "the front door (--apps-port)", host)
            self._front_host = host or self.host
            try:
                self._front = self._proxies.serve(sock, ProxyApp(None, self, door))
            except BaseException:
                sock.close()
                raise
            self.front_door = FrontDoor(domain=door.domain, port=self._front.port)
        return self.front_door

    def drive_caddy(self, routes: CaddyRoutes) -> FrontDoor:
        """Put a Caddy in front of the front door (see `caddy.py`): from now on each
        environment gets a route there (HTTPS by Caddy) to the front door, which must be open
        (`open_front_door`, same domain); environments' URLs become Caddy's. Switches stay in
        the front door. Returns Caddy's door."""
        with self._admin:
            if self._front is None or self.front_door is None:
                raise OperationError("open the front door before putting Caddy in front of it")
            if self._caddy is not None:
                raise OperationError("Caddy is driven already")
            if routes.door.domain != self.front_door.domain:
                raise UserError(f"Caddy's domain {routes.door.domain} is not the front door's "
                                f"({self.front_door.domain}): give both the same")
            routes.upstream = f"{_display_host(self._front_host)}:{self.front_door.port}"
            routes.install()
            for key in self._addresses:
                routes.ensure_route(key)
            self._caddy = routes
            self.front_door = routes.door
        return routes.door

    def ensure_address(self, environment_key: str, port: int | None) -> str | None:
        """Make the environment reachable: through the front door (if open) and, given a port, on
        a stable proxy of its own on host:port (started once). Returns the port's URL, else the
        front door's URL for the environment (None without either)."""
        if self._caddy is not None:
            self._caddy.ensure_route(environment_key)
        with self._admin:
            existing = self._addresses.get(environment_key)
            if port is None:
                self._addresses[environment_key] = _Address(None, None)
                if existing is not None and existing.proxy is not None:
                    self._proxies.close_server(existing.proxy)
                return self._door_url(environment_key)
            url = f"http://{_display_host(self.host)}:{port}"
            if existing is not None and existing.port == port:
                return url
            for key, address in self._addresses.items():
                if address.port == port:
                    raise UserError(
                        f"port {port} is already the address of {key}: pick another port "
                        f"for {environment_key}"
                    )
            sock = self._listen(port, environment_key)
            app = ProxyApp(environment_key, self)
            try:
                proxy = self._proxies.serve(sock, app)
            except BaseException:
                sock.close()
                raise
            self._addresses[environment_key] = _Address(port, proxy)
            if existing is not None and existing.proxy is not None:  # it moved to another port
                self._proxies.close_server(existing.proxy)
        return url

    def _door_url(self, environment_key: str) -> str | None:
        if self.front_door is None:
            return None
        project, _, environment = environment_key.partition("/")
        return self.front_door.url_for(project, environment)

    def remove_address(self, environment_key: str) -> None:
        """Stop the environment's current release and its stable address."""
        with self._routes:
            release = self._current.pop(environment_key, None)
        with self._admin:
            address = self._addresses.pop(environment_key, None)
        if address is not None and address.proxy is not None:
            self._proxies.close_server(address.proxy)
        if self._caddy is not None:
            self._caddy.remove_route(environment_key)
        if release is not None:
            self.stop(release)

    def _close_addresses(self) -> None:
        """Stop every stable address and the front door."""
        with self._admin:
            proxies = [a.proxy for a in self._addresses.values() if a.proxy is not None]
            self._addresses.clear()
            if self._front is not None:
                proxies.append(self._front)
                self._front = None
        for proxy in proxies:
            self._proxies.close_server(proxy)

    # -- restoring after a start -------------------------------------------------------------

    def hold_for_restore(self, environment_keys: Sequence[str]) -> None:
        """Mark environments whose releases are about to be restored (adopted or started again):
        `wait_restored` blocks until `restored` is called for each, so a deploy never races the
        restore of its environment (which would leave two processes for it)."""
        with self._routes:
            for key in environment_keys:
                self._restoring.setdefault(key, threading.Event())

    def restored(self, environment_key: str) -> None:
        with self._routes:
            event = self._restoring.pop(environment_key, None)
        if event is not None:
            event.set()

    def wait_restored(self, environment_key: str, timeout: float | None = None) -> bool:
        """Wait until the environment's release has been restored (at once if it is not held);
        False on timeout."""
        with self._routes:
            event = self._restoring.get(environment_key)
        return event is None or event.wait(timeout)

    # -- releases -----------------------------------------------------------------------------

    def _default_log_path(self, spec: ReleaseSpec) -> Path:
        with self._admin:
            if self._log_dir is None:
                self._log_dir = self._own_log_dir = Path(
                    tempfile.mkdtemp(prefix="tether-app-logs-"))
            log_dir = self._log_dir
        return logs.release_log_path(log_dir, spec.environment_key, spec.release_id)

    def start(self, spec: ReleaseSpec) -> RunningRelease:
        """Start a release and wait until it is healthy; it gets no traffic until `switch`."""
        if self._closed:
            raise ReleaseFailed("Tether is stopping: the release was not started")
        port = free_port("127.0.0.1")  # releases are reached over loopback only
        log_path = spec.log_path or self._default_log_path(spec)
        follower = _Follower(log_path, logs.end_position(log_path), spec.log)
        release = self._spawn(spec, port, log_path)
        try:
            self._wait_healthy(release, spec, follower)
        except BaseException:
            self.stop(release, drain_timeout=0)  # waits for the writer: the last lines are in
            follower.flush()
            raise
        follower.flush()
        return release

    def _spawn(self, spec: ReleaseSpec, port: int, log_path: Path) -> RunningRelease:
        """Start the log writer, record it (`ReleaseSpec.on_start`), then let it start the app;
        returns once the app runs.

        The writer starts no app until it has read its settings on stdin, so the release is
        recorded (pid and start time) before its app exists: a crash of Tether at any point
        leaves either no app or an app whose process is known (adopted or stopped later)."""
        account = spec.account
        config = {
            "command": spec.command,
            "argv": command_argv(spec.command),
            "cwd": spec.cwd,
            "env": _app_environment(spec.env, port, account, spec.cwd),
            "user": account.uid if account else None,
            "group": account.gid if account else None,
            "groups": list(account.groups) if account else None,
            "user_name": account.name if account else None,
            "log_path": str(log_path),
            "max_bytes": spec.log_max_bytes,
            "backups": spec.log_backups,
            "secrets": [v for v in spec.secrets if v],
        }
        try:
            writer = subprocess.Popen(
                [sys.executable, "-P", "-m", "tether.runtime.logs"],
                env=_writer_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop kills the whole tree
            )
        except OSError as exc:
            raise ReleaseFailed(f"could not start the app's log writer: {exc.strerror}") from exc
        token = process_start_token(writer.pid)
        release = RunningRelease(
            release_id=spec.release_id,
            environment_key=spec.environment_key,
            port=port,
            pid=writer.pid,
            pid_start=token or "",
            log_path=log_path,
            _process=writer,
        )
        if token is None:
            # Without its start time the release could never be recognised after a crash of
            # Tether: neither adopted nor stopped (its pid alone may name another process by
            # then). No app runs yet: refusing the start is safe, running it is not.
            exited = writer.poll()
            self._abort(release)
            if exited is not None:
                raise ReleaseFailed(f"the app's log writer exited at once (code {exited})")
            raise ReleaseFailed(
                f"could not read the start time of the app's log writer (pid {writer.pid}, "
                f"/proc/{writer.pid}/stat): the release was not started, as it could not be "
                "recognised (adopted or stopped) after a restart of Tether")
        try:
            if spec.on_start is not None:
                spec.on_start(release)  # before the app exists: no app is ever unrecorded
        except BaseException:
            self._abort(release)
            raise
        with self._routes:
            closed = self._closed
            if not closed:
                self._releases.add(release)
        if closed:  # shutdown began meanwhile: it did not see this one
            self._abort(release)
            raise ReleaseFailed("Tether is stopping: the release was not started")
        try:
            report = self._handshake(writer, json.dumps(config).encode())
        except BaseException:
            self.stop(release, drain_timeout=0)
            raise
        if not report.startswith("started "):
            self.stop(release, drain_timeout=0)
            message = report.removeprefix("error ").strip() or "the log writer did not start"
            raise ReleaseFailed(message)
        return release

    @staticmethod
    def _abort(release: RunningRelease) -> None:
        """End a log writer that was not handed its settings: it started no app. Its stdin
        closed, it reads no settings and exits without starting one (see `logs.writer_main`);
        SIGKILL makes sure at once (it ignores SIGTERM). Its pipes are closed, not leaked."""
        process = release._process
        assert process is not None
        release._stopped = True
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        _kill_group(release.pid, signal.SIGKILL)  # not reaped yet: the pid is still ours
        process.wait()

    @staticmethod
    def _handshake(writer: subprocess.Popen[bytes], config: bytes) -> str:
        """Hand the writer its settings, and read its one-line report (or why it died)."""
        assert writer.stdin is not None and writer.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            writer.stdin.write(config)
        with contextlib.suppress(BrokenPipeError):
            writer.stdin.close()
        fd = writer.stdout.fileno()
        poller = select.poll()  # not select(): Tether may hold more than 1024 descriptors
        poller.register(fd, select.POLLIN)
        received = b""
        deadline = time.monotonic() + WRITER_START_TIMEOUT
        try:
            while b"\n" not in received:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "error the app's log writer did not start in time"
                if poller.poll(remaining * 1000):
                    chunk = os.read(fd, 65536)
                    if not chunk:  # it died before reporting (e.g. tether not importable)
                        break
                    received += chunk
        finally:
            writer.stdout.close()
        text = received.decode("utf-8", errors="replace")
        if b"\n" not in received:
            return "error the app's log writer failed: " + (text.strip()[-500:] or "no output")
        return text.split("\n", 1)[0]

    def adopt(self, release_id: int, environment_key: str, pid: int | None,
              pid_start: str | None, port: int | None,
              log_path: Path | str | None) -> RunningRelease | None:
        """Take charge of a release a previous life of Tether started, when its process is still
        the one recorded (same pid and start time); None when it is not (it ended, or its pid
        now belongs to another process, which is left alone)."""
        if self._closed or not port or not pid or not pid_start:
            return None
        if not process_matches(pid, pid_start):
            return None
        release = RunningRelease(
            release_id=release_id,
            environment_key=environment_key,
            port=port,
            pid=pid,
            pid_start=pid_start,
            log_path=Path(log_path) if log_path else Path(os.devnull),
            _process=None,
        )
        with self._routes:
            if self._closed:
                return None
            self._releases.add(release)
        return release

    def _wait_healthy(self, release: RunningRelease, spec: ReleaseSpec,
                      follower: _Follower) -> None:
        path = spec.health_path if spec.health_path.startswith("/") else "/" + spec.health_path
        url = f"http://127.0.0.1:{release.port}{path}"
        deadline = time.monotonic() + spec.health_timeout
        last = f"nothing listens on port {release.port} (the app must listen on $PORT)"
        with httpx.Client(trust_env=False, follow_redirects=False) as client:
            while True:
                follower.pump()
                code = release.returncode
                if code is not None:
                    raise ReleaseFailed(f"{_describe_exit(code)} before becoming healthy")
                if release._stopped:
                    raise ReleaseFailed("the release was stopped while it started")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ReleaseFailed(f"not healthy after {spec.health_timeout:g} s: {last}")
                try:
                    answer = client.get(url, timeout=max(0.1, min(5.0, remaining)))
                except httpx.ConnectError:
                    pass
                except httpx.TimeoutException:
                    last = f"GET {path} did not answer in time"
                except httpx.HTTPError as exc:
                    last = f"GET {path} failed: {type(exc).__name__}"
                else:
                    if 200 <= answer.status_code < 300:
                        return
                    last = f"GET {path} answered {answer.status_code}"
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def switch(self, environment_key: str, release: RunningRelease) -> RunningRelease | None:
        """From now on new requests to the stable address go to `release`; returns the previous
        current release, still running (the caller stops it)."""
        if release.environment_key != environment_key:
            raise OperationError(
                f"release {release.release_id} belongs to {release.environment_key}, "
                f"not {environment_key}"
            )
        reason = release.exit_reason()
        if reason is not None:
            raise OperationError(
                f"release {release.release_id} of {environment_key} is not running: {reason}"
            )
        with self._routes:
            previous = self._current.get(environment_key)
            self._current[environment_key] = release
        return previous if previous is not release else None

    def current(self, environment_key: str) -> RunningRelease | None:
        with self._routes:
            return self._current.get(environment_key)

    def releases(self) -> list[RunningRelease]:
        """Every release this runtime runs (started or adopted), current or not."""
        with self._routes:
            return list(self._releases)

    def stop(self, release: RunningRelease, drain_timeout: float = 10.0) -> None:
        """Let requests in flight finish (at most `drain_timeout` s), then end the process group:
        SIGTERM, SIGKILL after a grace period. Idempotent."""
        with self._routes:
            if self._current.get(release.environment_key) is release:
                del self._current[release.environment_key]  # new requests: 503, not a dying app
            deadline = time.monotonic() + drain_timeout
            while release._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._routes.wait(remaining)
        with release._stop_lock:
            if not release._stopped:
                release._stopped = True
                self._terminate(release)
        with self._routes:
            self._releases.discard(release)

    @staticmethod
    def _terminate(release: RunningRelease) -> None:
        process = release._process
        pgid = release.pid  # start_new_session: the writer leads the release's group
        if process is None:  # adopted: not our child, known by its pid and start time
            kill_process_group(release.pid, release.pid_start)
            return
        _kill_group(pgid, signal.SIGTERM)
        try:
            # The writer exits once the app has and its last lines are in the log file.
            process.wait(timeout=TERM_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(pgid, signal.SIGKILL)
            process.wait()
        # Children that outlived their parent (e.g. `sh -c "worker & server"`) go too.
        _kill_group(pgid, signal.SIGKILL)

    def on_shutdown(self, listener: Callable[[list[int]], None]) -> None:
        """Call `listener` with the ids of the releases `shutdown` stopped, once they are."""
        self._shutdown_listeners.append(listener)

    def shutdown(self) -> None:
        """Stop every stable address and every release this runtime started or adopted."""
        with self._routes:
            self._closed = True
            holds = list(self._restoring)
        for key in holds:
            self.restored(key)  # nobody waits for a restore that will not happen
        self._close_addresses()
        with self._routes:
            self._current.clear()
            releases = list(self._releases)
        threads = [
            threading.Thread(target=self.stop, args=(r,), kwargs={"drain_timeout": 2.0})
            for r in releases
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._proxies.close()
        if self._caddy is not None:  # its routes stay: Caddy answers 502 until a restart
            self._caddy.close()
        for listener in self._shutdown_listeners:
            with contextlib.suppress(Exception):
                listener([r.release_id for r in releases])
        if self._own_log_dir is not None:  # a temp dir of its own: nothing outlives it
            shutil.rmtree(self._own_log_dir, ignore_errors=True)

    def kill_all(self) -> list[int]:
        """The forced stop (`tether up` when its ordered stop takes too long): SIGKILL every
        release's process group at once, started or adopted (an adopted one only while its pid
        is still the recorded process), with no draining and no grace; nothing starts after.

        Unlike `shutdown`, it neither closes the stable addresses nor calls the `on_shutdown`
        listeners (the store may be what hangs): their rows still say `running`, so the next
        start of Tether finds the processes gone and starts the current releases again. Returns
        at once (at most ~1 s to reap the log writers); returns the ids of the releases
        killed."""
        with self._routes:
            self._closed = True
            releases = list(self._releases)
            self._releases.clear()
            self._current.clear()
            self._routes.notify_all()
        for release in releases:
            release._stopped = True
            process = release._process
            if process is None:
                if process_matches(release.pid, release.pid_start):
                    _kill_group(release.pid, signal.SIGKILL)
            elif process.returncode is None:  # not reaped: its pid still names its group
                _kill_group(release.pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        for release in releases:  # reap the writers (SIGKILL is not delayed by anything)
            if release._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    release._process.wait(timeout=max(0.0, deadline - time.monotonic()))
        return [r.release_id for r in releases]

    def abandon(self) -> list[RunningRelease]:
        """Stop the stable addresses but leave every release running, forgotten, as a crash of
        Tether would: the next runtime adopts them (crash tests; a hand-over to a new Tether).
        Returns the releases left running."""
        with self._routes:
            self._closed = True
            holds = list(self._restoring)
            releases = list(self._releases)
            self._releases.clear()
            self._current.clear()
        for key in holds:
            self.restored(key)
        self._close_addresses()
        self._proxies.close()
        return releases

    # -- Router protocol, used by the proxy on its loop thread -------------------------------

    def acquire(self, environment_key: str) -> RunningRelease | None:
        with self._routes:
            release = self._current.get(environment_key)
            if release is not None:
                release._in_flight += 1
            return release

    def knows(self, environment_key: str) -> bool:
        # a read of a dict the admin lock writes: atomic, and a request racing the creation or
        # removal of its environment may be answered either way
        return environment_key in self._addresses

    def done(self, upstream: object) -> None:
        assert isinstance(upstream, RunningRelease)
        with self._routes:
            upstream._in_flight -= 1
            if upstream._in_flight <= 0:
                self._routes.notify_all()


class _Follower:
    """Hands the new lines of a starting release's log to `ReleaseSpec.log`, in batches."""

    def __init__(self, path: Path, position: logs.Position | None,
                 sink: Callable[[Sequence[str]], None] | None) -> None:
        self.path, self.position, self.sink = path, position, sink
        self._last = 0.0

    def pump(self) -> None:
        if time.monotonic() - self._last >= LOG_BATCH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if self.sink is None:
            return
        for _ in range(20):  # bounded: an app printing without pause cannot hold a start
            try:
                chunk = logs.read_after(self.path, self.position)
            except OSError:
                return
            self.position = chunk.position
            if not chunk.lines:
                return
            with contextlib.suppress(Exception):  # a broken sink must not fail the release
                self.sink([entry.line for entry in chunk.lines])
