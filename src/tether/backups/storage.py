"""Where backup files live: a storage cluster of the project's region, in a place Tether owns.

A backup is sealed into a local staging file (`tether.backups.sealed`), then `put` into the
region's store; a restore or a download `get`s it back into a local staging file (or `stream`s
it) and `read_sealed` checks it against the checksum recorded when it was written. The store
only keeps bytes: what a file is, its key and its checksum are the caller's records.

One store per cluster kind (`backup_storage` picks it by `cluster.kind`):

- local-files (the embedded default): the directory `<base_dir>-backups` beside the cluster's
  `base_dir` (`/var/lib/tether/media` -> `/var/lib/tether/media-backups`), never under it, so
  no media URL ever serves a backup. The directory and every directory in it are 0700, files
  0600, owned by Tether's own account (root when Tether runs as root; not the `tether` service
  account the servers run as: a PostgreSQL server run by that account has no business reading
  backups, and nothing but Tether's own process reads or writes them). Named after the base
  dir, so two local-files clusters never share a backup directory.
- s3: the bucket `[name_prefix]tether-backups-<install id>`, made private (the admin owns it,
  objects keep their owner's ACL, public access blocked where the server knows the call), with
  the cluster's admin key (`tether.providers.s3`: same URL, settings, timeouts, error messages).
- azure-blob: the container `tether-backups-<install id>`, private, marked with the metadata
  `tether_backups=<install id>` (a container of that name without the mark is not Tether's and is
  refused), with the account key (`tether.providers.azure_blob`).

The name. Instance buckets and containers are `[prefix]tether-i<N>` (`naming.resource_names`):
no instance ever gets a name starting with `tether-backups-`. The install id
(`install_id(box)`, a stable 16-hex digest of Tether's secret key, which every node of one
installation shares and no other installation has) keeps two installations that use the same
S3 account or storage account from sharing (and sweeping, or listing as orphans) each other's
backups; on AWS, where bucket names are global, it also keeps the name free.

Atomicity: a key exists only complete. Local files are written to `KEY.<random>.partial`,
fsynced and renamed; S3 objects appear when their (multipart) upload completes; Azure blobs when
their block list is committed. `put` replaces a key that exists (a retried put after an answer
that got lost must not fail); keys are the caller's and never reused for another backup.
Whatever a crash leaves (a `.partial` file, an unfinished multipart upload, a blob of staged but
uncommitted blocks) is invisible to `keys`, `size` and `get`, and `sweep_incomplete` removes it
once it has not moved for `older_than` seconds (a live upload elsewhere is left alone).

Errors: a failure that may pass (connection refused or reset, timeouts, 5xx) is a
`TransientError`, anything else a `ClusterError` (an `OperationError`), with a message that holds
no secret; a key that is not there is `BackupFileMissing`.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, ContainerClient
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from tether.backups.sealed import partial_path
from tether.errors import ClusterError, OperationError
from tether.providers import azure_blob, local_files, s3
from tether.providers.base import ClusterSpec
from tether.providers.common import rewrap

#: what every backup bucket or container name starts with (after an S3 name_prefix)
NAME_STEM = "tether-backups-"
#: the suffix of local files still being written (keys may not end with it)
PARTIAL = ".partial"
#: bytes read or written at a time
CHUNK = 1 << 20
#: leftovers younger than this (seconds since they last changed) are not swept by default: they
#: may be an upload still running on another node
SWEEP_AGE = 24 * 3600.0
#: S3 parts: at least this size, more when a file would need more than S3_MAX_PARTS parts
S3_PART_SIZE = 16 << 20
S3_MAX_PARTS = 9_000  # S3 allows 10,000
#: Azure blocks: at least this size, more when a file would need more than AZURE_MAX_BLOCKS
AZURE_BLOCK_SIZE = 8 << 20
AZURE_MAX_BLOCKS = 45_000  # Azure allows 50,000
#: parts or blocks sent (or fetched) at once
CONCURRENCY = 4
#: the container metadata that marks a container as this installation's backup container
AZURE_MARK = "tether_backups"
#: the mode of backup directories and files on local-files clusters
DIR_MODE = 0o700
FILE_MODE = 0o600

_INSTALL_ID_RE = re.compile(r"[a-z0-9]{6,32}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_MAX_KEY = 512


class BackupFileMissing(OperationError):
    """The store has no file under that key (deleted, or never completely written)."""

    code = "backup_missing"


class BackupStorage(Protocol):
    """Where the backup files of one cluster live. Keys are `/`-separated segments of letters,
    digits, `.`, `_` and `-` (see `check_key`)."""

    #: where, for messages (never a secret): e.g. "s3 cluster 3 (http://host:8333), bucket ..."
    where: str

    def ensure(self) -> None:
        """Create the bucket, container or directory when missing, private; refuse one of that
        name that is not this installation's. Idempotent; `put` calls it once per store object
        (the other calls take a missing bucket as a missing key)."""

    def put(self, key: str, source: Path) -> None:
        """Store the file `source` (a regular file: S3 uploads need its size) under `key`,
        replacing what is there; the key appears only once the whole file is stored."""

    def get(self, key: str, dest: Path) -> None:
        """Write the file of `key` to `dest` (via `dest.partial`, fsynced, renamed)."""

    def stream(self, key: str) -> Iterator[bytes]:
        """The file of `key`, chunk by chunk (a missing key raises before this returns)."""

    def size(self, key: str) -> int | None:
        """The file's size in bytes; None when there is no such key."""

    def delete(self, key: str) -> None:
        """Delete the key; a missing one is fine."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every complete key starting with `prefix`, sorted."""

    def sweep_incomplete(self, older_than: float = SWEEP_AGE) -> int:
        """Remove what interrupted puts left (unchanged for `older_than` seconds); how many."""


