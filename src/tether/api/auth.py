"""Bearer tokens. Only a SHA-256 hash of each token is stored; `tether up` makes the first admin
token and writes it to the CLI's config file."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from tether.errors import Unauthorized
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
