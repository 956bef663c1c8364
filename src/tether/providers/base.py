"""The provider protocol.

A provider knows nothing of projects, environments or the lifecycle: it creates, checks and
deletes one *resource set* on one cluster and returns the credentials. Every method is idempotent:
calling `provision` twice with the same `ResourceNames` neither fails nor duplicates, and
`deprovision` of something already gone succeeds. Names always come from `ResourceNames`, which
the engine derives from the instance id, never from raw user input.

Level-triggered, as a controller is (Crossplane's managed reconciler): `observe` says how the
resource set on the cluster differs from what `provision` makes, and `provision` converges from
any drift it can fix, so repairing is provisioning again. Errors that may pass (a cluster
unreachable for a moment) are `TransientError`s; the others are final `ClusterError`s.

Adding an engine (Redis, MongoDB...) means one new module that implements `Provider` and registers
itself in `tether.providers.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ClusterSpec:
    """What a provider needs to administer one cluster.

    `url` carries the admin credentials (e.g. `postgres://postgres:PW@127.0.0.1:5432/postgres`);
    it is a secret and must never be logged or put into an error message.
    `settings` holds kind-specific settings (e.g. `{"base_dir": "/var/lib/tether/media",
    "public_url": "http://127.0.0.1:8070/media/"}` for local-files).
    """

    id: int
    kind: str
    region: str
    url: str
    private: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceNames:
    """Stable names of one instance's resources, derived from its id (see `naming.resource_names`).

    `base` is e.g. `tether_i42`: a lowercase identifier, safe in SQL (still always quoted), in paths
    and in URLs. Database, role, bucket, vhost and directory names are all derived from it.
    """

    base: str

    @property
    def database(self) -> str:
        return self.base

    @property
    def role(self) -> str:
        return self.base


@dataclass(frozen=True)
class Observation:
    """What a provider found of an instance's resource set on its cluster.

    `exists`: any part of it is there. `differences`: each way it differs from what `provision`
    makes, in plain words naming resources, never secrets (e.g. "database tether_i12 is
    missing", "CONNECT on tether_i12 is granted to PUBLIC"). A part whose data a repair cannot
    bring back says so ("... its data is lost: a repair makes it again, EMPTY")."""

    exists: bool
    differences: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        return self.exists and not self.differences


def lost(part: str) -> str:
    """The difference for a part deleted outside Tether, whose content a repair cannot restore."""
    return f"{part} is missing: its data is lost (a repair makes it again, EMPTY)"


@dataclass(frozen=True)
class Credentials:
    """What an instance's application receives, as structured data (the DSN is built from it by
    `naming`). Stored encrypted at rest."""

    values: dict[str, Any]


class Provider(Protocol):
    kind: str

    def check(self, cluster: ClusterSpec) -> str:
        """Connect with the admin credentials and return the server's version (e.g. "18.6").
        Raise `ClusterError` with a message that says how to fix the settings."""

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Create (or converge to) the resource set and return the credentials. `secret` is the
        password/key chosen by the engine and persisted before this call, so a retry after a crash
        converges to the same credentials."""

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        """Whether any part of the resource set exists on the cluster."""

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """Look (read only) at the resource set and say how it differs from what `provision`
        makes: missing parts, rights beyond least privilege, rights taken away. `provision`
        repairs what it can of that."""

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Delete the resource set and its data for good; succeed when already gone."""

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        """The environment variables the application gets for this instance (SPEC.md names)."""


@runtime_checkable
class Renewable(Protocol):
    """A provider whose credentials expire (e.g. Azure SAS tokens): the engine renews them at
    deploy time when they are near expiry, so a redeployed app never holds a dying credential."""

    def needs_renewal(self, credentials: Credentials) -> bool: ...

    def renew(self, cluster: ClusterSpec, names: ResourceNames,
              credentials: Credentials) -> Credentials: ...


class PrivateServers(Protocol):
    """Dedicated servers Tether runs itself, one per `--private` instance, each in
    `base_dir/<names.base>` on its own port. Every method is idempotent."""

    kind: str

    def version(self) -> str:
        """The version of the servers it runs (e.g. "18.6"), which decides the service name."""

    def create(self, names: ResourceNames, port: int, password: str) -> str:
        """Initialise (once) and start the instance's server; return its admin URL."""

    def start(self, names: ResourceNames, port: int) -> None: ...

    def stop(self, names: ResourceNames, port: int) -> None: ...

    def destroy(self, names: ResourceNames, port: int) -> None:
        """Stop the server and delete its data for good."""
