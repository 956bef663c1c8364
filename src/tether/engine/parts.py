"""What every part of the engine shares: the store, the secret box, the data dir, the runtime
(None: no application processes, e.g. engine-level tests) and this node's id."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tether.crypto import SecretBox
from tether.errors import TetherError
from tether.providers.base import PrivateServers
from tether.providers.registry import private_servers
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store
from tether.store.models import aware


@dataclass
class EngineParts:
    store: Store
    box: SecretBox
    data_dir: Path
    runtime: ProcessRuntime | None = None
    node_id: str | None = None
    #: wraps a handler's long wait so that it holds no worker slot (`Worker.waiting`; set by
    #: the Engine once its worker exists)
    waiting: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    #: ends the named operation, when it is the one the calling handler runs, inside the
    #: handler's last transaction (`Worker.finish_in`; a no-op until the Engine sets it)
    finish_in: Callable[[Session, int | None, str], None] = lambda _s, _op, _message: None
    #: what the transaction that queued the named operation prepared for its handler, when it
    #: is the operation the calling handler runs (`Worker.prepared`; None until the Engine
    #: sets it, and whenever nothing was prepared)
    prepared: Callable[[int | None], Any] = lambda _op: None

    def private(self, kind: str) -> PrivateServers:
        """The dedicated servers Tether runs for `--private` instances of `kind`."""
        return private_servers(kind, self.data_dir / "private")


def reason_of(exc: BaseException) -> str:
    """An exception in words for a user: a TetherError's message, else its type and text (the
    caller redacts secrets)."""
    if isinstance(exc, TetherError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def before(deadline: datetime | None) -> bool:
    """Whether an operation may still be retried: its deadline has not passed."""
    if deadline is None:
        return False
    return datetime.now(UTC) < aware(deadline)
