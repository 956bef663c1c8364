"""Search backups through the worker's operations (tether.actions.backups,
tether.engine.backups, the adapter in tether.backups.engines) on the session's real OpenSearch 2
(the shared `opensearch_server` fixture), with files kept on a local-files storage cluster: an
instance's indices backed up and verified in a scratch instance, restored after a change, copied
live -> test (the indices renamed to test's prefix)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.search.conftest import SearchNode
from tests.plane import backup_plane, instance_credentials, succeeded
from tether.actions import backups
from tether.actions.common import Context
from tether.backups.search import SearchTarget
from tether.engine.core import Engine
from tether.store.models import BackupFile

pytestmark = pytest.mark.integration

#: where applications reach the cluster (a proxy; nothing listens there): Tether must use the
#: cluster URL's address, not the one in the instance's credentials
PUBLIC = {"public_host": "localhost", "public_port": 9}


@pytest.fixture
def env(tmp_path: Path, opensearch_server: SearchNode,
        unique_id: str) -> Iterator[tuple[Context, Engine]]:
    """A plane with the session's OpenSearch and a local-files cluster for the backups; a
    project with SEARCH provisioned in test and live; every instance removed at the end."""
    with backup_plane(tmp_path, "elasticsearch", opensearch_server.admin_url,
                      f"search{unique_id}", "opensearch", settings=PUBLIC,
                      prefix="SEARCH") as made:
        yield made.ctx, made.engine


def target(ctx: Context, server: SearchNode, env_name: str) -> SearchTarget:
    """The instance's login and prefix, at the server's address (its credentials name the
    applications' one)."""
    creds = instance_credentials(ctx, env_name, "SEARCH")
    assert (creds["host"], creds["port"]) == ("localhost", 9)
    return replace(SearchTarget.from_credentials(creds), base=server.url)


def call(t: SearchTarget, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    """A request as the instance."""
    response = httpx.request(method, t.base + path, json=body, auth=(t.user, t.password),
                             timeout=60, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def fill(t: SearchTarget, label: str) -> None:
    """PREFIX (a mapping) and PREFIX-notes (documents with ids, one routed), made as the
    instance."""
    p = t.prefix
    call(t, "PUT", f"/{p}", {"settings": {"number_of_replicas": 0},
                             "mappings": {"properties": {"title": {"type": "text"}}}})
    call(t, "PUT", f"/{p}-notes", {"settings": {"number_of_replicas": 0}})
    lines = []
    for i in range(40):
        lines.append({"index": {"_index": f"{p}-notes", "_id": f"n{i}"}})
        lines.append({"i": i, "text": f"{label} {i} — ünïcode", "deep": {"x": i / 3}})
    lines.append({"index": {"_index": f"{p}-notes", "_id": "routed", "routing": "r1"}})
    lines.append({"text": "routed"})
    lines.append({"index": {"_index": p, "_id": "t"}})
    lines.append({"title": f"{label} title"})
    body = "".join(json.dumps(line) + "\n" for line in lines)
    done = httpx.post(f"{t.base}/_bulk?refresh=true", content=body.encode(),
                      auth=(t.user, t.password), timeout=60,
                      headers={"Content-Type": "application/x-ndjson"})
    assert done.status_code == 200 and not done.json()["errors"], done.text


def content(t: SearchTarget) -> dict[str, Any]:
    """Per index of the instance (by name without its prefix): the mapping and every
    document's id, routing and source."""
    p = t.prefix
    found: dict[str, Any] = {}
    names = call(t, "GET", f"/{p},{p}-*?ignore_unavailable=true&allow_no_indices=true")
    for index, meta in names.items():
        hits = call(t, "POST", f"/{index}/_search", {"size": 1000, "sort": ["_doc"]})
        found[index[len(p):]] = (meta["mappings"], sorted(
            (h["_id"], h.get("_routing"), json.dumps(h["_source"], sort_keys=True))
            for h in hits["hits"]["hits"]))
    return found


def test_backup_verify_restore_and_copy_through_the_worker(
        env: tuple[Context, Engine], opensearch_server: SearchNode) -> None:
    ctx, _ = env
    live, test = (target(ctx, opensearch_server, "live"),
                  target(ctx, opensearch_server, "test"))
    fill(live, "live")
    wanted = content(live)
    assert set(wanted) == {"", "-notes"} and len(wanted["-notes"][1]) == 41

    made = backups.create(ctx, "shop", "live", verify=True)
    succeeded(ctx, made)
    shown = backups.show(ctx, int(made["id"]))
    assert shown["status"] == "completed" and shown["verification"] == "passed", shown
    assert [f["format"] for f in shown["files"]] == ["search-ndjson-1"]
    with ctx.store.session() as s:  # the verification compared content, not only a restore
        f = s.scalars(select(BackupFile).where(BackupFile.backup_id == made["id"])).one()
        assert f.summary and not f.summary.get("changed_during_backup"), f.summary

    # restore after a change: the backup's documents are back, later ones gone
    call(live, "DELETE", f"/{live.prefix}-notes/_doc/n3?refresh=true")
    call(live, "PUT", f"/{live.prefix}-notes/_doc/later?refresh=true", {"text": "later"})
    assert content(live) != wanted
    succeeded(ctx, backups.restore(ctx, int(made["id"]), confirm="SEARCH"))
    assert content(live) == wanted

    # copy live -> test: test gets live's indices under its own prefix (and loses its own)
    call(test, "PUT", f"/{test.prefix}-own/_doc/1?refresh=true", {"text": "test's own"})
    succeeded(ctx, backups.copy(ctx, "shop", "SEARCH", "live", "test", confirm="SEARCH"))
    assert content(test) == wanted

    for b in backups.list_backups(ctx, "shop"):
        succeeded(ctx, backups.delete(ctx, int(b["id"])))
