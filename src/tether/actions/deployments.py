"""Deployments: ask for one (the engine runs it), follow it, list them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.actions.common import (
    Context,
    audit,
    get_environment,
    get_project,
    iso,
    operation_view,
    queue_operation,
)
from tether.errors import NotFound
from tether.store.models import Deployment, DeploymentLog, Environment, Operation


def deployment_view(s: Session, d: Deployment, logs_after: int | None = None
                    ) -> dict[str, object]:
    env = s.get(Environment, d.environment_id)
    view: dict[str, object] = {
        "id": d.id,
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
    with ctx.store.session() as s:
        env = get_environment(s, get_project(s, project), env_name)
        dep = Deployment(environment_id=env.id, requested_by=ctx.actor)
        s.add(dep)
        s.flush()
        op = queue_operation(s, ctx, "deploy", env, deployment_id=dep.id)
        audit(s, ctx.actor, "deploy requested", environment_id=env.id,
              detail=f"deployment {dep.id}")
        view = deployment_view(s, dep)
        view["operation"] = operation_view(op)
    ctx.notify()
    return view


def list_deployments(ctx: Context, project: str | None, env_name: str,
                     limit: int = 20) -> list[dict[str, object]]:
    with ctx.store.session() as s:
        env = get_environment(s, get_project(s, project), env_name)
        rows = s.scalars(select(Deployment).where(Deployment.environment_id == env.id)
                         .order_by(Deployment.id.desc()).limit(limit))
        return [deployment_view(s, d) for d in rows]


def get_deployment(ctx: Context, deployment_id: int, logs_after: int = 0) -> dict[str, object]:
    with ctx.store.session() as s:
        d = s.get(Deployment, deployment_id)
        if d is None:
            raise NotFound(f"no deployment {deployment_id}")
        return deployment_view(s, d, logs_after=logs_after)


def get_operation(ctx: Context, operation_id: int) -> dict[str, object]:
    with ctx.store.session() as s:
        op = s.get(Operation, operation_id)
        if op is None:
            raise NotFound(f"no operation {operation_id}")
        return operation_view(op)
