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

Adding an engine (Redis, MongoDB...) means one new module in this package, named after its kind
(`local_files` for `local-files`), whose `PROVIDER` is a `ProviderBase` subclass implementing
`Provider`: the class declares everything about its kind (service name and versions, region
family, variable names, cluster settings, whether and how Tether runs private servers of it), and
`tether.providers.registry` finds it there, importing it only when the kind is first used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError


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

    `rotation` is how many times the instance's credentials were rotated (`Rotatable`): its
    application logs in as `login`, which is `base` itself until the first rotation and
    `base_<n>` after the n-th. `role` stays `base`: the owner of the instance's resources.

    `retiring`: earlier logins a running release may still use (a rotation not finished by a
    deployment yet). `observe` accepts them as valid (their login, their rights on the
    instance's resources) and checks them as it checks `login` (no rights beyond, its limits);
    everything else ignores them. `rotated` gives names without them.
    """

    base: str
    rotation: int = 0
    retiring: tuple[str, ...] = ()

    @property
    def database(self) -> str:
        return self.base

    @property
    def role(self) -> str:
        return self.base

    @property
    def login(self) -> str:
        """The login the instance's current credentials use."""
        return login_name(self.base, self.rotation)

    def rotated(self, rotation: int) -> ResourceNames:
        """The same resources, with the login of the `rotation`-th rotation."""
        return ResourceNames(base=self.base, rotation=rotation)

    def is_login(self, user: str) -> bool:
        """Whether `user` is one of the instance's logins (`base`, or `base_<n>`)."""
        return user == self.base or (user.startswith(self.base + "_")
                                     and user[len(self.base) + 1:].isascii()
                                     and user[len(self.base) + 1:].isdigit())

    @property
    def old_logins(self) -> tuple[str, ...]:
        """The retiring logins that are the instance's and not its current login."""
        return tuple(user for user in dict.fromkeys(self.retiring)
                     if user != self.login and self.is_login(user))


def login_name(base: str, rotation: int) -> str:
    """The login of an instance after `rotation` rotations: `base`, then `base_1`, `base_2`..."""
    if rotation < 0:
        raise ValueError(f"a rotation count is never negative ({rotation})")
    return base if rotation == 0 else f"{base}_{int(rotation)}"


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


class ClusterSettings(BaseModel):
    """The settings of one kind's clusters (`tether cluster add ... --setting KEY=VALUE`, or a
    cluster file's `settings`), checked when a cluster is registered. A provider declares its own
    subclass with a typed field per setting; a key no field names is refused, so a misspelt
    setting is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: settings Tether itself keeps on a cluster (never given by an operator): the port and flag of
#: a server Tether runs for a private instance, and the identity read from the server
INTERNAL_SETTINGS = frozenset({"port", "spawned", "server_identity"})


class ProviderBase:
    """What every provider class declares about its kind, with the defaults most kinds use.

    The registry, the catalog and the variables read these declarations; no other module keeps
    a table of kinds. A provider subclasses this and implements `Provider`."""

    #: the cluster kind (`tether cluster add KIND`), e.g. "postgres", "local-files"
    kind: ClassVar[str]
    #: what the kind is, in a few words, for help texts and the catalog
    title: ClassVar[str] = ""
    #: the service name's stem: "postgres" gives `postgres-18`; unversioned: "s3-media"
    service: ClassVar[str]
    #: whether the server's major version is part of the service name
    versioned: ClassVar[bool] = True
    #: the only region family its clusters may be in (media storage follows its region's
    #: family); None: any region
    family: ClassVar[str | None] = None
    #: the variables an instance gives, as templates of its prefix (`{P}_DATABASE_DSN`)
    variables: ClassVar[tuple[str, ...]] = ()
    #: extra names the `DEFAULT` instance also gives, each the same value as a template's
    #: (`{"DATABASE_URL": "{P}_DATABASE_DSN"}`, Divio's names)
    default_aliases: ClassVar[Mapping[str, str]] = {}
    #: the typed settings of its clusters
    settings_model: ClassVar[type[ClusterSettings]] = ClusterSettings
    #: per-instance limits on shared clusters and their defaults (see `common.instance_limit`)
    limits: ClassVar[Mapping[str, int]] = {}
    #: "module:attribute" of the `PrivateServers` Tether runs for `--private` instances when no
    #: free private cluster is registered; None: only registered private clusters
    private_servers: ClassVar[str | None] = None
    #: what kind of service it is, in Divio's words: DATABASE, STORAGE, SEARCH, MESSAGE_BROKER
    category: ClassVar[str] = ""
    #: "module:attribute" of the backup engine class of its instances (`tether.backups.engines`),
    #: made with the kind; None: its instances cannot be backed up
    backup_engine: ClassVar[str | None] = None
    #: "module:attribute" of the class that keeps backup files on its clusters
    #: (`tether.backups.storage`), made with the cluster and the installation's id; None: its
    #: clusters hold no backups
    backup_storage: ClassVar[str | None] = None
    #: which of the region's storage clusters backups go to first (lowest first)
    backup_storage_rank: ClassVar[int] = 100

    def service_name(self, version: str) -> str:
        """The catalog's name for a cluster of `version` (e.g. "postgres-18", "s3-media")."""
        return f"{self.service}-{major(version)}" if self.versioned else self.service

    def offered_version(self, version: str) -> str:
        """The version the catalog shows for a cluster of `version`: its major version when
        that is part of the service name, else the version itself."""
        return major(version) if self.versioned else version

    @classmethod
    def var_names(cls, prefix: str) -> list[str]:
        """The names an instance with `prefix` gives, known before it is provisioned."""
        names = [template.format(P=prefix) for template in cls.variables]
        if prefix == "DEFAULT":
            names += list(cls.default_aliases)
        return names

    @classmethod
    def named_vars(cls, prefix: str, values: Mapping[str, str]) -> dict[str, str]:
        """The variables of an instance from one value per template (`{P}_DATABASE_DSN` ->
        DSN), with the `DEFAULT` aliases."""
        missing = set(cls.variables) - set(values)
        if missing:  # a provider bug: every declared variable must be given
            raise ValueError(f"{cls.kind}: no value for {', '.join(sorted(missing))}")
        out = {template.format(P=prefix): values[template] for template in cls.variables}
        if prefix == "DEFAULT":
            out.update({alias: values[template]
                        for alias, template in cls.default_aliases.items()})
        return out

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The operator's settings checked against `settings_model`: a `ValueError` saying
        which setting is wrong and how to fix it; the settings as given otherwise (the
        provider reads them from the cluster's spec)."""
        given = {k: v for k, v in settings.items() if k not in INTERNAL_SETTINGS}
        try:
            cls.settings_model.model_validate(given)
        except ValidationError as exc:
            known = ", ".join(sorted(cls.settings_model.model_fields)) or "none"
            problems = []
            for error in exc.errors(include_url=False, include_input=False):
                key = ".".join(str(part) for part in error["loc"]) or "settings"
                if error["type"] == "extra_forbidden":
                    problems.append(f"{key} is not a setting of {cls.kind} clusters (they have: "
                                    f"{known})")
                else:
                    problems.append(f"the setting {key} is not valid: {error['msg']}")
            raise ValueError("; ".join(problems)) from None
        return dict(settings)

    def identity(self, cluster: ClusterSpec) -> str | None:
        """What tells this server from any other whatever address it answers on today (see
        `actions.clusters`); None when the kind cannot know it."""
        return None

    @staticmethod
    def admin_endpoint(cluster: ClusterSpec) -> tuple[str, str | None] | None:
        """Where Tether itself reaches the cluster's server to back up and restore its
        instances, and the API version to speak there (None: the client's own), when that is
        not the address the instances' credentials give applications (which may be a proxy
        Tether cannot reach). None, the default: nothing to override, Tether reaches the
        server at the cluster's URL, where the credentials point."""
        return None


def major(version: str) -> str:
    """The major version of a version string: "18" of "18.6"."""
    return version.split(".", 1)[0]


@runtime_checkable
class Provider(Protocol):
    kind: str
    service: str
    versioned: bool
    family: str | None
    variables: tuple[str, ...]
    settings_model: type[ClusterSettings]
    limits: Mapping[str, int]
    private_servers: str | None

    def service_name(self, version: str) -> str: ...

    def offered_version(self, version: str) -> str: ...

    def var_names(self, prefix: str) -> list[str]: ...

    def check_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]: ...

    def identity(self, cluster: ClusterSpec) -> str | None: ...

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


@runtime_checkable
class Rotatable(Protocol):
    """A provider that can give an instance new credentials without downtime: a second login
    with the same rights, valid beside the old one until the old one is revoked.

    PostgreSQL has one password per role and MariaDB no dual passwords, so the running release
    (old credentials) and the next one (new credentials) need two logins valid at once: the
    engine makes the new login (`add_login`), deploys it, and revokes the old one
    (`revoke_login`) once no running release uses it. Both are idempotent, and `provision`,
    `observe` and `deprovision` know every login: `names.login` is the current one, and
    deprovision removes all of them."""

    def add_login(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Create (or converge to) the login `names.login` with the password `secret` and the
        same rights and limits as the instance's, beside its other logins; return the
        credentials that use it. `secret` is chosen and stored by the engine before the call,
        so a retry converges to the same credentials."""

    def revoke_login(self, cluster: ClusterSpec, names: ResourceNames, login: str) -> None:
        """Make the old login `login` of the instance unusable for good and end its open
        connections; `names.login` (the current one) is never touched. Succeeds when it is
        gone already."""


def rotation_unsupported(kind: str) -> str:
    """Why a kind of service cannot rotate its credentials (yet), naming the kinds that can."""
    from tether.providers.registry import available, provider_class

    able = [k for k, disabled in available().items()
            if disabled is None and issubclass(provider_class(k), Rotatable)]
    return (f"rotation is not supported for {kind} yet: it works for {', '.join(able)} "
            "services")


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
