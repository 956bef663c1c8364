"""A control plane without HTTP for the engine-level tests: a store, the secret box, the engine's
worker, and one registered cluster; plus waiting on an operation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether.actions import clusters, deployments
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store


@contextlib.contextmanager
def plane(data_dir: Path, kind: str, region: str, url: str, name: str,
          settings: dict[str, Any] | None = None,
          store: Store | None = None,
          runtime: ProcessRuntime | None = None) -> Iterator[tuple[Context, Engine]]:
    """Actions and a running worker on `store` (default: SQLite in `data_dir`), with one cluster;
    with `runtime`, deployments really start the application (and the runtime is shut down at
    the end)."""
    own_store = store is None
    if store is None:
        store = Store(f"sqlite:///{data_dir / 'tether.db'}")
        store.migrate()
    box = SecretBox.from_data_dir(data_dir)
    engine = Engine(store, box, data_dir, runtime=runtime)
    ctx = Context(store=store, box=box, data_dir=data_dir, actor="alice", notify=engine.notify)
    clusters.add_cluster(ctx, kind, region, url, name=name, settings=settings)
    engine.worker.start()
    try:
        yield ctx, engine
    finally:
        engine.stop()
        if own_store:
            store.dispose()


def wait_op(ctx: Context, op_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = deployments.get_operation(ctx, op_id)
        if op["status"] in ("succeeded", "failed"):
            return op
        time.sleep(0.02)
    raise AssertionError(f"operation {op_id} did not finish in {timeout} s")
