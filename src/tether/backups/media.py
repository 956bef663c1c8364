"""Back up and restore the objects of one media storage instance: local files (a directory), S3
(a bucket) or Azure Blob (a container), all three in one format.

Format `tether-media-tar-1`: a POSIX (PAX) tar stream, as Python's `tarfile` writes it in stream
mode (`w|`; the headers are `TarInfo.tobuf(PAX_FORMAT)`, the framing that of `TarFile.addfile`,
written here piece by piece so that an object of many GB is streamed through in 1 MiB pieces,
never held whole in memory). Any tar reader lists and extracts it (GNU tar warns that it
ignores the `TETHER.*` keywords).

- One regular-file member per object, in listing order. Its name is the object's key when that
  is a safe relative path; a key that would escape on extract (absolute, a `.`/`..`/empty
  segment, a trailing `/`) is stored as `_tether_escaped/<sha256 of the key>` instead. Its PAX
  headers carry `TETHER.key` (the exact key, which a restore uses), `TETHER.content_type`, and
  where the storage has them `TETHER.cache_control`, `TETHER.content_disposition`,
  `TETHER.content_encoding`, `TETHER.content_language`, `TETHER.metadata` (user metadata, JSON)
  and `TETHER.acl` (S3: `public-read` or `private`). The member's size is the object's size as
  its GET (or `fstat`) answered, before a byte is read: a tar header needs it up front.
- A `MANIFEST.json` member LAST (marked by the PAX header `TETHER.manifest=1`, so an object keyed
  `MANIFEST.json` is not mistaken for it): the format, the kind it came from, and every object's
  key, size, sha256 and content type, computed while streaming; for local files also the entries
  left out (`skipped`, see below).

Content types. S3 and Azure store one per object; local files have none: their type is the one
Tether's media origin serves them with, guessed from the name (`mimetypes.guess_type`, else
`application/octet-stream`), and a restore into local files cannot set it.

Which kinds restore into which. The format is the same, so a backup of any media kind restores
into an instance of any media kind (e.g. S3 into local files). Same-kind restores are exact;
across kinds what the target cannot hold is dropped (content types and headers into local files;
the ACL into Azure, whose access is per container) and a key that is no valid relative path is
refused by local files (`UnrestorableKey`), as are two keys `a` and `a/b` (a file cannot be a
directory too).

What a backup is. Not a point-in-time snapshot across objects (no media storage offers one):
each object is read as it is when its GET (or open) answers; an object written meanwhile is in
its old or its new version, one deleted after the listing is left out. S3 and Azure return one
version per GET (Azure refuses a blob changed between the pieces of a download: the backup then
fails and is run again). A local file rewritten IN PLACE while it is read can be torn (writing a
new file and renaming it over, as Django's storage does, is safe: the open file stays the old
one). Versioned buckets: current versions only. Empty directories of local files are not objects
and are not backed up.

Local files, safely as root. The instance's directory belongs to its application's user, who
may plant symlinks and hard links there. Nothing here follows a symlink: every path is opened
one component at a time relative to its parent's descriptor with `O_NOFOLLOW` (as
`tether.media` serves them). A backup takes regular files owned by the directory's owner only:
symlinks, FIFOs, devices, files of other users (a hard link to a file elsewhere, which root could
read) and names that are not UTF-8 are left out and listed in the manifest's `skipped`. A
restore writes each file as a new temp file in its directory (`.tether-restore-*.tmp`), gives
it the directory owner's uid/gid, the backed-up mode (no set-id bits) and mtime, fsyncs it and
renames it over the old one: a local file is replaced whole or not at all. Directories it makes
are 0755 and the owner's too.

Who connects: the instance's own credentials only (S3: the instance's access key; Azure: its
container SAS, `racwdl`; local files: the filesystem), which reach its bucket/container and
nothing else. No admin is needed. `from_credentials` takes an optional endpoint for where
Tether reaches the storage when that is not the address applications use (the credentials hold
the latter, e.g. Azurite's `ACCOUNT.blob.localhost`).

Restore, and what "replace" means: after the restore the instance holds exactly the backup's
objects (each with its content and content type/headers), and nothing else: every member is
uploaded (overwriting an object of the same key), then every object not in the backup is
deleted. It is NOT atomic across objects (no media storage can swap a whole bucket): each object
is replaced whole or not at all (S3 single PUT or multipart completed only at the end, Azure
block list committed only at the end, local temp file renamed), but a restore that fails halfway
leaves some objects replaced by the backup's version and the rest as they were, with the
objects that are not in the backup still there (deletion comes last, only after every member
matched the manifest). Running the restore again converges to the backup.

Checks, and when they happen. The manifest comes last, so a one-pass restore (`restore_stream`)
verifies as it goes: each member's sha256 and size are computed while it is uploaded and
compared with the manifest at the end; a mismatch, a member missing from the archive or from the
manifest, a duplicate key, an unsafe name or a non-file member fails the restore before anything
is deleted, but after the members before it were uploaded. `restore_sealed` does better with a
sealed file (it can be read twice): it first reads the whole archive without writing anything
(`check_archive`: decrypt, parse, hash, compare with the manifest), and only when all of it is
right restores it in a second pass (verifying again): a damaged or inconsistent backup is refused
before the instance is touched at all. The cost is one more local read and decryption of the
file, small next to uploading it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mimetypes
import os
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tether.backups.postgres import BackupError
from tether.backups.sealed import SealedInfo, read_sealed, write_sealed
from tether.errors import UserError
from tether.redact import redact

log = logging.getLogger("tether.backups.media")

FORMAT = "tether-media-tar-1"
MANIFEST_NAME = "MANIFEST.json"
#: where a key that is no safe relative path goes in the archive (its exact key in TETHER.key)
ESCAPED_DIR = "_tether_escaped"
#: bytes read and yielded at a time
CHUNK = 1 << 20
#: a restore refuses a larger manifest (a hostile archive must not take all memory)
MAX_MANIFEST = 512 << 20
#: S3 and Azure uploads: one request up to this size, else parts (multipart, blocks) of at least
#: this size, read one after the other: at most one part is in memory
PART_SIZE = 8 << 20
_S3_MAX_PARTS = 10_000
_AZURE_MAX_BLOCKS = 50_000
_AZURE_PIECE = 4 << 20
TEMP_PREFIX = ".tether-restore-"
TEMP_SUFFIX = ".tmp"
DEFAULT_TYPE = "application/octet-stream"

_PAX = "TETHER."
_KEY = _PAX + "key"
_MANIFEST_MARK = _PAX + "manifest"
#: the content headers kept per object (S3 and Azure), as PAX keys and ObjectInfo.headers keys
HEADERS = ("cache_control", "content_disposition", "content_encoding", "content_language")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


class BadMediaArchive(UserError):
    """Not a media backup this Tether can restore: not a tar of format `tether-media-tar-1`, a
    member that would escape on extract (absolute, `..`) or is no regular file, or members that
    do not match the manifest. Nothing was deleted."""

    code = "backup_bad_archive"


class UnrestorableKey(UserError):
    """An object of the backup cannot exist in the target (local files: a key that is no
    relative path, or a file where another key needs a directory)."""

    code = "backup_unrestorable_key"


# -- targets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFilesTarget:
    """A local-files instance: its directory."""

    directory: str

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any]) -> LocalFilesTarget:
        directory = str(values["directory"])
        if not os.path.isabs(directory):
            raise BackupError("a local-files instance's directory must be an absolute path")
        return cls(directory=directory)

    @property
    def where(self) -> str:
        return self.directory

    @property
    def secrets(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class S3Target:
    """An S3 instance: its bucket, reached with its own access key."""

    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    endpoint_url: str
    region: str
    addressing_style: str = "path"

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any],
                         endpoint_url: str | None = None) -> S3Target:
        """From an S3 instance's credentials; `endpoint_url` (e.g. the cluster's
        `endpoint_scheme://HOST:PORT`) when Tether reaches the server elsewhere than the
        applications' `endpoint_url` in the credentials."""
        return cls(bucket=str(values["bucket"]), access_key_id=str(values["access_key_id"]),
                   secret_access_key=str(values["secret_access_key"]),
                   endpoint_url=str(endpoint_url or values["endpoint_url"]),
                   region=str(values.get("region") or "us-east-1"),
                   addressing_style=str(values.get("addressing_style") or "path"))

    @property
    def where(self) -> str:
        return f"bucket {self.bucket} at {self.endpoint_url}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.secret_access_key,)


