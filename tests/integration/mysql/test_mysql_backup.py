"""MySQL/MariaDB backups (tether.backups.mysql) on the suite's real MariaDB, with instances made by
the real MySQLProvider: sealed round trips into the same and into another instance, a plain
`mariadb-dump --databases` file of another database restored into the instance's database only,
refused statements, a damaged backup refused with the database untouched, a restore killed
midway and a second one converging."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from cryptography.fernet import Fernet

from tests.integration.mysql.conftest import MySQLServer
from tether.backups import mysql as engine
from tether.backups.mysql import (
    FORMAT,
    BackupError,
    MissingDumpProgram,
    MySQLTarget,
    NotAMySQLDump,
    RefusedStatement,
    dump_sealed,
    dump_stream,
    restore_plain,
    restore_sealed,
    restore_stream,
    split_statements,
    summary,
)
from tether.backups.sealed import ChecksumMismatch, file_sha256, partial_path
from tether.crypto import SecretBox
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.mysql import MySQLProvider

pytestmark = pytest.mark.integration

PROVIDER = MySQLProvider()
REPO = Path(__file__).resolve().parents[3]
BLOB = 3 << 20  # LONGBLOB values of a few MB
ITEMS = 20000


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def instance(mysql_cluster: ClusterSpec,
             make_mysql_names: Callable[[str], ResourceNames]) -> Callable[[str], MySQLTarget]:
    """Provision instances with the real provider (deprovisioned at the end by the fixture)."""

    def make(suffix: str) -> MySQLTarget:
        names = make_mysql_names(suffix)
        creds = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
        return MySQLTarget.from_credentials(creds.values)

    return make


def connect(target: MySQLTarget, **kwargs: Any) -> pymysql.Connection:
    return pymysql.connect(host=target.host, port=target.port, user=target.user,
                           password=target.password, database=target.database,
                           autocommit=True, charset="utf8mb4", connect_timeout=5, **kwargs)


def run(target: MySQLTarget, *statements: str, args: Any = None) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with connect(target) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)
            rows = list(cur.fetchall())
    return rows


TEXT = "Grüße, 東京, emoji 🦀🎉, quote ' backslash \\ semicolon ; -- not a comment"


def fill(target: MySQLTarget) -> None:
    """Tables with rows (AUTO_INCREMENT with a gap, one without a key and with duplicates),
    LONGBLOBs of a few MB, utf8mb4 text, NULLs, a view, a trigger, a procedure, a function,
    an event (disabled), a foreign key."""
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute("""
            CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL,
                                price DECIMAL(10, 2), ratio DOUBLE, note TEXT, created DATETIME(6),
                                flags BIT(8), doc JSON, KEY items_name (name))
                CHARACTER SET utf8mb4""")
        cur.execute("SET SESSION max_recursive_iterations = %s", (ITEMS + 1,))
        cur.execute("""
            INSERT INTO items (name, price, ratio, note, created, flags, doc)
            WITH RECURSIVE seq (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s)
            SELECT CONCAT('item ', i), (i %% 997) / 7, i / 3, IF(i %% 10 = 0, NULL, %s),
                   TIMESTAMP('2026-01-01') + INTERVAL i SECOND, i %% 256,
                   JSON_OBJECT('i', i, 'even', i %% 2 = 0) FROM seq""", (ITEMS, TEXT))
        cur.execute("DELETE FROM items WHERE id > %s", (ITEMS - 5,))  # AUTO_INCREMENT > max(id)
        cur.execute("CREATE TABLE events_log (kind VARCHAR(20), at DATE)")
        cur.execute("INSERT INTO events_log VALUES ('same', '2026-01-01'), "
                    "('same', '2026-01-01'), ('same', '2026-01-01'), (NULL, NULL), ('NULL', NULL)")
        cur.execute("CREATE TABLE blobs (id INT PRIMARY KEY, item_id INT, data LONGBLOB NOT NULL,"
                    " FOREIGN KEY (item_id) REFERENCES items (id))")
        for i in range(3):
            cur.execute("INSERT INTO blobs VALUES (%s, %s, %s)", (i, i + 1, os.urandom(BLOB)))
        cur.execute("CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what TEXT)")
        cur.execute("CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW "
                    "INSERT INTO audit (what) VALUES (CONCAT('added ', NEW.name))")
        cur.execute("CREATE VIEW expensive AS SELECT id, name, price FROM items "
                    "WHERE price > 100")
        cur.execute("CREATE PROCEDURE add_item(IN n VARCHAR(200)) "
                    "BEGIN INSERT INTO items (name) VALUES (n); END")
        cur.execute("CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2")
        cur.execute("CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE "
                    "DO DELETE FROM audit WHERE id < 0")


def definers(server: MySQLServer, database: str) -> set[str]:
    """Every definer of the views, triggers, routines and events of a database."""
    found: set[str] = set()
    for sql in ("SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s",
                "SELECT DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                "SELECT DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
                "SELECT DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s"):
        found.update(row[0] for row in server.query(sql, (database,)))
    return found


@pytest.fixture
def filled(instance: Callable[[str], MySQLTarget]) -> MySQLTarget:
    target = instance("a")
    fill(target)
    return target


def drop_everything(target: MySQLTarget) -> None:
    run(target, "DROP VIEW expensive", "DROP TABLE blobs, audit, events_log, items",
        "DROP PROCEDURE add_item", "DROP FUNCTION double_it", "DROP EVENT nightly")


def check_filled(before: engine.DatabaseSummary) -> None:
    assert before.tables["items"].rows == ITEMS - 5
    assert before.tables["items"].auto_increment > ITEMS  # past the deleted ids (and more:
    # INSERT ... SELECT reserves ids in batches)
    assert before.tables["blobs"].rows == 3
    assert before.tables["events_log"].rows == 5
    assert {("expensive", "VIEW"), ("items_audit", "TRIGGER"), ("add_item", "PROCEDURE"),
            ("double_it", "FUNCTION"), ("nightly", "EVENT"), ("items", "BASE TABLE")
            } <= set(before.objects)


# -- round trips -------------------------------------------------------------------------------


def test_backup_drop_restore_gives_the_same_database(filled: MySQLTarget, box: SecretBox,
                                                     tmp_path: Path,
                                                     mysql_server: MySQLServer) -> None:
    assert FORMAT == "mysql-sql-v1"
    before = summary(filled)
    check_filled(before)

    dest = tmp_path / "a.sealed"
    info = dump_sealed(filled, dest, box)
    assert info.size == dest.stat().st_size and info.sha256 == file_sha256(dest)
    assert info.plain_size > 2 * 3 * BLOB  # hex of random blobs
    assert not partial_path(dest).exists()

    drop_everything(filled)
    assert summary(filled).tables == {}
    restore_sealed(filled, dest, info.key_sealed, box, info.sha256)
    after = summary(filled)
    assert after == before
    # the text survived byte for byte, the trigger fires, AUTO_INCREMENT goes on after the gap
    assert run(filled, "SELECT note FROM items WHERE id = 1") == [(TEXT,)]
    run(filled, "CALL add_item('new')")
    assert run(filled, "SELECT id FROM items WHERE name = 'new'") == [
        (before.tables["items"].auto_increment,)]
    assert run(filled, "SELECT what FROM audit") == [("added new",)]
    assert run(filled, "SELECT double_it(21)") == [(42,)]
    assert definers(mysql_server, filled.database) == {f"{filled.user}@%"}


def test_restore_over_changed_data_replaces_it(filled: MySQLTarget, box: SecretBox,
                                               tmp_path: Path) -> None:
    """Replace: rows changed since the backup come back, objects made since are gone."""
    before = summary(filled)
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    run(filled, "DELETE FROM items WHERE id % 3 = 0 AND id > 3",
        "UPDATE events_log SET kind = 'changed'", "CREATE TABLE later (x INT)",
        "CREATE VIEW later_view AS SELECT 1 AS one",
        "CREATE PROCEDURE later_proc() SELECT 1", "DROP TRIGGER items_audit")
    assert summary(filled) != before
    restore_sealed(filled, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    assert summary(filled) == before


def test_restore_into_another_instance_belongs_to_its_user(
        filled: MySQLTarget, instance: Callable[[str], MySQLTarget], box: SecretBox,
        tmp_path: Path, mysql_server: MySQLServer) -> None:
    other = instance("b")
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    restore_sealed(other, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)

    assert summary(other) == summary(filled)
    # the definers are B's user (the dump named A's, which B's user could not have set)
    assert definers(mysql_server, other.database) == {f"{other.user}@%"}
    # A's user has no rights in B: no grant, and its login is refused on B's database
    grants = " ".join(row[0] for row in mysql_server.query(f"SHOW GRANTS FOR '{filled.user}'@'%'"))
    assert other.database.replace("_", "\\_") not in grants
    with pytest.raises(pymysql.err.OperationalError):
        connect(MySQLTarget(host=filled.host, port=filled.port, user=filled.user,
                            password=filled.password, database=other.database))
    # B works: the trigger fires as B's user
    run(other, "CALL add_item('in b')")
    assert run(other, "SELECT what FROM audit") == [("added in b",)]


# -- plain dumps made elsewhere ----------------------------------------------------------------


@pytest.fixture
def foreign_dump(mysql_server: MySQLServer, unique_id: str,
                 tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain `mariadb-dump --databases` file of a database that is no instance's, made by the
    admin: CREATE DATABASE/USE of that name, DEFINER=the admin. The database is dropped again
    before the test runs, so whatever the restore would create there would show."""
    source = f"tether_t{unique_id}src"
    with mysql_server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{source}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{source}`")
        cur.execute("CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT, "
                    "img MEDIUMBLOB)")
        cur.execute("INSERT INTO notes (body, img) VALUES (%s, %s), ('two', NULL)",
                    (TEXT, os.urandom(4096)))
        cur.execute("CREATE TABLE counter (n INT)")
        cur.execute("INSERT INTO counter VALUES (0)")
        cur.execute("CREATE TRIGGER notes_count AFTER INSERT ON notes FOR EACH ROW "
                    "UPDATE counter SET n = n + 1")
        cur.execute("CREATE VIEW note_bodies AS SELECT body FROM notes")
    path = tmp_path / "plain.sql"
    env = dict(os.environ, MYSQL_PWD=mysql_server.password)  # the test's own admin, not Tether
    try:
        with open(path, "wb") as out:
            subprocess.run(["mariadb-dump", "--protocol=tcp", f"--host={mysql_server.host}",
                            f"--port={mysql_server.port}", f"--user={mysql_server.user}",
                            "--single-transaction", "--routines", "--triggers",
                            "--add-drop-database", "--databases", source],
                           stdout=out, env=env, check=True)
    finally:
        mysql_server.query(f"DROP DATABASE IF EXISTS `{source}`")
    text = path.read_bytes()
    assert f"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{source}`".encode() in text
    assert f"USE `{source}`".encode() in text
    assert f"DEFINER=`{mysql_server.user}`".encode() in text
    yield path, source


