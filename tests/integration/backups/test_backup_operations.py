"""Backups as operations of the worker (tether.actions.backups, tether.engine.backups): on the
suite's real PostgreSQL, with files kept on a local-files storage cluster: create, list, restore
into the same and another environment, copy live -> test, upload a plain `pg_dump -Fc`, verify
(and catch a damaged file), delete; refusals with the fix in the message."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from tests.conftest import PgServer
from tests.plane import backup_plane, instance_credentials, wait_op
from tether.actions import backups, services
from tether.actions.common import Context
from tether.backups.postgres import summary
from tether.backups.storage import backup_storage, install_id
from tether.engine.core import Engine
from tether.errors import NotFound, UserError
from tether.servers.postgres import EmbeddedPostgres
from tether.store.models import Backup, BackupFile, Cluster
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, pg_server: PgServer, unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the suite's PostgreSQL and a local-files cluster to keep backups on, a
    project with DEFAULT provisioned in test and live; every instance removed at the end."""
    with backup_plane(tmp_path, "postgres", pg_server.admin_url, f"pg{unique_id}", "postgres",
                      app_command="python -m http.server") as made:
        yield made.ctx, made.engine


def dsn_of(ctx: Context, env_name: str, prefix: str = "DEFAULT") -> str:
    c = instance_credentials(ctx, env_name, prefix)
    return (f"host={c['host']} port={c['port']} user={c['user']} "
            f"password={c['password']} dbname={c['database']}")


def fill(dsn: str, rows: int, label: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, label text, data bytea)")
        conn.execute("INSERT INTO items (label, data) SELECT %s || i, %s "
                     "FROM generate_series(1, %s) AS i", (label, os.urandom(2048), rows))


def finished(ctx: Context, view: dict[str, Any]) -> dict[str, Any]:
    op = view["operation"]
    assert op is not None
    return wait_op(ctx, op["id"], timeout=120)


def test_backup_restore_copy_and_delete(env: tuple[Context, Engine], tmp_path: Path) -> None:
    ctx, _ = env
    live, test = dsn_of(ctx, "live"), dsn_of(ctx, "test")
    fill(live, 500, "live")
    fill(test, 7, "test")
    made = backups.create(ctx, "shop", "live")
    assert made["status"] == "running" and not made["restorable"]
    assert backups.list_backups(ctx, "shop") == []  # not listed until complete
    op = finished(ctx, made)
    assert op["status"] == "succeeded", op
    assert str(op["progress"]).startswith("DEFAULT: storing")  # the last step it reported
    shown = backups.show(ctx, int(made["id"]))
    assert shown["status"] == "completed" and shown["restorable"]
    assert [f["prefix"] for f in shown["files"]] == ["DEFAULT"]
    assert [b["id"] for b in backups.list_backups(ctx, "shop", "live")] == [made["id"]]
    before = summary(live)

    # the file is sealed in the backup storage: nothing readable in staging or in the store
    with ctx.store.session() as s:
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        cluster = s.get(Cluster, s.get(Backup, made["id"]).storage_cluster_id)
        storage = backup_storage(cluster_spec(ctx.box, cluster), install_id(ctx.box))
        assert storage.size(str(f.storage_key)) == f.size
        assert f.summary and f.summary["tables"]["public.items"]["rows"] == 500
    assert not any((tmp_path / "backups" / "staging").iterdir())

    # restore into the same environment after a change
    with psycopg.connect(live, autocommit=True) as conn:
        conn.execute("DELETE FROM items WHERE id > 10")
    with pytest.raises(UserError, match="--confirm DEFAULT"):
        backups.restore(ctx, int(made["id"]))
    op = finished(ctx, backups.restore(ctx, int(made["id"]), confirm="DEFAULT"))
    assert op["status"] == "succeeded", op
    assert summary(live).tables == before.tables

    # into another environment of the project
    op = finished(ctx, backups.restore(ctx, int(made["id"]), to_env="test", confirm="DEFAULT"))
    assert op["status"] == "succeeded", op
    assert summary(test).tables == before.tables

    # copy test -> live: live gets test's data
    fill(test, 3, "copied")
    copied = summary(test)
    op = finished(ctx, backups.copy(ctx, "shop", "DEFAULT", "test", "live", confirm="DEFAULT"))
    assert op["status"] == "succeeded", op
    assert summary(live).tables == copied.tables
    assert {b["origin"] for b in backups.list_backups(ctx, "shop")} == {"manual", "copy"}

    # delete: gone from lists, from storage, and cannot be restored
    gone = backups.delete(ctx, int(made["id"]))
    assert finished(ctx, gone)["status"] == "succeeded"
    assert storage.size(str(f.storage_key)) is None
    with pytest.raises(NotFound):
        backups.restore(ctx, int(made["id"]), confirm="DEFAULT")
    assert int(made["id"]) not in [b["id"] for b in backups.list_backups(ctx, "shop")]


