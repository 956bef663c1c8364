"""Local process runtime: runs each release of an environment's application as a process group
and serves it behind the environment's stable address (see `proxy.py`).

The deploy flow is `start` (new process, wait until healthy) -> `switch` (the stable address now
sends new requests to it) -> `stop` the previous release (after its requests in flight are done).
A release that fails to start never receives traffic, so the previous one keeps serving.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tether.errors import OperationError, UserError
from tether.net import free_port
from tether.runtime.proxy import ProxyApp, ProxyHost, ProxyServer

# Variables of the control plane's own environment an app may see: nothing that could hold a
# secret of the operator, only what a shell command needs to run at all.
PASSED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TAIL_LINES = 20


class ReleaseFailed(OperationError):
    """A release did not become healthy; the message says why (exit code, last health answer)."""


@dataclass
class ReleaseSpec:
    release_id: int
    environment_key: str  # e.g. "shop/test": one stable address per key
    command: str  # shell command line, run with /bin/sh -c
    env: dict[str, str]  # the app's variables; PORT is added by the runtime
    health_path: str = "/"
    cwd: str | None = None
    health_timeout: float = 30.0
    # Receives each line the app prints (stdout and stderr), from a reader thread.
    log: Callable[[str], None] | None = None


@dataclass(eq=False)
class RunningRelease:
    release_id: int
    environment_key: str
    port: int
    pid: int
    _process: subprocess.Popen[bytes] = field(repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)
    _tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES), repr=False
    )
    _in_flight: int = field(default=0, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._process.poll()

    @property
    def running(self) -> bool:
        return not self._stopped and self._process.poll() is None

    @property
    def output_tail(self) -> list[str]:
        """The last lines the app printed (for diagnostics; may contain anything the app logs)."""
        return list(self._tail)

    def exit_reason(self) -> str | None:
        code = self._process.poll()
        if self._stopped:
            return "it was stopped"
        if code is not None:
            return _describe_exit(code)
        return None


@dataclass
class _Address:
    port: int
    proxy: ProxyServer


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the app was killed by {name}"
    hint = {126: " (command not executable)", 127: " (command not found)"}.get(code, "")
    return f"the app exited with code {code}{hint}"


def _app_environment(spec_env: dict[str, str], port: int) -> dict[str, str]:
    """A clean environment: the few basics, the app's own variables, and PORT."""
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"  # so Python apps' output reaches the deploy log line by line
    env.update(spec_env)
    env["PORT"] = str(port)
    return env


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


