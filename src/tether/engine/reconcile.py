"""The reconciler: a slow, level-triggered pass over every functional instance, as a controller
does it (Crossplane's managed reconciler: observe, compare, act, observe again later).

For each instance that is functional (`lifecycle.FUNCTIONAL`) on a cluster, the provider
*observes* its resource set; what differs from what Tether made (a database dropped by hand, a
`CONNECT` granted to `PUBLIC` again...) is recorded on the instance (`drift`, `observed_at`),
where `tether service show` shows it, and an audit entry is written when the drift changes.
What the provider can converge is then *repaired* by provisioning again with the instance's own
secret, observed once more, and the outcome recorded. A repair that makes a part again empty
says so (its data is lost), and new credentials (an S3 key the repair had to replace) are stored
and named in the audit trail: the next deployment gives them to the application.

Safe beside the worker and other nodes: the store is read and written in short sessions, never
across a call to a cluster; instances with an operation that waits or runs (or whose environment
is being deployed) are left to that operation; the drift is written with a conditional update,
so two nodes that find the same drift audit it once; clusters run by another node are left to
it. An error that may pass (`TransientError`: the cluster unreachable for a moment) records
nothing new: the next pass looks again.

During a rotation whose old login a running release still uses (`retiring_credentials_enc`),
the instance is observed with those old logins accepted as valid (`ResourceNames.retiring`: the
provider checks them as it checks the current login), and drift found is recorded and audited
but not repaired: provisioning converges to the rotated state, which locks the old login the
running release logs in with. The deployment that finishes the rotation revokes the old login;
the next pass repairs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.orm import Session

from tether import lifecycle
from tether.crypto import SecretBox
from tether.engine.rotation import names_of, retiring, revoke_retired, rotatable
from tether.errors import ClusterError, TetherError, TransientError
from tether.lifecycle import State
from tether.providers.base import ClusterSpec, Observation, Provider, ResourceNames
from tether.providers.registry import get_provider
from tether.redact import redact
from tether.store.db import Store
from tether.store.models import Cluster, Environment, Instance, Operation, utcnow
from tether.store.records import UNFINISHED, audit, cluster_spec

log = logging.getLogger("tether.reconciler")

ACTOR = "reconciler"
#: seconds between two passes, unless `TETHER_RECONCILE_INTERVAL` says otherwise
DEFAULT_INTERVAL_S = 300.0
#: the first pass comes this soon after `start`
FIRST_PASS_DELAY_S = 5.0
#: the advisory-lock namespace of "reconciling instance N" (high 32 bits; PostgreSQL stores)
_INSTANCE_LOCK_SPACE = 0x7E7E_0002
NEW_CREDENTIALS = ("new credentials were made and stored: deploy the environment to give them "
                   "to the application")


def held_back(environment: str, old_logins: tuple[str, ...]) -> str:
    """Why drift found during a rotation is not repaired (a repair would lock the old login
    the running release still logs in with)."""
    return (f"not repaired while a rotation's old login ({', '.join(old_logins)}) is in use: "
            f"deploy {environment} to finish the rotation, then the next pass repairs it")


def configured_interval() -> float:
    """`TETHER_RECONCILE_INTERVAL` (seconds), else `DEFAULT_INTERVAL_S`; 0 turns the pass off."""
    raw = os.environ.get("TETHER_RECONCILE_INTERVAL", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("TETHER_RECONCILE_INTERVAL=%r is not a number of seconds: using %s", raw,
                    DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S
    if value <= 0:
        return 0.0
    return max(value, 1.0)


@dataclass
class ReconcileReport:
    """What one pass did, by instance id."""

    in_sync: list[int] = field(default_factory=list)  # as it should be
    drifted: list[int] = field(default_factory=list)  # drift found
    repaired: list[int] = field(default_factory=list)  # drift found and repaired
    unrepaired: list[int] = field(default_factory=list)  # drift left after this pass
    unreachable: list[int] = field(default_factory=list)  # an error that may pass: nothing new
    failed: list[int] = field(default_factory=list)  # a final error while observing
    skipped: list[int] = field(default_factory=list)  # an operation waits or runs

    @property
    def observed(self) -> list[int]:
        return sorted({*self.in_sync, *self.drifted})


@dataclass(frozen=True)
class _Target:
    """One instance to look at, read in a short session."""

    instance_id: int
    prefix: str
    kind: str
    spec: ClusterSpec
    #: with the login its credentials use (after rotations) and the old logins a running
    #: release may still use (`retiring`)
    names: ResourceNames
    secret: str | None
    credentials: dict[str, Any] | None
    #: what the rotation state was when the target was read (the rotation count and the sealed
    #: credentials, secret and retiring credentials): a pass that finds it changed leaves the
    #: instance alone
    rotation_state: tuple[int, str | None, str | None, str | None] | None = None
    environment: str = "ENV"


def _rotation_state(inst: Instance) -> tuple[int, str | None, str | None, str | None]:
    return (int(inst.rotations or 0), inst.credentials_enc, inst.secret_enc,
            inst.retiring_credentials_enc)


def _observed_names(box: SecretBox, inst: Instance) -> ResourceNames:
    """The instance's names with its retiring logins (a running release may still use them)."""
    names = names_of(inst)
    old = tuple(str(c.get("user")) for c in retiring(box, inst) if c.get("user"))
    return replace(names, retiring=tuple(dict.fromkeys(old)))


