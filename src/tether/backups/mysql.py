"""Back up and restore one MySQL/MariaDB instance's database: `mariadb-dump --single-transaction`
out, the dump's statements checked, rewritten where needed and run by Tether itself on the way in.

Who connects. The instance's own login (its credentials, `MySQLTarget.from_credentials`) for
both directions: it holds ALL on its database and nothing else, so a backup or a restore cannot
reach beyond that database even if the dump is hostile (an uploaded file). An admin is never
used to run a dump's statements. The one case where an admin is needed: after a credentials
rotation, the stored routines the earlier login created show their body only to their definer
or an administrator (MariaDB before 11.3, MySQL), so the current login cannot dump them; the
caller then passes the cluster's admin as `routines_reader`, which only reads those routines
(see `dump_stream`, `summary`). A restore makes the restoring login the definer of everything,
so after one restore the instance needs no admin again.

Backup (`dump_stream`). `mariadb-dump` (or `mysqldump`, whichever is on PATH; Debian's
`mariadb-client`) with:

- `--single-transaction`: one consistent snapshot (REPEATABLE READ) of every InnoDB table, without
  locking the application out; `--quick`: rows are streamed, not buffered in the client;
- `--routines --triggers` and `--events` when the login may read them (`SHOW EVENTS` allowed);
- `--hex-blob`: binary strings as hex literals, so the dump is plain text whatever the data;
- the database named alone (no `--databases`): no `CREATE DATABASE`/`USE` lines, so the dump
  restores into any instance's database; `--no-tablespaces`, `--skip-dump-date`;
- `--max-allowed-packet=1G` on the client side (rows of a few hundred MB still dump; the
  restoring server's `max_allowed_packet`, 16 MB by default on MariaDB 10.11 and 64 MB on
  MySQL 8, limits the size of one row that can be restored, as for any mysqldump file).

The dump keeps the source's DEFINER clauses (it is faithful); a restore never uses them (below).
The login's password goes to the program in a 0600 option file in a private 0700 temp dir
(`--defaults-file`, which also keeps any my.cnf of the machine out), never on its command line;
when Tether runs as root the program runs as the `tether` service user. No dump program: a
`BackupError` that names the package to install.

Restore (`restore_stream`, `restore_sealed`, `restore_plain`) runs each statement of the dump
over its own connection (PyMySQL, one statement per query, multi-statement queries and LOCAL
INFILE off), never through the `mysql` client (whose `system`, `source`, `connect` commands an
uploaded file could use). Every statement is classified first (`_classify`):

- data and schema statements on the connection's database are run: `CREATE`/`DROP`/`ALTER`
  of tables, views, triggers, routines, events, indexes, sequences, `INSERT`/`REPLACE`,
  `LOCK`/`UNLOCK TABLES`, session `SET`s, `SELECT` (MariaDB's `SELECT SETVAL(...)`),
  transactions; `DELIMITER` lines are understood as the mysql client does;
- `CREATE DATABASE`, `DROP DATABASE`, `ALTER DATABASE` and `USE` are skipped, so a dump made
  with `--databases` (or of a database of another name) lands in the instance's database and
  nowhere else (a dump that `USE`s two different databases is refused: one database at a time);
- `DEFINER=...` clauses are removed from CREATE/ALTER of views, triggers, routines and events,
  so each object's definer is the restoring login: naming another user needs SUPER (MariaDB) or
  SET_USER_ID (MySQL), which an instance never has, and the source's user must gain nothing;
- everything else is refused with `RefusedStatement` (a `UserError`): accounts and rights
  (`GRANT`, `CREATE USER`, `SET PASSWORD`, which would change the instance's own password),
  `SET GLOBAL`, `SET SQL_LOG_BIN` and GTID settings (MySQL dumps made without
  `--set-gtid-purged=OFF`), `LOAD DATA`, `FLUSH`, `KILL`, client commands... Statements naming
  another database are refused by the server (the login has no rights there).

What "replace" means, and what is atomic. MySQL commits every DDL statement on its own, and the
instance's login may create no other database, so no restore can be one transaction, nor be
staged in a scratch database and swapped in. The best achievable, in this order:

1. Everything that can be checked is checked before the database is touched: a sealed file's
   whole-file SHA-256, header, key and first chunk (`read_sealed`); for an uploaded plain file,
   a first pass over the WHOLE file that splits and classifies every statement, so a refused
   statement, a second database or a file cut inside a statement fails with nothing changed.
2. Then the database is emptied: every view, table (and sequence), routine and event in it is
   dropped (triggers go with their tables). After a successful restore the database holds
   exactly the backup's objects and rows, nothing of what was there before.
3. Then the dump's statements run in order (mysqldump's order: each table's structure, its rows
   in extended INSERTs of about 1 MB each committed one by one, its triggers; then views and
   routines).

A restore that fails or is killed in step 3 (the server refuses a statement, the connection is
lost, a later chunk of a sealed file fails authentication, the process is SIGKILLed) leaves the
database with nothing of its old content and a prefix of the backup: the tables before the one
being loaded complete, that table with some of its rows (whole INSERT statements: one cut short
is rolled back by the server), the rest of the tables, views and routines missing. No object of
any other database is ever touched. A new restore (of the same or another backup) converges: it
empties the database again and loads the whole backup. The `summary` of a database left so
differs from the backup's, which is how verification tells.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pymysql

from tether.backups.postgres import BackupError
from tether.backups.sealed import MAGIC as SEALED_MAGIC
from tether.backups.sealed import SealedInfo, read_sealed, write_sealed
from tether.errors import UserError
from tether.faults import crash_point
from tether.redact import redact
from tether.servers.common import is_root, system_account

#: the format stored with each backup: a mariadb-dump/mysqldump SQL script of one database
FORMAT = "mysql-sql-v1"
#: bytes read from the dump program's stdout at a time
PIPE_CHUNK = 1 << 20
#: the largest single statement a restore accepts (a larger one is a damaged or hostile file)
MAX_STATEMENT = 256 << 20
CONNECT_TIMEOUT = 10
#: seconds a restore waits for a table lock another session holds
LOCK_WAIT_TIMEOUT = 120
SERVICE_USER = "tether"  # the account Tether's programs run as when it is root (as PostgreSQL's)
_STDERR_MAX = 4000
_PROGRAMS = ("mariadb-dump", "mysqldump")
_INSTALL_HINT = ("install the MariaDB client programs (Debian: `apt-get install mariadb-client`; "
                 "or MySQL's `mysql-client`), which provide `mariadb-dump`/`mysqldump`")
_T = TypeVar("_T")
_ER_EMPTY_QUERY = 1065
_ER_ACCESS = frozenset({1044, 1045, 1142, 1143, 1227, 1370, 1410, 1419, 1449, 1698, 4151})


class MissingDumpProgram(BackupError):
    """Neither `mariadb-dump` nor `mysqldump` is installed."""

    code = "backup_program_missing"


class RefusedStatement(UserError):
    """A dump holds a statement an instance may not run (or a restore never runs)."""

    code = "backup_statement_refused"


class NotAMySQLDump(UserError):
    """An uploaded file that is not a mysqldump/mariadb-dump SQL file."""


@dataclass(frozen=True)
class MySQLTarget:
    """One instance's database and the login to reach it (the login user after a rotation)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any]) -> MySQLTarget:
        """From a MySQL instance's credentials (`Credentials.values` of `MySQLProvider`)."""
        return cls(host=str(values["host"]), port=int(values["port"]), user=str(values["user"]),
                   password=str(values["password"]), database=str(values["database"]))

    @property
    def where(self) -> str:
        return f"database {self.database} on {self.host}:{self.port}"


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _connect(target: MySQLTarget, **kwargs: Any) -> pymysql.Connection:
    """The login's connection to its database. Never with CLIENT.MULTI_STATEMENTS (PyMySQL's
    default): each query is one statement, so where Tether's splitter and the server's parser
    disagree (e.g. a dump that sets NO_BACKSLASH_ESCAPES), a statement Tether did not classify
    cannot ride along behind one it did: the server refuses the query instead."""
    try:
        return pymysql.connect(host=target.host, port=target.port, user=target.user,
                               password=target.password, database=target.database,
                               autocommit=True, charset="utf8mb4", local_infile=False,
                               connect_timeout=CONNECT_TIMEOUT, **kwargs)
    except pymysql.err.MySQLError as exc:
        raise BackupError(f"cannot connect to {target.where} as {target.user}: "
                          f"{_error_text(exc, target)}") from None


