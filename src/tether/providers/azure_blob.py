"""Azure Blob storage: one private container per instance and a SAS token scoped to it.

The cluster URL carries the storage account and its key, and says where the blob endpoint is:

    azure://ACCOUNT:ACCOUNT-KEY@ACCOUNT.blob.core.windows.net          Azure (HTTPS)
    azure+http://devstoreaccount1:KEY@127.0.0.1:10000/devstoreaccount1  Azurite (plain HTTP)

`azure://` speaks HTTPS and `azure+http://` plain HTTP to `HOST[:PORT][/PATH]`, the blob endpoint
as given. The key is base64 and must be URL-encoded (`/` as %2F, `+` as %2B, `=` as %3D).
Optional cluster settings:

- `cdn_domain`: the host public media URLs use (`?domain=` in the DSN), e.g. a CDN in front.
- `app_endpoint`: the blob endpoint applications use, `SCHEME://ACCOUNT.HOST[:PORT]` (the
  "production style" that `django-storage-url` builds from the DSN). Default: the admin endpoint
  when its host starts with `ACCOUNT.`; for a loopback path-style endpoint (Azurite on
  127.0.0.1:PORT/ACCOUNT) `http://ACCOUNT.blob.localhost:PORT`, which Azurite understands.
- `api_version`: the storage API version Tether's client speaks, for an Azurite that rejects the
  newest one (e.g. `2025-11-05`; or start Azurite with `--skipApiVersionCheck`).

Least privilege: an instance gets a SAS token signed with the account key and scoped to its own
container (read, add, create, write, delete, list), valid for `SAS_LIFETIME`. Nothing else on the
account (other containers, listing containers, deleting its container) is reachable with it. The
SAS is derived from the account key, so provisioning again converges; `needs_renewal` and `renew`
let a deployment swap in a fresh token before the old one expires.

Containers Tether makes carry the metadata `tether_resource=<names.base>`: a container of the same
name without it is not Tether's, and is never taken over nor deleted.

Drift (`observe`) and its repair (`provision` again): a missing container is made again, public
access and stored access policies set on it by hand are removed. What cannot be repaired: a
container deleted by hand comes back EMPTY (its blobs are lost); a container of that name without
Tether's mark is not taken over. The account key itself is not observed: if it is rotated, every
SAS signed with the old one stops working, and the cluster URL must be updated.

Timeouts: 5 s to connect and 15 s for an answer to one request (10 s, without retries, when a
cluster is checked), and one quick retry (the SDK's default policy backs off for minutes on a
dead host): an address that accepts but never answers fails in seconds with a message that says
so.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    LinearRetry,
    generate_container_sas,
)

from tether import naming
from tether.errors import ClusterError, TransientError
from tether.providers.base import (
    ClusterSettings,
    ClusterSpec,
    Credentials,
    Observation,
    ProviderBase,
    ResourceNames,
    lost,
)
from tether.providers.common import cluster_error, first_line, is_final, rewrap

log = logging.getLogger("tether.providers.azure_blob")

#: how long an instance's SAS token is valid
SAS_LIFETIME = timedelta(days=365)
#: a deployment renews a token that expires sooner than this
RENEW_BEFORE = timedelta(days=30)
#: read, add, create, write, delete, list: all an application does with its own media
SAS_PERMISSION = "racwdl"
MARKER = "tether_resource"
#: seconds to connect, and to wait for an answer to one request (CHECK_READ_TIMEOUT when a
#: cluster is checked); RETRIES quick retries after the first attempt (none when checked)
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15
CHECK_READ_TIMEOUT = 10
RETRIES = 1

_URL_HINT = ("use azure://ACCOUNT:KEY@ACCOUNT.blob.core.windows.net, or "
             "azure+http://ACCOUNT:KEY@HOST:PORT/ACCOUNT for Azurite, with the key URL-encoded "
             "(/ as %2F, + as %2B, = as %3D)")
_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ACCOUNT_RE = re.compile(r"[a-z0-9]{3,24}")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def container_name(names: ResourceNames) -> str:
    """The instance's container: `names.base` in the container alphabet (`tether_i42` ->
    `tether-i42`)."""
    name = names.base.replace("_", "-")
    if not _CONTAINER_RE.fullmatch(name):
        raise ClusterError(f"refusing the resource name {names.base!r}: not a valid Azure "
                           "container name")
    return name


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


@dataclass(frozen=True)
class _Target:
    """A cluster URL, parsed and checked without contacting the server. `where` is safe to show."""

    account: str
    key: str
    endpoint: str
    app_endpoint: str
    cdn_domain: str | None
    api_version: str | None

    @property
    def where(self) -> str:
        return self.endpoint

    @classmethod
    def parse(cls, cluster: ClusterSpec) -> _Target:
        try:
            parts = urlsplit(cluster.url)
            port = parts.port
        except ValueError:  # the parser's message may quote the URL, key included
            raise ClusterError(f"the cluster URL is not a valid Azure Blob URL: {_URL_HINT}"
                               ) from None
        scheme = {"azure": "https", "azure+https": "https", "azure+http": "http"}.get(
            parts.scheme.lower())
        if scheme is None or not parts.hostname or not parts.username or not parts.password:
            raise ClusterError(f"the cluster URL is not a valid Azure Blob URL: {_URL_HINT}")
        account = unquote(parts.username)
        if not _ACCOUNT_RE.fullmatch(account):
            raise ClusterError(f"the storage account name {account!r} in the cluster URL is not "
                               "valid: use 3-24 lower-case letters and digits")
        key = unquote(parts.password)
        try:
            if not base64.b64decode(key, validate=True):
                raise ValueError
        except (binascii.Error, ValueError):
            raise ClusterError(
                "the account key in the cluster URL is not valid base64: copy it again from the "
                "storage account's access keys and URL-encode it (/ as %2F, + as %2B, = as %3D)"
            ) from None
        host = parts.hostname
        path = parts.path.rstrip("/")
        endpoint = f"{scheme}://{_netloc(host, port)}{path}"
        settings = cluster.settings or {}
        cdn = str(settings.get("cdn_domain") or "").strip() or None
        if cdn is not None and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", cdn):
            raise ClusterError(f"the cdn_domain setting {cdn!r} is not a host name: give a bare "
                               "host such as media.example.com (no scheme, no path)")
        api_version = str(settings.get("api_version") or "").strip() or None
        if api_version is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", api_version):
            raise ClusterError(f"the api_version setting {api_version!r} is not a storage API "
                               "version: use a date such as 2025-11-05")
        app = str(settings.get("app_endpoint") or "").strip().rstrip("/")
        if not app:
            if host.lower().startswith(account + ".") and not path:
                app = endpoint
            elif _is_loopback(host) and path == f"/{account}":
                app = f"{scheme}://{account}.blob.localhost" + (f":{port}" if port else "")
            else:
                raise ClusterError(
                    f"cannot tell which address applications should use for the endpoint "
                    f"{endpoint}: set the cluster setting app_endpoint to "
                    f"SCHEME://{account}.HOST[:PORT]")
        try:
            app_parts = urlsplit(app)
            app_parts.port  # noqa: B018 -- a bad port raises here, not in env_vars later
        except ValueError:
            app_parts = urlsplit("")
        if (app_parts.scheme not in ("http", "https") or app_parts.path.strip("/")
                or "@" in app_parts.netloc
                or not (app_parts.hostname or "").lower().startswith(account + ".")):
            raise ClusterError(f"the app_endpoint setting must look like "
                               f"https://{account}.blob.core.windows.net (the account name first, "
                               "no path)")
        return cls(account, key, endpoint, app, cdn, api_version)


def _first_line(exc: BaseException, secrets: tuple[str | None, ...]) -> str:
    return first_line(str(getattr(exc, "message", None) or exc), secrets,
                      fallback=type(exc).__name__)


def _transient(exc: AzureError) -> bool:
    """Whether an SDK failure may pass: the endpoint unreachable for now, a connection cut or
    timed out, the service busy or failing for a moment (5xx)."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return not is_final(exc)
    return getattr(exc, "status_code", None) in (500, 502, 503, 504)


