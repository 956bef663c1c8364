"""The catalog: which services a region offers, derived from the clusters registered there.

A service name is the engine's family name and the cluster's major version (`postgres-18`,
`mysql-10`, `rabbitmq-3`), or a media name for storage (`local-media`, `s3-media`,
`azure-blob-media`). Several versions of one engine are offered side by side when clusters of
several versions exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tether.errors import UserError
from tether.providers.registry import SPAWNABLE_KINDS

#: cluster kind -> (service name stem, whether the version is part of the name)
KIND_SERVICE: dict[str, tuple[str, bool]] = {
    "postgres": ("postgres", True),
    "mysql": ("mysql", True),
    "elasticsearch": ("elasticsearch", True),
    "rabbitmq": ("rabbitmq", True),
    "s3": ("s3-media", False),
    "azure-blob": ("azure-blob-media", False),
    "local-files": ("local-media", False),
}

#: kinds Tether can run a dedicated server for, when `--private` finds no free private cluster
SPAWNABLE_PRIVATE = SPAWNABLE_KINDS

#: region families, and the media storage kinds each allows (other kinds go anywhere)
FAMILIES = ("local", "s3", "azure")
MEDIA_KIND_FAMILY = {"local-files": "local", "s3": "s3", "azure-blob": "azure"}


def infer_family(region: str) -> str:
    """The family of a new region when the operator does not name one: `local` for the region
    `local`, `azure` when the name says azure (`eu-azure`), else `s3` (`eu-aws`, `us-minio`)."""
    if region == "local":
        return "local"
    return "azure" if "azure" in region else "s3"


def kind_allowed(kind: str, family: str) -> bool:
    """S3 storage only in S3-family regions, Azure Blob only in Azure-family regions, local files
    only in the local family; databases, search and brokers anywhere."""
    return MEDIA_KIND_FAMILY.get(kind, family) == family


def major(version: str) -> str:
    return version.split(".", 1)[0]


def service_name(kind: str, version: str) -> str:
    stem, versioned = KIND_SERVICE[kind]
    return f"{stem}-{major(version)}" if versioned else stem


@dataclass(frozen=True)
class ClusterInfo:
    id: int
    name: str
    kind: str
    region: str
    version: str
    private: bool
    owner_instance_id: int | None


@dataclass(frozen=True)
class Offer:
    service: str
    kind: str
    version: str
    region: str
    shared: bool
    private: bool


def offers(clusters: Iterable[ClusterInfo], region: str) -> list[Offer]:
    """The services offered in `region`: one per (kind, major version)."""
    found: dict[str, Offer] = {}
    for c in clusters:
        if c.region != region or (c.private and c.owner_instance_id is not None):
            continue
        name = service_name(c.kind, c.version)
        old = found.get(name)
        found[name] = Offer(
            service=name,
            kind=c.kind,
            version=major(c.version) if KIND_SERVICE[c.kind][1] else c.version,
            region=region,
            shared=(old.shared if old else False) or not c.private,
            private=(old.private if old else False) or c.private or c.kind in SPAWNABLE_PRIVATE,
        )
    return sorted(found.values(), key=lambda o: o.service)


def resolve(clusters: Iterable[ClusterInfo], region: str, service: str, private: bool) -> Offer:
    """The offer a user's SERVICE names; `postgres` alone means the newest `postgres-N`."""
    available = offers(clusters, region)
    matches = [o for o in available if o.service == service]
    if not matches:
        family = [o for o in available if o.service.rsplit("-", 1)[0] == service]
        matches = sorted(family, key=lambda o: int(o.version) if o.version.isdigit() else 0)[-1:]
    if not matches:
        names = ", ".join(o.service for o in available) or "none (register a cluster first)"
        raise UserError(
            f"service {service!r} is not offered in region {region}: it offers {names} "
            f"(see `tether service catalog --region {region}`)"
        )
    offer = matches[0]
    if private and not offer.private:
        raise UserError(
            f"{offer.service} has no private option in region {region}: register a private "
            f"cluster with `tether cluster add {offer.kind} --region {region} --url URL --private`"
        )
    if not private and not offer.shared:
        raise UserError(
            f"{offer.service} has only private clusters in region {region}: add it with --private"
        )
    return offer
