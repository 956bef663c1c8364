"""MySQL/MariaDB: one database and one user per instance on a shared server, and dedicated
MariaDB servers for `--private` instances.

The cluster URL names an admin (`mysql://ADMIN:PASSWORD@HOST:PORT/`, user and password
URL-encoded). The admin needs CREATE USER, and ALL PRIVILEGES WITH GRANT OPTION on the databases
Tether creates (e.g. `GRANT ALL PRIVILEGES ON *.* TO ... WITH GRANT OPTION`, or on
`` `tether\\_%`.* `` plus CREATE USER and SELECT on `mysql.*`), and PROCESS and CONNECTION ADMIN
(MySQL 8: CONNECTION_ADMIN; or SUPER) to see and end other users' sessions: a revoked or removed
login's open sessions keep their rights until they end. `check` refuses an admin without them,
and a revoke or removal whose sessions cannot all be ended fails with the reason (and the
GRANT that fixes it) instead of passing silently.

Least privilege: the user `'NAME'@'%'` has `ALL` on its own database and nothing else. In GRANT,
`_` is a wildcard, so the grant names the database with `_` escaped: `tether_i42` must not also
reach a database `tetherXi42`.

Ownership: a database is Tether's when the instance's user holds the grant on it. The grant is
made *before* the database is created, so a crash at any step leaves a state a retry recognises
as its own; a database of that name without that grant belongs to someone else: provisioning
refuses to take it over and removal leaves it alone.

On MariaDB the database also carries Tether's mark in its comment, so a database whose user was
dropped by hand (its grant goes with it) is still recognised as the instance's and repaired.

On MariaDB the password is sent as its mysql_native_password hash, computed here, so the
clear-text password never appears in a server log or in the process list.

Drift (`observe`) and its repair (`provision` again): a missing user or database is made again,
the user unlocked and its connection limit reset, its rights on its database granted again,
rights beyond its database (global, on other databases or their tables, GRANT OPTION) revoked.
What cannot be repaired: a database dropped by hand comes back EMPTY (its data is lost); on MySQL
(no database comments) a database whose user was dropped cannot be told from someone else's, so
it is not taken over; the user's routine rights and role grants are not looked at.

Rotation (`add_login`, `revoke_login`): MariaDB has no dual passwords, so new credentials are a
second user `NAME_<n>`@'%' with the same rights on the database and the same connection limit.
The old login is revoked once no release uses it: locked with a new random password and its
sessions killed, never dropped before the instance is removed: the views, triggers and routines it
defined name it as their DEFINER and break without it (MySQL 8.0.22+ refuses the DROP USER), and
the instance's own user's grant is what marks the database as Tether's (on MySQL, which keeps no
database comments). After a rotation `observe` and `provision` expect the instance's own user
locked and look at the login user (`names.login`) for the rest.

Fair shares: on a shared server the user gets `MAX_USER_CONNECTIONS` (the cluster setting
`connection_limit`, default 20; 0 for no limit), so one tenant cannot take every connection slot
of the server (`max_connections`, 151 by default); a private server's user has no limit unless the
setting asks for one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.cursors

from tether import naming
from tether.errors import ClusterError, TransientError
from tether.providers.base import (
    ClusterSettings,
    ClusterSpec,
    Credentials,
    Observation,
    ProviderBase,
    ResourceNames,
    lost,
)
from tether.providers.common import (
    CONNECTION_LIMIT,
    KeptConnections,
    check_names,
    cluster_error,
    final_text,
    instance_limit,
)
from tether.redact import redact

log = logging.getLogger("tether.providers.mysql")

CONNECT_TIMEOUT = 5
#: seconds for the server's greeting and the login, then for any one statement
GREETING_TIMEOUT = 10
STATEMENT_TIMEOUT = 180

DEFAULT_PORT = 3306
_URL_HINT = "use mysql://USER:PASSWORD@HOST:PORT/"
_SCHEMES = ("mysql", "mariadb")
_ACCOUNT = "%s@'%%'"  # the user literal; PyMySQL substitutes `%` only with args: `'%%'`
_GRANT_FIX = "GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION"


def _reusable(conn: pymysql.connections.Connection) -> bool:
    """Open, and not inside a transaction (autocommit: none is ever left open)."""
    in_transaction = pymysql.constants.SERVER_STATUS.SERVER_STATUS_IN_TRANS
    return bool(conn.open) and not conn.server_status & in_transaction


#: the kept admin connections of this process (`KeptConnections`)
ADMIN_CONNECTIONS: KeptConnections[pymysql.connections.Connection] = KeptConnections(
    check=lambda conn: conn.ping(reconnect=False), reusable=_reusable,
    close=lambda conn: conn.close())

# MySQL error codes used here
_ER_DB_CREATE_EXISTS = 1007
_ER_ACCESS_DENIED = (1045, 1698)  # 1698: MariaDB, no such user
_ER_HOST_NOT_PRIVILEGED = 1130
_ER_CANNOT_USER = 1396  # CREATE USER of an existing user (e.g. made concurrently)
_ER_NO_SUCH_THREAD = 1094
_ER_ACCOUNT_LOCKED = 4151
_ER_BAD_FIELD = 1054
_UNREACHABLE = (2002, 2003, 2005, 2006, 2013)
#: failures that may pass: the server unreachable, gone away or shutting down, the connection
#: lost or killed, too many connections, a lock wait timeout or a deadlock
_TRANSIENT = frozenset({2002, 2003, 2006, 2013, 2055, 1040, 1053, 1205, 1213, 1927})
#: the global rights that let the admin end another user's session (KILL): MariaDB 10.5.2+
#: and MySQL 8 name one of their own, SUPER still includes it
_END_SESSIONS = frozenset({"CONNECTION ADMIN", "CONNECTION_ADMIN", "SUPER"})
#: the rights an instance's user must hold on its database (ALL holds more, by version)
_CORE_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX")
MARK = "managed by Tether"


def _connection_limit(cluster: ClusterSpec) -> int:
    """The `MAX_USER_CONNECTIONS` of the instances' users on this cluster (0: none)."""
    return instance_limit(cluster, CONNECTION_LIMIT) or 0


