"""The migrations make exactly the tables the models describe: a column added to a model
without its migration (or the reverse) fails here, not on a user's upgraded store."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tether.store.db import Store
from tether.store.models import Base


def test_migrated_store_matches_the_models(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        store.migrate()
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            tables = set(inspect(conn).get_table_names())
        assert {"backups", "backup_files", "backup_schedules"} <= tables
    finally:
        store.dispose()
