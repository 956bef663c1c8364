"""Sealed backup files: encrypted, authenticated and checksummed, written and read as streams.

A backup can be many GB, so nothing here holds a whole file in memory: the writer takes an
iterable of byte strings of any size (e.g. a pipe from `pg_dump`), the reader yields the plaintext
chunk by chunk (e.g. into a pipe to `pg_restore`). Memory use is about two chunks.

Keys. Every file has its own random 256-bit key. `write_sealed` returns it sealed with Tether's
secret (`SecretBox.seal`, the same protection as stored credentials); the caller stores that next
to the file's record, never in the file. Losing a file's record therefore makes the file
unreadable, and deleting the record is enough to make a copy of the file that leaked useless.

Format (version 1), all integers big-endian::

    header   magic "TETHERBK" (8) | version u8 = 1 | chunk size u32 | nonce prefix (7 random)
             | key check (32) = HMAC-SHA256(key, "tether sealed v1 key check" | the 20 bytes before)
    chunks   AES-256-GCM(enc key, nonce = prefix | counter u32 | last u8, plaintext, aad = header)
             every chunk but the last holds exactly `chunk size` bytes of plaintext (+ 16 tag);
             the last holds fewer (0 to chunk size - 1) and has last = 1

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015, as in Tink and age):
the counter in the nonce makes reordered or swapped chunks fail to authenticate, the last flag
makes a file cut at a chunk boundary fail (its new last chunk was encrypted with last = 0, and a
cut exactly between chunks leaves no short final chunk at all), and the header as associated data
binds every chunk to this file's chunk size and nonce prefix. The writer always ends with a short
chunk, so it never has to know in advance which chunk is the last one, and the reader knows it
from the length alone. The key check in the header tells a wrong key ("this is not the key of this
file") from damaged content, and commits the file to one key (GCM alone does not). The encryption
key is derived from the file key (HMAC-SHA256(key, "tether sealed v1 encryption")), so the key
check and the cipher never use the same key.

Checksums. The writer computes the SHA-256 of the whole file as written and of the plaintext and
returns both: the caller records them. The reader first checks the whole file against the
recorded SHA-256 (a pass that only hashes, fast next to any restore) and only then decrypts, so
a damaged file is refused before any consumer (a `pg_restore` into a live database) sees a byte;
chunk authentication then guards against the file changing between the two passes.

Crash safety. The writer writes `NAME.partial` (mode 0600), fsyncs it, renames it to `NAME` and
fsyncs the directory: after a crash there is never a file under the final name that is not
complete. A `.partial` left by a crash is the caller's to remove (`partial_path`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.errors import TetherError

MAGIC = b"TETHERBK"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that per-chunk costs vanish, small in memory
MIN_CHUNK_SIZE = 16  # small sizes only make sense in tests (many chunks from little data)
MAX_CHUNK_SIZE = 64 << 20  # a header may not make the reader allocate more than this
TAG_SIZE = 16
KEY_SIZE = 32
_PREFIX_SIZE = 7
_FIXED = struct.Struct(f">8sBI{_PREFIX_SIZE}s")  # magic, version, chunk size, nonce prefix
HEADER_SIZE = _FIXED.size + 32
_MAX_CHUNKS = 1 << 32
_READ_SIZE = 1 << 20
PARTIAL_SUFFIX = ".partial"


class SealedFileError(TetherError):
    """A sealed backup file cannot be read back: damaged, cut short, not one, or the wrong key.
    Never retry: the same file gives the same answer."""

    code = "backup_unreadable"


class ChecksumMismatch(SealedFileError):
    code = "backup_checksum_mismatch"


class NotASealedFile(SealedFileError):
    code = "backup_not_sealed"


class WrongKey(SealedFileError):
    code = "backup_wrong_key"


class DamagedChunk(SealedFileError):
    code = "backup_damaged"


class TruncatedFile(DamagedChunk):
    """Cut short, or its final chunk damaged (the two cannot be told apart)."""

    code = "backup_truncated"


@dataclass(frozen=True)
class SealedInfo:
    """What the caller records about a written file: the sealed key and the checksums."""

    key_sealed: str  # the file's key, sealed with Tether's secret (SecretBox.seal)
    size: int  # bytes of the file
    sha256: str  # hex SHA-256 of the file as written
    plain_sha256: str  # hex SHA-256 of the plaintext
    plain_size: int


class _Box(Protocol):
    """What this module needs of `tether.crypto.SecretBox`."""

    def seal(self, value: Any) -> str: ...

    def open(self, token: str | None) -> Any: ...


def partial_path(dest: Path) -> Path:
    """Where `write_sealed(dest, ...)` writes until it is complete."""
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def _key_check(key: bytes, fixed: bytes) -> bytes:
    return _derive(key, b"tether sealed v1 key check" + fixed)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= _MAX_CHUNKS:
        raise SealedFileError("a sealed file cannot hold more than 2**32 chunks: "
                              "use a larger chunk size")
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    def __init__(self, out: BinaryIO, key: bytes, chunk_size: int) -> None:
        prefix = secrets.token_bytes(_PREFIX_SIZE)
        fixed = _FIXED.pack(MAGIC, VERSION, chunk_size, prefix)
        self.header = fixed + _key_check(key, fixed)
        self._aead = AESGCM(_derive(key, b"tether sealed v1 encryption"))
        self._prefix = prefix
        self._out = out
        self._counter = 0
        self.file_hash = hashlib.sha256()
        self.plain_hash = hashlib.sha256()
        self.size = 0
        self.plain_size = 0
        self._emit(self.header)

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self.file_hash.update(data)
        self.size += len(data)

    def chunk(self, plain: bytes | memoryview, last: bool) -> None:
        self.plain_hash.update(plain)
        self.plain_size += len(plain)
        nonce = _nonce(self._prefix, self._counter, last)
        self._emit(self._aead.encrypt(nonce, bytes(plain), self.header))
        self._counter += 1


def write_sealed(dest: Path, chunks: Iterable[bytes], box: _Box,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> SealedInfo:
    """Encrypt the byte strings of `chunks` (any sizes) into the new file `dest`; see the module
    doc for the format. Writes `dest.partial` and renames it only when everything is written and
    on disk; if `chunks` raises (e.g. the dump failed), the partial file is removed and the error
    passes on. Refuses to replace an existing `dest`."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes")
    dest = Path(dest)
    if dest.exists():
        raise SealedFileError(f"{dest} already exists: a backup file is never overwritten")
    partial = partial_path(dest)
    key = secrets.token_bytes(KEY_SIZE)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            writer = _Writer(out, key, chunk_size)
            pending = bytearray()
            for data in chunks:
                pending += data
                if len(pending) >= chunk_size:
                    view = memoryview(pending)
                    whole = len(pending) - len(pending) % chunk_size
                    for start in range(0, whole, chunk_size):
                        writer.chunk(view[start:start + chunk_size], last=False)
                    view.release()
                    del pending[:whole]
            writer.chunk(bytes(pending), last=True)  # always short: it marks the end
            os.fsync(out.fileno())
        if dest.exists():
            raise SealedFileError(f"{dest} appeared while it was written: "
                                  "a backup file is never overwritten")
        os.rename(partial, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return SealedInfo(
        key_sealed=box.seal(base64.b64encode(key).decode()),
        size=writer.size, sha256=writer.file_hash.hexdigest(),
        plain_sha256=writer.plain_hash.hexdigest(), plain_size=writer.plain_size)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in bounded pieces."""
    digest = hashlib.sha256()
    buffer = bytearray(_READ_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _open_key(key_sealed: str, box: _Box) -> bytes:
    try:
        key = base64.b64decode(box.open(key_sealed), validate=True)
    except SealedFileError:
        raise
    except TetherError as exc:  # SecretBox: not Tether's secret of the time the file was made
        raise WrongKey(f"the backup's key cannot be opened: {exc.message}") from None
    except (ValueError, TypeError):
        raise WrongKey("the backup's stored key is not a sealed file key") from None
    if len(key) != KEY_SIZE:
        raise WrongKey("the backup's stored key is not a sealed file key")
    return key


def _read_exactly(f: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes: fewer only at the end of the file."""
    parts = []
    while size:
        data = f.read(size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def read_sealed(path: Path, key_sealed: str, box: _Box,
                expected_sha256: str | None) -> Generator[bytes, None, None]:
    """The plaintext of the sealed file `path`, as an iterator of chunks.

    Checked before this returns (so nothing has been handed to a consumer yet): the file's
    SHA-256 against `expected_sha256` (None skips it: only for a file whose checksum is not
    known), the header, the key, and the first chunk. Every later chunk is authenticated before it
    is yielded; a failure raises a `SealedFileError` subclass from the iterator, so a consumer
    must treat what it received as void unless the iterator ends normally."""
    path = Path(path)
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if not hmac.compare_digest(actual, expected_sha256.lower()):
            raise ChecksumMismatch(
                f"the backup file {path.name} does not have the checksum recorded when it was "
                "written: it was damaged or replaced after the backup, and cannot be restored")
    key = _open_key(key_sealed, box)
    f = open(path, "rb")  # noqa: SIM115 - closed by the iterator below
    try:
        header = _read_exactly(f, HEADER_SIZE)
        if len(header) < HEADER_SIZE or header[:len(MAGIC)] != MAGIC:
            raise NotASealedFile(f"{path.name} is not a sealed Tether backup file")
        fixed = header[:_FIXED.size]
        _, version, chunk_size, prefix = _FIXED.unpack(fixed)
        if version != VERSION:
            raise NotASealedFile(f"{path.name} is a sealed backup of format version {version}; "
                                 f"this Tether reads version {VERSION}: upgrade Tether")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise NotASealedFile(f"{path.name} has a damaged header (chunk size {chunk_size})")
        if not hmac.compare_digest(header[_FIXED.size:], _key_check(key, fixed)):
            raise WrongKey(f"the stored key is not the key of {path.name} (or the file's "
                           "header is damaged)")
        chunks = _chunks(f, path.name, AESGCM(_derive(key, b"tether sealed v1 encryption")),
                         header, prefix, chunk_size)
        first = next(chunks, None)  # authenticates the key on content before returning
    except BaseException:
        f.close()
        raise
    return _prepend(first, chunks, f)


def _prepend(first: bytes | None, rest: Iterator[bytes], f: BinaryIO
             ) -> Generator[bytes, None, None]:
    try:
        if first is None:  # an empty plaintext
            return
        yield first
        yield from rest
    finally:
        f.close()


def _chunks(f: BinaryIO, name: str, aead: AESGCM, header: bytes, prefix: bytes,
            chunk_size: int) -> Iterator[bytes]:
    full = chunk_size + TAG_SIZE
    counter = 0
    while True:
        data = _read_exactly(f, full)
        last = len(data) < full
        if last and len(data) < TAG_SIZE:
            raise TruncatedFile(f"the backup file {name} is cut short (it ends without its "
                                "final chunk) and cannot be restored")
        try:
            plain = aead.decrypt(_nonce(prefix, counter, last), data, header)
        except InvalidTag:
            what = "is cut short or damaged" if last else "is damaged"
            raise (TruncatedFile if last else DamagedChunk)(
                f"the backup file {name} {what} (chunk {counter} fails authentication) and "
                "cannot be restored") from None
        counter += 1
        if last:
            if f.read(1):  # cannot happen: a short read means the end of a regular file
                raise DamagedChunk(f"the backup file {name} has data after its final chunk")
            if plain:
                yield plain
            return
        yield plain