def _limit_text(limit: int) -> str:
    return "any number of connections" if limit <= 0 else f"{limit} connection(s)"


def _ident(name: str) -> str:
    """A quoted identifier (database name)."""
    return "`" + name.replace("`", "``") + "`"


def _mark(names: ResourceNames) -> str:
    return f"{MARK}: {names.base}"


def _grant_pattern(database: str) -> str:
    """The database name as GRANT reads it: `_` and `%` are wildcards there, so escape them."""
    return database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def _rights_differences(user: str, db: str, rights: _Rights) -> list[str]:
    """How one of the instance's users' rights differ from all on its database, nothing else."""
    differences: list[str] = []
    missing = [right for right in _CORE_RIGHTS if right not in rights.own]
    if len(missing) == len(_CORE_RIGHTS):
        differences.append(f"user {user} holds no rights on database {db}")
    elif missing:
        differences.append(f"user {user} lacks {', '.join(missing)} on database {db}")
    if rights.own_grant_option:
        differences.append(f"user {user} may grant its rights on database {db} (GRANT OPTION)")
    if rights.global_:
        differences.append(f"user {user} has the global rights {', '.join(rights.global_)}")
    differences += [f"user {user} has rights on database {pattern}"
                    for pattern in rights.databases]
    differences += [f"user {user} has rights on table {schema}.{table}"
                    for schema, table in rights.tables]
    return differences


def native_password_hash(password: str) -> str:
    """The mysql_native_password hash (`*` + upper-case hex SHA1(SHA1(password)))."""
    inner = hashlib.sha1(password.encode("utf-8")).digest()  # noqa: S324 - the server's format
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


class _Target:
    """Where a cluster URL points, without its password (safe to show)."""

    def __init__(self, cluster: ClusterSpec) -> None:
        try:
            parts = urlsplit(cluster.url)
            port = parts.port
            host = parts.hostname
        except ValueError:  # the message may quote the URL, password included
            raise ClusterError(f"the cluster URL is not a valid MySQL URL: {_URL_HINT}") from None
        if parts.scheme not in _SCHEMES or not host or not parts.username:
            raise ClusterError(f"the cluster URL is not a valid MySQL URL: {_URL_HINT}")
        self.user = unquote(parts.username)
        self.password = unquote(parts.password or "")
        self.host = host
        self.port = int(port or DEFAULT_PORT)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def account(self) -> str:
        return f"'{self.user}'@'%'"


def _error_parts(exc: Exception) -> tuple[int | None, str]:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    return None, str(exc) or type(exc).__name__


def _transient(exc: Exception) -> bool:
    """Whether a PyMySQL failure may pass (see `_TRANSIENT`); a host name that does not resolve
    is final."""
    code, text = _error_parts(exc)
    if code in _TRANSIENT or (code is None and isinstance(exc, OSError)):
        return not final_text(text)
    return False


def _connect_error(target: _Target, cluster: ClusterSpec, exc: Exception) -> ClusterError:
    """Turn a connection failure into a message that says what to fix (and holds no secret);
    a `TransientError` when it may pass."""
    code, text = _error_parts(exc)
    detail = redact(text.strip().splitlines()[-1] if text.strip() else type(exc).__name__,
                    (target.password, cluster.url))
    if code in _ER_ACCESS_DENIED:
        msg = (f"MySQL at {target.where} refused the password of user {target.user!r} (or has "
               "no such user): fix the user and password in the cluster URL")
    elif code == _ER_HOST_NOT_PRIVILEGED:
        msg = (f"MySQL at {target.where} does not let user {target.user!r} connect from "
               f"Tether's host: create the admin for this host (e.g. {target.account})")
    elif code == _ER_ACCOUNT_LOCKED:
        msg = (f"the account {target.user!r} on MySQL at {target.where} is locked: unlock it "
               f"(ALTER USER {target.account} ACCOUNT UNLOCK)")
    elif "timed out" in text.lower():
        msg = (f"MySQL at {target.where} timed out: no connection within {CONNECT_TIMEOUT} s, "
               f"or no greeting and login within {GREETING_TIMEOUT} s. "
               f"Check that {target.where} is a MySQL or MariaDB server (not another service), "
               "that it runs and is not overloaded, and that no firewall drops the traffic")
    elif code in _UNREACHABLE or isinstance(exc, OSError):
        msg = (f"cannot reach MySQL at {target.where}: check that the server runs and that "
               "the host and port in the cluster URL are right")
    else:
        msg = f"cannot connect to MySQL at {target.where} as {target.user!r}"
    return cluster_error(f"{msg} ({detail})", _transient(exc))


