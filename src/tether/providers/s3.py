"""S3 media storage: one bucket per instance and, where the cluster has an IAM API, an IAM user
whose only policy reaches that bucket.

The cluster URL carries the admin's access key and where the S3 endpoint is:

    s3://ACCESS_KEY:SECRET_KEY@s3.eu-central-1.amazonaws.com/     AWS S3
    s3://ACCESS_KEY:SECRET_KEY@minio.example.com:9000/             MinIO (set iam=false)
    s3://ACCESS_KEY:SECRET_KEY@127.0.0.1:8333/                     SeaweedFS (endpoint_scheme=http)

Key and secret are URL-encoded (AWS secrets hold `/` and `+`: write %2F and %2B). The path is
ignored. Optional cluster settings:

- `endpoint_scheme`: `https` (default) or `http`, how Tether talks to HOST[:PORT].
- `region`: the signing region and where buckets are made; default: the region in an AWS host
  name (`s3.eu-central-1.amazonaws.com`), else `us-east-1`.
- `addressing_style`: `virtual` (`BUCKET.HOST`, the default for AWS) or `path` (`HOST/BUCKET`,
  the default elsewhere; MinIO and SeaweedFS want it). `path` also goes into the DSN.
- `iam`: true (default): each instance gets its own IAM user `BUCKET` with an inline policy
  allowing `s3:*` on its bucket and the bucket's objects, nothing else, and one access key.
  false, for servers without the AWS IAM API (MinIO): every instance's DSN carries the admin's
  key, which reaches every bucket. That is NOT least-privilege; `check` says so.
- `iam_endpoint`: where the IAM API answers; default: AWS's own for AWS hosts, else the S3
  endpoint (SeaweedFS serves IAM on the S3 port).
- `cdn_domain`: the host public media URLs use (`&domain=` in the DSN).
- `app_endpoint`: `[https://]HOST[:PORT]`, the endpoint host applications use when it is not the
  one Tether administers through (e.g. Tether on http://127.0.0.1:8333, applications on
  https://s3.example.com); it is the ENDPOINT-HOST of the DSN.
- `name_prefix`: put before every bucket and IAM user name (`acme-` gives `acme-tether-i42`).
  AWS bucket names are global across all accounts, so `tether-i42` alone is likely taken there.

Names: `names.base` in the bucket alphabet (`tether_i42` -> `tether-i42`), prefixed. A bucket is
Tether's when S3 says the admin owns it (`BucketAlreadyOwnedByYou`; the bucket ACL's owner);
a bucket of that name owned by anyone else is refused at provision and left alone at removal.

Access keys: S3 makes the secret key itself, so the engine's `secret` cannot be it. Instead the
secret key is kept, sealed (AES-GCM under a key derived from `secret`), in a tag of the
instance's IAM user. Provisioning again with the same `secret` returns the same key; when the
tag is missing or does not open (a crash before it was written, another `secret`), every key of
the user is deleted and one fresh key made. So a retry converges to exactly one working key, the
one returned. On AWS a new key takes a few seconds to work: provision waits until it does.

Media is public: django-storage-url uploads with the ACL `public-read` and builds unsigned URLs.
So a new bucket allows ACLs (object ownership `BucketOwnerPreferred`) and has its own public
access block removed, where the server supports those calls (an account-wide AWS block still
wins: lift it for media accounts).

Drift (`observe`) and its repair (`provision` again): a missing bucket or IAM user is made again,
the user's policy put back, other inline policies deleted and attached ones detached, its keys
brought back to exactly one. What cannot be repaired: a bucket deleted by hand comes back EMPTY
(its files are lost); a deleted user, or a key deleted or replaced by hand, cannot be brought
back: the repair makes a NEW key, so the credentials change and the application needs a
deployment to get them; a bucket of that name owned by someone else is not taken over. The public
media settings (ownership controls, public access block) are not observed.

The DSN, `s3://KEY:SECRET@BUCKET.ENDPOINT-HOST/?auth=s3v4&domain=CDN-HOST` (plus
`addressing_style=path` and `region_name=` off AWS), is what `django-storage-url` reads. That
library (0.12) always speaks HTTPS on port 443 to the ENDPOINT-HOST (it drops a port), and
finds the bucket by cutting the host at `.s3.` or else keeps the last three labels: for its
applications the endpoint must be HTTPS on 443 with a host name of at most three labels
(`localhost`, `minio.example.com`) or an AWS one. `check` warns when it is not.

Timeouts: 5 s to connect and 15 s for an answer to one request (10 s, and a single attempt, when a
cluster is checked), at most `ATTEMPTS` attempts: an address that accepts but never answers fails
in seconds with a message that says so, never after minutes of retries.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    ConnectTimeoutError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
from tether.redact import redact

log = logging.getLogger("tether.providers.s3")

#: seconds to connect, and to wait for an answer to one request; an address that accepts but
#: never answers fails in seconds (`check`: CHECK_READ_TIMEOUT, one attempt), a call made while
#: provisioning after at most ATTEMPTS * READ_TIMEOUT (the worker retries it later)
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15
CHECK_READ_TIMEOUT = 10
#: attempts per request, the first included (botocore's default backs off for long)
ATTEMPTS = 3
#: how long provision waits for a new access key to reach its bucket (AWS IAM is eventually
#: consistent; SeaweedFS is at once)
KEY_WAIT = 30.0
#: how long a bucket just made may take to answer (SeaweedFS: a moment; AWS: at once)
BUCKET_VISIBLE_WITHIN_S = 10.0
POLICY_NAME = "tether-bucket-access"
SEALED_KEY_TAG = "tether-sealed-key"
DEFAULT_REGION = "us-east-1"
_LOADER = botocore.loaders.create_loader()

_URL_HINT = ("use s3://ACCESS_KEY:SECRET_KEY@HOST[:PORT]/ with the secret URL-encoded (/ as %2F, "
             "+ as %2B), e.g. s3://KEY:SECRET@s3.eu-central-1.amazonaws.com/")
_BUCKET_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,29}")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?")
_REGION_RE = re.compile(r"[a-z0-9-]{1,40}")
_AWS_REGION_RE = re.compile(r"(?:^|\.)s3[.-](?:dualstack\.)?([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: answers that mean "this server does not do that" rather than "you may not"
_UNSUPPORTED = {"NotImplemented", "MethodNotAllowed", "InvalidRequest", "UnsupportedOperation",
                "XNotImplemented", "501", "405"}
#: answers that mean the admin's own key is wrong
_BAD_ADMIN_KEY = {"InvalidAccessKeyId", "InvalidClientTokenId", "SignatureDoesNotMatch"}
#: answers that mean "busy or failing for a moment": retrying may well work
_BUSY = {"ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout", "Throttling",
         "ThrottlingException", "RequestLimitExceeded", "ServiceFailure"}


def _head_until(client: Any, bucket: str, passing: Callable[[ClientError], bool],
                within: float, first_pause: float) -> None:
    """HEAD `bucket` until it answers, for at most `within` s, while its refusals are ones
    that pass (`passing`); else raise the refusal. Pauses double from `first_pause` up to
    0.5 s."""
    deadline = time.monotonic() + within
    pause = first_pause
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if not passing(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _is_aws(host: str) -> bool:
    host = host.lower()
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


def _bool(value: Any, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ClusterError(f"the {name} setting must be true or false, not {value!r}")


@dataclass(frozen=True)
class _Target:
    """A cluster URL and settings, parsed and checked without contacting the server. `where`
    is safe to show."""

    access_key: str
    secret_key: str
    endpoint: str
    region: str
    addressing_style: str
    iam: bool
    iam_endpoint: str | None
    cdn_domain: str | None
    app_endpoint: str
    name_prefix: str

    @property
    def where(self) -> str:
        return self.endpoint

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.secret_key,)

    @property
    def app_host(self) -> str:
        """HOST[:PORT] of the endpoint applications use."""
        return urlsplit(self.app_endpoint).netloc

    @classmethod
    def parse(cls, cluster: ClusterSpec) -> _Target:
        try:
            parts = urlsplit(cluster.url)
            port = parts.port
        except ValueError:  # the parser's message may quote the URL, secret included
            raise ClusterError(f"the cluster URL is not a valid S3 URL: {_URL_HINT}") from None
        if (parts.scheme.lower() != "s3" or not parts.hostname or not parts.username
                or not parts.password):
            raise ClusterError(f"the cluster URL is not a valid S3 URL: {_URL_HINT}")
        settings = cluster.settings or {}
        host = parts.hostname
        aws = _is_aws(host)

        scheme = str(settings.get("endpoint_scheme") or "https").strip().lower()
        if scheme not in ("http", "https"):
            raise ClusterError(f"the endpoint_scheme setting must be http or https, not "
                               f"{scheme!r}")
        endpoint = f"{scheme}://{_netloc(host, port)}"

        found = _AWS_REGION_RE.search(host.lower()) if aws else None
        inferred = found.group(1) if found and found.group(1) != "external-1" else DEFAULT_REGION
        region = str(settings.get("region") or inferred).strip()
        if not _REGION_RE.fullmatch(region):
            raise ClusterError(f"the region setting {region!r} is not a region name: use e.g. "
                               "us-east-1 or eu-central-1")

        style = str(settings.get("addressing_style") or ("virtual" if aws else "path"))
        style = style.strip().lower()
        if style not in ("path", "virtual"):
            raise ClusterError(f"the addressing_style setting must be path or virtual, not "
                               f"{style!r}")

        iam = _bool(settings.get("iam"), "iam", True)
        iam_endpoint = str(settings.get("iam_endpoint") or "").strip().rstrip("/") or None
        if iam_endpoint is not None and urlsplit(iam_endpoint).scheme not in ("http", "https"):
            raise ClusterError("the iam_endpoint setting must be a URL such as "
                               "http://127.0.0.1:8333")
        if iam_endpoint is None and not aws:
            iam_endpoint = endpoint

        cdn = str(settings.get("cdn_domain") or "").strip() or None
        if cdn is not None and not _HOST_RE.fullmatch(cdn):
            raise ClusterError(f"the cdn_domain setting {cdn!r} is not a host name: give a bare "
                               "host such as media.example.com (no scheme, no path)")

        app = str(settings.get("app_endpoint") or "").strip().rstrip("/")
        if app:
            if "://" not in app:
                app = "https://" + app
            try:
                app_parts = urlsplit(app)
                app_parts.port  # noqa: B018 -- a bad port raises here, not in env_vars later
            except ValueError:
                app_parts = urlsplit("")
            if (app_parts.scheme not in ("http", "https") or not app_parts.hostname
                    or app_parts.path or app_parts.query or "@" in app_parts.netloc):
                raise ClusterError("the app_endpoint setting must look like https://HOST[:PORT] "
                                   "(no path, no credentials)")
        else:
            app = endpoint

        prefix = str(settings.get("name_prefix") or "").strip()
        if prefix and not _PREFIX_RE.fullmatch(prefix):
            raise ClusterError(f"the name_prefix setting {prefix!r} is not valid: use up to 30 "
                               "lower-case letters, digits and '-', starting with a letter or "
                               "digit (e.g. acme-)")
        return cls(unquote(parts.username), unquote(parts.password), endpoint, region, style,
                   iam, iam_endpoint, cdn, app, prefix)

    def bucket(self, names: ResourceNames) -> str:
        """The instance's bucket (and IAM user) name: `names.base` in the bucket alphabet."""
        name = self.name_prefix + names.base.replace("_", "-")
        if not _BUCKET_RE.fullmatch(name):
            raise ClusterError(f"refusing the resource name {name!r}: not a valid S3 bucket name")
        return name

    def dsn_warning(self) -> str | None:
        """Why django-storage-url applications could not use this endpoint, if they could not."""
        parts = urlsplit(self.app_endpoint)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            return (f"the endpoint host {host} is an IP address, and django-storage-url takes "
                    "the bucket from a host name: set app_endpoint to a host name")
        except ValueError:
            pass
        if parts.scheme != "https" or (parts.port not in (None, 443)):
            return ("django-storage-url only speaks HTTPS on port 443: put the endpoint behind "
                    "HTTPS on 443 and set app_endpoint to it")
        if not _is_aws(host) and ".s3." not in f".{host}" and host.count(".") > 2:
            return (f"django-storage-url reads at most three labels after the bucket in the "
                    f"host, and {host} has more: use a shorter host name in app_endpoint")
        return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _missing(exc: ClientError) -> bool:
    return _code(exc) in ("NoSuchBucket", "NoSuchEntity", "404", "NotFound") or _status(exc) == 404