class ProcessRuntime:
    """Runs releases as local processes behind one stable address per environment.

    Thread-safe: every public method may be called from any worker thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._proxies = ProxyHost()
        self._admin = threading.RLock()  # addresses: start/stop proxies (slow, blocking)
        self._routes = threading.Condition()  # routes and in-flight counters (fast, hot path)
        self._addresses: dict[str, _Address] = {}
        self._current: dict[str, RunningRelease] = {}
        self._releases: set[RunningRelease] = set()

    # -- stable addresses ------------------------------------------------------------------

    def ensure_address(self, environment_key: str, port: int) -> str:
        """Start (once) the stable proxy of the environment on host:port; returns its URL."""
        url = f"http://{_display_host(self.host)}:{port}"
        with self._admin:
            existing = self._addresses.get(environment_key)
            if existing is not None and existing.port == port:
                return url
            for key, address in self._addresses.items():
                if address.port == port:
                    raise UserError(
                        f"port {port} is already the address of {key}: pick another port "
                        f"for {environment_key}"
                    )
            # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
            # proto says TCP; without it every response waits ~40 ms for a delayed ACK.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, port))
                sock.listen(128)
            except OSError as exc:
                sock.close()
                raise UserError(
                    f"port {port} on {self.host} is taken by another program ({exc.strerror}): "
                    f"free it or pick another port for {environment_key}"
                ) from exc
            app = ProxyApp(environment_key, self)
            try:
                proxy = self._proxies.serve(sock, app)
            except BaseException:
                sock.close()
                raise
            self._addresses[environment_key] = _Address(port, proxy)
            if existing is not None:  # the environment moved to another port
                self._proxies.close_server(existing.proxy)
        return url

    def remove_address(self, environment_key: str) -> None:
        """Stop the environment's current release and its stable address."""
        with self._routes:
            release = self._current.pop(environment_key, None)
        with self._admin:
            address = self._addresses.pop(environment_key, None)
        if address is not None:
            self._proxies.close_server(address.proxy)
        if release is not None:
            self.stop(release)

    # -- releases -----------------------------------------------------------------------------

    def start(self, spec: ReleaseSpec) -> RunningRelease:
        """Start a release and wait until it is healthy; it gets no traffic until `switch`."""
        port = free_port("127.0.0.1")  # releases are reached over loopback only
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", spec.command],
                cwd=spec.cwd,
                env=_app_environment(spec.env, port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop kills the whole tree
            )
        except OSError as exc:
            where = f" in {spec.cwd}" if spec.cwd else ""
            raise ReleaseFailed(f"could not start the app{where}: {exc.strerror}") from exc
        release = RunningRelease(
            release_id=spec.release_id,
            environment_key=spec.environment_key,
            port=port,
            pid=process.pid,
            _process=process,
        )
        reader = threading.Thread(
            target=self._read_output,
            args=(release, spec.log),
            name=f"tether-app-{spec.environment_key}-{spec.release_id}",
            daemon=True,
        )
        release._reader = reader
        reader.start()
        with self._routes:
            self._releases.add(release)
        try:
            self._wait_healthy(release, spec)
        except BaseException:
            self.stop(release, drain_timeout=0)
            if release._reader is not None:
                release._reader.join(timeout=2)  # the last lines reach the log first
            raise
        return release

    @staticmethod
    def _read_output(release: RunningRelease, log: Callable[[str], None] | None) -> None:
        """Drain the app's output (a full pipe would block the app) and hand each line on."""
        stream = release._process.stdout
        assert stream is not None
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                release._tail.append(line)
                if log is not None:
                    with contextlib.suppress(Exception):  # a broken sink must not stall the app
                        log(line)

    def _wait_healthy(self, release: RunningRelease, spec: ReleaseSpec) -> None:
        path = spec.health_path if spec.health_path.startswith("/") else "/" + spec.health_path
        url = f"http://127.0.0.1:{release.port}{path}"
        deadline = time.monotonic() + spec.health_timeout
        last = f"nothing listens on port {release.port} (the app must listen on $PORT)"
        with httpx.Client(trust_env=False, follow_redirects=False) as client:
            while True:
                code = release._process.poll()
                if code is not None:
                    raise ReleaseFailed(f"{_describe_exit(code)} before becoming healthy")
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
        with self._routes:
            reason = release.exit_reason()
            if reason is not None:
                raise OperationError(
                    f"release {release.release_id} of {environment_key} is not running: {reason}"
                )
            previous = self._current.get(environment_key)
            self._current[environment_key] = release
        return previous if previous is not release else None

    def current(self, environment_key: str) -> RunningRelease | None:
        with self._routes:
            return self._current.get(environment_key)

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
        pgid = release.pid  # start_new_session: the app leads its own group
        _kill_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=TERM_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(pgid, signal.SIGKILL)
            process.wait()
        # Children that outlived their parent (e.g. `sh -c "worker & server"`) go too.
        _kill_group(pgid, signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop every stable address and every release this runtime started."""
        with self._admin:
            addresses = list(self._addresses.values())
            self._addresses.clear()
        for address in addresses:
            self._proxies.close_server(address.proxy)
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

    # -- Router protocol, used by the proxy on its loop thread -------------------------------

    def acquire(self, environment_key: str) -> RunningRelease | None:
        with self._routes:
            release = self._current.get(environment_key)
            if release is not None:
                release._in_flight += 1
            return release

    def done(self, upstream: object) -> None:
        assert isinstance(upstream, RunningRelease)
        with self._routes:
            upstream._in_flight -= 1
            if upstream._in_flight <= 0:
                self._routes.notify_all()
