"""A node's identity: kept in the data dir, locked while its process runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tether.errors import UserError
from tether.node import NodeIdentity


def test_the_identity_lasts_and_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    first = NodeIdentity.acquire(tmp_path, "up")
    with pytest.raises(UserError, match="already runs on the data dir"):
        NodeIdentity.acquire(tmp_path, "up")
    first.release()
    again = NodeIdentity.acquire(tmp_path, "up")
    assert again.id == first.id
    again.release()


def test_an_identity_fits_the_store_s_columns(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Node ids go into String(64) columns (operations.claimed_by, nodes.id)."""
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 63 + ".example.com")
    node = NodeIdentity.acquire(tmp_path, "r" * 10)
    assert len(node.id) <= 64
    node.release()
    with pytest.raises(UserError, match="up to 10"):
        NodeIdentity.acquire(tmp_path, "r" * 11)


def test_a_failed_start_does_not_keep_the_lock(tmp_path: Path) -> None:
    """An error while reading or making the id used to leak the locked descriptor: every
    later start in this process was refused as if another process held the data dir."""
    (tmp_path / "node-up.id").mkdir()  # unreadable as a file
    with pytest.raises(OSError):
        NodeIdentity.acquire(tmp_path, "up")
    (tmp_path / "node-up.id").rmdir()
    node = NodeIdentity.acquire(tmp_path, "up")
    node.release()