def _sql_error(exc: Exception, secrets: tuple[str | None, ...]) -> str:
    code, text = _error_parts(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return redact(f"{first} ({code})" if code else first, secrets)


def _failure(exc: Exception, secrets: tuple[str | None, ...]) -> tuple[str, bool]:
    """The reason of a failed step (no secret) and whether it may pass."""
    if isinstance(exc, ClusterError):
        return exc.message, isinstance(exc, TransientError)
    return _sql_error(exc, secrets), _transient(exc)


def _version_number(version: str) -> str:
    match = re.match(r"\d+(?:\.\d+)*", version)
    return match.group(0) if match else "unknown"


def _end_sessions_right(version: str) -> str:
    """The name this server gives the right to end other users' sessions: CONNECTION ADMIN on
    MariaDB 10.5.2+, CONNECTION_ADMIN on MySQL 8, SUPER before."""
    number = tuple(int(part) for part in re.findall(r"\d+", _version_number(version))[:3])
    if "mariadb" in version.lower():
        return "CONNECTION ADMIN" if number >= (10, 5, 2) else "SUPER"
    return "CONNECTION_ADMIN" if number >= (8,) else "SUPER"


def _account_of(current_user: str, fallback: str) -> str:
    """`'user'@'host'` of `CURRENT_USER()` (`user@host`)."""
    user, _, host = current_user.rpartition("@")
    return f"'{user or fallback}'@'{host or '%'}'"


@dataclass
class _Progress:
    """What one provision call created, so that its clean-up removes exactly that."""

    created_user: bool = False
    created_database: bool = False
    #: the login user of a rotated instance (`names.login`, not its own user)
    created_login: bool = False


@dataclass(frozen=True)
class _Rights:
    """What the instance's user may do, as the grant tables show it."""

    own: frozenset[str]  # rights on its own database
    own_grant_option: bool
    global_: tuple[str, ...]  # global rights beyond USAGE (GRANT OPTION included)
    databases: tuple[str, ...]  # other database patterns it holds rights on
    #: (database, table) outside its own database, where it holds table or column rights
    tables: tuple[tuple[str, str], ...]


Cursor = pymysql.cursors.Cursor


class MySQLSettings(ClusterSettings):
    """`connection_limit`: connections each instance's user may hold (MAX_USER_CONNECTIONS)."""

    connection_limit: int | None = None


class MySQLProvider(ProviderBase):
    """Database + user per instance on a shared (or dedicated) MySQL/MariaDB server."""

    kind = "mysql"
    title = "MySQL/MariaDB databases: a user and a database per instance"
    category = "DATABASE"
    backup_engine = "tether.backups.engines:MySQLEngine"
    service = "mysql"
    variables = ("{P}_DATABASE_DSN",)
    default_aliases = {"DATABASE_URL": "{P}_DATABASE_DSN"}
    settings_model = MySQLSettings
    limits = {CONNECTION_LIMIT: 20}
    private_servers = "tether.servers.mariadb:PrivateMariaDBServers"

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _admin(self, cluster: ClusterSpec) -> Iterator[Cursor]:
        """An admin cursor; a failure to connect, or a statement failing on it, becomes a
        `ClusterError` (a `TransientError` when it may pass) that holds no secret."""
        target = _Target(cluster)
        conn = ADMIN_CONNECTIONS.take(cluster)
        fresh = conn is None
        if conn is None:
            try:
                # the read timeout covers the server's greeting and the login too: a port that
                # accepts but never greets (not a MySQL server, or a hung one) fails in seconds
                conn = pymysql.connect(host=target.host, port=target.port, user=target.user,
                                       password=target.password,
                                       connect_timeout=CONNECT_TIMEOUT,
                                       read_timeout=GREETING_TIMEOUT,
                                       write_timeout=STATEMENT_TIMEOUT, autocommit=True,
                                       charset="utf8mb4")
            except (pymysql.err.MySQLError, OSError) as exc:
                raise _connect_error(target, cluster, exc) from None
            # then statements may take longer (DROP DATABASE of a big database); PyMySQL reads
            # its read timeout from this attribute before every read
            conn._read_timeout = STATEMENT_TIMEOUT
        clean = False
        try:
            with conn.cursor() as cur:
                if fresh:
                    # DROP DATABASE waits for the metadata locks of open transactions: not
                    # forever (kept with the connection)
                    cur.execute("SET SESSION lock_wait_timeout = 60")
                yield cur
            clean = True
        except pymysql.err.MySQLError as exc:
            reason = _sql_error(exc, (target.password, cluster.url))
            raise cluster_error(f"MySQL at {target.where} failed: {reason}",
                                _transient(exc)) from None
        finally:
            if clean:
                ADMIN_CONNECTIONS.give(cluster, conn)
            else:
                conn.close()

    @staticmethod
    def _is_mariadb(cur: Cursor) -> bool:
        cur.execute("SELECT VERSION()")
        row = cur.fetchone()
        return bool(row) and "mariadb" in str(row[0]).lower()

    @staticmethod
    def _user_exists(cur: Cursor, user: str) -> bool:
        cur.execute("SELECT 1 FROM mysql.user WHERE User = %s AND Host = '%%'", (user,))
        return cur.fetchone() is not None

    @staticmethod
    def _has_grant(cur: Cursor, names: ResourceNames) -> bool:
        """Whether the instance's user holds its grant on the database: Tether's mark."""
        cur.execute("SELECT 1 FROM mysql.db WHERE User = %s AND Host = '%%' AND Db = %s",
                    (names.role, _grant_pattern(names.database)))
        return cur.fetchone() is not None

    @staticmethod
    def _db_comment(cur: Cursor, database: str) -> str | None:
        """The database's comment (MariaDB 10.5+); None where the server keeps none."""
        try:
            cur.execute("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME = %s", (database,))
        except pymysql.err.OperationalError as exc:
            if _error_parts(exc)[0] == _ER_BAD_FIELD:  # MySQL: no database comments
                return None
            raise
        row = cur.fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def _ours(self, cur: Cursor, names: ResourceNames) -> bool:
        """Whether the database (if any) is the instance's: its user holds the grant on it, or
        it carries Tether's mark for the instance."""
        return (self._has_grant(cur, names)
                or self._db_comment(cur, names.database) == _mark(names))

    @staticmethod
    def _connection_limit(cur: Cursor, user: str) -> int:
        """The user's MAX_USER_CONNECTIONS (0: none of its own)."""
        cur.execute("SELECT max_user_connections FROM mysql.user WHERE User = %s "
                    "AND Host = '%%'", (user,))
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    @staticmethod
    def _locked(cur: Cursor, user: str) -> bool:
        cur.execute(f"SHOW CREATE USER {_ACCOUNT}", (user,))
        row = cur.fetchone()  # holds the password hash: only ever searched, never shown
        return bool(row) and "ACCOUNT LOCK" in str(row[0]).upper()

    @staticmethod
    def _rights(cur: Cursor, names: ResourceNames, user: str) -> _Rights:
        """What `user` (one of the instance's users) may do, by the grant tables."""
        grantee = f"'{user}'@'%'"
        own_pattern = _grant_pattern(names.database)
        cur.execute("SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES "
                    "WHERE GRANTEE = %s", (grantee,))
        global_: list[str] = []
        for privilege, grantable in cur.fetchall():
            if privilege != "USAGE" and privilege not in global_:
                global_.append(str(privilege))
            if grantable == "YES" and "GRANT OPTION" not in global_:
                global_.append("GRANT OPTION")
        cur.execute("SELECT TABLE_SCHEMA, PRIVILEGE_TYPE, IS_GRANTABLE FROM "
                    "information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s", (grantee,))
        own: set[str] = set()
        own_grant_option = False
        databases: list[str] = []
        for schema, privilege, grantable in cur.fetchall():
            if schema == own_pattern:
                own.add(str(privilege))
                own_grant_option = own_grant_option or grantable == "YES"
            elif schema not in databases:
                databases.append(str(schema))
        cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLE_PRIVILEGES "
                    "WHERE GRANTEE = %s AND TABLE_SCHEMA <> %s UNION "
                    "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.COLUMN_PRIVILEGES "
                    "WHERE GRANTEE = %s AND TABLE_SCHEMA <> %s ORDER BY 1, 2",
                    (grantee, names.database, grantee, names.database))
        tables = tuple((str(schema), str(table)) for schema, table in cur.fetchall())
        return _Rights(own=frozenset(own), own_grant_option=own_grant_option,
                       global_=tuple(global_), databases=tuple(sorted(databases)), tables=tables)

    @staticmethod
    def _db_exists(cur: Cursor, database: str) -> bool:
        cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                    (database,))
        return cur.fetchone() is not None

    @staticmethod
    def _session_rights_missing(cur: Cursor) -> tuple[list[str], str]:
        """What the admin lacks to see (PROCESS) and end (CONNECTION ADMIN...) other users'
        sessions, named as this server names them, and the GRANT that gives it."""
        cur.execute("SELECT VERSION(), CURRENT_USER()")
        row = cur.fetchone()
        version, current = (str(row[0]), str(row[1])) if row else ("", "")
        account = _account_of(current, "ADMIN")
        cur.execute("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES "
                    "WHERE GRANTEE = %s", (account,))
        held = {str(privilege) for (privilege,) in cur.fetchall()}
        missing = [] if "PROCESS" in held else ["PROCESS"]
        if not held & _END_SESSIONS:
            missing.append(_end_sessions_right(version))
        return missing, f"GRANT {', '.join(missing)} ON *.* TO {account}" if missing else ""

    def _kill_connections(self, cur: Cursor, user: str) -> str | None:
        """Cut the user's open sessions (needs PROCESS and CONNECTION ADMIN or SUPER): a locked
        or dropped user's session keeps its rights, and its locks would block DROP DATABASE.
        None when every session is ended; else why not, with the GRANT that fixes it (without
        PROCESS the admin sees its own sessions only: the user's cannot even be counted)."""
        missing, fix = self._session_rights_missing(cur)
        if "PROCESS" in missing:
            return ("its open sessions cannot be listed (the admin lacks PROCESS and sees only "
                    f"its own), and they keep their rights until they end: {fix} lets Tether "
                    "end them")
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE USER = %s AND ID <> CONNECTION_ID()", (user,))
        failed: list[str] = []
        for (thread_id,) in cur.fetchall():
            try:
                cur.execute("KILL CONNECTION %s", (int(thread_id),))
            except pymysql.err.MySQLError as exc:
                code, _ = _error_parts(exc)
                if code != _ER_NO_SUCH_THREAD:  # gone already is fine
                    failed.append(_sql_error(exc, ()))
                    log.warning("could not end a session of %s: %s", user, failed[-1])
        if not failed:
            return None
        why = (f"{len(failed)} of its open session(s) could not be ended ({failed[0]}), and "
               "they keep their rights until they end")
        return f"{why}: {fix} lets Tether end them" if fix else why

    # -- Provider ---------------------------------------------------------------------------------

    def check(self, cluster: ClusterSpec) -> str:
        """Connect as the admin, make sure it may create users and databases and grant on them,
        return the version (e.g. "10.11.6")."""
        target = _Target(cluster)
        with self._admin(cluster) as cur:
            cur.execute("SELECT VERSION(), CURRENT_USER()")
            row = cur.fetchone()
            version, current = (str(row[0]), str(row[1])) if row else ("", "")
            missing = self._missing_privileges(cur, current)
            sessions, sessions_fix = self._session_rights_missing(cur)
        account = _account_of(current, target.user)
        if missing:
            raise ClusterError(
                f"the user {target.user!r} on MySQL at {target.where} lacks "
                f"{', '.join(missing + sessions)}: Tether needs CREATE USER, and ALL PRIVILEGES "
                "WITH GRANT OPTION on the databases it creates, and PROCESS and "
                f"{_end_sessions_right(version)} to end the sessions of a login it revokes; "
                f"e.g. {_GRANT_FIX.format(account=account)}")
        if sessions:
            raise ClusterError(
                f"the user {target.user!r} on MySQL at {target.where} lacks "
                f"{' and '.join(sessions)}: without them Tether cannot see or end other users' "
                "sessions, so the open sessions of a login it revokes (a rotation's old login, "
                "a removed instance's user) would keep their rights; give them with "
                f"{sessions_fix}")
        return _version_number(version)

    @staticmethod
    def _missing_privileges(cur: Cursor, current_user: str) -> list[str]:
        """The admin's privileges, globally or on a database pattern that covers Tether's
        names (`tether_i1` stands for them all)."""
        user, _, host = current_user.rpartition("@")
        grantee = f"'{user}'@'{host}'"
        cur.execute("SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES "
                    "WHERE GRANTEE = %s", (grantee,))
        global_rows = [(str(p), str(g)) for p, g in cur.fetchall()]
        cur.execute("SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema."
                    "SCHEMA_PRIVILEGES WHERE GRANTEE = %s AND %s LIKE TABLE_SCHEMA",
                    (grantee, naming.resource_names(1).database))
        schema_rows = [(str(p), str(g)) for p, g in cur.fetchall()]
        held_global = {p for p, _ in global_rows}
        held = held_global | {p for p, _ in schema_rows}
        missing = [p for p in ("CREATE USER",) if p not in held_global]
        missing += [p for p in ("CREATE", "DROP") if p not in held]
        if not any(g == "YES" for _, g in global_rows + schema_rows):
            missing.append("GRANT OPTION")
        for table in ("mysql.user", "mysql.db"):
            try:
                cur.execute(f"SELECT 1 FROM {table} LIMIT 0")
            except pymysql.err.MySQLError:
                missing.append(f"SELECT on {table}")
        return missing

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: the user with this password and no rights beyond its database, the
        grant on its database, the database; repairs any drift `observe` reports that can be
        repaired. On a final failure, what this call created is removed again (rule 5); what
        existed before (an instance being repaired) is never dropped here."""
        check_names(names, max_length=32)
        target = _Target(cluster)
        secrets = (secret, target.password, cluster.url)
        limit = _connection_limit(cluster)
        progress = _Progress()
        with self._admin(cluster) as cur:
            try:
                self._converge(cur, names, secret, limit, progress)
            except (pymysql.err.MySQLError, ClusterError) as exc:
                failure, transient = _failure(exc, secrets)
                if not transient and (progress.created_user or progress.created_database
                                      or progress.created_login):
                    try:
                        self._remove_fresh(cluster, names, progress)
                    except Exception as cleanup_exc:  # recorded; a retry converges
                        failure += (" (clean-up also failed: "
                                    f"{redact(str(cleanup_exc), secrets)})")
                raise cluster_error(f"provisioning {names.database} on MySQL at {target.where} "
                                    f"failed: {failure}", transient) from None
        return self._credentials(target, names, secret)

    @staticmethod
    def _credentials(target: _Target, names: ResourceNames, secret: str) -> Credentials:
        return Credentials({"user": names.login, "password": secret, "host": target.host,
                            "port": target.port, "database": names.database})

    def _converge(self, cur: Cursor, names: ResourceNames, secret: str, limit: int,
                  progress: _Progress) -> None:
        db = names.database
        db_exists = self._db_exists(cur, db)
        if db_exists and not self._ours(cur, names):
            raise ClusterError(
                f"a database named {db} exists already and was not made by Tether for this "
                "instance (its user holds no grant on it, and it carries no mark of Tether's): "
                "Tether never takes over a database it did not create; drop or rename that "
                "database, then retry")
        mariadb = self._is_mariadb(cur)
        rotated = names.login != names.role
        # after a rotation the instance's own user only holds the grant: locked, with a
        # password nobody knows
        own_secret = secrets.token_urlsafe(24) if rotated else secret
        progress.created_user = self._converge_user(cur, names, names.role, own_secret, limit,
                                                    mariadb, lock=rotated)
        # the grant first: it is what marks the database as ours
        cur.execute(f"GRANT ALL PRIVILEGES ON {_ident(_grant_pattern(db))}.* TO {_ACCOUNT}",
                    (names.role,))
        comment = " COMMENT %s" if mariadb else ""
        args = (_mark(names),) if mariadb else ()
        if not db_exists:
            try:
                cur.execute(f"CREATE DATABASE {_ident(db)} CHARACTER SET utf8mb4{comment}", args)
            except pymysql.err.ProgrammingError as exc:
                if _error_parts(exc)[0] != _ER_DB_CREATE_EXISTS:
                    raise
                raise ClusterError(f"a database named {db} was just created by someone else: "
                                   "Tether never takes over a database it did not create; "
                                   "drop or rename that database, then retry") from None
            progress.created_database = True
        elif mariadb and self._db_comment(cur, db) != _mark(names):
            cur.execute(f"ALTER DATABASE {_ident(db)}{comment}", args)
        if rotated:
            progress.created_login = self._converge_user(cur, names, names.login, secret, limit,
                                                         mariadb, lock=False)
            cur.execute(f"GRANT ALL PRIVILEGES ON {_ident(_grant_pattern(db))}.* TO "
                        f"{_ACCOUNT}", (names.login,))

    def _converge_user(self, cur: Cursor, names: ResourceNames, user: str, secret: str,
                       limit: int, mariadb: bool, lock: bool) -> bool:
        """One of the instance's users with this password and connection limit, unlocked (or
        `lock`ed), with no rights beyond its database; True when this call created it."""
        if mariadb:
            identified, password = "IDENTIFIED BY PASSWORD %s", native_password_hash(secret)
        else:  # MySQL 8 rewrites the statement in its logs itself
            identified, password = "IDENTIFIED BY %s", secret
        limited = f"{identified} WITH MAX_USER_CONNECTIONS %s"
        alter = f"ALTER USER {_ACCOUNT} {limited} ACCOUNT {'LOCK' if lock else 'UNLOCK'}"
        if self._user_exists(cur, user):
            cur.execute(alter, (user, password, limit))
            self._revoke_extra_rights(cur, names, user)
            return False
        try:
            cur.execute(f"CREATE USER {_ACCOUNT} {limited}" + (" ACCOUNT LOCK" if lock else ""),
                        (user, password, limit))
            return True
        except pymysql.err.OperationalError as exc:
            if _error_parts(exc)[0] != _ER_CANNOT_USER:
                raise
            cur.execute(alter, (user, password, limit))  # made concurrently: converge
            return False

    def _revoke_extra_rights(self, cur: Cursor, names: ResourceNames, user: str) -> None:
        """Take back every right of the user beyond its own database. GRANT OPTION goes first:
        revoking it where the user holds nothing else any more is an error."""
        rights = self._rights(cur, names, user)
        levels = [f"{_ident(pattern)}.*" for pattern in rights.databases]
        levels += [f"{_ident(schema)}.{_ident(table)}" for schema, table in rights.tables]
        if rights.global_:
            levels.append("*.*")
        for level in levels:
            for what in ("GRANT OPTION", "ALL PRIVILEGES"):
                cur.execute(f"REVOKE {what} ON {level} FROM {_ACCOUNT}", (user,))
        if rights.own_grant_option:
            cur.execute(f"REVOKE GRANT OPTION ON {_ident(_grant_pattern(names.database))}.* "
                        f"FROM {_ACCOUNT}", (user,))

    def _remove_fresh(self, cluster: ClusterSpec, names: ResourceNames,
                      progress: _Progress) -> None:
        """Undo a failed provision: what this very call created, nothing else (the user and so
        its grant; the database). A new connection: the old one may be what failed."""
        with self._admin(cluster) as cur:
            if progress.created_login:
                self._drop_user(cur, names.login)
            if progress.created_database:
                cur.execute(f"DROP DATABASE IF EXISTS {_ident(names.database)}")
            if progress.created_user and self._user_exists(cur, names.role):
                self._kill_connections(cur, names.role)
                cur.execute(f"DROP USER IF EXISTS {_ACCOUNT}", (names.role,))

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        check_names(names, max_length=32)
        with self._admin(cluster) as cur:
            return self._user_exists(cur, names.role) or (
                self._db_exists(cur, names.database) and self._ours(cur, names))

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The user (there, not locked, its connection limit, rights on its own database and
        nowhere else) and the database (there, Tether's). After a rotation the instance's own
        user must be locked, and the login user (`names.login`) is the one that must log in.

        An old login a running release may still use (`names.retiring`) may be unlocked; it is
        checked as the login is otherwise (its connection limit, rights on the database and
        nowhere else). That it is locked or gone is no difference: that is where a revoke takes
        it."""
        check_names(names, max_length=32)
        limit = _connection_limit(cluster)
        db, user, login = names.database, names.role, names.login
        rotated = login != user
        old_logins = names.old_logins
        differences: list[str] = []
        with self._admin(cluster) as cur:
            user_exists = self._user_exists(cur, user)
            db_exists = self._db_exists(cur, db)
            ours = db_exists and self._ours(cur, names)
            locked = user_exists and self._locked(cur, user)
            held_limit = user_limit = (self._connection_limit(cur, user) if user_exists
                                       else limit)
            rights = self._rights(cur, names, user) if user_exists else None
            login_exists = self._user_exists(cur, login) if rotated else user_exists
            if rotated:  # the limit that counts is the login's
                login_locked = login_exists and self._locked(cur, login)
                held_limit = self._connection_limit(cur, login) if login_exists else limit
                login_rights = self._rights(cur, names, login) if login_exists else None
            else:
                login_locked, login_rights = locked, None
            # (connection limit, rights) of each old login (not the instance's own user) there
            olds = {old: (self._connection_limit(cur, old), self._rights(cur, names, old))
                    for old in old_logins if old != user and self._user_exists(cur, old)}
        if not user_exists:
            differences.append(f"user {user} is missing")
        if user in old_logins:  # still in use: its limit is a login's
            if user_limit != limit:
                differences.append(f"user {user} may hold {_limit_text(user_limit)} at once, "
                                   f"not {_limit_text(limit)}")
        elif rotated and user_exists and not locked:
            differences.append(f"user {user} can log in, but its credentials were rotated to "
                               f"user {login}")
        if rotated and not login_exists:
            differences.append(f"user {login} (the instance's login) is missing")
        if login_locked and login_exists:
            differences.append(f"user {login} is locked")
        if held_limit != limit:
            differences.append(f"user {login} may hold {_limit_text(held_limit)} at once, not "
                               f"{_limit_text(limit)}")
        if not db_exists:
            differences.append(lost(f"database {db}"))
        elif not ours:
            differences.append(f"database {db} is not marked as Tether's and its user holds no "
                               "grant on it: Tether does not take it over")
        for name, held in ((user, rights), (login, login_rights)):
            if held is not None:
                differences += _rights_differences(name, db, held)
        for old, (old_limit, old_rights) in olds.items():
            if old_limit != limit:
                differences.append(f"user {old} may hold {_limit_text(old_limit)} at once, not "
                                   f"{_limit_text(limit)}")
            differences += _rights_differences(old, db, old_rights)
        return Observation(exists=user_exists or ours, differences=tuple(differences))

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Lock the users out (the instance's own and every login a rotation made), cut their
        sessions, drop the database (if ours), drop the users. The instance's own user goes
        last: its grant is what marks the database as ours (on MySQL), so a crash half-way
        leaves a state the retry still recognises."""
        check_names(names, max_length=32)
        target = _Target(cluster)
        with self._admin(cluster) as cur:
            try:
                ours = self._ours(cur, names)
                users = [u for u in (*self._logins(cur, names), names.role)
                         if self._user_exists(cur, u)]
                unended: dict[str, list[str]] = {}  # why -> the users whose sessions stay
                for user in users:
                    try:  # no new sessions while we remove it (MariaDB 10.4+, MySQL 5.7+)
                        cur.execute(f"ALTER USER {_ACCOUNT} ACCOUNT LOCK", (user,))
                    except pymysql.err.MySQLError as exc:
                        log.warning("could not lock %s: %s", user, _sql_error(exc, ()))
                    why = self._kill_connections(cur, user)
                    if why is not None:
                        unended.setdefault(why, []).append(user)
                if unended:
                    # a dropped user's open session keeps its rights (it could even create the
                    # database again): drop nothing until they can be ended
                    whys = "; ".join(f"user {', '.join(who)}: {why}"
                                     for why, who in unended.items())
                    raise ClusterError(
                        f"removing {names.database} from MySQL at {target.where}: its users "
                        f"are locked, but {whys}. Nothing was dropped: the removal can be "
                        "retried once they can be ended")
                if ours:
                    cur.execute(f"DROP DATABASE IF EXISTS {_ident(names.database)}")
                elif self._db_exists(cur, names.database):
                    log.warning("database %s was not made by Tether for %s: leaving it alone",
                                names.database, names.role)
                for user in users:
                    cur.execute(f"DROP USER IF EXISTS {_ACCOUNT}", (user,))
            except pymysql.err.MySQLError as exc:
                reason = _sql_error(exc, (target.password, cluster.url))
                raise cluster_error(f"removing {names.database} from MySQL at {target.where} "
                                    f"failed: {reason}", _transient(exc)) from None

    @staticmethod
    def _logins(cur: Cursor, names: ResourceNames) -> list[str]:
        """The login users rotations made for the instance (`NAME_<n>`), whatever the store
        knows of them (a crash may have left one it never recorded)."""
        cur.execute("SELECT User FROM mysql.user WHERE Host = '%%' AND User LIKE %s ORDER BY 1",
                    (_grant_pattern(names.role) + "\\_%",))
        return [str(r[0]) for r in cur.fetchall()
                if str(r[0]) != names.role and names.is_login(str(r[0]))]

    def _drop_user(self, cur: Cursor, user: str) -> None:
        """Lock a user, kill its sessions, drop it; succeeds when it is gone. Only for a login
        the failing call itself made (nobody holds its sessions yet): ending them is best
        effort."""
        if not self._user_exists(cur, user):
            return
        cur.execute(f"ALTER USER {_ACCOUNT} ACCOUNT LOCK", (user,))
        self._kill_connections(cur, user)
        cur.execute(f"DROP USER IF EXISTS {_ACCOUNT}", (user,))

    # -- Rotatable --------------------------------------------------------------------------------

    def add_login(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Make (or converge) the login user `names.login` beside the instance's other users,
        with `secret`, the instance's connection limit and all rights on its database (and
        none elsewhere). The instance's user and database must be there (a repair makes them
        again). On a final failure a user this call made is dropped again."""
        check_names(names, max_length=32)
        if names.login == names.role:
            raise ClusterError(f"user {names.role} is the instance's own user: a rotation makes "
                               "a login of another name")
        target = _Target(cluster)
        secrets_ = (secret, target.password, cluster.url)
        created = False
        with self._admin(cluster) as cur:
            try:
                if not (self._user_exists(cur, names.role) and self._db_exists(
                        cur, names.database) and self._ours(cur, names)):
                    raise ClusterError(
                        f"user {names.role} or its database {names.database} is missing: the "
                        "instance must be repaired before its credentials can be rotated "
                        "(the reconciler repairs it, or remove and add it again)")
                created = self._converge_user(cur, names, names.login, secret,
                                              _connection_limit(cluster),
                                              self._is_mariadb(cur), lock=False)
                cur.execute(f"GRANT ALL PRIVILEGES ON {_ident(_grant_pattern(names.database))}"
                            f".* TO {_ACCOUNT}", (names.login,))
            except (pymysql.err.MySQLError, ClusterError) as exc:
                failure, transient = _failure(exc, secrets_)
                if not transient and created:
                    try:
                        with self._admin(cluster) as cleanup:
                            self._drop_user(cleanup, names.login)
                    except Exception as cleanup_exc:  # recorded; a retry converges
                        failure += (" (clean-up also failed: "
                                    f"{redact(str(cleanup_exc), secrets_)})")
                raise cluster_error(f"making the login {names.login} on MySQL at {target.where} "
                                    f"failed: {failure}", transient) from None
        return self._credentials(target, names, secret)

    def revoke_login(self, cluster: ClusterSpec, names: ResourceNames, login: str) -> None:
        """Revoke an old login of the instance: locked with a new random password, its open
        sessions killed. Never dropped here: the views, triggers and routines it defined name
        it as their DEFINER and stop working without it (MySQL 8.0.22+ even refuses the DROP
        USER); the instance's own user's grant also marks the database as Tether's. Every
        login goes with the instance (`deprovision`)."""
        check_names(names, max_length=32)
        if login == names.login or not names.is_login(login):
            raise ClusterError(f"refusing to revoke {login!r}: not an old login of "
                               f"{names.role} (its current login is {names.login})")
        target = _Target(cluster)
        with self._admin(cluster) as cur:
            try:
                if self._user_exists(cur, login):
                    unknown = secrets.token_urlsafe(24)
                    if self._is_mariadb(cur):
                        cur.execute(f"ALTER USER {_ACCOUNT} IDENTIFIED BY PASSWORD %s "
                                    "ACCOUNT LOCK", (login, native_password_hash(unknown)))
                    else:
                        cur.execute(f"ALTER USER {_ACCOUNT} IDENTIFIED BY %s ACCOUNT LOCK",
                                    (login, unknown))
                    unended = self._kill_connections(cur, login)
                    if unended is not None:
                        raise ClusterError(
                            f"the login {login} on MySQL at {target.where} is locked (no new "
                            f"session), but {unended}")
            except pymysql.err.MySQLError as exc:
                reason = _sql_error(exc, (target.password, cluster.url))
                raise cluster_error(f"revoking the login {login} on MySQL at {target.where} "
                                    f"failed: {reason}", _transient(exc)) from None

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        c = credentials.values
        dsn = naming.database_dsn("mysql", str(c["user"]), str(c["password"]),
                                  str(c["host"]), int(c["port"]), str(c["database"]))
        return naming.database_vars(prefix, dsn)


PROVIDER = MySQLProvider
