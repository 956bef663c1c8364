"""The backup engines' adapters pass a cluster's settings on (no server needed: the clients are
built, not called)."""

from __future__ import annotations

from tether.backups import media
from tether.backups.engines import MediaEngine, engine_for
from tether.providers.base import ClusterSpec

URL = "azure+http://devstoreaccount1:a2V5@127.0.0.1:10000/devstoreaccount1"
CREDS = {"account": "devstoreaccount1", "container": "tether-i1", "sas_token": "sv=x&sig=y",
         "endpoint": "http://devstoreaccount1.blob.localhost:10000"}


def test_azure_media_backups_speak_the_clusters_api_version() -> None:
    """An Azurite or Azure Stack that refuses the SDK's newest API version is reached with the
    cluster's `api_version` by backups too, not only by the provider."""
    cluster = ClusterSpec(id=1, kind="azure-blob", region="eu", url=URL,
                          settings={"api_version": "2021-08-06"})
    engine = engine_for("azure-blob")
    assert isinstance(engine, MediaEngine)
    target = engine._target(CREDS, cluster)
    assert isinstance(target, media.AzureBlobTarget)
    assert target.api_version == "2021-08-06"
    assert target.endpoint == "http://127.0.0.1:10000/devstoreaccount1"  # Tether's address
    assert media._adapter(target).client.api_version == "2021-08-06"  # type: ignore[attr-defined]
    plain = ClusterSpec(id=1, kind="azure-blob", region="eu", url=URL)
    assert engine._target(CREDS, plain).api_version is None
