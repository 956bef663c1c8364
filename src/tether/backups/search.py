"""Back up and restore one `elasticsearch`-kind instance's indices (OpenSearch or Elasticsearch):
the index named by its prefix and the indices named `PREFIX-…`, with their mappings, their
user-settable settings and every document.

Who connects. The instance's own user (its credentials, `SearchTarget.from_credentials`) does
everything: its role may read, create and delete exactly those indices, read their mappings and
settings, search and scroll them and bulk-index into them (provider `elasticsearch`). No admin is
needed, so neither a backup nor a restore (even of an uploaded, hostile file) can reach another
instance's indices: the server refuses them.

Format (`FORMAT`), NDJSON, one JSON object a line:

    {"format": "search-ndjson-1", "prefix": "tether_i12"}
    {"index": {"name": "tether_i12-notes", "settings": {...}, "mappings": {...}}}
    {"doc": {"_id": "1", "_source": {...}}}          (and "_routing" when a document has one)
    ... the documents of that index, then the next "index" line ...
    {"end": {"indices": 2, "documents": 1234}}

The settings kept (`KEPT_SETTINGS`) are those a user chooses: shards, replicas, analysis,
similarity, refresh interval, result window, mapping limits, hidden; not the server's own
(uuid, creation date, version). Aliases are not kept (an instance may not make aliases). The last
line makes a cut-short stream recognisable. What a document is restored from is its `_source`:
fields a mapping leaves out of `_source` (`_source.excludes`) are not in the backup, and
documents come back at version 1 (versions and sequence numbers are not kept).

Reading: each index is read with a scroll sorted by `_doc` (the cheapest order), a page at a time,
so memory stays at one page whatever the index's size; the number of documents read must equal
the number the search counted, or the backup fails. Each index is a consistent snapshot; the
indices are read one after the other, not at one instant. A closed index, or one without
`_source`, cannot be read: the backup fails and says so. (Known limit of OpenSearch, see the
provider: another tenant can end a scroll; the backup then fails, it is never cut short.)

"Replace" (`restore_stream`): every index of the instance (`PREFIX` and `PREFIX-…`, hidden and
closed ones too) is deleted, then each index of the backup is created with its settings and
mappings and its documents bulk-indexed, and the indices are refreshed. Blocks the instance set on
its own indices (`index.blocks.metadata`, `read_only`) are cleared before the deletion, as the
instance. Restoring into another
instance renames the backup's prefix to the target's (`live_i1-notes` → `test_i7-notes`).
Not atomic: the server has no transaction over indices. A restore that fails half-way leaves
the instance with some of the backup's indices, possibly one of them partly filled; running it
again starts from scratch (it deletes first). `restore_sealed` reads and checks the whole sealed
file (every chunk authenticated, every line parsed, the counts of the last line) in a first pass
before deleting anything, so a damaged or cut-short backup is refused with the instance
untouched; `restore_stream` on a plain stream can check the header only before it deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tether.backups.postgres import BackupError
from tether.backups.sealed import SealedInfo, read_sealed, write_sealed
from tether.errors import UserError
from tether.redact import redact

FORMAT = "search-ndjson-1"
TIMEOUT = httpx.Timeout(120.0, connect=5.0)
#: documents per scroll page
PAGE = 500
SCROLL = "5m"
#: bytes of NDJSON gathered before a chunk is yielded, and of one bulk request
CHUNK = 1 << 20
BULK_BYTES = 8 << 20
BULK_DOCS = 2000
#: the longest line a backup may have (one document)
MAX_LINE = 256 << 20
#: index settings (under `index.`) a backup keeps: what a user sets, not what the server made
KEPT_SETTINGS = ("number_of_shards", "number_of_replicas", "analysis", "similarity",
                 "refresh_interval", "max_result_window", "max_ngram_diff", "max_shingle_diff",
                 "mapping", "hidden")
_DELETE_BATCH = 50


class NotASearchBackup(UserError):
    """A file or stream that is not a search backup of this format, or is damaged."""


def _bad(what: str) -> NotASearchBackup:
    return NotASearchBackup(f"not a usable {FORMAT} search backup: {what}. Use a backup Tether "
                            "made of an Elasticsearch/OpenSearch instance")


@dataclass(frozen=True)
class SearchTarget:
    """One instance's index prefix and its own login (what the provider's `provision`
    returned)."""

    base: str  # e.g. http://127.0.0.1:9200
    user: str
    password: str = field(repr=False)
    prefix: str

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any]) -> SearchTarget:
        host = str(values["host"])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return cls(base=f"{values.get('scheme') or 'http'}://{host}:{int(values['port'])}",
                   user=str(values["user"]), password=str(values["password"]),
                   prefix=str(values["prefix"]))

    @property
    def where(self) -> str:
        return f"index prefix {self.prefix} on {self.base}"

    def owns(self, index: str) -> bool:
        return index == self.prefix or index.startswith(self.prefix + "-")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _line(value: Any) -> bytes:
    return (_canon(value) + "\n").encode()


# -- the HTTP API as the instance ----------------------------------------------------------------


class _Api:
    def __init__(self, target: SearchTarget) -> None:
        self.target = target
        self.client = httpx.Client(auth=(target.user, target.password), timeout=TIMEOUT,
                                   follow_redirects=False)

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, method: str, path: str, body: Any = None, *, content: bytes | None = None,
             ok_missing: bool = False) -> Any:
        t = self.target
        headers = {"content-type": "application/x-ndjson" if content is not None
                   else "application/json"}
        try:
            response = self.client.request(method, f"{t.base}{path}", headers=headers,
                                           json=body if content is None else None,
                                           content=content)
        except httpx.HTTPError as exc:
            raise BackupError(f"cannot reach {t.where}: "
                              f"{redact(str(exc) or type(exc).__name__, (t.password,))}"
                              ) from None
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code >= 400:
            raise BackupError(f"{t.where} refused {method} {path.split('?')[0]} as "
                              f"{t.user}: {self._reason(response)}")
        try:
            return response.json()
        except ValueError:
            raise BackupError(f"{t.where} did not answer {method} {path.split('?')[0]} like "
                              "Elasticsearch/OpenSearch") from None

    def _reason(self, response: httpx.Response) -> str:
        text = ""
        try:
            data = response.json()
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                text = f"{error.get('type', '')}: {error.get('reason', '')}"
            elif error:
                text = str(error)
        except ValueError:
            pass
        return redact(f"HTTP {response.status_code} {text or response.reason_phrase}"[:500],
                      (self.target.password,))

    def indices(self) -> dict[str, Any]:
        """The instance's indices (hidden and closed ones too) with settings and mappings."""
        p = quote(self.target.prefix, safe="")
        found = self.call("GET", f"/{p},{p}-*?expand_wildcards=all&ignore_unavailable=true"
                                 "&allow_no_indices=true") or {}
        return {name: meta for name, meta in found.items() if self.target.owns(name)}


