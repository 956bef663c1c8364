"""Search backups (tether.backups.search) on the session's real OpenSearch 2 (the shared
`opensearch_server` fixture), with instances made by the real ElasticsearchProvider and indices
filled as the instance: sealed round trips into the same and into another instance (prefix
renamed), damaged, cut-short and hostile backups refused before anything is deleted."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.integration.search.conftest import SearchNode
from tether.backups.postgres import BackupError
from tether.backups.sealed import ChecksumMismatch, DamagedChunk, file_sha256, write_sealed
from tether.backups.search import (
    FORMAT,
    PAGE,
    NotASearchBackup,
    SearchTarget,
    check_stream,
    dump_sealed,
    dump_stream,
    restore_sealed,
    restore_stream,
    summary,
)
from tether.crypto import SecretBox
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.elasticsearch import ElasticsearchProvider

pytestmark = pytest.mark.integration

PROVIDER = ElasticsearchProvider()
DOCS = PAGE * 2 + 37  # several scroll pages


@dataclass(frozen=True)
class Instance:
    names: ResourceNames
    target: SearchTarget

    @property
    def prefix(self) -> str:
        return self.names.base

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any
                ) -> httpx.Response:
        t = self.target
        return httpx.request(method, t.base + path, json=body, auth=(t.user, t.password),
                             timeout=60, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request(method, path, body, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def indices(self) -> list[str]:
        p = self.prefix
        return sorted(self.ok("GET", f"/{p},{p}-*?expand_wildcards=all&ignore_unavailable=true"
                                     "&allow_no_indices=true"))


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def cluster(opensearch_server: SearchNode) -> ClusterSpec:
    return ClusterSpec(id=1, kind="elasticsearch", region="local",
                       url=opensearch_server.admin_url)


@pytest.fixture
def instance(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], Instance]]:
    """Provision instances with the real provider (deprovisioned, indices and all, at the
    end)."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> Instance:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        return Instance(names, SearchTarget.from_credentials(creds.values))

    yield make
    for names in reversed(made):
        PROVIDER.deprovision(cluster, names)


def fill(inst: Instance) -> None:
    """The base index (2 shards, a custom analyzer, a mapping), `-notes` with several pages of
    documents (unicode, nested objects, a large value, custom routing) and an empty hidden
    index, all made as the instance."""
    p = inst.prefix
    inst.ok("PUT", f"/{p}", {
        "settings": {"number_of_shards": 2, "number_of_replicas": 0, "analysis": {
            "analyzer": {"folded": {"type": "custom", "tokenizer": "standard",
                                    "filter": ["lowercase", "asciifolding"]}}}},
        "mappings": {"properties": {"title": {"type": "text", "analyzer": "folded"},
                                    "n": {"type": "integer"}}}})
    inst.ok("PUT", f"/{p}-notes", {"settings": {"number_of_replicas": 0},
                                   "mappings": {"properties": {"at": {"type": "date"}}}})
    inst.ok("PUT", f"/{p}-hidden", {"settings": {"index.hidden": True,
                                                 "number_of_replicas": 0}})
    lines = []
    for i in range(DOCS):
        lines.append({"index": {"_index": f"{p}-notes", "_id": f"n{i}"}})
        lines.append({"at": "2026-12-03T10:00:00Z", "i": i, "text": f"note {i} — ünïcode",
                      "tags": ["a", "b"], "nested": {"deep": {"x": i / 3}}})
    lines.append({"index": {"_index": f"{p}-notes", "_id": "big", "routing": "r1"}})
    lines.append({"blob": "x" * 300_000})
    lines.append({"index": {"_index": p, "_id": "café"}})
    lines.append({"title": "Crème Brûlée", "n": 1})
    lines.append({"index": {"_index": p, "_id": "2"}})
    lines.append({"title": "Apple pie", "n": 2})
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    answer = inst.ok("POST", "/_bulk?refresh=true", content=body,
                     headers={"content-type": "application/x-ndjson"})
    assert not answer["errors"]