def install_id(box: Any) -> str:
    """The id of this installation in backup bucket and container names: derived from Tether's
    secret key (`SecretBox.derive_id`), so every node of the installation finds the same
    bucket, and the id tells nothing about the key."""
    return str(box.derive_id("tether backup storage"))[:16]


def check_key(key: str) -> str:
    """A key made of `/`-separated segments of letters, digits, `.`, `_`, `-` (no empty, `.`
    or `..` segment, none ending with `.partial`), at most 512 characters: the same key is a
    safe relative path under a local backup directory and a plain object name elsewhere."""
    segments = key.split("/")
    if not (0 < len(key) <= _MAX_KEY) or not all(
            _SEGMENT_RE.fullmatch(s) and not s.endswith(PARTIAL) for s in segments):
        raise ValueError(f"invalid backup key {key[:80]!r}: use segments of letters, digits, "
                         "'.', '_' and '-' separated by '/' (e.g. live/2026-12-03/b12.tbk)")
    return key


def _check_prefix(prefix: str) -> str:
    if prefix and not re.fullmatch(r"[A-Za-z0-9._/-]*", prefix):
        raise ValueError(f"invalid backup key prefix {prefix[:80]!r}")
    return prefix


def _check_install_id(value: str) -> str:
    if not _INSTALL_ID_RE.fullmatch(value):
        raise ValueError(f"invalid install id {value!r}: 6-32 lower-case letters and digits")
    return value