def _kept_settings(meta: Mapping[str, Any]) -> dict[str, Any]:
    index = ((meta.get("settings") or {}).get("index") or {})
    return {key: index[key] for key in KEPT_SETTINGS if key in index}


def _is_closed(meta: Mapping[str, Any]) -> bool:
    index = (meta.get("settings") or {}).get("index") or {}
    return str(index.get("verified_before_close", "")).lower() == "true"


def _documents(api: _Api, index: str) -> Iterator[dict[str, Any]]:
    """Every document of one index (`_id`, `_source`, `_routing` if any), by a scroll; fails
    unless as many were read as the search counted."""
    name = quote(index, safe="")
    page = api.call("POST", f"/{name}/_search?scroll={SCROLL}",
                    {"size": PAGE, "sort": ["_doc"], "track_total_hits": True})
    scroll_id = page.get("_scroll_id")
    total = int(((page.get("hits") or {}).get("total") or {}).get("value", -1))
    read = 0
    try:
        while True:
            hits = (page.get("hits") or {}).get("hits") or []
            if not hits:
                break
            for hit in hits:
                if "_source" not in hit:
                    raise BackupError(f"the index {index} of {api.target.where} keeps no "
                                      "_source: its documents cannot be backed up")
                doc = {"_id": hit["_id"], "_source": hit["_source"]}
                if hit.get("_routing") is not None:
                    doc["_routing"] = hit["_routing"]
                read += 1
                yield doc
            page = api.call("POST", "/_search/scroll", {"scroll": SCROLL,
                                                        "scroll_id": scroll_id})
            scroll_id = page.get("_scroll_id") or scroll_id
    finally:
        if scroll_id:
            with contextlib.suppress(BackupError):  # it expires anyway
                api.call("DELETE", "/_search/scroll", {"scroll_id": [scroll_id]},
                         ok_missing=True)
    if read != total:
        raise BackupError(f"reading the index {index} of {api.target.where} gave {read} "
                          f"documents, not the {total} it holds: back up again")


def _readable(api: _Api) -> dict[str, Any]:
    indices = api.indices()
    for name, meta in sorted(indices.items()):
        if _is_closed(meta):
            raise BackupError(f"the index {name} of {api.target.where} is closed, so its "
                              f"documents cannot be read: open it (POST /{name}/_open) or "
                              "delete it, then back up again")
    return indices


# -- backup --------------------------------------------------------------------------------------


