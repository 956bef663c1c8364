"""Deployments: ask for one (the engine runs it), follow it, list them; and the output of the
release an environment runs (`tether logs`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.access import Need
from tether.actions.common import (
    Context,
    audit,
    find_environment,
    iso,
    operation_view,
    queue_operation,
)
from tether.crypto import SecretBox
from tether.errors import Conflict, NotFound, UserError
from tether.paging import ALL, Page, PageArgs, keyset
from tether.publicids import Kind, public_id
from tether.redact import mask_value
from tether.runtime import logs
from tether.store.models import (
    Deployment,
    DeploymentLog,
    Environment,
    Instance,
    Operation,
    Project,
    Release,
)

#: most lines one call returns
MAX_LOG_LINES = 10000


def deployment_view(s: Session, box: SecretBox, d: Deployment, logs_after: int | None = None
                    ) -> dict[str, object]:
    env = s.get(Environment, d.environment_id)
    view: dict[str, object] = {
        "id": d.id,
        "uuid": public_id(box, Kind.DEPLOYMENT, d.id),
        "project": env.project.name if env else None,
        "environment": env.name if env else None,
        "status": d.status,
        "percent": d.percent,
        "success": d.success,
        "error": d.error,
        "requested_by": d.requested_by,
        "release_id": d.release_id,
        "created_at": iso(d.created_at),
        "started_at": iso(d.started_at),
        "finished_at": iso(d.finished_at),
    }
    if logs_after is not None:
        rows = s.scalars(select(DeploymentLog).where(DeploymentLog.deployment_id == d.id,
                                                     DeploymentLog.id > logs_after)
                         .order_by(DeploymentLog.id))
        view["logs"] = [{"id": r.id, "at": iso(r.at), "line": r.line} for r in rows]
    return view


def deploy(ctx: Context, project: str | None, env_name: str) -> dict[str, object]:
    """Ask for a deployment of the environment; refused while the project has no application
    command (a deploy would start nothing and leave the stable address refusing connections,
    yet say it succeeded)."""
    with ctx.store.session() as s:
        env = find_environment(s, ctx, project, env_name, Need.CHANGE)
        if not env.project.app_command:
            name = env.project.name
            raise Conflict(f"{name} has no application command, so a deploy of {env_name} would "
                           "start nothing: set the command that serves the application on $PORT "
                           f"(`tether project update --project {name} --app-command CMD`), "
                           "then deploy")
        dep = Deployment(environment_id=env.id, requested_by=ctx.actor)
        s.add(dep)
        s.flush()
        op = queue_operation(s, ctx, "deploy", env, deployment_id=dep.id)
        audit(s, ctx.actor, "deploy requested", environment_id=env.id,
              detail=f"deployment {dep.id}")
        view = deployment_view(s, ctx.box, dep)
        view["operation"] = operation_view(op)
    ctx.notify()
    return view


def list_deployments(ctx: Context, project: str | None, env_name: str,
                     page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The environment's deployments, newest first (a page of them)."""
    with ctx.store.session() as s:
        env = find_environment(s, ctx, project, env_name)
        rows, after = keyset(s, select(Deployment).where(Deployment.environment_id == env.id),
                             Deployment.id, page, descending=True)
        return Page([deployment_view(s, ctx.box, d) for d in rows], after)


def visible_deployment_ids(ctx: Context) -> list[int]:
    """The ids of every deployment of the projects the token may read (the candidates when a
    deployment is named by its public id, which is one-way)."""
    with ctx.store.session() as s:
        rows = s.execute(select(Deployment.id, Environment.project_id)
                         .join(Environment, Environment.id == Deployment.environment_id))
        readable: dict[int, bool] = {}
        out = []
        for dep_id, project_id in rows:
            if project_id not in readable:
                project = s.get(Project, project_id)
                readable[project_id] = project is not None and \
                    ctx.principal.may(Need.READ, project.name)
            if readable[project_id]:
                out.append(dep_id)
        return out


def deployment_variables(ctx: Context, deployment_id: int) -> dict[str, str]:
    """The variables the release of a deployment was started with (none when it made no
    release: it failed before starting one). Values in clear for a token that may see the
    project's secrets, masked for one that may not (as `list_variables` without reveal)."""
    with ctx.store.session() as s:
        d = s.get(Deployment, deployment_id)
        if d is None or not _may_read(s, ctx, d.environment_id):
            raise NotFound(f"no deployment {deployment_id}")
        env = s.get(Environment, d.environment_id)
        assert env is not None
        release = s.scalar(select(Release).where(Release.deployment_id == d.id)
                           .order_by(Release.id.desc()).limit(1))
        if release is None:
            return {}
        values = {str(k): str(v) for k, v in (ctx.box.open(release.env_enc) or {}).items()}
        if ctx.principal.may(Need.REVEAL, env.project.name):
            return values
        return {name: mask_value(value) for name, value in values.items()}


