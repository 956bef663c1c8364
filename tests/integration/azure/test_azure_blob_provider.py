"""AzureBlobProvider against a real Azurite: container-scoped SAS isolation, idempotence, SAS
renewal, removal, check() errors, and a real application client (django-storage-url) reading the
DSN. No mocks."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import AccessPolicy, BlobServiceClient, ContainerClient

from tests.integration.azure.conftest import ACCOUNT, ACCOUNT_KEY, Azurite, cluster_url
from tests.integration.provider_contract import (
    check_final,
    check_observe_follows_provision,
    check_unreachable_is_transient,
)
from tether.errors import ClusterError
from tether.net import free_port
from tether.providers.azure_blob import (
    RENEW_BEFORE,
    SAS_LIFETIME,
    AzureBlobProvider,
    container_name,
    storage_dsn,
)
from tether.providers.base import ClusterSpec, Credentials, ResourceNames

pytestmark = pytest.mark.integration

PROVIDER = AzureBlobProvider()
REPO = Path(__file__).resolve().parents[3]


def spec(url: str, **settings: object) -> ClusterSpec:
    return ClusterSpec(id=1, kind="azure-blob", region="eu-azure", url=url, settings=settings)


def admin_endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"http://{parts.hostname}:{parts.port}{parts.path}"


def admin(cluster: ClusterSpec) -> BlobServiceClient:
    parts = urlsplit(cluster.url)
    key = {"account_name": unquote(parts.username or ""),
           "account_key": unquote(parts.password or "")}
    return BlobServiceClient(admin_endpoint(cluster.url), credential=key)


def tenant(cluster: ClusterSpec, creds: Credentials, container: str | None = None
           ) -> ContainerClient:
    """A client as an application holds it: the instance's SAS token and nothing else."""
    return ContainerClient(admin_endpoint(cluster.url), container or creds.values["container"],
                           credential=creds.values["sas_token"])


def container_exists(cluster: ClusterSpec, name: str) -> bool:
    with admin(cluster) as service:
        return any(c.name == name for c in service.list_containers(name_starts_with=name))


@pytest.fixture
def cluster(azurite_url: str) -> ClusterSpec:
    return spec(azurite_url)


