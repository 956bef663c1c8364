"""Tokens in the store: the 0004 migration on existing data (SQLite and PostgreSQL stores), and
names Tether picks itself for the tokens it makes (`tether up`'s `admin`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from tests.conftest import PgServer
from tether.api.auth import create_token, principal_for
from tether.store.db import MIGRATIONS, Store
from tether.store.models import Token


@contextlib.contextmanager
def store_at(url: str, revision: str) -> Iterator[Store]:
    store = Store(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, unique_id: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
        return
    pg: PgServer = request.getfixturevalue("pg_server")
    name = f"tether_tokens_{unique_id}"
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(pg.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_migration_numbers_duplicate_names_within_the_column(store_url: str) -> None:
    long = "x" * 100
    with store_at(store_url, "0003") as store, store.engine.begin() as conn:
        for i, name in enumerate(["admin", "admin", "admin-2", "admin", long, long]):
            conn.execute(text("INSERT INTO tokens (name, token_hash, created_at) "
                              "VALUES (:n, :h, CURRENT_TIMESTAMP)"), {"n": name, "h": f"{i:064d}"})
    store = Store(store_url)
    try:
        store.migrate()
        with store.session() as s:
            names = list(s.scalars(select(Token.name).order_by(Token.id)))
            roles = set(s.scalars(select(Token.role)))
        assert names == ["admin", "admin-2", "admin-2-2", "admin-3", long, "x" * 98 + "-2"]
        assert roles == {"admin"}  # tokens from before roles were admin tokens
    finally:
        store.dispose()


def test_tokens_tether_names_itself_take_the_lowest_free_number(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    try:
        secrets = [create_token(store, "admin") for _ in range(1005)]
        with store.session() as s:
            names = set(s.scalars(select(Token.name)))
        assert len(names) == 1005 and "admin-1005" in names
        assert principal_for(store, f"Bearer {secrets[-1]}").name == "admin-1005"
    finally:
        store.dispose()
