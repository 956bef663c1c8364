"""The SQLite store's files hold sealed secrets and token hashes: nobody else may read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tether.store.db import Store
from tether.store.models import Project


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_its_wal_and_shm_are_0600_from_their_creation(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
        store.migrate()
        with store.session() as s:
            s.add(Project(name="p", region="local"))
        files = [tmp_path / name for name in ("tether.db", "tether.db-wal", "tether.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        store.dispose()
    finally:
        os.umask(old_umask)


def test_files_an_older_version_made_are_tightened(tmp_path: Path) -> None:
    db = tmp_path / "tether.db"
    Store(f"sqlite:///{db}").dispose()
    db.chmod(0o644)
    Store(f"sqlite:///{db}").dispose()
    assert _mode(db) == 0o600