@pytest.fixture
def make_names(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this run; whatever they name is deprovisioned at the end."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> ResourceNames:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        return names

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


def at(moment: datetime) -> AzureBlobProvider:
    return AzureBlobProvider(clock=lambda: moment)


# -- provisioning and isolation --------------------------------------------------------------------


def test_check_returns_the_api_version(cluster: ClusterSpec) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", PROVIDER.check(cluster))


def test_the_sas_reaches_its_container_for_everything_an_app_does(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("a")
    creds = PROVIDER.provision(cluster, names, "unused")
    c = creds.values
    assert c["container"] == container_name(names) == names.base.replace("_", "-")
    assert c["account"] == ACCOUNT
    assert PROVIDER.exists(cluster, names)
    expires = datetime.fromisoformat(c["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=364) < expires - datetime.now(UTC) <= SAS_LIFETIME
    token = c["sas_token"]
    assert "sr=c" in token and "sp=racwdl" in token
    assert ACCOUNT_KEY not in json.dumps(c) and quote(ACCOUNT_KEY, safe="") not in json.dumps(c)

    app = tenant(cluster, creds)
    app.upload_blob("media/a.txt", b"hello", overwrite=True)
    app.upload_blob("media/b.txt", b"world", overwrite=True)
    app.upload_blob("media/a.txt", b"hello again", overwrite=True)
    assert sorted(b.name for b in app.list_blobs()) == ["media/a.txt", "media/b.txt"]
    assert app.download_blob("media/a.txt").readall() == b"hello again"
    app.delete_blob("media/b.txt")
    assert [b.name for b in app.list_blobs()] == ["media/a.txt"]

    # ... and nothing beyond its container
    with pytest.raises(HttpResponseError) as err:
        app.delete_container()
    assert err.value.status_code == 403
    service = BlobServiceClient(admin_endpoint(cluster.url), credential=token)
    with pytest.raises(HttpResponseError) as err:
        list(service.list_containers())
    assert err.value.status_code == 403
    with pytest.raises(HttpResponseError) as err:
        service.create_container(container_name(names) + "-x")
    assert err.value.status_code == 403


def test_the_sas_of_another_instance_gets_403(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_names("a"), make_names("b")
    creds_a = PROVIDER.provision(cluster, a, "unused")
    creds_b = PROVIDER.provision(cluster, b, "unused")
    tenant(cluster, creds_a).upload_blob("secret.txt", b"only for a")
    intruder = tenant(cluster, creds_b, container=creds_a.values["container"])
    for attempt in (lambda: intruder.download_blob("secret.txt").readall(),
                    lambda: list(intruder.list_blobs()),
                    lambda: intruder.upload_blob("planted.txt", b"x"),
                    lambda: intruder.delete_blob("secret.txt")):
        with pytest.raises(HttpResponseError) as err:
            attempt()
        assert err.value.status_code == 403
    assert [x.name for x in tenant(cluster, creds_a).list_blobs()] == ["secret.txt"]


def test_provision_twice_is_idempotent(cluster: ClusterSpec,
                                       make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("i")
    now = datetime.now(UTC).replace(microsecond=0)
    first = at(now).provision(cluster, names, "unused")
    tenant(cluster, first).upload_blob("kept.txt", b"still here")
    second = at(now).provision(cluster, names, "unused")
    assert first == second  # the SAS is derived: same moment, same token
    later = PROVIDER.provision(cluster, names, "unused")  # a retry later: a valid token too
    for creds in (first, later):
        assert tenant(cluster, creds).download_blob("kept.txt").readall() == b"still here"
    with admin(cluster) as service:
        assert [c.name for c in service.list_containers(
            name_starts_with=container_name(names))] == [container_name(names)]


def test_remove_deletes_the_container_and_every_blob(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("d")
    creds = PROVIDER.provision(cluster, names, "unused")
    app = tenant(cluster, creds)
    for n in range(5):
        app.upload_blob(f"dir/{n}.bin", secrets.token_bytes(64))
    PROVIDER.deprovision(cluster, names)
    assert not container_exists(cluster, creds.values["container"])
    assert not PROVIDER.exists(cluster, names)
    with pytest.raises(ResourceNotFoundError):  # the blobs went with the container
        tenant(cluster, creds).download_blob("dir/0.bin").readall()
    with pytest.raises(HttpResponseError):
        list(tenant(cluster, creds).list_blobs())
    with pytest.raises(HttpResponseError):  # the SAS cannot bring the container back
        tenant(cluster, creds).upload_blob("again.txt", b"x")
    with pytest.raises(HttpResponseError):
        tenant(cluster, creds).create_container()
    assert not container_exists(cluster, creds.values["container"])
    PROVIDER.deprovision(cluster, names)  # already gone: still succeeds


def test_a_container_of_someone_else_is_never_taken_over(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("o")
    with admin(cluster) as service:
        service.create_container(container_name(names)).upload_blob("theirs.txt", b"keep me")
        try:
            with pytest.raises(ClusterError, match="exists already"):
                PROVIDER.provision(cluster, names, "unused")
            assert not PROVIDER.exists(cluster, names)
            PROVIDER.deprovision(cluster, names)  # not ours: left alone
            blob = service.get_container_client(container_name(names)).download_blob(
                "theirs.txt")
            assert blob.readall() == b"keep me"
        finally:
            service.delete_container(container_name(names))


# -- drift: observe, repair by provisioning again --------------------------------------------------


def test_observe_is_in_sync_after_provision_and_absent_after_deprovision(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    check_observe_follows_provision(PROVIDER, cluster, make_names("s"))


def test_a_deleted_container_is_found_and_made_again_empty(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("x")
    creds = PROVIDER.provision(cluster, names, "unused")
    tenant(cluster, creds).upload_blob("kept.txt", b"v")
    with admin(cluster) as service:
        service.delete_container(container_name(names))
    seen = PROVIDER.observe(cluster, names)
    assert not seen.exists
    assert seen.differences == (f"container {container_name(names)} is missing: its data is "
                                "lost (a repair makes it again, EMPTY)",)
    again = PROVIDER.provision(cluster, names, "unused")
    assert PROVIDER.observe(cluster, names).in_sync
    assert list(tenant(cluster, again).list_blobs()) == []
    tenant(cluster, creds).upload_blob("new.txt", b"v")  # the old SAS reaches it again


def test_public_access_and_stored_policies_are_found_and_removed(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("p")
    PROVIDER.provision(cluster, names, "unused")
    container = container_name(names)
    with admin(cluster) as service:
        service.get_container_client(container).set_container_access_policy(
            signed_identifiers={"backdoor": AccessPolicy(
                permission="rl", expiry=datetime.now(UTC) + timedelta(days=1))},
            public_access="container")
    assert PROVIDER.observe(cluster, names).differences == (
        f"container {container} allows public access (container)",
        f"container {container} allows the stored access policies backdoor")
    PROVIDER.provision(cluster, names, "unused")
    assert PROVIDER.observe(cluster, names).in_sync


# -- errors that may pass, and final ones ----------------------------------------------------------


def test_an_endpoint_where_nothing_listens_is_a_transient_error(
        make_names: Callable[[str], ResourceNames]) -> None:
    check_unreachable_is_transient(PROVIDER, spec(cluster_url(free_port())), make_names("t"),
                                   "cannot reach Azure Blob storage at http://127.0.0.1:",
                                   ACCOUNT_KEY)


def test_a_wrong_key_is_a_final_error(cluster: ClusterSpec,
                                      make_names: Callable[[str], ResourceNames]) -> None:
    parts = urlsplit(cluster.url)
    wrong = cluster_url(int(parts.port or 0), str(parts.hostname),
                        key=ACCOUNT_KEY[:-12] + "AAAAAAAAAA==")
    check_final(lambda: PROVIDER.observe(spec(wrong), make_names("v")),
                "refused the account key")


# -- SAS renewal -----------------------------------------------------------------------------------


def test_a_sas_near_expiry_is_renewed_with_a_new_token(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("n")
    now = datetime.now(UTC).replace(microsecond=0)
    issued = now - SAS_LIFETIME + RENEW_BEFORE - timedelta(days=5)  # expires in 25 days
    old = at(issued).provision(cluster, names, "unused")
    tenant(cluster, old).upload_blob("before.txt", b"made with the old token")
    assert not PROVIDER.needs_renewal(old, issued + timedelta(days=1))
    assert PROVIDER.needs_renewal(old, now)
    assert PROVIDER.needs_renewal(Credentials({**old.values, "expires_at": None}), now)

    new = PROVIDER.renew(cluster, names, old)
    assert new.values["sas_token"] != old.values["sas_token"]
    assert new.values["expires_at"] > old.values["expires_at"]
    assert {k: v for k, v in new.values.items() if k not in ("sas_token", "expires_at")} == \
        {k: v for k, v in old.values.items() if k not in ("sas_token", "expires_at")}
    assert not PROVIDER.needs_renewal(new, now)
    assert PROVIDER.env_vars("DEFAULT", new) != PROVIDER.env_vars("DEFAULT", old)
    app = tenant(cluster, new)
    assert app.download_blob("before.txt").readall() == b"made with the old token"
    app.upload_blob("after.txt", b"new token")
    # the running release keeps working with the old token until its own expiry
    assert tenant(cluster, old).download_blob("after.txt").readall() == b"new token"

    PROVIDER.deprovision(cluster, names)
    with pytest.raises(ClusterError, match="no longer on Azure Blob storage"):
        PROVIDER.renew(cluster, names, new)
    assert not container_exists(cluster, new.values["container"])  # never re-made empty


def test_an_expired_sas_is_refused_by_the_server(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("x")
    expired = at(datetime.now(UTC) - SAS_LIFETIME - timedelta(hours=1)).provision(
        cluster, names, "unused")
    with pytest.raises(HttpResponseError) as err:
        tenant(cluster, expired).upload_blob("late.txt", b"x")
    assert err.value.status_code == 403
    tenant(cluster, PROVIDER.renew(cluster, names, expired)).upload_blob("late.txt", b"x")


# -- environment variables and a real application client ------------------------------------------


def test_env_vars_give_an_az_dsn(cluster: ClusterSpec,
                                 make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("e")
    creds = PROVIDER.provision(cluster, names, "unused")
    env = PROVIDER.env_vars("MEDIA", creds)
    assert set(env) == {"MEDIA_STORAGE_DSN"}
    port = urlsplit(cluster.url).port
    dsn = env["MEDIA_STORAGE_DSN"]
    assert dsn.startswith(f"az://{ACCOUNT}:")
    assert f"@blob.localhost:{port}/{creds.values['container']}?url=" in dsn
    assert unquote(dsn.split("?url=", 1)[1]) == f"http://{ACCOUNT}.blob.localhost:{port}/"
    assert creds.values["sas_token"] not in dsn  # base64-wrapped, as django-storage-url reads it


_DJANGO_PARSE = textwrap.dedent("""
    import json, os
    from django.conf import settings

    settings.configure()
    from django_storage_url import get_storage

    s = get_storage(os.environ["DSN"])
    print(json.dumps({"account": s.account_name, "sas": s.sas_token, "key": s.account_key,
                      "container": s.azure_container, "ssl": s.azure_ssl,
                      "base_url": s.base_url}))
""")


def django_parse(dsn: str) -> dict[str, object]:
    """What django-storage-url makes of a DSN (in a subprocess: Django settings are global)."""
    result = subprocess.run([sys.executable, "-c", _DJANGO_PARSE], env={**os.environ, "DSN": dsn},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_dsn_for_real_azure_has_the_documented_shape() -> None:
    token = "se=2030-01-01T00%3A00%3A00Z&sp=racwdl&sv=2026-10-06&sr=c&sig=abc%2Bdef%2F%3D"
    creds = Credentials({"account": "shopmedia", "container": "tether-i42", "sas_token": token,
                         "expires_at": "2030-01-01T00:00:00Z",
                         "endpoint": "https://shopmedia.blob.core.windows.net",
                         "cdn_domain": None})
    plain = PROVIDER.env_vars("DEFAULT", creds)["DEFAULT_STORAGE_DSN"]
    assert plain == storage_dsn(creds)
    assert re.fullmatch(r"az://shopmedia:[A-Za-z0-9%]+@blob\.core\.windows\.net/tether-i42",
                        plain)
    with_cdn = storage_dsn(Credentials({**creds.values, "cdn_domain": "media.example.com"}))
    assert with_cdn == plain + "?domain=media.example.com"
    assert django_parse(plain) == {
        "account": "shopmedia", "sas": token, "key": None, "container": "tether-i42",
        "ssl": True, "base_url": "https://shopmedia.blob.core.windows.net/tether-i42/"}
    assert django_parse(with_cdn)["base_url"] == "https://media.example.com/tether-i42/"


_DJANGO_APP = textwrap.dedent("""
    import json, os, socket, sys

    # Names under .localhost are the loopback address (RFC 6761), as systemd-resolved and
    # nss-myhostname answer; this machine's resolver does not, so the app does it here.
    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return _getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo

    import furl
    from django.conf import settings

    dsn = os.environ["MEDIA_STORAGE_DSN"]
    parsed = furl.furl(dsn)
    settings.configure(
        MEDIA_STORAGE_DSN=dsn,
        # django-storages always connects to ACCOUNT.blob.<AZURE_ENDPOINT_SUFFIX>
        AZURE_ENDPOINT_SUFFIX=f"{parsed.host.removeprefix('blob.')}:{parsed.port}",
    )
    import django
    django.setup()
    from django.core.files.base import ContentFile
    from django_storage_url import dsn_configured_storage

    storage = dsn_configured_storage("MEDIA_STORAGE_DSN")
    kept = storage.save("uploads/kept.txt", ContentFile(b"saved by django"))
    gone = storage.save("uploads/gone.txt", ContentFile(b"deleted by django"))
    with storage.open(kept) as f:
        body = f.read().decode()
    exists_before = storage.exists(gone)
    storage.delete(gone)
    print(json.dumps({"kept": kept, "body": body, "url": storage.url(kept),
                      "sas": bool(storage.sas_token), "key": bool(storage.account_key),
                      "exists_before": exists_before, "exists_after": storage.exists(gone),
                      "listing": storage.listdir("uploads")[1]}))
""")


def test_django_storage_url_saves_and_reads_with_the_dsn(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("j")
    creds = PROVIDER.provision(cluster, names, "unused")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    env.update(PROVIDER.env_vars("MEDIA", creds))
    result = subprocess.run([sys.executable, "-c", _DJANGO_APP], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["sas"] and not out["key"]  # it read the SAS token, not an account key
    assert out["kept"] == "uploads/kept.txt" and out["body"] == "saved by django"
    assert out["exists_before"] and not out["exists_after"]
    assert out["listing"] == ["uploads/kept.txt"] or out["listing"] == ["kept.txt"]
    port = urlsplit(cluster.url).port
    assert out["url"] == (f"http://{ACCOUNT}.blob.localhost:{port}/"
                          f"{creds.values['container']}/uploads/kept.txt")
    # what the app wrote is in the instance's container, seen by the admin
    with admin(cluster) as service:
        box = service.get_container_client(creds.values["container"])
        assert [b.name for b in box.list_blobs()] == ["uploads/kept.txt"]
        assert box.download_blob("uploads/kept.txt").readall() == b"saved by django"


# -- check() ---------------------------------------------------------------------------------------


def test_check_says_how_to_fix_a_wrong_key(cluster: ClusterSpec) -> None:
    wrong = ACCOUNT_KEY[:-12] + "AAAAAAAAAA=="
    parts = urlsplit(cluster.url)
    wrong_url = cluster_url(int(parts.port or 0), str(parts.hostname), key=wrong)
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(wrong_url))
    message = err.value.message
    assert "refused the account key" in message and "fix the key" in message
    for secret in (wrong, quote(wrong, safe=""), ACCOUNT_KEY):
        assert secret not in message
    with pytest.raises(ClusterError, match="refused the account key"):
        PROVIDER.provision(spec(wrong_url),
                           ResourceNames(base="tether_tnever"), "unused")


def test_check_says_how_to_fix_an_unreachable_endpoint() -> None:
    port = free_port()
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(cluster_url(port)))
    message = err.value.message
    assert f"cannot reach Azure Blob storage at http://127.0.0.1:{port}/{ACCOUNT}" in message
    assert "host and port" in message and ACCOUNT_KEY not in message


def test_check_says_how_to_fix_an_unknown_account(cluster: ClusterSpec) -> None:
    parts = urlsplit(cluster.url)
    url = cluster_url(int(parts.port or 0), str(parts.hostname), account="nosuchaccount")
    with pytest.raises(ClusterError, match="no storage account 'nosuchaccount'"):
        PROVIDER.check(spec(url))


@pytest.mark.parametrize("url, fix", [
    (f"azure+http://{ACCOUNT}:{ACCOUNT_KEY}@127.0.0.1:10000/{ACCOUNT}", "key URL-encoded"),
    (f"azure+http://{ACCOUNT}:{ACCOUNT_KEY[:20]}%21@127.0.0.1:10000/{ACCOUNT}",
     "not valid base64"),
    (f"azure://{ACCOUNT}:not-base64!!@127.0.0.1:notaport/{ACCOUNT}", "not a valid Azure Blob URL"),
    (f"s3://{ACCOUNT}:{quote(ACCOUNT_KEY, safe='')}@127.0.0.1:10000/", "not a valid Azure Blob"),
    (f"azure://{ACCOUNT}:{quote(ACCOUNT_KEY, safe='')}@storage.example.com", "app_endpoint"),
])
def test_a_bad_url_is_refused_without_echoing_the_key(url: str, fix: str) -> None:
    with pytest.raises(ClusterError, match=fix) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    for secret in (ACCOUNT_KEY, quote(ACCOUNT_KEY, safe=""), "not-base64!!", ACCOUNT_KEY[:20],
                   ACCOUNT_KEY.split("/")[0]):
        assert secret not in message


def test_an_azurite_that_checks_api_versions(
        start_azurite: Callable[..., Azurite], unique_id: str) -> None:
    strict = start_azurite(skip_api_version_check=False)
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(strict.url))
    assert "api_version" in err.value.message and "--skipApiVersionCheck" in err.value.message
    pinned = spec(strict.url, api_version="2025-11-05")
    assert PROVIDER.check(pinned) == "2025-11-05"
    names = ResourceNames(base=f"tether_t{unique_id}v")
    creds = PROVIDER.provision(pinned, names, "unused")
    app = ContainerClient(admin_endpoint(strict.url), creds.values["container"],
                          credential=creds.values["sas_token"], api_version="2025-11-05")
    app.upload_blob("v.txt", b"ok")
    PROVIDER.deprovision(pinned, names)
    assert not PROVIDER.exists(pinned, names)
