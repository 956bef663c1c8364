"""The worker: claims durable operations from the store and runs them, on one node or several.

- **Claims are atomic.** An operation is taken by one conditional `UPDATE … WHERE status='queued'
  … RETURNING`; on PostgreSQL the candidates are picked `FOR UPDATE SKIP LOCKED` and the claim
  holds a transaction-scoped advisory lock on the environment, then checks again, so two nodes can
  never start two operations of one environment.
- **One at a time per environment, in order, across all nodes**: an operation is claimable only
  when no operation of its environment is running and none before it is still queued (a retry
  waiting for its `not_before` keeps its place). Different environments run in parallel.
- **Leases.** A claim is leased to this node (`claimed_by`, `lease_until`); a heartbeat thread
  renews the leases of the operations this node holds and records the node as alive (`nodes`).
  Any node re-queues an operation whose lease expired (its node died or lost the store); a valid
  lease is never touched. On start, the operations claimed under this node's own id are leftovers
  of its previous life (a node id is held by one process at a time) and are re-queued at once.
- **Nothing stays `running`** after its handler ended: the final write is retried with backoff,
  then again from the loop while this node keeps the lease; only this node's claim can finish it.
  The busy set is only entered after the claim committed, and always left.
- **Errors that may pass** (`TransientError`) re-queue the operation with exponential backoff
  (`not_before`) until its `deadline` (set at its first claim), then fail it with the reason.
- **Waits hold no slot.** At most `max_parallel` handlers *work* at once; a handler that only
  waits (a deploy waiting for its release to become healthy, up to the project's health timeout)
  says so with `waiting()`, and its slot goes to the next operation meanwhile, so slow deploys
  delay only their own environments. Waiting handlers are bounded too (`max_waiting`); one that
  comes back from its wait works on, even when that briefly makes more than `max_parallel`.
- **Wake-ups cross processes** on PostgreSQL (`tether.engine.wakeup`); SQLite polls briefly.

Execution is exactly-once while nodes live, at-least-once across a crash (an operation a dead
node was running is run again): every handler is idempotent. Lease times come from the store's
clock on PostgreSQL, so nodes' clocks need not agree."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Interval,
    Text,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

from tether.engine.wakeup import DONE_CHANNEL, WAKE_CHANNEL, Wakeups
from tether.errors import TetherError, TransientError
from tether.node import NodeIdentity
from tether.redact import redact
from tether.store.db import Store, when_committed
from tether.store.models import Node, Operation, aware, utcnow

log = logging.getLogger("tether.worker")

Handler = Callable[[Operation], str | None]
T = TypeVar("T")

#: the advisory-lock namespace of "claiming an operation of environment N" (high 32 bits)
_ENV_LOCK_SPACE = 0x7E7E_0001
#: pauses between the tries of an operation's final write, before the loop takes over
_FINISH_PAUSES = (0.05, 0.2, 0.5, 1.0, 2.0)
#: seconds past an operation's deadline before the worker gives up on an error that may pass: a
#: handler that checked the deadline a moment earlier and asked for a retry gets it (handlers
#: that give up themselves raise a final error)
DEADLINE_GRACE_S = 10.0

#: finishes remembered for `wait_for_operation` (a waiter further behind re-reads the store)
RECENT_FINISHES = 1024


@dataclass(frozen=True)
class _Outcome:
    """What a handler's run decided: `succeeded`/`failed`, or `queued` again after `delay` s."""

    status: str
    message: str | None = None
    error: str | None = None
    delay: float = 0.0