def _error_text(exc: BaseException, target: MySQLTarget) -> str:
    args = getattr(exc, "args", ())
    text = f"{args[1]} ({args[0]})" if len(args) >= 2 else (str(exc) or type(exc).__name__)
    return redact(text, (target.password,))


# -- backup ------------------------------------------------------------------------------------


@functools.cache
def _dump_program() -> tuple[str, bool]:
    """The dump program's path and whether it is MySQL's own mysqldump (not MariaDB's)."""
    for name in _PROGRAMS:
        path = shutil.which(name)
        if path:
            proc = subprocess.run([path, "--version"], capture_output=True, text=True,
                                  check=False, timeout=30, env=_clean_env(),
                                  stdin=subprocess.DEVNULL)
            return path, "mariadb" not in (proc.stdout + proc.stderr).lower()
    raise MissingDumpProgram(f"no `mariadb-dump` or `mysqldump` on PATH, so Tether cannot back "
                             f"up MySQL databases: {_INSTALL_HINT}")


def _clean_env() -> dict[str, str]:
    """No MYSQL_* variables of the caller (MYSQL_PWD, MYSQL_HOST...), C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    env.update(LC_ALL="C", LANG="C")
    if is_root():
        env["HOME"] = "/"
        env["USER"] = env["LOGNAME"] = SERVICE_USER
    return env


def _option_value(value: object) -> str:
    """A value for an option file: double-quoted, backslash and quote escaped."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise BackupError("a login value holds a line break: it cannot go into an option file")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dump_checks(target: MySQLTarget) -> tuple[list[str], bool]:
    """One connection (a PyMySQL connect costs ~0.1 s of TLS set-up here) for what the dump
    needs to know first, which also makes a wrong password fail before any program runs:

    - the routines of the database whose body the login may not read: on MariaDB before 11.3
      (no SHOW CREATE ROUTINE right) and MySQL (SHOW_ROUTINE is global only) only a routine's
      definer, or a user with rights on mysql.proc/every routine, may. After a credentials
      rotation the routines the earlier login created are such routines;
    - whether the login may read the database's events (the EVENT right; ALL includes it)."""
    with _connect(target) as conn, conn.cursor() as cur:
        cur.execute("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
                    "WHERE ROUTINE_SCHEMA = %s AND ROUTINE_DEFINITION IS NULL "
                    "ORDER BY 1, 2", (target.database,))
        hidden = [f"{kind.lower()} {name}" for kind, name in cur.fetchall()]
        try:
            cur.execute("SHOW EVENTS")
        except pymysql.err.MySQLError:
            return hidden, False
        return hidden, True