def _unsupported(exc: ClientError) -> bool:
    return _code(exc) in _UNSUPPORTED or _status(exc) in (405, 501)


def _detail(exc: BaseException, secrets: Iterable[str | None]) -> str:
    if isinstance(exc, ClientError):
        text = str(exc.response.get("Error", {}).get("Message") or "") or _code(exc) or str(exc)
    else:
        text = str(exc)
    return first_line(text, secrets, fallback=type(exc).__name__)


def _transient(exc: BaseException) -> bool:
    """Whether a boto3 failure may pass: the endpoint unreachable for now, a connection cut or
    timed out, the server busy or failing for a moment (5xx, SlowDown...)."""
    if isinstance(exc, (SSLError, ProxyConnectionError)):
        return False
    if isinstance(exc, (ReadTimeoutError, ConnectionClosedError)):
        return True
    if isinstance(exc, ConnectionError):
        return not is_final(exc)
    if isinstance(exc, ClientError):
        return _code(exc) in _BUSY or _status(exc) in (500, 502, 503, 504)
    return False


def _classified(exc: BaseException, message: str) -> ClusterError:
    return cluster_error(message, _transient(exc))


def _error(exc: BaseException, target: _Target, doing: str,
           secrets: Iterable[str | None] = ()) -> ClusterError:
    """A boto3 failure as a message that says what to fix (and holds no secret); a
    `TransientError` when it may pass."""
    return _classified(exc, _error_message(exc, target, doing, secrets))