@dataclass(frozen=True)
class AzureBlobTarget:
    """An Azure Blob instance: its container, reached with its SAS token."""

    account: str
    container: str
    sas_token: str = field(repr=False)
    endpoint: str
    #: the storage API version to speak (the cluster's `api_version` setting), else the SDK's
    api_version: str | None = None

    @classmethod
    def from_credentials(cls, values: Mapping[str, Any], endpoint: str | None = None,
                         api_version: str | None = None) -> AzureBlobTarget:
        """From an azure-blob instance's credentials; `endpoint` (the cluster's blob endpoint,
        e.g. `http://127.0.0.1:10000/devstoreaccount1` for Azurite) when Tether reaches the
        account elsewhere than the applications' `endpoint` in the credentials; `api_version`:
        the cluster's setting (an Azurite or Azure Stack that rejects the SDK's newest)."""
        return cls(account=str(values["account"]), container=str(values["container"]),
                   sas_token=str(values["sas_token"]),
                   endpoint=str(endpoint or values["endpoint"]).rstrip("/"),
                   api_version=api_version)

    @property
    def where(self) -> str:
        return f"container {self.container} at {self.endpoint}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.sas_token,)


MediaTarget = LocalFilesTarget | S3Target | AzureBlobTarget

def target_from_credentials(kind: str, values: Mapping[str, Any],
                            endpoint: str | None = None,
                            api_version: str | None = None) -> MediaTarget:
    """The target of an instance of a media kind (`local-files`, `s3`, `azure-blob`);
    `endpoint`: where Tether reaches an S3 or Azure server, when not at the applications'
    address in the credentials (see `S3Target` and `AzureBlobTarget.from_credentials`)."""
    if kind == "s3":
        return S3Target.from_credentials(values, endpoint_url=endpoint)
    if kind == "azure-blob":
        return AzureBlobTarget.from_credentials(values, endpoint=endpoint,
                                                api_version=api_version)
    if kind == "local-files":
        return LocalFilesTarget.from_credentials(values)
    raise BackupError(f"{kind} is not a media storage kind")


def kind_of(target: MediaTarget) -> str:
    if isinstance(target, LocalFilesTarget):
        return "local-files"
    if isinstance(target, S3Target):
        return "s3"
    return "azure-blob"


# -- objects and adapters ------------------------------------------------------------------------


@dataclass
class ObjectInfo:
    """One object as stored: what a backup keeps of it besides its bytes."""

    key: str
    size: int
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)  # HEADERS present, non-empty
    metadata: dict[str, str] = field(default_factory=dict)
    acl: str | None = None  # S3: "public-read" or "private"; None: unknown / not applicable
    mtime: int = 0
    mode: int | None = None  # local files: permission bits


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Adapter(Protocol):
    """What each storage kind provides; errors are raised as `BackupError` (secrets masked)."""

    skipped: list[dict[str, str]]

    def objects(self) -> Iterator[tuple[ObjectInfo, _Readable]]:
        """Every object, opened: its info (size as the open answered) and a stream of exactly
        its bytes, valid until the next iteration."""
        ...

    def put(self, info: ObjectInfo, stream: _Readable) -> None:
        """Create or replace one object whole, reading exactly `info.size` bytes."""
        ...

    def delete_except(self, keep: set[str]) -> int:
        """Delete every object whose key is not in `keep`; how many were deleted."""
        ...