def schemas(server: MySQLServer) -> set[str]:
    return {row[0] for row in server.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")}


def test_plain_dump_of_another_database_lands_in_the_instance_only(
        instance: Callable[[str], MySQLTarget], foreign_dump: tuple[Path, str],
        mysql_server: MySQLServer) -> None:
    path, source = foreign_dump
    target = instance("p")
    run(target, "CREATE TABLE old_stuff (x INT)")
    databases = schemas(mysql_server)

    restore_plain(target, path)

    assert schemas(mysql_server) == databases  # nothing created (nor dropped) elsewhere
    assert source not in databases
    result = summary(target)
    assert set(result.tables) == {"notes", "counter"}
    assert ("note_bodies", "VIEW") in result.objects and ("notes_count", "TRIGGER") in \
        result.objects
    assert result.tables["notes"].rows == 2
    assert run(target, "SELECT body FROM notes WHERE id = 1") == [(TEXT,)]
    assert definers(mysql_server, target.database) == {f"{target.user}@%"}
    run(target, "INSERT INTO notes (body) VALUES ('three')")
    assert run(target, "SELECT n FROM counter") == [(1,)]
    # a second upload converges to the same content
    restore_plain(target, path)
    assert summary(target) == result


@pytest.mark.parametrize("statement", [
    "GRANT ALL PRIVILEGES ON *.* TO CURRENT_USER",
    "SET PASSWORD = PASSWORD('changed-by-the-dump')",
    "CREATE USER 'intruder'@'%' IDENTIFIED BY 'x'",
    "SET GLOBAL max_connections = 1",
    "SET @@SESSION.SQL_LOG_BIN = 0",
    "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE notes",
    "system rm -rf /",
])
def test_plain_dump_with_a_forbidden_statement_is_refused_before_anything_changes(
        instance: Callable[[str], MySQLTarget], foreign_dump: tuple[Path, str],
        statement: str) -> None:
    path, _ = foreign_dump
    target = instance("r")
    fill_small(target)
    before = summary(target)
    with open(path, "a") as f:  # at the very end: the whole file is checked first
        f.write(statement + ";\n")
    with pytest.raises(RefusedStatement, match="does not restore"):
        restore_plain(target, path)
    assert summary(target) == before
    # the instance's password still works (SET PASSWORD never ran)
    assert run(target, "SELECT 1") == [(1,)]


def test_a_second_statement_the_splitter_did_not_see_never_runs(
        instance: Callable[[str], MySQLTarget], tmp_path: Path) -> None:
    """Where Tether's splitter and the server's parser disagree, a second statement hidden in an
    allowed one must not run. Here the dump turns backslash escapes off: the splitter (which
    reads backslash escapes, as in every mysqldump file) sees one INSERT, the server an INSERT
    and a SET PASSWORD. Restores send one statement per query without MULTI_STATEMENTS, so the
    server refuses the pair (the restore fails; the password is unchanged)."""
    target = instance("c")
    path = tmp_path / "hidden.sql"
    path.write_text("SET sql_mode = 'NO_BACKSLASH_ESCAPES';\nCREATE TABLE t (x TEXT);\n"
                    "INSERT INTO t VALUES ('a\\'); SET PASSWORD = PASSWORD(0x6f776e6564); "
                    "-- ');\n")
    assert len(list(split_statements([path.read_bytes()]))) == 3
    with pytest.raises(BackupError, match="syntax"):
        restore_plain(target, path)
    assert run(target, "SELECT 1") == [(1,)]  # the instance's password still works
    with pytest.raises(pymysql.err.OperationalError):
        connect(MySQLTarget(host=target.host, port=target.port, user=target.user,
                            password="owned", database=target.database))


def fill_small(target: MySQLTarget) -> None:
    run(target, "CREATE TABLE keep (id INT PRIMARY KEY, v TEXT)",
        "INSERT INTO keep VALUES (1, 'one'), (2, 'two')")


def test_plain_dump_of_two_databases_is_refused(instance: Callable[[str], MySQLTarget],
                                                foreign_dump: tuple[Path, str],
                                                tmp_path: Path) -> None:
    path, _ = foreign_dump
    target = instance("d")
    fill_small(target)
    before = summary(target)
    two = tmp_path / "two.sql"
    two.write_bytes(path.read_bytes() + b"USE `mysql`;\nCREATE TABLE x (y INT);\n")
    with pytest.raises(RefusedStatement, match="more than one database"):
        restore_plain(target, two)
    assert summary(target) == before


def test_files_that_are_no_sql_dump_are_refused(instance: Callable[[str], MySQLTarget],
                                                tmp_path: Path) -> None:
    target = instance("n")
    fill_small(target)
    before = summary(target)
    for name, content in (("a.dump", b"PGDMP\x01\x0e\x00"), ("b.sql.gz", b"\x1f\x8b\x08\x00"),
                          ("c.sql", b"-- only a comment\n"),
                          ("d.sql", b"INSERT INTO keep VALUES (3, 'unclosed);\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(NotAMySQLDump):
            restore_plain(target, tmp_path / name)
    assert summary(target) == before


# -- failures ----------------------------------------------------------------------------------


def test_damaged_sealed_backup_is_refused_before_the_database_is_touched(
        filled: MySQLTarget, box: SecretBox, tmp_path: Path) -> None:
    dest = tmp_path / "a.sealed"
    info = dump_sealed(filled, dest, box)
    with open(dest, "r+b") as f:  # one flipped byte in the middle of the file
        f.seek(info.size // 2)
        byte = f.read(1)
        f.seek(info.size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    run(filled, "UPDATE items SET name = 'changed after the backup' WHERE id = 1")
    before = summary(filled)
    with pytest.raises(ChecksumMismatch):
        restore_sealed(filled, dest, info.key_sealed, box, info.sha256)
    assert summary(filled) == before


def test_a_stream_failing_midway_stops_the_restore_and_a_retry_converges(
        filled: MySQLTarget, box: SecretBox, tmp_path: Path) -> None:
    """A chunk that fails after the restore began (e.g. a sealed chunk failing authentication)
    stops it: the database holds a prefix of the backup (as documented), the error passes on,
    and the next restore gives the whole backup."""
    before = summary(filled)
    info = dump_sealed(filled, tmp_path / "a.sealed", box)
    plain = b"".join(dump_stream(filled))

    class Damaged(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield plain[:len(plain) // 2]
        raise Damaged("chunk 7 fails authentication")

    with pytest.raises(Damaged):
        restore_stream(filled, chunks())
    # the statements are split by a thread (overlapping the server's work): it is gone
    assert not [t for t in threading.enumerate() if t.name.startswith("tether-mysql-restore")]
    assert summary(filled) != before
    restore_sealed(filled, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    assert summary(filled) == before


_RESTORE_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from cryptography.fernet import Fernet
    from tether.backups.mysql import MySQLTarget, restore_sealed
    from tether.crypto import SecretBox
    args = json.loads(sys.stdin.read())
    target = MySQLTarget(**args["target"])
    restore_sealed(target, Path(args["path"]), args["key_sealed"],
                   SecretBox(args["fernet"].encode()), args["sha256"])
""")


def test_a_restore_killed_midway_leaves_a_prefix_and_a_second_restore_converges(
        filled: MySQLTarget, tmp_path: Path) -> None:
    """The restoring process is SIGKILLed right after its first INSERT (the crash hook): the
    database's old content is gone (also what the backup does not hold), the backup's first
    table is there with some of its rows, later tables, views and routines are missing. The
    next restore gives the backup whole."""
    import json

    fernet = Fernet.generate_key()
    box = SecretBox(fernet)
    dest = tmp_path / "a.sealed"
    info = dump_sealed(filled, dest, box)
    before = summary(filled)
    run(filled, "CREATE TABLE made_later (x INT)")
    payload = json.dumps({
        "target": {"host": filled.host, "port": filled.port, "user": filled.user,
                   "password": filled.password, "database": filled.database},
        "path": str(dest), "key_sealed": info.key_sealed, "fernet": fernet.decode(),
        "sha256": info.sha256})
    env = dict(os.environ, TETHER_CRASH_AT="mysql_restore.insert",
               PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", _RESTORE_CHILD], input=payload.encode(),
                          env=env, capture_output=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    left = summary(filled)
    names = {name for name, _ in left.objects}
    assert "made_later" not in names  # the old content was dropped first
    assert "audit" in left.tables and left.tables["audit"].rows == 0  # a complete table
    assert left.tables["blobs"].rows == 1  # one INSERT per multi-MB row
    assert "items" not in left.tables and "expensive" not in names and "add_item" not in names
    assert left != before

    restore_sealed(filled, dest, info.key_sealed, box, info.sha256)
    assert summary(filled) == before


def test_no_password_on_any_command_line_while_dumping(filled: MySQLTarget) -> None:
    stream = dump_stream(filled)
    try:
        next(stream)
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"-dump" in argv or b"mysqldump" in argv:
                found.append(argv)
                assert filled.password.encode() not in argv
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert filled.password.encode() not in environ
                if os.geteuid() == 0:  # as the service user, like PostgreSQL's programs
                    assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam("tether").pw_uid
        assert found, "the dump program was not running"
    finally:
        stream.close()


def test_a_failing_dump_raises_without_the_password(filled: MySQLTarget) -> None:
    wrong = MySQLTarget(host=filled.host, port=filled.port, user=filled.user,
                        password="not-" + filled.password, database=filled.database)
    with pytest.raises(BackupError) as caught:
        b"".join(dump_stream(wrong))
    assert wrong.password not in caught.value.message
    assert filled.password not in repr(filled)


def test_no_dump_program_says_what_to_install(filled: MySQLTarget,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    engine._dump_program.cache_clear()
    try:
        with pytest.raises(MissingDumpProgram, match="apt-get install mariadb-client"):
            b"".join(dump_stream(filled))
    finally:
        engine._dump_program.cache_clear()
    assert shutil.which("mariadb-dump") is None


# -- splitting ---------------------------------------------------------------------------------


def test_statements_split_like_the_mysql_client_at_any_chunk_size() -> None:
    script = (b"/*M!999999\\- enable the sandbox mode */\n-- header ; comment\n"
              b"/*!40101 SET NAMES utf8mb4 */;\n"
              b"INSERT INTO t VALUES ('a;b', 'it''s', \"q;\", 'back\\';slash', '-- x', '#y');\n"
              b"# comment ; here\n/* block ; */ SELECT 1;\n"
              b"DELIMITER ;;\n"
              b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a = ';;'; "
              b"SET @b = 1; END ;;\nDELIMITER ;\n"
              b"SELECT 2 /* last, no delimiter */")
    expected = [b"/*!40101 SET NAMES utf8mb4 */",
                b"INSERT INTO t VALUES ('a;b', 'it''s', \"q;\", 'back\\';slash', '-- x', '#y')",
                b"SELECT 1",  # plain comments before a statement are dropped
                b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a = ';;'; "
                b"SET @b = 1; END ",
                b"SELECT 2 /* last, no delimiter */"]
    for size in (1, 2, 3, 7, 64, len(script)):
        chunks = [script[i:i + size] for i in range(0, len(script), size)]
        assert [s.strip() for s in split_statements(chunks)] == [e.strip() for e in expected]


def test_after_a_rotation_the_new_login_backs_up_and_restores_everything(
        mysql_cluster: ClusterSpec, make_mysql_names: Callable[[str], ResourceNames],
        box: SecretBox, tmp_path: Path, mysql_server: MySQLServer) -> None:
    """Objects defined by the instance's first user (locked after the rotation): the rotated
    login may not read the routines' bodies (MariaDB 10.11), so a backup without a routines
    reader fails saying why; with the admin reading the routines it is whole, and the restore
    makes the rotated login their definer (so the next backup needs no admin)."""
    names = make_mysql_names("o")
    first = MySQLTarget.from_credentials(
        PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24)).values)
    fill(first)
    before = summary(first)
    rotated = names.rotated(1)
    login = MySQLTarget.from_credentials(
        PROVIDER.add_login(mysql_cluster, rotated, secrets.token_urlsafe(24)).values)
    PROVIDER.revoke_login(mysql_cluster, rotated, names.login)
    admin = MySQLTarget(host=login.host, port=login.port, user=mysql_server.user,
                        password=mysql_server.password, database="unused")
    assert login.user != first.user
    assert summary(login) != before  # the bodies are hidden from the login
    assert summary(login, routines_reader=admin) == before

    with pytest.raises(BackupError, match="may not read the routines function double_it, "
                       "procedure add_item"):
        dump_sealed(login, tmp_path / "x.sealed", box)
    assert not (tmp_path / "x.sealed").exists()
    info = dump_sealed(login, tmp_path / "a.sealed", box, routines_reader=admin)
    drop_everything(login)
    restore_sealed(login, tmp_path / "a.sealed", info.key_sealed, box, info.sha256)
    assert summary(login) == before
    assert definers(mysql_server, login.database) == {f"{login.user}@%"}
    run(login, "CALL add_item('rotated')")
    assert run(login, "SELECT what FROM audit") == [("added rotated",)]
    b"".join(dump_stream(login))  # now the login's own: no admin needed