def found(inst: Instance, index: str, text: str) -> list[str]:
    hits = inst.ok("POST", f"/{quote(index, safe='')}/_search",
                   {"query": {"match": {"title": text}}})["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


def test_round_trip_into_the_same_instance(instance: Callable[[str], Instance], box: SecretBox,
                                           tmp_path: Path) -> None:
    live = instance("a")
    fill(live)
    before = summary(live.target)
    assert set(before.indices) == {"PREFIX", "PREFIX-notes", "PREFIX-hidden"}
    assert before.indices["PREFIX-notes"].documents == DOCS + 1
    assert '"analysis"' in before.indices["PREFIX"].settings
    info = dump_sealed(live.target, tmp_path / "b.sealed", box)

    live.ok("DELETE", f"/{live.prefix}-notes")
    live.ok("PUT", f"/{live.prefix}/_doc/2?refresh=true", {"title": "changed", "n": 3})
    live.ok("PUT", f"/{live.prefix}-stray/_doc/1?refresh=true", {"a": 1})
    assert summary(live.target) != before

    restore_sealed(live.target, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
    assert summary(live.target) == before
    assert f"{live.prefix}-stray" not in live.indices()
    assert found(live, live.prefix, "creme brulee") == ["café"]  # the analyzer came back
    big = live.ok("GET", f"/{live.prefix}-notes/_doc/big?routing=r1")
    assert len(big["_source"]["blob"]) == 300_000


def test_restore_into_another_instance_renames_the_prefix(
        instance: Callable[[str], Instance], box: SecretBox, tmp_path: Path) -> None:
    live, test = instance("a"), instance("b")
    fill(live)
    test.ok("PUT", f"/{test.prefix}-old/_doc/1?refresh=true", {"a": 1})
    info = dump_sealed(live.target, tmp_path / "b.sealed", box)
    restore_sealed(test.target, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
    assert test.indices() == sorted([test.prefix, f"{test.prefix}-hidden",
                                     f"{test.prefix}-notes"])
    assert summary(test.target) == summary(live.target)
    assert found(test, test.prefix, "CREME") == ["café"]
    assert len(live.indices()) == 3  # the source is untouched


def test_the_backup_is_ndjson_of_its_indices(instance: Callable[[str], Instance]) -> None:
    live = instance("a")
    fill(live)
    lines = [json.loads(line) for line in b"".join(dump_stream(live.target)).splitlines()]
    assert lines[0] == {"format": FORMAT, "prefix": live.prefix}
    assert lines[-1] == {"end": {"indices": 3, "documents": DOCS + 3}}
    indices = {line["index"]["name"]: line["index"] for line in lines if "index" in line}
    assert indices[live.prefix]["settings"]["number_of_shards"] == "2"
    assert "uuid" not in indices[live.prefix]["settings"]
    assert indices[f"{live.prefix}-hidden"]["settings"]["hidden"] == "true"
    assert {"doc": {"_id": "big", "_routing": "r1", "_source": {"blob": "x" * 300_000}}} in lines


def test_a_damaged_sealed_backup_deletes_nothing(instance: Callable[[str], Instance],
                                                 box: SecretBox, tmp_path: Path) -> None:
    live = instance("a")
    fill(live)
    path = tmp_path / "small.sealed"
    # small chunks: damage near the end is found only after many chunks were read
    info = write_sealed(path, dump_stream(live.target), box, chunk_size=4096)
    live.ok("PUT", f"/{live.prefix}-extra/_doc/1?refresh=true", {"a": 1})
    before = summary(live.target)
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        restore_sealed(live.target, path, info.key_sealed, box, info.sha256)
    with pytest.raises(DamagedChunk):  # the recorded checksum replaced too
        restore_sealed(live.target, path, info.key_sealed, box, file_sha256(path))
    assert summary(live.target) == before


def _sealed_plain(path: Path, box: SecretBox, lines: list[Any]) -> tuple[str, str]:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    info = write_sealed(path, [data], box)
    return info.key_sealed, info.sha256


@pytest.mark.parametrize("case", ["cut short", "wrong counts", "outside the prefix",
                                  "doc before index", "unexpected setting", "other format"])
def test_a_malformed_backup_deletes_nothing(instance: Callable[[str], Instance], box: SecretBox,
                                            tmp_path: Path, case: str) -> None:
    live = instance("a")
    live.ok("PUT", f"/{live.prefix}/_doc/1?refresh=true", {"a": 1})
    before = summary(live.target)
    p = "tether_src"
    head: dict[str, Any] = {"format": FORMAT, "prefix": p}
    index = {"index": {"name": p, "settings": {}, "mappings": {}}}
    doc = {"doc": {"_id": "1", "_source": {"a": 2}}}
    end = {"end": {"indices": 1, "documents": 1}}
    lines = {
        "cut short": [head, index, doc],
        "wrong counts": [head, index, doc, doc, end],
        "outside the prefix": [head, {"index": {"name": "other", "settings": {},
                                                "mappings": {}}}, doc, end],
        "doc before index": [head, doc, index, end],
        "unexpected setting": [head, {"index": {"name": p, "settings": {"blocks": {}},
                                                "mappings": {}}}, doc, end],
        "other format": [{"format": "rabbitmq-definitions-1", "prefix": p}, index, doc, end],
    }[case]
    key, sha = _sealed_plain(tmp_path / "bad.sealed", box, lines)
    with pytest.raises(NotASearchBackup):
        restore_sealed(live.target, tmp_path / "bad.sealed", key, box, sha)
    assert summary(live.target) == before
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with pytest.raises(NotASearchBackup):
        check_stream([data[:7], data[7:]])


def test_lines_split_anywhere_across_chunks() -> None:
    """A backup is read the same whatever its chunks' sizes (a line across many chunks, a
    chunk of many lines, empty chunks)."""
    lines = [{"format": FORMAT, "prefix": "tether_src"},
             {"index": {"name": "tether_src", "settings": {}, "mappings": {}}},
             *({"doc": {"_id": str(i), "_source": {"v": "é" * (i * 37)}}} for i in range(50)),
             {"end": {"indices": 1, "documents": 50}}]
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    for size in (1, 7, 4096, len(data)):
        check_stream([b"", *(data[i:i + size] for i in range(0, len(data), size)), b""])
    with pytest.raises(NotASearchBackup):
        check_stream([data[:-1], b"x\n"])  # the end line damaged


def test_a_backup_naming_another_instance_stays_in_its_own_prefix(
        instance: Callable[[str], Instance]) -> None:
    """A hostile upload claiming the victim's prefix is renamed into the restoring instance's;
    the victim's index is neither deleted nor written."""
    attacker, victim = instance("a"), instance("b")
    victim.ok("PUT", f"/{victim.prefix}/_doc/1?refresh=true", {"secret": 1})
    before = summary(victim.target)
    v = victim.prefix
    lines = [{"format": FORMAT, "prefix": v},
             {"index": {"name": v, "settings": {}, "mappings": {}}},
             {"doc": {"_id": "1", "_source": {"secret": "overwritten"}}},
             {"end": {"indices": 1, "documents": 1}}]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    restore_stream(attacker.target, [data])
    assert summary(victim.target) == before
    assert attacker.indices() == [attacker.prefix]
    assert attacker.ok("GET", f"/{attacker.prefix}/_doc/1")["_source"] == {
        "secret": "overwritten"}


def test_a_closed_index_fails_the_backup(instance: Callable[[str], Instance], box: SecretBox,
                                         tmp_path: Path) -> None:
    live = instance("a")
    fill(live)
    live.ok("POST", f"/{live.prefix}-notes/_close")
    with pytest.raises(BackupError, match="closed"):
        dump_sealed(live.target, tmp_path / "b.sealed", box)
    assert list(tmp_path.iterdir()) == []
    assert live.target.password not in repr(live.target)


def test_restore_over_blocked_indices(instance: Callable[[str], Instance], box: SecretBox,
                                      tmp_path: Path) -> None:
    """Blocks the instance may set on its own indices would stop their deletion: the restore
    clears them (as the instance) and replaces the indices."""
    live = instance("a")
    live.ok("PUT", f"/{live.prefix}/_doc/1?refresh=true", {"a": 1})
    before = summary(live.target)
    info = dump_sealed(live.target, tmp_path / "b.sealed", box)
    live.ok("PUT", f"/{live.prefix}-ro/_doc/1?refresh=true", {"a": 2})
    live.ok("PUT", f"/{live.prefix}-ro/_settings", {"index.blocks.read_only": True})
    live.ok("PUT", f"/{live.prefix}/_settings", {"index.blocks.metadata": True})
    restore_sealed(live.target, tmp_path / "b.sealed", info.key_sealed, box, info.sha256)
    assert summary(live.target) == before
    assert live.indices() == [live.prefix]