def _timed_out(exc: AzureError) -> bool:
    """Whether the SDK gave up waiting (to connect, or for an answer)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        if isinstance(current, TimeoutError) or "timed out" in str(current).lower():
            return True
        current = (getattr(current, "inner_exception", None) or current.__cause__
                   or current.__context__)
    return any(type(e).__name__.endswith("Timeout") for e in seen)


def _error(exc: AzureError, target: _Target, doing: str) -> ClusterError:
    """An SDK failure as a message that says what to fix (and holds no secret); a
    `TransientError` when it may pass."""
    detail = _first_line(exc, (target.key,))
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)) and _timed_out(exc):
        return cluster_error(f"Azure Blob storage at {target.where} timed out while {doing}: "
                             f"no connection within {CONNECT_TIMEOUT} s, or no answer in time. "
                             f"Check that {target.where} is an Azure Blob endpoint (or Azurite's "
                             "blob port), that the server runs and is not overloaded, and that "
                             f"no firewall drops the traffic ({detail})", transient=True)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return cluster_error(f"cannot reach Azure Blob storage at {target.where} while {doing}: "
                             "check that the server runs and that the host and port in the "
                             f"cluster URL are right ({detail})", _transient(exc))
    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError) and status == 400 and "api version" in detail.lower():
        return ClusterError(f"Azure Blob storage at {target.where} does not accept the storage "
                            "API version Tether speaks: set the cluster setting api_version "
                            "(e.g. api_version=2025-11-05), or start Azurite with "
                            f"--skipApiVersionCheck ({detail})")
    if status == 403:
        return ClusterError(f"Azure Blob storage at {target.where} refused the account key of "
                            f"{target.account!r} while {doing}: fix the key in the cluster URL "
                            "(the account's access key, URL-encoded)")
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # a StorageErrorCode, or a plain string
    return cluster_error(f"{doing} on Azure Blob storage at {target.where} failed"
                         f"{f' ({status} {code})' if status else ''}: {detail}", _transient(exc))


def _sas_token(target: _Target, container: str, expiry: datetime) -> str:
    return generate_container_sas(
        target.account, container, account_key=target.key,
        permission=ContainerSasPermissions.from_string(SAS_PERMISSION), expiry=expiry)


class AzureBlobSettings(ClusterSettings):
    """How the account is reached and named (see `_Target` for what each value may be)."""

    cdn_domain: str | None = None
    api_version: str | None = None
    app_endpoint: str | None = None


@functools.lru_cache(maxsize=16)
def _kept_service(target: _Target) -> BlobServiceClient:
    """The admin's client of an account, kept: its HTTP connection stays open between calls
    (a client made and closed per call built its pipeline and opened a new connection each
    time). Clients are thread-safe; a changed cluster URL or account key is another
    `_Target`, so it gets its own, and the least used are dropped beyond 16. A connection the
    server closed meanwhile is opened again by the client's retries."""
    return AzureBlobProvider._service(target)


