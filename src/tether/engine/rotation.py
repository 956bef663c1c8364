"""Rotate an instance's credentials without downtime (`tether service rotate`, Heroku's
`pg:credentials:rotate`), and revoke the old ones once no running release uses them.

The running release holds the old credentials, and PostgreSQL has one password per role (MariaDB
no dual passwords), so new credentials are a *second login* valid beside the old one
(`providers.base.Rotatable`). A rotation goes:

1. The `rotate` action chooses the new login's password and stores it (`rotation_secret_enc`)
   with the operation, so every retry converges to the same credentials.
2. The operation makes the login `<base>_<n>` (`add_login`, idempotent) and records, in one
   transaction, the new credentials as the instance's (`credentials_enc`: the next release gets
   them) and the old ones as *retiring* (`retiring_credentials_enc`).
3. Retiring credentials no running release uses are revoked at once (`revoke_retired`). If the
   running release uses them, the operation queues a deployment of the environment (a normal
   one, asked by the same person, so it shows in the history) and finishes saying so; that
   deployment revokes them right after its traffic switch, once the previous release has
   drained and stopped. A failed deployment revokes nothing: the previous release serves on with
   the old credentials, and both stay valid until a deployment succeeds.

A revoke that fails is best effort there (like stopping the previous release): the instance keeps
its retiring credentials, and the next deployment, the next rotation or the reconcile pass tries
again. Credentials are never revoked while a release that is starting or running has them (its
variables are compared), nor while the environment's current release has them unless it failed
(a current release is `stopped` while Tether is stopped, and started again with its stored
variables at the next start), nor the instance's current ones.

Every step is keyed by names derived from the instance id and its rotation count, so a crash at
any point is resumed: the login made again with the same password, the record written once, the
revoke repeated (it succeeds when the login is gone). Because the new login has a password Tether
chose, a rotation also repairs an instance whose tenant changed its own password.

The audit trail says "credentials rotated" and "old credentials revoked", naming logins, never a
secret."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from tether import lifecycle, naming
from tether.crypto import SecretBox
from tether.engine.parts import EngineParts, before, reason_of
from tether.engine.releases import LIVE
from tether.errors import ClusterError, OperationError, TransientError
from tether.faults import crash_point
from tether.lifecycle import State
from tether.providers.base import (
    ClusterSpec,
    Credentials,
    ResourceNames,
    Rotatable,
    rotation_unsupported,
)
from tether.providers.registry import get_provider
from tether.redact import redact
from tether.store.db import Store
from tether.store.models import (
    Cluster,
    Deployment,
    DeploymentLog,
    Environment,
    Instance,
    Operation,
    Release,
)
from tether.store.records import (
    UNFINISHED,
    audit,
    cluster_spec,
    pending_operation,
    running_release_has,
)

log = logging.getLogger("tether.engine")

#: how an instance's `last_error` starts when revoking its old credentials failed (cleared by the
#: revoke that succeeds)
REVOKE_FAILED = "revoking the old credentials of"


def names_of(inst: Instance) -> ResourceNames:
    """The instance's resource names, with the login its current credentials use."""
    return naming.resource_names(inst.id).rotated(int(inst.rotations or 0))


def rotatable(kind: str) -> Rotatable | None:
    """The provider of `kind` when it can rotate credentials, else None."""
    provider = get_provider(kind)
    return provider if isinstance(provider, Rotatable) else None


def retiring(box: SecretBox, inst: Instance) -> list[dict[str, Any]]:
    """The instance's earlier credentials that are still valid."""
    return list(box.open(inst.retiring_credentials_enc) or [])


# -- revoking what no running release uses -------------------------------------------------------


