"""Back up and restore one RabbitMQ instance's vhost DEFINITIONS: its exchanges, queues, bindings
and policies.

NOT MESSAGES. A backup holds no message: the queues come back empty (a restore keeps the
messages of a queue that is in the backup and on the vhost with the very same properties, see
"replace" below). Nor does it hold the vhost's users, permissions, limits or runtime parameters
(shovels, federation upstreams: they hold URIs with credentials): those are Tether's (the
provider sets them) or the operator's.

Format (`FORMAT`): one JSON object, the vhost's definitions as RabbitMQ exports them
(`GET /api/definitions/VHOST`) reduced to those four lists, each entry to the fields that define
it, plus `format` and the source `vhost`. A plain vhost export made elsewhere (the management
UI's "export definitions" of one vhost) is read too.

Who connects, and why the cluster's admin is needed. The instance's user has no tags (provider
`rabbitmq`: least privilege), so the management API refuses it ("Not management user"), and AMQP
has no way to list a vhost's exchanges, queues or bindings. Reading the definitions and importing
them (`POST /api/definitions/VHOST`) therefore take the cluster's administrator (`RabbitAdmin`,
from the cluster URL), and so does deleting a policy. The admin has no permission on tenants'
vhosts (the provider takes it away), so the management API refuses it to delete queues,
exchanges or bindings there: those deletions go over AMQP with the instance's own credentials
(`RabbitTarget`, full rights on its vhost and nothing else), and no right is ever added to
anyone for a restore.

Hostile files. A backup may be a file uploaded by a user. It is parsed and checked in full
before anything changes; only vhost-scoped things are sent to the import, always into the
instance's own vhost (the file's `vhost` fields are dropped): never users, permissions, vhosts,
parameters or global parameters, whatever the file holds.

"Replace" (`restore_stream`) means, in this order:

1. the whole backup is read (at most `MAX_BACKUP` bytes) and checked: a damaged, cut-short or
   malformed backup is refused here, before anything on the vhost changes;
2. bindings of the vhost that are not in the backup are removed, then queues and exchanges that
   are not in the backup or differ from it (type, durability, auto-delete, internal,
   arguments) are deleted (with their messages), then policies not in the backup (by name);
3. the backup's definitions are imported: missing ones are declared, policies of the same name
   are overwritten. Queues and exchanges equal to the backup's were kept in step 2, so are their
   messages.

Not atomic: RabbitMQ has no transaction over definitions. A restore that fails in step 2 or 3
(the broker unreachable, a definition refused) leaves the vhost part-way: some of its things
deleted, some of the backup's declared. Running the restore again converges (each step is
idempotent). Applications connected meanwhile keep running; one that declares its own topology
may re-declare what step 2 deleted, and queues it consumes from may disappear under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import amqp
import httpx
from amqp.exceptions import AMQPError, NotFound

from tether.backups.postgres import BackupError
from tether.backups.sealed import SealedInfo, read_sealed, write_sealed
from tether.errors import UserError
from tether.providers.base import ClusterSpec
from tether.providers.rabbitmq import _Target
from tether.redact import redact

FORMAT = "rabbitmq-definitions-1"
#: the largest backup a restore reads (it is held in memory to be checked before any change)
MAX_BACKUP = 64 << 20
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
AMQP_TIMEOUT = 10.0
_KINDS = ("exchanges", "queues", "bindings", "policies")
_APPLY_TO = ("all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams")


class NotARabbitBackup(UserError):
    """A file that is not a backup of one vhost's definitions (or is damaged)."""


@dataclass(frozen=True)
class RabbitTarget:
    """One instance's vhost and its own AMQP login (what the provider's `provision` returned)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    vhost: str

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any]) -> RabbitTarget:
        return cls(host=str(values["host"]), port=int(values["port"]), user=str(values["user"]),
                   password=str(values["password"]), vhost=str(values["vhost"]))

    @property
    def where(self) -> str:
        return f"vhost {self.vhost} on {self.host}:{self.port}"


@dataclass(frozen=True)
class RabbitAdmin:
    """The management API as the cluster's administrator (from the cluster URL)."""

    api: str  # e.g. http://127.0.0.1:15672/api, no credentials
    where: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_cluster(cls, cluster: ClusterSpec) -> RabbitAdmin:
        t = _Target.of(cluster)
        return cls(api=t.api, where=t.where, user=t.user, password=t.password or "")


