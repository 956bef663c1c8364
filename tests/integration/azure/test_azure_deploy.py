"""Azure Blob through the engine: the region family decides the catalog, a deploy renews a SAS
token that is near expiry, and remove deletes the container."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tests.plane import APP_COMMAND, wait_op
from tests.plane import plane as make_plane
from tether.actions import deployments, projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.errors import UserError
from tether.store.models import Instance

pytestmark = pytest.mark.integration


@pytest.fixture
def plane(tmp_path: Path, azurite_url: str) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "azure-blob", "eu-azure", azurite_url, "azurite") as made:
        yield made


def test_azure_region_offers_azure_media_only(plane: tuple[Context, Engine]) -> None:
    ctx, _ = plane
    projects.create_project(ctx, "azshop", region="eu-azure")
    assert [o["service"] for o in services.catalog_view(ctx, "eu-azure", None)] == [
        "azure-blob-media"]
    with pytest.raises(UserError, match="not offered in region eu-azure: it offers "
                                        "azure-blob-media"):
        services.add(ctx, "azshop", "test", "s3-media", "MEDIA")


def test_deploy_renews_a_sas_near_expiry_and_remove_deletes(plane: tuple[Context, Engine],
                                                            unique_id: str,
                                                            azurite_url: str) -> None:
    ctx, _ = plane
    name = f"az{unique_id}"
    projects.create_project(ctx, name, region="eu-azure", app_command=APP_COMMAND)
    added = services.add(ctx, name, "test", "azure-blob-media", "MEDIA", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    with ctx.store.session() as s:  # make the token look a week from expiry
        inst = s.get(Instance, added["id"])
        assert inst is not None
        creds = ctx.box.open(inst.credentials_enc)
        creds["expires_at"] = (datetime.now(UTC) + timedelta(days=7)).isoformat()
        inst.credentials_enc = ctx.box.seal(creds)
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    shown = services.show(ctx, name, "test", "MEDIA", reveal=True)
    assert shown["state"] == "attached"
    assert any(h["action"] == "credentials renewed" for h in shown["history"])
    with ctx.store.session() as s:
        inst = s.get(Instance, added["id"])
        assert inst is not None
        fresh = ctx.box.open(inst.credentials_enc)
    assert fresh["sas_token"]  # (the same second signs the same token: compare expiries)
    assert datetime.fromisoformat(fresh["expires_at"]) > datetime.now(UTC) + timedelta(days=300)
    # path-style address of Azurite (the DSN's host-style one needs *.localhost resolution)
    admin = urlsplit(azurite_url)
    container = ContainerClient(f"http://{admin.hostname}:{admin.port}{admin.path}",
                                fresh["container"], credential=fresh["sas_token"])
    container.upload_blob("kept.txt", b"data", overwrite=True)

    services.detach(ctx, name, "test", "MEDIA")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    assert container.download_blob("kept.txt").readall() == b"data"  # detach deletes nothing
    removed = services.remove(ctx, name, "test", "MEDIA", "MEDIA")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    as_admin = ContainerClient(f"http://{admin.hostname}:{admin.port}{admin.path}",
                               fresh["container"],
                               credential={"account_name": admin.username,
                                           "account_key": unquote(admin.password or "")})
    with pytest.raises(ResourceNotFoundError):
        as_admin.get_container_properties()
