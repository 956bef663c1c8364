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


#: the look-ups lists and the engine make by these columns (issue 12: "missing indexes")
LOOKUP_INDEXES = {
    "operations": {("instance_id",), ("deployment_id",), ("environment_id",)},
    "deployments": {("environment_id",)},
    "releases": {("environment_id", "status")},
    "instances": {("cluster_id",)},
    "audit": {("environment_id",), ("instance_id",)},
    "clusters": {("owner_instance_id",)},
}


def test_the_columns_lists_filter_by_are_indexed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        store.migrate()
        with store.engine.connect() as conn:
            found = {table: {tuple(ix["column_names"]) for ix in inspect(conn).get_indexes(table)}
                     for table in LOOKUP_INDEXES}
        for table, wanted in LOOKUP_INDEXES.items():
            assert wanted <= found[table], (table, wanted - found[table])
    finally:
        store.dispose()
