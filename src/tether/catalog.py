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
from tether.providers.registry import provider_class, spawnable

#: region families; media storage kinds declare the one they belong in (`ProviderBase.family`)
FAMILIES = ("local", "s3", "azure")
#: a region name of each family, for messages
EXAMPLE_REGION = {"local": "local", "s3": "eu-aws", "azure": "eu-azure"}


def infer_family(region: str) -> str:
    """The family of a new region when the operator does not name one: `local` for the region
    `local`, `azure` when the name says azure (`eu-azure`), else `s3` (`eu-aws`, `us-minio`)."""
    if region == "local":
        return "local"
    return "azure" if "azure" in region else "s3"


def kind_family(kind: str) -> str | None:
    """The only family a kind's clusters may be in (S3 storage in S3-family regions, Azure Blob
    in Azure-family ones, local files in the local family), None for any."""
    return provider_class(kind).family


def kind_allowed(kind: str, family: str) -> bool:
    """Media storage only in regions of its family; databases, search and brokers anywhere."""
    wanted = kind_family(kind)
    return wanted is None or wanted == family


def service_name(kind: str, version: str) -> str:
    """The catalog's name of a cluster of `kind` and `version` (`postgres-18`, `s3-media`)."""
    return provider_class(kind)().service_name(version)


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
        try:
            provider = provider_class(c.kind)()
        except UserError:  # a kind disabled here (its client library is missing)
            continue
        name = provider.service_name(c.version)
        old = found.get(name)
        found[name] = Offer(
            service=name,
            kind=c.kind,
            version=provider.offered_version(c.version),
            region=region,
            shared=(old.shared if old else False) or not c.private,
            private=(old.private if old else False) or c.private or spawnable(c.kind),
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
