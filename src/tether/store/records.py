"""The reads and writes both the actions and the engine use, below both of them: a state change
with its audit entry (rule 7), the facts the lifecycle rules take besides the recorded state
(does the running release have the instance? which of its operations waits?), and a cluster's
spec for its provider.

A state is only ever changed here, and only to what `tether.lifecycle` answered: callers pass a
lifecycle `Decision` or an `Event`, never a state of their own."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from tether import catalog, lifecycle
from tether.lifecycle import Decision, Event, Pending, State
from tether.providers.base import ClusterSpec
from tether.store.models import (
    AuditEntry,
    Cluster,
    Environment,
    Instance,
    Operation,
    Release,
    utcnow,
)

UNFINISHED = ("queued", "running")


#: one audit entry, written at once by the session's connection: an entry refers to rows already
#: written (ids, no foreign keys), nothing reads it back in the transaction, and an ORM object
#: would cost a unit of work at the next flush (~0.2 ms each here; a provision writes three)
_AUDIT = insert(AuditEntry.__table__)


def audit(
    s: Session,
    actor: str,
    action: str,
    *,
    environment_id: int | None = None,
    instance: Instance | None = None,
    instance_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: str | None = None,
) -> None:
    """Record an entry of the trail: of `instance`, or of the instance `instance_id` in
    `environment_id` (a write that did not load it), or of the environment alone. Written in
    the transaction of `s` now, in the order of the calls (the trail's order is its ids')."""
    if instance is not None and instance.id is None:
        s.flush()  # its id first
    s.connection().execute(_AUDIT, {
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "environment_id": environment_id if instance is None else instance.environment_id,
        "instance_id": instance.id if instance is not None else instance_id,
        "from_state": from_state,
        "to_state": to_state,
        "detail": detail,
    })


def _move(s: Session, actor: str, action: str, instance: Instance, to: State,
          detail: str | None) -> State:
    before = instance.state
    if before != to.value:
        instance.state = to.value
        instance.updated_at = utcnow()
        audit(s, actor, action, instance=instance, from_state=before, to_state=to.value,
              detail=detail)
    return to


def add_new(s: Session, actor: str, instance: Instance, detail: str,
            then: tuple[str, Decision] | None = None) -> None:
    """Write a new instance, state `new`, with its "add" audit entry (`detail`). With `then`
    (an action the rules allowed on the new instance, and their decision, e.g. a provision
    asked with the add), it is written in the state that decision leads to instead, the
    action's audit entry after the add's, as `apply_decision` would record it: one INSERT,
    not an INSERT and an UPDATE. An IntegrityError of the INSERT (its prefix taken meanwhile)
    is the caller's."""
    instance.state = State.NEW.value
    if then is not None:
        assert then[1].allowed, then[1].message
        if then[1].target is not None:
            instance.state = then[1].target.value
    s.add(instance)
    s.flush()
    audit(s, actor, "add", instance=instance, to_state=State.NEW.value, detail=detail)
    if then is not None and instance.state != State.NEW.value:
        audit(s, actor, then[0], instance=instance, from_state=State.NEW.value,
              to_state=instance.state)


def apply_decision(s: Session, actor: str, action: str, instance: Instance, decision: Decision,
                   detail: str | None = None) -> State:
    """Enter the state a user's allowed action leads to (no-op when it names none)."""
    assert decision.allowed, decision.message
    if decision.target is None:
        return State(instance.state)
    return _move(s, actor, action, instance, decision.target, detail)


def apply_event(s: Session, actor: str, action: str, instance: Instance, event: Event, *,
                in_release: bool | None = None, detail: str | None = None) -> State:
    """Enter the state an engine event leads to. `in_release` defaults to whether the running
    release has the instance (the deploy events pass what the new release has)."""
    if in_release is None:
        in_release = running_release_has(s, instance)
    to = lifecycle.after(State(instance.state), event, in_release=in_release)
    return _move(s, actor, action, instance, to, detail)


def release_instance_ids(s: Session, env: Environment) -> set[int] | None:
    """The instances whose variables the running release has; None when nothing runs."""
    if env.current_release_id is None:
        return None
    release = s.get(Release, env.current_release_id)
    if release is None:
        return None
    if release.instance_ids is None:  # a release made before the store recorded it
        return {i.id for i in s.scalars(select(Instance).where(
            Instance.environment_id == env.id,
            Instance.state.in_([st.value for st in lifecycle.USABLE])))}
    return {int(i) for i in release.instance_ids}