@dataclass
class RevokeReport:
    """What one pass over retiring credentials did, as (instance id, prefix, login)."""

    revoked: list[tuple[int, str, str]] = field(default_factory=list)
    #: still used by a release that starts or runs: kept until a deployment replaces it
    in_use: list[tuple[int, str, str]] = field(default_factory=list)
    #: (instance id, prefix, login, reason, whether it may pass)
    failed: list[tuple[int, str, str, str, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class _Revoke:
    instance_id: int
    prefix: str
    environment: str
    provider: Rotatable
    spec: ClusterSpec
    names: ResourceNames
    login: str
    password: str


def _live_variables(s: Session, box: SecretBox, environment_id: int) -> list[dict[str, str]]:
    """The variables of every release of the environment whose process may still run, and of
    its current release unless that one failed: a current release `stopped` with Tether is
    started again, with these very variables, at the next start (`Releases.restore`), so its
    credentials are in use although no process has them right now."""
    env = s.get(Environment, environment_id)
    current = env.current_release_id if env is not None else None
    in_use = Release.status.in_(LIVE)
    if current is not None:
        in_use = or_(in_use, and_(Release.id == current, Release.status != "failed"))
    return [dict(box.open(r.env_enc) or {}) for r in s.scalars(select(Release).where(
        Release.environment_id == environment_id, in_use))]


def _used(kind: str, prefix: str, creds: dict[str, Any], live: list[dict[str, str]]) -> bool:
    """Whether a live release has these credentials: a variable they give, or any variable
    holding their password. The password counts on its own because the rest of a DSN may have
    changed under a running release (the same server registered again at a new address
    rewrites the stored host and port without a deploy), and the release still logs in with
    that login; a random password per login stands for the login."""
    gives = get_provider(kind).env_vars(prefix, Credentials(creds))
    if any(variables.get(name) == value for variables in live for name, value in gives.items()):
        return True
    password = str(creds.get("password") or "")
    if len(password) < 16:  # not one of Tether's random secrets: the whole DSN must match
        return False
    forms = {password, quote(password, safe=""), quote_plus(password)}
    return any(form in value for variables in live for value in variables.values()
               for form in forms)


def _busy(s: Session) -> tuple[set[int], set[int]]:
    """Instances with an operation that waits or runs, and environments being deployed."""
    rows = s.execute(select(Operation.instance_id, Operation.environment_id,
                            Operation.kind).where(
        Operation.status.in_(UNFINISHED),
        or_(Operation.instance_id.is_not(None), Operation.kind == "deploy"))).all()
    return ({i for i, _, _ in rows if i is not None},
            {e for _, e, kind in rows if kind == "deploy"})


def revoke_retired(store: Store, box: SecretBox, actor: str, *, instance_id: int | None = None,
                   environment_id: int | None = None, idle_only: bool = False,
                   node_id: str | None = None,
                   say: Callable[[str], None] | None = None) -> RevokeReport:
    """Revoke the retiring credentials (of one instance, of one environment, or of all) that no
    starting or running release has. `idle_only`: leave instances an operation works on, and
    environments being deployed (the reconcile pass; the engine's own callers hold the
    environment's turn already). `node_id`: leave clusters another node runs. `say` gets a line
    per revoke (a deployment's log)."""
    report = RevokeReport()
    plans: list[_Revoke] = []
    current_logins: list[tuple[int, str]] = []
    with store.session() as s:
        q = select(Instance).where(Instance.retiring_credentials_enc.is_not(None))
        if instance_id is not None:
            q = q.where(Instance.id == instance_id)
        if environment_id is not None:
            q = q.where(Instance.environment_id == environment_id)
        busy = _busy(s) if idle_only else (set(), set())
        for inst in s.scalars(q.order_by(Instance.id)):
            if inst.id in busy[0] or inst.environment_id in busy[1]:
                continue
            provider = rotatable(inst.kind)
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            if provider is None or cluster is None:
                continue
            if node_id is not None and cluster.node_id not in (None, node_id):
                continue  # another node's server: that node revokes there
            env = s.get(Environment, inst.environment_id)
            live = _live_variables(s, box, inst.environment_id)
            current = (box.open(inst.credentials_enc) or {}).get("user")
            spec, names = cluster_spec(box, cluster), names_of(inst)
            for creds in retiring(box, inst):
                login = str(creds.get("user"))
                if login == current:  # never the login the instance uses now
                    current_logins.append((inst.id, login))
                elif _used(inst.kind, inst.prefix, creds, live):
                    report.in_use.append((inst.id, inst.prefix, login))
                else:
                    plans.append(_Revoke(inst.id, inst.prefix, env.name if env else "ENV",
                                         provider, spec, names, login,
                                         str(creds.get("password") or "")))
    for inst_id, login in current_logins:
        _forget(store, box, inst_id, login, None)
    for plan in plans:
        try:
            plan.provider.revoke_login(plan.spec, plan.names, plan.login)
        except Exception as exc:
            transient = isinstance(exc, TransientError)
            reason = redact(reason_of(exc), [plan.spec.url, plan.password])
            message = (f"{REVOKE_FAILED} {plan.prefix} (login {plan.login}) failed: {reason}; "
                       "they stay valid until revoked: the next deployment of "
                       f"{plan.environment}, the next rotation or the reconcile pass tries again")
            report.failed.append((plan.instance_id, plan.prefix, plan.login, message, transient))
            _note(store, plan.instance_id, message)
            log.warning("%s", message)
            if say is not None:
                say(message)
            continue
        _forget(store, box, plan.instance_id, plan.login, actor)
        report.revoked.append((plan.instance_id, plan.prefix, plan.login))
        if say is not None:
            say(f"old credentials of {plan.prefix} revoked: login {plan.login} no longer works")
    return report


def _forget(store: Store, box: SecretBox, instance_id: int, login: str,
            actor: str | None) -> None:
    """Take a revoked login off the instance's retiring credentials; audit it (`actor`)."""
    with store.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None:
            return
        left = [c for c in retiring(box, inst) if str(c.get("user")) != login]
        inst.retiring_credentials_enc = box.seal(left) if left else None
        if actor is None:
            return
        if inst.last_error and inst.last_error.startswith(REVOKE_FAILED) and not left:
            inst.last_error = None
        audit(s, actor, "old credentials revoked", instance=inst,
              detail=f"login {login} can no longer log in")


def _note(store: Store, instance_id: int, message: str) -> None:
    with store.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is not None:
            inst.last_error = message


def revoke_after_deploy(parts: EngineParts, deployment_id: int, actor: str) -> None:
    """The deployment hook: right after a successful deployment (its traffic switched, the
    previous release drained and stopped), revoke the retiring credentials of its environment
    that no live release has any more. Best effort: what fails is tried again later."""
    with parts.store.session() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is None:
            return
        environment_id = dep.environment_id

    def say(line: str) -> None:
        with parts.store.session() as s:
            s.add(DeploymentLog(deployment_id=deployment_id, line=line[:4000]))

    revoke_retired(parts.store, parts.box, actor, environment_id=environment_id, say=say)


# -- the rotate operation --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    prefix: str
    environment_id: int
    environment: str
    provider: Rotatable
    spec: ClusterSpec
    names: ResourceNames  # with the current login
    secret: str | None  # the new login's password; None once it is recorded


class Rotation:
    """The handler of `rotate` operations."""

    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts

    def run(self, op: Operation) -> str:
        assert op.instance_id is not None
        plan = self._begin(op.instance_id)
        actor = op.requested_by
        login = plan.names.login
        if plan.secret is not None:
            login = self._make_login(op, plan, actor)
        return self._finish(op, plan, login, actor)

    def _begin(self, instance_id: int) -> _Plan:
        """Read what the rotation needs; refuse (final) when the rules no longer allow it (the
        instance was removed meanwhile...)."""
        refusal: str | None = None
        with self.parts.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None, f"instance {instance_id} does not exist"
            env = s.get(Environment, inst.environment_id)
            env_name = env.name if env is not None else "ENV"
            provider = rotatable(inst.kind)
            decision = lifecycle.decide_rotation(
                State(inst.state), inst.prefix, env_name, in_release=running_release_has(s, inst),
                pending=pending_operation(s, inst))
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            if provider is None:
                refusal = rotation_unsupported(inst.kind)
            elif not decision.allowed:
                refusal = decision.message
            elif cluster is None:
                refusal = f"{inst.prefix} has no cluster: it has no credentials to rotate"
            if refusal is not None:
                inst.rotation_secret_enc = None
                inst.last_error = (f"rotating the credentials of {inst.prefix} was refused: "
                                   f"{refusal}")
            else:
                assert provider is not None and cluster is not None
                secret = (self.parts.box.open(inst.rotation_secret_enc)
                          if inst.rotation_secret_enc else None)
                plan = _Plan(inst.prefix, inst.environment_id, env_name, provider,
                             cluster_spec(self.parts.box, cluster), names_of(inst), secret)
        if refusal is not None:
            raise OperationError(refusal)
        return plan

    def _make_login(self, op: Operation, plan: _Plan, actor: str) -> str:
        """Make the next login with the stored password, then record it as the instance's
        credentials (the old ones retiring). Returns the new login."""
        assert plan.secret is not None
        fresh = plan.names.rotated(plan.names.rotation + 1)
        crash_point("rotate.before_provider")
        try:
            creds = plan.provider.add_login(plan.spec, fresh, plan.secret)
        except Exception as exc:
            reason = redact(reason_of(exc), [plan.secret, plan.spec.url])
            if isinstance(exc, TransientError) and before(op.deadline):
                _note(self.parts.store, op.instance_id or 0,
                      f"rotating the credentials of {plan.prefix}: {reason}; retrying")
                raise TransientError(f"rotating the credentials of {plan.prefix}: {reason}"
                                     ) from None
            self._abandon(op, plan, fresh, reason, actor)
            raise ClusterError(f"rotating the credentials of {plan.prefix} failed: {reason}; "
                               "its credentials are unchanged (retrying is safe: `tether "
                               f"service rotate {plan.environment} {plan.prefix}`)") from None
        crash_point("rotate.after_provider")
        box = self.parts.box
        with self.parts.store.session() as s:
            inst = s.get(Instance, op.instance_id)
            assert inst is not None
            old = box.open(inst.credentials_enc) or {}
            kept = retiring(box, inst)
            if old and old.get("user") != fresh.login and all(
                    c.get("user") != old.get("user") for c in kept):
                kept.append(old)
            inst.retiring_credentials_enc = box.seal(kept) if kept else None
            inst.credentials_enc = box.seal(creds.values)
            inst.secret_enc = box.seal(plan.secret)  # a repair converges to the new login
            inst.rotations = fresh.rotation
            inst.rotation_secret_enc = None
            inst.last_error = None
            audit(s, actor, "credentials rotated", instance=inst,
                  detail=f"new login {fresh.login}; the old one ({old.get('user', 'none')}) "
                         "stays valid until no running release uses it")
        crash_point("rotate.after_record")
        return fresh.login

    def _abandon(self, op: Operation, plan: _Plan, fresh: ResourceNames, reason: str,
                 actor: str) -> None:
        """A final failure: drop whatever of the new login exists, forget its password (kept
        if the drop failed: a retry converges to the same login) and record why."""
        try:
            plan.provider.revoke_login(plan.spec, plan.names, fresh.login)
            dropped = True
        except Exception as exc:
            dropped = False
            log.warning("dropping the unfinished login %s failed: %s", fresh.login,
                        redact(reason_of(exc), [plan.spec.url]))
        with self.parts.store.session() as s:
            inst = s.get(Instance, op.instance_id)
            if inst is None:
                return
            if dropped:
                inst.rotation_secret_enc = None
            inst.last_error = (f"rotating the credentials of {plan.prefix} failed: {reason}; its "
                               "credentials are unchanged")
            audit(s, actor, "rotation failed", instance=inst, detail=reason)

    def _finish(self, op: Operation, plan: _Plan, login: str, actor: str) -> str:
        """Revoke at once what no running release uses; queue a deployment for what one does.
        A revoke that fails is retried (while it may pass) or fails the operation with the
        reason: the old credentials then stay valid, and the next deployment retries."""
        report = revoke_retired(self.parts.store, self.parts.box, actor,
                                instance_id=op.instance_id)
        if report.in_use:  # the deployment revokes them all (what failed here too)
            deployment = self._queue_deployment(op, plan)
            return (f"{plan.prefix} has new credentials (login {login}): deployment "
                    f"{deployment} of {plan.environment} gives them to the application, then "
                    "revokes the old ones")
        for _, _, _, message, transient in report.failed:
            if transient and before(op.deadline):
                raise TransientError(message)
            raise ClusterError(message)
        return f"{plan.prefix} has new credentials (login {login}); the old ones are revoked"

    def _queue_deployment(self, op: Operation, plan: _Plan) -> int:
        """A deployment of the environment, asked by whoever asked the rotation, once per
        operation (recorded on it, so a retry queues no second one); a deployment queued after
        the rotation already gives the new credentials, and is the one."""
        with self.parts.store.session() as s:
            row = s.get(Operation, op.id)
            assert row is not None
            if row.deployment_id is not None:
                return row.deployment_id
            waiting = s.scalar(select(Operation).where(
                Operation.environment_id == plan.environment_id, Operation.kind == "deploy",
                Operation.status == "queued", Operation.id > op.id,
                Operation.deployment_id.is_not(None)).order_by(Operation.id).limit(1))
            if waiting is not None:
                row.deployment_id = waiting.deployment_id
                return int(waiting.deployment_id)  # type: ignore[arg-type]
            dep = Deployment(environment_id=plan.environment_id, requested_by=op.requested_by)
            s.add(dep)
            s.flush()
            s.add(Operation(kind="deploy", environment_id=plan.environment_id,
                            deployment_id=dep.id, requested_by=op.requested_by))
            audit(s, op.requested_by, "deploy requested", environment_id=plan.environment_id,
                  detail=f"deployment {dep.id}: gives {plan.prefix} its new credentials")
            row.deployment_id = dep.id
            return dep.id
