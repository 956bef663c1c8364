"""A node: one Tether process (`tether up`, or a worker beside an API) sharing the store.

Each node has an identity that lasts across its restarts: a random id kept in the data dir, held
under an exclusive lock while the process runs. Two processes can never hold the same identity at
once, so when a node starts again, whatever the store says its identity was doing (running
operations, application processes, embedded servers) is known to be left over from its previous
life and can be taken back at once, without waiting for a lease to expire. Other nodes' work is
never touched while their heartbeat (`nodes.seen_at`) is fresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import UserError

ROLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass
class NodeIdentity:
    """The identity of this process among the nodes sharing the store."""

    id: str
    data_dir: Path | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def short(self) -> str:
        """A short form for names (e.g. `local-postgres-3f9a1c`)."""
        return self.id.rsplit("-", 1)[-1][:6]

    @classmethod
    def acquire(cls, data_dir: Path, role: str = "up") -> NodeIdentity:
        """The node identity of `role` in `data_dir`, made on first use, locked until
        `release()` (or the process ends). Refused when another process holds it."""
        if not role or set(role) - ROLE_CHARS or len(role) > 10:
            raise UserError(f"invalid node role {role!r}: use up to 10 lower-case letters, "
                            "digits, '-'")
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_path = data_dir / f"node-{role}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"another Tether process ({role}) already runs on the data dir {data_dir}: "
                "stop it first, or give this one its own --data-dir") from None
        try:
            node_id = cls._read_or_make_id(data_dir / f"node-{role}.id", role)
        except BaseException:  # the lock goes with its descriptor
            os.close(fd)
            raise
        return cls(id=node_id, data_dir=data_dir, _fd=fd)

    @staticmethod
    def _read_or_make_id(id_path: Path, role: str) -> str:
        try:
            node_id = id_path.read_text().strip()
        except FileNotFoundError:
            node_id = ""
        if not node_id:
            node_id = f"{_host_label()}-{role}-{secrets.token_hex(6)}"
            tmp = id_path.with_suffix(".tmp")
            tmp.write_text(node_id + "\n")
            os.chmod(tmp, 0o600)
            tmp.replace(id_path)
        return node_id

    @classmethod
    def ephemeral(cls, role: str = "test") -> NodeIdentity:
        """An identity for this process only (tests, tools): never reused after a restart."""
        return cls(id=f"{_host_label()}-{role}-{secrets.token_hex(6)}")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _host_label() -> str:
    host = socket.gethostname().split(".")[0].lower()
    label = "".join(c if c in ROLE_CHARS else "-" for c in host).strip("-")
    return (label or "node")[:40]