def _error_message(exc: BaseException, target: _Target, doing: str,
                   secrets: Iterable[str | None]) -> str:
    hidden = (*target.secrets, *secrets)
    detail = _detail(exc, hidden)
    if isinstance(exc, SSLError):
        return (f"TLS failed talking to S3 at {target.where} while {doing}: check the "
                "endpoint_scheme setting (http or https) and the server's "
                f"certificate ({detail})")
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        waited = (f"no connection within {CONNECT_TIMEOUT} s"
                  if isinstance(exc, ConnectTimeoutError) else "no answer in time")
        return (f"S3 at {target.where} timed out while {doing}: {waited}. Check that "
                f"{target.where} is an S3 endpoint (and the endpoint_scheme setting: http or "
                "https), that the server runs and is not overloaded, and that no firewall "
                f"drops the traffic ({detail})")
    if isinstance(exc, ConnectionError):
        return (f"cannot reach S3 at {target.where} while {doing}: check that the "
                "server runs and that the host, port and endpoint_scheme setting "
                f"are right ({detail})")
    if isinstance(exc, ClientError):
        code, status = _code(exc), _status(exc)
        if code in ("InvalidAccessKeyId", "InvalidClientTokenId"):
            return (f"S3 at {target.where} does not know the access key in the "
                    "cluster URL: fix the admin's access key ID")
        if code == "SignatureDoesNotMatch":
            return (f"S3 at {target.where} refused the secret key in the cluster "
                    "URL: fix the admin's secret key (URL-encoded: / as %2F, "
                    "+ as %2B), and the region setting")
        if code in ("AccessDenied", "AccessDeniedException", "Forbidden", "403") or status == 403:
            return (f"S3 at {target.where} refused {doing} to the admin key: give the "
                    "key the rights it lacks, or use an admin key ({detail})")
        return (f"{doing} on S3 at {target.where} failed"
                f"{f' ({status} {code})' if status else ''}: {detail}")
    return f"{doing} on S3 at {target.where} failed: {detail}"


