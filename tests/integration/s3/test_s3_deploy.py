"""S3 media storage through the engine: offered only in S3-family regions; add, provision, use
with the instance's own key, deploy, detach (keeps data), remove (deletes bucket and key)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.plane import APP_COMMAND, wait_op
from tests.plane import plane as make_plane
from tether.actions import deployments, projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.errors import UserError
from tether.store.models import Instance

pytestmark = pytest.mark.integration


@pytest.fixture
def plane(tmp_path: Path, s3_server: Any) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "s3", "eu-aws", s3_server.url, "seaweed",
                     settings={"endpoint_scheme": "http"}) as made:
        yield made


def test_s3_region_refuses_other_media(plane: tuple[Context, Engine]) -> None:
    ctx, _ = plane
    projects.create_project(ctx, "s3shop", region="eu-aws")
    with pytest.raises(UserError, match="it offers s3-media"):
        services.add(ctx, "s3shop", "test", "azure-blob-media", "MEDIA")


def test_s3_media_lifecycle(plane: tuple[Context, Engine], s3_server: Any,
                            unique_id: str) -> None:
    ctx, _ = plane
    name = f"s3{unique_id}"
    projects.create_project(ctx, name, region="eu-aws", app_command=APP_COMMAND)
    added = services.add(ctx, name, "test", "s3-media", "MEDIA", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    with ctx.store.session() as s:
        inst = s.get(Instance, added["id"])
        assert inst is not None
        creds = ctx.box.open(inst.credentials_enc)
    own = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                       aws_access_key_id=creds["access_key_id"],
                       aws_secret_access_key=creds["secret_access_key"],
                       config=Config(s3={"addressing_style": "path"}))
    own.put_object(Bucket=creds["bucket"], Key="kept.txt", Body=b"data")

    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    dsn = services.show(ctx, name, "test", "MEDIA", reveal=True)["variables"]["MEDIA_STORAGE_DSN"]
    assert dsn.startswith("s3://") and "auth=s3v4" in dsn
    services.detach(ctx, name, "test", "MEDIA")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    assert own.get_object(Bucket=creds["bucket"], Key="kept.txt")["Body"].read() == b"data"

    removed = services.remove(ctx, name, "test", "MEDIA", "MEDIA")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    admin = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                         aws_access_key_id=s3_server.access_key,
                         aws_secret_access_key=s3_server.secret_key,
                         config=Config(s3={"addressing_style": "path"}))
    assert creds["bucket"] not in [b["Name"] for b in admin.list_buckets().get("Buckets", [])]
    with pytest.raises(ClientError):
        own.list_objects_v2(Bucket=creds["bucket"])
