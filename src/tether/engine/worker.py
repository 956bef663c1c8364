"""The worker: executes durable operations.

Operations on one environment run one at a time, in the order they were asked; different
environments proceed in parallel (a thread pool). On start, operations a crash left `running` are
queued again: every step is idempotent and keyed by names derived from the instance id, so they
resume rather than repeat half-done work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, update

from tether.errors import TetherError
from tether.redact import redact
from tether.store.db import Store
from tether.store.models import Operation, utcnow

log = logging.getLogger("tether.worker")

Handler = Callable[[Operation], str | None]


class Worker:
    def __init__(self, store: Store, handlers: dict[str, Handler], max_parallel: int = 4,
                 node_id: str | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.handlers = handlers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="tether-op")
        self._thread: threading.Thread | None = None
        #: notified whenever an operation finishes, so waiters answer without polling
        self._finished = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        """Wake the loop at once (called after an action queued an operation)."""
        self._wake.set()

    def start(self) -> None:
        with self.store.session() as s:
            s.execute(update(Operation).where(Operation.status == "running")
                      .values(status="queued", message="resumed after a restart"))
        self._thread = threading.Thread(target=self._loop, name="tether-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch()
            except Exception:  # the loop must survive a store hiccup; try again shortly
                log.exception("worker dispatch failed")
            self._wake.wait(0.5)
            self._wake.clear()

    def _dispatch(self) -> None:
        with self.store.session() as s:
            queued = s.scalars(select(Operation).where(Operation.status == "queued")
                               .order_by(Operation.id)).all()
            seen: set[int] = set()
            claimed: list[Operation] = []
            with self._lock:
                for op in queued:
                    env = op.environment_id
                    if env in seen or env in self._busy:
                        seen.add(env)
                        continue
                    seen.add(env)
                    op.status = "running"
                    op.started_at = utcnow()
                    op.attempts += 1
                    self._busy.add(env)
                    claimed.append(op)
            s.flush()
            s.expunge_all()  # handed to the pool as plain, loaded objects
        for op in claimed:
            self._pool.submit(self._run, op)

    def _run(self, op: Operation) -> None:
        op_id, env = op.id, op.environment_id
        try:
            handler = self.handlers[op.kind]
            try:
                message = handler(op)
                status, error = "succeeded", None
            except TetherError as exc:
                status, error, message = "failed", redact(exc.message), None
            except Exception as exc:
                log.error("operation %s (%s) crashed: %s", op_id, op.kind,
                          redact(f"{type(exc).__name__}: {exc}"))
                status, message = "failed", None
                error = f"internal error ({type(exc).__name__}); retrying is safe"
            with self.store.session() as s:
                row = s.get(Operation, op_id)
                if row is not None:
                    row.status, row.error, row.finished_at = status, error, utcnow()
                    row.message = message or row.message
        finally:
            with self._lock:
                self._busy.discard(env)
            self._wake.set()
            with self._finished:
                self._generation += 1
                self._finished.notify_all()

    @property
    def generation(self) -> int:
        """Counts finished operations: read it *before* looking at an operation's status, then
        `wait_for_change(generation, ...)`, so a finish in between is never missed."""
        return self._generation

    def wait_for_change(self, since: int, timeout: float) -> None:
        """Block until an operation finishes after `since` was read, or `timeout` seconds pass."""
        with self._finished:
            self._finished.wait_for(lambda: self._generation != since, timeout)