def running_release_has(s: Session, instance: Instance) -> bool:
    env = s.get(Environment, instance.environment_id)
    ids = release_instance_ids(s, env) if env is not None else None
    return bool(ids) and instance.id in ids  # type: ignore[operator]


def pending_operation(s: Session, instance: Instance) -> Pending | None:
    """The instance's own operation that waits or runs, in lifecycle terms."""
    return _pending_of(set(s.scalars(select(Operation.kind).where(
        Operation.instance_id == instance.id, Operation.status.in_(UNFINISHED)))))


def _pending_of(kinds: set[str]) -> Pending | None:
    if "remove" in kinds:
        return Pending.REMOVE
    if "provision" in kinds:
        return Pending.PROVISION
    return None


_ENVIRONMENTS = select(Environment).where(Environment.id.in_(bindparam("ids", expanding=True)))
_RELEASES = select(Release).where(Release.id.in_(bindparam("ids", expanding=True)))
_CLUSTERS = select(Cluster).where(Cluster.id.in_(bindparam("ids", expanding=True)))
_UNFINISHED_OF = (select(Operation)
                  .where(Operation.instance_id.in_(bindparam("ids", expanding=True)),
                         Operation.status.in_(UNFINISHED))
                  .order_by(Operation.id))

M = TypeVar("M", Environment, Cluster)


def _held(s: Session, model: type[M], ids: set[int]) -> dict[int, M]:
    """Those of `ids` the session holds already (the identity map keeps what something
    refers to)."""
    held = (s.identity_map.get(identity_key(model, i)) for i in ids)
    return {row.id: row for row in held if isinstance(row, model)}


@dataclass
class InstanceFacts:
    """What the views of many instances need besides their rows — their environments, what
    each environment's running release has, their unfinished operations, their clusters —
    loaded in a fixed number of queries however many instances there are (a list costs the
    same for 3 instances and for 3,000), instead of a few queries per instance."""

    environments: dict[int, Environment] = field(default_factory=dict)
    in_releases: dict[int, set[int] | None] = field(default_factory=dict)
    operations: dict[int, list[Operation]] = field(default_factory=dict)  # oldest first
    clusters: dict[int, Cluster] = field(default_factory=dict)

    @classmethod
    def load(cls, s: Session, instances: Sequence[Instance]) -> InstanceFacts:
        facts = cls()
        if not instances:
            return facts
        env_ids = {i.environment_id for i in instances}
        # those the session holds already (the caller's environment, looked up to find the
        # instance) are not asked for again; nor are clusters it holds
        facts.environments = _held(s, Environment, env_ids)
        if len(facts.environments) < len(env_ids):
            facts.environments.update({e.id: e for e in s.scalars(
                _ENVIRONMENTS, {"ids": list(env_ids - facts.environments.keys())})})
        release_ids = {e.current_release_id for e in facts.environments.values()
                       if e.current_release_id is not None}
        releases = {r.id: r for r in s.scalars(
            _RELEASES, {"ids": list(release_ids)})} if release_ids else {}
        for env in facts.environments.values():
            release = releases.get(env.current_release_id) if env.current_release_id else None
            if release is not None and release.instance_ids is not None:
                facts.in_releases[env.id] = {int(i) for i in release.instance_ids}
            else:  # nothing runs, or a release made before the store recorded its instances
                facts.in_releases[env.id] = release_instance_ids(s, env)
        for op in s.scalars(_UNFINISHED_OF, {"ids": [i.id for i in instances]}):
            facts.operations.setdefault(int(op.instance_id or 0), []).append(op)
        cluster_ids = {i.cluster_id for i in instances if i.cluster_id is not None}
        facts.clusters = _held(s, Cluster, cluster_ids)
        if len(facts.clusters) < len(cluster_ids):
            facts.clusters.update({c.id: c for c in s.scalars(
                _CLUSTERS, {"ids": list(cluster_ids - facts.clusters.keys())})})
        return facts

    @classmethod
    def of_new(cls, env: Environment, instance: Instance,
               operation: Operation | None = None,
               cluster: Cluster | None = None) -> InstanceFacts:
        """The facts of an instance added in the caller's transaction, known without asking the
        store: no release can have it yet, its cluster is the one the add chose (`cluster`,
        if any), and its only operation is the one just queued (if any)."""
        return cls(environments={env.id: env}, in_releases={env.id: set()},
                   operations={instance.id: [operation]} if operation is not None else {},
                   clusters={cluster.id: cluster} if cluster is not None else {})

    @classmethod
    def of_idle(cls, env: Environment, cluster: Cluster | None) -> InstanceFacts:
        """The facts of an instance of `env` (on `cluster`, if any) that the caller knows has
        no operation waiting or running, in an environment where no release runs: known
        without asking the store."""
        return cls(environments={env.id: env}, in_releases={env.id: None},
                   clusters={cluster.id: cluster} if cluster is not None else {})

    def in_release(self, instance: Instance) -> bool:
        """`running_release_has`."""
        ids = self.in_releases.get(instance.environment_id)
        return bool(ids) and instance.id in ids  # type: ignore[operator]

    def pending(self, instance: Instance) -> Pending | None:
        """`pending_operation`."""
        return _pending_of({op.kind for op in self.operations.get(instance.id, [])})

    def unfinished(self, instance: Instance, kind: str | None = None) -> Operation | None:
        """`unfinished`."""
        ops = [op for op in self.operations.get(instance.id, [])
               if kind is None or op.kind == kind]
        return ops[-1] if ops else None

    def cluster(self, instance: Instance) -> Cluster | None:
        return self.clusters.get(instance.cluster_id) if instance.cluster_id else None