# -- the definitions -----------------------------------------------------------------------------


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _bad(what: str) -> NotARabbitBackup:
    return NotARabbitBackup(
        f"not a usable RabbitMQ definitions backup: {what}. Use a backup Tether made, or one "
        "vhost's definitions exported from the management API (GET /api/definitions/VHOST)")


def _str(entry: Mapping[str, Any], key: str, kind: str, *, default: str | None = None,
         empty: bool = False) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or (not value and not empty):
        raise _bad(f"an entry of {kind} has no valid {key!r}")
    return value


def _bool(entry: Mapping[str, Any], key: str, kind: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"an entry of {kind} has a {key!r} that is not true or false")
    return value


def _dict(entry: Mapping[str, Any], key: str, kind: str) -> dict[str, Any]:
    value = entry.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"an entry of {kind} has {key!r} that is not an object")
    return value


def _clean(kind: str, entry: Any) -> dict[str, Any]:
    """One definition reduced to the fields that define it (checked), without any `vhost`."""
    if not isinstance(entry, dict):
        raise _bad(f"an entry of {kind} is not an object")
    if kind == "exchanges":
        return {"name": _str(entry, "name", kind), "type": _str(entry, "type", kind),
                "durable": _bool(entry, "durable", kind, True),
                "auto_delete": _bool(entry, "auto_delete", kind, False),
                "internal": _bool(entry, "internal", kind, False),
                "arguments": _dict(entry, "arguments", kind)}
    if kind == "queues":
        return {"name": _str(entry, "name", kind),
                "durable": _bool(entry, "durable", kind, True),
                "auto_delete": _bool(entry, "auto_delete", kind, False),
                "arguments": _dict(entry, "arguments", kind)}
    if kind == "bindings":
        destination_type = _str(entry, "destination_type", kind)
        if destination_type not in ("queue", "exchange"):
            raise _bad(f"a binding has the destination type {destination_type!r}")
        return {"source": _str(entry, "source", kind), "destination": _str(
                    entry, "destination", kind), "destination_type": destination_type,
                "routing_key": _str(entry, "routing_key", kind, default="", empty=True),
                "arguments": _dict(entry, "arguments", kind)}
    apply_to = _str(entry, "apply-to", kind, default="all")
    if apply_to not in _APPLY_TO:
        raise _bad(f"a policy applies to {apply_to!r}")
    priority = entry.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise _bad("a policy has a priority that is not an integer")
    definition = _dict(entry, "definition", kind)
    if not definition:
        raise _bad("a policy has no definition")
    return {"name": _str(entry, "name", kind), "pattern": _str(entry, "pattern", kind),
            "apply-to": apply_to, "definition": definition, "priority": priority}


@dataclass(frozen=True)
class Definitions:
    """A vhost's exchanges, queues, bindings and policies, each entry cleaned (`_clean`)."""

    exchanges: list[dict[str, Any]]
    queues: list[dict[str, Any]]
    bindings: list[dict[str, Any]]
    policies: list[dict[str, Any]]
    rabbit_version: str = ""

    @classmethod
    def of(cls, doc: Any, *, strict: bool = True) -> Definitions:
        """From a backup or an export (`strict`), or from the server's own answer (built-in
        `amq.*` exchanges are left out either way: they always exist and cannot be declared)."""
        if not isinstance(doc, dict):
            raise _bad("it is not a JSON object")
        if strict and "format" in doc and doc["format"] != FORMAT:
            raise _bad(f"its format is {str(doc['format'])[:40]!r}, not {FORMAT!r}")
        if strict and not any(kind in doc for kind in _KINDS):
            raise _bad("it has none of " + ", ".join(_KINDS))
        lists: dict[str, list[dict[str, Any]]] = {}
        vhosts: set[str] = set()
        for kind in _KINDS:
            entries = doc.get(kind) or []
            if not isinstance(entries, list):
                raise _bad(f"{kind} is not a list")
            vhosts.update(str(e["vhost"]) for e in entries if isinstance(e, dict) and "vhost" in e)
            cleaned = [_clean(kind, entry) for entry in entries]
            if kind == "exchanges":
                cleaned = [e for e in cleaned if not e["name"].startswith("amq.")]
            lists[kind] = _unique(kind, cleaned)
        if strict and len(vhosts) > 1:
            raise _bad("it holds the definitions of several vhosts; export one vhost's")
        version = doc.get("rabbit_version")
        return cls(rabbit_version=version if isinstance(version, str) else "", **lists)

    def doc(self, vhost: str) -> dict[str, Any]:
        return {"format": FORMAT, "vhost": vhost, "rabbit_version": self.rabbit_version,
                **{kind: self.sorted(kind) for kind in _KINDS}}

    def sorted(self, kind: str) -> list[dict[str, Any]]:
        return sorted(getattr(self, kind), key=_canon)