def _iam_error(exc: BaseException, target: _Target) -> ClusterError:
    """Why the IAM API cannot be used, with both ways out."""
    where = target.iam_endpoint or "AWS IAM"
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        reason = f"the IAM API at {where} timed out"
    elif isinstance(exc, ConnectionError):
        reason = f"cannot reach the IAM API at {where}"
    elif isinstance(exc, ClientError) and (_unsupported(exc) or _status(exc) == 404):
        reason = f"there is no IAM API at {where}"
    elif isinstance(exc, ClientError):
        reason = (f"the admin key may not manage IAM users at {where} (it needs CreateUser, "
                  "DeleteUser, GetUser, PutUserPolicy, DeleteUserPolicy, ListUserPolicies, "
                  "CreateAccessKey, DeleteAccessKey, ListAccessKeys, TagUser, ListUserTags)")
    else:
        reason = f"the IAM API at {where} failed"
    return _classified(exc, f"{reason}: fix the iam_endpoint setting or the key's rights, or set "
                        "iam=false to give every instance the admin key (not least-privilege) "
                        f"({_detail(exc, target.secrets)})")


# -- the sealed copy of an instance's secret key ------------------------------------------------


def _sealing_key(secret: str, user: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"tether s3 access key\x00" + user.encode()).derive(secret.encode())


def seal_key(secret: str, user: str, key_id: str, secret_key: str) -> str:
    """`KEY_ID:BASE64(nonce + AES-GCM(secret key))`, fit for an IAM tag value (<= 256 chars)."""
    nonce = os.urandom(12)
    box = AESGCM(_sealing_key(secret, user)).encrypt(nonce, secret_key.encode(), key_id.encode())
    return f"{key_id}:{base64.b64encode(nonce + box).decode()}"


def open_key(secret: str, user: str, key_id: str, sealed: str | None) -> str | None:
    """The secret key sealed for `key_id`, or None (no tag, another key, another secret)."""
    if not sealed or ":" not in sealed:
        return None
    sealed_id, _, blob = sealed.partition(":")
    if sealed_id != key_id:
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
        return AESGCM(_sealing_key(secret, user)).decrypt(raw[:12], raw[12:],
                                                          key_id.encode()).decode()
    except (ValueError, InvalidTag, UnicodeDecodeError):
        return None


