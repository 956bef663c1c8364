"""The store's engine and sessions: SQLite (WAL) embedded by default, PostgreSQL via
`TETHER_DATABASE_URL`. The schema is owned by Alembic migrations (`upgrade head` on start)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept the usual PostgreSQL URL spellings and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def store_url(data_dir: Path) -> str:
    return normalise_url(
        os.environ.get("TETHER_DATABASE_URL") or f"sqlite:///{data_dir / 'tether.db'}"
    )


def _private_sqlite_files(url: str) -> None:
    """The store holds sealed secrets and token hashes: its files are 0600 from their creation.
    SQLite makes the -wal and -shm files with the permissions of the database file, so the
    database file is created first, 0600 (and files an older version made are tightened)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


#: where `when_committed` keeps a session's hooks until its transaction ends
_HOOKS = "tether_hooks"


def when_committed(s: Session, committed: Callable[[Session], None],
                   rolled_back: Callable[[Session], None] | None = None) -> None:
    """Call `committed(s)` once the transaction of `s` commits, or `rolled_back(s)` once it
    rolls back (one of them, once). A session of `Store.session`; cheaper than a listener of
    the session's own (`event.listen(s, ...)` builds the session's event registry: ~25 µs,
    and a waited add used three)."""
    s.info.setdefault(_HOOKS, []).append((committed, rolled_back))


def _run_hooks(s: Session, which: int) -> None:
    for hooks in s.info.pop(_HOOKS, ()):
        if hooks[which] is not None:
            hooks[which](s)


#: what `Store.data_version` answers: equal answers mean nothing was committed in between
Version = int | str


class Store:
    """One engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "after_commit", lambda s: _run_hooks(s, 0))
        event.listen(self._sessions, "after_rollback", lambda s: _run_hooks(s, 1))
        self._version_lock = threading.Lock()
        self._version_conn: sqlite3.Connection | None = None
        #: the last (data_version, auth_version) `local_versions` read on that connection
        self._last_versions: tuple[int, int] | None = None
        database = make_url(self.url).database if self.url.startswith("sqlite") else None
        #: the SQLite file `data_version` watches (None: not a file, or not SQLite)
        self._sqlite_file = (database if database and database != ":memory:"
                             and not database.startswith("file:") else None)

    @property
    def version_is_local(self) -> bool:
        """Whether `data_version` reads a local file (microseconds, fine on an event loop)
        rather than asking a server."""
        return self._sqlite_file is not None

    def data_version(self) -> Version | None:
        """A value that changes whenever a write is committed to the store, by this process or
        any other (None: this store cannot tell, so nothing may be kept on its account).

        Two equal answers mean no transaction that wrote anything committed between them, so
        an answer computed entirely between them is still the store's truth while the value
        stays the same (`tether.store.readcache`). SQLite: `PRAGMA data_version` of a
        connection of its own that never writes (it changes with every commit of any other
        connection, in any process). PostgreSQL: the current snapshot (`xmin:xmax:xip`), which
        changes once any transaction holding a transaction id (every one that wrote) ends; the
        server's WAL position would not do, because a commit is written there a moment before
        other transactions see it."""
        if self._sqlite_file is not None:
            return int(self._sqlite_read("PRAGMA data_version"))
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                return str(conn.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar())
        return None

    def auth_version(self) -> Version | None:
        """Like `data_version`, but it changes only when `tokens` or `web_sessions` are written
        (the counter the store's own triggers bump: migration 0009), so what depends on those
        two tables alone — who a token or session is — stays valid across every other write.
        None when this store cannot tell."""
        if self._sqlite_file is not None:
            return int(self._sqlite_read("SELECT n FROM auth_version WHERE id = 1"))
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                return int(conn.exec_driver_sql(
                    "SELECT n FROM auth_version WHERE id = 1").scalar_one())
        return None

    def local_versions(self) -> tuple[int, int]:
        """`data_version` and `auth_version` of an SQLite store, as one consistent pair (for a
        caller on the event loop; `version_is_local` must be true): `PRAGMA data_version`
        alone while it has not moved since the last pair, else both in one statement."""
        with self._version_lock:
            conn = self._version_connection()
            last = self._last_versions
            # data_version unchanged: nothing was committed since the last read (this
            # connection never writes), so neither is auth_version; the cheaper read will do
            if last is not None and conn.execute("PRAGMA data_version").fetchone()[0] == last[0]:
                return last
            data, auth = conn.execute(
                "SELECT data_version, (SELECT n FROM auth_version WHERE id = 1) "
                "FROM pragma_data_version").fetchone()
            self._last_versions = (int(data), int(auth))
            return self._last_versions

    def _sqlite_read(self, statement: str) -> object:
        return self._sqlite_row(statement)[0]

    def _sqlite_row(self, statement: str) -> tuple[Any, ...]:
        """One value read on a connection of this store's own that never writes (autocommit:
        each read sees every commit before it)."""
        with self._version_lock:
            return tuple(self._version_connection().execute(statement).fetchone())

    def _version_connection(self) -> sqlite3.Connection:
        """(With `_version_lock` held.)"""
        if self._version_conn is None:
            self._version_conn = sqlite3.connect(
                self._sqlite_file or "", check_same_thread=False, isolation_level=None)
            self._last_versions = None  # of another connection, if any
        return self._version_conn

    def migrate(self) -> None:
        migrate(self.engine)

    def listen(self, name: str, fn: Any) -> None:
        """A session event (e.g. `after_flush`) of every session of this store."""
        event.listen(self._sessions, name, fn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on an exception."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        with self._version_lock:
            if self._version_conn is not None:
                self._version_conn.close()
                self._version_conn = None
        self.engine.dispose()
