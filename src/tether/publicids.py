"""Stable public ids (UUIDs) for Tether's objects, as the Divio API shows them.

A public id is `uuid5(NAMESPACE, "<kind>:<key>")`, where NAMESPACE is derived from the
installation's secret key (`SecretBox.derive_id`) and `<key>` is the row's primary key (the
name for regions and catalog services, whose names are their keys). Nothing is stored, so no
migration is needed, and the id is the same on every node and after every restart: the key, the
kind and the row's key never change (rows are never renumbered, and projects, environments and
instances are never deleted, only marked removed). Another installation (another key) gives other
ids, so an id tells nothing about the row numbers of this one.

The reverse is a look-up among the rows of that kind (uuid5 is one-way): `find` computes the ids
of the candidate keys and returns the one that matches.
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Iterable
from enum import StrEnum
from typing import TypeVar

from tether.crypto import SecretBox

K = TypeVar("K", int, str)


class Kind(StrEnum):
    PROJECT = "project"
    ENVIRONMENT = "environment"
    INSTANCE = "instance"
    REGION = "region"
    SERVICE = "service"
    DEPLOYMENT = "deployment"
    TOKEN = "token"  # noqa: S105 - a kind of object, not a secret
    VARIABLE = "variable"


#: each box's namespace, derived once: an HMAC and a UUID cost ~45 µs, three quarters of a
#: public id, and the projects list makes 300 of them a page (issue 12's scale benchmark)
_NAMESPACES: weakref.WeakKeyDictionary[SecretBox, uuid.UUID] = weakref.WeakKeyDictionary()


def namespace(box: SecretBox) -> uuid.UUID:
    """This installation's namespace for public ids (a box's key never changes, so it is
    derived once per box)."""
    ns = _NAMESPACES.get(box)
    if ns is None:
        ns = _NAMESPACES[box] = uuid.UUID(box.derive_id("public ids")[:32])
    return ns


def public_id(box: SecretBox, kind: Kind, key: int | str) -> str:
    """The public id of the object of `kind` whose key is `key`."""
    return _public_id(namespace(box), kind, key)


def _id_of(ns: uuid.UUID, kind: Kind, key: int | str) -> str:
    return str(uuid.uuid5(ns, f"{kind.value}:{key}"))


#: kept: a uuid5 costs ~8 µs, and a projects page of 100 projects with ten environments each
#: shows 1,100 of them (a third of the page's time); `find` computes its candidates uncached,
#: so a search through many keys does not push out the ids the views show
_public_id = functools.lru_cache(maxsize=16384)(_id_of)


def parse(value: str | None) -> str | None:
    """`value` as a canonical UUID string, or None when it is not a UUID."""
    if not value:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def find(box: SecretBox, kind: Kind, value: str | None,
         keys: Iterable[K]) -> K | None:
    """The key among `keys` whose public id of `kind` is `value` (None: no such object)."""
    wanted = parse(value)
    if wanted is None:
        return None
    ns = namespace(box)
    for key in keys:
        if _id_of(ns, kind, key) == wanted:
            return key
    return None
