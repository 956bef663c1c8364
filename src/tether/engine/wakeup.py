"""Wake-ups across the nodes sharing a PostgreSQL store (`LISTEN`/`NOTIFY`).

Two channels: `tether_wake` says "work was queued" (an action asked for an operation, one was
handed back or its lease expired), so every node's worker looks for work at once instead of at
its next poll; `tether_done` says "an operation changed status" (it finished, or went back to the
queue to be retried), so waiters on any node answer at once and the next operation of that
environment can be claimed.

On SQLite (one process) there is nothing to cross: every method is a no-op and the worker relies
on its in-process events and a short poll.

`signal_work()` is on the request path of every action: it only sets an event, and a sender
thread wakes this node's loop and does the round trip to the store. A burst of actions costs one
`NOTIFY`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from tether.redact import redact
from tether.store.db import Store
from tether.store.models import Operation

log = logging.getLogger("tether.worker")

WAKE_CHANNEL = "tether_wake"
DONE_CHANNEL = "tether_done"
_NOTIFY = text("SELECT pg_notify(:channel, :node)")


class Wakeups:
    """The cross-process signals of one node. `on_work` runs when there may be work to claim
    (queued on this node or another, or an environment freed), `on_done` when an operation
    changed status on another node. Both run on this module's threads, so they must be quick:
    set an event, bump a counter."""

    def __init__(self, store: Store, node_id: str, on_work: Callable[[], None],
                 on_done: Callable[[int | None], None]) -> None:
        self.store = store
        self.node_id = node_id
        self.enabled = store.engine.dialect.name == "postgresql"
        self._on_work = on_work
        self._on_done = on_done
        self._closed = threading.Event()
        self._outbox = threading.Event()
        self._sender: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: set while the listener holds a connection that LISTENs (tests wait on it)
        self.listening = threading.Event()
        #: the listener's backend pid, so a test can cut its connection
        self.listener_pid: int | None = None

    # -- sending ---------------------------------------------------------------------------------

    def signal_work(self) -> None:
        """Work was queued: wake this node's loop and the other nodes'. Cheap (one event set, a
        thread hop, about what waking the local loop alone costs): the sender thread wakes the
        local loop, then does the round trip to the store."""
        if not self.enabled:
            self._on_work()
            return
        if self._closed.is_set():
            return
        self._outbox.set()
        if self._sender is None:
            with self._start_lock:
                if self._sender is None and not self._closed.is_set():
                    self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                                    name="tether-notify")
                    self._sender.start()

    def announce_queued_operations(self) -> None:
        """From now on a transaction of this store that inserts an operation (always queued)
        also NOTIFYs `tether_wake` itself, delivered at its commit: the other nodes look for
        work at once, without waiting for the sender's round trip — operations the engine
        queues (a rotation's deploy, a scheduled deletion) included. Once per store."""
        if not self.enabled or self.store.__dict__.get("_announces_operations"):
            return
        self.store.__dict__["_announces_operations"] = True
        node_id = self.node_id

        def after_flush(session: Session, _context: object) -> None:
            if session.info.get("tether_wake") or not any(
                    isinstance(o, Operation) for o in session.new):
                return
            session.info["tether_wake"] = True
            session.connection().execute(_NOTIFY, {"channel": WAKE_CHANNEL, "node": node_id})

        def after_end(session: Session, _transaction: object) -> None:
            session.info.pop("tether_wake", None)

        self.store.listen("after_flush", after_flush)
        self.store.listen("after_transaction_end", after_end)

    def announce(self, s: Session, channel: str, operation_id: int | None = None) -> None:
        """NOTIFY `channel` inside the transaction `s`: delivered when (and only if) it commits,
        so a listener that wakes sees the change. The payload is this node's id, then the
        operation's when one is named (`NODE OP`), so the other nodes wake only its waiters."""
        if self.enabled:
            payload = self.node_id if operation_id is None else f"{self.node_id} {operation_id}"
            s.execute(_NOTIFY, {"channel": channel, "node": payload})

    def _send_loop(self) -> None:
        while not self._closed.is_set():
            if not self._outbox.wait(0.5):
                continue
            self._outbox.clear()
            self._on_work()
            try:
                with self.store.engine.connect() as conn:
                    conn.execute(_NOTIFY, {"channel": WAKE_CHANNEL, "node": self.node_id})
                    conn.commit()
            except Exception as exc:  # the other nodes still poll; try again at the next action
                log.warning("could not wake the other nodes: %s",
                            redact(f"{type(exc).__name__}: {exc}"))

    # -- listening -------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._listener is not None:
            return
        self._listener = threading.Thread(target=self._listen_loop, daemon=True,
                                          name="tether-listen")
        self._listener.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._outbox.set()
        for thread in (self._listener, self._sender):
            if thread is not None:
                thread.join(timeout)

    def _conninfo(self) -> str:
        url = self.store.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen_loop(self) -> None:
        pause = 0.1
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=10,
                                     application_name=f"tether-listen {self.node_id}"[:63]
                                     ) as conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    conn.execute(f"LISTEN {DONE_CHANNEL}")
                    self.listener_pid = conn.info.backend_pid
                    self.listening.set()
                    pause = 0.1
                    # whatever was sent while we were not listening is lost: look once anyway
                    self._on_work()
                    self._on_done(None)
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            sender, _, operation = note.payload.partition(" ")
                            if sender == self.node_id:
                                continue  # this node already knows
                            if note.channel == DONE_CHANNEL:
                                self._on_done(int(operation) if operation.isdigit() else None)
                            self._on_work()
            except Exception as exc:
                self.listening.clear()
                if self._closed.is_set():
                    break
                log.warning("wake-up listener lost the store (%s): reconnecting in %.1f s",
                            redact(f"{type(exc).__name__}: {exc}"), pause)
                self._closed.wait(pause)
                pause = min(pause * 2, 5.0)
        self.listening.clear()