def pending_removals(s: Session, environment_id: int) -> set[int]:
    """Instances of an environment whose removal waits or runs."""
    return set(s.scalars(select(Operation.instance_id).where(
        Operation.environment_id == environment_id, Operation.kind == "remove",
        Operation.status.in_(UNFINISHED))).all()) - {None}  # type: ignore[arg-type]


def unfinished(s: Session, instance: Instance, kind: str | None = None) -> Operation | None:
    """The instance's latest operation that waits or runs (of `kind`, if given)."""
    q = select(Operation).where(Operation.instance_id == instance.id,
                                Operation.status.in_(UNFINISHED))
    if kind is not None:
        q = q.where(Operation.kind == kind)
    return s.scalar(q.order_by(Operation.id.desc()).limit(1))


_ALL_CLUSTERS = select(Cluster).order_by(Cluster.id)
_CLUSTERS_OF = (select(Cluster).where(Cluster.kind == bindparam("kind"),
                                      Cluster.region == bindparam("region"))
                .order_by(Cluster.id))
#: where a transaction keeps the clusters `all_clusters` read (a session is one transaction:
#: one `Store.session()` block)
_READ_CLUSTERS = "all_clusters"


def all_clusters(s: Session) -> list[Cluster]:
    """Every registered cluster, oldest first, read once per transaction: an add resolves its
    service from them and, when it provisions at once, chooses its cluster among the same rows
    (`clusters_of`)."""
    rows: list[Cluster] | None = s.info.get(_READ_CLUSTERS)
    if rows is None:
        rows = list(s.scalars(_ALL_CLUSTERS))
        s.info[_READ_CLUSTERS] = rows
    return rows


def clusters_of(s: Session, kind: str, region: str) -> list[Cluster]:
    """The clusters of `kind` in `region`, oldest first: among those `all_clusters` read in
    this transaction already, else asked for alone (not every cluster)."""
    read: list[Cluster] | None = s.info.get(_READ_CLUSTERS)
    if read is not None:
        return [c for c in read if c.kind == kind and c.region == region]
    return list(s.scalars(_CLUSTERS_OF, {"kind": kind, "region": region}))


def shared_cluster(s: Session, kind: str, service: str, region: str) -> Cluster | None:
    """The shared cluster a (not private) instance of `service` is provisioned on: the oldest
    registered one of its kind in `region` that offers exactly that service."""
    for c in clusters_of(s, kind, region):
        if not c.private and catalog.service_name(c.kind, c.version) == service:
            return c
    return None


def new_secret(box: Any) -> str:
    """A new instance's secret (the password its provider gives its login), sealed: chosen
    once, when its first provision is planned."""
    return str(box.seal(secrets.token_urlsafe(24)))


def cluster_spec(box: Any, cluster: Cluster) -> ClusterSpec:
    return ClusterSpec(id=cluster.id, kind=cluster.kind, region=cluster.region,
                       url=box.open(cluster.url_enc), private=cluster.private,
                       settings=dict(cluster.settings or {}))
