"""An environment's history: the audit trail of its services (every state change, who asked and
when), its variables and its deploys, newest first and in pages (issue 12: "no paging on any
list", history included) — a service's `show` carries its own instance's history in full."""

from __future__ import annotations

from sqlalchemy import select

from tether.access import Need
from tether.actions.common import Context, find_environment, iso
from tether.errors import NotFound
from tether.paging import ALL, Page, PageArgs, keyset
from tether.store.models import AuditEntry, Instance


def list_history(ctx: Context, project: str | None, env_name: str, prefix: str | None = None,
                 page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The environment's audit entries, newest first (a page of them); with `prefix`, only
    those of the services that had it (a removed one and a later one with the same prefix
    alike). Entries never hold a secret (`tether.store.records.audit`)."""
    with ctx.store.session() as s:
        env = find_environment(s, ctx, project, env_name, Need.READ)
        q = select(AuditEntry).where(AuditEntry.environment_id == env.id)
        if prefix is not None:
            ids = list(s.scalars(select(Instance.id).where(Instance.environment_id == env.id,
                                                           Instance.prefix == prefix)))
            if not ids:
                raise NotFound(f"{env.name} has never had a service {prefix}: see "
                               f"`tether service list {env.name} --removed`")
            q = q.where(AuditEntry.instance_id.in_(ids))
        rows, after = keyset(s, q, AuditEntry.id, page, descending=True)
        wanted = {a.instance_id for a in rows if a.instance_id is not None}
        prefixes: dict[int, str] = {
            inst_id: inst_prefix for inst_id, inst_prefix in s.execute(
                select(Instance.id, Instance.prefix).where(Instance.id.in_(wanted)))
        } if wanted else {}
        return Page([{"id": a.id, "at": iso(a.at), "actor": a.actor, "action": a.action,
                      "prefix": prefixes.get(a.instance_id) if a.instance_id else None,
                      "from": a.from_state, "to": a.to_state, "detail": a.detail}
                     for a in rows], after)