def backup_storage(cluster: ClusterSpec, install: str) -> BackupStorage:
    """The store of the backup files kept on `cluster`, by its kind; `install` is the
    installation's id (`install_id`). Parses the cluster's URL and settings, contacts
    nothing."""
    _check_install_id(install)
    from tether.providers.registry import backup_storage_kinds, load, provider_class

    where = provider_class(cluster.kind).backup_storage
    if where is None:
        raise ClusterError(f"a {cluster.kind} cluster cannot hold backup files: backups are "
                           f"kept on a {', '.join(backup_storage_kinds())} cluster of the "
                           "project's region")
    store: BackupStorage = load(where)(cluster, install)
    return store


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy an open file into another one: in the kernel where it can, else in CHUNKs."""
    src_fd, dst_fd = src.fileno(), dst.fileno()
    try:
        while os.copy_file_range(src_fd, dst_fd, 1 << 30):
            pass
        return
    except OSError as exc:  # not across these file systems, or no such call: copy by hand
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while data := src.read(CHUNK):
        dst.write(data)


def _open_partial(dest: Path) -> BinaryIO:
    """`dest.partial`, new and empty, 0600 (one left by a crash is replaced; never a link)."""
    partial = partial_path(dest)
    try:
        found = partial.lstat()
    except FileNotFoundError:
        pass
    else:
        if not (stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode)):
            raise OperationError(f"{partial} is in the way and is not a file: remove it")
        partial.unlink()  # a symlink goes, never followed
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    return os.fdopen(fd, "w+b")


def _finish_partial(out: BinaryIO, dest: Path) -> None:
    """fsync and close the partial file of `dest`, rename it into place, fsync the directory."""
    out.flush()
    os.fsync(out.fileno())
    out.close()
    os.replace(partial_path(dest), dest)
    _fsync_dir(dest.parent)


def _local_error(exc: OSError, doing: str, where: str) -> ClusterError:
    return ClusterError(f"{doing} in {where} failed: {exc.strerror or exc}")


# -- local files ----------------------------------------------------------------------------------


class LocalBackupStorage:
    """Files under `<base_dir>-backups`, beside the local-files cluster's base dir."""

    def __init__(self, cluster: ClusterSpec, install: str = "") -> None:
        """`install`: unused here (the directory is the cluster's own), taken for the same
        signature as the other stores."""
        base = local_files._base_dir(cluster)
        base = Path(os.path.normpath(base))
        if base.parent == base:
            raise ClusterError(f"the local-files cluster's base_dir {base} has no parent "
                               "directory to keep backups beside it: choose another base_dir")
        self.base = base
        self.root = base.with_name(base.name + "-backups")
        self.where = f"local-files cluster {cluster.id}, directory {self.root}"
        self._ensured = False

    def ensure(self) -> None:
        """The directory, 0700, Tether's (a symlink, a file, or another user's directory in its
        place is refused: never followed)."""
        real_base, real_root = os.path.realpath(self.base), os.path.realpath(self.root)
        if os.path.commonpath([real_base, real_root]) == real_base:
            raise ClusterError(f"the backup directory {self.root} leads into the media "
                               f"directory {self.base}, where media URLs would serve it: make "
                               f"{self.root} a real directory beside it")
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(mode=DIR_MODE)
            self._check_dir(self.root)
        except OSError as exc:
            raise _local_error(exc, "making the backup directory", self.where) from None
        self._ensured = True

    def _check_dir(self, path: Path) -> None:
        found = path.lstat()
        if not stat.S_ISDIR(found.st_mode):
            raise ClusterError(f"{path} is not a directory (a symlink or a file): Tether keeps "
                               "backups there; remove it, then retry")
        if found.st_uid != os.geteuid():
            raise ClusterError(f"{path} belongs to another user (uid {found.st_uid}): Tether "
                               "keeps backups only in a directory of its own; remove it or "
                               "give it to Tether's user, then retry")
        if stat.S_IMODE(found.st_mode) != DIR_MODE:
            os.chmod(path, DIR_MODE)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _dirs_for(self, path: Path) -> None:
        """Make the directories between the root and `path` (0700)."""
        if not self._ensured:
            self.ensure()
        current = self.root
        for part in path.relative_to(self.root).parts[:-1]:
            current = current / part
            with contextlib.suppress(FileExistsError):
                current.mkdir(mode=DIR_MODE)
            self._check_dir(current)

    def put(self, key: str, source: Path) -> None:
        dest = self._path(key)
        partial = dest.with_name(f"{dest.name}.{secrets.token_hex(6)}{PARTIAL}")
        try:
            self._dirs_for(dest)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, FILE_MODE)
            try:
                with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                    _copy(src, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, dest)
                _fsync_dir(dest.parent)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise _local_error(exc, f"storing the backup file {key}", self.where) from None

    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        missing = BackupFileMissing(f"there is no backup file {key} in {self.where}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise missing from None
        except OSError as exc:
            raise _local_error(exc, f"reading the backup file {key}", self.where) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory of keys is no key
            os.close(fd)
            raise missing
        return open(fd, "rb")

    def get(self, key: str, dest: Path) -> None:
        dest = Path(dest)
        with self._open(key) as src:
            try:
                out = _open_partial(dest)
                try:
                    _copy(src, out)
                    _finish_partial(out, dest)
                except BaseException:
                    out.close()
                    partial_path(dest).unlink(missing_ok=True)
                    raise
            except OSError as exc:
                raise _local_error(exc, f"copying the backup file {key} to {dest}",
                                   self.where) from None

    def stream(self, key: str) -> Iterator[bytes]:
        return self._chunks(self._open(key), key)

    def _chunks(self, src: BinaryIO, key: str) -> Generator[bytes, None, None]:
        with src:
            try:
                while data := src.read(CHUNK):
                    yield data
            except OSError as exc:
                raise _local_error(exc, f"reading the backup file {key}", self.where) from None

    def size(self, key: str) -> int | None:
        try:
            found = self._path(key).lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _local_error(exc, f"looking at the backup file {key}", self.where) from None
        return found.st_size if stat.S_ISREG(found.st_mode) else None

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            parent = path.parent
            while parent != self.root:  # empty directories go with their last file
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
        except OSError as exc:
            raise _local_error(exc, f"deleting the backup file {key}", self.where) from None

    def _walk(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every regular file under the root (symlinks are neither followed nor listed)."""
        if not self.root.is_dir() or self.root.is_symlink():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    found = path.lstat()
                    if stat.S_ISREG(found.st_mode):
                        yield path, found

    def keys(self, prefix: str = "") -> Iterator[str]:
        _check_prefix(prefix)
        try:
            found = sorted(path.relative_to(self.root).as_posix() for path, _ in self._walk())
        except OSError as exc:
            raise _local_error(exc, "listing the backup files", self.where) from None
        return iter([k for k in found if k.startswith(prefix) and not k.endswith(PARTIAL)])

    def sweep_incomplete(self, older_than: float = SWEEP_AGE) -> int:
        cutoff = time.time() - older_than
        removed = 0
        try:
            for path, found in list(self._walk()):
                if path.name.endswith(PARTIAL) and found.st_mtime <= cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        except OSError as exc:
            raise _local_error(exc, "removing unfinished backup files", self.where) from None
        return removed


# -- S3 -------------------------------------------------------------------------------------------


def _s3_cause(exc: BaseException) -> BaseException:
    """boto3's upload_file wraps the client's error in S3UploadFailedError: the error itself."""
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__cause__, (ClientError,
                                                                           BotoCoreError)):
        return exc.__cause__
    return exc


class S3BackupStorage:
    """Objects in the installation's backup bucket, with the cluster's admin key."""

    def __init__(self, cluster: ClusterSpec, install: str,
                 part_size: int | None = None) -> None:
        """`part_size`: the multipart part size (tests make it small; default: S3_PART_SIZE or
        more for very large files)."""
        self._target = s3._Target.parse(cluster)
        self.bucket = f"{self._target.name_prefix}{NAME_STEM}{_check_install_id(install)}"
        self.where = f"s3 cluster {cluster.id} ({self._target.where}), bucket {self.bucket}"
        self._part_size = part_size
        self._client: Any = None
        self._ensured = False

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3.S3Provider._client(self._target, "s3")
        return self._client

    def _error(self, exc: BaseException, doing: str) -> ClusterError:
        return s3._error(_s3_cause(exc), self._target, doing)

    def ensure(self) -> None:
        """Make the bucket (refusing one of that name the admin does not own), then make it
        private: objects owned by the bucket owner with ACLs off, public access blocked, the
        bucket ACL private. A server without one of these calls is left as it is (a new bucket
        is private on every server Tether knows)."""
        provider = s3.S3Provider()
        try:
            provider._create_bucket(self.client, self._target, self.bucket)
            for name, extra in (
                    ("put_bucket_ownership_controls", {"OwnershipControls": {
                        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}}),
                    ("put_public_access_block", {"PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True, "IgnorePublicAcls": True,
                        "BlockPublicPolicy": True, "RestrictPublicBuckets": True}}),
                    ("put_bucket_acl", {"ACL": "private"})):
                try:
                    getattr(self.client, name)(Bucket=self.bucket, **extra)
                except ClientError as exc:
                    # ACLs off (BucketOwnerEnforced) refuse put_bucket_acl: already private
                    if not (s3._unsupported(exc)
                            or s3._code(exc) == "AccessControlListNotSupported"):
                        raise
        except ClusterError as exc:
            raise rewrap(exc, f"{exc.message} (backups of {self.where})") from None
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"making the backup bucket {self.bucket}") from None
        self._ensured = True

    def _transfer(self, size: int) -> TransferConfig:
        part = self._part_size or max(S3_PART_SIZE, math.ceil(size / S3_MAX_PARTS))
        return TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                              max_concurrency=CONCURRENCY, use_threads=True,
                              io_chunksize=256 << 10)

    def _missing(self, exc: ClientError, key: str) -> BackupFileMissing | None:
        if s3._code(exc) in ("NoSuchKey", "404", "NotFound", "NoSuchBucket") or (
                s3._status(exc) == 404):
            return BackupFileMissing(f"there is no backup file {key} in {self.where}")
        return None

    def put(self, key: str, source: Path) -> None:
        check_key(key)
        if not self._ensured:
            self.ensure()
        try:
            found = Path(source).stat()
            if not stat.S_ISREG(found.st_mode):  # the transfer manager needs its size
                raise ValueError(f"{source} is not a regular file: S3 uploads take one")
            size = found.st_size
            self.client.upload_file(str(source), self.bucket, key,
                                    Config=self._transfer(size))
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._error(exc, f"uploading the backup file {key}") from None
        except OSError as exc:
            raise ClusterError(f"reading {source} to store it as {key} in {self.where} failed: "
                               f"{exc.strerror or exc}") from None

    def get(self, key: str, dest: Path) -> None:
        check_key(key)
        dest = Path(dest)
        out = _open_partial(dest)
        try:
            try:
                size = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
                self.client.download_fileobj(self.bucket, key, out,
                                             Config=self._transfer(int(size)))
            except ClientError as exc:
                raise self._missing(exc, key) or self._error(
                    exc, f"downloading the backup file {key}") from None
            except BotoCoreError as exc:
                raise self._error(exc, f"downloading the backup file {key}") from None
            _finish_partial(out, dest)
        except BaseException:
            out.close()
            partial_path(dest).unlink(missing_ok=True)
            raise

    def stream(self, key: str) -> Iterator[bytes]:
        check_key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            raise self._missing(exc, key) or self._error(
                exc, f"reading the backup file {key}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"reading the backup file {key}") from None
        return self._chunks(body, key)

    def _chunks(self, body: Any, key: str) -> Generator[bytes, None, None]:
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._error(exc, f"reading the backup file {key}") from None
        finally:
            body.close()

    def size(self, key: str) -> int | None:
        check_key(key)
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if self._missing(exc, key):
                return None
            raise self._error(exc, f"looking at the backup file {key}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"looking at the backup file {key}") from None

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if not self._missing(exc, key):
                raise self._error(exc, f"deleting the backup file {key}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"deleting the backup file {key}") from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        _check_prefix(prefix)
        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                found += [str(item["Key"]) for item in page.get("Contents", [])]
        except ClientError as exc:
            if s3._code(exc) != "NoSuchBucket":
                raise self._error(exc, "listing the backup files") from None
        except BotoCoreError as exc:
            raise self._error(exc, "listing the backup files") from None
        return iter(sorted(found))

    def sweep_incomplete(self, older_than: float = SWEEP_AGE) -> int:
        """Abort the bucket's multipart uploads whose last part (or start, without parts) is
        older than `older_than` seconds."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        aborted = 0
        try:
            uploads = [upload for page in self.client.get_paginator(
                "list_multipart_uploads").paginate(Bucket=self.bucket)
                for upload in page.get("Uploads", [])]
            for upload in uploads:
                key, upload_id = str(upload["Key"]), str(upload["UploadId"])
                last = upload.get("Initiated") or cutoff
                for page in self.client.get_paginator("list_parts").paginate(
                        Bucket=self.bucket, Key=key, UploadId=upload_id):
                    for part in page.get("Parts", []):
                        last = max(last, part.get("LastModified") or last)
                if last > cutoff:
                    continue
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                       UploadId=upload_id)
                except ClientError as exc:
                    if s3._code(exc) != "NoSuchUpload":
                        raise
                    continue
                aborted += 1
        except ClientError as exc:
            if s3._unsupported(exc) or s3._code(exc) == "NoSuchBucket":
                return aborted
            raise self._error(exc, "aborting unfinished backup uploads") from None
        except BotoCoreError as exc:
            raise self._error(exc, "aborting unfinished backup uploads") from None
        return aborted


# -- Azure Blob -----------------------------------------------------------------------------------


class AzureBackupStorage:
    """Block blobs in the installation's backup container, with the account key."""

    def __init__(self, cluster: ClusterSpec, install: str,
                 block_size: int | None = None) -> None:
        """`block_size`: the size of staged blocks (tests make it small; default:
        AZURE_BLOCK_SIZE or more for very large files)."""
        self._target = azure_blob._Target.parse(cluster)
        self.install = _check_install_id(install)
        self.container = f"{NAME_STEM}{self.install}"
        self.where = (f"azure-blob cluster {cluster.id} ({self._target.where}), container "
                      f"{self.container}")
        self._block_size = block_size
        self._client: ContainerClient | None = None
        self._ensured = False

    @property
    def client(self) -> ContainerClient:
        if self._client is None:
            service = azure_blob.AzureBlobProvider._service(self._target)
            self._client = service.get_container_client(self.container)
        return self._client

    def _error(self, exc: AzureError, doing: str) -> ClusterError:
        return azure_blob._error(exc, self._target, doing)

    def _missing(self, key: str) -> BackupFileMissing:
        return BackupFileMissing(f"there is no backup file {key} in {self.where}")

    def ensure(self) -> None:
        """Make the container, marked as this installation's, without public access; refuse one
        of that name without the mark; take away public access and stored access policies set
        on it since."""
        try:
            try:
                metadata: dict[str, str] | None = dict(
                    self.client.get_container_properties().metadata or {})
            except ResourceNotFoundError:
                metadata = None
            if metadata is None:
                try:
                    self.client.create_container(metadata={AZURE_MARK: self.install})
                    metadata = {AZURE_MARK: self.install}
                except ResourceExistsError as exc:
                    if getattr(exc, "error_code", None) == "ContainerBeingDeleted":
                        raise ClusterError(f"the backup container of {self.where} is still "
                                           "being deleted: retry in a minute") from None
                    metadata = dict(self.client.get_container_properties().metadata or {})
            if {k.lower(): v for k, v in metadata.items()}.get(AZURE_MARK) != self.install:
                raise ClusterError(
                    f"a container named {self.container} exists already on Azure Blob storage "
                    f"at {self._target.where} and is not this Tether installation's backup "
                    "container: Tether never takes over a container it did not create; delete "
                    "or rename it, then retry")
            if azure_blob.AzureBlobProvider._openings(self.client):
                self.client.set_container_access_policy(signed_identifiers={},
                                                        public_access=None)
        except AzureError as exc:
            raise self._error(exc, f"making the backup container {self.container}") from None
        self._ensured = True

    def put(self, key: str, source: Path) -> None:
        """Stage the file's blocks (CONCURRENCY at a time, ids unique to this put), then commit
        the block list: the blob appears, or is replaced, at once and whole."""
        check_key(key)
        if not self._ensured:
            self.ensure()
        blob = self.client.get_blob_client(key)
        upload = secrets.token_hex(8)
        try:
            size = Path(source).stat().st_size
            block = self._block_size or max(AZURE_BLOCK_SIZE,
                                            math.ceil(size / AZURE_MAX_BLOCKS))
            ids: list[str] = []
            pending: set[Future[Any]] = set()
            with open(source, "rb") as src, ThreadPoolExecutor(CONCURRENCY) as pool:
                try:
                    while data := src.read(block):
                        block_id = base64.b64encode(f"{upload}-{len(ids):08d}".encode()).decode()
                        ids.append(block_id)
                        pending.add(pool.submit(blob.stage_block, block_id, data,
                                                length=len(data)))
                        if len(pending) >= CONCURRENCY:
                            done, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for future in done:
                                future.result()
                    for future in pending:
                        future.result()
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
            blob.commit_block_list([BlobBlock(block_id=i) for i in ids])
        except OSError as exc:
            raise ClusterError(f"reading {source} to store it as {key} in {self.where} failed: "
                               f"{exc.strerror or exc}") from None
        except AzureError as exc:
            raise self._error(exc, f"uploading the backup file {key}") from None

    def get(self, key: str, dest: Path) -> None:
        check_key(key)
        dest = Path(dest)
        out = _open_partial(dest)
        try:
            try:
                self.client.get_blob_client(key).download_blob(
                    max_concurrency=CONCURRENCY).readinto(out)
            except ResourceNotFoundError:
                raise self._missing(key) from None
            except AzureError as exc:
                raise self._error(exc, f"downloading the backup file {key}") from None
            _finish_partial(out, dest)
        except BaseException:
            out.close()
            partial_path(dest).unlink(missing_ok=True)
            raise

    def stream(self, key: str) -> Iterator[bytes]:
        check_key(key)
        try:
            downloader = self.client.get_blob_client(key).download_blob()
        except ResourceNotFoundError:
            raise self._missing(key) from None
        except AzureError as exc:
            raise self._error(exc, f"reading the backup file {key}") from None
        return self._chunks(downloader, key)

    def _chunks(self, downloader: Any, key: str) -> Generator[bytes, None, None]:
        try:
            yield from downloader.chunks()
        except AzureError as exc:
            raise self._error(exc, f"reading the backup file {key}") from None

    def size(self, key: str) -> int | None:
        check_key(key)
        try:
            return int(self.client.get_blob_client(key).get_blob_properties().size)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._error(exc, f"looking at the backup file {key}") from None

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.get_blob_client(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._error(exc, f"deleting the backup file {key}") from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        _check_prefix(prefix)
        try:
            found = sorted(str(name) for name in self.client.list_blob_names(
                name_starts_with=prefix or None))
        except ResourceNotFoundError:
            found = []
        except AzureError as exc:
            raise self._error(exc, "listing the backup files") from None
        return iter(found)

    def sweep_incomplete(self, older_than: float = SWEEP_AGE) -> int:
        """Delete the blobs that have staged blocks and no committed content (a put that never
        committed), last changed `older_than` seconds ago or earlier. A commit since the listing
        makes the blob newer than the cutoff, and the delete is refused (412): a live upload is
        never cut. A leftover of uncommitted blocks beside a committed blob is the service's to
        discard (after a week), since taking it away means committing the blob again."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        removed = 0
        try:
            committed = set(self.client.list_blob_names())
            for item in self.client.list_blobs(include=["uncommittedblobs"]):
                if item.name in committed or (item.last_modified and item.last_modified > cutoff):
                    continue
                if self._drop_uncommitted(str(item.name), cutoff):
                    removed += 1
        except ResourceNotFoundError:
            return removed
        except AzureError as exc:
            raise self._error(exc, "removing unfinished backup uploads") from None
        return removed

    def _drop_uncommitted(self, name: str, cutoff: datetime) -> bool:
        blob = self.client.get_blob_client(name)
        try:
            blob.delete_blob(if_unmodified_since=cutoff)
            return True
        except ResourceModifiedError:  # committed (or staged to) since the listing: live
            return False
        except ResourceNotFoundError:
            pass
        # Azure answers 404 to deleting a blob that has no committed version: commit an empty
        # one (only while there is none: IfMissing) to discard the staged blocks, then delete it
        try:
            made = blob.commit_block_list([], etag="*", match_condition=MatchConditions.IfMissing)
        except (ResourceModifiedError, ResourceExistsError):
            return False
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            blob.delete_blob(etag=made["etag"], match_condition=MatchConditions.IfNotModified)
        return True
