"""PostgreSQL: one role and one database per instance on a shared cluster, and dedicated servers
for `--private` instances.

Least privilege: the role can log in and owns its database, nothing more (no superuser, createdb,
createrole, replication, bypassrls, no membership of other roles), and only it may connect to its
database (every right on it is revoked from PUBLIC and from any other role).
Passwords are sent to the server as SCRAM verifiers computed here, so the clear-text password
never appears in a server log or in `pg_stat_activity`.

Ownership: a database is Tether's when the instance's role owns it, or when its comment carries
Tether's mark for the instance (set at every provision), so a database whose owner was changed by
hand is still recognised and given back to its role; a database of that name that is neither
belongs to someone else: provisioning refuses to take it over and removal leaves it alone.

Drift (`observe`) and its repair (`provision` again): a missing role or database is made again, the
role's attributes, password and connection limit reset, other roles' memberships revoked, the
database given back to the role, rights of PUBLIC and of other roles revoked, connections allowed
again. What cannot be repaired: a database dropped by hand comes back EMPTY (its data is lost); a
superuser attribute or another role's membership cannot be taken away by an admin that is not a
superuser (nor holds ADMIN on that role); a database of that name that carries no mark is not
taken over.

Fair shares: on a shared cluster the role gets `CONNECTION LIMIT` (the cluster setting
`connection_limit`, default 20; 0 for no limit), so one tenant cannot take every connection slot
of the server; a private cluster's role has no limit unless the setting asks for one.

Rotation (`add_login`, `revoke_login`): a role has one password, so new credentials are a second
login role `<role>_<n>` that is a member of the instance's role (INHERIT) and acts as it
(`SET role` by default, so what it creates belongs to the instance's role), with the same
connection limit and no other right. The old login is revoked once no release uses it: the
instance's own role becomes NOLOGIN without a password (it keeps owning the database), an earlier
`<role>_<n>` is dropped (what it owns given to the instance's role first); their open sessions
are ended. `observe` and `provision` take the current login from `names.login`: after a rotation
the instance's role is expected to be NOLOGIN, and the connection limit is the login's.

Timeouts: connecting (TCP, TLS, the server's first answer and the login) gives up after
`CONNECT_TIMEOUT` seconds, so an address that accepts but never answers fails in seconds with a
message that says so; statements stop after 120 s on the server, and TCP keepalives notice a
server that vanished while Tether waits for an answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

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
    instance_limit,
    is_transient,
)
from tether.redact import redact

log = logging.getLogger("tether.providers.postgres")

#: seconds for the connection, TLS, the server's first answer and the login
CONNECT_TIMEOUT = 5
#: TCP keepalives on admin connections: a server that vanished while Tether waits for an answer
#: is noticed after about KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT seconds
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 15, "keepalives_interval": 5,
               "keepalives_count": 3}
#: `CONNECTION LIMIT` that means none
_NO_LIMIT = -1
_URL_HINT = "use postgres://USER:PASSWORD@HOST:PORT/postgres"
MARK = "managed by Tether"
#: SQLSTATEs of failures that may pass: connection exceptions (class 08), the server shutting
#: down or starting up, too many connections, serialization failures and deadlocks, an object
#: in use (55006: e.g. template1 being accessed during CREATE DATABASE), a lock not available
#: (55P03)
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55006",
                     "55P03")
#: role attributes a tenant's role must not have, as pg_roles names them and ALTER ROLE resets them
_FORBIDDEN = (("rolsuper", "SUPERUSER"), ("rolcreatedb", "CREATEDB"),
              ("rolcreaterole", "CREATEROLE"), ("rolreplication", "REPLICATION"),
              ("rolbypassrls", "BYPASSRLS"))


def _reusable(conn: psycopg.Connection[Any]) -> bool:
    return not conn.closed and not conn.broken and \
        conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


#: the kept admin connections of this process (`KeptConnections`)
ADMIN_CONNECTIONS: KeptConnections[psycopg.Connection[Any]] = KeptConnections(
    check=lambda conn: conn.execute("SELECT 1"), reusable=_reusable,
    close=lambda conn: conn.close())


def _connection_limit(cluster: ClusterSpec) -> int:
    """The `CONNECTION LIMIT` of the instances' roles on this cluster (-1: none)."""
    limit = instance_limit(cluster, CONNECTION_LIMIT)
    return _NO_LIMIT if limit is None else limit


def _limit_text(limit: int) -> str:
    return "any number of connections" if limit < 0 else f"{limit} connection(s)"


