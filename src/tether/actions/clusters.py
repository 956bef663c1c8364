"""Clusters: the real servers Tether may administer."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.actions.common import Context, audit, iso
from tether.catalog import FAMILIES, MEDIA_KIND_FAMILY, ClusterInfo, infer_family, kind_allowed
from tether.errors import ClusterError, Conflict, UserError
from tether.providers.base import ClusterSpec
from tether.providers.registry import SUPPORTED_KINDS, get_provider
from tether.store.models import Cluster, Region

REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")


def cluster_spec(box: Any, cluster: Cluster) -> ClusterSpec:
    return ClusterSpec(id=cluster.id, kind=cluster.kind, region=cluster.region,
                       url=box.open(cluster.url_enc), private=cluster.private,
                       settings=dict(cluster.settings or {}))


def cluster_infos(s: Session) -> list[ClusterInfo]:
    return [
        ClusterInfo(c.id, c.name, c.kind, c.region, c.version, c.private, c.owner_instance_id)
        for c in s.scalars(select(Cluster).order_by(Cluster.id))
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
        wanted = MEDIA_KIND_FAMILY[kind]
        raise UserError(f"{kind} clusters belong in {wanted}-family regions, and {region} is "
                        f"of the {row.family} family: register it in a {wanted} region "
                        f"(e.g. --region eu-{'aws' if wanted == 's3' else wanted} "
                        f"--region-family {wanted})")
    return row


def list_regions(ctx: Context) -> list[dict[str, object]]:
    with ctx.store.session() as s:
        return [{"name": r.name, "family": r.family}
                for r in s.scalars(select(Region).order_by(Region.name))]


def add_cluster(ctx: Context, kind: str, region: str, url: str, private: bool = False,
                name: str | None = None, settings: dict[str, Any] | None = None,
                managed: bool = False, upsert: bool = False,
                region_family: str | None = None) -> dict[str, object]:
    """Register a cluster after checking that Tether can administer it (a bad URL or password is
    refused here, with the fix, rather than failing later at provision time). With `upsert`
    (clusters Tether runs itself, or declared in a cluster file), a cluster of the same name is
    updated instead of refused."""
    if kind not in SUPPORTED_KINDS:
        raise UserError(f"unknown cluster kind {kind!r}: supported kinds are "
                        f"{', '.join(sorted(SUPPORTED_KINDS))}")
    if not REGION_RE.fullmatch(region):
        raise UserError(f"invalid region {region!r}: use lower-case letters, digits and '-'")
    with ctx.store.session() as s:  # refuse a misplaced cluster before contacting it
        _region(s, region, region_family, kind, create=False)
    provider = get_provider(kind)
    spec = ClusterSpec(id=0, kind=kind, region=region, url=url, private=private,
                       settings=settings or {})
    try:
        version = provider.check(spec)
    except ClusterError as exc:
        raise UserError(f"cannot use this {kind} cluster: {exc.message}") from exc
    with ctx.store.session() as s:
        _region(s, region, region_family, kind)
        name = name or f"{kind}-{region}-{len(s.scalars(select(Cluster.id)).all()) + 1}"
        existing = s.scalar(select(Cluster).where(Cluster.name == name))
        if existing is not None:
            if not (managed or upsert):
                raise Conflict(f"a cluster named {name} exists already: pick another --name")
            if (existing.kind, existing.region) != (kind, region):
                raise Conflict(f"the cluster {name} is a {existing.kind} cluster in "
                               f"{existing.region}: a name cannot change kind or region; "
                               "pick another name")
            existing.url_enc = ctx.box.seal(url)
            existing.version = version
            existing.private = private
            existing.settings = settings or {}
            return cluster_view(ctx.box, existing)
        cluster = Cluster(name=name, kind=kind, region=region, private=private, version=version,
                          url_enc=ctx.box.seal(url), settings=settings or {}, managed=managed)
        s.add(cluster)
        s.flush()
        audit(s, ctx.actor, "cluster added",
              detail=f"{name}: {kind} {version} in {region} ({'private' if private else 'shared'})")
        return cluster_view(ctx.box, cluster)


def list_clusters(ctx: Context) -> list[dict[str, object]]:
    with ctx.store.session() as s:
        return [cluster_view(ctx.box, c) for c in s.scalars(select(Cluster).order_by(Cluster.id))]