class AzureBlobProvider(ProviderBase):
    """A private container per instance, reached with a SAS token scoped to it."""

    kind = "azure-blob"
    title = "Azure Blob Storage: a container and a SAS token per instance"
    category = "STORAGE"
    backup_engine = "tether.backups.engines:MediaEngine"
    backup_storage = "tether.backups.storage:AzureBackupStorage"
    backup_storage_rank = 1
    service = "azure-blob-media"
    versioned = False
    family = "azure"
    variables = ("{P}_STORAGE_DSN",)
    settings_model = AzureBlobSettings

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        """`clock` gives the current UTC time SAS expiries are computed from (tests move it)."""
        self.clock = clock

    # -- plumbing ---------------------------------------------------------------------------------

    @staticmethod
    def admin_endpoint(cluster: ClusterSpec) -> tuple[str, str | None]:
        """Where Tether itself reaches the blob service (not the applications' address), and
        the API version to speak (the cluster's `api_version`): for backups of containers."""
        target = _Target.parse(cluster)
        return target.endpoint, target.api_version

    @staticmethod
    def _service(target: _Target, checking: bool = False) -> BlobServiceClient:
        """A client of the account; `checking`: shorter read timeout and no retries, so a check
        of a cluster that never answers fails in seconds."""
        # Few, quick retries: the SDK's default backs off for a minute on an unreachable host.
        retries = 0 if checking else RETRIES
        options: dict[str, Any] = {
            "retry_policy": LinearRetry(backoff=0.5, retry_total=retries, retry_connect=retries,
                                        retry_read=retries, retry_status=retries,
                                        random_jitter_range=0.2),
            "connection_timeout": CONNECT_TIMEOUT,
            "read_timeout": CHECK_READ_TIMEOUT if checking else READ_TIMEOUT,
        }
        if target.api_version:
            options["api_version"] = target.api_version
        return BlobServiceClient(target.endpoint, credential={
            "account_name": target.account, "account_key": target.key}, **options)

    @staticmethod
    def _properties(client: ContainerClient) -> dict[str, str] | None:
        """The container's metadata, or None when there is no such container."""
        try:
            return dict(client.get_container_properties().metadata or {})
        except ResourceNotFoundError:
            return None

    @staticmethod
    def _ours(metadata: dict[str, str] | None, names: ResourceNames) -> bool:
        if metadata is None:
            return False
        return {k.lower(): v for k, v in metadata.items()}.get(MARKER) == names.base

    def _credentials(self, target: _Target, container: str) -> Credentials:
        expiry = self.clock().astimezone(UTC).replace(microsecond=0) + SAS_LIFETIME
        return Credentials({
            "account": target.account, "container": container,
            "sas_token": _sas_token(target, container, expiry), "expires_at": _iso(expiry),
            "endpoint": target.app_endpoint, "cdn_domain": target.cdn_domain,
        })

    # -- Provider ---------------------------------------------------------------------------------

    def check(self, cluster: ClusterSpec) -> str:
        """List containers with the account key; return the storage API version the server
        answers with (e.g. "2025-11-05")."""
        target = _Target.parse(cluster)
        seen: dict[str, str] = {}

        def keep_version(response: Any) -> None:
            seen["version"] = str(response.http_response.headers.get("x-ms-version") or "")

        service = self._service(target, checking=True)
        try:
            pages = service.list_containers(results_per_page=1,
                                            raw_response_hook=keep_version).by_page()
            next(pages, None)
        except ResourceNotFoundError:
            raise ClusterError(f"Azure Blob storage at {target.where} has no storage account "
                               f"{target.account!r}: fix the account name (and, for Azurite, "
                               "the endpoint path /ACCOUNT) in the cluster URL") from None
        except AzureError as exc:
            raise _error(exc, target, "listing containers") from None
        finally:
            service.close()
        return seen.get("version") or target.api_version or "unknown"

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: a private container marked as this instance's, without stored access
        policies, and a fresh SAS token for it; repairs any drift `observe` reports that can be
        repaired. `secret` is not used: the token is signed with the account key. A container
        this call made is deleted again when the call fails for good (rule 5)."""
        target = _Target.parse(cluster)
        container = container_name(names)
        credentials = self._credentials(target, container)  # fails before anything is made
        service = _kept_service(target)
        client = service.get_container_client(container)
        creating = False
        try:
            metadata = self._properties(client)
            if metadata is None:
                creating = True
                try:
                    client.create_container(metadata={MARKER: names.base})
                except ResourceExistsError as exc:
                    if getattr(exc, "error_code", None) == "ContainerBeingDeleted":
                        raise ClusterError(
                            f"the container {container} on Azure Blob storage at {target.where} "
                            "is still being deleted: retry in a minute") from None
                    creating = False  # made concurrently: whose is it?
                    metadata = self._properties(client)
                else:
                    metadata = {MARKER: names.base}
            if not self._ours(metadata, names):
                raise ClusterError(
                    f"a container named {container} exists already on Azure Blob storage at "
                    f"{target.where} and was not made by Tether for this instance: Tether never "
                    "takes over a container it did not create; delete or rename it, then retry")
            if self._openings(client):
                client.set_container_access_policy(signed_identifiers={}, public_access=None)
        except AzureError as exc:
            failure = _error(exc, target, f"creating the container {container}")
            if creating and not isinstance(failure, TransientError):
                # the request may have created it before failing
                failure = self._clean_up(client, names, target, failure)
            raise failure from None
        return credentials

    @staticmethod
    def _clean_up(client: ContainerClient, names: ResourceNames, target: _Target,
                  failure: ClusterError) -> ClusterError:
        try:
            metadata = AzureBlobProvider._properties(client)
            if AzureBlobProvider._ours(metadata, names):
                client.delete_container()
        except AzureError as exc:  # recorded; a retry converges
            return rewrap(failure, f"{failure.message} (clean-up also failed: "
                                   f"{_first_line(exc, (target.key,))})")
        return failure

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        """Whether this instance's container (one Tether made) is on the account."""
        target = _Target.parse(cluster)
        container = container_name(names)
        service = _kept_service(target)
        try:
            return self._ours(self._properties(service.get_container_client(container)), names)
        except AzureError as exc:
            raise _error(exc, target, f"looking up the container {container}") from None

    @staticmethod
    def _openings(client: ContainerClient) -> list[str]:
        """How the container can be reached other than with a SAS Tether signed: public access,
        stored access policies (a SAS may name one instead of carrying its own rights)."""
        policy = client.get_container_access_policy()
        found = []
        if policy.get("public_access"):
            found.append(f"public access ({policy['public_access']})")
        identifiers = [str(i.id) for i in policy.get("signed_identifiers") or []]
        if identifiers:
            found.append(f"the stored access policies {', '.join(sorted(identifiers))}")
        return found

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The container (there, marked as this instance's), private and without stored access
        policies."""
        target = _Target.parse(cluster)
        container = container_name(names)
        service = _kept_service(target)
        try:
            client = service.get_container_client(container)
            metadata = self._properties(client)
            ours = self._ours(metadata, names)
            openings = self._openings(client) if ours else []
        except AzureError as exc:
            raise _error(exc, target, f"looking at the container {container}") from None
        if metadata is None:
            differences = [lost(f"container {container}")]
        elif not ours:
            differences = [f"container {container} is not marked as this instance's: Tether "
                           "does not take it over"]
        else:
            differences = [f"container {container} allows {opening}" for opening in openings]
        return Observation(exists=ours, differences=tuple(differences))

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Delete the container, and every blob in it with it. A container of that name that
        Tether did not make for this instance is left alone."""
        target = _Target.parse(cluster)
        container = container_name(names)
        service = _kept_service(target)
        client = service.get_container_client(container)
        try:
            metadata = self._properties(client)
            if metadata is None:
                return
            if not self._ours(metadata, names):
                log.warning("container %s was not made by Tether for %s: leaving it alone",
                            container, names.base)
                return
            try:
                client.delete_container()
            except ResourceNotFoundError:
                pass
            except ResourceExistsError as exc:  # ContainerBeingDeleted: on its way out
                if getattr(exc, "error_code", None) != "ContainerBeingDeleted":
                    raise
        except AzureError as exc:
            raise _error(exc, target, f"deleting the container {container}") from None

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        """`{P}_STORAGE_DSN`: `az://ACCOUNT:SAS@HOST/CONTAINER[?domain=CDN]`, as
        `django-storage-url` reads it: the SAS token base64-encoded (that is how it tells a SAS
        from an account key), then URL-encoded; HOST is the endpoint host without the leading
        `ACCOUNT.` (it rebuilds `https://ACCOUNT.HOST`). It only speaks plain HTTP, or keeps a
        port, when the DSN has `?url=SCHEME://HOST:PORT/`, so that form is used for those."""
        return naming.storage_vars(prefix, storage_dsn(credentials))

    # -- SAS renewal (called by the engine at deploy time) ----------------------------------------

    def needs_renewal(self, credentials: Credentials, now: datetime | None = None) -> bool:
        """Whether the SAS token expires within `RENEW_BEFORE` (or its expiry is unknown)."""
        expires = _parse_iso(credentials.values.get("expires_at"))
        if expires is None:
            return True
        return expires - (now or self.clock()) < RENEW_BEFORE

    def renew(self, cluster: ClusterSpec, names: ResourceNames,
              credentials: Credentials) -> Credentials:
        """A fresh SAS token (valid `SAS_LIFETIME` from now) for the instance's existing
        container. The old token stays valid until its own expiry, so the running release keeps
        working while the new one rolls out. Refuses when the container is gone: renewing never
        makes an empty container in place of lost media."""
        target = _Target.parse(cluster)
        container = container_name(names)
        if credentials.values.get("container") not in (None, container):
            raise ClusterError(f"these credentials are not those of the container {container}")
        service = _kept_service(target)
        try:
            metadata = self._properties(service.get_container_client(container))
        except AzureError as exc:
            raise _error(exc, target, f"renewing the SAS token of {container}") from None
        if not self._ours(metadata, names):
            raise ClusterError(f"cannot renew the SAS token of the container {container}: it is "
                               f"no longer on Azure Blob storage at {target.where} (or not "
                               "Tether's); provision the instance again")
        return self._credentials(target, container)


def storage_dsn(credentials: Credentials) -> str:
    """The `{P}_STORAGE_DSN` value for an instance's credentials (see `env_vars`)."""
    c = credentials.values
    account, container = str(c["account"]), str(c["container"])
    endpoint = urlsplit(str(c["endpoint"]))
    netloc = endpoint.netloc
    host = netloc[len(account) + 1:] if netloc.lower().startswith(account + ".") else netloc
    token = base64.b64encode(str(c["sas_token"]).encode("ascii")).decode("ascii")
    dsn = f"az://{account}:{quote(token, safe='')}@{host}/{container}"
    cdn = c.get("cdn_domain")
    if endpoint.scheme != "https" or endpoint.port is not None:
        return dsn + "?url=" + quote(f"{endpoint.scheme}://{cdn or netloc}/", safe="")
    return dsn + (f"?domain={quote(str(cdn), safe='')}" if cdn else "")


PROVIDER = AzureBlobProvider
