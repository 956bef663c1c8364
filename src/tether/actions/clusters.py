"""Clusters: the real servers Tether may administer."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tether.access import Need
from tether.actions.common import Context, audit, iso
from tether.catalog import (
    EXAMPLE_REGION,
    FAMILIES,
    ClusterInfo,
    infer_family,
    kind_allowed,
    kind_family,
)
from tether.errors import ClusterError, Conflict, NotFound, UserError
from tether.lifecycle import State
from tether.paging import ALL, Page, PageArgs, keyset
from tether.providers.base import ClusterSpec
from tether.providers.common import check_limit_settings
from tether.providers.registry import available, get_provider, kinds, provider_class
from tether.publicids import Kind, public_id
from tether.store.models import Cluster, Instance, Region
from tether.store.records import all_clusters, cluster_spec

REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
#: the cluster setting that remembers which server a cluster points at (see `server_identity`)
IDENTITY_SETTING = "server_identity"


#: the store's column for a cluster's name; the longest admin URL taken
MAX_NAME = 100
MAX_URL = 2048


def _check_text(what: str, value: str | None, limit: int) -> None:
    """A name or URL from the API or a cluster file: a control character would break the
    connection string or the store (PostgreSQL takes no NUL), a longer name its column."""
    if value is None:
        return
    if len(value) > limit:
        raise UserError(f"invalid {what}: at most {limit} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UserError(f"invalid {what}: it may not contain control characters (a line "
                        "break, a tab, a NUL)")


def cluster_infos(s: Session) -> list[ClusterInfo]:
    return [
        ClusterInfo(c.id, c.name, c.kind, c.region, c.version, c.private, c.owner_instance_id)
        for c in all_clusters(s)
    ]


def safe_location(url: str) -> str:
    """host:port of a cluster URL, without credentials, for display."""
    parts = urlsplit(url)
    if parts.hostname:
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    return parts.path or "-"


def cluster_view(box: Any, c: Cluster) -> dict[str, object]:
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,
        "region": c.region,
        "visibility": "private" if c.private else "shared",
        "version": c.version,
        "location": safe_location(box.open(c.url_enc)),
        "managed": c.managed,
        "node_id": c.node_id,
        "owner_instance_id": c.owner_instance_id,
        "created_at": iso(c.created_at),
    }


def _region(s: Session, region: str, family: str | None, kind: str,
            create: bool = True) -> Region:
    """The region (made on first use unless `create` is False), after checking the kind fits
    its family."""
    if family is not None and family not in FAMILIES:
        raise UserError(f"unknown region family {family!r}: use one of {', '.join(FAMILIES)}")
    row = s.get(Region, region)
    if row is None:
        row = Region(name=region, family=family or infer_family(region))
        if create:
            s.add(row)
    elif family is not None and family != row.family:
        raise Conflict(f"region {region} is of the {row.family} family, not {family}: "
                       "a region keeps its family; pick another region name")
    if not kind_allowed(kind, row.family):
        wanted = kind_family(kind)
        raise UserError(f"{kind} clusters belong in {wanted}-family regions, and {region} is "
                        f"of the {row.family} family: register it in a {wanted} region "
                        f"(e.g. --region {EXAMPLE_REGION.get(str(wanted), 'eu')} "
                        f"--region-family {wanted})")
    return row


def list_regions(ctx: Context) -> list[dict[str, object]]:
    with ctx.store.session() as s:
        return [{"name": r.name, "uuid": public_id(ctx.box, Kind.REGION, r.name),
                 "family": r.family}
                for r in s.scalars(select(Region).order_by(Region.name))]


def list_kinds(ctx: Context) -> list[dict[str, object]]:
    """Every kind of cluster this installation knows, from its provider's declaration: what it
    is, the service names it gives, its settings, whether Tether runs private servers of it,
    and why it is disabled here when its client library is missing."""
    ctx.require(Need.READ)
    out: list[dict[str, object]] = []
    for kind, disabled in available().items():
        entry: dict[str, object] = {"kind": kind, "available": disabled is None,
                                    "disabled_reason": disabled}
        if disabled is None:
            cls = provider_class(kind)
            entry.update(title=cls.title, service=cls.service, versioned=cls.versioned,
                         region_family=cls.family,
                         variables=list(cls.variables), default_aliases=dict(cls.default_aliases),
                         settings=sorted(cls.settings_model.model_fields), limits=dict(cls.limits),
                         private_servers=cls.private_servers is not None)
        out.append(entry)
    return out


def server_identity(kind: str, url: str, settings: dict[str, Any] | None) -> str | None:
    """What tells this server from any other, whatever address it answers on today (its
    provider's `identity`: e.g. a PostgreSQL server's system identifier, a random id kept at the
    top of a local-files tree). None when it cannot be known (other kinds, or an admin not
    allowed to read it)."""
    return get_provider(kind).identity(ClusterSpec(id=0, kind=kind, region="", url=url,
                                                   settings=dict(settings or {})))


def _describe_identity(identity: str | None) -> str:
    if identity is None:
        return "a server whose identity cannot be read"
    kind, _, value = identity.partition(":")
    return f"the {kind} server identified as {value}"


def _refuse_repointing(s: Session, existing: Cluster, identity: str | None,
                       location: str) -> None:
    """A start must never move a cluster that holds instances to another server: their data
    stays where it is, and Tether would lose the way to it (remove would drop nothing, a
    deploy would hand out dead credentials). The same server on a new port is fine."""
    known = (existing.settings or {}).get(IDENTITY_SETTING)
    if known is None or identity == known:
        return  # the same server, or registered before identities were kept: nothing to compare
    held = s.scalar(select(func.count()).select_from(Instance).where(
        Instance.cluster_id == existing.id, Instance.state != State.REMOVED.value)) or 0
    if not held:
        return
    raise Conflict(
        f"refusing to point the cluster {existing.name} at {location}: that is "
        f"{_describe_identity(identity)}, but the cluster holds {held} instance(s) on "
        f"{_describe_identity(known)}, and their data stays there. Start that server again "
        f"(or put its data back), or register the new server under another name")


def _follow_the_server(ctx: Context, s: Session, cluster: Cluster, old_url: str,
                       new_url: str) -> int:
    """The same server answers on a new address (e.g. its port was taken while it was
    stopped): the instances on it get that address in their credentials, so their variables
    point at it from the next deploy on. Returns how many were updated."""
    old, new = urlsplit(old_url), urlsplit(new_url)
    moved = 0
    for inst in s.scalars(select(Instance).where(Instance.cluster_id == cluster.id,
                                                 Instance.state != State.REMOVED.value,
                                                 Instance.credentials_enc.is_not(None))):
        creds = ctx.box.open(inst.credentials_enc)
        if not isinstance(creds, dict) or "host" not in creds or "port" not in creds:
            continue
        if (str(creds["host"]), str(creds["port"])) != (str(old.hostname), str(old.port)):
            continue
        creds["host"], creds["port"] = new.hostname, new.port
        inst.credentials_enc = ctx.box.seal(creds)
        moved += 1
    return moved


def add_cluster(ctx: Context, kind: str, region: str, url: str, private: bool = False,
                name: str | None = None, settings: dict[str, Any] | None = None,
                managed: bool = False, upsert: bool = False,
                region_family: str | None = None,
                node_id: str | None = None) -> dict[str, object]:
    """Register a cluster after checking that Tether can administer it (a bad URL or password is
    refused here, with the fix, rather than failing later at provision time). With `upsert`
    (clusters Tether runs itself, or declared in a cluster file), a cluster of the same name is
    updated instead of refused, unless that would point a cluster holding instances at another
    server. `node_id`: the node that runs the server (embedded servers belong to their node)."""
    ctx.require(Need.ADMIN)
    if kind not in kinds():
        raise UserError(f"unknown cluster kind {kind!r}: supported kinds are "
                        f"{', '.join(kinds())}")
    provider_class(kind)  # a kind disabled here (its client library missing) says so
    if not REGION_RE.fullmatch(region):
        raise UserError(f"invalid region {region!r}: use lower-case letters, digits and '-'")
    _check_text("cluster name", name, MAX_NAME)
    _check_text("cluster URL", url, MAX_URL)
    try:  # per-instance limits (connection_limit, queue_limit): whole numbers in range
        settings = check_limit_settings(kind, settings or {})
        settings = provider_class(kind).check_settings(settings)  # the kind's typed settings
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with ctx.store.session() as s:  # refuse a misplaced cluster before contacting it
        _region(s, region, region_family, kind, create=False)
    provider = get_provider(kind)
    spec = ClusterSpec(id=0, kind=kind, region=region, url=url, private=private,
                       settings=settings or {})
    try:
        version = provider.check(spec)
    except ClusterError as exc:
        raise UserError(f"cannot use this {kind} cluster: {exc.message}") from exc
    identity = server_identity(kind, url, settings)
    stored = dict(settings or {})
    stored.pop(IDENTITY_SETTING, None)  # only ever what was read from the server itself
    if identity is not None:
        stored[IDENTITY_SETTING] = identity
    with ctx.store.session() as s:
        _region(s, region, region_family, kind)
        name = name or f"{kind}-{region}-{len(s.scalars(select(Cluster.id)).all()) + 1}"
        existing = s.scalar(select(Cluster).where(Cluster.name == name).with_for_update())
        if existing is not None:
            if not (managed or upsert):
                raise Conflict(f"a cluster named {name} exists already: pick another --name")
            if (existing.kind, existing.region) != (kind, region):
                raise Conflict(f"the cluster {name} is a {existing.kind} cluster in "
                               f"{existing.region}: a name cannot change kind or region; "
                               "pick another name")
            _refuse_repointing(s, existing, identity, safe_location(url))
            old_url = ctx.box.open(existing.url_enc)
            same_server = (identity is not None
                           and identity == (existing.settings or {}).get(IDENTITY_SETTING))
            if same_server and safe_location(old_url) != safe_location(url):
                moved = _follow_the_server(ctx, s, existing, old_url, url)
                audit(s, ctx.actor, "cluster moved",
                      detail=f"{name}: the same server now at {safe_location(url)} (was "
                             f"{safe_location(old_url)}); {moved} instance(s) follow it")
            existing.url_enc = ctx.box.seal(url)
            existing.version = version
            existing.private = private
            existing.settings = stored
            if managed:
                existing.node_id = node_id
            return cluster_view(ctx.box, existing)
        cluster = Cluster(name=name, kind=kind, region=region, private=private, version=version,
                          url_enc=ctx.box.seal(url), settings=stored, managed=managed,
                          node_id=node_id)
        s.add(cluster)
        s.flush()
        audit(s, ctx.actor, "cluster added",
              detail=f"{name}: {kind} {version} in {region} ({'private' if private else 'shared'})")
        return cluster_view(ctx.box, cluster)


def list_clusters(ctx: Context, page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The clusters in the order they were registered (a page of them), each with
    `instances`: how many instances it holds (any state but removed), counted in one query
    for the whole page."""
    with ctx.store.session() as s:
        rows, after = keyset(s, select(Cluster), Cluster.id, page)
        held: dict[int, int] = {
            cluster_id: count for cluster_id, count in s.execute(
                select(Instance.cluster_id, func.count()).where(
                    Instance.cluster_id.in_([c.id for c in rows]),
                    Instance.state != State.REMOVED.value)
                .group_by(Instance.cluster_id))} if rows else {}
        return Page([{**cluster_view(ctx.box, c), "instances": held.get(c.id, 0)}
                     for c in rows], after)


def check_cluster(ctx: Context, cluster_id: int) -> dict[str, object]:
    """Whether Tether can administer the cluster right now: the same check `tether cluster add`
    makes (connect with the admin URL, the rights it needs), answered as `reachable` with the
    server's version, or the reason it is not, and how long the check took (admins only: it
    logs in to the server). A down server answers within the providers' connect timeouts."""
    ctx.require(Need.ADMIN)
    with ctx.store.session() as s:
        cluster = s.get(Cluster, cluster_id)
        if cluster is None:
            raise NotFound(f"no cluster with id {cluster_id}: see `tether cluster list`")
        spec = cluster_spec(ctx.box, cluster)
    started = time.monotonic()
    try:
        version: str | None = get_provider(spec.kind).check(spec)
        reason = None
    except ClusterError as exc:
        version, reason = None, exc.message
    return {"id": cluster_id, "reachable": reason is None, "version": version,
            "message": reason, "seconds": round(time.monotonic() - started, 3)}
