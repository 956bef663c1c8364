"""The migrations on PostgreSQL make exactly the tables the models describe (types included:
e.g. a backup's size is 64-bit, a 32-bit INTEGER there refuses a 3 GB backup)."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import PgServer
from tether.store.db import Store
from tether.store.models import Backup, Base, Environment, Project

pytestmark = pytest.mark.integration


def test_postgres_store_matches_the_models(pg_server: PgServer, unique_id: str) -> None:
    name = f"tether_store_{unique_id}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    store = Store(pg_server.admin_url.rsplit("/", 1)[0] + "/" + name)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        with store.session() as s:
            project = Project(name="p", region="local")
            s.add(project)
            s.flush()
            env = Environment(project_id=project.id, name="live", port=1, secret_key_enc="x")
            s.add(env)
            s.flush()
            s.add(Backup(environment_id=env.id, requested_by="t", size=3 << 30))
    finally:
        store.dispose()
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