def _read_full(stream: _Readable, size: int) -> bytes:
    """Exactly `size` bytes (fewer only at the stream's end)."""
    parts: list[bytes] = []
    while size > 0:
        data = stream.read(size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def _part_size(size: int, max_parts: int) -> int:
    """A part size of at least PART_SIZE with which `size` bytes fit in `max_parts` parts."""
    need = -(-size // max_parts)
    return max(PART_SIZE, -(-need // (1 << 20)) * (1 << 20))


def guessed_type(key: str) -> str:
    """A local file's content type: the one Tether's media origin serves it with."""
    return mimetypes.guess_type(key)[0] or DEFAULT_TYPE


# -- local files -----------------------------------------------------------------------------


def _key_parts(key: str) -> list[str]:
    """A key as path segments when it is a safe relative path (what a local file can be)."""
    parts = key.split("/")
    if (not key or "\x00" in key
            or any(p in ("", ".", "..") or len(p.encode("utf-8", "surrogateescape")) > 255
                   for p in parts)):
        raise UnrestorableKey(f"the object {key!r} cannot be a local file (its key is not a "
                              "relative path): restore this backup into S3 or Azure Blob")
    return parts


class _FdReader:
    """Exactly `size` bytes of an open file, raising when it ends earlier."""

    def __init__(self, fd: int, size: int, key: str) -> None:
        self.fd, self.left, self.key = fd, size, key

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        data = os.read(self.fd, min(size, self.left))
        if not data:
            raise BackupError(f"the file {self.key!r} became shorter while it was backed up "
                              "(rewritten in place): run the backup again")
        self.left -= len(data)
        return data


class _LocalAdapter:
    """A local-files instance's directory; never follows a symlink (see the module doc)."""

    def __init__(self, target: LocalFilesTarget) -> None:
        self.target = target
        self.skipped: list[dict[str, str]] = []
        self.written: set[str] = set()  # keys restored so far

    @contextlib.contextmanager
    def _root(self) -> Iterator[tuple[int, os.stat_result]]:
        try:
            fd = os.open(self.target.directory, _DIR_FLAGS)
        except OSError as exc:
            raise BackupError(f"cannot open the media directory {self.target.directory} "
                              f"({exc.strerror or exc}): provision the instance again") from None
        try:
            yield fd, os.fstat(fd)
        finally:
            os.close(fd)

    def _walk(self, dir_fd: int, prefix: str, depth: int = 0
              ) -> Iterator[tuple[int, str, str, os.stat_result]]:
        """(parent fd, name, key, lstat) of every entry below `dir_fd`, names sorted, children
        of a directory after it; directories are opened relative to their parent."""
        if depth > 256:
            raise BackupError(f"the media directory {self.target.directory} is nested more "
                              "than 256 levels deep")
        with os.scandir(dir_fd) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            key = prefix + name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted meanwhile
            yield dir_fd, name, key, st
            if stat.S_ISDIR(st.st_mode):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        continue  # deleted or swapped for a link meanwhile: never followed
                    raise
                try:
                    yield from self._walk(child, key + "/", depth + 1)
                finally:
                    os.close(child)

    @contextlib.contextmanager
    def _os_errors(self, doing: str) -> Iterator[None]:
        """A filesystem error as a `BackupError` that names the directory."""
        try:
            yield
        except OSError as exc:
            raise BackupError(f"{doing} in the media directory {self.target.directory} failed "
                              f"({exc.strerror or exc}): Tether needs to read and write it "
                              "(it runs as root, or as the directory's owner)") from None

    def _skip(self, key: str, reason: str) -> None:
        self.skipped.append({"key": key, "reason": reason})

    def objects(self) -> Iterator[tuple[ObjectInfo, _Readable]]:
        with self._os_errors("reading the files"), self._root() as (root, root_st):
            for parent, name, key, st in self._walk(root, ""):
                if stat.S_ISDIR(st.st_mode):
                    continue
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                    continue  # left by a restore that failed: not the application's
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    self._skip(key.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                               "name is not UTF-8")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self._skip(key, "symlink" if stat.S_ISLNK(st.st_mode) else "not a file")
                    continue
                if st.st_uid != root_st.st_uid:
                    self._skip(key, "owned by another user than the directory")
                    continue
                try:
                    fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ELOOP):
                        continue  # deleted or swapped for a link meanwhile
                    raise BackupError(f"cannot read {key!r} in {self.target.directory} "
                                      f"({exc.strerror or exc})") from None
                try:
                    opened = os.fstat(fd)
                    if not stat.S_ISREG(opened.st_mode) or opened.st_uid != root_st.st_uid:
                        self._skip(key, "changed into something else while backed up")
                        continue
                    info = ObjectInfo(key=key, size=opened.st_size,
                                      content_type=guessed_type(key),
                                      mtime=int(opened.st_mtime),
                                      mode=stat.S_IMODE(opened.st_mode) & 0o777)
                    yield info, _FdReader(fd, opened.st_size, key)
                finally:
                    os.close(fd)

    def _open_dirs(self, root: int, parts: list[str], owner: tuple[int, int] | None,
                   written: set[str]) -> int:
        """The descriptor of the directory `parts` below `root`, made where missing; an entry
        that is no directory in the way (a file or symlink not in the backup) is removed."""
        fd = os.dup(root)
        try:
            for i, part in enumerate(parts):
                for _ in range(3):
                    try:
                        inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
                        break
                    except FileNotFoundError:
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(part, 0o755, dir_fd=fd)
                            made = os.open(part, _DIR_FLAGS, dir_fd=fd)
                            try:
                                os.fchmod(made, 0o755)
                                if owner is not None:
                                    os.fchown(made, *owner)
                            finally:
                                os.close(made)
                    except OSError as exc:
                        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                            raise
                        key = "/".join(parts[:i + 1])
                        if key in written:
                            raise UnrestorableKey(
                                f"the backup holds both {key!r} and objects below "
                                f"{key + '/'!r}: a local file cannot be a directory too; "
                                "restore this backup into S3 or Azure Blob") from None
                        os.unlink(part, dir_fd=fd)  # a file or symlink: never followed
                else:
                    raise BackupError(f"{'/'.join(parts[:i + 1])!r} in "
                                      f"{self.target.directory} keeps changing: retry")
                os.close(fd)
                fd = inner
            return fd
        except BaseException:
            os.close(fd)
            raise

    def put(self, info: ObjectInfo, stream: _Readable) -> None:
        """Write one file whole (a temp file renamed over the old one), its directories made
        as needed; a key that cannot be a path is refused before anything is written."""
        parts = _key_parts(info.key)
        with self._os_errors(f"writing {info.key!r}"), self._root() as (root, root_st):
            owner = (root_st.st_uid, root_st.st_gid) if os.geteuid() == 0 else None
            parent = self._open_dirs(root, parts[:-1], owner, self.written)
            try:
                self._write(parent, parts[-1], info, stream, owner)
            finally:
                os.close(parent)
        self.written.add(info.key)

    def _write(self, parent: int, name: str, info: ObjectInfo, stream: _Readable,
               owner: tuple[int, int] | None) -> None:
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)
        try:
            try:
                left = info.size
                while left > 0:
                    data = stream.read(min(CHUNK, left))
                    if not data:
                        raise BadMediaArchive(f"the archive ends inside {info.key!r}")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    left -= len(data)
                os.fchmod(fd, (info.mode if info.mode is not None else 0o644) & 0o777)
                if owner is not None:
                    os.fchown(fd, *owner)
                if info.mtime:
                    os.utime(fd, (info.mtime, info.mtime))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if any(k.startswith(info.key + "/") for k in self.written):
                    raise UnrestorableKey(
                        f"the backup holds both {info.key!r} and objects below "
                        f"{info.key + '/'!r}: a local file cannot be a directory too; restore "
                        "this backup into S3 or Azure Blob") from None
                # a directory where the file goes: nothing in it is in the backup
                shutil.rmtree(name, dir_fd=parent)
                os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise


    def delete_except(self, keep: set[str]) -> int:
        """Unlink every entry but directories whose key is not in `keep` (never following a
        link: unlink removes the link itself). Directories are left, empty or not."""
        deleted = 0
        with self._os_errors("deleting the files not in the backup"), \
                self._root() as (root, _):
            for parent, name, key, st in self._walk(root, ""):
                if stat.S_ISDIR(st.st_mode) or key in keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=parent)
                    deleted += 1
        return deleted

# -- S3 ----------------------------------------------------------------------------------------


class _S3Body:
    def __init__(self, body: Any, size: int, key: str, target: S3Target) -> None:
        self.body, self.left, self.key, self.target = body, size, key, target

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        try:
            data = self.body.read(min(size, self.left))
        except Exception as exc:
            raise _s3_error(exc, self.target, f"reading {self.key!r}") from None
        if not data:
            raise BackupError(f"the object {self.key!r} of {self.target.where} ended early "
                              "while it was backed up: run the backup again")
        self.left -= len(data)
        return bytes(data)


def _s3_error(exc: BaseException, target: S3Target, doing: str) -> BackupError:
    from botocore.exceptions import ClientError

    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        detail = f"{error.get('Code')}: {error.get('Message') or ''}".strip(": ")
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return BackupError(f"{doing} in {target.where} failed: "
                       f"{redact(detail, target.secrets)[:500]}")


def _s3_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code")
               or response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


class _S3Adapter:
    def __init__(self, target: S3Target, acls: bool = True) -> None:
        """`acls`: read each object's ACL too (one more request per object; a summary does
        not need it)."""
        import boto3.session
        from botocore.config import Config

        self.target = target
        self.skipped: list[dict[str, str]] = []
        self._acl_supported = acls
        session = boto3.session.Session(aws_access_key_id=target.access_key_id,
                                        aws_secret_access_key=target.secret_access_key,
                                        region_name=target.region)
        self.s3 = session.client("s3", endpoint_url=target.endpoint_url, config=Config(
            connect_timeout=5, read_timeout=60,
            retries={"total_max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": target.addressing_style}, signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required"))

    def _acl(self, key: str) -> str | None:
        """`public-read` when everyone may read the object, else `private`; None where the
        server has no object ACLs (asked once)."""
        if not self._acl_supported:
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            grants = self.s3.get_object_acl(Bucket=self.target.bucket, Key=key).get("Grants", [])
        except ClientError as exc:
            if _s3_code(exc) in ("NoSuchKey", "404"):
                return None
            self._acl_supported = False
            return None
        except BotoCoreError as exc:
            raise _s3_error(exc, self.target, f"reading the ACL of {key!r}") from None
        for grant in grants:
            grantee = grant.get("Grantee", {})
            if (str(grantee.get("URI", "")).endswith("/global/AllUsers")
                    and grant.get("Permission") in ("READ", "FULL_CONTROL")):
                return "public-read"
        return "private"

    def _keys(self) -> Iterator[str]:
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self.target.bucket):
                for item in page.get("Contents", []):
                    yield str(item["Key"])
        except Exception as exc:
            raise _s3_error(exc, self.target, "listing the objects") from None

    def objects(self) -> Iterator[tuple[ObjectInfo, _Readable]]:
        for key in self._keys():
            try:
                answer = self.s3.get_object(Bucket=self.target.bucket, Key=key)
            except Exception as exc:
                if _s3_code(exc) in ("NoSuchKey", "404"):
                    continue  # deleted since the listing
                raise _s3_error(exc, self.target, f"reading {key!r}") from None
            body = answer["Body"]
            try:
                headers = {name: str(answer[s3_name]) for name, s3_name in _S3_HEADERS.items()
                           if answer.get(s3_name)}
                modified = answer.get("LastModified")
                info = ObjectInfo(
                    key=key, size=int(answer["ContentLength"]),
                    content_type=str(answer.get("ContentType") or ""), headers=headers,
                    metadata={str(k): str(v) for k, v in (answer.get("Metadata") or {}).items()},
                    acl=self._acl(key), mtime=int(modified.timestamp()) if modified else 0)
                yield info, _S3Body(body, info.size, key, self.target)
            finally:
                body.close()

    def _args(self, info: ObjectInfo) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self.target.bucket, "Key": info.key}
        if info.content_type:
            args["ContentType"] = info.content_type
        for name, s3_name in _S3_HEADERS.items():
            if info.headers.get(name):
                args[s3_name] = info.headers[name]
        if info.metadata:
            args["Metadata"] = info.metadata
        if info.acl == "public-read":
            args["ACL"] = "public-read"
        return args

    def put(self, info: ObjectInfo, stream: _Readable) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        args = self._args(info)
        if info.size <= PART_SIZE:
            data = _read_full(stream, info.size)
            if len(data) != info.size:
                raise BadMediaArchive(f"the archive ends inside {info.key!r}")
            try:
                self.s3.put_object(Body=data, **args)
            except Exception as exc:
                raise _s3_error(exc, self.target, f"writing {info.key!r}") from None
            return
        try:
            upload = self.s3.create_multipart_upload(**args)["UploadId"]
        except Exception as exc:
            raise _s3_error(exc, self.target, f"writing {info.key!r}") from None
        try:
            parts = []
            part_size = _part_size(info.size, _S3_MAX_PARTS)
            left = info.size
            while left > 0:
                data = _read_full(stream, min(part_size, left))
                if not data:
                    raise BadMediaArchive(f"the archive ends inside {info.key!r}")
                number = len(parts) + 1
                answer = self.s3.upload_part(Bucket=self.target.bucket, Key=info.key,
                                             UploadId=upload, PartNumber=number, Body=data)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                left -= len(data)
            self.s3.complete_multipart_upload(Bucket=self.target.bucket, Key=info.key,
                                              UploadId=upload,
                                              MultipartUpload={"Parts": parts})
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.s3.abort_multipart_upload(Bucket=self.target.bucket, Key=info.key,
                                               UploadId=upload)
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise _s3_error(exc, self.target, f"writing {info.key!r}") from None
            raise  # the archive's own error (a damaged chunk, a cut): as it is

    def delete_except(self, keep: set[str]) -> int:
        doomed = [key for key in self._keys() if key not in keep]
        for start in range(0, len(doomed), 1000):
            chunk = doomed[start:start + 1000]
            try:
                answer = self.s3.delete_objects(Bucket=self.target.bucket, Delete={
                    "Objects": [{"Key": key} for key in chunk], "Quiet": True})
            except Exception as exc:
                raise _s3_error(exc, self.target, "deleting objects") from None
            errors = answer.get("Errors") or []
            if errors:
                raise BackupError(f"cannot delete {len(errors)} object(s) of "
                                  f"{self.target.where}, e.g. {errors[0].get('Key')!r}: "
                                  f"{errors[0].get('Code')}")
        return len(doomed)


_S3_HEADERS = {"cache_control": "CacheControl", "content_disposition": "ContentDisposition",
               "content_encoding": "ContentEncoding", "content_language": "ContentLanguage"}


# -- Azure Blob --------------------------------------------------------------------------------


def _azure_error(exc: BaseException, target: AzureBlobTarget, doing: str) -> BackupError:
    if isinstance(exc, BackupError):
        return exc
    detail = str(getattr(exc, "message", None) or exc).strip().splitlines()
    text = detail[0] if detail else type(exc).__name__
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    status = getattr(exc, "status_code", None)
    where = f" ({status} {code})" if status else ""
    if code == "ConditionNotMet":
        text = "the blob changed while it was read: run the backup again"
    return BackupError(f"{doing} in {target.where} failed{where}: "
                       f"{redact(text, target.secrets)[:500]}")


class _AzureBody:
    def __init__(self, chunks: Iterator[bytes], size: int, key: str,
                 target: AzureBlobTarget) -> None:
        self.chunks, self.left, self.key, self.target = chunks, size, key, target
        self.pending = b""

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        while not self.pending:
            try:
                self.pending = next(self.chunks, b"")
            except Exception as exc:
                raise _azure_error(exc, self.target, f"reading {self.key!r}") from None
            if not self.pending:
                raise BackupError(f"the blob {self.key!r} of {self.target.where} ended early "
                                  "while it was backed up: run the backup again")
        data = self.pending[:min(size, self.left)]
        self.pending = self.pending[len(data):]
        self.left -= len(data)
        return data


class _AzureAdapter:
    def __init__(self, target: AzureBlobTarget) -> None:
        from azure.storage.blob import ContainerClient, LinearRetry

        self.target = target
        self.skipped: list[dict[str, str]] = []
        self.client = ContainerClient(
            target.endpoint, target.container, credential=target.sas_token,
            retry_policy=LinearRetry(backoff=0.5, retry_total=2, random_jitter_range=0.2),
            connection_timeout=5, read_timeout=60, max_single_get_size=_AZURE_PIECE,
            max_chunk_get_size=_AZURE_PIECE, max_single_put_size=PART_SIZE,
            max_block_size=PART_SIZE,
            **({"api_version": target.api_version} if target.api_version else {}))

    def _names(self) -> Iterator[str]:
        try:
            for blob in self.client.list_blobs():
                yield str(blob.name)
        except Exception as exc:
            raise _azure_error(exc, self.target, "listing the blobs") from None

    def objects(self) -> Iterator[tuple[ObjectInfo, _Readable]]:
        from azure.core.exceptions import ResourceNotFoundError

        for name in self._names():
            try:
                downloader = self.client.download_blob(name, max_concurrency=1)
            except ResourceNotFoundError:
                continue  # deleted since the listing
            except Exception as exc:
                raise _azure_error(exc, self.target, f"reading {name!r}") from None
            props = downloader.properties
            settings = props.content_settings
            headers = {h: str(getattr(settings, h)) for h in HEADERS if getattr(settings, h)}
            info = ObjectInfo(
                key=name, size=int(props.size), content_type=str(settings.content_type or ""),
                headers=headers, metadata=dict(props.metadata or {}),
                mtime=int(props.last_modified.timestamp()) if props.last_modified else 0)
            yield info, _AzureBody(iter(downloader.chunks()), info.size, name, self.target)

    def put(self, info: ObjectInfo, stream: _Readable) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        settings = ContentSettings(content_type=info.content_type or None,
                                   **{h: info.headers.get(h) for h in HEADERS})
        blob = self.client.get_blob_client(info.key)
        try:
            if info.size <= PART_SIZE:
                data = _read_full(stream, info.size)
                if len(data) != info.size:
                    raise BadMediaArchive(f"the archive ends inside {info.key!r}")
                blob.upload_blob(data, overwrite=True, content_settings=settings,
                                 metadata=info.metadata or None)
                return
            # blocks stay uncommitted (invisible, collected by the service) until the list is
            # committed at the end: a failed upload leaves the old blob as it was
            block_size = _part_size(info.size, _AZURE_MAX_BLOCKS)
            prefix = secrets.token_hex(8)
            blocks: list[BlobBlock] = []
            left = info.size
            while left > 0:
                data = _read_full(stream, min(block_size, left))
                if not data:
                    raise BadMediaArchive(f"the archive ends inside {info.key!r}")
                block_id = f"{prefix}-{len(blocks):06d}"
                blob.stage_block(block_id, data)
                blocks.append(BlobBlock(block_id=block_id))
                left -= len(data)
            blob.commit_block_list(blocks, content_settings=settings,
                                   metadata=info.metadata or None)
        except (UserError, BackupError):
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("azure."):
                raise _azure_error(exc, self.target, f"writing {info.key!r}") from None
            raise

    def delete_except(self, keep: set[str]) -> int:
        from azure.core.exceptions import ResourceNotFoundError

        doomed = [name for name in self._names() if name not in keep]
        for name in doomed:
            try:
                self.client.delete_blob(name)
            except ResourceNotFoundError:
                pass
            except Exception as exc:
                raise _azure_error(exc, self.target, f"deleting {name!r}") from None
        return len(doomed)


def _adapter(target: MediaTarget, *, acls: bool = True) -> _Adapter:
    if isinstance(target, LocalFilesTarget):
        return _LocalAdapter(target)
    if isinstance(target, S3Target):
        return _S3Adapter(target, acls=acls)
    if isinstance(target, AzureBlobTarget):
        return _AzureAdapter(target)
    raise TypeError(f"not a media target: {type(target).__name__}")


# -- summary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEntry:
    """One object as the manifest lists it."""

    key: str
    size: int
    sha256: str
    content_type: str

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256,
                "content_type": self.content_type}


