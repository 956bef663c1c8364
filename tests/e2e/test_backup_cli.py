"""`tether backup …` and `tether service copy` against a real `tether up` (issue 10), on the
embedded PostgreSQL with backups kept on the embedded local-files storage: a backup listed once
complete; live copied to test while test's app is attached and serving, the app seeing live's
tables after; a backup downloaded as a plain `pg_dump -Fc` file and uploaded again; refusals
with exit 2; a deleted backup gone."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.conftest import ROOT, Tether

pytestmark = pytest.mark.e2e

APP = f"{sys.executable} examples/hello/app.py"


def tables_seen_by_app(url: str) -> list[str]:
    answer = httpx.get(url + "/status.json", timeout=10).json()
    return list(answer["services"]["DEFAULT_DATABASE_DSN"]["tables"])


def test_backup_copy_download_upload(tether: Tether, tmp_path: Path) -> None:
    t, name = tether, "bkcli"
    t.ok("project", "create", name, "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(ROOT), "--no-database")
    for env in ("test", "live"):
        t.ok("service", "add", env, "postgres", "-p", name)
        t.ok("deploy", env, "-p", name)
    dsn = {env: t.ok("project", "env-vars", "-e", env, "--all", "--get",
                     "DEFAULT_DATABASE_DSN", "-p", name).out.strip() for env in ("test", "live")}
    with psycopg.connect(dsn["live"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO orders (total) SELECT i FROM generate_series(1, 1000) i")
    with psycopg.connect(dsn["test"], autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (x int)")

    made = t.ok("backup", "create", "live", "-p", name, "--json").json()
    assert made["status"] == "completed" and made["operation"]["status"] == "succeeded"
    listed = t.ok("backup", "list", "-p", name, "--json").json()
    assert [b["id"] for b in listed] == [made["id"]]
    assert "DEFAULT" in t.ok("backup", "list", "live", "-p", name).out
    assert "pg_dump-custom" in t.ok("backup", "show", str(made["id"])).out

    # copy live -> test while test's app serves: every request answered, then live's tables
    shown = t.ok("project", "show", "-p", name, "--json").json()
    test_url = next(e["url"] for e in shown["environments"] if e["name"] == "test")
    assert tables_seen_by_app(test_url) == ["scratch"]
    failures: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    if client.get(test_url + "/health").status_code != 200:
                        failures.append("not 200")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        refused = t.cli("service", "copy", "DEFAULT", "--from", "live", "--to", "test",
                        "-p", name)
        assert refused.code == 2 and "--confirm DEFAULT" in refused.err, refused
        copied = t.ok("service", "copy", "DEFAULT", "--from", "live", "--to", "test",
                      "--confirm", "DEFAULT", "-p", name, "--json").json()
    finally:
        stop.set()
        poller.join(15)
    assert failures == []
    assert copied["operation"]["status"] == "succeeded"
    assert tables_seen_by_app(test_url) == ["orders"]

    # download: the plain pg_dump archive; upload it into test again
    dump = tmp_path / "live.dump"
    t.ok("backup", "download", str(made["id"]), "-o", str(dump))
    assert dump.read_bytes()[:5] == b"PGDMP"
    again = t.cli("backup", "download", str(made["id"]), "-o", str(dump))
    assert again.code == 2 and "nothing is overwritten" in again.err
    with psycopg.connect(dsn["test"], autocommit=True) as conn:
        conn.execute("DROP TABLE orders")
    uploaded = t.ok("backup", "upload", str(dump), "--to", "test", "DEFAULT", "--confirm",
                    "DEFAULT", "-p", name, "--json").json()
    assert uploaded["origin"] == "upload" and uploaded["operation"]["status"] == "succeeded"
    with psycopg.connect(dsn["test"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1000,)
    not_a_dump = tmp_path / "plain.sql"
    not_a_dump.write_text("-- PostgreSQL database dump\nDROP TABLE orders;\n")
    bad = t.cli("backup", "upload", str(not_a_dump), "--to", "test", "DEFAULT", "--confirm",
                "DEFAULT", "-p", name)
    assert bad.code == 2 and "pg_dump -Fc" in bad.err, bad
    with psycopg.connect(dsn["test"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1000,)

    # refusals, then delete
    assert t.cli("backup", "restore", str(made["id"]), "-p", name).code == 2
    nope = t.cli("backup", "create", "live", "NOPE", "-p", name)
    assert nope.code == 2 and "service list" in nope.err
    t.ok("backup", "delete", str(made["id"]))
    assert t.cli("backup", "show", str(made["id"])).code == 2
    assert made["id"] not in [b["id"] for b in
                              t.ok("backup", "list", "-p", name, "--json").json()]
