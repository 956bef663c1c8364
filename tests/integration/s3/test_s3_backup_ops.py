"""S3 media backups through the worker's operations (tether.actions.backups,
tether.engine.backups, the adapter in tether.backups.engines) on the suite's real SeaweedFS,
which is also the S3-family region's backup storage: a bucket's objects with their content types
backed up into the installation's tether-backups-<install id> bucket and verified in a scratch
bucket, restored after a change, copied live -> test."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.s3.conftest import S3Server
from tests.integration.s3.test_s3_backup_storage import remove_bucket
from tests.media_content import few_files
from tests.plane import backup_plane, instance_credentials, succeeded
from tether.actions import backups
from tether.actions.common import Context
from tether.backups.storage import install_id
from tether.engine.core import Engine
from tether.store.models import BackupFile

pytestmark = pytest.mark.integration


#: where applications reach the server (nothing listens there): Tether must use the cluster's
#: endpoint, not the one in the instance's credentials
APP_ENDPOINT = "https://localhost:9"


@pytest.fixture
def env(tmp_path: Path, s3_server: S3Server,
        unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the suite's SeaweedFS in an S3 region (media and backup storage); a project
    with MEDIA provisioned in test and live; every instance and the backup bucket removed at
    the end."""
    with backup_plane(tmp_path, "s3", s3_server.url, f"seaweed{unique_id}", "s3-media",
                      settings={"endpoint_scheme": "http", "app_endpoint": APP_ENDPOINT},
                      region="eu-aws", prefix="MEDIA",
                      clean_up=lambda ctx: remove_bucket(
                          s3_server, f"tether-backups-{install_id(ctx.box)}")) as made:
        yield made.ctx, made.engine


def client(ctx: Context, server: S3Server, env_name: str) -> tuple[Any, str]:
    """The instance's own key on a client of the server (its credentials name the applications'
    endpoint), and its bucket."""
    c = instance_credentials(ctx, env_name, "MEDIA")
    assert c["endpoint_url"] == APP_ENDPOINT
    return server.client("s3", c["access_key_id"], c["secret_access_key"]), str(c["bucket"])


def objects(s3: Any, bucket: str) -> dict[str, tuple[str, str]]:
    """key -> (sha256 of the content, content type)."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = (hashlib.sha256(got["Body"].read()).hexdigest(),
                                  got["ContentType"])
    return found


def test_backup_verify_restore_and_copy_through_the_worker(
        env: tuple[Context, Engine], s3_server: S3Server) -> None:
    ctx, _ = env
    (live, live_bucket), (test, test_bucket) = (client(ctx, s3_server, "live"),
                                                client(ctx, s3_server, "test"))
    files = few_files()
    for key, (data, kind) in files.items():
        live.put_object(Bucket=live_bucket, Key=key, Body=data, ContentType=kind)
    wanted = objects(live, live_bucket)
    assert set(wanted) == set(files)

    made = backups.create(ctx, "shop", "live", verify=True)
    succeeded(ctx, made)
    shown = backups.show(ctx, int(made["id"]))
    assert shown["status"] == "completed" and shown["verification"] == "passed", shown
    assert [f["format"] for f in shown["files"]] == ["tether-media-tar-1"]
    # the sealed file is in the installation's backup bucket on the same server
    with ctx.store.session() as s:
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        key, size = str(f.storage_key), f.size
    head = s3_server.client().head_object(Bucket=f"tether-backups-{install_id(ctx.box)}",
                                          Key=key)
    assert head["ContentLength"] == size
    # the verification's scratch bucket is gone
    buckets = [b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])]
    assert not [b for b in buckets if b.startswith("tether-v")], buckets

    # restore after a change: the backup's objects are back, later ones gone
    live.delete_object(Bucket=live_bucket, Key="notes.txt")
    live.put_object(Bucket=live_bucket, Key="img/logo.png", Body=b"changed",
                    ContentType="text/plain")
    live.put_object(Bucket=live_bucket, Key="later.txt", Body=b"not in the backup")
    succeeded(ctx, backups.restore(ctx, int(made["id"]), confirm="MEDIA"))
    assert objects(live, live_bucket) == wanted

    # copy live -> test: test gets live's objects (and loses its own)
    test.put_object(Bucket=test_bucket, Key="own.txt", Body=b"test's own")
    succeeded(ctx, backups.copy(ctx, "shop", "MEDIA", "live", "test", confirm="MEDIA"))
    assert objects(test, test_bucket) == wanted

    for b in backups.list_backups(ctx, "shop"):
        succeeded(ctx, backups.delete(ctx, int(b["id"])))
    head_bucket = s3_server.client().list_objects_v2(
        Bucket=f"tether-backups-{install_id(ctx.box)}")
    assert not head_bucket.get("Contents"), head_bucket