@dataclass(frozen=True)
class MediaSummary:
    """What a restore must reproduce: how many objects, their bytes, and an order-independent
    checksum over every object's (key, sha256 of its content, content type). Two equal
    summaries mean the same objects with the same contents and types."""

    objects: int
    total_bytes: int
    checksum: str

    @classmethod
    def of(cls, entries: Iterable[ObjectEntry]) -> MediaSummary:
        """Each entry's digest (of key, content hash, type, with lengths so that no two
        different entries give one string) is added as a 256-bit number: the order of the
        entries does not matter."""
        count = total = acc = 0
        for e in entries:
            key = e.key.encode("utf-8", "surrogateescape")
            kind = e.content_type.encode("utf-8", "surrogateescape")
            digest = hashlib.sha256(b"%d:%s|%s|%d:%s" % (len(key), key, e.sha256.encode(),
                                                         len(kind), kind)).digest()
            acc = (acc + int.from_bytes(digest, "big")) % (1 << 256)
            count += 1
            total += e.size
        return cls(objects=count, total_bytes=total, checksum=f"{acc:064x}")


def _content_type(target_kind: str, info: ObjectInfo) -> str:
    return guessed_type(info.key) if target_kind == "local-files" else info.content_type


def summary(target: MediaTarget) -> MediaSummary:
    """The summary of the instance's objects as they are now (reads every object once)."""
    adapter = _adapter(target, acls=False)
    kind = kind_of(target)
    entries = []
    for info, stream in adapter.objects():
        digest = hashlib.sha256()
        while data := stream.read(CHUNK):
            digest.update(data)
        entries.append(ObjectEntry(info.key, info.size, digest.hexdigest(),
                                   _content_type(kind, info)))
    return MediaSummary.of(entries)


