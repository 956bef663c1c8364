"""Tokens, browser sessions and sign-in throttling.

Only a SHA-256 hash of each token is stored. `tether up` makes the first admin token and writes it
to the CLI's config; admins make more with `tether token create` (roles and project scopes:
`tether.access`). A revoked or expired token is refused by the very next call, on every node:
the API keeps who a token is only until anything is written to the store
(`tether.store.readcache`), and checks its expiry on every call.

A browser signs in to the Services view with a token and gets a *session* (`POST
/api/v1/sessions`): a random secret (`tts_...`) kept server-side as a hash, with its expiry, that
the browser sends as a bearer token like the CLI sends its token. It is not the token: signing
out revokes the session at once, and revoking the token ends all its sessions. No cookie is ever
used: cookies ignore ports, so every application on this host would receive it, and browsers
attach cookies to forged requests (which is what CSRF tokens are for; a header that only the
Services view's scripts add needs none).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tether.access import Principal, Role
from tether.errors import Unauthorized
from tether.store.db import Store
from tether.store.models import Token, WebSession, aware

#: how long a browser session lasts (then the browser signs in again)
SESSION_LIFETIME = timedelta(hours=12)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def new_token_secret() -> str:
    return "tth_" + secrets.token_urlsafe(32)


def create_token(store: Store, name: str, role: Role | str = Role.ADMIN, *,
                 owner: str | None = None, projects: list[str] | None = None,
                 expires_at: datetime | None = None, created_by: str | None = None,
                 rename_if_taken: bool = True) -> str:
    """Make a token and return its secret (shown once, never stored). Names are unique among
    live tokens: with `rename_if_taken` (tokens Tether makes itself, e.g. `tether up`'s `admin`)
    a taken name gets a number (`admin-2`); without, a taken name is an IntegrityError."""
    role = Role(role)
    secret = new_token_secret()
    for _attempt in range(5):  # another node may take the same free name at the same moment
        candidate = _free_name(store, name) if rename_if_taken else name
        try:
            with store.session() as s:
                s.add(Token(name=candidate, token_hash=hash_token(secret), role=role.value,
                            owner=owner, projects=projects, expires_at=expires_at,
                            created_by=created_by))
            return secret
        except IntegrityError:
            if not rename_if_taken:
                raise
    raise IntegrityError("token name", None, Exception(f"no free name for token {name!r}"))


def _free_name(store: Store, name: str) -> str:
    """`name`, or `name-N` with the lowest N no live token has (one query, however many)."""
    with store.session() as s:
        taken = set(s.scalars(select(Token.name).where(
            Token.revoked_at.is_(None), (Token.name == name) | Token.name.like(f"{name}-%"))))
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def has_tokens(store: Store) -> bool:
    with store.session() as s:
        return s.scalar(select(Token.id).limit(1)) is not None


def bearer_secret(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, if there is one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def principal_of(token: Token) -> Principal:
    return Principal(name=token.name, role=Role(token.role), owner=token.owner,
                     projects=frozenset(token.projects) if token.projects is not None else None,
                     token_id=token.id)


def _refuse_unusable(token: Token | None, what: str = "token") -> Token:
    """The token, or Unauthorized saying why it cannot be used."""
    if token is None:
        raise Unauthorized(f"invalid {what}: use the token `tether up` wrote to the CLI config, "
                           "or one an admin made with `tether token create`; or set TETHER_TOKEN")
    if token.revoked_at is not None:
        raise Unauthorized(f"the token {token.name!r} was revoked: ask an admin for a new one "
                           "(`tether token create`)")
    expires = aware(token.expires_at)
    if expires is not None and expires <= _now():
        raise Unauthorized(f"the token {token.name!r} expired on {expires:%Y-%m-%d %H:%M} UTC: "
                           "ask an admin for a new one (`tether token create`)")
    return token


def caller_for(store: Store, authorization: str | None) -> SignedIn:
    """Who sent an `Authorization: Bearer ...` header (a token, or a browser session's secret),
    or Unauthorized (401)."""
    secret = bearer_secret(authorization)
    if secret is None:
        raise Unauthorized("missing bearer token: send `Authorization: Bearer TOKEN` "
                           "(the CLI reads it from the config `tether up` writes, or TETHER_TOKEN)")
    if secret.startswith(SESSION_PREFIX):
        return session_for(store, secret)
    with store.session() as s:
        token = _refuse_unusable(s.scalar(select(Token).where(
            Token.token_hash == hash_token(secret))))
        return SignedIn(principal_of(token), expires_at=aware(token.expires_at))


def principal_for(store: Store, authorization: str | None) -> Principal:
    """Who sent an `Authorization: Bearer TOKEN` header, or Unauthorized (401)."""
    return caller_for(store, authorization).principal


def actor_for(store: Store, authorization: str | None) -> str:
    """The audit name of a valid bearer token (Unauthorized otherwise)."""
    return principal_for(store, authorization).actor


# --- Browser sessions (the Services view) ---------------------------------------------------

#: the prefix of session secrets (tokens start with `tth_`)
SESSION_PREFIX = "tts_"


@dataclass(frozen=True)
class SignedIn:
    """Who is calling: the token's principal, and the browser session it came through (None for
    a token sent as it is)."""

    principal: Principal
    session_id: int | None = None
    #: when it stops being valid by itself (the token's or session's expiry, the earlier one;
    #: None: never) — what a caller that keeps it must check on every use
    expires_at: datetime | None = None


@dataclass(frozen=True)
class NewSession:
    id: int
    secret: str
    expires_at: datetime


def create_session(store: Store, token_secret: str, client: str = "") -> NewSession:
    """Sign a browser in with a token: a new session, its secret (shown once) returned.
    Unauthorized when the token is not valid."""
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    with store.session() as s:
        token = _refuse_unusable(s.scalar(select(Token).where(
            Token.token_hash == hash_token(token_secret))))
        expires = _now() + SESSION_LIFETIME
        token_expires = aware(token.expires_at)
        if token_expires is not None:
            expires = min(expires, token_expires)
        row = WebSession(secret_hash=hash_token(secret), token_id=token.id,
                         client=client[:200], expires_at=expires)
        s.add(row)
        s.flush()
        return NewSession(row.id, secret, expires)


def session_for(store: Store, secret: str) -> SignedIn:
    """The signed-in browser of a session secret, or Unauthorized: a session that was signed
    out, revoked or has expired, or whose token was revoked or has expired, is over."""
    with store.session() as s:
        row = s.execute(select(WebSession, Token).join(Token, WebSession.token_id == Token.id)
                        .where(WebSession.secret_hash == hash_token(secret))).first()
        if row is None:
            raise Unauthorized("this browser session is not known (signed out?): sign in again")
        session, token = row
        if session.revoked_at is not None or (aware(session.expires_at) or _now()) <= _now():
            raise Unauthorized("this browser session has ended: sign in again")
        token = _refuse_unusable(token)
        ends = [t for t in (aware(session.expires_at), aware(token.expires_at)) if t is not None]
        return SignedIn(principal_of(token), session.id, min(ends) if ends else None)


# --- Sign-in throttling ------------------------------------------------------------------------

class SignInThrottle:
    """Slows down repeated failed sign-ins from one address: after `free` failures within
    `window` seconds, each further attempt must wait, twice as long after each failure (1 s,
    2 s, 4 s ... at most `ceiling`). A success clears the address. Kept in memory per node:
    tokens are 256-bit random, so this is about noise and policy, not about guessing."""

    def __init__(self, free: int = 5, window: float = 900.0, ceiling: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.window = window
        self.ceiling = ceiling
        self._clock = clock
        self._failures: dict[str, tuple[int, float, float]] = {}  # count, first, wait until
        self._lock = threading.Lock()

    def wait_left(self, address: str) -> float:
        """Seconds this address must still wait before its next attempt (0: go ahead)."""
        with self._lock:
            entry = self._failures.get(address)
            if entry is None:
                return 0.0
            _count, first, until = entry
            now = self._clock()
            if now - first > self.window and now >= until:
                del self._failures[address]
                return 0.0
            return max(0.0, until - now)

    def failed(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            count, first, _ = self._failures.get(address, (0, now, now))
            if now - first > self.window:
                count, first = 0, now
            count += 1
            delay = 0.0 if count < self.free else min(self.ceiling,
                                                       2.0 ** (count - self.free))
            self._failures[address] = (count, first, now + delay)
            if len(self._failures) > 10000:  # bounded memory: forget the oldest addresses
                for key in sorted(self._failures, key=lambda k: self._failures[k][1])[:1000]:
                    del self._failures[key]

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