#: libpq options that make Tether read a file of its own machine (a password file, a service
#: file, client keys and certificates): whoever registers a cluster must not be able to point
#: Tether's process at its files. `sslrootcert=system` (the system's CAs) reads none of yours.
_LOCAL_FILE_OPTIONS = frozenset({"passfile", "service", "servicefile", "sslcert", "sslkey",
                                 "sslrootcert", "sslcrl", "sslcrldir", "sslpassword"})


class _Target:
    """Where a cluster URL points, without its password (safe to show)."""

    def __init__(self, cluster: ClusterSpec) -> None:
        try:
            params = conninfo_to_dict(cluster.url)
        except Exception:  # the parser's message may quote the URL, password included
            raise ClusterError(f"the cluster URL is not a valid PostgreSQL URL: {_URL_HINT}"
                               ) from None
        local = sorted(key for key in params if key in _LOCAL_FILE_OPTIONS
                       and not (key == "sslrootcert" and params[key] == "system"))
        if local:
            raise ClusterError(
                f"the cluster URL may not use {', '.join(local)}: those options read files on "
                "Tether's machine. Put the password in the URL, and for TLS use sslmode="
                "verify-full with sslrootcert=system (the CA in the system's trust store)")
        self.password: str | None = params.get("password")
        self.user = str(params.get("user") or "postgres")
        self.host = str(params.get("host") or "localhost")
        self.port = int(params.get("port") or 5432)
        self.dbname = str(params.get("dbname") or self.user)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _mark(names: ResourceNames) -> str:
    return f"{MARK}: {names.base}"


def _ours(database: tuple[str, str | None, bool], names: ResourceNames) -> bool:
    """Whether a database (owner, comment, ...) is the instance's: its role owns it, or it
    carries Tether's mark for the instance."""
    return database[0] == names.role or database[1] == _mark(names)


def _transient(exc: BaseException) -> bool:
    """Whether a psycopg failure may pass (the server restarting, a connection cut...)."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return any(state.startswith(prefix) for prefix in _TRANSIENT_STATES)
    return isinstance(exc, psycopg.OperationalError) and is_transient(exc)


def _connect_error(target: _Target, cluster: ClusterSpec, exc: Exception) -> ClusterError:
    """Turn a connection failure into a message that says what to fix (and holds no secret);
    a `TransientError` when it may pass (refused, timed out, the server starting up...)."""
    raw = str(exc)
    detail = redact(raw.strip().splitlines()[-1] if raw.strip() else type(exc).__name__,
                     (target.password, cluster.url))
    low = raw.lower()
    if "password authentication failed" in low or "authentication failed" in low:
        msg = (f"PostgreSQL at {target.where} refused the password of user {target.user!r}: "
               "fix the password in the cluster URL")
    elif "no password supplied" in low:
        msg = (f"PostgreSQL at {target.where} asks for a password for user {target.user!r}: "
               f"put it in the cluster URL ({_URL_HINT})")
    elif re.search(r'role ".*" does not exist', low):
        msg = (f"PostgreSQL at {target.where} has no user {target.user!r}: fix the user in the "
               "cluster URL")
    elif re.search(r'database ".*" does not exist', low):
        msg = (f"PostgreSQL at {target.where} has no database {target.dbname!r}: put an existing "
               f"database in the cluster URL ({_URL_HINT})")
    elif "no pg_hba.conf entry" in low:
        msg = (f"PostgreSQL at {target.where} does not accept connections from Tether for user "
               f"{target.user!r}: allow it in pg_hba.conf")
    elif "timeout expired" in low or "timed out" in low:
        return cluster_error(
            f"PostgreSQL at {target.where} timed out: no answer within {CONNECT_TIMEOUT} s. "
            f"Check that {target.where} is a PostgreSQL server (not another service), that it "
            "runs and is not overloaded, and that no firewall drops the traffic "
            f"({detail})", transient=True)
    elif _transient(exc):
        return cluster_error(f"cannot reach PostgreSQL at {target.where} for now: check that "
                             "the server runs and that the host and port in the cluster URL are "
                             f"right ({detail})", transient=True)
    elif any(s in low for s in ("could not translate", "could not connect",
                                "name or service not known")):
        msg = (f"cannot reach PostgreSQL at {target.where}: check that the server runs and "
               "that the host and port in the cluster URL are right")
    else:
        msg = f"cannot connect to PostgreSQL at {target.where} as {target.user!r}"
    return ClusterError(f"{msg} ({detail})")


def _sql_error(exc: psycopg.Error, secrets: tuple[str | None, ...]) -> str:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None and diag.message_primary else None) or str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    detail = diag.message_detail if diag is not None else None
    if detail and detail.strip():  # e.g. which attribute only a superuser may change
        first += f" ({detail.strip().splitlines()[0]})"
    return redact(first, secrets)


def _failure(exc: Exception, secrets: tuple[str | None, ...]) -> tuple[str, bool]:
    """The reason of a failed step (no secret) and whether it may pass."""
    if isinstance(exc, ClusterError):
        return exc.message, isinstance(exc, TransientError)
    assert isinstance(exc, psycopg.Error)
    return _sql_error(exc, secrets), _transient(exc)


def _verifier(conn: psycopg.Connection[Any], role: str, secret: str) -> sql.Composable:
    """The SCRAM verifier of `secret` for `role`, as a literal: the clear-text password never
    reaches the server."""
    return sql.Literal(conn.pgconn.encrypt_password(
        secret.encode(), role.encode(), b"scram-sha-256").decode())


def _fixes(found: _Role) -> str:
    """` NOSUPERUSER...` for the forbidden attributes a role holds (CREATEDB and CREATEROLE are
    always reset): only those, since an admin that is not a superuser may not even name
    SUPERUSER, REPLICATION or BYPASSRLS in ALTER ROLE."""
    return "".join(f" NO{attribute}" for attribute in found.forbidden
                   if attribute not in ("CREATEDB", "CREATEROLE"))


@dataclass
class _Made:
    """What one provision call created, so that its clean-up removes exactly that."""

    role: bool = False
    database: bool = False
    #: the login role of a rotated instance (`names.login`, not its own role)
    login: bool = False
    #: the owner a database that existed before this call had, when this call gave it to the
    #: role (a repair); the clean-up gives it back
    database_owner_before: str | None = None


@dataclass(frozen=True)
class _Role:
    """A role's attributes, as pg_roles shows them."""

    can_login: bool
    forbidden: tuple[str, ...]  # the attributes it must not have (e.g. SUPERUSER)
    expired: bool
    connection_limit: int  # -1: none