# -- backup ------------------------------------------------------------------------------------


def _safe_name(key: str) -> bool:
    """Whether a key may be a tar member's name as it is: a relative path that stays below the
    directory it is extracted into."""
    return (bool(key) and "\x00" not in key and "\\" not in key
            and all(part not in ("", ".", "..") for part in key.split("/")))


def _header(name: str, size: int, pax: dict[str, str], mtime: int = 0,
            mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = max(0, mtime)
    info.mode = mode & 0o777
    info.type = tarfile.REGTYPE
    info.pax_headers = pax
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _pax_of(info: ObjectInfo) -> dict[str, str]:
    pax = {_KEY: info.key, _PAX + "content_type": info.content_type}
    for name in HEADERS:
        if info.headers.get(name):
            pax[_PAX + name] = info.headers[name]
    if info.metadata:
        pax[_PAX + "metadata"] = json.dumps(info.metadata, sort_keys=True)
    if info.acl:
        pax[_PAX + "acl"] = info.acl
    return pax


def _dump(target: MediaTarget, entries: list[ObjectEntry]) -> Generator[bytes, None, None]:
    adapter = _adapter(target)
    kind = kind_of(target)
    offset = 0
    seen: set[str] = set()
    for info, stream in adapter.objects():
        if info.key in seen:  # cannot happen with a listing; never write an ambiguous archive
            raise BackupError(f"the object {info.key!r} was listed twice in {target.where}")
        seen.add(info.key)
        name = (info.key if _safe_name(info.key)
                else f"{ESCAPED_DIR}/{hashlib.sha256(info.key.encode()).hexdigest()}")
        info.content_type = _content_type(kind, info)
        header = _header(name, info.size, _pax_of(info), info.mtime,
                         info.mode if info.mode is not None else 0o644)
        yield header
        digest = hashlib.sha256()
        left = info.size
        while left > 0:
            data = stream.read(min(CHUNK, left))
            if not data:
                raise BackupError(f"the object {info.key!r} of {target.where} ended early "
                                  "while it was backed up: run the backup again")
            digest.update(data)
            left -= len(data)
            yield data
        yield _pad(info.size)
        offset += len(header) + info.size + len(_pad(info.size))
        entries.append(ObjectEntry(info.key, info.size, digest.hexdigest(), info.content_type))
    manifest = json.dumps({
        "format": FORMAT, "kind": kind,
        "objects": [e.as_json() for e in entries],
        "skipped": adapter.skipped,
    }, indent=0, ensure_ascii=True).encode()
    header = _header(MANIFEST_NAME, len(manifest), {_MANIFEST_MARK: "1"}, int(time.time()))
    offset += len(header) + len(manifest) + len(_pad(len(manifest)))
    yield header + manifest + _pad(len(manifest))
    end = offset + 2 * BLOCK  # as TarFile.close writes it: two zero blocks, a whole record
    yield b"\0" * (2 * BLOCK + (-end % RECORD))
    if adapter.skipped:
        log.warning("media backup of %s left out %d entries that are not regular files of the "
                    "directory's owner (listed in its manifest)", target.where,
                    len(adapter.skipped))


def dump_stream(target: MediaTarget) -> Generator[bytes, None, None]:
    """The instance's objects as a `tether-media-tar-1` archive (see the module doc), as a
    stream of byte strings. Raises `BackupError` as soon as an object cannot be read whole, so
    a cut-short archive (without its manifest) is never taken for a whole one."""
    yield from _dump(target, [])


def dump_sealed(target: MediaTarget, dest: Path, box: Any) -> SealedInfo:
    """Back up the instance into the new sealed file `dest` (see `sealed`). Either the whole
    archive is in `dest`, or `dest` does not exist and this raises."""
    return dump_sealed_with_summary(target, dest, box)[0]


def dump_sealed_with_summary(target: MediaTarget, dest: Path,
                             box: Any) -> tuple[SealedInfo, MediaSummary]:
    """`dump_sealed`, and the summary of exactly what is in the backup (from its manifest,
    computed while streaming: no second read of the objects)."""
    entries: list[ObjectEntry] = []
    stream = _dump(target, entries)
    try:
        info = write_sealed(dest, stream, box)
    finally:
        stream.close()
    return info, MediaSummary.of(entries)


# -- restore -----------------------------------------------------------------------------------


class _ChunkReader:
    """A file-like `read` over an iterable of byte strings (for `tarfile` in stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        while len(self._buffer) - self._pos < size:
            data = next(self._chunks, None)
            if data is None:
                break
            self._buffer = self._buffer[self._pos:] + bytes(data)
            self._pos = 0
        out = self._buffer[self._pos:self._pos + size]
        self._pos += len(out)
        return out


class _MemberReader:
    """Reads a member's bytes for an adapter, hashing them as they pass."""

    def __init__(self, stream: Any, size: int, key: str) -> None:
        self.stream, self.left, self.key = stream, size, key
        self.digest = hashlib.sha256()

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        data = self.stream.read(min(size, self.left))
        if not data:
            raise BadMediaArchive(f"the archive ends inside {self.key!r}: it is cut short")
        self.digest.update(data)
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass(frozen=True)
class Manifest:
    """A checked archive's manifest."""

    kind: str
    objects: tuple[ObjectEntry, ...]
    skipped: tuple[dict[str, str], ...]

    @property
    def summary(self) -> MediaSummary:
        return MediaSummary.of(self.objects)


def _bad(message: str) -> BadMediaArchive:
    return BadMediaArchive(f"this is not a restorable media backup: {message}")


def _member_info(member: tarfile.TarInfo) -> ObjectInfo:
    pax = member.pax_headers
    key = pax.get(_KEY, member.name)
    if not key or "\x00" in key:
        raise _bad(f"the member {member.name!r} names no object")
    metadata: dict[str, str] = {}
    if pax.get(_PAX + "metadata"):
        try:
            raw = json.loads(pax[_PAX + "metadata"])
            metadata = {str(k): str(v) for k, v in dict(raw).items()}
        except (ValueError, TypeError):
            raise _bad(f"the metadata of {key!r} is not a JSON object") from None
    acl = pax.get(_PAX + "acl")
    return ObjectInfo(
        key=key, size=member.size,
        # an empty type stays empty (the manifest says so too); none at all: from the name
        content_type=pax.get(_PAX + "content_type", guessed_type(key)),
        headers={h: pax[_PAX + h] for h in HEADERS if pax.get(_PAX + h)},
        metadata=metadata, acl=acl if acl in ("public-read", "private") else None,
        mtime=int(member.mtime), mode=member.mode & 0o777)


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any]:
    if member.size > MAX_MANIFEST:
        raise _bad(f"its manifest is larger than {MAX_MANIFEST >> 20} MiB")
    stream = tar.extractfile(member)
    assert stream is not None
    data = _read_full(stream, member.size)
    if len(data) != member.size:
        raise _bad("it ends inside its manifest (cut short)")
    try:
        manifest = json.loads(data)
    except ValueError:
        raise _bad("its manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise _bad(f"its manifest names the format {found!r}, not {FORMAT}")
    return manifest


def _entries(manifest: dict[str, Any]) -> dict[str, ObjectEntry]:
    entries: dict[str, ObjectEntry] = {}
    try:
        for raw in manifest["objects"]:
            entry = ObjectEntry(str(raw["key"]), int(raw["size"]), str(raw["sha256"]).lower(),
                                str(raw["content_type"]))
            if entry.key in entries:
                raise _bad(f"its manifest lists {entry.key!r} twice")
            entries[entry.key] = entry
    except (KeyError, TypeError, ValueError):
        raise _bad("its manifest's object list is damaged") from None
    return entries


def _process(chunks: Iterable[bytes], put: Callable[[ObjectInfo, _Readable], None]) -> Manifest:
    """Read a `tether-media-tar-1` archive, hand each object to `put`, check every member
    against the manifest; the manifest when all of it matched."""
    seen: dict[str, ObjectEntry] = {}
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|",  # type: ignore[call-overload]
                          format=tarfile.PAX_FORMAT, encoding="utf-8",
                          errors="surrogateescape") as tar:
            for member in tar:
                if manifest is not None:
                    raise _bad(f"the member {member.name!r} comes after the manifest")
                if not _safe_name(member.name.rstrip("/") if member.isdir() else member.name):
                    raise _bad(f"the member name {member.name!r} would escape the directory it "
                               "is extracted into (absolute, '..', or an empty segment)")
                if member.pax_headers.get(_MANIFEST_MARK) == "1" and member.isreg():
                    manifest = _read_manifest(tar, member)
                    continue
                if member.isdir():
                    continue
                if not member.isreg():
                    raise _bad(f"the member {member.name!r} is not a regular file (a link or "
                               "a device)")
                info = _member_info(member)
                if info.key in seen:
                    raise _bad(f"it holds {info.key!r} twice")
                stream = tar.extractfile(member)
                assert stream is not None
                reader = _MemberReader(stream, member.size, info.key)
                put(info, reader)
                reader.drain()
                seen[info.key] = ObjectEntry(info.key, member.size, reader.digest.hexdigest(),
                                             info.content_type)
    except tarfile.TarError as exc:
        raise _bad(f"the tar stream is damaged or cut short ({exc})") from None
    if manifest is None:
        raise _bad(f"it has no {MANIFEST_NAME} at its end (cut short, or not made by Tether)")
    listed = _entries(manifest)
    wrong = sorted(key for key in seen.keys() | listed.keys() if seen.get(key) != listed.get(key))
    if wrong:
        key = wrong[0]
        what = ("is missing from the archive" if key not in seen
                else "is not in the manifest" if key not in listed
                else "does not match its checksum, size or type in the manifest")
        raise BadMediaArchive(f"the media backup is damaged: {len(wrong)} object(s) do not "
                              f"match its manifest, e.g. {key!r} {what}; nothing was deleted")
    skipped = manifest.get("skipped") or []
    return Manifest(kind=str(manifest.get("kind") or ""),
                    objects=tuple(listed[key] for key in sorted(listed)),
                    skipped=tuple(dict(s) for s in skipped if isinstance(s, dict)))


