"""Backup storage on an S3 cluster (tether.backups.storage), against a real S3 server
(SeaweedFS): the installation's private bucket, a multipart round trip of a ~20 MB file with its
checksum, no anonymous access, a put killed with SIGKILL midway leaving no key (and
`sweep_incomplete` aborting its upload), `keys`, errors that may pass told from final ones
without secrets. Every bucket made is deleted."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.integration.s3.conftest import S3Server
from tests.integration.test_local_files_backup_storage import (
    check_keys_listing,
    check_round_trip,
    kill,
    random_file,
    start_put,
    wait_for,
)
from tether.backups.storage import BackupFileMissing, S3BackupStorage, backup_storage
from tether.errors import ClusterError, TransientError
from tether.net import free_port
from tether.providers.base import ClusterSpec

pytestmark = pytest.mark.integration

PART = 5 << 20  # S3's smallest part


def spec(url: str, **settings: Any) -> ClusterSpec:
    return ClusterSpec(id=7, kind="s3", region="eu-test", url=url,
                       settings={"endpoint_scheme": "http", **settings})


def remove_bucket(server: S3Server, bucket: str) -> None:
    """Every object, unfinished upload, then the bucket (gone is fine)."""
    client = server.client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                              UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise


@pytest.fixture
def install(s3_server: S3Server) -> Iterator[str]:
    """A fresh install id; its backup buckets (with and without a name prefix) removed after."""
    made = secrets.token_hex(8)
    yield made
    for prefix in ("", "bk-"):
        remove_bucket(s3_server, f"{prefix}tether-backups-{made}")


@pytest.fixture
def storage(s3_server: S3Server, install: str) -> S3BackupStorage:
    store = S3BackupStorage(spec(s3_server.url), install, part_size=PART)
    store.ensure()
    return store


def test_ensure_makes_a_private_bucket_of_this_install(s3_server: S3Server,
                                                       install: str) -> None:
    store = backup_storage(spec(s3_server.url, name_prefix="bk-"), install)
    assert isinstance(store, S3BackupStorage)
    assert store.bucket == f"bk-tether-backups-{install}"
    assert store.bucket in store.where and s3_server.endpoint.split("//")[1] in store.where
    assert s3_server.secret_key not in store.where
    store.ensure()
    store.ensure()  # idempotent
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert store.bucket in names
    grants = s3_server.client().get_bucket_acl(Bucket=store.bucket).get("Grants", [])
    assert not [g for g in grants if "AllUsers" in str(g.get("Grantee", {}).get("URI", ""))]


def test_round_trip_multipart(storage: S3BackupStorage, tmp_path: Path) -> None:
    parts: list[int] = []
    storage.client.meta.events.register("after-call.s3.UploadPart",
                                        lambda **kwargs: parts.append(1))
    check_round_trip(storage, tmp_path, "live/2026-12-03/b1.tbk")
    assert len(parts) == 2 * 4  # two puts of four parts each: it was multipart
    assert not storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads")


def test_bucket_is_not_readable_anonymously(s3_server: S3Server, storage: S3BackupStorage,
                                            tmp_path: Path) -> None:
    source = tmp_path / "staged.tbk"
    random_file(source, 1000)
    key = "live/b1.tbk"
    storage.put(key, source)
    try:
        base = f"{s3_server.endpoint}/{storage.bucket}"
        for url in (f"{base}/{key}", f"{base}/", f"{base}?list-type=2"):
            answer = httpx.get(url, timeout=10)
            assert answer.status_code in (401, 403), (url, answer.status_code)
            assert source.read_bytes() not in answer.content
            if key not in url:  # a refusal names the key it was asked for, a listing must not
                assert "b1.tbk" not in answer.text
        assert httpx.put(f"{base}/planted.tbk", content=b"x", timeout=10).status_code in (
            401, 403)
        assert storage.size("planted.tbk") is None
    finally:
        storage.delete(key)


def test_keys_lists_exactly_what_was_put(storage: S3BackupStorage, tmp_path: Path) -> None:
    check_keys_listing(storage, tmp_path)


def test_put_killed_midway_leaves_no_key_and_sweep_aborts_it(
        s3_server: S3Server, storage: S3BackupStorage, install: str, tmp_path: Path) -> None:
    source = tmp_path / "big.tbk"
    random_file(source, 10 * PART)  # more parts than are sent at once: some surely wait
    key = "live/b9.tbk"
    proc = start_put(spec(s3_server.url), key, source, install=install,
                     extra={"part_size": PART}, pause_after_part=True)
    assert proc.stdout is not None
    wait_for(lambda: "part stored" in proc.stdout.readline(), "a stored part", proc)

    def uploads() -> list[dict[str, Any]]:
        return [u for page in storage.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=storage.bucket) for u in page.get("Uploads", [])]

    assert [u["Key"] for u in uploads()] == [key]
    kill(proc)
    assert storage.size(key) is None
    assert list(storage.keys()) == []
    with pytest.raises(BackupFileMissing):
        storage.get(key, tmp_path / "out.tbk")
    assert [u["Key"] for u in uploads()] == [key]  # what the killed put left

    assert storage.sweep_incomplete() == 0  # fresh: it might be a put still running
    assert storage.sweep_incomplete(older_than=0) == 1
    assert uploads() == []
    assert storage.sweep_incomplete(older_than=0) == 0
    assert list(storage.keys()) == []


def test_put_refuses_what_is_not_a_regular_file(storage: S3BackupStorage,
                                                tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        storage.put("b.tbk", tmp_path)
    assert storage.size("b.tbk") is None


def test_unreachable_is_transient_and_secret_free(s3_server: S3Server, install: str) -> None:
    port = free_port()
    url = s3_server.url.replace(s3_server.endpoint.split("//")[1], f"127.0.0.1:{port}")
    store = S3BackupStorage(spec(url), install)
    for call in (store.ensure, lambda: store.size("b.tbk"), lambda: list(store.keys()),
                 lambda: store.delete("b.tbk")):
        with pytest.raises(TransientError) as err:
            call()
        assert "cannot reach" in err.value.message
        assert s3_server.secret_key not in err.value.message


def test_wrong_secret_is_final_and_secret_free(s3_server: S3Server, install: str,
                                               tmp_path: Path) -> None:
    wrong = secrets.token_urlsafe(24)
    url = s3_server.url.replace(s3_server.url.split(":")[2].split("@")[0], wrong)
    store = S3BackupStorage(spec(url), install)
    source = tmp_path / "staged.tbk"
    random_file(source, 1000)
    with pytest.raises(ClusterError) as err:
        store.put("b.tbk", source)
    assert not isinstance(err.value, TransientError)
    assert "secret key" in err.value.message
    assert wrong not in err.value.message and s3_server.secret_key not in err.value.message
