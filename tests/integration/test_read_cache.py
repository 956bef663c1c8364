"""The API keeps who a token is and an environment's variables until the store changes (issue 12:
the `env-vars` endpoint's throughput; `tether.store.readcache`). What must hold: a repeated call
is answered without the store; any write committed anywhere — this process, another process on
the SQLite file, another node on a PostgreSQL store — is seen by the very next call (a revoked
token refused, a changed variable shown); a token that expires while kept is refused."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.nodeproc import pg_store
from tests.plane import api_client, local_plane
from tether.actions import clusters, projects, tokens, variables
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.crypto import SecretBox
from tether.store.db import Store
from tether.store.readcache import ReadCache

pytestmark = pytest.mark.integration

VARS = "/api/v1/projects/shop/environments/test/variables"


def statements(store: Store, request: Callable[[], Any]) -> tuple[Any, int]:
    """`request()`'s answer and how many statements the store's engine ran meanwhile."""
    seen = 0

    def counted(*_: Any) -> None:
        nonlocal seen
        seen += 1

    event.listen(store.engine, "before_cursor_execute", counted)
    try:
        return request(), seen
    finally:
        event.remove(store.engine, "before_cursor_execute", counted)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Context]:
    with local_plane(tmp_path) as ctx:
        projects.create_project(ctx, "shop", "local")
        variables.set_variable(ctx, "shop", "test", "GREETING", "hello")
        yield ctx


def test_a_repeated_call_is_answered_without_the_store(shop: Context) -> None:
    with api_client(shop) as client:
        first = client.get(VARS, params={"all": "true"})
        assert first.status_code == 200, first.text
        again, count = statements(shop.store, lambda: client.get(VARS, params={"all": "true"}))
        assert again.status_code == 200
        assert again.json() == first.json()
        assert count == 0  # neither the token nor the variables were read again
        caches = client.app.state.read_caches  # type: ignore[attr-defined]
        assert caches["variables"].hits == 1 and caches["callers"].hits >= 1
        # another question is another answer, not the kept one
        masked = client.get(VARS, params={"all": "true", "reveal": "false"}).json()
        custom = client.get(VARS).json()
        assert [v["name"] for v in custom] == ["GREETING"]
        assert len(masked) == len(first.json()) > len(custom)


def test_a_write_through_the_api_is_seen_by_the_next_call(shop: Context) -> None:
    with api_client(shop) as client:
        assert [v["value"] for v in client.get(VARS).json()] == ["hello"]
        assert client.put(VARS + "/GREETING", json={"value": "bye"}).status_code == 200
        assert [v["value"] for v in client.get(VARS).json()] == ["bye"]


def test_another_process_writing_the_store_is_seen_at_once(shop: Context,
                                                           tmp_path: Path) -> None:
    """Another process (here a Python with the store's file; in life, a second `tether up` or an
    admin's repair) changes a variable and revokes the token between two calls."""
    secret = create_token(shop.store, "ci", "admin")
    with api_client(shop, secret) as client:
        assert [v["value"] for v in client.get(VARS).json()] == ["hello"]
        assert client.get(VARS).status_code == 200  # kept now
        script = (
            "import sys\n"
            "from pathlib import Path\n"
            "from tether.actions import tokens, variables\n"
            "from tether.actions.common import Context\n"
            "from tether.crypto import SecretBox\n"
            "from tether.store.db import Store\n"
            "d = Path(sys.argv[1]); store = Store(f'sqlite:///{d / \"tether.db\"}')\n"
            "ctx = Context(store=store, box=SecretBox.from_data_dir(d), data_dir=d)\n"
            "variables.set_variable(ctx, 'shop', 'test', 'GREETING', 'from elsewhere')\n"
        )
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
        assert [v["value"] for v in client.get(VARS).json()] == ["from elsewhere"]
        subprocess.run([sys.executable, "-c",
                        script.replace("variables.set_variable(ctx, 'shop', 'test', "
                                       "'GREETING', 'from elsewhere')",
                                       "tokens.revoke(ctx, 'ci')"),
                        str(tmp_path)], check=True)
        refused = client.get(VARS)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]


def test_a_kept_token_that_expires_is_refused(shop: Context) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=4)
    secret = create_token(shop.store, "short", "admin", expires_at=expires)
    with api_client(shop, secret) as client:
        assert client.get("/api/v1/status").status_code == 200
        assert client.get("/api/v1/status").status_code == 200  # kept
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
        refused = client.get("/api/v1/status")
        assert refused.status_code == 401
        assert "expired" in refused.json()["error"]["message"]


def test_an_answer_computed_across_a_write_is_not_kept(shop: Context) -> None:
    """A write committed while an answer is computed may or may not be in it: used once, not
    kept (the next lookup computes again)."""
    cache: ReadCache[str] = ReadCache(shop.store)

    def compute_across_a_write() -> str:
        variables.set_variable(shop, "shop", "test", "GREETING", "meanwhile")
        return "maybe stale"

    assert cache.get("k", compute_across_a_write) == "maybe stale"
    assert cache.lookup("k")[0] is None
    assert cache.get("k", lambda: "fresh") == "fresh"
    assert cache.lookup("k")[0] == "fresh"


