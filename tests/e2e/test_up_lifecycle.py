"""The life of a real `tether up` process: SIGTERM and SIGINT stop everything it started (the
embedded PostgreSQL, the application, the SQLite WAL) and a restart finds the data again; a
saved embedded PostgreSQL port taken by another program does not wedge the data dir; two nodes on
one PostgreSQL store keep their embedded servers apart."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql

from tests.e2e.conftest import BIN, ROOT, Tether, new_tether, processes_mentioning, stop_with

pytestmark = pytest.mark.e2e

#: what a stop may take here (the process itself forces its stop after 30 s)
STOP_BOUND = 45.0


@pytest.fixture
def tethers() -> Iterator[list[Tether]]:
    """`tether up` processes a test makes; each is stopped (SIGINT, then kill) and its base dir
    deleted at the end, whatever the test did. What a failed stop left behind (only processes
    that mention the test's own base dir) is killed, so it cannot pile up."""
    made: list[Tether] = []
    yield made
    for t in made:
        t.stop()
        for pid in processes_mentioning(t.data_dir.parent):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(t.data_dir.parent, ignore_errors=True)


def _app(t: Tether) -> tuple[str, Path]:
    """The example app, copied next to the data dir so its process is recognisable by its cwd
    and command line."""
    app_dir = t.data_dir.parent / "app"
    app_dir.mkdir(exist_ok=True)
    shutil.copy(ROOT / "examples" / "hello" / "app.py", app_dir / "app.py")
    return f"{sys.executable} {app_dir / 'app.py'}", app_dir


def _dsns(t: Tether) -> dict[str, str]:
    shown = t.ok("project", "env-vars", "-e", "test", "--all", "--reveal", "--json").json()
    return {v["name"]: v["value"] for v in shown if v["name"].endswith("_DATABASE_DSN")}


def _healthy(url: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _assert_all_stopped(t: Tether, code: int, how: str) -> None:
    assert code == 0, f"exit code {code} after {how}:\n{t.log_tail()}"
    left = processes_mentioning(t.data_dir.parent)
    assert left == {}, f"left running after {how}: {left}"
    for name in ("tether.db-wal", "tether.db-shm"):
        assert not (t.data_dir / name).exists(), f"{name} left after {how}"
    assert not (t.data_dir / "postgres" / "postmaster.pid").exists()


def test_sigterm_and_sigint_stop_everything_and_a_restart_finds_the_data(
        tethers: list[Tether]) -> None:
    t = new_tether("tether-up-signals-")
    tethers.append(t)
    t.start()
    command, app_dir = _app(t)
    project = t.ok("project", "create", "shop", "--app-command", command, "--health-path",
                   "/health", "--app-dir", str(app_dir), "--no-database", "--json").json()
    url = str(next(e["url"] for e in project["environments"] if e["name"] == "test"))
    t.ok("service", "add", "test", "postgres", "--provision")
    dsn = t.ok("project", "env-vars", "-e", "test", "--all", "--get",
               "DEFAULT_DATABASE_DSN").out.strip()
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    t.ok("deploy", "test")
    assert _healthy(url)
    running = processes_mentioning(t.data_dir.parent)
    # the scan sees what must go: tether up, the embedded PostgreSQL and the app
    assert any("postgres" in c and str(t.data_dir) in c for c in running.values()), running
    assert any(str(app_dir) in c for c in running.values()), running

    _assert_all_stopped(t, stop_with(t, signal.SIGTERM, timeout=STOP_BOUND), "SIGTERM")

    t.start()
    assert {i["prefix"]: i["state"] for i in t.ok(
        "service", "list", "test", "-p", "shop", "--json").json()} == {"DEFAULT": "attached"}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (7,)
    assert _healthy(url), t.log_tail()  # the release came back

    _assert_all_stopped(t, stop_with(t, signal.SIGINT, timeout=STOP_BOUND), "SIGINT")


def test_a_taken_embedded_postgres_port_moves_the_server(tethers: list[Tether]) -> None:
    t = new_tether("tether-up-port-")
    tethers.append(t)
    t.start()
    t.ok("project", "create", "shop", "--no-database")
    added = t.ok("service", "add", "test", "postgres", "--provision", "--json").json()
    assert added["state"] == "pending attachment"
    dsn = _dsns(t)["DEFAULT_DATABASE_DSN"]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE kept (x int)")
    assert stop_with(t, signal.SIGINT, timeout=STOP_BOUND) == 0
    state_file = t.data_dir / "embedded-postgres.json"
    saved = int(json.loads(state_file.read_text())["port"])

    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
    try:
        squatter.bind(("127.0.0.1", saved))
        squatter.listen(1)
        t.start()
        moved = int(json.loads(state_file.read_text())["port"])
        assert moved != saved
        # made on local-postgres, re-pointed at the same server on its new port
        t.ok("service", "add", "test", "postgres", "--prefix", "MORE", "--provision")
        dsns = _dsns(t)
        assert urlsplit(dsns["MORE_DATABASE_DSN"]).port == moved
        with psycopg.connect(dsns["MORE_DATABASE_DSN"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # the instance made before the move follows its server
        assert urlsplit(dsns["DEFAULT_DATABASE_DSN"]).port == moved
        with psycopg.connect(dsns["DEFAULT_DATABASE_DSN"]) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    finally:
        squatter.close()
    # A second signal while stopping does not cut the stop short.
    code = stop_with(t, signal.SIGTERM, signal.SIGINT, between=0.2, timeout=STOP_BOUND)
    _assert_all_stopped(t, code, "SIGTERM then SIGINT")


def test_an_error_or_a_signal_while_starting_stops_what_was_started(
        tethers: list[Tether]) -> None:
    t = new_tether("tether-up-error-")
    tethers.append(t)
    t.data_dir.mkdir()
    # read only after the embedded PostgreSQL started: the start fails half-way
    clusters = t.data_dir / "clusters.toml"
    clusters.write_text('[[cluster]]\nname = "eu"\nkind = "postgres"\nregion = "eu-aws"\n'
                        'url_env = "TETHER_TEST_UNSET_URL"\n')
    log = t.data_dir.parent / "up.log"
    command = [str(BIN / "tether"), "up", "--data-dir", str(t.data_dir), "--port", str(t.port)]
    with log.open("wb") as out:
        proc = subprocess.run(command, env=t.env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=120, check=False)
    text = log.read_text()
    assert proc.returncode == 2, text
    assert "TETHER_TEST_UNSET_URL is not set" in " ".join(text.split())
    assert "PostgreSQL started" in text  # it had started
    _assert_all_stopped(t, 0, "an error while starting")

    # SIGTERM once the embedded PostgreSQL runs, while the rest still starts
    clusters.unlink()
    log.write_bytes(b"")
    with log.open("ab") as out:
        t.proc = subprocess.Popen(command, env=t.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "PostgreSQL started" not in log.read_text():
            assert time.monotonic() < deadline and t.proc.poll() is None, log.read_text()
            time.sleep(0.01)
        _assert_all_stopped(t, stop_with(t, signal.SIGTERM, timeout=STOP_BOUND),
                            "SIGTERM while starting")


def _store_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def test_two_nodes_on_one_store_keep_their_embedded_servers(
        tethers: list[Tether], pg_server: Any) -> None:
    database = f"tether_store_{secrets.token_hex(4)}"
    shared = {"TETHER_DATABASE_URL": _store_database(pg_server.admin_url, database),
              "TETHER_SECRET_KEY": Fernet.generate_key().decode()}
    try:
        a = new_tether("tether-node-a-", shared)
        b = new_tether("tether-node-b-", shared)
        tethers.extend([a, b])
        a.start()
        a.ok("project", "create", "shop", "--no-database")
        a.ok("service", "add", "test", "postgres", "--provision")
        dsn = a.ok("project", "env-vars", "-e", "test", "--all", "--get",
                   "DEFAULT_DATABASE_DSN").out.strip()
        b.start()

        # the instance made through node A is still on A's server: reachable, and managed
        # there (a remove through node B really drops it)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        b.ok("service", "remove", "test", "DEFAULT", "--confirm", "DEFAULT")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=5).close()

        # each node registered its own embedded servers, under its own names
        listed = b.ok("cluster", "list", "--json").json()
        embedded = {c["name"]: c for c in listed if c["managed"] and c["region"] == "local"}
        assert "local-postgres" not in embedded and "local-media" not in embedded
        assert len(embedded) == 4
        nodes = [(t.data_dir / "node-up.id").read_text().strip() for t in (a, b)]
        assert nodes[0] != nodes[1]
        for node in nodes:
            short = node.rsplit("-", 1)[-1][:6]
            for name in (f"local-postgres-{short}", f"local-media-{short}"):
                assert embedded[name]["node_id"] == node, (name, listed)

        for t in (b, a):
            assert stop_with(t, signal.SIGTERM, timeout=STOP_BOUND) == 0, t.log_tail()
            assert processes_mentioning(t.data_dir.parent) == {}
    finally:
        for t in tethers:
            t.stop()
        _drop_database(pg_server.admin_url, database)


def test_tether_up_finds_and_repairs_drift_on_its_own(tethers: list[Tether]) -> None:
    """The reconciler runs inside `tether up` (every TETHER_RECONCILE_INTERVAL seconds): a right
    granted behind Tether's back is found, repaired and recorded in the instance's history."""
    t = new_tether("tether-up-drift-", {"TETHER_RECONCILE_INTERVAL": "1"})
    tethers.append(t)
    t.start()
    t.ok("project", "create", "shop", "--no-database")
    t.ok("service", "add", "test", "postgres", "--provision")
    dsn = t.ok("project", "env-vars", "-e", "test", "--all", "--get",
               "DEFAULT_DATABASE_DSN").out.strip()
    public_may_connect = "SELECT has_database_privilege('public', current_database(), 'CONNECT')"
    with psycopg.connect(dsn, autocommit=True) as conn:  # the owner may grant this itself
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(
            sql.Identifier(database)))
        assert conn.execute(public_may_connect).fetchone() == (True,)

    def actions() -> list[str]:
        shown = t.ok("service", "show", "test", "DEFAULT", "-p", "shop", "--json").json()
        return [h["action"] for h in shown["history"] if h["actor"] == "reconciler"]

    deadline = time.monotonic() + 60
    while "drift repaired" not in actions() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert actions()[-2:] == ["drift found", "drift repaired"], t.log_tail()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(public_may_connect).fetchone() == (False,)
    shown = t.ok("service", "show", "test", "DEFAULT", "-p", "shop", "--json").json()
    assert shown["drift"] is None and shown["observed_at"] is not None
