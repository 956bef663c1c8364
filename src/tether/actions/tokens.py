"""Tokens and browser sessions: made, listed and revoked by admins (`tether token ...`); every
signed-in user sees and ends their own sessions. A token's secret is shown once, when it is made."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from tether.access import Need, Role
from tether.actions.common import Context, audit, iso
from tether.api.auth import create_token as _create_token
from tether.errors import Conflict, NotFound, UserError
from tether.paging import ALL, Page, PageArgs, keyset
from tether.store.models import Project, Token, WebSession, aware

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,39}")
MAX_EXPIRY_DAYS = 3650


def _check_name(what: str, value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise UserError(f"invalid {what} {value!r}: 1-40 letters, digits, `.`, `_`, `@` or `-`, "
                        "starting with a letter or digit")
    return value


def token_view(token: Token) -> dict[str, object]:
    now = datetime.now(UTC)
    expires = aware(token.expires_at)
    status = ("revoked" if token.revoked_at else
              "expired" if expires is not None and expires <= now else "active")
    return {"id": token.id, "name": token.name, "role": token.role,
            "owner": token.owner or token.name, "projects": token.projects,
            "status": status, "expires_at": iso(token.expires_at),
            "revoked_at": iso(token.revoked_at), "created_by": token.created_by,
            "created_at": iso(token.created_at)}


def create(ctx: Context, name: str, role: str, projects: list[str] | None = None,
           expires_days: int | None = None, owner: str | None = None) -> dict[str, object]:
    """A new token; the answer holds its secret (`token`), shown this once."""
    ctx.require(Need.ADMIN)
    _check_name("token name", name)
    if owner is not None:
        _check_name("owner", owner)
    try:
        role_ = Role(role)
    except ValueError:
        raise UserError(f"unknown role {role!r}: use admin, developer or viewer") from None
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise UserError(f"invalid expiry: use 1 to {MAX_EXPIRY_DAYS} days")
    if projects is not None and not projects:
        raise UserError("an empty project scope grants nothing: name at least one project, or "
                        "leave the scope out for every project")
    scope = sorted(set(projects)) if projects is not None else None
    if scope is not None and role_ is Role.ADMIN:
        raise UserError("an admin token cannot be limited to projects (it administers "
                        "everything): use --role developer or viewer with --project")
    with ctx.store.session() as s:
        if scope is not None:
            known = set(s.scalars(select(Project.name).where(Project.name.in_(scope))))
            missing = [p for p in scope if p not in known]
            if missing:
                raise NotFound(f"no project named {', '.join(missing)}: see "
                               "`tether project list`")
        if s.scalar(select(Token.id).where(Token.name == name, Token.revoked_at.is_(None))):
            raise Conflict(f"a token named {name} exists already: pick another name, or "
                           f"revoke it first (`tether token revoke {name}`)")
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    try:
        secret = _create_token(ctx.store, name, role_, owner=owner, projects=scope,
                               expires_at=expires, created_by=ctx.actor, rename_if_taken=False)
    except IntegrityError:
        raise Conflict(f"a token named {name} exists already: pick another name") from None
    with ctx.store.session() as s:
        token = s.scalar(select(Token).where(Token.name == name, Token.revoked_at.is_(None)))
        assert token is not None
        audit(s, ctx.actor, "token created",
              detail=f"{name} ({role_.value}"
                     + (f", projects {', '.join(scope)}" if scope else "")
                     + (f", expires {expires:%Y-%m-%d}" if expires else "") + ")")
        view = token_view(token)
    view["token"] = secret
    return view


def list_tokens(ctx: Context, include_revoked: bool = False,
                page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The tokens in the order they were made (a page of them)."""
    ctx.require(Need.ADMIN)
    with ctx.store.session() as s:
        q = select(Token)
        if not include_revoked:
            q = q.where(Token.revoked_at.is_(None))
        rows, after = keyset(s, q, Token.id, page)
        return Page([token_view(t) for t in rows], after)


def revoke(ctx: Context, name: str) -> dict[str, object]:
    """Revoke a live token by name: refused by the very next call, its sessions ended."""
    ctx.require(Need.ADMIN)
    with ctx.store.session() as s:
        token = s.scalar(select(Token).where(Token.name == name, Token.revoked_at.is_(None)))
        if token is None:
            raise NotFound(f"no live token named {name!r}: see `tether token list`")
        now = datetime.now(UTC)
        token.revoked_at = now
        s.execute(update(WebSession).where(WebSession.token_id == token.id,
                                           WebSession.revoked_at.is_(None))
                  .values(revoked_at=now))
        audit(s, ctx.actor, "token revoked", detail=name)
        view = token_view(token)
    if ctx.principal.token_id == view["id"]:
        view["message"] = "you revoked the token you are using: it works no more"
    return view


def _session_view(session: WebSession, token: Token, current: int | None) -> dict[str, object]:
    expires = aware(session.expires_at)
    return {"id": session.id, "token": token.name, "owner": token.owner or token.name,
            "client": session.client, "created_at": iso(session.created_at),
            "expires_at": iso(session.expires_at), "current": session.id == current,
            "active": session.revoked_at is None and expires > datetime.now(UTC)}


def list_sessions(ctx: Context, current: int | None = None,
                  page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The live browser sessions of the asking token (an admin sees everyone's), in the order
    they began (a page of them; their tokens read in one query)."""
    with ctx.store.session() as s:
        q = select(WebSession).where(WebSession.revoked_at.is_(None),
                                     WebSession.expires_at > datetime.now(UTC))
        if not ctx.principal.may(Need.ADMIN):
            q = q.where(WebSession.token_id == ctx.principal.token_id)
        rows, after = keyset(s, q, WebSession.id, page)
        owners = {t.id: t for t in s.scalars(
            select(Token).where(Token.id.in_({w.token_id for w in rows})))} if rows else {}
        return Page([_session_view(w, owners[w.token_id], current) for w in rows], after)


def revoke_session(ctx: Context, session_id: int) -> dict[str, object]:
    """End a browser session at once (its cookie stops working on the next request)."""
    with ctx.store.session() as s:
        row = s.execute(select(WebSession, Token).join(Token, WebSession.token_id == Token.id)
                        .where(WebSession.id == session_id)).first()
        if row is None or not (ctx.principal.may(Need.ADMIN)
                               or row[0].token_id == ctx.principal.token_id):
            raise NotFound(f"no session {session_id}: see the list of sessions")
        session, token = row
        if session.revoked_at is None:
            session.revoked_at = datetime.now(UTC)
            audit(s, ctx.actor, "session revoked", detail=f"session {session_id} of {token.name}")
        return _session_view(session, token, None)
