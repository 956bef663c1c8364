"""Provision and remove one instance on its cluster.

Rule 5 holds at every failure point: an error before the provider call (no cluster fits, two
private instances competing for one cluster, the store refusing a write), during it, or while
recording its result ends in `new` with the error recorded and nothing left on the cluster. An
error that may pass (TransientError: the cluster unreachable for a moment) keeps the instance
`provisioning` while the worker retries the operation, until its deadline. A failed removal keeps
the instance where it was, with the error shown, and can be retried.

Every step is idempotent and keyed by names derived from the instance id, so an operation a
crash interrupted is resumed, never half-repeated. The named crash points are for the crash tests
(see `tether.faults`)."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tether import catalog, lifecycle, naming
from tether.engine.parts import EngineParts, before, reason_of
from tether.errors import ClusterError, OperationError, TransientError
from tether.faults import crash_point
from tether.lifecycle import Action, Event, State
from tether.net import free_port
from tether.providers.base import ClusterSpec
from tether.providers.registry import get_provider, spawnable
from tether.redact import redact
from tether.store.models import (
    Cluster,
    Environment,
    Instance,
    Operation,
    Project,
    utcnow,
)
from tether.store.records import (
    UNFINISHED,
    apply_event,
    audit,
    cluster_spec,
    clusters_of,
    new_secret,
    running_release_has,
    shared_cluster,
)

log = logging.getLogger("tether.engine")


@dataclass(frozen=True)
class _Plan:
    prefix: str
    kind: str
    spec: ClusterSpec
    secret: str
    spawned: bool
    #: whether the running release has the instance: fixed while the operation runs (a deploy
    #: of the environment, the only thing that changes it, waits for this operation)
    in_release: bool = False
    environment_id: int = 0


# built once (the hot path of every provision)
_INSTANCE_WITH_ITS_ENVIRONMENT = (select(Instance, Environment, Project)
                                  .join(Environment, Instance.environment_id == Environment.id)
                                  .join(Project, Environment.project_id == Project.id)
                                  .where(Instance.id == bindparam("id")))
#: run by the session's connection: a plain UPDATE of the table, no ORM step (nothing of the
#: instance is loaded in that transaction to keep in sync)
_PROVISIONED = (update(Instance.__table__)
                .where(Instance.__table__.c.id == bindparam("instance"),
                       Instance.__table__.c.state == bindparam("before"))
                .values(state=bindparam("to"), credentials_enc=bindparam("creds"),
                        last_error=None, drift=None, updated_at=bindparam("now")))


class Provisioning:
    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts

    # -- provision ----------------------------------------------------------------------------

    def provision_instance(self, instance_id: int, actor: str,
                           deadline: datetime | None = None,
                           operation_id: int | None = None) -> str:
        """Create the instance's resources (idempotent). On a final failure: clean up, back to
        `new` with the error recorded, and raise; on an error that may pass before `deadline`:
        stay `provisioning` and raise TransientError (the worker retries). `operation_id`: the
        provision operation this call is (its end is written with the result); None when
        another operation provisions on its way (a deploy), which goes on afterwards."""
        names = naming.resource_names(instance_id)
        try:
            prepared = self.parts.prepared(operation_id)  # made as the operation was queued
            plan = prepared if isinstance(prepared, _Plan) else self._begin(instance_id, actor)
        except Exception as exc:
            reason = redact(reason_of(exc))
            prefix = self._fail(instance_id, actor, reason)
            raise ClusterError(f"provisioning {prefix} failed: {reason}") from None
        if isinstance(plan, str):
            return plan
        spec = plan.spec
        crash_point("provision.before_provider")
        try:
            if plan.spawned:
                password = unquote(urlsplit(spec.url).password or "")
                url = self.parts.private(plan.kind).create(names, int(spec.settings["port"]),
                                                           password)
                spec = self._record_admin_url(spec, url)
            creds = get_provider(plan.kind).provision(spec, names, plan.secret)
        except Exception as exc:
            reason = redact(reason_of(exc), [plan.secret, spec.url])
            if isinstance(exc, TransientError) and before(deadline):
                self._note(instance_id, f"provisioning {plan.prefix}: {reason}; retrying")
                raise TransientError(f"provisioning {plan.prefix}: {reason}") from None
            self._undo(instance_id, plan, spec, actor, reason)
            raise ClusterError(f"provisioning {plan.prefix} failed: {reason}") from None
        crash_point("provision.after_provider")
        try:
            sealed = self.parts.box.seal(creds.values)
            with self.parts.store.session() as s:
                if not self._provisioned(s, instance_id, plan, sealed, actor):
                    # no longer `provisioning` (changed meanwhile): the rules decide from the
                    # state it has now
                    inst = s.get(Instance, instance_id)
                    assert inst is not None
                    inst.credentials_enc = sealed
                    inst.last_error = None
                    inst.drift = None
                    apply_event(s, actor, "provisioned", inst, Event.PROVISION_SUCCEEDED,
                                in_release=plan.in_release)
                self.parts.finish_in(s, operation_id, f"{plan.prefix} is provisioned")
        except Exception as exc:
            reason = redact(f"recording the result failed: {reason_of(exc)}",
                            [plan.secret, spec.url])
            self._undo(instance_id, plan, spec, actor, reason)
            raise ClusterError(f"provisioning {plan.prefix} failed: {reason}") from None
        return f"{plan.prefix} is provisioned"

    def _begin(self, instance_id: int, actor: str) -> _Plan | str:
        """In one transaction: enter `provisioning`, pick the cluster, choose the secret."""
        with self.parts.store.session() as s:
            found = s.execute(_INSTANCE_WITH_ITS_ENVIRONMENT, {"id": instance_id}).first()
            assert found is not None, f"instance {instance_id} does not exist"
            # the environment is held for the whole transaction: the session's identity map
            # only keeps rows something refers to, and every step below looks it up again
            inst, env, project = found
            set_committed_value(env, "project", project)
            state = State(inst.state)
            if state not in (State.NEW, State.PROVISIONING):
                return f"{inst.prefix} is already provisioned ({state})"
            in_release = running_release_has(s, inst)
            # everything read before anything changes: the instance is written by one UPDATE
            cluster = None
            if inst.cluster_id is None:
                cluster = self._choose_cluster(s, inst, env.project.region)
            apply_event(s, actor, "provision", inst, Event.PROVISION_STARTED,
                        in_release=in_release)
            return self._plan(s, inst, cluster, in_release)

    def _plan(self, s: Session, inst: Instance, chosen: Cluster | None,
              in_release: bool) -> _Plan:
        """The plan of a provision: the instance's cluster (`chosen` just now, else the one it
        has) and its secret (chosen once) set on it, in the caller's transaction."""
        if chosen is not None:
            inst.cluster_id = chosen.id
        if inst.secret_enc is None:
            inst.secret_enc = new_secret(self.parts.box)
        cluster = chosen if chosen is not None else s.get(Cluster, inst.cluster_id)
        assert cluster is not None
        spec = cluster_spec(self.parts.box, cluster)
        return _Plan(inst.prefix, inst.kind, spec, self.parts.box.open(inst.secret_enc),
                     bool(spec.settings.get("spawned")), in_release, inst.environment_id)

    def prepare(self, s: Session, op: Operation) -> _Plan | None:
        """`_begin`'s work for a provision queued in the caller's transaction `s` (a waited
        add or provision, whose operation was claimed there: `Worker.claim_in`), done in that
        transaction: the instance enters `provisioning` with its cluster and secret in the
        same commit, and the handler starts at the provider's call. Only for a shared cluster
        (a private one may mean starting a server: the handler does that); None otherwise, and
        the handler plans as always. The session holds the instance and its environment (the
        action just wrote them): nothing is read again but the clusters."""
        inst = s.get(Instance, op.instance_id) if op.instance_id is not None else None
        if inst is None or inst.private or State(inst.state) is not State.PROVISIONING:
            return None
        cluster = None
        if inst.cluster_id is None:  # else chosen as it was added (`services.add_instance`)
            env = s.get(Environment, inst.environment_id)
            if env is None:
                return None
            cluster = self._choose_cluster(s, inst, env.project.region)  # OperationError: none
        return self._plan(s, inst, cluster, running_release_has(s, inst))

    @staticmethod
    def _provisioned(s: Session, instance_id: int, plan: _Plan, sealed: str,
                     actor: str) -> bool:
        """Record a provision's result as a compare-and-set: the state the rules give a
        `provisioning` instance whose provision succeeded, written only if it is still
        `provisioning` (no read first: one statement less on every provision). False, having
        changed nothing, when it is not."""
        before_state = State.PROVISIONING
        to = lifecycle.after(before_state, Event.PROVISION_SUCCEEDED,
                             in_release=plan.in_release)
        now = utcnow()
        done = s.connection().execute(_PROVISIONED, {
            "instance": instance_id, "before": before_state.value, "to": to.value,
            "creds": sealed, "now": now})
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
        if to != before_state:
            audit(s, actor, "provisioned", environment_id=plan.environment_id,
                  instance_id=instance_id, from_state=before_state.value, to_state=to.value)
        return True

    def _choose_cluster(self, s: Session, inst: Instance, region: str) -> Cluster:
        """The cluster an instance lives on: the first shared cluster of its service, or for
        `--private` a free registered private cluster (claimed atomically: a conditional update,
        so two instances never own one), else a dedicated server run by Tether."""
        if not inst.private:
            shared = shared_cluster(s, inst.kind, inst.service, region)
            if shared is not None:
                return shared
            raise OperationError(f"no shared cluster for {inst.service} in region {region} "
                                 "any more: register one with `tether cluster add`")
        fitting = [c for c in clusters_of(s, inst.kind, region)
                   if catalog.service_name(c.kind, c.version) == inst.service]
        for c in fitting:
            if c.private and c.owner_instance_id is None:
                claimed = s.execute(update(Cluster).where(
                    Cluster.id == c.id, Cluster.owner_instance_id.is_(None))
                    .values(owner_instance_id=inst.id).execution_options(
                        synchronize_session=False))
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    s.refresh(c)
                    return c
        if not spawnable(inst.kind):
            raise OperationError(f"no free private {inst.kind} cluster in region {region}: "
                                 "register one with `tether cluster add ... --private`")
        embedded = self.parts.private(inst.kind).version()
        if catalog.service_name(inst.kind, embedded) != inst.service:
            raise OperationError(f"Tether runs private servers of {inst.kind} {embedded}, not "
                                 f"{inst.service}: register a private {inst.service} cluster "
                                 "with `tether cluster add ... --private`")
        names = naming.resource_names(inst.id)
        port = free_port()
        password = secrets.token_urlsafe(24)
        # the admin URL is only known once the server exists: kept as a placeholder with the
        # password (sealed) until `create` returns the real one
        url = f"pending://admin:{password}@127.0.0.1:{port}/"
        cluster = Cluster(name=f"private-{names.base}", kind=inst.kind, region=region,
                          private=True, version=embedded, url_enc=self.parts.box.seal(url),
                          settings={"port": port, "spawned": True}, managed=True,
                          owner_instance_id=inst.id, node_id=self.parts.node_id)
        s.add(cluster)
        s.flush()
        return cluster

    def _record_admin_url(self, spec: ClusterSpec, url: str) -> ClusterSpec:
        """Keep the admin URL a dedicated server answered with (sealed) and use it."""
        if url != spec.url:
            with self.parts.store.session() as s:
                cluster = s.get(Cluster, spec.id)
                if cluster is not None:
                    cluster.url_enc = self.parts.box.seal(url)
        return dataclasses.replace(spec, url=url)

    def _undo(self, instance_id: int, plan: _Plan, spec: ClusterSpec, actor: str,
              reason: str) -> None:
        """Delete whatever the attempt made on the cluster, then record the failure."""
        names = naming.resource_names(instance_id)
        cleaned = True
        try:
            if plan.spawned:
                self.parts.private(plan.kind).destroy(names, int(spec.settings["port"]))
            else:
                get_provider(plan.kind).deprovision(spec, names)
        except Exception as exc:  # recorded; the retry (or a removal) converges
            cleaned = False
            reason += f" (clean-up also failed: {redact(reason_of(exc), [spec.url])})"
        self._fail(instance_id, actor, reason, keep_cluster=not cleaned)

    def _fail(self, instance_id: int, actor: str, reason: str, *,
              keep_cluster: bool = False) -> str:
        """Back to `new` with the error recorded (rule 5), the private cluster handed back —
        unless `keep_cluster`: the clean-up failed, so the instance keeps its cluster (and a
        dedicated server its row, the only record of its port and password) for the retry or
        the removal that deletes what was left. Returns the prefix. If even this cannot be
        written, the operation stays unfinished and is retried (or the instance is found
        stranded at the next start): logged, not raised."""
        try:
            with self.parts.store.session() as s:
                inst = s.get(Instance, instance_id)
                assert inst is not None
                if not keep_cluster:
                    self._release_cluster(s, inst)
                inst.last_error = reason
                apply_event(s, actor, "provision failed", inst, Event.PROVISION_FAILED,
                            detail=reason)
                return inst.prefix
        except Exception as exc:
            log.error("recording the failed provision of instance %s failed: %s", instance_id,
                      redact(reason_of(exc)))
            return f"instance {instance_id}"

    @staticmethod
    def _release_cluster(s: Session, inst: Instance) -> None:
        """Hand back the cluster a private instance owned (a dedicated server's row goes)."""
        if inst.cluster_id is None:
            return
        cluster = s.get(Cluster, inst.cluster_id)
        if cluster is not None and cluster.settings.get("spawned"):
            inst.cluster_id = None
            s.flush()
            s.delete(cluster)
        elif inst.private:
            if cluster is not None and cluster.owner_instance_id == inst.id:
                cluster.owner_instance_id = None
            inst.cluster_id = None

    def _note(self, instance_id: int, message: str) -> None:
        with self.parts.store.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is not None:
                inst.last_error = message

    # -- remove -------------------------------------------------------------------------------

    def remove_instance(self, instance_id: int, actor: str,
                        deadline: datetime | None = None,
                        operation_id: int | None = None) -> str:
        """Delete the instance's resources and credentials for good, when the lifecycle allows it
        now (the remove was allowed when asked, but a deployment may have run since).
        `operation_id`: the remove operation this call is (ended with the result)."""
        names = naming.resource_names(instance_id)
        with self.parts.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            env = s.get(Environment, inst.environment_id)
            decision = lifecycle.decide(State(inst.state), Action.REMOVE, inst.prefix,
                                        env.name if env else "ENV",
                                        in_release=running_release_has(s, inst))
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            spec = cluster_spec(self.parts.box, cluster) if cluster else None
            kind, prefix = inst.kind, inst.prefix
        if not decision.allowed:
            self._note(instance_id, f"removing {prefix} was refused: {decision.message}")
            raise OperationError(decision.message)
        if decision.operation is None:
            return decision.message
        crash_point("remove.before_provider")
        if spec is not None:
            try:
                if spec.settings.get("spawned"):
                    self.parts.private(kind).destroy(names, int(spec.settings["port"]))
                else:
                    get_provider(kind).deprovision(spec, names)
            except Exception as exc:
                reason = redact(reason_of(exc), [spec.url])
                if isinstance(exc, TransientError) and before(deadline):
                    self._note(instance_id, f"removing {prefix}: {reason}; retrying")
                    raise TransientError(f"removing {prefix}: {reason}") from None
                message = (f"removing {prefix} failed: {reason}; retrying is safe "
                           "(`tether service remove` again)")
                with self.parts.store.session() as s:
                    inst = s.get(Instance, instance_id)
                    assert inst is not None
                    inst.last_error = message
                    apply_event(s, actor, "remove failed", inst, Event.REMOVE_FAILED,
                                detail=reason)
                raise ClusterError(message) from None
        crash_point("remove.after_provider")
        with self.parts.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            self._release_cluster(s, inst)
            inst.credentials_enc = None
            inst.secret_enc = None
            inst.retiring_credentials_enc = None  # every login went with the resources
            inst.rotation_secret_enc = None
            inst.last_error = None
            inst.drift = None
            apply_event(s, actor, "removed", inst, Event.REMOVE_SUCCEEDED,
                        detail="data deleted for good")
            self.parts.finish_in(s, operation_id, f"{prefix} is removed: its data is deleted")
        return f"{prefix} is removed: its data is deleted"

    # -- recovery -----------------------------------------------------------------------------

    def recover_stranded(self, actor: str = "engine") -> list[int]:
        """Instances left `provisioning` with no operation that will finish them (a crash at a
        point no operation covers): whatever was made is deleted and they go back to `new` with
        the reason, so they can be retried (rule 5)."""
        with self.parts.store.session() as s:
            busy_instances = set(s.scalars(select(Operation.instance_id).where(
                Operation.status.in_(UNFINISHED), Operation.instance_id.is_not(None))))
            deploying = set(s.scalars(select(Operation.environment_id).where(
                Operation.status.in_(UNFINISHED), Operation.kind == "deploy")))
            plans = []
            for inst in s.scalars(select(Instance).where(
                    Instance.state == State.PROVISIONING.value)):
                if inst.id in busy_instances or inst.environment_id in deploying:
                    continue
                cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
                spec = cluster_spec(self.parts.box, cluster) if cluster else None
                plans.append((inst.id, inst.prefix, inst.kind, spec))
        reason = "its provisioning was interrupted: provision it again"
        for inst_id, prefix, kind, spec in plans:
            if spec is None:
                self._fail(inst_id, actor, reason)
            else:
                self._undo(inst_id, _Plan(prefix, kind, spec, "", bool(
                    spec.settings.get("spawned"))), spec, actor, reason)
        return [p[0] for p in plans]
