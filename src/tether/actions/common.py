"""What every action needs: the context (store, secrets, who is asking), look-ups that turn names
into rows with helpful errors, and the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tether.access import SYSTEM, Need, Principal
from tether.crypto import SecretBox
from tether.errors import NotFound, UserError
from tether.frontdoor import FrontDoor
from tether.lifecycle import State
from tether.store.db import Store
from tether.store.models import Environment, Instance, Operation, Project, aware
from tether.store.records import audit as audit  # re-exported: every action module records


def _nothing() -> None:
    return None


@dataclass
class Context:
    """Everything an action may touch. `principal` is the token that asked (its role and
    project scope decide what it may do: `tether.access`); `actor` is how the audit trail and
    the history name it."""

    store: Store
    box: SecretBox
    data_dir: Path
    actor: str = "system"
    #: called after an action queued an operation, so the worker wakes at once
    notify: Callable[[], None] = field(default=_nothing)
    #: where Tether serves local media files, e.g. http://127.0.0.1:8070/media/
    public_url: str = "http://127.0.0.1:8070/"
    principal: Principal = SYSTEM
    #: the front door that reaches environments by host name, when one is open
    front_door: FrontDoor | None = None
    #: a call that waits for the operation it queues (`POST …?wait=`) claims it for this
    #: node in the transaction that queues it (`Worker.claim_in`), and then runs it itself
    claim: Callable[[Session, Operation], None] | None = None

    def as_principal(self, principal: Principal) -> Context:
        """This context, asked by `principal` (one per API call)."""
        return Context(self.store, self.box, self.data_dir, principal.actor, self.notify,
                       self.public_url, principal, self.front_door, self.claim)

    def require(self, need: Need, project: str | None = None) -> None:
        """Refuse (403) unless the token that asked may do `need` (in `project`)."""
        self.principal.require(need, project)


def iso(dt: datetime | None) -> str | None:
    """A stored moment as the API shows it: ISO 8601 with its UTC offset. SQLite gives stored
    moments back without one; a browser would read such a time as its own local time."""
    return aware(dt).isoformat() if dt else None


def get_project(s: Session, name: str | None, ctx: Context | None = None,
                need: Need = Need.READ) -> Project:
    """The project by name; with no name, the only project (SPEC: else the only project).

    With `ctx`, the token that asked must be allowed `need` in it (else 403), and "the only
    project" counts only the projects it is granted."""
    if name:
        project = s.scalar(_PROJECT_BY_NAME, {"project": name})
        if project is None:
            raise NotFound(f"no project named {name!r}: see `tether project list`")
        if ctx is not None:
            ctx.require(need, project.name)
        return project
    projects = [p for p in s.scalars(select(Project)).all()
                if ctx is None or ctx.principal.sees(p.name)]
    if len(projects) == 1 and ctx is not None:
        ctx.require(need, projects[0].name)
    if len(projects) == 1:
        return projects[0]
    if not projects:
        raise UserError("there is no project yet: create one with `tether project create NAME`")
    raise UserError(
        "several projects exist: name one with -p/--project NAME or TETHER_PROJECT "
        f"({', '.join(p.name for p in projects)})"
    )


# The hot paths' look-ups, built once: a statement built at each call costs its construction
# and its cache key again (about 0.1 ms each on the benchmark machine), every request.
_PROJECT_BY_NAME = select(Project).where(Project.name == bindparam("project"))
_ENVIRONMENT_BY_NAMES = (select(Environment, Project)
                         .join(Project, Environment.project_id == Project.id)
                         .where(Project.name == bindparam("project"),
                                Environment.name == bindparam("env")))
_ENVIRONMENT_OF_PROJECT = select(Environment).where(Environment.project_id == bindparam("project"),
                                                    Environment.name == bindparam("env"))
_LIVE_INSTANCE = select(Instance).where(Instance.environment_id == bindparam("env"),
                                        Instance.prefix == bindparam("prefix"),
                                        Instance.state != State.REMOVED.value)
_LATEST_INSTANCE = (select(Instance)
                    .where(Instance.environment_id == bindparam("env"),
                           Instance.prefix == bindparam("prefix"))
                    .order_by(Instance.id.desc()).limit(1))


def find_environment(s: Session, ctx: Context | None, project: str | None, name: str,
                     need: Need = Need.READ) -> Environment:
    """`get_environment(s, get_project(s, project, ctx, need), name)`, in one statement when the
    project is named and both exist (every request that names an environment asks this); the
    same answers and errors otherwise."""
    if project:
        found = s.execute(_ENVIRONMENT_BY_NAMES, {"project": project, "env": name}).first()
        if found is not None:
            env, owner = found
            if ctx is not None:
                ctx.require(need, owner.name)
            set_committed_value(env, "project", owner)
            return env  # type: ignore[no-any-return]
    return get_environment(s, get_project(s, project, ctx, need), name)


def get_environment(s: Session, project: Project, name: str) -> Environment:
    env = s.scalar(_ENVIRONMENT_OF_PROJECT, {"project": project.id, "env": name})
    if env is None:
        names = ", ".join(e.name for e in project.environments)
        raise NotFound(f"project {project.name} has no environment {name!r}: it has {names}")
    # its project is the one at hand: `env.project` would otherwise be loaded again once the
    # caller dropped `project` (the session keeps only objects something refers to)
    set_committed_value(env, "project", project)
    return env


def live_instance(s: Session, env: Environment, prefix: str) -> Instance | None:
    return s.scalar(_LIVE_INSTANCE, {"env": env.id, "prefix": prefix})


def latest_instance(s: Session, env: Environment, prefix: str) -> Instance | None:
    """The live instance with this prefix, else the most recently removed one."""
    found = live_instance(s, env, prefix)
    if found is None:
        found = s.scalar(_LATEST_INSTANCE, {"env": env.id, "prefix": prefix})
    return found


def queue_operation(s: Session, ctx: Context, kind: str, env: Environment,
                    instance: Instance | None = None,
                    deployment_id: int | None = None) -> Operation:
    op = Operation(
        kind=kind,
        environment_id=env.id,
        instance_id=instance.id if instance else None,
        deployment_id=deployment_id,
        requested_by=ctx.actor,
    )
    s.add(op)
    s.flush()
    if ctx.claim is not None:
        ctx.claim(s, op)
    return op


def operation_view(op: Operation) -> dict[str, object]:
    return {
        "id": op.id,
        "kind": op.kind,
        "status": op.status,
        "environment_id": op.environment_id,
        "instance_id": op.instance_id,
        "deployment_id": op.deployment_id,
        "backup_id": op.backup_id,
        "progress": op.progress,
        "message": op.message,
        "error": op.error,
        "requested_by": op.requested_by,
        "created_at": iso(op.created_at),
        "started_at": iso(op.started_at),
        "finished_at": iso(op.finished_at),
    }