def _chunks(items: list[dict[str, str]], size: int = 1000) -> Iterator[list[dict[str, str]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def bucket_policy(bucket: str) -> dict[str, Any]:
    """Everything on the bucket and its objects; nothing else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "TetherInstanceBucket", "Effect": "Allow", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}


def storage_dsn(credentials: Credentials) -> str:
    """`s3://KEY:SECRET@BUCKET.HOST[:PORT]/?auth=s3v4[&domain=CDN][&addressing_style=path]
    [&region_name=R]`, key and secret URL-encoded. Off AWS the region is in the query, since
    django-storage-url only finds it in AWS host names."""
    c = credentials.values
    host = str(c["endpoint"])
    query = [("auth", "s3v4")]
    if c.get("cdn_domain"):
        query.append(("domain", str(c["cdn_domain"])))
    if c.get("addressing_style") == "path":
        query.append(("addressing_style", "path"))
    if not _is_aws(host.rsplit(":", 1)[0]) and c.get("region"):
        query.append(("region_name", str(c["region"])))
    return (f"s3://{quote(str(c['access_key_id']), safe='')}:"
            f"{quote(str(c['secret_access_key']), safe='')}@{c['bucket']}.{host}/"
            f"?{urlencode(query)}")


class S3Settings(ClusterSettings):
    """How the endpoint is reached and named (see `_Target` for what each value may be)."""

    endpoint_scheme: str | None = None
    region: str | None = None
    addressing_style: str | None = None
    iam: bool | str | None = None
    iam_endpoint: str | None = None
    cdn_domain: str | None = None
    app_endpoint: str | None = None
    name_prefix: str | None = None


@functools.lru_cache(maxsize=16)
def _kept_client(target: _Target, service: str) -> Any:
    """The admin's client of `service` on a cluster, kept: a client costs ~30 ms to make even
    with the shared loader, and a provision used two (s3 and iam) made afresh. Clients are
    thread-safe (sessions are not: each client has its own); a changed cluster URL or admin key
    is another `_Target`, so it gets its own, and the least used are dropped beyond 16."""
    return _new_client(target, service, None, None, ATTEMPTS, READ_TIMEOUT)


def _new_client(target: _Target, service: str, key: str | None, secret_key: str | None,
                attempts: int, read_timeout: float) -> Any:
    # A session per client: sessions are not thread-safe, and the engine runs providers
    # from worker threads; they share the loader, which caches the parsed service models
    # (read-only), so a client costs ~30 ms instead of ~100. Few retries: the default backs
    # off for long on a dead host.
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    session = boto3.session.Session(aws_access_key_id=key or target.access_key,
                                    aws_secret_access_key=secret_key or target.secret_key,
                                    region_name=target.region, botocore_session=core)
    # `total_max_attempts` counts the first attempt (`max_attempts` would count retries)
    config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=read_timeout,
                    retries={"total_max_attempts": attempts, "mode": "standard"},
                    s3={"addressing_style": target.addressing_style},
                    signature_version="s3v4" if service == "s3" else None)
    endpoint = target.endpoint if service == "s3" else target.iam_endpoint
    return session.client(service, endpoint_url=endpoint, config=config)


class S3Provider(ProviderBase):
    """A bucket per instance, reached with an IAM user's key that reaches that bucket only."""

    kind = "s3"
    title = "S3-compatible object storage: a bucket and a key per instance"
    category = "STORAGE"
    backup_engine = "tether.backups.engines:MediaEngine"
    backup_storage = "tether.backups.storage:S3BackupStorage"
    backup_storage_rank = 0
    service = "s3-media"
    versioned = False
    family = "s3"
    variables = ("{P}_STORAGE_DSN",)
    settings_model = S3Settings

    # -- plumbing ---------------------------------------------------------------------------------

    @staticmethod
    def admin_endpoint(cluster: ClusterSpec) -> tuple[str, str | None]:
        """Where Tether itself reaches the server (not the applications' address), and the
        API version to speak (None: the client's own): for backups of instances' buckets."""
        return _Target.parse(cluster).endpoint, None

    @staticmethod
    def _client(target: _Target, service: str, key: str | None = None,
                secret_key: str | None = None, attempts: int = ATTEMPTS,
                read_timeout: float = READ_TIMEOUT) -> Any:
        """A client of `service` (s3, iam) as the cluster's admin, or with `key` and
        `secret_key`. The admin's clients with the usual retries are kept (`_kept_client`)."""
        if (key, secret_key, attempts, read_timeout) == (None, None, ATTEMPTS, READ_TIMEOUT):
            return _kept_client(target, service)
        return _new_client(target, service, key, secret_key, attempts, read_timeout)

    @staticmethod
    def _bucket_state(s3: Any, bucket: str) -> str:
        """`missing`, `ours` (the admin owns it) or `foreign`."""
        try:
            owner = s3.get_bucket_acl(Bucket=bucket).get("Owner", {}).get("ID")
        except ClientError as exc:
            if _missing(exc):
                return "missing"
            if _code(exc) in _BAD_ADMIN_KEY:
                raise  # the admin's key is wrong: no bucket's owner can be told
            if not _unsupported(exc):
                if _status(exc) == 403:
                    return "foreign"  # AWS: another account's bucket
                raise
            try:  # no ACLs on this server: existence is all we can learn
                s3.head_bucket(Bucket=bucket)
            except ClientError as head_exc:
                if _missing(head_exc):
                    return "missing"
                if _status(head_exc) == 403:
                    return "foreign"
                raise
            return "ours"
        mine = s3.list_buckets().get("Owner", {}).get("ID")
        return "ours" if not owner or not mine or owner == mine else "foreign"

    def _create_bucket(self, s3: Any, target: _Target, bucket: str) -> bool:
        """Make the bucket (True) or find it already the admin's (False); refuse a bucket of
        that name owned by anyone else."""
        state = self._bucket_state(s3, bucket)
        if state == "missing":
            args: dict[str, Any] = {"Bucket": bucket}
            if target.region != DEFAULT_REGION:
                args["CreateBucketConfiguration"] = {"LocationConstraint": target.region}
            try:
                s3.create_bucket(**args)
            except ClientError as exc:
                code = _code(exc)
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                state = "ours" if code == "BucketAlreadyOwnedByYou" else "foreign"
            else:
                self._until_visible(s3, bucket)
        if state == "foreign":
            raise ClusterError(
                f"a bucket named {bucket} exists already on S3 at {target.where} and belongs to "
                "someone else: Tether never takes over a bucket it does not own; on AWS bucket "
                "names are global, so set the cluster setting name_prefix (e.g. acme-), or free "
                "that name")
        return state == "missing"

    @staticmethod
    def _until_visible(s3: Any, bucket: str) -> None:
        """Return once a bucket just made answers: SeaweedFS's S3 gateway learns of a new
        bucket from its filer a moment after the create succeeds, and a call in between was
        answered NoSuchBucket (the backup bucket's settings, once, on a loaded machine). One
        HEAD where the server is consistent at once."""
        _head_until(s3, bucket, _missing, BUCKET_VISIBLE_WITHIN_S, first_pause=0.02)

    @staticmethod
    def _allow_public_media(s3: Any, bucket: str) -> None:
        """Let uploads carry the `public-read` ACL (django-storage-url's default), where the
        server knows these settings; a server without them already accepts it."""
        calls = (
            ("put_bucket_ownership_controls", {"OwnershipControls": {
                "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]}}),
            ("delete_public_access_block", {}),
        )
        for name, extra in calls:
            try:
                getattr(s3, name)(Bucket=bucket, **extra)
            except ClientError as exc:
                if _unsupported(exc) or _code(exc) == "NoSuchPublicAccessBlockConfiguration":
                    continue
                log.warning("bucket %s: %s refused (%s): uploads with a public-read ACL may be "
                            "refused", bucket, name, _code(exc) or _status(exc))

    @staticmethod
    def _sealed_tag(iam: Any, user: str) -> str | None:
        try:
            tags = iam.list_user_tags(UserName=user).get("Tags", [])
        except ClientError as exc:
            if _unsupported(exc):
                return None
            raise
        return next((t.get("Value") for t in tags if t.get("Key") == SEALED_KEY_TAG), None)

    @staticmethod
    def _ensure_user(iam: Any, user: str) -> bool:
        """Make the IAM user (True), or find it there (False)."""
        try:
            iam.create_user(UserName=user)
        except ClientError as exc:
            if _code(exc) != "EntityAlreadyExists":
                raise
            return False
        return True

    @staticmethod
    def _policies(iam: Any, user: str) -> tuple[Any, list[str], list[str]]:
        """The user's own policy document (None when missing), its other inline policies, and
        the ARNs of the policies attached to it (where the server has attached policies)."""
        try:
            document = iam.get_user_policy(UserName=user, PolicyName=POLICY_NAME).get(
                "PolicyDocument")
        except ClientError as exc:
            if not _missing(exc):
                raise
            document = None
        if isinstance(document, str):  # URL-encoded JSON, where botocore does not decode it
            with contextlib.suppress(ValueError):
                document = json.loads(unquote(document))
        others = [str(name) for name in iam.list_user_policies(UserName=user).get(
            "PolicyNames", []) if name != POLICY_NAME]
        try:
            attached = [str(p["PolicyArn"]) for p in iam.list_attached_user_policies(
                UserName=user).get("AttachedPolicies", [])]
        except ClientError as exc:
            if not (_unsupported(exc) or _status(exc) == 404):
                raise
            attached = []
        return document, others, attached

    def _converge_policies(self, iam: Any, bucket: str) -> None:
        """The user's policy reaches its bucket, and no other policy gives it more."""
        iam.put_user_policy(UserName=bucket, PolicyName=POLICY_NAME,
                            PolicyDocument=json.dumps(bucket_policy(bucket)))
        _, others, attached = self._policies(iam, bucket)
        for name in others:
            iam.delete_user_policy(UserName=bucket, PolicyName=name)
        for arn in attached:
            iam.detach_user_policy(UserName=bucket, PolicyArn=arn)

    def _converge_key(self, iam: Any, user: str, secret: str) -> tuple[str, str]:
        """Exactly one access key: the sealed one when it still opens with `secret`, else a
        fresh one (sealed for the next call)."""
        keys = iam.list_access_keys(UserName=user).get("AccessKeyMetadata", [])
        if len(keys) == 1 and keys[0].get("Status", "Active") == "Active":
            key_id = str(keys[0]["AccessKeyId"])
            opened = open_key(secret, user, key_id, self._sealed_tag(iam, user))
            if opened is not None:
                return key_id, opened
        for key in keys:
            try:
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            except ClientError as exc:
                if not _missing(exc):
                    raise
        made = iam.create_access_key(UserName=user)["AccessKey"]
        key_id, secret_key = str(made["AccessKeyId"]), str(made["SecretAccessKey"])
        try:
            iam.tag_user(UserName=user, Tags=[{
                "Key": SEALED_KEY_TAG, "Value": seal_key(secret, user, key_id, secret_key)}])
        except ClientError as exc:  # provision still succeeds; the next one makes a new key
            log.warning("IAM user %s: cannot keep its sealed key (%s): provisioning again will "
                        "replace the key", user, _code(exc) or _status(exc))
        return key_id, secret_key

    def _wait_until_usable(self, target: _Target, bucket: str, key_id: str,
                           secret_key: str) -> None:
        """Until the instance's own key reaches its bucket (proof the policy works, too)."""
        client = self._client(target, "s3", key_id, secret_key, attempts=1)
        try:
            _head_until(client, bucket, lambda exc: _status(exc) in (400, 401, 403), KEY_WAIT,
                        first_pause=0.5)
        except ClientError as exc:
            raise _classified(exc, (
                f"the new access key of {bucket} does not reach its bucket on S3 at "
                f"{target.where} ({_status(exc)} {_code(exc)}): check that the server "
                "enforces IAM policies for its own IAM users")) from None

    @staticmethod
    def _empty(s3: Any, bucket: str) -> None:
        """Delete every object version, delete marker, object and unfinished upload."""

        def delete(objects: list[dict[str, str]]) -> None:
            for chunk in _chunks(objects):
                answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk,
                                                                  "Quiet": True})
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise ClusterError(f"cannot delete {len(errors)} object(s) of {bucket}, "
                                       f"e.g. {first.get('Key')!r}: {first.get('Code')}")

        try:
            versions: list[dict[str, str]] = []
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    versions.append({"Key": item["Key"], "VersionId": item["VersionId"]})
            delete(versions)
        except ClientError as exc:
            if not _unsupported(exc):
                raise
        objects = [{"Key": item["Key"]}
                   for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                   for item in page.get("Contents", [])]
        delete(objects)
        try:
            for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                              UploadId=upload["UploadId"])
        except ClientError as exc:
            if not (_unsupported(exc) or _missing(exc)):
                raise

    def _remove_bucket(self, s3: Any, target: _Target, bucket: str) -> None:
        """Empty and delete the bucket when it is the admin's; gone is fine."""
        state = self._bucket_state(s3, bucket)
        if state == "foreign":
            log.warning("bucket %s on %s is not the admin's: leaving it alone", bucket,
                        target.where)
            return
        if state == "missing":
            return
        for attempt in range(3):  # an application may still be writing
            self._empty(s3, bucket)
            try:
                s3.delete_bucket(Bucket=bucket)
                return
            except ClientError as exc:
                if _missing(exc):
                    return
                if _code(exc) != "BucketNotEmpty" or attempt == 2:
                    raise

    @staticmethod
    def _delete_user(iam: Any, user: str) -> None:
        """Its keys, inline policies, attached policies, then the user; gone is fine."""
        try:
            for key in iam.list_access_keys(UserName=user).get("AccessKeyMetadata", []):
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            for policy in iam.list_user_policies(UserName=user).get("PolicyNames", []):
                iam.delete_user_policy(UserName=user, PolicyName=policy)
            try:
                attached = iam.list_attached_user_policies(UserName=user)
                for policy in attached.get("AttachedPolicies", []):
                    iam.detach_user_policy(UserName=user, PolicyArn=policy["PolicyArn"])
            except ClientError as exc:  # then DeleteUser says what is attached, if anything
                if not (_unsupported(exc) or _status(exc) == 403):
                    raise
            iam.delete_user(UserName=user)
        except ClientError as exc:
            if not _missing(exc):
                raise

    # -- Provider ---------------------------------------------------------------------------------

    def check(self, cluster: ClusterSpec) -> str:
        """List buckets with the admin key (and IAM users when `iam` is on); return what the
        server calls itself (e.g. "SeaweedFS 8000GB 4.48", "AmazonS3"). With `iam` off the
        answer says instances share the admin key."""
        target = _Target.parse(cluster)
        try:
            answer = self._client(target, "s3", attempts=1,
                                  read_timeout=CHECK_READ_TIMEOUT).list_buckets()
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, target, "listing buckets") from None
        server = str(answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server")
                     or "s3").strip()[:60]
        if target.iam:
            try:
                self._client(target, "iam", attempts=1,
                             read_timeout=CHECK_READ_TIMEOUT).list_users(MaxItems=1)
            except (BotoCoreError, ClientError) as exc:
                raise _iam_error(exc, target) from None
        else:
            log.warning("S3 cluster %s has iam=false: every instance gets the admin key, which "
                        "reaches every bucket (not least-privilege)", target.where)
            server += " (iam off: instances share the admin key, not least-privilege)"
        warning = target.dsn_warning()
        if warning:
            log.warning("S3 cluster %s: %s", target.where, warning)
        return server

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: the bucket (the admin's), open to public-read media; with `iam`, the
        user, its policy and one working key (see the module docstring). When the bucket was
        not there before this call and the call fails, everything is removed again (rule 5)."""
        target = _Target.parse(cluster)
        bucket = target.bucket(names)
        hidden = (secret, *target.secrets)
        s3 = self._client(target, "s3")
        made_bucket = made_user = on_iam = False
        key_id, secret_key = target.access_key, target.secret_key
        try:
            made_bucket = self._create_bucket(s3, target, bucket)
            self._allow_public_media(s3, bucket)
            if target.iam:
                on_iam = True
                iam = self._client(target, "iam")
                made_user = self._ensure_user(iam, bucket)
                self._converge_policies(iam, bucket)
                key_id, secret_key = self._converge_key(iam, bucket, secret)
                on_iam = False
                self._wait_until_usable(target, bucket, key_id, secret_key)
        except (BotoCoreError, ClientError, ClusterError) as exc:
            if isinstance(exc, ClusterError):
                error = exc
            elif on_iam and not (isinstance(exc, ClientError) and _status(exc) not in (
                    403, 404, 405, 501)):
                error = _iam_error(exc, target)
            else:
                doing = (f"setting up the IAM user {bucket}" if on_iam
                         else f"creating the bucket {bucket}")
                error = _error(exc, target, doing, hidden)
            failure = error.message
            if not isinstance(error, TransientError) and (made_bucket or made_user):
                # what this call made, and nothing else (rule 5; a repair keeps the rest)
                try:
                    if made_bucket:
                        self._remove_bucket(s3, target, bucket)
                    if made_user:
                        self._delete_user(self._client(target, "iam"), bucket)
                except Exception as cleanup_exc:  # recorded; a retry converges
                    failure += f" (clean-up also failed: {_detail(cleanup_exc, hidden)})"
            raise rewrap(error, f"provisioning {bucket} on S3 at {target.where} failed: "
                                f"{redact(failure, hidden)}") from None
        return Credentials({
            "bucket": bucket, "access_key_id": key_id, "secret_access_key": secret_key,
            "endpoint": target.app_host, "endpoint_url": target.app_endpoint,
            "region": target.region, "addressing_style": target.addressing_style,
            "cdn_domain": target.cdn_domain, "iam": target.iam,
        })

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        """Whether the instance's bucket (the admin's) or its IAM user is there."""
        target = _Target.parse(cluster)
        bucket = target.bucket(names)
        try:
            if self._bucket_state(self._client(target, "s3"), bucket) == "ours":
                return True
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, target, f"looking up the bucket {bucket}") from None
        if not target.iam:
            return False
        try:
            self._client(target, "iam").get_user(UserName=bucket)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise _iam_error(exc, target) from None
        except BotoCoreError as exc:
            raise _iam_error(exc, target) from None
        return True

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The bucket (there, the admin's); with `iam`, the user (there), its policy (the one
        reaching its bucket, and no other) and its key (exactly one, active, the one Tether
        made and sealed)."""
        target = _Target.parse(cluster)
        bucket = target.bucket(names)
        differences: list[str] = []
        try:
            state = self._bucket_state(self._client(target, "s3"), bucket)
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, target, f"looking up the bucket {bucket}") from None
        if state == "missing":
            differences.append(lost(f"bucket {bucket}"))
        elif state == "foreign":
            differences.append(f"bucket {bucket} belongs to someone else: Tether does not take "
                               "it over")
        user_there = False
        if target.iam:
            try:
                user_there = self._observe_user(self._client(target, "iam"), bucket, differences)
            except (BotoCoreError, ClientError) as exc:
                raise _iam_error(exc, target) from None
        return Observation(exists=state == "ours" or user_there,
                           differences=tuple(differences))

    def _observe_user(self, iam: Any, user: str, differences: list[str]) -> bool:
        """Add what differs of the IAM user to `differences`; whether the user is there."""
        try:
            iam.get_user(UserName=user)
        except ClientError as exc:
            if not _missing(exc):
                raise
            differences.append(f"IAM user {user} is missing (the application's key went with "
                               "it: a repair makes a new one)")
            return False
        document, others, attached = self._policies(iam, user)
        if document is None:
            differences.append(f"IAM user {user} has no policy {POLICY_NAME}: its key reaches "
                               "nothing")
        elif document != bucket_policy(user):
            differences.append(f"the policy {POLICY_NAME} of IAM user {user} is not the one "
                               "that reaches its bucket alone")
        differences += [f"IAM user {user} has another policy {name}" for name in others]
        differences += [f"IAM user {user} has the attached policy {arn}" for arn in attached]
        keys = iam.list_access_keys(UserName=user).get("AccessKeyMetadata", [])
        if not keys:
            differences.append(f"IAM user {user} has no access key (a repair makes a new one)")
        elif len(keys) > 1:
            differences.append(f"IAM user {user} has {len(keys)} access keys, not one")
        else:
            key_id = str(keys[0]["AccessKeyId"])
            if keys[0].get("Status", "Active") != "Active":
                differences.append(f"the access key {key_id} of IAM user {user} is inactive")
            sealed = self._sealed_tag(iam, user)
            if sealed is not None and sealed.partition(":")[0] != key_id:
                differences.append(f"the access key {key_id} of IAM user {user} is not the one "
                                   "Tether made (a repair makes a new one)")
        return True

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Delete every object (and version), the bucket, then the IAM user's keys, policy and
        the user. A bucket of that name owned by someone else is left alone."""
        target = _Target.parse(cluster)
        bucket = target.bucket(names)
        try:
            self._remove_bucket(self._client(target, "s3"), target, bucket)
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, target, f"deleting the bucket {bucket}") from None
        if target.iam:
            try:
                self._delete_user(self._client(target, "iam"), bucket)
            except (BotoCoreError, ClientError) as exc:
                error = _iam_error(exc, target)
                raise rewrap(error, f"deleting the IAM user {bucket} failed: {error.message}"
                             ) from None

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        """`{P}_STORAGE_DSN` (see `storage_dsn`)."""
        return naming.storage_vars(prefix, storage_dsn(credentials))


PROVIDER = S3Provider