def test_verify_passes_and_catches_a_damaged_file(env: tuple[Context, Engine]) -> None:
    ctx, _ = env
    fill(dsn_of(ctx, "live"), 200, "v")
    made = backups.create(ctx, "shop", "live", verify=True)
    op = finished(ctx, made)
    assert op["status"] == "succeeded", op
    shown = backups.show(ctx, int(made["id"]))
    assert shown["verification"] == "passed", shown
    with ctx.store.session() as s:
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        cluster = s.get(Cluster, s.get(Backup, made["id"]).storage_cluster_id)
        storage = backup_storage(cluster_spec(ctx.box, cluster), install_id(ctx.box))
        key = str(f.storage_key)
    # flip one byte of the stored file, in place
    staged = Path(ctx.data_dir) / "damaged.tbk"
    storage.get(key, staged)
    data = bytearray(staged.read_bytes())
    data[len(data) // 2] ^= 0x01
    staged.write_bytes(bytes(data))
    storage.put(key, staged)
    op = finished(ctx, backups.verify(ctx, int(made["id"])))
    assert op["status"] == "failed"
    shown = backups.show(ctx, int(made["id"]))
    assert shown["verification"] == "failed"
    assert "checksum" in str(shown["verification_detail"]).lower()
    # the scratch database is gone
    with psycopg.connect(dsn_of(ctx, "live"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                            "'tether\\_v%%'").fetchone() == (0,)


def test_upload_of_a_plain_dump_and_refusals(env: tuple[Context, Engine], tmp_path: Path,
                                             pg_server: PgServer) -> None:
    ctx, _ = env
    live = dsn_of(ctx, "live")
    fill(live, 42, "elsewhere")
    wanted = summary(live)
    dump = tmp_path / "plain.dump"
    with open(dump, "wb") as out:
        subprocess.run([str(EmbeddedPostgres.bin_dir() / "pg_dump"), "-Fc", "--no-owner",
                        f"--dbname={live}"], stdout=out, check=True, timeout=60)
    fill(live, 1, "changed")
    engine = backups.upload_engine(ctx, "shop", "test", "DEFAULT", "DEFAULT")
    engine.check_plain(dump.read_bytes()[:16])
    with pytest.raises(UserError, match="pg_dump -Fc"):
        engine.check_plain(b"-- PostgreSQL database dump\n")
    with pytest.raises(UserError, match="--confirm DEFAULT"):
        backups.upload_engine(ctx, "shop", "test", "DEFAULT", None)
    view = backups.upload(ctx, "shop", "test", "DEFAULT", [dump.read_bytes()],
                          confirm="DEFAULT")
    assert view["origin"] == "upload" and view["status"] == "completed"
    op = finished(ctx, view)
    assert op["status"] == "succeeded", op
    assert summary(dsn_of(ctx, "test")).tables == wanted.tables

    # refusals: an unknown prefix, a set with no such prefix, restore into a missing service
    with pytest.raises(NotFound, match="service list"):
        backups.create(ctx, "shop", "live", ["NOPE"])
    made = backups.create(ctx, "shop", "live")
    assert finished(ctx, made)["status"] == "succeeded"
    with pytest.raises(UserError, match="holds no OTHER"):
        backups.restore(ctx, int(made["id"]), prefix="OTHER", confirm="OTHER")
    with pytest.raises(UserError, match="different environments"):
        backups.copy(ctx, "shop", "DEFAULT", "live", "live", confirm="DEFAULT")


def test_media_and_database_backed_up_together_and_verified(env: tuple[Context, Engine]) -> None:
    """An environment's whole backup takes each service with data through its own engine
    (PostgreSQL and local media files here), verifies both, and restores one of them."""
    ctx, _ = env
    view = services.add(ctx, "shop", "live", "local-media", "MEDIA", provision=True)
    assert wait_op(ctx, view["operation"]["id"])["status"] == "succeeded"
    media = Path(instance_credentials(ctx, "live", "MEDIA")["directory"])
    (media / "img").mkdir()
    (media / "img" / "logo.png").write_bytes(os.urandom(50_000))
    (media / "notes.txt").write_text("kept")
    fill(dsn_of(ctx, "live"), 20, "m")
    made = backups.create(ctx, "shop", "live", verify=True)
    op = finished(ctx, made)
    assert op["status"] == "succeeded", op
    shown = backups.show(ctx, int(made["id"]))
    assert {f["prefix"]: f["format"] for f in shown["files"]} == {
        "DEFAULT": "pg_dump-custom", "MEDIA": "tether-media-tar-1"}
    assert shown["verification"] == "passed", shown["verification_detail"]

    (media / "notes.txt").unlink()
    (media / "img" / "logo.png").write_bytes(b"changed")
    (media / "later.txt").write_text("not in the backup")
    with pytest.raises(UserError, match="--prefix"):
        backups.restore(ctx, int(made["id"]), confirm="MEDIA")
    op = finished(ctx, backups.restore(ctx, int(made["id"]), prefix="MEDIA", confirm="MEDIA"))
    assert op["status"] == "succeeded", op
    assert (media / "notes.txt").read_text() == "kept"
    assert len((media / "img" / "logo.png").read_bytes()) == 50_000
    assert not (media / "later.txt").exists()
    # a media backup is refused for a database of the same prefix
    view = services.add(ctx, "shop", "test", "postgres", "MEDIA", provision=True)
    assert wait_op(ctx, view["operation"]["id"])["status"] == "succeeded"
    with pytest.raises(UserError, match="same kind"):
        backups.restore(ctx, int(made["id"]), prefix="MEDIA", to_env="test",
                        confirm="MEDIA")
