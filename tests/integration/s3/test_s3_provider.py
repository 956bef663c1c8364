"""S3Provider against a real S3 server with an enforcing IAM API (SeaweedFS): the instance's own
key reaches its bucket and nothing else, idempotence and convergence of access keys, removal of
everything, clean failure; and django-storage-url, the client applications use, reading the DSNs
of s3 and local-files instances. No mocks."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select

from tests.conftest import world_traversable_tmpdir
from tests.integration.provider_contract import (
    check_final,
    check_observe_follows_provision,
    check_unreachable_is_transient,
)
from tests.integration.s3.conftest import S3Server
from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import projects, services
from tether.engine.reconcile import Reconciler
from tether.errors import ClusterError
from tether.net import free_port
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.local_files import LocalFilesProvider
from tether.providers.s3 import POLICY_NAME, SEALED_KEY_TAG, S3Provider
from tether.store.models import AuditEntry, Instance

pytestmark = pytest.mark.integration

PROVIDER = S3Provider()


def spec(url: str, **settings: Any) -> ClusterSpec:
    return ClusterSpec(id=1, kind="s3", region="eu-test", url=url,
                       settings={"endpoint_scheme": "http", **settings})


def code_of(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code")
               or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def denied(call: Callable[[], Any]) -> str:
    """Run an S3 call that must be refused; return the error code."""
    with pytest.raises(ClientError) as err:
        call()
    code = code_of(err.value)
    assert code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"), code
    return code


def own_client(server: S3Server, creds: Credentials) -> Any:
    c = creds.values
    return server.client("s3", str(c["access_key_id"]), str(c["secret_access_key"]))


def bucket_exists(server: S3Server, bucket: str) -> bool:
    try:
        server.client().head_bucket(Bucket=bucket)
    except ClientError as exc:
        if code_of(exc) in ("404", "NoSuchBucket"):
            return False
        raise
    return True


def user_exists(server: S3Server, user: str) -> bool:
    try:
        server.client("iam").get_user(UserName=user)
    except ClientError as exc:
        if code_of(exc) in ("NoSuchEntity", "404"):
            return False
        raise
    return True


def access_keys(server: S3Server, user: str) -> list[str]:
    answer = server.client("iam").list_access_keys(UserName=user)
    return [k["AccessKeyId"] for k in answer.get("AccessKeyMetadata", [])]


@pytest.fixture
def cluster(s3_server: S3Server) -> ClusterSpec:
    return spec(s3_server.url)


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


# -- check ----------------------------------------------------------------------------------------


def test_check_names_the_server(cluster: ClusterSpec) -> None:
    answer = PROVIDER.check(cluster)
    assert answer and "not least-privilege" not in answer


def test_check_says_how_to_fix_a_wrong_secret(s3_server: S3Server) -> None:
    wrong = "Wr0ng-" + secrets.token_hex(8)
    url = f"s3://{s3_server.access_key}:{wrong}@{urlsplit(s3_server.endpoint).netloc}/"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    assert "refused the secret key" in message and "fix" in message
    assert wrong not in message and s3_server.secret_key not in message


def test_check_says_how_to_fix_an_unknown_key(s3_server: S3Server) -> None:
    url = f"s3://NOSUCHKEY{secrets.token_hex(4)}:whatever@{urlsplit(s3_server.endpoint).netloc}/"
    with pytest.raises(ClusterError, match="does not know the access key"):
        PROVIDER.check(spec(url))


def test_check_says_how_to_fix_an_unreachable_endpoint(s3_server: S3Server) -> None:
    port = free_port()
    url = f"s3://{s3_server.access_key}:{quote(s3_server.secret_key, safe='')}@127.0.0.1:{port}/"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    assert f"cannot reach S3 at http://127.0.0.1:{port}" in message
    assert "host, port and endpoint_scheme" in message
    assert s3_server.secret_key not in message


def test_bad_urls_and_settings_are_refused_without_echoing_secrets() -> None:
    with pytest.raises(ClusterError, match="not a valid S3 URL") as err:
        PROVIDER.check(spec("s3://key:s3cret-pw@host:notaport/"))
    assert "s3cret-pw" not in err.value.message
    with pytest.raises(ClusterError, match="not a valid S3 URL"):
        PROVIDER.check(spec("postgres://key:s3cret-pw@host/"))
    for settings, fragment in (({"endpoint_scheme": "ftp"}, "endpoint_scheme"),
                               ({"addressing_style": "sideways"}, "addressing_style"),
                               ({"iam": "maybe"}, "iam setting"),
                               ({"cdn_domain": "https://cdn.example.com/x"}, "cdn_domain"),
                               ({"app_endpoint": "https://h/path"}, "app_endpoint"),
                               ({"name_prefix": "Acme_"}, "name_prefix")):
        with pytest.raises(ClusterError, match=fragment):
            PROVIDER.check(spec("s3://key:s3cret-pw@127.0.0.1:1/", **settings))


# -- provision, isolation, removal ----------------------------------------------------------------


def test_instance_key_reaches_its_own_bucket_only_and_remove_deletes_everything(
        s3_server: S3Server, cluster: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_names("a"), make_names("b")
    creds_a = PROVIDER.provision(cluster, a, secrets.token_urlsafe(24))
    creds_b = PROVIDER.provision(cluster, b, secrets.token_urlsafe(24))
    bucket_a, bucket_b = str(creds_a.values["bucket"]), str(creds_b.values["bucket"])
    assert bucket_a == a.base.replace("_", "-")
    assert creds_a.values["access_key_id"] != s3_server.access_key
    assert PROVIDER.exists(cluster, a)

    client_a, client_b = own_client(s3_server, creds_a), own_client(s3_server, creds_b)
    client_a.put_object(Bucket=bucket_a, Key="photos/cat.jpg", Body=b"meow")
    assert client_a.get_object(Bucket=bucket_a, Key="photos/cat.jpg")["Body"].read() == b"meow"
    listed = client_a.list_objects_v2(Bucket=bucket_a)["Contents"]
    assert [o["Key"] for o in listed] == ["photos/cat.jpg"]

    # the other instance's key reaches nothing of a's bucket, and a's nothing of b's
    denied(lambda: client_b.get_object(Bucket=bucket_a, Key="photos/cat.jpg"))
    denied(lambda: client_b.put_object(Bucket=bucket_a, Key="evil", Body=b"x"))
    denied(lambda: client_b.list_objects_v2(Bucket=bucket_a))
    denied(lambda: client_b.delete_object(Bucket=bucket_a, Key="photos/cat.jpg"))
    denied(lambda: client_a.list_objects_v2(Bucket=bucket_b))
    # nor can it make buckets or touch IAM
    denied(lambda: client_a.create_bucket(Bucket=f"{bucket_a}-extra"))
    assert not bucket_exists(s3_server, f"{bucket_a}-extra")
    iam_a = s3_server.client("iam", str(creds_a.values["access_key_id"]),
                             str(creds_a.values["secret_access_key"]))
    with pytest.raises(ClientError):
        iam_a.create_access_key(UserName=bucket_b)
    assert len(access_keys(s3_server, bucket_b)) == 1

    # presigned URLs work for the instance's own objects, and only with its own key
    url = client_a.generate_presigned_url(
        "get_object", Params={"Bucket": bucket_a, "Key": "photos/cat.jpg"}, ExpiresIn=300)
    assert httpx.get(url, timeout=10).content == b"meow"
    forged = client_b.generate_presigned_url(
        "get_object", Params={"Bucket": bucket_a, "Key": "photos/cat.jpg"}, ExpiresIn=300)
    assert httpx.get(forged, timeout=10).status_code == 403

    PROVIDER.deprovision(cluster, a)
    assert not bucket_exists(s3_server, bucket_a)
    assert not user_exists(s3_server, bucket_a)
    assert not PROVIDER.exists(cluster, a)
    denied(lambda: client_a.list_objects_v2(Bucket=bucket_b))
    with pytest.raises(ClientError) as err:
        client_a.list_buckets()
    assert code_of(err.value) in ("InvalidAccessKeyId", "AccessDenied", "403")
    PROVIDER.deprovision(cluster, a)  # already gone: still fine
    # b is untouched
    client_b.put_object(Bucket=bucket_b, Key="still", Body=b"here")


def test_provision_twice_is_idempotent(s3_server: S3Server, cluster: ClusterSpec,
                                       make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("i")
    secret = secrets.token_urlsafe(24)
    first = PROVIDER.provision(cluster, names, secret)
    second = PROVIDER.provision(cluster, names, secret)
    assert first == second
    bucket = str(first.values["bucket"])
    assert access_keys(s3_server, bucket) == [first.values["access_key_id"]]
    names_listed = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert names_listed.count(bucket) == 1
    own_client(s3_server, second).put_object(Bucket=bucket, Key="k", Body=b"v")
    # data survives a further provision
    assert PROVIDER.provision(cluster, names, secret) == first
    assert own_client(s3_server, first).get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_another_secret_replaces_the_key(s3_server: S3Server, cluster: ClusterSpec,
                                         make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("r")
    old = PROVIDER.provision(cluster, names, "first-" + secrets.token_urlsafe(12))
    new = PROVIDER.provision(cluster, names, "second-" + secrets.token_urlsafe(12))
    bucket = str(new.values["bucket"])
    assert new.values["access_key_id"] != old.values["access_key_id"]
    assert access_keys(s3_server, bucket) == [new.values["access_key_id"]]
    own_client(s3_server, new).put_object(Bucket=bucket, Key="k", Body=b"v")
    denied(lambda: own_client(s3_server, old).list_objects_v2(Bucket=bucket))


def test_a_retry_after_a_crash_converges_to_one_working_key(
        s3_server: S3Server, cluster: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    """A crash after CreateAccessKey, before the key was sealed (or the engine stored the
    answer): the retry must not pile up keys, and what it returns must work."""
    names = make_names("c")
    secret = secrets.token_urlsafe(24)
    first = PROVIDER.provision(cluster, names, secret)
    bucket = str(first.values["bucket"])
    iam = s3_server.client("iam")
    stray = iam.create_access_key(UserName=bucket)["AccessKey"]["AccessKeyId"]  # never sealed
    assert len(access_keys(s3_server, bucket)) == 2
    again = PROVIDER.provision(cluster, names, secret)
    assert access_keys(s3_server, bucket) == [again.values["access_key_id"]]
    assert again.values["access_key_id"] not in (stray, first.values["access_key_id"])
    own_client(s3_server, again).put_object(Bucket=bucket, Key="k", Body=b"v")
    # and a lost seal (one key, no tag) is replaced too
    iam.untag_user(UserName=bucket, TagKeys=[SEALED_KEY_TAG])
    third = PROVIDER.provision(cluster, names, secret)
    assert access_keys(s3_server, bucket) == [third.values["access_key_id"]]
    assert third.values["access_key_id"] != again.values["access_key_id"]
    assert own_client(s3_server, third).get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert PROVIDER.provision(cluster, names, secret) == third


def test_env_vars_give_the_dsn(cluster: ClusterSpec, s3_server: S3Server,
                               make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("e")
    with_cdn = spec(s3_server.url, cdn_domain="media.example.test")
    creds = PROVIDER.provision(with_cdn, names, secrets.token_urlsafe(24))
    env = PROVIDER.env_vars("DEFAULT", creds)
    assert set(env) == {"DEFAULT_STORAGE_DSN"}
    assert set(PROVIDER.env_vars("MEDIA", creds)) == {"MEDIA_STORAGE_DSN"}
    dsn = urlsplit(env["DEFAULT_STORAGE_DSN"])
    assert dsn.scheme == "s3"
    assert unquote(dsn.username or "") == creds.values["access_key_id"]
    assert unquote(dsn.password or "") == creds.values["secret_access_key"]
    assert dsn.netloc.rsplit("@", 1)[1] == (f"{creds.values['bucket']}."
                                            f"{urlsplit(s3_server.endpoint).netloc}")
    assert dsn.path == "/"
    query = parse_qs(dsn.query)
    assert query["auth"] == ["s3v4"] and query["domain"] == ["media.example.test"]
    assert query["addressing_style"] == ["path"] and query["region_name"] == ["us-east-1"]


def test_versioned_bucket_is_emptied_and_deleted(s3_server: S3Server, cluster: ClusterSpec,
                                                 make_names: Callable[[str], ResourceNames]
                                                 ) -> None:
    names = make_names("v")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    bucket = str(creds.values["bucket"])
    client = own_client(s3_server, creds)
    client.put_bucket_versioning(Bucket=bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    for body in (b"1", b"2", b"3"):
        client.put_object(Bucket=bucket, Key="doc.txt", Body=body)
    client.delete_object(Bucket=bucket, Key="doc.txt")  # a delete marker
    client.put_object(Bucket=bucket, Key="other.txt", Body=b"x")
    client.create_multipart_upload(Bucket=bucket, Key="unfinished.bin")
    PROVIDER.deprovision(cluster, names)
    assert not bucket_exists(s3_server, bucket)
    assert not PROVIDER.exists(cluster, names)


def test_a_bucket_of_someone_else_is_refused_and_left_alone(
        s3_server: S3Server, cluster: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("o")
    bucket = names.base.replace("_", "-")
    iam = s3_server.client("iam")
    squatter = f"{bucket}-squatter"
    iam.create_user(UserName=squatter)
    try:
        iam.put_user_policy(UserName=squatter, PolicyName="own", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
        key = iam.create_access_key(UserName=squatter)["AccessKey"]
        theirs = s3_server.client("s3", key["AccessKeyId"], key["SecretAccessKey"])
        theirs.create_bucket(Bucket=bucket)
        theirs.put_object(Bucket=bucket, Key="theirs.txt", Body=b"mine")

        with pytest.raises(ClusterError, match="belongs to someone else"):
            PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        assert not user_exists(s3_server, bucket)
        assert not PROVIDER.exists(cluster, names)
        PROVIDER.deprovision(cluster, names)
        assert theirs.get_object(Bucket=bucket, Key="theirs.txt")["Body"].read() == b"mine"
    finally:
        admin = s3_server.client()
        if bucket_exists(s3_server, bucket):
            for item in admin.list_objects_v2(Bucket=bucket).get("Contents", []):
                admin.delete_object(Bucket=bucket, Key=item["Key"])
            admin.delete_bucket(Bucket=bucket)
        for k in access_keys(s3_server, squatter):
            iam.delete_access_key(UserName=squatter, AccessKeyId=k)
        iam.delete_user_policy(UserName=squatter, PolicyName="own")
        iam.delete_user(UserName=squatter)


@pytest.fixture
def bucket_only_admin(s3_server: S3Server, unique_id: str) -> Iterator[str]:
    """The cluster URL of a key that may do anything to S3 buckets named tether-t<id>*, but
    nothing on IAM."""
    iam = s3_server.client("iam")
    user = f"tether-t{unique_id}-limited"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="buckets", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::tether-t{unique_id}*",
                         f"arn:aws:s3:::tether-t{unique_id}*/*"]}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    netloc = urlsplit(s3_server.endpoint).netloc
    try:
        yield f"s3://{key['AccessKeyId']}:{key['SecretAccessKey']}@{netloc}/"
    finally:
        for k in access_keys(s3_server, user):
            iam.delete_access_key(UserName=user, AccessKeyId=k)
        iam.delete_user_policy(UserName=user, PolicyName="buckets")
        iam.delete_user(UserName=user)


def test_failed_provision_leaves_nothing_behind(
        s3_server: S3Server, make_names: Callable[[str], ResourceNames],
        bucket_only_admin: str) -> None:
    # A genuine failure: the cluster key may make buckets but not IAM users.
    limited = spec(bucket_only_admin)
    names = make_names("f")
    secret = "instance-secret-" + secrets.token_hex(8)
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(limited, names, secret)
    message = err.value.message
    assert "IAM" in message and "iam=false" in message
    admin_secret = unquote(urlsplit(bucket_only_admin).password or "")
    assert secret not in message and admin_secret not in message
    assert not bucket_exists(s3_server, names.base.replace("_", "-"))
    assert not user_exists(s3_server, names.base.replace("_", "-"))
    # ... and check() says what is missing
    with pytest.raises(ClusterError, match="may not manage IAM users"):
        PROVIDER.check(limited)


def test_without_iam_instances_get_the_admin_key(
        s3_server: S3Server, make_names: Callable[[str], ResourceNames],
        caplog: pytest.LogCaptureFixture) -> None:
    no_iam = spec(s3_server.url, iam=False)
    with caplog.at_level("WARNING", logger="tether.providers.s3"):
        assert "not least-privilege" in PROVIDER.check(no_iam)
    assert "not least-privilege" in caplog.text
    names = make_names("n")
    creds = PROVIDER.provision(no_iam, names, secrets.token_urlsafe(24))
    assert creds.values["access_key_id"] == s3_server.access_key
    bucket = str(creds.values["bucket"])
    assert not user_exists(s3_server, bucket)
    own_client(s3_server, creds).put_object(Bucket=bucket, Key="k", Body=b"v")
    assert PROVIDER.provision(no_iam, names, "another") == creds
    PROVIDER.deprovision(no_iam, names)
    assert not bucket_exists(s3_server, bucket)


def test_name_prefix_goes_before_bucket_and_user(
        s3_server: S3Server, cluster: ClusterSpec, unique_id: str) -> None:
    names = ResourceNames(base=f"tether_t{unique_id}p")
    prefixed = spec(s3_server.url, name_prefix="acme-")
    try:
        creds = PROVIDER.provision(prefixed, names, secrets.token_urlsafe(24))
        bucket = f"acme-tether-t{unique_id}p"
        assert creds.values["bucket"] == bucket
        assert bucket_exists(s3_server, bucket) and user_exists(s3_server, bucket)
        assert not PROVIDER.exists(cluster, names)  # the unprefixed names are not it
    finally:
        PROVIDER.deprovision(prefixed, names)
    assert not bucket_exists(s3_server, bucket) and not user_exists(s3_server, bucket)


# -- drift: observe, repair by provisioning again --------------------------------------------------


def provisioned(cluster: ClusterSpec, names: ResourceNames
                ) -> tuple[ResourceNames, str, Credentials, str]:
    """Provision `names`: (names, the secret, the credentials, the bucket)."""
    secret = secrets.token_urlsafe(24)
    creds = PROVIDER.provision(cluster, names, secret)
    return names, secret, creds, str(creds.values["bucket"])


def test_observe_is_in_sync_after_provision_and_absent_after_deprovision(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    check_observe_follows_provision(PROVIDER, cluster, make_names("s"))


def test_a_deleted_user_policy_is_found_and_put_back(
        s3_server: S3Server, cluster: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names, secret, creds, bucket = provisioned(cluster, make_names("y"))
    s3_server.client("iam").delete_user_policy(UserName=bucket, PolicyName=POLICY_NAME)
    assert PROVIDER.observe(cluster, names).differences == (
        f"IAM user {bucket} has no policy {POLICY_NAME}: its key reaches nothing",)
    assert PROVIDER.provision(cluster, names, secret) == creds  # the same key
    assert PROVIDER.observe(cluster, names).in_sync
    own_client(s3_server, creds).put_object(Bucket=bucket, Key="k", Body=b"v")


def test_extra_policies_and_keys_are_removed(
        s3_server: S3Server, cluster: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names, secret, creds, bucket = provisioned(cluster, make_names("z"))
    iam = s3_server.client("iam")
    iam.put_user_policy(UserName=bucket, PolicyName="everything", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                "Resource": ["arn:aws:s3:::*"]}]}))
    iam.create_access_key(UserName=bucket)
    assert set(PROVIDER.observe(cluster, names).differences) == {
        f"IAM user {bucket} has another policy everything",
        f"IAM user {bucket} has 2 access keys, not one"}
    again = PROVIDER.provision(cluster, names, secret)
    assert PROVIDER.observe(cluster, names).in_sync
    assert iam.list_user_policies(UserName=bucket)["PolicyNames"] == [POLICY_NAME]
    # which key was the application's cannot be told any more: one new key, new credentials
    assert access_keys(s3_server, bucket) == [again.values["access_key_id"]]
    assert again.values["access_key_id"] != creds.values["access_key_id"]
    own_client(s3_server, again).put_object(Bucket=bucket, Key="k", Body=b"v")


def test_a_deleted_user_or_bucket_is_made_again(
        s3_server: S3Server, cluster: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names, secret, creds, bucket = provisioned(cluster, make_names("u"))
    own_client(s3_server, creds).put_object(Bucket=bucket, Key="kept", Body=b"v")
    iam = s3_server.client("iam")
    for key in access_keys(s3_server, bucket):
        iam.delete_access_key(UserName=bucket, AccessKeyId=key)
    iam.delete_user_policy(UserName=bucket, PolicyName=POLICY_NAME)
    iam.delete_user(UserName=bucket)
    seen = PROVIDER.observe(cluster, names)
    assert seen.exists and seen.differences == (
        f"IAM user {bucket} is missing (the application's key went with it: a repair makes a "
        "new one)",)
    again = PROVIDER.provision(cluster, names, secret)
    assert PROVIDER.observe(cluster, names).in_sync
    assert again.values["access_key_id"] != creds.values["access_key_id"]
    assert own_client(s3_server, again).get_object(Bucket=bucket, Key="kept")["Body"].read() \
        == b"v"
    # the bucket deleted by hand comes back empty, the key unchanged
    admin = s3_server.client()
    admin.delete_object(Bucket=bucket, Key="kept")
    admin.delete_bucket(Bucket=bucket)
    assert PROVIDER.observe(cluster, names).differences == (
        f"bucket {bucket} is missing: its data is lost (a repair makes it again, EMPTY)",)
    assert PROVIDER.provision(cluster, names, secret) == again
    assert PROVIDER.observe(cluster, names).in_sync
    assert "Contents" not in own_client(s3_server, again).list_objects_v2(Bucket=bucket)


def test_the_reconciler_stores_the_new_key_a_repair_made(
        s3_server: S3Server, tmp_path: Path, unique_id: str) -> None:
    with make_plane(tmp_path, "s3", "eu-aws", s3_server.url, "seaweed",
                    settings={"endpoint_scheme": "http"}) as (ctx, _engine):
        name = f"s3r{unique_id}"
        projects.create_project(ctx, name, region="eu-aws")
        added = services.add(ctx, name, "test", "s3-media", "MEDIA", provision=True)
        assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
        try:
            with ctx.store.session() as s:
                old = Credentials(ctx.box.open(s.get(Instance, added["id"]).credentials_enc))
            bucket = str(old.values["bucket"])
            s3_server.client("iam").delete_access_key(
                UserName=bucket, AccessKeyId=str(old.values["access_key_id"]))
            report = Reconciler(ctx.store, ctx.box, ctx.data_dir).run_once()
            assert added["id"] in report.repaired
            with ctx.store.session() as s:
                new = Credentials(ctx.box.open(s.get(Instance, added["id"]).credentials_enc))
                details = [a.detail for a in s.scalars(select(AuditEntry).where(
                    AuditEntry.instance_id == added["id"], AuditEntry.actor == "reconciler"))]
            assert new.values["access_key_id"] != old.values["access_key_id"]
            own_client(s3_server, new).put_object(Bucket=bucket, Key="k", Body=b"v")
            assert details[0] == (f"IAM user {bucket} has no access key (a repair makes a new "
                                  "one)")
            assert "deploy the environment to give them to the application" in str(details[1])
            assert str(new.values["secret_access_key"]) not in str(details)
        finally:
            removed = services.remove(ctx, name, "test", "MEDIA", "MEDIA")
            assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"


# -- errors that may pass, and final ones ----------------------------------------------------------


def test_an_endpoint_where_nothing_listens_is_a_transient_error(
        s3_server: S3Server, make_names: Callable[[str], ResourceNames]) -> None:
    url = (f"s3://{s3_server.access_key}:{quote(s3_server.secret_key, safe='')}@127.0.0.1:"
           f"{free_port()}/")
    check_unreachable_is_transient(PROVIDER, spec(url), make_names("t"),
                                   "cannot reach S3 at http://127.0.0.1:", s3_server.secret_key)


def test_a_wrong_secret_is_a_final_error(s3_server: S3Server,
                                         make_names: Callable[[str], ResourceNames]) -> None:
    url = (f"s3://{s3_server.access_key}:Wr0ng-{secrets.token_hex(8)}@"
           f"{urlsplit(s3_server.endpoint).netloc}/")
    check_final(lambda: PROVIDER.provision(spec(url), make_names("v"), secrets.token_urlsafe(24)),
                "refused the secret key")


# -- the real client: django-storage-url ----------------------------------------------------------

#: Run in a subprocess (Django settings are global). django-storage-url always speaks HTTPS on
#: port 443 to the DSN's host: `localhost:443` is routed to the test server's TLS port, which
#: serves a certificate for `localhost` (trusted through AWS_CA_BUNDLE). Nothing else is changed.
DJANGO_CLIENT = r"""
import json, os, socket, sys