class PostgresSettings(ClusterSettings):
    """`connection_limit`: connections each instance's role may hold (see `instance_limit`)."""

    connection_limit: int | None = None


class PostgresProvider(ProviderBase):
    """Role + database per instance on a shared (or dedicated) PostgreSQL cluster."""

    kind = "postgres"
    title = "PostgreSQL databases: a role and a database per instance"
    category = "DATABASE"
    backup_engine = "tether.backups.engines:PostgresEngine"
    service = "postgres"
    variables = ("{P}_DATABASE_DSN",)
    default_aliases = {"DATABASE_URL": "{P}_DATABASE_DSN"}
    settings_model = PostgresSettings
    limits = {CONNECTION_LIMIT: 20}
    private_servers = "tether.servers.postgres:PrivatePostgresServers"

    def identity(self, cluster: ClusterSpec) -> str | None:
        """The server's system identifier (made by initdb, kept across restarts, ports and
        moves of its data dir); None when the admin may not read it or the server is away."""
        try:
            with psycopg.connect(cluster.url, connect_timeout=10, autocommit=True) as conn:
                row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        except psycopg.Error:
            return None
        return f"postgres:{row[0]}" if row and row[0] is not None else None

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _admin(self, cluster: ClusterSpec) -> Iterator[psycopg.Connection[Any]]:
        """An admin connection, kept for the next call when this one ends cleanly
        (`ADMIN_CONNECTIONS`); a failure to connect, or a query failing on it, becomes a
        `ClusterError` (a `TransientError` when it may pass) that holds no secret."""
        target = _Target(cluster)
        conn = ADMIN_CONNECTIONS.take(cluster)
        fresh = conn is None
        if conn is None:
            try:
                conn = psycopg.connect(cluster.url, connect_timeout=CONNECT_TIMEOUT,
                                       autocommit=True, application_name="tether",
                                       **_KEEPALIVES)
            except psycopg.Error as exc:
                raise _connect_error(target, cluster, exc) from None
        clean = False
        try:
            if fresh:
                conn.execute("SET statement_timeout = '120s'")  # kept with the connection
            yield conn
            clean = True
        except psycopg.Error as exc:
            reason = _sql_error(exc, (target.password, cluster.url))
            raise cluster_error(f"PostgreSQL at {target.where} failed: {reason}",
                                _transient(exc)) from None
        finally:
            if clean:
                ADMIN_CONNECTIONS.give(cluster, conn)
            else:
                conn.close()

    @staticmethod
    def _role(conn: psycopg.Connection[Any], role: str) -> _Role | None:
        row = conn.execute(
            "SELECT rolcanlogin, coalesce(rolvaliduntil < now(), false), rolconnlimit, "
            + ", ".join(column for column, _ in _FORBIDDEN)
            + " FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if row is None:
            return None
        forbidden = tuple(attribute for (_, attribute), held in zip(_FORBIDDEN, row[3:],
                                                                    strict=True) if held)
        return _Role(can_login=bool(row[0]), forbidden=forbidden, expired=bool(row[1]),
                     connection_limit=int(row[2]))

    @staticmethod
    def _memberships(conn: psycopg.Connection[Any], role: str) -> list[str]:
        """The roles `role` is a member of (none, for a tenant)."""
        return [str(r[0]) for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s ORDER BY 1", (role,))]

    @staticmethod
    def _database(conn: psycopg.Connection[Any], database: str
                  ) -> tuple[str, str | None, bool] | None:
        """(owner, comment, accepts connections) of a database, or None."""
        row = conn.execute("SELECT pg_get_userbyid(datdba), shobj_description(oid, "
                           "'pg_database'), datallowconn FROM pg_database WHERE datname = %s",
                           (database,)).fetchone()
        return None if row is None else (str(row[0]), row[1], bool(row[2]))

    @staticmethod
    def _grantees(conn: psycopg.Connection[Any], names: ResourceNames) -> dict[str, list[str]]:
        """Who holds which rights on the database, besides its owner and the instance's role
        ("PUBLIC" for everyone); the default rights count (PUBLIC: CONNECT, TEMPORARY)."""
        rows = conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
            "a.privilege_type FROM pg_database d, "
            "aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a "
            "WHERE d.datname = %s AND a.grantee <> d.datdba ORDER BY 1, 2",
            (names.database,)).fetchall()
        held: dict[str, list[str]] = {}
        for grantee, privilege in rows:
            if grantee != names.role and privilege not in held.setdefault(grantee, []):
                held[grantee].append(str(privilege))
        return {grantee: privileges for grantee, privileges in held.items() if privileges}

    @staticmethod
    def _privileges(conn: psycopg.Connection[Any]) -> tuple[bool, bool, bool]:
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                           "WHERE rolname = current_user").fetchone()
        return (bool(row[0]), bool(row[1]), bool(row[2])) if row else (False, False, False)

    # -- Provider ---------------------------------------------------------------------------------

    def check(self, cluster: ClusterSpec) -> str:
        """Connect as the admin, make sure it may create roles and databases, return the
        version (e.g. "18.6")."""
        target = _Target(cluster)
        with self._admin(cluster) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            superuser, createrole, createdb = self._privileges(conn)
        if not (superuser or (createrole and createdb)):
            raise ClusterError(
                f"the user {target.user!r} on {target.where} may not create roles and databases: "
                "use a superuser, or give it CREATEROLE and CREATEDB "
                f"(ALTER ROLE {target.user} CREATEROLE CREATEDB)")
        version = str(row[0]) if row else ""
        return version.split()[0] if version else "unknown"

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: role with this password and no other rights, its own database, rights
        on it for the role alone; repairs any drift `observe` reports that can be repaired.
        After a rotation (`names.login` is not the role) the role is NOLOGIN without a password
        and the login role gets the password. On a final failure, what this call created is
        removed again (rule 5); what existed before (an instance already provisioned, being
        repaired) is never dropped here."""
        check_names(names)
        target = _Target(cluster)
        secrets = (secret, target.password, cluster.url)
        limit = _connection_limit(cluster)
        made = _Made()
        with self._admin(cluster) as conn:
            try:
                self._converge(conn, names, secret, limit, made)
            except (psycopg.Error, ClusterError) as exc:
                failure, transient = _failure(exc, secrets)
                if not transient and (made.role or made.database or made.login):
                    try:
                        self._remove_made(cluster, names, made)
                    except Exception as cleanup_exc:  # recorded; a retry converges
                        failure += (" (clean-up also failed: "
                                    f"{redact(str(cleanup_exc), secrets)})")
                raise cluster_error(f"provisioning {names.database} on PostgreSQL at "
                                    f"{target.where} failed: {failure}", transient) from None
        return self._credentials(target, names, secret)

    @staticmethod
    def _credentials(target: _Target, names: ResourceNames, secret: str) -> Credentials:
        return Credentials({"user": names.login, "password": secret, "host": target.host,
                            "port": target.port, "database": names.database})

    def _converge(self, conn: psycopg.Connection[Any], names: ResourceNames, secret: str,
                  limit: int, made: _Made) -> None:
        self._converge_role(conn, names, secret, limit, made)
        self._converge_database(conn, names, made)
        if names.login != names.role:
            self._converge_login(conn, names, secret, limit, made)

    def _converge_role(self, conn: psycopg.Connection[Any], names: ResourceNames, secret: str,
                       limit: int, made: _Made) -> None:
        """The instance's own role: it logs in with `secret` until a rotation gives the
        application another login; from then on it only owns (NOLOGIN, no password)."""
        role, connection_limit = sql.Identifier(names.role), sql.Literal(limit)
        logs_in = names.login == names.role
        login = sql.SQL("LOGIN" if logs_in else "NOLOGIN")
        verifier = _verifier(conn, names.role, secret) if logs_in else sql.SQL("NULL")
        found = self._role(conn, names.role)
        if found is None:
            try:
                conn.execute(sql.SQL(
                    "CREATE ROLE {} WITH {} NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD {}").format(
                        role, login, connection_limit, verifier))
                made.role = True
            except psycopg.errors.DuplicateObject:  # created concurrently: converge
                found = self._role(conn, names.role)
        if found is not None:
            # Only the attributes that are wrong: an admin that is not a superuser may not even
            # name SUPERUSER, REPLICATION or BYPASSRLS in ALTER ROLE.
            conn.execute(sql.SQL("ALTER ROLE {} WITH {} NOCREATEDB NOCREATEROLE" + _fixes(found)
                                 + " CONNECTION LIMIT {} VALID UNTIL 'infinity' PASSWORD {}"
                                 ).format(role, login, connection_limit, verifier))
            for group in self._memberships(conn, names.role):
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), role))
        # A CREATEROLE admin must be able to SET ROLE to the role to make it a database owner
        # (and later to drop that database).
        self._grant_to_admin(conn, names.role)

    def _grant_to_admin(self, conn: psycopg.Connection[Any], role: str) -> None:
        """Let an admin that is not a superuser act as `role` (own, reassign, end sessions)."""
        if self._privileges(conn)[0]:
            return
        if conn.info.server_version >= 160000:
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE")
                         .format(sql.Identifier(role)))
        else:
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))

    def _converge_login(self, conn: psycopg.Connection[Any], names: ResourceNames, secret: str,
                        limit: int, made: _Made) -> None:
        """The login role of a rotated instance: LOGIN with `secret` and the instance's
        connection limit, a member of the instance's role (INHERIT) and of nothing else, acting
        as it by default (`SET role`), so what it creates belongs to the instance's role."""
        login, role = sql.Identifier(names.login), sql.Identifier(names.role)
        connection_limit = sql.Literal(limit)
        verifier = _verifier(conn, names.login, secret)
        found = self._role(conn, names.login)
        if found is None:
            try:
                conn.execute(sql.SQL(
                    "CREATE ROLE {} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD {}").format(
                        login, connection_limit, verifier))
                made.login = True
            except psycopg.errors.DuplicateObject:  # created concurrently: converge
                found = self._role(conn, names.login)
        if found is not None:
            conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN INHERIT NOCREATEDB NOCREATEROLE"
                                 + _fixes(found) + " CONNECTION LIMIT {} VALID UNTIL "
                                 "'infinity' PASSWORD {}").format(login, connection_limit,
                                                                  verifier))
        groups = self._memberships(conn, names.login)
        for group in groups:
            if group != names.role:
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), login))
        if names.role not in groups:
            if conn.info.server_version >= 160000:
                conn.execute(sql.SQL("GRANT {} TO {} WITH INHERIT TRUE, SET TRUE").format(
                    role, login))
            else:
                conn.execute(sql.SQL("GRANT {} TO {}").format(role, login))
        if self._acts_as(conn, names.login) != names.role:
            conn.execute(sql.SQL("ALTER ROLE {} SET role TO {}").format(
                login, sql.Literal(names.role)))
        self._grant_to_admin(conn, names.login)

    @staticmethod
    def _acts_as(conn: psycopg.Connection[Any], login: str) -> str | None:
        """The role a login role takes by default (its `SET role` setting), if any."""
        row = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = %s AND s.setdatabase = 0", (login,)).fetchone()
        for entry in (row[0] or []) if row else []:
            key, _, value = str(entry).partition("=")
            if key.lower() == "role":
                return value
        return None

    def _converge_database(self, conn: psycopg.Connection[Any], names: ResourceNames,
                           made: _Made) -> None:
        role, db = sql.Identifier(names.role), sql.Identifier(names.database)
        found = self._database(conn, names.database)
        if found is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
                made.database = True
            except psycopg.errors.DuplicateDatabase:
                pass
            found = self._database(conn, names.database)
            if found is None:
                raise ClusterError(f"the database {names.database} vanished while it was made")
        owner, comment, allows_connections = found
        if owner != names.role:
            if comment != _mark(names):
                raise ClusterError(
                    f"a database named {names.database} exists already and belongs to "
                    f"{owner!r}, not to Tether's role for this instance: Tether never takes over "
                    "a database it did not create; drop or rename that database, then retry")
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role))
            if not made.database:
                made.database_owner_before = owner
        if comment != _mark(names):
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                db, sql.Literal(_mark(names))))
        if not allows_connections:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(db))
        for grantee in self._grantees(conn, names):
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, who))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))

    def _remove_made(self, cluster: ClusterSpec, names: ResourceNames, made: _Made) -> None:
        """Undo a failed provision: what this call created, nothing else.

        The database is dropped only if this call created it: one that existed before (an
        instance being repaired, e.g. its role dropped by hand) holds a tenant's data and is
        never dropped here, even though it is Tether's. A role this call created is dropped,
        but a database that existed before and that this call gave to that role is first given
        back to the owner it had before this call (the admin, in the usual case). Should giving
        it back fail, or should the role own any other database this call did not create, the
        role is left in place and the clean-up fails with the reason (a retry converges): a
        role is never dropped with a database, and PostgreSQL would refuse anyway."""
        role, db = sql.Identifier(names.role), sql.Identifier(names.database)
        with self._admin(cluster) as conn:
            if made.login:
                self._drop_login(conn, cluster, names, names.login)
            if made.database:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            if not made.role:
                return
            found = self._database(conn, names.database)
            if (made.database_owner_before is not None and found is not None
                    and found[0] == names.role):
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    db, sql.Identifier(made.database_owner_before)))
            owned = [str(r[0]) for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datdba = "
                "(SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1", (names.role,))]
            if owned:
                raise ClusterError(f"role {names.role} owns {', '.join(owned)}, which this "
                                   "provision did not create: the role is left in place")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", (names.role,))
            row = conn.execute("SELECT pg_has_role(current_user, %s, 'USAGE')",
                               (names.role,)).fetchone()
            if row and row[0]:  # its rights on a database that stays; drops no database
                conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            elif found is not None and not made.database:
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, role))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        check_names(names)
        with self._admin(cluster) as conn:
            database = self._database(conn, names.database)
            return (self._role(conn, names.role) is not None
                    or (database is not None and _ours(database, names)))

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The role (there, can log in, its connection limit, no attribute or membership beyond
        that), the database (there, owned by the role, accepting connections) and who else may
        use it. After a rotation the role must not log in, and the login role (`names.login`)
        is looked at instead: there, can log in, its connection limit, no attribute beyond, a
        member of the role alone and acting as it.

        An old login a running release may still use (`names.retiring`) may log in and be a
        member of the role; it is checked as the login is otherwise (no attribute or other
        membership, the same connection limit). That it is gone or cannot log in any more is no
        difference: that is where a revoke takes it."""
        check_names(names)
        limit = _connection_limit(cluster)
        rotated = names.login != names.role
        old_logins = names.old_logins
        differences: list[str] = []
        with self._admin(cluster) as conn:
            role = self._role(conn, names.role)
            memberships = self._memberships(conn, names.role) if role else []
            login = self._role(conn, names.login) if rotated else role
            login_groups = self._memberships(conn, names.login) if rotated and login else []
            acts_as = self._acts_as(conn, names.login) if rotated and login else None
            old_roles = {old: self._role(conn, old) for old in old_logins if old != names.role}
            old_groups = {old: self._memberships(conn, old) for old, found in old_roles.items()
                          if found is not None}
            database = self._database(conn, names.database)
            ours = database is not None and _ours(database, names)
            grantees = self._grantees(conn, names) if ours else {}
            login_connects = bool(login and ours and conn.execute(
                "SELECT has_database_privilege(%s, %s, 'CONNECT')",
                (names.login, names.database)).fetchone()[0])  # type: ignore[index]
        if role is None:
            differences.append(f"role {names.role} is missing")
        else:
            differences += [f"role {names.role} has {attribute}" for attribute in role.forbidden]
            differences += [f"role {names.role} is a member of {group}"
                            for group in memberships]
            if names.role in old_logins:  # still in use: its limit is a login's
                if role.connection_limit != limit:
                    differences.append(self._limit_difference(names.role, role, limit))
            elif rotated and role.can_login:
                differences.append(f"role {names.role} can log in, but its credentials were "
                                   f"rotated to role {names.login}")
        for old, found in old_roles.items():
            if found is None:
                continue
            differences += [f"role {old} has {attribute}" for attribute in found.forbidden]
            if found.connection_limit != limit:
                differences.append(self._limit_difference(old, found, limit))
            differences += [f"role {old} is a member of {group}"
                            for group in old_groups.get(old, []) if group != names.role]
        if rotated and login is None:
            differences.append(f"role {names.login} (the instance's login) is missing")
        if login is not None:
            differences += self._login_differences(names.login, login, limit)
        if rotated and login is not None:
            differences += [f"role {names.login} has {attribute}"
                            for attribute in login.forbidden]
            differences += [f"role {names.login} is a member of {group}"
                            for group in login_groups if group != names.role]
            if names.role not in login_groups:
                differences.append(f"role {names.login} is not a member of {names.role}")
            if acts_as != names.role:
                differences.append(f"role {names.login} does not act as {names.role} "
                                   "(its SET role setting)")
        if database is None:
            differences.append(lost(f"database {names.database}"))
        elif not ours:
            differences.append(f"database {names.database} belongs to {database[0]} and is not "
                               "marked as Tether's: Tether does not take it over")
        else:
            owner, _, allows_connections = database
            if owner != names.role:
                differences.append(f"database {names.database} belongs to {owner}, not to "
                                   f"role {names.role}")
            if not allows_connections:
                differences.append(f"database {names.database} does not allow connections")
            if login is not None and not login_connects:
                differences.append(f"role {names.login} may not connect to database "
                                   f"{names.database}")
            differences += [f"{', '.join(privileges)} on {names.database} is granted to "
                            f"{grantee}" for grantee, privileges in grantees.items()]
        return Observation(exists=role is not None or ours, differences=tuple(differences))

    @staticmethod
    def _login_differences(name: str, login: _Role, limit: int) -> list[str]:
        """How the role the application logs in as differs from a working, limited login."""
        differences: list[str] = []
        if not login.can_login:
            differences.append(f"role {name} cannot log in (NOLOGIN)")
        if login.expired:
            differences.append(f"the password of role {name} has expired")
        if login.connection_limit != limit:
            differences.append(PostgresProvider._limit_difference(name, login, limit))
        return differences

    @staticmethod
    def _limit_difference(name: str, login: _Role, limit: int) -> str:
        return (f"role {name} may hold {_limit_text(login.connection_limit)} at once, not "
                f"{_limit_text(limit)}")

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Drop the database (open connections are cut), every login role a rotation made and
        the role. A database of that name that is not Tether's is left alone."""
        check_names(names)
        target = _Target(cluster)
        role, db = sql.Identifier(names.role), sql.Identifier(names.database)
        with self._admin(cluster) as conn:
            try:
                found = self._database(conn, names.database)
                if found is not None and _ours(found, names):
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()",
                                 (names.database,))
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
                elif found is not None:
                    log.warning("database %s belongs to %s, not to role %s: leaving it alone",
                                names.database, found[0], names.role)
                for login in self._logins(conn, names):
                    self._drop_login(conn, cluster, names, login)
                if self._role(conn, names.role) is not None:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE usename = %s", (names.role,))
                    row = conn.execute("SELECT pg_has_role(current_user, %s, 'USAGE')",
                                       (names.role,)).fetchone()
                    if row and row[0]:  # objects it may own in the admin's database
                        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
            except psycopg.Error as exc:
                reason = _sql_error(exc, (target.password, cluster.url))
                raise cluster_error(f"removing {names.database} from PostgreSQL at "
                                    f"{target.where} failed: {reason}", _transient(exc)
                                    ) from None

    @staticmethod
    def _logins(conn: psycopg.Connection[Any], names: ResourceNames) -> list[str]:
        """The login roles rotations made for the instance (`<role>_<n>`), whatever the store
        knows of them (a crash may have left one it never recorded)."""
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY 1",
                            (names.role.replace("_", "\\_") + "\\_%",)).fetchall()
        return [str(r[0]) for r in rows if names.is_login(str(r[0])) and r[0] != names.role]

    # -- Rotatable --------------------------------------------------------------------------------

    def add_login(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Make (or converge) the login role `names.login` beside the instance's other logins:
        a member of the instance's role, acting as it, with `secret` and the instance's
        connection limit. The instance's role and database must be there (a repair makes them
        again). On a final failure a login role this call made is dropped again."""
        check_names(names)
        if names.login == names.role:
            raise ClusterError(f"role {names.role} is the instance's own role: a rotation makes "
                               "a login of another name")
        target = _Target(cluster)
        secrets = (secret, target.password, cluster.url)
        made = _Made()
        with self._admin(cluster) as conn:
            try:
                database = self._database(conn, names.database)
                if self._role(conn, names.role) is None or database is None or not _ours(
                        database, names):
                    raise ClusterError(
                        f"role {names.role} or its database {names.database} is missing: the "
                        "instance must be repaired before its credentials can be rotated "
                        "(the reconciler repairs it, or remove and add it again)")
                self._converge_login(conn, names, secret, _connection_limit(cluster), made)
            except (psycopg.Error, ClusterError) as exc:
                failure, transient = _failure(exc, secrets)
                if not transient and made.login:
                    try:
                        with self._admin(cluster) as cleanup:
                            self._drop_login(cleanup, cluster, names, names.login)
                    except Exception as cleanup_exc:  # recorded; a retry converges
                        failure += (" (clean-up also failed: "
                                    f"{redact(str(cleanup_exc), secrets)})")
                raise cluster_error(f"making the login {names.login} on PostgreSQL at "
                                    f"{target.where} failed: {failure}", transient) from None
        return self._credentials(target, names, secret)

    def revoke_login(self, cluster: ClusterSpec, names: ResourceNames, login: str) -> None:
        """Revoke an old login of the instance: its own role stops logging in (NOLOGIN, no
        password) and keeps owning the database; an earlier login role is dropped, what it owns
        given to the instance's role. Their open sessions are ended either way."""
        check_names(names)
        if login == names.login or not names.is_login(login):
            raise ClusterError(f"refusing to revoke {login!r}: not an old login of "
                               f"{names.role} (its current login is {names.login})")
        target = _Target(cluster)
        with self._admin(cluster) as conn:
            try:
                if login == names.role:
                    if self._role(conn, login) is not None:
                        conn.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(
                            sql.Identifier(login)))
                        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE usename = %s", (login,))
                else:
                    self._drop_login(conn, cluster, names, login)
            except psycopg.Error as exc:
                reason = _sql_error(exc, (target.password, cluster.url))
                raise cluster_error(f"revoking the login {login} on PostgreSQL at "
                                    f"{target.where} failed: {reason}", _transient(exc)
                                    ) from None

    def _drop_login(self, conn: psycopg.Connection[Any], cluster: ClusterSpec,
                    names: ResourceNames, login: str) -> None:
        """Drop a login role of the instance (not its own role): no new sessions, its sessions
        ended, what it owns in the instance's database given to the instance's role, then the
        role. Succeeds when it is gone."""
        assert login != names.role and names.is_login(login), login
        if self._role(conn, login) is None:
            return
        ident = sql.Identifier(login)
        conn.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN").format(ident))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                     (login,))
        row = conn.execute("SELECT pg_has_role(current_user, %s, 'USAGE') AND "
                           "pg_has_role(current_user, %s, 'USAGE')",
                           (login, names.role)).fetchone()
        may_reassign = bool(row and row[0])
        database = self._database(conn, names.database)
        if may_reassign and database is not None and _ours(database, names):
            # objects it made after a RESET ROLE: the instance's data, kept by its role
            with psycopg.connect(cluster.url, dbname=names.database, autocommit=True,
                                 connect_timeout=CONNECT_TIMEOUT, application_name="tether",
                                 **_KEEPALIVES) as tenant:
                tenant.execute("SET statement_timeout = '120s'")
                tenant.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                    ident, sql.Identifier(names.role)))
                tenant.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        if may_reassign:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))

    def lock_down(self, cluster: ClusterSpec) -> None:
        """For clusters Tether runs itself: let nobody but the admin connect to the maintenance
        databases, so a tenant's role reaches its own database and nothing else. (On a cluster
        an operator registers, that is the operator's call, not ours.)"""
        with self._admin(cluster) as conn:
            for database in ("postgres", "template1"):
                conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(database)))

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        c = credentials.values
        dsn = naming.database_dsn("postgres", str(c["user"]), str(c["password"]),
                                  str(c["host"]), int(c["port"]), str(c["database"]))
        return naming.database_vars(prefix, dsn)


PROVIDER = PostgresProvider