def test_the_cache_keeps_at_most_its_size(shop: Context) -> None:
    cache: ReadCache[int] = ReadCache(shop.store, size=3)
    for n in range(5):
        cache.get(n, lambda n=n: n)  # type: ignore[misc]
    assert [cache.lookup(n)[0] for n in range(5)] == [None, None, 2, 3, 4]


def test_a_store_without_a_file_keeps_nothing() -> None:
    store = Store("sqlite://")
    try:
        assert store.data_version() is None
        cache: ReadCache[str] = ReadCache(store)
        assert cache.get("k", lambda: "a") == "a"
        assert cache.get("k", lambda: "b") == "b"
    finally:
        store.dispose()


def test_postgres_version_changes_with_every_commit_that_wrote(pg_server: Any,
                                                               unique_id: str) -> None:
    with pg_store(pg_server.admin_url, f"tether_rc_{unique_id}") as store:
        dsn = pg_server.admin_url.rsplit("/", 1)[0] + f"/tether_rc_{unique_id}"
        before = store.data_version()
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT count(*) FROM tokens").fetchone()
        assert store.data_version() == before  # a read changes nothing
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO regions (name, family, created_at) "
                         "VALUES ('elsewhere', 'local', now())")
            during = store.data_version()  # written, not committed: not seen by anyone yet
            conn.commit()
        after = store.data_version()
        assert after != before and after != during


def test_two_nodes_on_postgres_see_each_others_writes_at_once(pg_server: Any, unique_id: str,
                                                              tmp_path: Path) -> None:
    """Two APIs on one PostgreSQL store (two nodes): what one writes, the other's next call
    shows; a token revoked through one is refused by the other."""
    with pg_store(pg_server.admin_url, f"tether_rc2_{unique_id}") as store_a, \
            contextlib.ExitStack() as stack:
        store_b = Store(store_a.url)  # its own engine and pool: another node
        stack.callback(store_b.dispose)
        box = SecretBox.from_data_dir(tmp_path)
        a = Context(store=store_a, box=box, data_dir=tmp_path)
        b = Context(store=store_b, box=box, data_dir=tmp_path)
        media = tmp_path / "media"
        media.mkdir()
        clusters.add_cluster(a, "local-files", "local", f"file://{media}", name="media",
                             settings={"base_dir": str(media),
                                       "public_url": "http://127.0.0.1:1/media/"})
        projects.create_project(a, "shop", "local")
        variables.set_variable(a, "shop", "test", "GREETING", "hello")
        secret = create_token(store_a, "ci", "admin")
        headers = {"Authorization": f"Bearer {secret}"}
        with TestClient(create_app(a), headers=headers) as node_a, \
                TestClient(create_app(b), headers=headers) as node_b:
            for _ in range(2):
                assert [v["value"] for v in node_a.get(VARS).json()] == ["hello"]
            node_b.put(VARS + "/GREETING", json={"value": "from b"}).raise_for_status()
            assert [v["value"] for v in node_a.get(VARS).json()] == ["from b"]
            tokens.revoke(b, "ci")
            assert node_a.get(VARS).status_code == 401


def test_lookups_from_many_threads_agree(shop: Context) -> None:
    cache: ReadCache[int] = ReadCache(shop.store)
    seen: list[int] = []

    def read() -> None:
        for _ in range(50):
            seen.append(cache.get("k", lambda: 7))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [7] * 200