tls_port = os.environ.get("TEST_TLS_PORT")
if tls_port:
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "localhost" and int(port or 0) == 443:
            return real_getaddrinfo("127.0.0.1", int(tls_port), *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo

import django
from django.conf import settings

settings.configure(STORAGE_DSN=os.environ["STORAGE_DSN"])
django.setup()
from django.core.files.base import ContentFile
from django_storage_url import dsn_configured_storage

storage = dsn_configured_storage("STORAGE_DSN")
name = storage.save("uploads/hello.txt", ContentFile(b"hello from django"))
with storage.open(name) as f:
    body = f.read().decode()
print(json.dumps({"name": name, "body": body, "url": storage.url(name),
                  "exists": storage.exists(name), "class": type(storage._wrapped).__name__}))
"""


def run_django(dsn: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run([sys.executable, "-c", DJANGO_CLIENT], capture_output=True, text=True,
                          timeout=60, env={**clean, "STORAGE_DSN": dsn, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_django_storage_url_uses_the_s3_dsn(s3_server: S3Server,
                                            make_names: Callable[[str], ResourceNames]) -> None:
    if s3_server.tls_port is None or s3_server.ca_file is None:
        pytest.skip("needs the S3 server over HTTPS: set TETHER_TEST_S3_TLS_PORT and "
                    "TETHER_TEST_S3_CA_FILE")
    # Tether administers over plain HTTP; applications get https://localhost:TLS_PORT
    cluster = spec(s3_server.url, app_endpoint=f"https://localhost:{s3_server.tls_port}",
                   cdn_domain="media.example.test")
    names = make_names("d")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    dsn = PROVIDER.env_vars("DEFAULT", creds)["DEFAULT_STORAGE_DSN"]
    out = run_django(dsn, TEST_TLS_PORT=str(s3_server.tls_port),
                     AWS_CA_BUNDLE=str(s3_server.ca_file))
    assert out["class"] == "S3Storage"
    assert out["body"] == "hello from django" and out["exists"] is True
    assert out["url"] == f"https://media.example.test/{out['name']}"
    # it landed in the instance's bucket, under the instance's key
    stored = s3_server.client().get_object(Bucket=creds.values["bucket"], Key=out["name"])
    assert stored["Body"].read() == b"hello from django"


def test_django_storage_url_uses_the_local_files_dsn() -> None:
    base = world_traversable_tmpdir("tether-test-media-")
    provider = LocalFilesProvider()
    cluster = ClusterSpec(id=2, kind="local-files", region="local", url="local://",
                          settings={"base_dir": str(base / "media"),
                                    "public_url": "http://127.0.0.1:8070/media/"})
    names = ResourceNames(base=f"tether_t{secrets.token_hex(4)}l")
    try:
        creds = provider.provision(cluster, names, "unused")
        dsn = provider.env_vars("DEFAULT", creds)["DEFAULT_STORAGE_DSN"]
        out = run_django(dsn)
        assert out["class"] == "FileSystemStorage"
        assert out["body"] == "hello from django" and out["exists"] is True
        assert out["url"] == f"http://127.0.0.1:8070/media/{names.base}/{out['name']}"
        on_disk = Path(str(creds.values["directory"])) / out["name"]
        assert on_disk.read_bytes() == b"hello from django"
    finally:
        provider.deprovision(cluster, names)
        shutil.rmtree(base, ignore_errors=True)
