"""The content the media backup tests put into local files, S3 buckets and Azure containers:
random binary files with content types (nested keys, unicode names, an empty object, one larger
than an upload part), the headers some of them carry, what their summary must be, and archives
made by hand (not by Tether) to damage or to feed hostile members."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tether.backups.media import FORMAT, MediaSummary, ObjectEntry, guessed_type

MB = 1 << 20

#: key -> (content, content type)
Files = dict[str, tuple[bytes, str]]


def media_files(big: int = 3 * MB) -> Files:
    """Random binary files of a few MB (one larger than an upload part, so S3 and Azure take
    the multipart / block path), an empty one, nested keys, unicode names, and a file named like
    the archive's manifest."""
    return {
        "photos/2026/header.png": (os.urandom(big), "image/png"),
        "uploads/big-video.mp4": (os.urandom(9 * MB + 12345), "video/mp4"),
        "empty.txt": (b"", "text/plain"),
        "docs/a/b/c/report.pdf": (os.urandom(200_000), "application/pdf"),
        "photos/été/café ☕ 日本.jpg": (os.urandom(150_000), "image/jpeg"),
        "data.bin": (os.urandom(70_000), "application/octet-stream"),
        "MANIFEST.json": (b'{"not": "the manifest"}', "application/json"),
    }


def few_files() -> Files:
    """A few small binary objects with content types, for the backup operations tests."""
    return {"img/logo.png": (os.urandom(70_000), "image/png"),
            "docs/report.pdf": (os.urandom(3000), "application/pdf"),
            "notes.txt": (b"kept", "text/plain; charset=utf-8")}


def with_guessed_types(files: Files) -> Files:
    """The files with the types they have as local files: guessed from their names."""
    return {k: (v, guessed_type(k)) for k, (v, _) in files.items()}


@dataclass(frozen=True)
class Headers:
    """What an object carries besides its content type (S3 and Azure Blob keep it)."""

    cache_control: str | None = None
    content_disposition: str | None = None
    metadata: dict[str, str] | None = None


def headers_of(key: str) -> Headers:
    """The headers the tests give an object: images are cached for a day and carry metadata,
    PDFs are downloaded as attachments, the others carry none."""
    if key.endswith(".png"):
        return Headers(cache_control="max-age=86400", metadata={"origin": "upload"})
    if key.endswith(".pdf"):
        return Headers(content_disposition='attachment; filename="report.pdf"')
    return Headers()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_summary(files: Files) -> MediaSummary:
    return MediaSummary.of(ObjectEntry(k, len(v), sha(v), t) for k, (v, t) in files.items())


def flip_byte(path: Path, at: int | None = None) -> None:
    """Damage a file in the middle (or at `at`)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x55
    path.write_bytes(bytes(data))


def hand_made_archive(members: list[tuple[str, bytes]], *, manifest: bool = True,
                      bad_sha_for: str | None = None) -> bytes:
    """A tar made with `tarfile` directly (not by Tether): the given members as regular files,
    then a manifest of them unless `manifest` is False (`bad_sha_for`: list that member with a
    wrong checksum)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if manifest:
            objects = [{"key": name, "size": len(data),
                        "sha256": ("0" * 64 if name == bad_sha_for else sha(data)),
                        "content_type": guessed_type(name)} for name, data in members]
            body = json.dumps({"format": FORMAT, "kind": "local-files",
                               "objects": objects}).encode()
            info = tarfile.TarInfo("MANIFEST.json")
            info.size = len(body)
            info.pax_headers = {"TETHER.manifest": "1"}
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()