def deployment_release(ctx: Context, deployment_id: int) -> dict[str, object]:
    """What a deployment's release had and changed, for its details page: the release's
    variables' names (never their values), the services whose variables it has, and the
    services it attached and detached against the release of the last successful deployment
    before it (a removed service is named too: its history stays). `applied` is false for a
    deployment that did not succeed: it changed nothing (the previous release kept running)."""
    with ctx.store.session() as s:
        d = s.get(Deployment, deployment_id)
        if d is None or not _may_read(s, ctx, d.environment_id):
            raise NotFound(f"no deployment {deployment_id}")
        release = s.scalar(select(Release).where(Release.deployment_id == d.id)
                           .order_by(Release.id.desc()).limit(1))
        view: dict[str, object] = {"deployment_id": d.id, "applied": bool(d.success),
                                   "release_id": None, "command": None, "variables": [],
                                   "services": [], "attached": [], "detached": []}
        if release is None:
            return view
        before = s.scalar(select(Release).join(Deployment, Deployment.id == Release.deployment_id)
                          .where(Release.environment_id == d.environment_id,
                                 Release.id < release.id, Deployment.success.is_(True))
                          .order_by(Release.id.desc()).limit(1))
        now = set(release.instance_ids or [])
        then = set(before.instance_ids or []) if before is not None else set()
        instances = {i.id: i for i in s.scalars(select(Instance).where(
            Instance.id.in_(sorted(now | then))))}

        def named(ids: set[int]) -> list[dict[str, object]]:
            return [{"prefix": i.prefix, "service": i.service, "state": i.state}
                    for i in sorted((instances[n] for n in ids if n in instances),
                                    key=lambda i: (i.prefix, i.id))]

        view.update(release_id=release.id, command=release.command,
                    previous_release_id=before.id if before is not None else None,
                    variables=sorted(release.variable_names or []), services=named(now),
                    attached=named(now - then), detached=named(then - now))
        return view


def _may_read(s: Session, ctx: Context, environment_id: int) -> bool:
    """Whether the token may read the project of this environment. A deployment or operation
    of a project it is not granted is answered like one that does not exist (its id says
    nothing about the project, so a 403 would only confirm that it exists)."""
    env = s.get(Environment, environment_id)
    return env is not None and ctx.principal.may(Need.READ, env.project.name)


def get_deployment(ctx: Context, deployment_id: int,
                   logs_after: int | None = 0) -> dict[str, object]:
    with ctx.store.session() as s:
        d = s.get(Deployment, deployment_id)
        if d is None or not _may_read(s, ctx, d.environment_id):
            raise NotFound(f"no deployment {deployment_id}")
        return deployment_view(s, ctx.box, d, logs_after=logs_after)


def get_operation(ctx: Context, operation_id: int) -> dict[str, object]:
    with ctx.store.session() as s:
        op = s.get(Operation, operation_id)
        if op is None or not _may_read(s, ctx, op.environment_id):
            raise NotFound(f"no operation {operation_id}")
        return operation_view(op)


def _parse_cursor(after: str) -> tuple[int, logs.Position | None]:
    """A cursor is `RELEASE.INODE.HEAD.OFFSET` (see `logs.Position`), as `app_logs` returned
    it."""
    release, _, position = after.partition(".")
    try:
        return int(release), logs.Position.parse(position)
    except ValueError:
        raise UserError(f"invalid log cursor {after!r}: pass the `cursor` a previous call "
                        "returned, or leave it out") from None


def app_logs(ctx: Context, project: str | None, env_name: str, lines: int = 100,
             after: str | None = None) -> dict[str, object]:
    """The output of the environment's running release, from its log files: the last `lines`
    lines, or (with `after`, a cursor from a previous answer) the lines written since, at most
    `MAX_LOG_LINES` at a time. After a deploy, a cursor of the previous release continues with
    the new release's output from its start. `missed` says that lines were rotated away before
    they were read."""
    if not 0 <= lines <= MAX_LOG_LINES:
        raise UserError(f"lines must be between 0 and {MAX_LOG_LINES}")
    with ctx.store.session() as s:
        env = find_environment(s, ctx, project, env_name)
        key = f"{env.project.name}/{env.name}"
        release = s.get(Release, env.current_release_id) if env.current_release_id else None
        release_id = release.id if release else None
        path = Path(release.log_path) if release and release.log_path else None
        view: dict[str, object] = {
            "project": env.project.name, "environment": env.name, "release_id": release_id,
            "release_status": release.status if release else None,
            "node_id": release.node_id if release else None,
        }
    cursor_release, position = _parse_cursor(after) if after else (None, None)
    chunk = logs.Chunk([], None)
    note = None
    if release_id is None:
        note = f"no release of {key} runs yet: deploy it with `tether deploy {env_name}`"
    elif path is None:
        note = f"release {release_id} of {key} has no log file (it runs no application)"
    elif not any(p.exists() for p in logs.log_files(path)):
        where = f" (it runs on node {view['node_id']})" if view["node_id"] else ""
        note = f"the log of release {release_id} of {key} is not on this node{where}"
    elif after is None:
        chunk = logs.read_tail(path, lines)
    else:
        same = cursor_release == release_id
        chunk = logs.read_after(path, position if same else None, MAX_LOG_LINES)
    if chunk.position is None and cursor_release == release_id:
        chunk.position = position
    view["lines"] = [entry.as_dict() for entry in chunk.lines]
    view["cursor"] = f"{release_id or 0}." + (chunk.position.token() if chunk.position
                                               else "0.0.0")
    view["missed"] = chunk.missed
    if note:
        view["note"] = note
    return view