def check_archive(chunks: Iterable[bytes], into: MediaTarget | None = None) -> Manifest:
    """Read a whole archive without writing anything: every member is hashed and compared
    with the manifest, names and member types are checked, and with `into` whether every key
    can exist there (local files: relative paths, no file that is also a directory). Raises
    `BadMediaArchive` (or `UnrestorableKey`) otherwise, and passes on what `chunks` raises
    (e.g. a damaged sealed chunk)."""
    local = isinstance(into, LocalFilesTarget)

    def discard(info: ObjectInfo, stream: _Readable) -> None:
        if local:
            _key_parts(info.key)
        while stream.read(CHUNK):
            pass

    manifest = _process(chunks, discard)
    if local:
        keys = {entry.key for entry in manifest.objects}
        for key in sorted(keys):
            parts = key.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in keys:
                    raise UnrestorableKey(
                        f"the backup holds both {'/'.join(parts[:i])!r} and {key!r}: a local "
                        "file cannot be a directory too; restore this backup into S3 or "
                        "Azure Blob")
    return manifest


def restore_stream(target: MediaTarget, chunks: Iterable[bytes]) -> None:
    """Replace the instance's objects with the archive's, in one pass (see the module doc:
    every member uploaded, checked against the manifest at the end, then the objects not in
    the backup deleted; not atomic across objects, a retry converges). If `chunks` raises or the
    archive does not match its manifest, nothing is deleted and the error passes on."""
    adapter = _adapter(target)
    manifest = _process(chunks, adapter.put)
    keep = {entry.key for entry in manifest.objects}
    adapter.delete_except(keep)


def restore_sealed(target: MediaTarget, path: Path, key_sealed: str, box: Any,
                   expected_sha256: str) -> None:
    """Restore a sealed backup into the instance. Two passes: the whole archive is first read
    and checked (`check_archive`) without touching the instance, so a damaged, cut or
    inconsistent backup is refused before any object is written or deleted; then it is
    restored (`restore_stream`, checked again as it goes)."""
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        check_archive(chunks, into=target)
    finally:
        chunks.close()
    chunks = read_sealed(path, key_sealed, box, expected_sha256)
    try:
        restore_stream(target, chunks)
    finally:
        chunks.close()