@dataclass(frozen=True)
class _Outcome:
    """What a pass learnt of one instance: the drift found first (None: in sync), the drift
    left at the end, and what to say about the repair in the audit trail."""

    found: str | None
    final: str | None
    repair_note: str | None = None
    credentials: dict[str, Any] | None = None  # new credentials to store


def _words(seen: Observation) -> str:
    return "; ".join(seen.differences) if seen.differences else "nothing of it exists"


class Reconciler:
    """Observe every functional instance, record its drift, repair what can be repaired."""

    def __init__(self, store: Store, box: SecretBox, data_dir: Path, *,
                 node_id: str | None = None, repair: bool = True) -> None:
        """`node_id`: this node's id; clusters run by another node (its embedded or private
        servers, at an address only it can reach) are left to that node. `repair`: False only
        observes and records. `data_dir` is where private servers live; they need nothing of it
        here: the tenant on a dedicated server is observed through that cluster's admin URL."""
        self.store = store
        self.box = box
        self.data_dir = data_dir
        self.node_id = node_id
        self.repair = repair
        self._stop = threading.Event()
        self._pass = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- the periodic background pass --------------------------------------------------------

    def start(self, interval_s: float | None = None,
              first_delay_s: float = FIRST_PASS_DELAY_S) -> None:
        """A pass `first_delay_s` after now, then one every `interval_s` (default:
        `configured_interval()`) until `stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        interval = configured_interval() if interval_s is None else max(interval_s, 0.01)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval, first_delay_s),
                                        name="tether-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background pass (a pass under way ends after the instance it is at)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self, interval: float, first_delay: float) -> None:
        delay = first_delay
        while not self._stop.wait(delay):
            try:
                report = self.run_once()
                log.info("reconcile pass: %d in sync, %d drifted, %d repaired, %d left, "
                         "%d unreachable, %d failed, %d skipped", len(report.in_sync),
                         len(report.drifted), len(report.repaired), len(report.unrepaired),
                         len(report.unreachable), len(report.failed), len(report.skipped))
            except Exception:  # the loop must survive a store hiccup: the next pass retries
                log.exception("reconcile pass failed")
            delay = interval

    # -- one pass ----------------------------------------------------------------------------

    def run_once(self) -> ReconcileReport:
        """One pass over every functional instance on a cluster."""
        report = ReconcileReport()
        with self._pass:
            # old credentials of rotations that no running release uses (a revoke that failed)
            revoke_retired(self.store, self.box, ACTOR, idle_only=True, node_id=self.node_id)
            for target in self._targets(report):
                if self._stop.is_set():
                    break
                try:
                    self._reconcile(target, report)
                except Exception as exc:  # one instance never stops the pass
                    log.error("reconciling instance %s (%s) failed: %s", target.instance_id,
                              target.prefix, redact(f"{type(exc).__name__}: {exc}",
                                                    [target.secret, target.spec.url]))
                    report.failed.append(target.instance_id)
        return report

    def _targets(self, report: ReconcileReport) -> list[_Target]:
        functional = [state.value for state in lifecycle.FUNCTIONAL]
        targets: list[_Target] = []
        with self.store.session() as s:
            rows = s.execute(select(Instance, Cluster).join(
                Cluster, Cluster.id == Instance.cluster_id).where(
                Instance.state.in_(functional)).order_by(Instance.id)).all()
            busy = _busy(s)
            for inst, cluster in rows:
                if self.node_id is not None and cluster.node_id not in (None, self.node_id):
                    continue  # another node's server: that node looks at it
                if inst.id in busy[0] or inst.environment_id in busy[1]:
                    report.skipped.append(inst.id)
                    continue
                env = s.get(Environment, inst.environment_id)
                try:
                    targets.append(_Target(
                        instance_id=inst.id, prefix=inst.prefix, kind=inst.kind,
                        spec=cluster_spec(self.box, cluster),
                        names=_observed_names(self.box, inst),
                        secret=self.box.open(inst.secret_enc),
                        credentials=self.box.open(inst.credentials_enc),
                        rotation_state=_rotation_state(inst),
                        environment=env.name if env is not None else "ENV"))
                except TetherError as exc:  # secrets sealed with another key
                    log.error("instance %s: %s", inst.id, exc.message)
                    report.failed.append(inst.id)
        return targets

    @contextlib.contextmanager
    def _exclusive(self, instance_id: int) -> Iterator[bool]:
        """Whether this node may reconcile the instance now: on a PostgreSQL store, a lock that
        no other node holds (two nodes repairing one instance at once would, e.g., each make
        an S3 key, and the next pass delete both); SQLite stores have one node."""
        if self.store.engine.dialect.name != "postgresql":
            yield True
            return
        with self.store.engine.begin() as conn:  # the lock ends with this transaction
            yield bool(conn.scalar(select(func.pg_try_advisory_xact_lock(
                literal(_INSTANCE_LOCK_SPACE << 32, BigInteger) + instance_id))))

    def _reconcile(self, t: _Target, report: ReconcileReport) -> None:
        with self._exclusive(t.instance_id) as mine:
            if not mine:  # another node reconciles it right now
                report.skipped.append(t.instance_id)
                return
            self._reconcile_held(t, report)

    def _reconcile_held(self, t: _Target, report: ReconcileReport) -> None:
        provider = get_provider(t.kind)
        try:
            seen = provider.observe(t.spec, t.names)
        except TransientError as exc:
            log.warning("instance %s (%s): its cluster cannot be reached for now, nothing "
                        "observed: %s", t.instance_id, t.prefix, exc.message)
            report.unreachable.append(t.instance_id)
            return
        except ClusterError as exc:
            log.error("instance %s (%s): observing failed: %s", t.instance_id, t.prefix,
                      exc.message)
            report.failed.append(t.instance_id)
            return
        if seen.in_sync:
            # the check that it is still idle and the record in one transaction (most
            # instances, most passes: one transaction each, not two)
            if self._record(t, _Outcome(found=None, final=None), if_idle=True):
                report.in_sync.append(t.instance_id)
            else:
                report.skipped.append(t.instance_id)
            return
        if not self._idle(t):
            # a rotation finished (or an operation started) since the pass read the instance:
            # what was observed is of stale names; the next pass looks again
            report.skipped.append(t.instance_id)
            return
        report.drifted.append(t.instance_id)
        log.warning("instance %s (%s) drifted: %s", t.instance_id, t.prefix, _words(seen))
        outcome = self._repair(t, provider, _words(seen))
        if outcome is None:  # an operation took the instance meanwhile: it is that one's
            report.skipped.append(t.instance_id)
            return
        (report.repaired if outcome.final is None else report.unrepaired).append(t.instance_id)
        self._record(t, outcome)

    def _repair(self, t: _Target, provider: Provider, found: str) -> _Outcome | None:
        """Provision again and observe again. None when the instance stopped being this pass's
        (an operation started, or it was removed) while the repair ran."""
        if not self.repair or t.secret is None:
            return _Outcome(found=found, final=found)
        if t.names.old_logins:
            # provisioning converges to the rotated state: it would lock the old login the
            # running release logs in with (and the base role or user it acts as)
            log.warning("instance %s (%s): drift not repaired while the old login of a rotation "
                        "is in use", t.instance_id, t.prefix)
            why = held_back(t.environment, t.names.old_logins)
            return _Outcome(found=found, final=f"{found} ({why})")
        if not self._idle(t):
            return None
        names = t.names
        try:
            credentials = provider.provision(t.spec, names, t.secret)
        except TransientError as exc:
            log.warning("instance %s (%s): the repair could not reach the cluster, it is "
                        "tried again at the next pass: %s", t.instance_id, t.prefix, exc.message)
            return _Outcome(found=found, final=found)
        except ClusterError as exc:
            log.error("instance %s (%s): the repair failed: %s", t.instance_id, t.prefix,
                      exc.message)
            return _Outcome(found=found, final=f"{found} (the repair failed: {exc.message})")
        if not self._idle(t):
            self._undo_if_removed(t, provider)
            self._undo_if_rotated(t)
            return None
        try:
            after = provider.observe(t.spec, names)
        except ClusterError as exc:  # repaired, but not seen since: the next pass looks
            log.warning("instance %s (%s): repaired, but observing again failed: %s",
                        t.instance_id, t.prefix, exc.message)
            after = None
        changed = credentials.values != t.credentials
        final = None if after is None or after.in_sync else _words(after)
        note = "repaired: " + found if final is None else f"after the repair: {final}"
        if changed:
            note += f"; {NEW_CREDENTIALS}"
        return _Outcome(found=found, final=final, repair_note=note,
                        credentials=credentials.values if changed else None)

    def _idle(self, t: _Target) -> bool:
        """Still functional, no operation of it (or deployment of its environment) waits or
        runs, and its rotation state is the one the target was read with: a rotation that
        finished meanwhile (its old login revoked) makes the target's names stale, and
        "repairing" them would give the revoked login back its old password."""
        with self.store.session() as s:
            return _as_read(s, t, idle=True) is not None

    def _undo_if_removed(self, t: _Target, provider: Provider) -> None:
        """A removal that ran during the repair may have deleted the resources before the
        repair made them again: delete them once more, so nothing is left behind."""
        with self.store.session() as s:
            inst = s.get(Instance, t.instance_id)
            removed = inst is None or State(inst.state) == State.REMOVED
        if removed:
            log.warning("instance %s (%s) was removed during its repair: deleting what the "
                        "repair made", t.instance_id, t.prefix)
            try:
                provider.deprovision(t.spec, t.names)
            except ClusterError as exc:
                log.error("instance %s (%s): deleting what its repair made failed: %s",
                          t.instance_id, t.prefix, exc.message)

    def _undo_if_rotated(self, t: _Target) -> None:
        """A rotation that finished during the repair may have revoked the login the repair
        just enabled again: revoke it once more unless it is the instance's login or one a
        release still uses (retiring: the rotation's deployment revokes it)."""
        with self.store.session() as s:
            inst = s.get(Instance, t.instance_id)
            if inst is None or int(inst.rotations or 0) == t.names.rotation:
                return
            current = names_of(inst)
            kept = {str(c.get("user")) for c in retiring(self.box, inst)}
        provider = rotatable(t.kind)
        if provider is None or t.names.login == current.login or t.names.login in kept:
            return
        log.warning("instance %s (%s) was rotated during its repair: revoking its old login %s "
                    "again", t.instance_id, t.prefix, t.names.login)
        try:
            provider.revoke_login(t.spec, current, t.names.login)
        except ClusterError as exc:
            log.error("instance %s (%s): revoking the old login %s again failed: %s",
                      t.instance_id, t.prefix, t.names.login, exc.message)

    def _record(self, t: _Target, outcome: _Outcome, if_idle: bool = False) -> bool:
        """Write the drift and the time it was observed; audit when the drift changes. The
        conditional update makes a drift that two nodes find at once audited once. With
        `if_idle`, only if no operation of the instance (or deployment of its environment)
        waits or runs, checked in the same transaction. False when nothing was written because
        the instance changed since it was observed (or is not idle)."""
        with self.store.session() as s:
            inst = _as_read(s, t, idle=if_idle)
            if inst is None:  # e.g. rotated since it was observed: the next pass looks again
                return False
            before = inst.drift
            written = s.connection().execute(
                _RECORD_NEW if before is None else _RECORD_CHANGED,
                {"inst": inst.id, "before": before, "found": outcome.final,
                 "now": utcnow()}).rowcount
            if outcome.credentials is not None:  # what the server now has, whoever audits it
                inst.credentials_enc = self.box.seal(outcome.credentials)
            if written != 1:  # another node recorded this instance meanwhile
                return True
            for action, detail in _entries(before, outcome):
                audit(s, ACTOR, action, instance=inst, detail=detail)
        return True


_INSTANCES = Instance.__table__.c
#: what a pass writes for an instance: the drift it found (None: none) and when, only if the
#: drift is still what the pass read (`_RECORD_NEW`: none), run on the session's connection
_RECORD_NEW, _RECORD_CHANGED = (
    update(Instance.__table__).where(_INSTANCES.id == bindparam("inst"), unchanged)
    .values(drift=bindparam("found"), observed_at=bindparam("now"))
    for unchanged in (_INSTANCES.drift.is_(None), _INSTANCES.drift == bindparam("before")))
#: whether one instance is busy (as `_busy` tells for all): an operation of its waits or runs,
#: or its environment is being deployed
_BUSY_ONE = select(Operation.id).where(
    Operation.status.in_(UNFINISHED),
    or_(Operation.instance_id == bindparam("instance"),
        and_(Operation.instance_id.is_(None), Operation.kind == "deploy",
             Operation.environment_id == bindparam("env")))).limit(1)


def _as_read(s: Session, t: _Target, idle: bool) -> Instance | None:
    """The target's instance in `s` if it is still functional with the rotation state the pass
    read it with (and, with `idle`, no operation of it or deployment of its environment waits
    or runs); else None."""
    inst = s.get(Instance, t.instance_id)
    if inst is None or State(inst.state) not in lifecycle.FUNCTIONAL:
        return None
    if t.rotation_state is not None and _rotation_state(inst) != t.rotation_state:
        return None
    if idle and s.scalar(_BUSY_ONE, {"instance": inst.id,
                                     "env": inst.environment_id}) is not None:
        return None
    return inst


def _busy(s: Session) -> tuple[set[int], set[int]]:
    """Instances with an operation that waits or runs, and environments being deployed."""
    rows = s.execute(select(Operation.instance_id, Operation.environment_id).where(
        Operation.status.in_(UNFINISHED),
        or_(Operation.instance_id.is_not(None), Operation.kind == "deploy"))).all()
    instances = {i for i, _ in rows if i is not None}
    environments = {e for i, e in rows if i is None}
    return instances, environments


def _entries(before: str | None, outcome: _Outcome) -> list[tuple[str, str]]:
    """The audit entries for a change of drift from `before` to `outcome.final`: "drift found"
    when new drift was found (with what the repair left), "drift repaired" when it is gone."""
    found, final = outcome.found, outcome.final
    entries: list[tuple[str, str]] = []
    # drift recorded already, with why it was left (a repair held back during a rotation, or
    # one that failed): found again, it is not new
    known = before is not None and found is not None and before.startswith(f"{found} (")
    if found is not None and found != before and not known:
        if final in (None, found):
            detail = found
        else:  # what the repair left, or why it failed
            detail = f"{found} ({outcome.repair_note})" if outcome.repair_note else final
        entries.append(("drift found", detail))
    elif final is not None and final != before:
        entries.append(("drift found", final))
    if final is None and (before is not None or found is not None):
        entries.append(("drift repaired", outcome.repair_note if found is not None
                        else f"as it should be again (changed outside Tether); was: {before}"))
    return entries