def test_a_kept_page_is_sent_before_routing_as_fastapi_sent_it(
        shop: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked again, the page goes out from `tether.api.kept.KeptAnswers` without FastAPI's
    routing — the same status, JSON and headers, the next page's `Link` included."""
    for n in range(3):
        variables.set_variable(shop, "shop", "test", f"EXTRA{n}", str(n))
    with api_client(shop) as client:
        first = client.get(VARS, params={"limit": "2"})
        assert first.status_code == 200 and "after=" in first.headers["link"]
        routed = 0
        router_type = type(client.app.router)  # type: ignore[attr-defined]
        real = router_type.__call__

        async def counting(self: Any, scope: Any, receive: Any, send: Any) -> None:
            nonlocal routed
            routed += 1
            await real(self, scope, receive, send)

        monkeypatch.setattr(router_type, "__call__", counting)
        again = client.get(VARS, params={"limit": "2"})
        assert routed == 0
        assert (again.status_code, again.content) == (first.status_code, first.content)
        for header in ("content-type", "content-length", "link"):
            assert again.headers[header] == first.headers[header]
        # the next page is another question: routed, then kept too
        following = client.get(first.links["next"]["url"])
        assert routed == 1 and following.status_code == 200
        assert [v["name"] for v in first.json() + following.json()] == [
            "EXTRA0", "EXTRA1", "EXTRA2", "GREETING"]


def test_a_kept_page_is_never_sent_to_another_token(shop: Context) -> None:
    """A viewer asking exactly what an admin was answered (the secrets in clear) goes through
    FastAPI's checks and is refused; an unknown token is refused as before."""
    viewer = create_token(shop.store, "watcher", "viewer")
    with api_client(shop) as admin:
        for _ in range(2):
            assert admin.get(VARS, params={"all": "true", "reveal": "true"}).status_code == 200
        with TestClient(admin.app, headers={"Authorization": f"Bearer {viewer}"}) as other:
            refused = other.get(VARS, params={"all": "true", "reveal": "true"})
            assert refused.status_code == 403, refused.text
            masked = other.get(VARS, params={"all": "true"}).json()
            assert {v["name"]: v["hidden"] for v in masked}["SECRET_KEY"] is True
        with TestClient(admin.app, headers={"Authorization": "Bearer tth_nobody"}) as nobody:
            assert nobody.get(VARS, params={"all": "true", "reveal": "true"}).status_code == 401


# -- who a token is, kept across writes to other tables ---------------------------------------


def test_who_a_token_is_stays_kept_across_other_writes(shop: Context) -> None:
    """Old main: any write emptied the kept callers, so every call after a write (a client that
    adds, provisions, sets variables) looked its token up again. Now only writes to tokens or
    sessions do."""
    with api_client(shop) as client:
        callers = client.app.state.read_caches["callers"]  # type: ignore[attr-defined]
        assert client.get("/api/v1/status").status_code == 200
        for n in range(3):
            client.put(VARS + "/GREETING", json={"value": f"v{n}"}).raise_for_status()
        misses = callers.misses
        answer, count = statements(shop.store, lambda: client.get("/api/v1/status"))
        assert answer.status_code == 200
        assert callers.misses == misses and count == 0  # not looked up again
        # a write to the tokens table is one that matters: the next call looks it up
        create_token(shop.store, "another", "developer")
        assert client.get("/api/v1/status").status_code == 200
        assert callers.misses == misses + 1


@pytest.mark.parametrize("table_write", [
    "INSERT INTO tokens (name, token_hash, role, created_at) VALUES ('x', 'h', 'admin', {now})",
    "UPDATE tokens SET owner = 'someone'",
    "DELETE FROM tokens WHERE name = 'ci'",
    "INSERT INTO web_sessions (secret_hash, token_id, client, created_at, expires_at) "
    "SELECT 's', id, '', {now}, {now} FROM tokens LIMIT 1",
])
def test_the_auth_version_changes_with_every_write_to_tokens_or_sessions(
        shop: Context, table_write: str) -> None:
    """The store's own triggers bump it, whoever writes (here plain SQL, as an admin's repair
    would): nothing that changes who a token is can be missed."""
    create_token(shop.store, "ci", "admin")
    before, data_before = shop.store.auth_version(), shop.store.data_version()
    variables.set_variable(shop, "shop", "test", "OTHER", "x")
    assert shop.store.auth_version() == before  # another table: not this version
    assert shop.store.data_version() != data_before
    with shop.store.engine.begin() as conn:
        conn.exec_driver_sql(table_write.format(now="CURRENT_TIMESTAMP"))
    assert shop.store.auth_version() != before


def test_postgres_auth_version_changes_with_tokens_only_and_two_nodes_agree(
        pg_server: Any, unique_id: str, tmp_path: Path) -> None:
    with pg_store(pg_server.admin_url, f"tether_rc3_{unique_id}") as store:
        dsn = pg_server.admin_url.rsplit("/", 1)[0] + f"/tether_rc3_{unique_id}"
        before = store.auth_version()
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO regions (name, family, created_at) "
                         "VALUES ('elsewhere', 'local', now())")
        assert store.auth_version() == before
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO tokens (name, token_hash, role, created_at) "
                         "VALUES ('x', 'h', 'admin', now())")
            assert store.auth_version() == before  # not committed: not seen yet
            conn.commit()
        middle = store.auth_version()
        assert middle != before
        with psycopg.connect(dsn) as conn:
            conn.execute("UPDATE web_sessions SET client = 'y'")  # no row: still a write
        assert store.auth_version() != middle


def test_local_versions_follow_every_write_and_auth_only_token_writes(shop: Context) -> None:
    """`Store.local_versions` (what every kept answer is checked against) reads the auth
    version again only when the data version moved: still, a token written by this process or
    by another one on the file moves both, any other write the data version alone."""
    store = shop.store
    data, auth = store.local_versions()
    assert store.local_versions() == (data, auth)  # nothing written: the same
    variables.set_variable(shop, "shop", "test", "COLOUR", "blue")
    moved = store.local_versions()
    assert moved[0] != data and moved[1] == auth
    create_token(store, "developer")
    after_token = store.local_versions()
    assert after_token[0] != moved[0] and after_token[1] != auth
    assert store._sqlite_file is not None
    with contextlib.closing(sqlite3.connect(store._sqlite_file)) as other, other:
        other.execute("UPDATE tokens SET name = name || '-x' WHERE id = "
                      "(SELECT max(id) FROM tokens)")
    by_other = store.local_versions()
    assert by_other[0] != after_token[0] and by_other[1] != after_token[1]
    assert store.local_versions() == by_other
