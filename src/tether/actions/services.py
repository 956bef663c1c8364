"""Service instances: add, provision, detach, attach, remove, rotate, list, show.

Each action validates, asks `tether.lifecycle.decide`, and records the state change, the audit
entry and (when work is needed) an operation, in one transaction. The engine does the work."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

from tether import catalog, lifecycle, naming
from tether.access import Need
from tether.actions.clusters import cluster_infos, safe_location
from tether.actions.common import (
    Context,
    audit,
    find_environment,
    get_project,
    iso,
    latest_instance,
    live_instance,
    operation_view,
    queue_operation,
)
from tether.envvars import instance_var_names, vars_of
from tether.errors import Conflict, NotFound, UserError
from tether.lifecycle import Action, State
from tether.paging import ALL, Page, PageArgs, keyset
from tether.providers.base import Rotatable, rotation_unsupported
from tether.providers.registry import get_provider
from tether.publicids import Kind, public_id
from tether.store.models import (
    AuditEntry,
    Cluster,
    Environment,
    Instance,
    Operation,
    Project,
    Variable,
)
from tether.store.records import (
    UNFINISHED,
    InstanceFacts,
    add_new,
    apply_decision,
    new_secret,
    pending_operation,
    running_release_has,
    shared_cluster,
    unfinished,
)


def catalog_view(ctx: Context, region: str | None, project: str | None) -> list[dict[str, object]]:
    with ctx.store.session() as s:
        if region is None:
            region = get_project(s, project, ctx).region
        return [
            {"service": o.service, "uuid": public_id(ctx.box, Kind.SERVICE, o.service),
             "kind": o.kind, "version": o.version, "region": o.region,
             "shared": o.shared, "private": o.private}
            for o in catalog.offers(cluster_infos(s), region)
        ]


def instance_view(s: Session, ctx: Context, inst: Instance, reveal: bool = False,
                  operation: Operation | None = None,
                  facts: InstanceFacts | None = None) -> dict[str, object]:
    """An instance as the API shows it; `operation` is the one just queued, if the caller knows
    it (else the instance's unfinished operation is looked up). A list passes the `facts` of all
    its instances, loaded at once (a fixed number of queries for any number of instances)."""
    facts = facts or InstanceFacts.load(s, [inst])
    state = State(inst.state)
    env = facts.environments.get(inst.environment_id)
    env_name = env.name if env is not None else "ENV"

    in_release = facts.in_release(inst)
    waiting = facts.pending(inst)

    def action_view(action: Action) -> dict[str, object]:
        """Whether `action` is allowed now, whether it would change anything (a new state or
        work for the engine), and the lifecycle's message: the reason when refused or a no-op,
        else what it will do."""
        decision = lifecycle.decide(state, action, inst.prefix, env_name,
                                    in_release=in_release, pending=waiting)
        changes = decision.allowed and (decision.operation is not None or (
            decision.target is not None and decision.target != state))
        return {"allowed": decision.allowed, "changes": changes, "message": decision.message}

    def rotate_view() -> dict[str, object]:
        if not _rotatable(inst):
            return {"allowed": False, "changes": False,
                    "message": rotation_unsupported(inst.kind)}
        decision = lifecycle.decide_rotation(state, inst.prefix, env_name,
                                             in_release=in_release, pending=waiting)
        return {"allowed": decision.allowed, "changes": decision.allowed,
                "message": decision.message}

    cluster = facts.cluster(inst)
    creds = ctx.box.open(inst.credentials_enc)  # opened once: its variables and its login
    variables = vars_of(inst, creds)
    pending = operation or facts.unfinished(inst)
    return {
        "id": inst.id,
        "uuid": public_id(ctx.box, Kind.INSTANCE, inst.id),
        "prefix": inst.prefix,
        "service": inst.service,
        "kind": inst.kind,
        "state": inst.state,
        "meaning": lifecycle.MEANING[state],
        "functional": state in lifecycle.FUNCTIONAL,
        "usable": in_release,
        "visibility": "private" if inst.private else "shared",
        "cluster": None if cluster is None else {
            "id": cluster.id, "name": cluster.name,
            "location": safe_location(ctx.box.open(cluster.url_enc)),
        },
        "last_error": inst.last_error,
        # what the last observation of the real server found different (None: as it should be)
        "drift": inst.drift,
        "observed_at": iso(inst.observed_at),
        "variables": variables if reveal else {k: "********" for k in variables},
        "operation": operation_view(pending) if pending else None,
        # What each user action would do now, as the lifecycle rules decide it, so that clients
        # (the Services view) offer exactly what the API accepts and say why not otherwise:
        # `allowed` False is a refusal; `changes` False an allowed no-op ("already attached").
        "actions": {**{action.value: action_view(action) for action in
                       (Action.PROVISION, Action.DETACH, Action.ATTACH, Action.REMOVE)},
                    "rotate": rotate_view()},
        # how many times its credentials were rotated, the login they use, and the logins of
        # earlier credentials that stay valid until no running release uses them (names only)
        "rotations": inst.rotations or 0,
        "login": (creds or {}).get("user"),
        "retiring_logins": [str(c.get("user"))
                            for c in ctx.box.open(inst.retiring_credentials_enc) or []],
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
    }


def _rotatable(inst: Instance) -> bool:
    return isinstance(get_provider(inst.kind), Rotatable)


def _env(s: Session, ctx: Context, project: str | None, env: str,
         need: Need = Need.CHANGE) -> Environment:
    return find_environment(s, ctx, project, env, need)


def _require(s: Session, env: Environment, prefix: str) -> Instance:
    inst = latest_instance(s, env, naming.check_prefix(prefix))
    if inst is None:
        raise NotFound(f"no service with prefix {prefix} in {env.name}: "
                       f"see `tether service list {env.name}`")
    return inst


def _refuse_unless(decision: lifecycle.Decision) -> None:
    if not decision.allowed:
        raise Conflict(decision.message)


def _decide(s: Session, env: Environment, inst: Instance, action: Action) -> lifecycle.Decision:
    """Ask the rules with the whole truth: the recorded state, whether the running release has
    the instance, and which of its operations waits."""
    return lifecycle.decide(State(inst.state), action, inst.prefix, env.name,
                            in_release=running_release_has(s, inst),
                            pending=pending_operation(s, inst))


_LIVE = aliased(Instance)
#: what an add to ENV of PROJECT under PREFIX reads, in one statement: the environment, its
#: project, the live instance with that prefix (if any) and the names of the environment's
#: custom variables (joined by ",", which no name contains; NULL: none)
_ADDING_TO = (
    select(Environment, Project, _LIVE,
           select(func.aggregate_strings(Variable.name, ","))
           .where(Variable.environment_id == Environment.id).scalar_subquery())
    .join(Project, Environment.project_id == Project.id)
    .outerjoin(_LIVE, and_(_LIVE.environment_id == Environment.id,
                           _LIVE.prefix == bindparam("prefix"),
                           _LIVE.state != State.REMOVED.value))
    .where(Project.name == bindparam("project"), Environment.name == bindparam("env")))


@dataclass(frozen=True)
class AddingTo:
    """What an add checks in the environment it adds to, read with it (`_adding_to`)."""

    live: Instance | None
    custom: frozenset[str]


def _adding_to(s: Session, ctx: Context, project: str | None, env_name: str,
               prefix: str) -> tuple[Environment, AddingTo | None]:
    """The environment an add changes, with what it checks there (`AddingTo`) in the same
    statement when the project is named and both exist; else as `_env` finds it (None: the
    add reads the rest itself)."""
    if project:
        found = s.execute(_ADDING_TO, {"project": project, "env": env_name,
                                       "prefix": prefix}).first()
        if found is not None:
            env, owner, live, names = found
            ctx.require(Need.CHANGE, owner.name)
            set_committed_value(env, "project", owner)
            return env, AddingTo(live, frozenset(names.split(",")) if names else frozenset())
    return _env(s, ctx, project, env_name), None


def add_instance(s: Session, ctx: Context, env: Environment, service: str,
                 prefix: str = "DEFAULT", private: bool = False,
                 provision: bool = False, known: AddingTo | None = None) -> Instance:
    """Add SERVICE to `env` under `prefix` (state `new`), with its audit entry, in the caller's
    session: the rules of an add, shared by `add` and by `tether project create`'s default
    database (the environment is the caller's to find, and its right to change it). SERVICE is
    resolved as the user wrote it (`postgres` is the newest `postgres-N`).

    With `provision`, the rules' answer to provisioning the new instance is applied before it is
    written: one INSERT in the state it leads to (`provisioning`), the add's audit entry then
    the provision's, as if provisioned right after the add, with its shared cluster and its
    secret (the provision's plan); the caller queues the operation. `known`: the live instance
    and custom variables, read with the environment (else they are read here)."""
    naming.check_prefix(prefix)
    offer = catalog.resolve(cluster_infos(s), env.project.region, service, private)
    custom = (known.custom if known is not None else
              set(s.scalars(select(Variable.name).where(Variable.environment_id == env.id))))
    shadowed = custom & set(instance_var_names(Instance(kind=offer.kind, prefix=prefix)))
    if shadowed:
        raise Conflict(f"the custom variable {', '.join(sorted(shadowed))} would shadow a "
                       f"variable of {prefix}: unset it first or pick another prefix")
    current = known.live if known is not None else live_instance(s, env, prefix)
    decision = lifecycle.decide(State(current.state) if current else None, Action.ADD,
                                prefix, env.name)
    _refuse_unless(decision)
    then = None
    if provision:
        # a new instance: no release has it, no operation of its waits (nothing to look up)
        provisioning = lifecycle.decide(State.NEW, Action.PROVISION, prefix, env.name,
                                        in_release=False, pending=None)
        _refuse_unless(provisioning)
        assert provisioning.operation == "provision"  # the caller queues it
        then = (Action.PROVISION.value, provisioning)
    inst = Instance(environment_id=env.id, service=offer.service, kind=offer.kind,
                    prefix=prefix, private=private)
    if then is not None and not private:
        # its provision's plan (cluster and secret) written with it, not by an UPDATE of the
        # plan right after: the shared cluster among the clusters just read (a private one
        # may mean starting a server: its handler chooses)
        shared = shared_cluster(s, offer.kind, offer.service, env.project.region)
        if shared is not None:
            inst.cluster_id, inst.secret_enc = shared.id, new_secret(ctx.box)
    try:
        add_new(s, ctx.actor, inst, f"{offer.service} ({'private' if private else 'shared'})",
                then)
    except IntegrityError as exc:  # a concurrent add of the same prefix
        raise Conflict(f"{prefix} already exists in {env.name}: pick another prefix") from exc
    return inst


def add(ctx: Context, project: str | None, env_name: str, service: str, prefix: str = "DEFAULT",
        private: bool = False, provision: bool = False,
        brief: bool = False) -> dict[str, object]:
    """Add a service (and queue its provision). With `brief`, when an operation was queued, the
    answer is only the instance's id and prefix and the operation: for a caller that waits for
    the operation and then reads the instance again (`after_operation`), the full view would be
    made for nothing."""
    naming.check_prefix(prefix)
    with ctx.store.session() as s:
        env, known = _adding_to(s, ctx, project, env_name, prefix)
        inst = add_instance(s, ctx, env, service, prefix, private, provision, known)
        op = queue_operation(s, ctx, "provision", env, inst) if provision else None
        if op is not None and brief:
            view = _brief(inst, op)
        else:
            chosen = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None  # held
            view = instance_view(s, ctx, inst, operation=op,
                                 facts=InstanceFacts.of_new(env, inst, op, chosen))
            view["operation"] = operation_view(op) if op else None
    if op:
        ctx.notify()
    return view


def _brief(inst: Instance, op: Operation) -> dict[str, object]:
    return {"id": inst.id, "prefix": inst.prefix, "operation": operation_view(op)}


def _provision(s: Session, ctx: Context, env: Environment, inst: Instance) -> Operation | None:
    """Provision `inst`: the rules asked, its state and audit entry, its operation queued."""
    decision = _decide(s, env, inst, Action.PROVISION)
    _refuse_unless(decision)
    if decision.operation is None:
        return unfinished(s, inst, "provision")
    apply_decision(s, ctx.actor, "provision", inst, decision)
    return queue_operation(s, ctx, "provision", env, inst)


def provision(ctx: Context, project: str | None, env_name: str, prefix: str,
              brief: bool = False) -> dict[str, object]:
    """Provision a `new` instance (queue its operation); `brief` as for `add`."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name)
        inst = _require(s, env, prefix)
        op = _provision(s, ctx, env, inst)
        if op is not None and brief:
            view = _brief(inst, op)
        else:
            view = instance_view(s, ctx, inst)
            view["operation"] = operation_view(op) if op else None
    if op:
        ctx.notify()
    return view


def _simple(ctx: Context, project: str | None, env_name: str, prefix: str,
            action: Action) -> dict[str, object]:
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name)
        inst = _require(s, env, prefix)
        decision = _decide(s, env, inst, action)
        _refuse_unless(decision)
        apply_decision(s, ctx.actor, action.value, inst, decision)
        view = instance_view(s, ctx, inst)
        view["message"] = decision.message
        return view


def detach(ctx: Context, project: str | None, env_name: str, prefix: str) -> dict[str, object]:
    return _simple(ctx, project, env_name, prefix, Action.DETACH)


def attach(ctx: Context, project: str | None, env_name: str, prefix: str) -> dict[str, object]:
    return _simple(ctx, project, env_name, prefix, Action.ATTACH)


def remove(ctx: Context, project: str | None, env_name: str, prefix: str,
           confirm: str | None) -> dict[str, object]:
    """Rule 3: destructive, refused while attached, and only with the prefix typed again."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name)
        inst = _require(s, env, prefix)
        decision = _decide(s, env, inst, Action.REMOVE)
        _refuse_unless(decision)
        if decision.operation is None:
            view = instance_view(s, ctx, inst)
            view["message"] = decision.message
            return view
        if confirm != prefix:
            raise UserError(f"removing {prefix} deletes its data for good: confirm with "
                            f"`--confirm {prefix}`")
        op = unfinished(s, inst, "remove")
        if op is None:
            op = queue_operation(s, ctx, "remove", env, inst)
            audit(s, ctx.actor, "remove requested", instance=inst, from_state=inst.state,
                  detail="data will be deleted for good")
        view = instance_view(s, ctx, inst)
        view["operation"] = operation_view(op)
        view["message"] = decision.message
    ctx.notify()
    return view


def rotate(ctx: Context, project: str | None, env_name: str, prefix: str) -> dict[str, object]:
    """New credentials without downtime: the engine makes a second login, deploys the
    environment with it when the running release uses the instance, then revokes the old one.
    Asking again while a rotation waits or runs answers with that rotation."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name)
        inst = _require(s, env, prefix)
        if not _rotatable(inst):
            raise UserError(f"{rotation_unsupported(inst.kind)}; {prefix} is a {inst.kind} "
                            "service")
        ongoing = unfinished(s, inst)
        if ongoing is not None and ongoing.kind == "rotate":
            view = instance_view(s, ctx, inst, operation=ongoing)
            view["message"] = f"the credentials of {prefix} are being rotated already"
            return view
        decision = lifecycle.decide_rotation(State(inst.state), inst.prefix, env.name,
                                             in_release=running_release_has(s, inst),
                                             pending=pending_operation(s, inst))
        _refuse_unless(decision)
        if ongoing is not None:
            raise Conflict(f"{prefix} has a {ongoing.kind} operation {ongoing.status}: wait for "
                           f"it (`tether service wait {env.name} {prefix}`), then rotate")
        # chosen and kept before the engine makes the login, so every retry converges to it
        inst.rotation_secret_enc = ctx.box.seal(secrets.token_urlsafe(24))
        op = queue_operation(s, ctx, "rotate", env, inst)
        audit(s, ctx.actor, "rotate requested", instance=inst, detail=decision.message)
        view = instance_view(s, ctx, inst, operation=op)
        view["message"] = decision.message
    ctx.notify()
    return view


def list_instances(ctx: Context, project: str | None, env_name: str,
                   include_removed: bool = False,
                   page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The environment's instances in the order they were added (a page of them)."""
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.READ)
        q = select(Instance).where(Instance.environment_id == env.id)
        if not include_removed:
            q = q.where(Instance.state != State.REMOVED.value)
        rows, after = keyset(s, q, Instance.id, page)
        facts = InstanceFacts.load(s, rows)
        return Page([instance_view(s, ctx, i, facts=facts) for i in rows], after)


_OTHER = aliased(Operation)
#: an operation with its instance, environment, project and cluster, and whether an operation
#: of that instance still waits or runs (the answer's view needs nothing else when none does
#: and no release runs in the environment)
_OPERATION_WITH_ITS_INSTANCE = (
    select(Operation, Instance, Environment, Project, Cluster,
           exists().where(_OTHER.instance_id == Instance.id, _OTHER.status.in_(UNFINISHED)))
    .join(Instance, Operation.instance_id == Instance.id)
    .join(Environment, Instance.environment_id == Environment.id)
    .join(Project, Environment.project_id == Project.id)
    .outerjoin(Cluster, Instance.cluster_id == Cluster.id)
    .where(Operation.id == bindparam("op")))


def after_operation(ctx: Context, project: str | None, env_name: str, prefix: str,
                    operation_id: int) -> dict[str, object]:
    """The instance as `add` and `provision` answer, with operation `operation_id` (one of
    its) as it is now: the answer of a call that waited for the operation it queued.

    The operation, its instance, environment, project and cluster, and whether another of its
    operations waits, come in one statement: when none waits and no release runs in the
    environment (the usual answer to a waited add), that is all the view needs; else it asks
    for what the release has and what waits."""
    with ctx.store.session() as s:
        found = s.execute(_OPERATION_WITH_ITS_INSTANCE, {"op": operation_id}).first()
        if found is not None:
            op, inst, env, owner, cluster, waiting = found
            if ((project is None or owner.name == project) and env.name == env_name
                    and inst.prefix == naming.check_prefix(prefix)):
                ctx.require(Need.READ, owner.name)
                set_committed_value(env, "project", owner)
                idle = not waiting and env.current_release_id is None
                view = instance_view(s, ctx, inst, facts=InstanceFacts.of_idle(
                    env, cluster) if idle else None)
                view["operation"] = operation_view(op)
                return view
        env = _env(s, ctx, project, env_name, Need.READ)
        inst = _require(s, env, prefix)
        view = instance_view(s, ctx, inst)
        view["operation"] = None  # not an operation of this instance
        return view


def show(ctx: Context, project: str | None, env_name: str, prefix: str,
         reveal: bool = False) -> dict[str, object]:
    with ctx.store.session() as s:
        env = _env(s, ctx, project, env_name, Need.REVEAL if reveal else Need.READ)
        inst = _require(s, env, prefix)
        view = instance_view(s, ctx, inst, reveal=reveal)
        view["history"] = [
            {"at": iso(a.at), "actor": a.actor, "action": a.action, "from": a.from_state,
             "to": a.to_state, "detail": a.detail}
            for a in s.scalars(select(AuditEntry).where(AuditEntry.instance_id == inst.id)
                               .order_by(AuditEntry.id))
        ]
        return view
