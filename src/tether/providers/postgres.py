"""PostgreSQL: one role and one database per instance on a shared cluster, and dedicated servers
for `--private` instances.

Least privilege: the role can log in and owns its database, nothing more (no superuser, createdb,
createrole), and only it may connect to its database (CONNECT is revoked from PUBLIC).
Passwords are sent to the server as SCRAM verifiers computed here, so the clear-text password
never appears in a server log or in `pg_stat_activity`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tether import naming
from tether.errors import ClusterError
from tether.pgserver import EmbeddedPostgres
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.redact import redact

log = logging.getLogger("tether.providers.postgres")

CONNECT_TIMEOUT = 5
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_URL_HINT = "use postgres://USER:PASSWORD@HOST:PORT/postgres"


def _check_names(names: ResourceNames) -> None:
    for name in (names.role, names.database):
        if not _NAME_RE.fullmatch(name):
            raise ClusterError(f"refusing the resource name {name!r}: not a plain identifier")


class _Target:
    """Where a cluster URL points, without its password (safe to show)."""

    def __init__(self, cluster: ClusterSpec) -> None:
        try:
            params = conninfo_to_dict(cluster.url)
        except Exception:  # the parser's message may quote the URL, password included
            raise ClusterError(f"the cluster URL is not a valid PostgreSQL URL: {_URL_HINT}"
                               ) from None
        self.password: str | None = params.get("password")
        self.user = str(params.get("user") or "postgres")
        self.host = str(params.get("host") or "localhost")
        self.port = int(params.get("port") or 5432)
        self.dbname = str(params.get("dbname") or self.user)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _connect_error(target: _Target, cluster: ClusterSpec, exc: Exception) -> ClusterError:
    """Turn a connection failure into a message that says what to fix (and holds no secret)."""
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
    elif any(s in low for s in ("connection refused", "timeout expired", "could not translate",
                                "no route to host", "network is unreachable",
                                "could not connect", "name or service not known")):
        msg = (f"cannot reach PostgreSQL at {target.where}: check that the server runs and "
               "that the host and port in the cluster URL are right")
    else:
        msg = f"cannot connect to PostgreSQL at {target.where} as {target.user!r}"
    return ClusterError(f"{msg} ({detail})")


def _sql_error(exc: psycopg.Error, secrets: tuple[str | None, ...]) -> str:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None and diag.message_primary else None) or str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return redact(first, secrets)


class PostgresProvider:
    """Role + database per instance on a shared (or dedicated) PostgreSQL cluster."""

    kind = "postgres"

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _admin(self, cluster: ClusterSpec) -> Iterator[psycopg.Connection[Any]]:
        target = _Target(cluster)
        try:
            conn = psycopg.connect(cluster.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                                   application_name="tether")
        except psycopg.Error as exc:
            raise _connect_error(target, cluster, exc) from None
        try:
            conn.execute("SET statement_timeout = '120s'")
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
            is not None

    @staticmethod
    def _db_owner(conn: psycopg.Connection[Any], database: str) -> str | None:
        row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                           (database,)).fetchone()
        return None if row is None else str(row[0])

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
        """Converge to: role with this password, its own database, CONNECT for it alone.
        On failure, a fresh resource set is removed again (rule 5); the database of an
        instance that was already provisioned is never dropped here."""
        _check_names(names)
        target = _Target(cluster)
        secrets = (secret, target.password, cluster.url)
        with self._admin(cluster) as conn:
            had_own_db = self._db_owner(conn, names.database) == names.role
            try:
                self._converge(conn, names, secret)
            except (psycopg.Error, ClusterError) as exc:
                reason = (exc.message if isinstance(exc, ClusterError)
                          else _sql_error(exc, secrets))
                failure = reason
                if not had_own_db:
                    try:
                        self.deprovision(cluster, names)
                    except Exception as cleanup_exc:  # recorded; a retry converges
                        failure += (" (clean-up also failed: "
                                    f"{redact(str(cleanup_exc), secrets)})")
                raise ClusterError(f"provisioning {names.database} on PostgreSQL at "
                                   f"{target.where} failed: {failure}") from None
        return Credentials({"user": names.role, "password": secret, "host": target.host,
                            "port": target.port, "database": names.database})

    def _converge(self, conn: psycopg.Connection[Any], names: ResourceNames, secret: str) -> None:
        role, db = sql.Identifier(names.role), sql.Identifier(names.database)
        verifier = conn.pgconn.encrypt_password(secret.encode(), names.role.encode(),
                                                b"scram-sha-256").decode()
        alter = sql.SQL("ALTER ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            role, sql.Literal(verifier))
        if self._role_exists(conn, names.role):
            conn.execute(alter)
        else:
            try:
                conn.execute(sql.SQL(
                    "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS PASSWORD {}").format(role, sql.Literal(verifier)))
            except psycopg.errors.DuplicateObject:  # created concurrently: converge
                conn.execute(alter)
        superuser = self._privileges(conn)[0]
        if not superuser:
            # A CREATEROLE admin must be able to SET ROLE to the role to make it a database
            # owner (and later to drop that database).
            if conn.info.server_version >= 160000:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE")
                             .format(role))
            else:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
        owner = self._db_owner(conn, names.database)
        if owner is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
                owner = names.role
            except psycopg.errors.DuplicateDatabase:
                owner = self._db_owner(conn, names.database)
        if owner != names.role:
            raise ClusterError(
                f"a database named {names.database} exists already and belongs to {owner!r}, "
                "not to Tether's role for this instance: Tether never takes over a database it "
                "did not create; drop or rename that database, then retry")
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        _check_names(names)
        with self._admin(cluster) as conn:
            return (self._role_exists(conn, names.role)
                    or self._db_owner(conn, names.database) == names.role)

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Drop the database (open connections are cut) and the role. A database of that name
        owned by someone else is not ours and is left alone."""
        _check_names(names)
        target = _Target(cluster)
        role, db = sql.Identifier(names.role), sql.Identifier(names.database)
        with self._admin(cluster) as conn:
            try:
                owner = self._db_owner(conn, names.database)
                if owner == names.role:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()",
                                 (names.database,))
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
                elif owner is not None:
                    log.warning("database %s belongs to %s, not to role %s: leaving it alone",
                                names.database, owner, names.role)
                if self._role_exists(conn, names.role):
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE usename = %s", (names.role,))
                    row = conn.execute("SELECT pg_has_role(current_user, %s, 'USAGE')",
                                       (names.role,)).fetchone()
                    if row and row[0]:  # objects it may own in the admin's database
                        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
            except psycopg.Error as exc:
                reason = _sql_error(exc, (target.password, cluster.url))
                raise ClusterError(f"removing {names.database} from PostgreSQL at "
                                   f"{target.where} failed: {reason}") from None

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


class PrivatePostgresServers:
    """Dedicated PostgreSQL servers, one per `--private` instance, kept in `base_dir/<base>`."""

    kind = "postgres"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)

    def server(self, names: ResourceNames, port: int) -> EmbeddedPostgres:
        _check_names(names)
        return EmbeddedPostgres(self.base_dir / names.base, port)

    def version(self) -> str:
        return EmbeddedPostgres.version()

    def create(self, names: ResourceNames, port: int, password: str) -> str:
        """Initialise (once) and start the instance's server; return its admin URL. The
        password only takes effect at the first init: callers persist it before calling."""
        server = self.server(names, port)
        server.init(password)
        server.start()
        url = server.admin_url(password)
        PostgresProvider().lock_down(ClusterSpec(id=0, kind=self.kind, region="", url=url,
                                                 private=True))
        return url

    def start(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).start()

    def stop(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).stop()

    def destroy(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).destroy()
