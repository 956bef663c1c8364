"""Bearer tokens and browser sessions. Only a SHA-256 hash of each token is stored; `tether up`
makes the first admin token and writes it to the CLI's config file. A browser signed in to the
Services view sends the same token in a cookie, with a CSRF token on every change."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from tether.errors import Unauthorized, UserError
from tether.store.db import Store
from tether.store.models import Token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, name: str) -> str:
    token = "tth_" + secrets.token_urlsafe(32)
    with store.session() as s:
        s.add(Token(name=name, token_hash=hash_token(token)))
    return token


def has_tokens(store: Store) -> bool:
    with store.session() as s:
        return s.scalar(select(Token.id).limit(1)) is not None


def bearer_digest(authorization: str | None) -> str | None:
    """The hash of the token in an `Authorization: Bearer ...` header, if there is one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hash_token(token.strip())


def actor_for(store: Store, authorization: str | None,
              known: dict[str, str] | None = None) -> str:
    """The name of the token in an `Authorization: Bearer ...` header, or Unauthorized.
    `known` caches digests already found (tokens are only ever added, so a hit stays valid)."""
    digest = bearer_digest(authorization)
    if digest is None:
        raise Unauthorized("missing bearer token: send `Authorization: Bearer TOKEN` "
                           "(the CLI reads it from the config `tether up` writes, or TETHER_TOKEN)")
    if known is not None and digest in known:
        return known[digest]
    with store.session() as s:
        name = s.scalar(select(Token.name).where(Token.token_hash == digest))
    if name is None:
        raise Unauthorized("invalid token: use the token `tether up` wrote to the CLI config, "
                           "or set TETHER_TOKEN")
    if known is not None:
        known[digest] = name
    return name


# --- Browser sessions (the Services view) ---------------------------------------------------
# A browser holds the same bearer token as the CLI, but in an HttpOnly cookie so page scripts can
# never read it. Cookies travel with every request, forged ones too, so a cookie-authenticated
# request that changes something must also carry a CSRF token: one that page scripts of this
# origin can read (a non-HttpOnly cookie) and send back in a header, which a foreign site cannot.

SESSION_COOKIE = "tether_session"
CSRF_COOKIE = "tether_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(UserError):
    """A cookie-authenticated request that changes something came without the page's CSRF
    token: it may have been forged by another site (HTTP 403)."""

    code = "csrf_refused"
    status = 403


def csrf_token(token: str) -> str:
    """The CSRF token of a session: an HMAC keyed by the session's own secret token.

    Keying it by the token binds it to the session and makes it unforgeable without the token,
    which never leaves the HttpOnly cookie; it needs no server-side state or key, so it stays
    valid across restarts and on every node sharing the store, exactly as long as the token."""
    return hmac.new(token.encode(), b"tether-csrf-v1", hashlib.sha256).hexdigest()


def check_csrf(token: str, presented: str | None) -> None:
    """Refuse a cookie-authenticated unsafe request whose CSRF header is missing or wrong."""
    if not presented:
        raise CsrfRefused(f"missing {CSRF_HEADER} header: a signed-in browser must send the "
                          f"`{CSRF_COOKIE}` cookie's value with every change (reload the page, "
                          "or sign in again)")
    if not hmac.compare_digest(presented.encode(), csrf_token(token).encode()):
        raise CsrfRefused(f"wrong {CSRF_HEADER} header: it does not belong to this session "
                          "(reload the page, or sign in again)")
