"""Registering clusters: checked at once with a clear error, from the API or from a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether import clusterfile
from tether.actions import clusters, services
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.store.db import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    yield Context(store=store, box=SecretBox.from_data_dir(tmp_path), data_dir=tmp_path,
                  actor="test")
    store.dispose()


def test_a_wrong_password_is_refused_at_cluster_add(ctx: Context, pg_server: Any) -> None:
    bad = pg_server.admin_url.replace(pg_server.password, "not-the-password")
    with pytest.raises(UserError) as err:
        clusters.add_cluster(ctx, "postgres", "local", bad)
    assert "password" in err.value.message
    assert "not-the-password" not in err.value.message
    assert clusters.list_clusters(ctx) == []


def test_an_unreachable_host_is_refused_at_cluster_add(ctx: Context) -> None:
    with pytest.raises(UserError, match="cannot use this postgres cluster"):
        clusters.add_cluster(ctx, "postgres", "local", "postgres://a:secret@127.0.0.1:9/postgres")


def test_unknown_kind_lists_the_supported_ones(ctx: Context) -> None:
    with pytest.raises(UserError, match=r"supported kinds are .*local-files, mysql, postgres"):
        clusters.add_cluster(ctx, "redis", "local", "redis://127.0.0.1")


def test_clusters_from_a_file(ctx: Context, pg_server: Any, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EU_PG_URL", pg_server.admin_url)
    path = tmp_path / "clusters.toml"
    path.write_text('[[cluster]]\nname = "eu-pg"\nkind = "postgres"\nregion = "eu-aws"\n'
                    'url_env = "EU_PG_URL"\n')
    assert clusterfile.register(ctx, path) == ["eu-pg"]
    assert clusterfile.register(ctx, path) == ["eu-pg"]  # a restart updates, never duplicates
    listed = clusters.list_clusters(ctx)
    assert [(c["name"], c["region"], c["visibility"]) for c in listed] == [
        ("eu-pg", "eu-aws", "shared")]
    assert pg_server.password not in str(listed)
    offered = services.catalog_view(ctx, "eu-aws", None)
    assert [o["service"] for o in offered] == [f"postgres-{listed[0]['version'].split('.')[0]}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[cluster]]\nname = "x"\nkind = "postgres"\nregion = "eu"\n', "give `url` or `url_env`"),
        ('[[cluster]]\nkind = "postgres"\nregion = "eu"\nurl = "postgres://x"\n', "name missing"),
        ('[[cluster]]\nname = "x"\nkind = "postgres"\nregion = "eu"\nurl_env = "NOPE_X"\n',
         "NOPE_X is not set"),
        ('[[cluster]]\nname = "x"\nkind = "postgres"\nregion = "eu"\nurl = "u"\ncolour = 1\n',
         "unknown keys colour"),
        ("[[cluster]\n", "not valid TOML"),
    ],
)
def test_a_bad_cluster_file_says_what_to_fix(ctx: Context, tmp_path: Path, text: str,
                                             message: str) -> None:
    path = tmp_path / "clusters.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        clusterfile.register(ctx, path)


def test_region_families_decide_the_media_storage(ctx: Context, tmp_path: Path) -> None:
    media = {"base_dir": str(tmp_path / "media"), "public_url": "http://127.0.0.1:1/media/"}
    clusters.add_cluster(ctx, "local-files", "local", "file:///x", settings=media)
    with pytest.raises(UserError, match="local-files clusters belong in local-family regions"):
        clusters.add_cluster(ctx, "local-files", "eu-aws", "file:///x", settings=media)
    with pytest.raises(UserError, match="unknown region family"):
        clusters.add_cluster(ctx, "local-files", "x", "file:///x", settings=media,
                             region_family="gcp")
    assert [(r["name"], r["family"]) for r in clusters.list_regions(ctx)] == [("local", "local")]


def test_migration_gives_existing_regions_a_family(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from tether.store.db import MIGRATIONS

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        for n, region in enumerate(("local", "eu-azure", "eu-aws")):
            conn.execute(text("INSERT INTO clusters (name, kind, region, private, version, "
                              "url_enc, settings, managed, created_at) VALUES (:n, 'postgres', "
                              ":r, 0, '18', 'x', '{}', 0, CURRENT_TIMESTAMP)"),
                         {"n": f"c{n}", "r": region})
    store.migrate()
    with store.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT name, family FROM regions")).all())
    assert rows == {"local": "local", "eu-azure": "azure", "eu-aws": "s3"}
    store.dispose()


@pytest.mark.parametrize(("kind", "url", "settings", "words"), [
    # a misspelt setting was silently ignored, and the cluster then ran without it
    ("postgres", "postgres://a:pw@127.0.0.1:9/postgres", {"conection_limit": 5},
     "conection_limit is not a setting of postgres clusters (they have: connection_limit)"),
    ("rabbitmq", "http://a:pw@127.0.0.1:9", {"amqp-port": 5672},
     "amqp-port is not a setting of rabbitmq clusters"),
    ("s3", "s3://k:s@127.0.0.1:9", {"iam": "perhaps", "endpoint": "http://x"},
     "endpoint is not a setting of s3 clusters"),
    ("rabbitmq", "http://a:pw@127.0.0.1:9", {"amqp_port": {"nested": 1}},
     "the setting amqp_port is not valid"),
])
def test_settings_a_kind_does_not_know_are_refused_before_it_is_contacted(
        ctx: Context, kind: str, url: str, settings: dict[str, Any], words: str) -> None:
    """Each kind's settings are a typed model (issue 9): nothing listens at the URL, so the
    settings are refused before any connection is tried."""
    with pytest.raises(UserError) as err:
        clusters.add_cluster(ctx, kind, "local" if kind != "s3" else "eu-aws", url,
                             settings=settings)
    assert words in err.value.message
    assert "pw" not in err.value.message
    assert clusters.list_clusters(ctx) == []