def dump_stream(target: SearchTarget) -> Generator[bytes, None, None]:
    """The instance's indices as NDJSON (see the module doc), in chunks of about `CHUNK`
    bytes. Raises `BackupError` if anything failed; the last line is only written after every
    index was read in full."""
    with _Api(target) as api:
        buffer = bytearray(_line({"format": FORMAT, "prefix": target.prefix}))
        indices = _readable(api)
        documents = 0
        for name, meta in sorted(indices.items()):
            buffer += _line({"index": {"name": name, "settings": _kept_settings(meta),
                                       "mappings": meta.get("mappings") or {}}})
            for doc in _documents(api, name):
                buffer += _line({"doc": doc})
                documents += 1
                if len(buffer) >= CHUNK:
                    yield bytes(buffer)
                    buffer.clear()
        buffer += _line({"end": {"indices": len(indices), "documents": documents}})
        yield bytes(buffer)


def dump_sealed(target: SearchTarget, dest: Path, box: Any) -> SealedInfo:
    """Back up the instance's indices into the new sealed file `dest` (see `sealed`)."""
    stream = dump_stream(target)
    try:
        return write_sealed(dest, stream, box)
    finally:
        stream.close()


# -- reading a backup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Index:
    name: str
    settings: dict[str, Any]
    mappings: dict[str, Any]


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream of chunks; a line longer than a chunk is gathered in one buffer
    (each byte copied once), at most `MAX_LINE` bytes."""
    rest = bytearray()
    for data in chunks:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if rest:
                rest += data[start:end]
                yield bytes(rest)
                rest.clear()
            else:
                yield data[start:end]
            start = end + 1
        rest += data[start:]
        if len(rest) > MAX_LINE:
            raise _bad(f"a line is longer than {MAX_LINE >> 20} MiB")
    if rest:
        yield bytes(rest)


def _json(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        raise _bad("a line is not JSON") from None
    if not isinstance(value, dict) or (len(value) != 1 and "format" not in value):
        raise _bad("a line is not one of format, index, doc, end")
    return value


def _records(chunks: Iterable[bytes]) -> Iterator[tuple[str, Any]]:
    """("prefix", str), then ("index", _Index) and ("doc", dict) records, checked; the end line
    is checked against what came before and not passed on. A stream without it is refused
    (when it ends, i.e. after everything before it was passed on)."""
    lines = _lines(chunks)
    head = next(lines, None)
    if head is None:
        raise _bad("it is empty")
    first = _json(head)
    if first.get("format") != FORMAT:
        raise _bad(f"its format is {str(first.get('format'))[:40]!r}, not {FORMAT!r}")
    prefix = first.get("prefix")
    if not isinstance(prefix, str) or not prefix:
        raise _bad("it names no prefix")
    yield "prefix", prefix
    indices, documents, current, names = 0, 0, None, set()
    for line in lines:
        record = _json(line)
        if "end" in record:
            end = record["end"]
            if not isinstance(end, dict) or end.get("indices") != indices or end.get(
                    "documents") != documents:
                raise _bad("its counts of indices and documents do not match its content")
            if next(lines, None) is not None:
                raise _bad("it goes on after its end")
            return
        if "index" in record:
            meta = record["index"]
            name = meta.get("name") if isinstance(meta, dict) else None
            if not isinstance(name, str) or not (name == prefix or name.startswith(
                    prefix + "-")) or name in names:
                raise _bad("an index is not named by its prefix, or twice")
            settings, mappings = meta.get("settings") or {}, meta.get("mappings") or {}
            if not isinstance(settings, dict) or not isinstance(mappings, dict) or any(
                    key not in KEPT_SETTINGS for key in settings):
                raise _bad(f"the index {name[:100]} has unexpected settings or mappings")
            names.add(name)
            current = _Index(name, settings, mappings)
            indices += 1
            yield "index", current
        elif "doc" in record:
            doc = record["doc"]
            if current is None or not isinstance(doc, dict) or not isinstance(
                    doc.get("_id"), str) or not isinstance(doc.get("_source"), dict) or (
                    "_routing" in doc and not isinstance(doc["_routing"], str)):
                raise _bad("a document has no index, no _id or no _source")
            documents += 1
            yield "doc", doc
        else:
            raise _bad("a line is not one of format, index, doc, end")
    raise _bad("it is cut short (no end line)")


def check_stream(chunks: Iterable[bytes]) -> None:
    """Read a whole backup and check it (`NotASearchBackup`; `chunks` raising passes on)."""
    for _ in _records(chunks):
        pass


# -- restore -------------------------------------------------------------------------------------


def _renamed(name: str, old: str, new: str) -> str:
    return new + name[len(old):]


#: index blocks the instance may set on its own indices that stop their deletion, in the order
#: they can be cleared (one per request: a request with several is refused under the block)
_DELETE_BLOCKS = ("index.blocks.metadata", "index.blocks.read_only")


def _delete_all(api: _Api) -> None:
    """Delete every index of the instance, clearing first (as the instance, which may update
    its indices' settings) the blocks that would make the deletion fail."""
    p = quote(api.target.prefix, safe="")
    for setting in _DELETE_BLOCKS:  # by pattern: under a metadata block, listing is refused
        api.call("PUT", f"/{p},{p}-*/_settings?expand_wildcards=all&ignore_unavailable=true"
                        "&allow_no_indices=true", {setting: None}, ok_missing=True)
    names = sorted(api.indices())
    for i in range(0, len(names), _DELETE_BATCH):
        batch = ",".join(quote(n, safe="") for n in names[i:i + _DELETE_BATCH])
        api.call("DELETE", f"/{batch}?expand_wildcards=all", ok_missing=True)


class _Bulk:
    def __init__(self, api: _Api) -> None:
        self.api = api
        self.body = bytearray()
        self.count = 0

    def add(self, index: str, doc: Mapping[str, Any]) -> None:
        action: dict[str, Any] = {"_index": index, "_id": doc["_id"]}
        if "_routing" in doc:
            action["routing"] = doc["_routing"]
        self.body += _line({"index": action}) + _line(doc["_source"])
        self.count += 1
        if self.count >= BULK_DOCS or len(self.body) >= BULK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        answer = self.api.call("POST", "/_bulk", content=bytes(self.body))
        self.body.clear()
        self.count = 0
        if answer.get("errors"):
            for item in answer.get("items") or []:
                result = next(iter(item.values()), {}) if isinstance(item, dict) else {}
                error = result.get("error") if isinstance(result, dict) else None
                if error:
                    reason = (f"{error.get('type')}: {error.get('reason')}"
                              if isinstance(error, dict) else str(error))
                    raise BackupError(f"indexing into {result.get('_index')} on "
                                      f"{self.api.target.where} failed: {reason[:500]}")
            raise BackupError(f"indexing into {self.api.target.where} failed")


def restore_stream(target: SearchTarget, chunks: Iterable[bytes]) -> None:
    """Replace the instance's indices with the backup's (see the module doc: what "replace"
    means, not atomic). The header is checked before anything is deleted; a stream damaged
    later fails the restore part-way (use `restore_sealed`, which checks everything first)."""
    records = _records(chunks)
    _, old_prefix = next(records)
    with _Api(target) as api:
        _delete_all(api)
        bulk = _Bulk(api)
        made: list[str] = []
        current = ""
        for kind, record in records:
            if kind == "index":
                bulk.flush()
                current = _renamed(record.name, old_prefix, target.prefix)
                body: dict[str, Any] = {"mappings": record.mappings}
                if record.settings:
                    body["settings"] = {"index": record.settings}
                api.call("PUT", f"/{quote(current, safe='')}", body)
                made.append(current)
            else:
                bulk.add(current, record)
        bulk.flush()
        for i in range(0, len(made), _DELETE_BATCH):
            batch = ",".join(quote(n, safe="") for n in made[i:i + _DELETE_BATCH])
            api.call("POST", f"/{batch}/_refresh?expand_wildcards=all")


def restore_sealed(target: SearchTarget, path: Path, key_sealed: str, box: Any,
                   expected_sha256: str) -> None:
    """Restore a sealed backup into the instance. A first pass decrypts and checks the whole
    file (nothing is changed if it is damaged, cut short or malformed), the second restores."""
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        check_stream(chunks)
    finally:
        chunks.close()
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        restore_stream(target, chunks)
    finally:
        chunks.close()


# -- summary -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexSummary:
    documents: int
    checksum: str  # order-independent over (_id, _routing, _source canonical JSON)
    mappings: str  # canonical JSON
    settings: str  # canonical JSON of the kept settings


@dataclass(frozen=True)
class SearchSummary:
    """Per index, named `PREFIX` + its suffix (so instances of other prefixes compare)."""

    indices: dict[str, IndexSummary]


def summary(target: SearchTarget) -> SearchSummary:
    """Document counts, content checksums, mappings and kept settings of every index of the
    instance. Each document's canonical JSON is hashed (SHA-256) and the hashes summed modulo
    2**128: order-independent, one streaming pass."""
    out: dict[str, IndexSummary] = {}
    with _Api(target) as api:
        for name, meta in sorted(_readable(api).items()):
            total, count = 0, 0
            for doc in _documents(api, name):
                digest = hashlib.sha256(_canon(doc).encode()).digest()
                total = (total + int.from_bytes(digest[:16], "big")) % (1 << 128)
                count += 1
            out["PREFIX" + name[len(target.prefix):]] = IndexSummary(
                documents=count, checksum=f"{total:032x}",
                mappings=_canon(meta.get("mappings") or {}),
                settings=_canon(_kept_settings(meta)))
    return SearchSummary(indices=out)