class Worker:
    def __init__(self, store: Store, handlers: dict[str, Handler], max_parallel: int = 4,
                 node_id: str | None = None, *, max_waiting: int = 64,
                 lease: float = 15.0, heartbeat: float = 3.0,
                 poll_interval: float = 0.5, retry_window: float = 120.0,
                 backoff: float = 0.5, backoff_cap: float = 10.0,
                 deadline_grace: float = DEADLINE_GRACE_S) -> None:
        if not 0 < heartbeat < lease:
            raise ValueError(f"the heartbeat ({heartbeat} s) must be shorter than the lease "
                             f"({lease} s) it renews")
        self.store = store
        self.node_id = node_id or NodeIdentity.ephemeral("worker").id
        self.handlers = handlers
        self.max_parallel = max_parallel
        self.max_waiting = max_waiting
        self.lease = lease
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self.retry_window = retry_window
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.deadline_grace = deadline_grace
        self._pg = store.engine.dialect.name == "postgresql"
        self._wake = threading.Event()
        self._stop = threading.Event()  # stop claiming
        self._closed = threading.Event()  # stop the heartbeat too
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        #: environments whose operation runs in a handler here (entered only after the claim
        #: committed, always left)
        self._busy: set[int] = set()
        #: operations whose handler runs here
        self._active: set[int] = set()
        #: slots `run_here` holds while it claims
        self._reserved = 0
        #: how many of them only wait (`waiting()`), holding no slot
        self._waiting = 0
        #: operations this node holds a claim on (handler running, or final write pending):
        #: the heartbeat renews their leases
        self._held: set[int] = set()
        #: outcomes whose final write failed every try: written again by the loop
        self._unfinished: dict[int, _Outcome] = {}
        self._next_due = float("inf")  # monotonic time of the earliest retry this node queued
        self._threads: list[threading.Thread] = []
        #: this node's signals to and from the other nodes (PostgreSQL only)
        self.wakeups = Wakeups(store, self.node_id, on_work=self._work_signalled,
                               on_done=self._bump)
        #: how many times work was signalled to this node (`signals`), and whether the loop
        #: last found no free slot: what `run_here` looks at to decide whether to wake it
        self._signals = 0
        self._starved = False
        #: operations claimed in a caller's transaction (`claim_in`) that committed, each
        #: waiting for its caller's `run_here`, with what its kind's preparer made for it
        self._claimed_in: dict[int, tuple[Operation, Any]] = {}
        #: per kind of operation, work a handler would do first that can be done in the
        #: transaction that queues and claims it (`claim_in`): called with that transaction and
        #: the operation, it answers what the handler then gets from `prepared` (None: nothing
        #: prepared; a `TetherError` is the same: the handler then does it itself)
        self.preparers: dict[str, Callable[[Session, Operation], Any]] = {}
        self.wakeups.announce_queued_operations()
        #: notified whenever an operation finishes, so waiters answer without polling
        self._finished = threading.Condition()
        #: per handler thread: the operation it runs (`op_id`), and whether the handler ended
        #: it in its own last transaction (`ended`, see `finish_in`)
        self._inline = threading.local()
        self._generation = 0
        #: the latest finishes, (generation, operation id or None when another node's finish
        #: named none), so a waiter on one operation can tell whether it is concerned
        self._recent: collections.deque[tuple[int, int | None]] = collections.deque(
            maxlen=RECENT_FINISHES)
        #: long polls waiting on an event loop, by the operation they wait for
        self._async_waiters: dict[int, list[tuple[asyncio.AbstractEventLoop,
                                                  asyncio.Future[None]]]] = {}
        self._build_statements()

    # -- public surface ---------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake the loop at once, and the other nodes' (called after an action queued an
        operation; on the request path, so it only sets an event)."""
        self.wakeups.signal_work()

    @property
    def signals(self) -> int:
        """How many times work was signalled to this node so far (`run_here(since=...)`)."""
        return self._signals

    def _work_signalled(self) -> None:
        with self._lock:
            self._signals += 1
        self._wake.set()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a handler's long wait (a health check): the handler holds no slot meanwhile,
        so another operation is claimed in its place."""
        with self._lock:
            self._waiting += 1
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def start(self) -> None:
        """Record this node, take back what its previous life left running, and start claiming."""
        self._register_node()
        with self.store.session() as s:
            s.execute(update(Operation)
                      .where(Operation.status == "running", Operation.claimed_by == self.node_id)
                      .values(status="queued", claimed_by=None, lease_until=None,
                              message="resumed after a restart of its node"))
        self._requeue_expired()
        self.wakeups.start()
        for target, name in ((self._loop, "tether-worker"), (self._beat, "tether-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, let running handlers finish for up to `timeout` s, then hand back what
        still runs (queued again, for another node or the next start) and mark the node stopped.
        Returns within `timeout` + 15 s even if the store does not answer."""
        until = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._threads:
            self._threads[0].join(max(0.0, min(5.0, until - time.monotonic())))
        with self._idle:
            self._idle.wait_for(lambda: not self._active, max(0.0, until - time.monotonic()))
        self._bounded("writing the outcomes left to write", self._write_unfinished, 3.0)
        with self._lock:
            left = sorted(self._held)
        if left:
            log.warning("stopping with operations %s still running: handing them back", left)
            self._bounded("handing back running operations", lambda: self._hand_back(
                left, "handed back: its node stopped before it finished"), 5.0)
        self._closed.set()
        self._bounded("marking the node stopped", self._mark_stopped, 2.0)
        self.wakeups.stop(1.0)
        for thread in self._threads[1:]:
            thread.join(1.0)

    @property
    def generation(self) -> int:
        """Counts finished operations: read it *before* looking at an operation's status, then
        `wait_for_change(generation, ...)`, so a finish in between is never missed."""
        return self._generation

    def wait_for_change(self, since: int, timeout: float) -> None:
        """Block until an operation finishes after `since` was read (on any node sharing a
        PostgreSQL store), or `timeout` seconds pass."""
        with self._finished:
            self._finished.wait_for(lambda: self._generation != since, timeout)

    def _concerns(self, op_id: int, since: int) -> bool:
        """Whether a finish after generation `since` may be `op_id`'s: its own, another node's
        (which names none), or one too old to tell."""
        if self._generation == since:
            return False
        if not self._recent or self._recent[0][0] > since + 1:
            return True  # some finishes after `since` are no longer remembered
        return any(gen > since and oid in (op_id, None) for gen, oid in self._recent)

    async def wait_for_operation(self, op_id: int, since: int, timeout: float) -> None:
        """Wait, on the caller's event loop and holding no thread, until `op_id` may have
        finished after generation `since` was read (its own finish here, or any finish on
        another node), or `timeout` seconds pass. Other operations' finishes on this node do
        not wake it: a hundred clients waiting on a hundred operations are not all woken (and
        all made to read the store again) by each one's end."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._finished:
            if self._concerns(op_id, since):
                return
            self._async_waiters.setdefault(op_id, []).append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._finished:
                waiting = self._async_waiters.get(op_id, [])
                if (loop, future) in waiting:
                    waiting.remove((loop, future))
                if not waiting:
                    self._async_waiters.pop(op_id, None)

    # -- statements, built once (building them is most of a claim's cost in Python) -----------

    def _at(self, name: str) -> ColumnElement[datetime]:
        """A time given at execution as seconds from now (see `_times`), on the store's clock:
        PostgreSQL's (nodes' clocks need not agree), or this host's for SQLite (one host)."""
        if self._pg:
            return func.now() + bindparam(name, type_=Interval())
        return bindparam(name, type_=DateTime(timezone=True))

    def _times(self, **seconds: float) -> dict[str, Any]:
        if self._pg:
            return {name: timedelta(seconds=s) for name, s in seconds.items()}
        now = utcnow()
        return {name: now + timedelta(seconds=s) for name, s in seconds.items()}

    def _build_statements(self) -> None:
        table = Operation.__table__
        ops = table.c
        other = aliased(Operation)
        ahead = exists().where(  # an operation of the same environment runs, or comes first
            other.environment_id == Operation.environment_id,
            or_(other.status == "running",
                and_(other.status == "queued", other.id < Operation.id)))
        due = or_(Operation.not_before.is_(None), Operation.not_before <= self._at("now"))
        # never an environment whose operation still runs in a handler here: an operation taken
        # back from this node (its lease lapsed while the store was away) is not run twice here
        here = Operation.environment_id.not_in(bindparam("busy", expanding=True))
        claimable = and_(Operation.status == "queued",
                         Operation.kind.in_(bindparam("kinds", expanding=True)), due, ~ahead,
                         here)
        self._pick = self._picking(claimable)
        # the same for one given operation (`run_here`)
        self._pick_one = self._picking(and_(claimable, Operation.id == bindparam("one")))
        # what a claim writes
        claiming = {"status": "running", "claimed_by": bindparam("node"),
                    "lease_until": self._at("lease"), "started_at": self._at("now"),
                    "attempts": ops.attempts + 1,
                    "deadline": func.coalesce(ops.deadline, self._at("window"))}
        # the claim checks everything again, in a statement (a snapshot) after those locks
        self._take = (update(Operation)
                      .where(Operation.id.in_(bindparam("ids", expanding=True)), claimable)
                      .values(claiming)
                      .returning(Operation)
                      .execution_options(synchronize_session=False))
        # the same claim of one operation the caller's session holds (`claim_in`), on the
        # table: no entity comes back (the caller sets what it wrote), a third of the cost
        self._take_held = update(table).where(ops.id == bindparam("one"), claimable).values(
            claiming)
        mine = and_(ops.status == "running", ops.claimed_by == bindparam("node"))
        self._end = (update(table).where(ops.id == bindparam("op_id"), mine)
                     .values(status=bindparam("to_status"), error=bindparam("to_error"),
                             lease_until=None, finished_at=self._at("now"),
                             message=func.coalesce(bindparam("to_message", type_=Text()),
                                                   ops.message)))
        self._retry = (update(table).where(ops.id == bindparam("op_id"), mine)
                       .values(status="queued", claimed_by=None, lease_until=None, error=None,
                               not_before=self._at("delay"), message=bindparam("to_message")))
        self._give_back = (update(table)
                           .where(ops.id.in_(bindparam("ids", expanding=True)), mine)
                           .values(status="queued", claimed_by=None, lease_until=None,
                                   message=bindparam("to_message")))
        self._extend = (update(table)
                        .where(ops.id.in_(bindparam("ids", expanding=True)), mine)
                        .values(lease_until=self._at("lease"))
                        .returning(ops.id))
        self._expire = (update(table)
                        .where(ops.status == "running",
                               or_(ops.lease_until.is_(None),
                                   ops.lease_until < self._at("now")),
                               ops.id.not_in(bindparam("ids", expanding=True)))
                        .values(status="queued", claimed_by=None, lease_until=None,
                                message="taken over: its node stopped renewing its lease")
                        .returning(ops.id))

    def _picking(self, claimable: ColumnElement[bool]) -> Any:
        """The candidates of a claim: (id, whether this transaction may claim it)."""
        pick = (select(Operation.id, Operation.environment_id).where(claimable)
                .order_by(Operation.id).limit(bindparam("limit")))
        if self._pg:
            # candidates no other node is looking at, each with its environment's lock taken
            # (or not: another node is claiming in that environment right now)
            locked = pick.with_for_update(skip_locked=True, of=Operation).subquery()
            return select(locked.c.id, func.pg_try_advisory_xact_lock(
                literal(_ENV_LOCK_SPACE << 32, BigInteger) + locked.c.environment_id))
        return select(pick.subquery().c.id, true())

    def prepared(self, op_id: int | None) -> Any:
        """What this kind's preparer made for operation `op_id` in the transaction that queued
        it (`claim_in`), when `op_id` is the operation this thread's handler runs; once, then
        None. None as well when nothing was prepared: the handler does the work itself."""
        if op_id is None or op_id != getattr(self._inline, "op_id", None):
            return None
        value = getattr(self._inline, "prepared", None)
        self._inline.prepared = None
        return value

    def finish_in(self, s: Session, op_id: int | None, message: str) -> None:
        """End operation `op_id` as succeeded inside the handler's last transaction `s` (the one
        that records its result), when it is the operation this thread's handler runs: the final
        state and the operation's end commit together, one commit instead of two, and nobody
        sees the state changed while its operation still runs. The handler then returns
        `message` as usual. Naming the operation matters: a deploy provisions instances on its
        way, and their results must not end the deploy.

        Conditional on this node's claim, like the worker's own final write: if the claim was
        lost, nothing is ended here (the state still commits, and the worker's write reports
        the loss). For another operation, or outside a handler, a no-op."""
        if op_id is None or op_id != getattr(self._inline, "op_id", None):
            return
        done = s.connection().execute(self._end, {
            "op_id": op_id, "node": self.node_id, "to_status": "succeeded", "to_error": None,
            "to_message": message or None, **self._times(now=0)})
        if done.rowcount:  # type: ignore[attr-defined]
            self.wakeups.announce(s, DONE_CHANNEL, op_id)
            # only once the transaction commits: a rollback leaves the write to the worker
            when_committed(s, lambda _s: setattr(self._inline, "ended", op_id))

    # -- the loop: claim, start, re-try writes ----------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._write_unfinished()
                self._dispatch()
            except Exception:  # the loop must survive a store hiccup; try again shortly
                log.exception("worker dispatch failed")
            self._wake.wait(self._pause())

    def _pause(self) -> float:
        with self._lock:
            due = self._next_due - time.monotonic()
            if due <= 0:
                self._next_due = float("inf")
        return max(0.01, min(self.poll_interval, due + 0.02))

    def _free_slots(self) -> int:
        """Slots for more operations now (call with `_lock` held)."""
        working = len(self._active) - self._waiting + self._reserved
        return min(self.max_parallel - working,
                   self.max_parallel + self.max_waiting - len(self._active) - self._reserved)

    def _dispatch(self) -> None:
        with self._lock:
            free = self._free_slots()
            self._starved = free <= 0
        if free <= 0 or not self.handlers:
            return
        for op in self._claim(free):
            self._start(op)

    def claim_in(self, s: Session, op: Operation) -> None:
        """Claim `op`, just queued in the caller's transaction `s`, in that same transaction,
        for the caller's `run_here` (a waited `POST …?wait=`): its operation then needs no
        claim transaction of its own. The claim is the loop's statement with its conditions
        (queued, due, first in its environment's line, a kind handled here); a slot is
        reserved for it until `s` ends, and it holds once `s` commits. The caller must then
        `run_here` it, or `drop_claim` it.

        SQLite only: one writer at a time, so the claim's condition is the whole claim. On
        PostgreSQL (the claim takes locks first), when no slot is free, or before the worker
        started, nothing is done and `run_here` claims as usual."""
        if self._pg or op.kind not in self.handlers:
            return
        with self._lock:
            if not self._threads or self._stop.is_set() or self._free_slots() <= 0:
                return
            self._reserved += 1
            busy = sorted(self._busy)
        decided: list[bool] = []

        def release(*_: object) -> None:
            with self._lock:
                if not decided:
                    decided.append(False)
                    self._reserved -= 1

        times = self._times(now=0, lease=self.lease, window=self.retry_window)
        try:
            claimed = s.connection().execute(self._take_held, {
                "one": op.id, "kinds": list(self.handlers), "busy": busy, "node": self.node_id,
                **times}).rowcount == 1  # type: ignore[attr-defined]
        except BaseException:
            release()
            raise
        if not claimed:
            release()
            return
        # what the claim wrote, on the object the session holds (SQLite: this host's clock)
        for name, value in (("status", "running"), ("claimed_by", self.node_id),
                            ("lease_until", times["lease"]), ("started_at", times["now"]),
                            ("attempts", (op.attempts or 0) + 1),
                            ("deadline", op.deadline or times["window"])):
            set_committed_value(op, name, value)
        prepared = None
        prepare = self.preparers.get(op.kind)
        if prepare is not None:
            try:
                prepared = prepare(s, op)
            except TetherError as exc:  # its handler meets the same, and says so
                log.debug("operation %s not prepared: %s", op.id, exc.message)

        def committed(_: object) -> None:
            with self._lock:
                if decided:
                    return
                decided.append(True)
                self._reserved -= 1
                self._hold(op)
                self._claimed_in[op.id] = (op, prepared)

        when_committed(s, committed, release)

    def drop_claim(self, op_id: int) -> None:
        """Hand back an operation `claim_in` claimed whose `run_here` will not come (its caller
        failed in between); nothing when it ran or was never claimed so."""
        with self._lock:
            op, _prepared = self._claimed_in.pop(op_id, (None, None))
        if op is None:
            return
        try:
            self._hand_back([op_id], "handed back: its caller did not run it")
        finally:
            self._let_go(op)
            self._wake.set()

    def run_here(self, op_id: int, then: Callable[[], T] = lambda: None,
                 since: int | None = None) -> tuple[bool, T | None]:
        """Claim operation `op_id`, run it to its end in the calling thread, then call `then()`
        (before the loop is woken, so the loop's next claim does not compete with it): (True,
        its answer). (False, None), having done nothing, when it cannot be claimed here now (no
        free slot, stopping, another operation of its environment first, not queued any more,
        or claimed by the loop or another node first) — the loop or another node runs it
        then, as always.

        For a client that waits for the operation it just queued (`POST …?wait=`): the claim,
        the handler, the final write and the answer's reading run on the request's own thread,
        one after the other, without the hand-overs to the loop and to a handler thread. Same
        claim, slots, leases and outcome as the loop's.

        `since`: `signals` read before the operation was queued. The loop is then woken at
        the end only if other work was signalled since (it may wait behind this one in its
        environment) or the loop found no free slot meanwhile; else its pass would find
        nothing, on the answer's time. Without it, the loop is always woken.

        An operation `claim_in` claimed in the transaction that queued it is run without
        claiming it again."""
        with self._lock:
            ready, prepared = self._claimed_in.pop(op_id, (None, None))
            if ready is None and (not self._threads or self._stop.is_set() or not self.handlers
                                  or self._free_slots() <= 0):
                # not started: its start takes back every claim of this node's id
                return False, None
            if ready is None:
                self._reserved += 1  # the slot is this call's while it claims
        claimed: list[Operation] = [ready] if ready is not None else []
        if ready is None:
            try:
                claimed = self._claim(1, only=op_id)
            finally:
                with self._lock:
                    self._reserved -= 1
                    if claimed:
                        self._hold(claimed[0])
        if not claimed:
            return False, None
        try:
            self._run(claimed[0], wake=False, prepared=prepared)
            return True, then()
        finally:
            with self._lock:
                wake = (since is None or self._signals != since or self._starved
                        or bool(self._unfinished))
            if wake:
                self._wake.set()

    def _claim(self, limit: int, only: int | None = None) -> list[Operation]:
        """Claim up to `limit` operations in one transaction (`only`: that one, if it can be);
        they are returned detached, once the claim committed (if the commit raises, nothing was
        claimed here). A candidate is queued, due, of a kind this node handles, and first in
        its environment's line; the claim checks all of that again, under the environment's
        lock on PostgreSQL."""
        kinds = list(self.handlers)
        with self._lock:
            busy = sorted(self._busy)
        pick, params = self._pick, {"kinds": kinds, "busy": busy, "limit": limit}
        if only is not None:
            pick, params["one"] = self._pick_one, only
        with self.store.session() as s:
            if only is not None and not self._pg:
                # nothing to lock on SQLite (one writer at a time), and the claim's own
                # condition is the pick's: one statement instead of two
                ids = [only]
            else:
                ids = [op_id for op_id, locked in s.execute(pick, {
                    **params, **self._times(now=0)}) if locked]
            if not ids:
                return []
            claimed = list(s.scalars(self._take, {
                "ids": ids, "kinds": kinds, "busy": busy, "node": self.node_id,
                **self._times(now=0, lease=self.lease, window=self.retry_window)}))
            if self._pg and claimed:
                # deadlines are set on the store's clock; handlers compare them with this
                # host's: give them this host's equivalent
                skew = utcnow() - s.scalar(select(func.now()))
                for op in claimed:
                    if op.deadline is not None:
                        op.deadline = op.deadline + skew
            return claimed

    def _hold(self, op: Operation) -> None:
        """(With `_lock` held.) A claimed operation is this node's: its environment busy here,
        a slot taken, its lease renewed by the heartbeat."""
        self._busy.add(op.environment_id)
        self._active.add(op.id)
        self._held.add(op.id)

    def _let_go(self, op: Operation) -> None:
        """Its environment and its slot free again (the lease is the final write's or the
        hand-back's to end); whoever waits for a slot is told."""
        with self._idle:
            self._busy.discard(op.environment_id)
            self._active.discard(op.id)
            self._idle.notify_all()

    def _start(self, op: Operation) -> None:
        """Run a claimed operation in its own thread; hand it back if that cannot be done."""
        with self._lock:
            self._hold(op)
        try:
            if self._stop.is_set():
                raise RuntimeError("the worker is stopping")
            self._submit(op)
        except Exception as exc:
            log.warning("operation %s could not be started (%s): handing it back", op.id, exc)
            self._let_go(op)
            try:
                self._hand_back([op.id], "handed back: its node could not start it")
            except Exception:  # its lease will expire and any node will take it
                log.exception("operation %s could not be handed back", op.id)

    def _submit(self, op: Operation) -> None:
        # own daemon threads, not a pool: a handler stuck forever must not keep the process alive
        # after stop(), and the claim already bounds how many run at once
        threading.Thread(target=self._run, args=(op,), daemon=True,
                         name=f"tether-op-{op.id}").start()

    # -- running one operation --------------------------------------------------------------------

    def _run(self, op: Operation, wake: bool = True, prepared: Any = None) -> None:
        outcome: _Outcome | None = None
        self._inline.op_id, self._inline.ended = op.id, None
        self._inline.prepared = prepared
        try:
            outcome = self._execute(op)
        finally:
            ended = self._inline.ended == op.id
            self._inline.op_id = self._inline.ended = self._inline.prepared = None
            try:
                if outcome is None:  # interrupted (SystemExit in the handler): let another try
                    if not ended:
                        self._hand_back([op.id], "handed back: its handler was interrupted")
                    else:
                        self._written(op.id, done=True, outcome=None)
                elif ended and outcome.status == "succeeded":
                    self._written(op.id, done=True, outcome=outcome)  # the handler wrote it
                else:
                    self._finish(op.id, outcome)
            except Exception:  # not handed back: its lease expires and any node takes it
                log.exception("operation %s could not be handed back", op.id)
            finally:
                self._let_go(op)
                if wake:
                    self._wake.set()
                self._bump(op.id)

    def _execute(self, op: Operation) -> _Outcome:
        handler = self.handlers.get(op.kind)
        if handler is None:
            return _Outcome("failed", error=f"no handler for operation kind {op.kind!r}")
        try:
            return _Outcome("succeeded", message=handler(op))
        except TransientError as exc:
            reason = redact(exc.message)
            if _before(op.deadline, grace=self.deadline_grace):
                delay = min(self.backoff_cap, self.backoff * 2 ** max(0, op.attempts - 1))
                return _Outcome("queued", delay=delay, message=(
                    f"retrying in {delay:.1f} s (attempt {op.attempts} failed: {reason})"))
            log.warning("operation %s (%s) gave up after %s attempts: %s", op.id, op.kind,
                        op.attempts, reason)
            return _Outcome("failed", error=f"{reason} (gave up after {op.attempts} attempts)")
        except TetherError as exc:
            return _Outcome("failed", error=redact(exc.message))
        except Exception as exc:
            log.error("operation %s (%s) crashed: %s", op.id, op.kind,
                      redact(f"{type(exc).__name__}: {exc}"))
            return _Outcome("failed",
                            error=f"internal error ({type(exc).__name__}); retrying is safe")

    def _finish(self, op_id: int, outcome: _Outcome) -> None:
        """Write the outcome, trying again with backoff; if the store stays away, the loop keeps
        trying while the heartbeat keeps the lease (so no other node runs it again)."""
        for pause in (*_FINISH_PAUSES, None):
            try:
                self._write(op_id, outcome)
                return
            except Exception as exc:
                if pause is None:
                    log.error("operation %s: its outcome could not be written (%s); will retry",
                              op_id, redact(f"{type(exc).__name__}: {exc}"))
                    break
                log.warning("operation %s: writing its outcome failed (%s); again in %.2f s",
                            op_id, redact(f"{type(exc).__name__}: {exc}"), pause)
                time.sleep(pause)
        with self._lock:
            self._unfinished[op_id] = outcome

    def _write(self, op_id: int, outcome: _Outcome) -> None:
        """The final (or retry) write, conditional on this node's claim."""
        params: dict[str, Any] = {"op_id": op_id, "node": self.node_id}
        if outcome.status == "queued":
            stmt = self._retry
            params.update(to_message=outcome.message, **self._times(delay=outcome.delay))
        else:
            stmt = self._end
            params.update(to_status=outcome.status, to_error=outcome.error,
                          to_message=outcome.message or None, **self._times(now=0))
        with self.store.session() as s:
            done = s.execute(stmt, params).rowcount
            if done:
                self.wakeups.announce(s, DONE_CHANNEL, op_id)
        if not done:
            log.warning("operation %s was taken over by another node before it finished here: "
                        "this node's outcome (%s) is dropped", op_id, outcome.status)
        self._written(op_id, bool(done), outcome)

    def _written(self, op_id: int, done: bool, outcome: _Outcome | None) -> None:
        """After the final (or retry) write of an operation: this node holds it no more."""
        with self._lock:
            self._held.discard(op_id)
            self._unfinished.pop(op_id, None)
            if done and outcome is not None and outcome.status == "queued":
                self._next_due = min(self._next_due, time.monotonic() + outcome.delay)

    def _write_unfinished(self) -> None:
        with self._lock:
            pending = list(self._unfinished.items())
        for op_id, outcome in pending:
            try:
                self._write(op_id, outcome)
                self._bump(op_id)
            except Exception as exc:
                log.warning("operation %s: its outcome still cannot be written (%s)", op_id,
                            redact(f"{type(exc).__name__}: {exc}"))

    def _hand_back(self, op_ids: list[int], why: str) -> None:
        """Queue again operations this node claimed but will not finish. Whatever happens, this
        node stops renewing their leases: if the write fails, they expire and any node takes
        them."""
        try:
            with self.store.session() as s:
                back = s.execute(self._give_back, {"ids": op_ids, "node": self.node_id,
                                                   "to_message": why}).rowcount
                if back:
                    self.wakeups.announce(s, WAKE_CHANNEL)
        finally:
            with self._lock:
                self._held.difference_update(op_ids)
                for op_id in op_ids:
                    self._unfinished.pop(op_id, None)

    # -- heartbeat and leases ---------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat):
            for step in (self._renew, self._requeue_expired):
                try:
                    step()
                except Exception as exc:
                    log.warning("heartbeat: %s failed: %s", step.__name__,
                                redact(f"{type(exc).__name__}: {exc}"))

    def _renew(self) -> None:
        """Extend the leases of the operations held here, and say this node is alive."""
        with self._lock:
            held = sorted(self._held)
        with self.store.session() as s:
            renewed = set(s.scalars(self._extend, {
                "ids": held, "node": self.node_id, **self._times(lease=self.lease)})
            ) if held else set()
            seen = s.execute(update(Node.__table__).where(Node.id == self.node_id)
                             .values(seen_at=self._at("now"), stopped_at=None),
                             self._times(now=0)).rowcount
        if not seen:
            self._register_node()
        with self._lock:  # not renewed, yet still held: not finished here, so lapsed
            lost = sorted((set(held) - renewed) & self._held)
        if lost:
            log.warning("operations %s lost their lease here: another node may run them (the "
                        "outcome this node writes for them will be dropped)", lost)

    def _requeue_expired(self) -> None:
        """Queue again the operations whose node stopped renewing their lease (any node's)."""
        with self._lock:
            held = sorted(self._held)
        with self.store.session() as s:  # ours are renewed by the heartbeat: never taken here
            taken = s.scalars(self._expire, {"ids": held, **self._times(now=0)}).all()
            if taken:
                self.wakeups.announce(s, WAKE_CHANNEL)
        if taken:
            log.warning("operations %s had an expired lease: queued again", sorted(taken))
            self._wake.set()

    def _register_node(self) -> None:
        with self.store.session() as s:
            if s.get(Node, self.node_id) is None:
                s.add(Node(id=self.node_id, hostname=socket.gethostname(), pid=os.getpid()))
                s.flush()
            s.execute(update(Node.__table__).where(Node.id == self.node_id)
                      .values(hostname=socket.gethostname(), pid=os.getpid(),
                              started_at=self._at("now"), seen_at=self._at("now"),
                              stopped_at=None), self._times(now=0))

    def _mark_stopped(self) -> None:
        with self.store.session() as s:
            s.execute(update(Node.__table__).where(Node.id == self.node_id)
                      .values(seen_at=self._at("now"), stopped_at=self._at("now")),
                      self._times(now=0))

    # -- helpers ----------------------------------------------------------------------------------

    def _bump(self, op_id: int | None = None) -> None:
        """An operation finished (`op_id`; None: on another node, or not known)."""
        with self._finished:
            self._generation += 1
            self._recent.append((self._generation, op_id))
            self._finished.notify_all()
            if op_id is None:
                woken = [w for ws in self._async_waiters.values() for w in ws]
            else:
                woken = list(self._async_waiters.get(op_id, []))
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(settle, future, None)

    @staticmethod
    def _bounded(what: str, step: Callable[[], object], seconds: float) -> None:
        """Run `step`, but give up waiting after `seconds` (a store that does not answer must
        not keep a stopping node from stopping)."""
        def quietly() -> None:
            try:
                step()
            except Exception as exc:
                log.error("%s failed: %s", what, redact(f"{type(exc).__name__}: {exc}"))

        thread = threading.Thread(target=quietly, daemon=True, name="tether-stop")
        thread.start()
        thread.join(seconds)
        if thread.is_alive():
            log.error("%s did not finish in %.0f s: the store does not answer", what, seconds)


def settle(future: asyncio.Future[T], value: T) -> None:
    """Give `future` its result unless it has one (called on its loop, from another thread
    through `call_soon_threadsafe`)."""
    if not future.done():
        future.set_result(value)


def _before(deadline: datetime | None, grace: float = 0.0) -> bool:
    """Whether now is before `deadline` + `grace` s (naive values are UTC, as SQLite returns
    them)."""
    if deadline is None:
        return True
    return utcnow() < aware(deadline) + timedelta(seconds=grace)