def _key(kind: str, entry: Mapping[str, Any]) -> str:
    """What names an entry: a binding is all its fields, the others their name."""
    return _canon(entry) if kind == "bindings" else str(entry["name"])


def _unique(kind: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        key = _key(kind, entry)
        if key in seen and _canon(seen[key]) != _canon(entry):
            raise _bad(f"two different {kind} are named {key[:100]!r}")
        seen[key] = entry
    return list(seen.values())


def parse_backup(data: bytes) -> Definitions:
    """A backup's definitions, checked in full (`NotARabbitBackup` otherwise)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad("it is not JSON") from None
    return Definitions.of(doc)


# -- the management API as the admin -------------------------------------------------------------


class _Mgmt:
    def __init__(self, admin: RabbitAdmin, target: RabbitTarget) -> None:
        self.admin = admin
        self.vhost = quote(target.vhost, safe="")
        self.secrets = (admin.password, target.password)
        self.client = httpx.Client(auth=(admin.user, admin.password), timeout=TIMEOUT,
                                   follow_redirects=False)

    def __enter__(self) -> _Mgmt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, method: str, path: str, body: Any = None, ok_missing: bool = False
             ) -> httpx.Response | None:
        a = self.admin
        try:
            response = self.client.request(method, f"{a.api}{path}", json=body)
        except httpx.HTTPError as exc:
            raise BackupError(f"cannot reach the RabbitMQ management API at {a.where}: "
                              f"{redact(str(exc) or type(exc).__name__, self.secrets)}") from None
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code == 401:
            raise BackupError(
                f"the RabbitMQ management API at {a.where} refused the cluster's admin "
                f"{a.user!r} ({self._reason(response)}): backups of a vhost's definitions need "
                "an administrator in the cluster URL (an instance's own user may not use the "
                "management API)")
        if response.status_code >= 400:
            raise BackupError(f"the RabbitMQ management API at {a.where} refused {method} "
                              f"{path}: {self._reason(response)}")
        return response

    def _reason(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            text = str(data.get("reason") or data.get("error") or "") if isinstance(
                data, dict) else ""
        except ValueError:
            text = ""
        return redact(f"HTTP {response.status_code} {text or response.reason_phrase}"[:500],
                      self.secrets)

    def definitions(self) -> tuple[Definitions, Any]:
        response = self.call("GET", f"/definitions/{self.vhost}")
        assert response is not None
        try:
            doc = response.json()
        except ValueError:
            raise BackupError(f"{self.admin.where} did not answer GET /definitions like a "
                              "RabbitMQ management API") from None
        try:
            return Definitions.of(doc, strict=False), doc
        except NotARabbitBackup as exc:
            raise BackupError(f"RabbitMQ at {self.admin.where} answered unexpected "
                              f"definitions: {exc.message}") from None


# -- backup --------------------------------------------------------------------------------------


def dump_stream(target: RabbitTarget, admin: RabbitAdmin) -> Generator[bytes, None, None]:
    """The vhost's definitions as one JSON document (see the module doc: no messages). Read in
    one request, so it is all there or `BackupError` is raised before anything is yielded."""
    with _Mgmt(admin, target) as mgmt:
        found, _ = mgmt.definitions()
    yield json.dumps(found.doc(target.vhost), sort_keys=True, indent=1,
                     ensure_ascii=False).encode()


def dump_sealed(target: RabbitTarget, dest: Path, box: Any, admin: RabbitAdmin) -> SealedInfo:
    """Back up the vhost's definitions into the new sealed file `dest` (see `sealed`)."""
    stream = dump_stream(target, admin)
    try:
        return write_sealed(dest, stream, box)
    finally:
        stream.close()


# -- restore -------------------------------------------------------------------------------------


def _read_all(chunks: Iterable[bytes]) -> bytes:
    parts: list[bytes] = []
    size = 0
    for data in chunks:
        size += len(data)
        if size > MAX_BACKUP:
            raise _bad(f"it is larger than {MAX_BACKUP >> 20} MiB")
        parts.append(data)
    return b"".join(parts)


class _Amqp:
    """AMQP as the instance's own user, for deletions: a channel closed by a 404 (already gone,
    e.g. deleted by an application meanwhile) is replaced and the deletion counts as done."""

    def __init__(self, target: RabbitTarget) -> None:
        self.target = target
        self.conn = amqp.Connection(host=f"{target.host}:{target.port}", userid=target.user,
                                    password=target.password, virtual_host=target.vhost,
                                    connect_timeout=AMQP_TIMEOUT, read_timeout=AMQP_TIMEOUT,
                                    write_timeout=AMQP_TIMEOUT)
        try:
            self.conn.connect()
        except (OSError, AMQPError) as exc:
            raise BackupError(f"cannot connect over AMQP to {target.where} as {target.user}: "
                              f"{redact(str(exc), (target.password,))}") from None
        self.channel = self.conn.channel()

    def run(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self.channel, method)(*args, **kwargs)
        except NotFound:
            self.channel = self.conn.channel()
        except (OSError, AMQPError) as exc:
            raise BackupError(f"deleting {what} on {self.target.where} failed: "
                              f"{redact(str(exc), (self.target.password,))}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, AMQPError):
            self.conn.close()


def _stale(kind: str, held: list[dict[str, Any]], wanted: list[dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """What the vhost holds that the backup does not, or holds otherwise (policies: by name
    only, the import overwrites one of the same name)."""
    if kind == "policies":
        names = {p["name"] for p in wanted}
        return [p for p in held if p["name"] not in names]
    keep = {_canon(entry) for entry in wanted}
    return [entry for entry in held if _canon(entry) not in keep]


def _delete_stale(target: RabbitTarget, mgmt: _Mgmt, held: Definitions,
                  backup: Definitions) -> None:
    stale = {kind: _stale(kind, getattr(held, kind), getattr(backup, kind)) for kind in _KINDS}
    if stale["bindings"] or stale["queues"] or stale["exchanges"]:
        link = _Amqp(target)
        try:
            for b in stale["bindings"]:
                what = f"the binding {b['source']} -> {b['destination']}"
                if b["destination_type"] == "queue":
                    link.run(what, "queue_unbind", b["destination"], b["source"],
                             b["routing_key"], arguments=b["arguments"])
                else:
                    link.run(what, "exchange_unbind", b["destination"], b["source"],
                             b["routing_key"], arguments=b["arguments"])
            for q in stale["queues"]:
                link.run(f"the queue {q['name']}", "queue_delete", q["name"])
            for e in stale["exchanges"]:
                link.run(f"the exchange {e['name']}", "exchange_delete", e["name"])
        finally:
            link.close()
    for p in stale["policies"]:
        mgmt.call("DELETE", f"/policies/{mgmt.vhost}/{quote(p['name'], safe='')}",
                  ok_missing=True)


def restore_stream(target: RabbitTarget, chunks: Iterable[bytes], admin: RabbitAdmin) -> None:
    """Replace the vhost's exchanges, queues, bindings and policies with the backup's (see the
    module doc for what "replace" means and what a failure leaves). The whole backup is read
    and checked before anything changes: a damaged backup (`chunks` raising) or a malformed one
    (`NotARabbitBackup`) leaves the vhost as it was."""
    backup = parse_backup(_read_all(chunks))
    with _Mgmt(admin, target) as mgmt:
        held, _ = mgmt.definitions()
        _delete_stale(target, mgmt, held, backup)
        body = {"rabbit_version": backup.rabbit_version or "3.8.0",
                **{kind: backup.sorted(kind) for kind in _KINDS}}
        mgmt.call("POST", f"/definitions/{mgmt.vhost}", body)


def restore_sealed(target: RabbitTarget, path: Path, key_sealed: str, box: Any,
                   expected_sha256: str, admin: RabbitAdmin) -> None:
    """Restore a sealed backup into the vhost. The file is checked (checksum, every chunk
    authenticated) and parsed before the vhost is touched."""
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        restore_stream(target, chunks, admin)
    finally:
        chunks.close()


# -- summary -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VhostSummary:
    """A vhost's definitions, each entry as canonical JSON, sorted (names, types, durability,
    arguments...), and a checksum over all of them: two equal summaries mean the same
    exchanges, queues, bindings and policies. Messages are not part of it."""

    exchanges: tuple[str, ...]
    queues: tuple[str, ...]
    bindings: tuple[str, ...]
    policies: tuple[str, ...]
    checksum: str


def summary(target: RabbitTarget, admin: RabbitAdmin) -> VhostSummary:
    with _Mgmt(admin, target) as mgmt:
        held, _ = mgmt.definitions()
    lists = {kind: tuple(sorted(_canon(e) for e in getattr(held, kind))) for kind in _KINDS}
    digest = hashlib.sha256(_canon(lists).encode()).hexdigest()
    return VhostSummary(checksum=digest, **lists)