def _dump_args(target: MySQLTarget, options: Path, what: list[str], mysql: bool) -> list[str]:
    args = [f"--defaults-file={options}", "--single-transaction", "--quick", "--hex-blob",
            "--no-tablespaces", "--skip-dump-date", "--default-character-set=utf8mb4",
            "--max-allowed-packet=1G", *what]
    if mysql:  # MySQL's mysqldump: no GTID statements (SET @@GLOBAL.GTID_PURGED needs SUPER)
        args.append("--set-gtid-purged=OFF")
    return [*args, "--", target.database]


@contextlib.contextmanager
def _spawn_dump(target: MySQLTarget, what: list[str]
                ) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """Start the dump program for `target`'s database as `target`'s login (password in a
    private option file, as the service user when root) dumping `what`; yields it and a file
    with its stderr. On leaving, a program still running is killed and waited for, and the
    temp dir removed."""
    program, mysql = _dump_program()
    private = Path(tempfile.mkdtemp(prefix="tether-backup-"))
    kwargs: dict[str, Any] = {}
    try:
        options = private / "client.cnf"
        fd = os.open(options, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("[client]\n" + "".join(
                f"{key}={_option_value(value)}\n" for key, value in (
                    ("host", target.host), ("port", target.port), ("user", target.user),
                    ("password", target.password), ("protocol", "tcp"))))
        if is_root():
            account = system_account(SERVICE_USER, "backup programs")
            for path in (private, options):
                os.chown(path, account.pw_uid, account.pw_gid)
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        with tempfile.TemporaryFile(dir=private) as stderr:
            proc = subprocess.Popen([program, *_dump_args(target, options, what, mysql)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, env=_clean_env(), cwd="/", **kwargs)
            assert proc.stdout is not None
            with contextlib.suppress(OSError, AttributeError):  # fewer turns (see postgres.py)
                fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_CHUNK)
            try:
                yield proc, stderr
            finally:
                if proc.poll() is None:
                    proc.kill()
                with contextlib.suppress(OSError):
                    proc.stdout.close()
                proc.wait()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _stderr_text(stderr: IO[bytes], target: MySQLTarget) -> str:
    stderr.seek(0)
    text = stderr.read().decode(errors="replace").strip()
    if len(text) > _STDERR_MAX:
        text = "…" + text[-_STDERR_MAX:]
    return redact(text, (target.password,))


def dump_stream(target: MySQLTarget, routines_reader: MySQLTarget | None = None
                ) -> Generator[bytes, None, None]:
    """A single-transaction dump of the target's database as a stream of byte strings (see the
    module doc). Raises `BackupError` at the end if the program failed, so a consumer never
    takes a cut-short dump for a whole one. Close the iterator (or exhaust it) to stop it.

    Routines whose body the instance's login may not read (defined by an earlier login, see
    `_dump_checks`) need `routines_reader`: a login that may read every routine of the
    database (the cluster's admin; same host, port and database, its own user and password).
    It is used only then, and only to read the routines (`--routines --no-data
    --no-create-info`), in a second dump appended to the first (the routines are then read a
    moment after the snapshot of the rest). Without it such a database fails with a message
    that says so: a dump without them would not be a whole backup."""
    hidden, events = _dump_checks(target)
    if hidden and routines_reader is None:
        raise BackupError(
            f"the login {target.user} may not read the routines {', '.join(hidden)} of "
            f"{target.where} (they were created by an earlier login of the instance, before a "
            "credentials rotation; MariaDB before 11.3 and MySQL show a routine's body only to "
            "its definer or an administrator): back up with the cluster's administrator "
            "reading the routines, or re-create the routines with the current login")
    what = ["--triggers", "--skip-routines" if hidden else "--routines",
            "--events" if events else "--skip-events"]
    parts = [(target, what)]
    if hidden and routines_reader is not None:
        parts.append((MySQLTarget(host=target.host, port=target.port,
                                  user=routines_reader.user, password=routines_reader.password,
                                  database=target.database),
                      ["--routines", "--no-data", "--no-create-info", "--skip-triggers",
                       "--skip-events"]))
    for login, part in parts:
        with _spawn_dump(login, part) as (proc, stderr):
            assert proc.stdout is not None
            while data := proc.stdout.read(PIPE_CHUNK):
                yield data
            if proc.wait() != 0:
                raise BackupError(f"{Path(proc.args[0]).name} of {target.where} failed (exit "
                                  f"{proc.returncode}): {_stderr_text(stderr, login)}")


def dump_sealed(target: MySQLTarget, dest: Path, box: Any,
                routines_reader: MySQLTarget | None = None) -> SealedInfo:
    """Back up the target's database into the new sealed file `dest` (see `sealed`). Either
    the whole dump is in `dest`, or `dest` does not exist and this raises. `routines_reader`:
    see `dump_stream`."""
    stream = dump_stream(target, routines_reader)
    try:
        return write_sealed(dest, stream, box)
    finally:
        stream.close()  # stops the dump program when writing failed


# -- splitting a dump into statements ----------------------------------------------------------

# A token of SQL outside any statement delimiter: quoted strings and identifiers (backslash
# escapes, doubled quotes), comments (/* */ including /*! */ conditional code, "-- ", #).
_QUOTED = (rb"'(?:[^'\\]++|\\.|'')*+'" rb"|\"(?:[^\"\\]++|\\.|\"\")*+\"" rb"|`(?:[^`]++|``)*+`")
_COMMENT = rb"/\*.*?\*/|--(?=[ \t\r\n])[^\n]*+|\#[^\n]*+"
# What may stand before a statement (and before a DELIMITER line): blanks and plain comments,
# not /*! or /*M! conditional code, except MariaDB's "/*M!999999\- enable the sandbox mode */",
# which no server runs.
_LEAD = re.compile(rb"(?:\s++|--(?=[ \t\r\n])[^\n]*+|\#[^\n]*+"
                   rb"|/\*(?!!|M!(?!999999))(?s:.*?)\*/)*+")
_DELIMITER_LINE = re.compile(rb"DELIMITER[ \t]++([^\s]++)[^\n]*+(?:\n|\Z)", re.IGNORECASE)


@functools.cache
def _statement_re(delimiter: bytes) -> re.Pattern[bytes]:
    """A whole statement ending with `delimiter` (group 1: the statement without it)."""
    first = re.escape(delimiter[:1])
    lone = rb"[/\-]"
    if len(delimiter) > 1:  # the delimiter's first char alone, when not the whole delimiter
        lone = rb"[/\-]|(?!" + re.escape(delimiter) + rb")" + first
    plain = rb"[^'\"`/\#\-" + first + rb"]++"
    token = b"|".join((plain, _QUOTED, _COMMENT, rb"\#", lone))
    return re.compile(rb"(?s)((?:" + token + rb")*+)" + re.escape(delimiter))


@functools.cache
def _tail_re() -> re.Pattern[bytes]:
    """A last statement without a delimiter: the whole rest is tokens (no open quote)."""
    token = b"|".join((rb"[^'\"`/\#\-]++", _QUOTED, _COMMENT, rb"\#", rb"[/\-]"))
    return re.compile(rb"(?s)(?:" + token + rb")*+\Z")


def split_statements(chunks: Iterable[bytes]) -> Generator[bytes, None, None]:
    """The statements of a SQL script given as byte strings, as the mysql client splits them
    (`DELIMITER` lines understood, delimiters inside quotes and comments ignored), each
    without its delimiter; blank or comment-only ones are dropped. Memory: the largest
    statement plus a chunk. Raises `NotAMySQLDump` for a statement beyond `MAX_STATEMENT` or a
    script that ends inside a quoted string or a comment."""
    source = iter(chunks)
    buf = b""
    pos = 0
    delimiter = b";"
    eof = False
    want = 0  # read until the buffer holds at least this much past `pos` before matching again
    while True:
        if len(buf) - pos < want or (not eof and len(buf) - pos < PIPE_CHUNK):
            while not eof and len(buf) - pos < max(want, PIPE_CHUNK):
                data = next(source, None)
                if data is None:
                    eof = True
                else:
                    buf = buf[pos:] + data if pos else buf + data
                    pos = 0
        lead = _LEAD.match(buf, pos)
        assert lead is not None
        start = lead.end()
        if start >= len(buf):
            if eof:
                return
            want = 0
            pos = start
            continue
        if buf[start:start + 9].upper() == b"DELIMITER":
            line = _DELIMITER_LINE.match(buf, start)
            if line and (line.group(0).endswith(b"\n") or eof):
                delimiter = line.group(1)
                pos = line.end()
                want = 0
                continue
        match = _statement_re(delimiter).match(buf, start)
        # a match that ends exactly at the end of the buffer might have been a longer token
        # (e.g. ";" of ";;") had more data been there: wait for more unless at the end
        if match and (match.end() < len(buf) or eof):
            statement = match.group(1)
            pos = match.end()
            want = 0
            if _LEAD.match(statement).end() < len(statement):  # type: ignore[union-attr]
                yield statement
            continue
        if eof:
            rest = buf[start:]
            if _tail_re().match(rest):
                yield rest
                return
            raise NotAMySQLDump("the SQL file ends inside a statement (an unclosed quote or "
                                "comment, or a statement cut short): it is not a whole "
                                "mysqldump file")
        if len(buf) - start > MAX_STATEMENT:
            raise NotAMySQLDump(f"the SQL file holds a statement larger than "
                                f"{MAX_STATEMENT >> 20} MiB (or an unclosed quote): Tether "
                                "does not restore it")
        want = max(PIPE_CHUNK, 2 * (len(buf) - start))  # amortised: each byte scanned O(1)


# -- classifying statements --------------------------------------------------------------------

_WORDS = re.compile(rb"`(?:[^`]|``)*+`|'(?:[^'\\]|\\.)*+'|\"(?:[^\"\\]|\\.)*+\""
                    rb"|(@@?[A-Za-z_][\w$.]*+)|([A-Za-z_][\w$]*+)|/\*M?!\d*|\*/|\S", re.DOTALL)
_OBJECTS = {b"TABLE", b"VIEW", b"TRIGGER", b"PROCEDURE", b"FUNCTION", b"EVENT", b"INDEX",
            b"SEQUENCE"}
_DEFINER_OBJECTS = {b"VIEW", b"TRIGGER", b"PROCEDURE", b"FUNCTION", b"EVENT"}
_DATABASE = {b"DATABASE", b"SCHEMA"}
_TRANSACTION = {b"START", b"BEGIN", b"COMMIT", b"ROLLBACK", b"SAVEPOINT", b"RELEASE"}
#: SET forms an instance may not use: other scopes, accounts and roles
_SET_REFUSED = {b"GLOBAL", b"PASSWORD", b"ROLE", b"DEFAULT", b"PERSIST", b"PERSIST_ONLY"}
#: session variables that need admin rights (binary log, replication)
_SET_ADMIN = {b"SQL_LOG_BIN", b"GTID_NEXT", b"GTID_PURGED", b"GTID_DOMAIN_ID", b"GTID_SEQ_NO",
              b"SERVER_ID", b"PSEUDO_SLAVE_MODE", b"PSEUDO_THREAD_ID", b"SKIP_REPLICATION",
              b"SQL_SLAVE_SKIP_COUNTER", b"BINLOG_FORMAT"}
_ACCOUNT = rb"(?:`(?:[^`]|``)*+`|'(?:[^'\\]|\\.)*+'|\"(?:[^\"\\]|\\.)*+\"|[\w$.%-]++)"
_DEFINER = re.compile(rb"\bDEFINER\s*+=\s*+(?:CURRENT_USER(?:\s*+\(\s*+\))?|CURRENT_ROLE"
                      rb"|" + _ACCOUNT + rb"(?:\s*+@\s*+" + _ACCOUNT + rb")?)", re.IGNORECASE)
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class _Verdict:
    action: str  # "run", "skip", "use"
    statement: bytes = b""  # what to run (DEFINER removed)
    database: str | None = None  # the database a USE names


def _head_words(statement: bytes) -> list[tuple[bytes, int]]:
    """The statement's leading words (upper-cased, quoted tokens as b"'"), with their offsets;
    conditional-comment markers skipped, so `/*!50001 CREATE VIEW` gives CREATE, VIEW."""
    words: list[tuple[bytes, int]] = []
    head = statement[:_HEAD_BYTES]
    pos = _LEAD.match(head).end()  # type: ignore[union-attr]
    for m in _WORDS.finditer(head, pos):
        token = m.group(0)
        if token.startswith(b"/*") or token == b"*/":
            continue
        word = m.group(1) or m.group(2)
        words.append((word.upper() if word else token[:1], m.start()))
        if len(words) >= 16:
            break
    return words


def _short(statement: bytes) -> str:
    text = " ".join(statement[:_HEAD_BYTES].decode("utf-8", "replace").split())
    return text if len(text) <= 100 else text[:100] + "…"


def _refuse(statement: bytes, why: str) -> RefusedStatement:
    return RefusedStatement(f"the dump holds a statement Tether does not restore into an "
                            f"instance ({why}): {_short(statement)}")


def _classify(statement: bytes) -> _Verdict:
    """What a restore does with one statement (see the module doc); raises RefusedStatement."""
    words = _head_words(statement)
    if not words:
        return _Verdict("skip")
    verb = words[0][0]
    second = words[1][0] if len(words) > 1 else b""
    if verb in (b"INSERT", b"REPLACE", b"SELECT", b"LOCK", b"UNLOCK", b"TRUNCATE", b"RENAME",
                b"DELETE", b"UPDATE") or verb in _TRANSACTION:
        if verb == b"SELECT" and re.search(rb"\bINTO\s++(?:OUT|DUMP)FILE\b", statement[:1 << 16],
                                           re.IGNORECASE):
            raise _refuse(statement, "writes a file on the server")
        return _Verdict("run", statement)
    if verb == b"SET":
        variable = second
        if second in (b"SESSION", b"LOCAL") and len(words) > 2:
            variable = words[2][0]
        for scope in (b"@@SESSION.", b"@@LOCAL.", b"@@"):
            if variable.startswith(scope):
                variable = variable[len(scope):]
                break
        if (second in _SET_REFUSED or second.startswith(b"@@GLOBAL.")
                or variable in _SET_ADMIN):
            raise _refuse(statement, "a global, replication or account setting, which an "
                          "instance may not change; make the dump without them (mysqldump "
                          "--set-gtid-purged=OFF)")
        return _Verdict("run", statement)
    if verb == b"USE":
        token = statement[words[1][1]:].split(None, 1)[0] if len(words) > 1 else b""
        name = token.rstrip(b";").strip(b"`").replace(b"``", b"`").decode("utf-8", "replace")
        return _Verdict("use", database=name)
    if verb in (b"CREATE", b"DROP", b"ALTER"):
        kinds = [w for w, _ in words[1:]]
        if kinds and kinds[0] in _DATABASE:
            return _Verdict("skip")
        found = next(((w, off) for w, off in words[1:] if w in _OBJECTS | _DATABASE), None)
        if found is None or found[0] in _DATABASE:
            raise _refuse(statement, "not a table, view, trigger, routine, event, index or "
                          "sequence of the database")
        if verb != b"DROP" and found[0] in _DEFINER_OBJECTS:
            head, body = statement[:found[1]], statement[found[1]:]
            statement = _DEFINER.sub(b"", head) + body
        return _Verdict("run", statement)
    raise _refuse(statement, f"{verb.decode(errors='replace')} statements are not restored")


def _plan(statements: Iterable[bytes]) -> Generator[tuple[bytes, bytes], None, None]:
    """(verb, statement to run) for each statement that runs; USE checks included."""
    used: str | None = None
    for statement in statements:
        verdict = _classify(statement)
        if verdict.action == "use":
            if used is not None and verdict.database != used:
                raise RefusedStatement(
                    f"the dump holds more than one database ({used}, {verdict.database}): "
                    "dump and restore one database at a time")
            used = verdict.database
        elif verdict.action == "run":
            words = _head_words(verdict.statement)
            yield (words[0][0] if words else b""), verdict.statement


# -- restore -----------------------------------------------------------------------------------


def _objects(cur: Any, database: str) -> dict[str, list[str]]:
    cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (database,))
    rows = cur.fetchall()
    found: dict[str, list[str]] = {
        "VIEW": [name for name, kind in rows if kind == "VIEW"],
        "TABLE": [name for name, kind in rows if kind != "VIEW"]}
    cur.execute("SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                "WHERE ROUTINE_SCHEMA = %s ORDER BY 1", (database,))
    for name, kind in cur.fetchall():
        found.setdefault(kind, []).append(name)
    cur.execute("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s "
                "ORDER BY 1", (database,))
    found["EVENT"] = [name for (name,) in cur.fetchall()]
    return found


def _empty(cur: Any, target: MySQLTarget) -> None:
    """Drop every view, table, sequence, routine and event of the target's database."""
    cur.execute("SET SESSION FOREIGN_KEY_CHECKS = 0")
    found = _objects(cur, target.database)
    for kind in ("VIEW", "TABLE"):
        if found[kind]:
            cur.execute(f"DROP {kind} IF EXISTS " + ", ".join(
                f"{_ident(target.database)}.{_ident(name)}" for name in found[kind]))
    for kind in ("PROCEDURE", "FUNCTION", "PACKAGE BODY", "PACKAGE", "EVENT"):
        for name in found.get(kind, []):
            cur.execute(f"DROP {kind} IF EXISTS {_ident(target.database)}.{_ident(name)}")
    cur.execute("SET SESSION FOREIGN_KEY_CHECKS = DEFAULT")


def _run(target: MySQLTarget, plan: Iterator[tuple[bytes, bytes]],
         refused_is_user_error: bool) -> None:
    """Empty the database, then run the planned statements (the first is drawn before: a
    sealed file's checks happen there, before anything is dropped)."""
    first = next(plan, None)
    with _connect(target, max_allowed_packet=1 << 30) as conn:
        with conn.cursor() as cur:
            # a session of the application holding a table (a long transaction) makes the
            # restore fail after this long instead of waiting for ever (default: a year)
            cur.execute("SET SESSION lock_wait_timeout = %s", (LOCK_WAIT_TIMEOUT,))
            _empty(cur, target)
        crash_point("mysql_restore.emptied")
        done = 0
        statement = b""
        try:
            if first is None:
                return
            for verb, statement in _chain(first, plan):
                try:
                    conn.query(statement)
                except pymysql.err.MySQLError as exc:
                    if exc.args and exc.args[0] == _ER_EMPTY_QUERY:  # only ignored /*!NNNNN*/
                        continue
                    raise
                done += 1
                if verb == b"INSERT":
                    crash_point("mysql_restore.insert")
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            message = (f"restoring into {target.where} failed at statement {done + 1} "
                       f"({_short(statement)}): {_error_text(exc, target)}. The database now "
                       "holds only part of the backup: restore again to replace it whole")
            if refused_is_user_error and code in _ER_ACCESS:
                raise RefusedStatement(message + " (the instance's user may not run this "
                                       "statement: remove it from the dump)") from None
            raise BackupError(message) from None
        except RefusedStatement as exc:
            raise RefusedStatement(exc.message + ". The database now holds only part of the "
                                   "backup: restore again to replace it whole") from None


def _chain(first: tuple[bytes, bytes],
           rest: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    yield first
    yield from rest


def _prefetched(items: Iterator[_T], depth: int = 3) -> Generator[_T, None, None]:
    """`items`, produced by a thread up to `depth` ahead: splitting the next statements (regex
    work, which holds the GIL) overlaps with the server running the current one (a socket wait,
    which does not). Measured on 50 MB: the restore ~25 % faster. Closing this generator stops
    the thread and waits for it, so `items` is free to be closed afterwards."""
    queue_: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                queue_.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=work, name="tether-mysql-restore-split", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = queue_.get()
            if kind == "item":
                yield value
            elif kind == "done":
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()


def _run_script(target: MySQLTarget, chunks: Iterable[bytes], refused_is_user_error: bool
                ) -> None:
    statements = split_statements(chunks)
    plan = _prefetched(_plan(statements))
    try:
        _run(target, plan, refused_is_user_error)
    finally:
        plan.close()  # stops the splitting thread first
        statements.close()


def restore_stream(target: MySQLTarget, chunks: Iterable[bytes]) -> None:
    """Replace the target's database's content with a dump given as byte strings (see the
    module doc for what is run, skipped and refused, and what a failed restore leaves). The
    first chunk is drawn before anything is dropped; if `chunks` raises later (a damaged
    backup), the restore stops there and the error passes on."""
    _run_script(target, chunks, refused_is_user_error=False)


def restore_sealed(target: MySQLTarget, path: Path, key_sealed: str, box: Any,
                   expected_sha256: str) -> None:
    """Restore a sealed backup into the target's database. The file's checksum, header, key
    and first chunk are checked before the database is touched (`read_sealed`)."""
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        restore_stream(target, chunks)
    finally:
        chunks.close()


def _file_chunks(path: Path) -> Generator[bytes, None, None]:
    with open(path, "rb") as f:
        while data := f.read(PIPE_CHUNK):
            yield data


def restore_plain(target: MySQLTarget, path: Path) -> None:
    """Restore a SQL dump made elsewhere (`mysqldump`/`mariadb-dump`, not sealed, with or
    without `--databases`) into the target's database and nowhere else. The whole file is
    split and checked first; a statement Tether does not run raises `RefusedStatement` before
    the database is touched."""
    path = Path(path)
    with open(path, "rb") as f:
        start = f.read(64)
    if start.startswith((SEALED_MAGIC, b"PGDMP", b"\x1f\x8b", b"PK\x03\x04")) or b"\0" in start:
        raise NotAMySQLDump(f"{path.name} is not a SQL dump: upload the plain SQL file that "
                            "`mysqldump`/`mariadb-dump` writes (uncompressed)")
    count = 0
    for _ in _plan(split_statements(_file_chunks(path))):
        count += 1
    if count == 0:
        raise NotAMySQLDump(f"{path.name} holds no SQL statement: it is not a mysqldump file")
    _run_script(target, _file_chunks(path), refused_is_user_error=True)


# -- summary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSummary:
    rows: int
    checksum: str  # order-independent: equal for the same multiset of rows
    auto_increment: int | None  # the next AUTO_INCREMENT value, None without such a column


@dataclass(frozen=True)
class DatabaseSummary:
    """What a restore must reproduce: every table's rows, the objects and their definitions
    (views, triggers, routines and events; not their definers, which a restore sets to the
    restoring login; view texts without the database's name, which the server writes in)."""

    tables: dict[str, TableSummary]
    objects: list[tuple[str, str]]  # (name, kind): BASE TABLE, VIEW, SEQUENCE, PROCEDURE...
    definitions: dict[str, str]  # "TRIGGER name" etc. -> sha256 of the body


def _checksum_sql(database: str, table: str, columns: list[str]) -> str:
    values = ", ".join(f"QUOTE(CAST({_ident(c)} AS BINARY))" for c in columns) or "''"
    return ("SELECT COUNT(*), "
            "COALESCE(SUM(CAST(CONV(SUBSTRING(h, 1, 16), 16, 10) AS DECIMAL(20))), 0), "
            "COALESCE(SUM(CAST(CONV(SUBSTRING(h, 17, 16), 16, 10) AS DECIMAL(20))), 0) "
            f"FROM (SELECT MD5(CONCAT_WS(',', {values})) AS h "
            f"FROM {_ident(database)}.{_ident(table)}) AS s")


def _sha(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:32]


def summary(target: MySQLTarget, routines_reader: MySQLTarget | None = None
            ) -> DatabaseSummary:
    """Row counts, order-independent content checksums and next AUTO_INCREMENT values of every
    table, and the list of tables, views, sequences, routines, triggers and events. Each row's
    columns (QUOTE of their bytes, so NULL and 'NULL' differ) are hashed (MD5) and the two
    64-bit halves summed: one streaming pass, no sort. A routine whose body the login may not
    read (see `dump_stream`) is read by `routines_reader` when given, else its definition is
    "unreadable" (and the summary cannot equal that of a database where it is readable)."""
    db = target.database
    with _connect(target) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME, TABLE_TYPE, AUTO_INCREMENT FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (db,))
        relations = list(cur.fetchall())
        objects = [(name, kind) for name, kind, _ in relations]
        tables: dict[str, TableSummary] = {}
        for name, kind, auto in relations:
            if kind == "VIEW":
                continue
            cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                        "TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                        (db, name))
            columns = [c for (c,) in cur.fetchall()]
            cur.execute(_checksum_sql(db, name, columns))
            rows, low, high = cur.fetchone()
            tables[name] = TableSummary(rows=int(rows), checksum=_sha(f"{low}:{high}"),
                                        auto_increment=None if auto is None else int(auto))
        definitions: dict[str, str] = {}
        routines = "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM " \
            "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s"
        cur.execute(routines, (db,))
        rows = list(cur.fetchall())
        if routines_reader is not None and any(body is None for _, _, body in rows):
            reader = MySQLTarget(host=target.host, port=target.port, user=routines_reader.user,
                                 password=routines_reader.password, database=db)
            with _connect(reader) as other, other.cursor() as reader_cur:
                reader_cur.execute(routines, (db,))
                rows = list(reader_cur.fetchall())
        for name, kind, body in rows:
            objects.append((name, kind))
            definitions[f"{kind} {name}"] = "unreadable" if body is None else _sha(body)
        cur.execute("SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE FROM "
                    "information_schema.VIEWS WHERE TABLE_SCHEMA = %s", (db,))
        for name, body, check, security in cur.fetchall():
            # the server qualifies every column with the database's name: not part of the view
            body = (body or "").replace(f"{_ident(db)}.", "")
            definitions[f"VIEW {name}"] = _sha((body, check, security))
        cur.execute("SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, "
                    "EVENT_MANIPULATION, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = %s", (db,))
        for name, table, timing, event, body in cur.fetchall():
            objects.append((name, "TRIGGER"))
            definitions[f"TRIGGER {name}"] = _sha((table, timing, event, body))
        cur.execute("SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD, "
                    "STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s", (db,))
        for name, *rest in cur.fetchall():
            objects.append((name, "EVENT"))
            definitions[f"EVENT {name}"] = _sha(rest)
        return DatabaseSummary(tables=tables, objects=sorted(objects), definitions=definitions)
