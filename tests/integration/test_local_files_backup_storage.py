"""Backup storage on a local-files cluster (tether.backups.storage), on a real directory tree: a
round trip of a ~20 MB file with its checksum, the directory beside (never under) the media base
dir, private modes, a put killed with SIGKILL midway leaving no key, `sweep_incomplete`, `keys`.

Also the shared checks the S3 and Azure storage tests run against their real servers
(`check_round_trip`, `start_put`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tether.backups.sealed import partial_path
from tether.backups.storage import (
    BackupFileMissing,
    BackupStorage,
    LocalBackupStorage,
    backup_storage,
    check_key,
    install_id,
)
from tether.crypto import SecretBox
from tether.errors import ClusterError
from tether.providers.base import ClusterSpec

pytestmark = pytest.mark.integration

INSTALL = "0123456789abcdef"
SIZE = 20 * 1000 * 1000 + 12345  # ~20 MB, not a multiple of any part or block size


def spec(base_dir: Path) -> ClusterSpec:
    return ClusterSpec(id=5, kind="local-files", region="local", url=f"file://{base_dir}",
                       settings={"base_dir": str(base_dir),
                                 "public_url": "http://127.0.0.1:8071/"})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            digest.update(data)
    return digest.hexdigest()


def random_file(path: Path, size: int = SIZE) -> str:
    """A file of `size` random bytes; its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(left, 1 << 20))
            f.write(data)
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


def check_round_trip(storage: BackupStorage, tmp_path: Path, key: str,
                     size: int = SIZE) -> str:
    """put, size, get, stream, keys, delete of one file: the same bytes come back, whole, and
    nothing is left of the key afterwards. Returns the key's checksum (it is deleted)."""
    source = tmp_path / "staged.tbk"
    expected = random_file(source, size)
    storage.put(key, source)
    assert storage.size(key) == size
    assert key in list(storage.keys())

    dest = tmp_path / "fetched.tbk"
    storage.get(key, dest)
    assert sha256_file(dest) == expected
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert not partial_path(dest).exists()

    digest, seen = hashlib.sha256(), 0
    for chunk in storage.stream(key):
        digest.update(chunk)
        seen += len(chunk)
    assert (seen, digest.hexdigest()) == (size, expected)

    storage.put(key, source)  # a retried put replaces the key, whole
    assert storage.size(key) == size

    storage.delete(key)
    storage.delete(key)  # idempotent
    assert storage.size(key) is None
    assert key not in list(storage.keys())
    with pytest.raises(BackupFileMissing, match="no backup file"):
        storage.get(key, tmp_path / "missing.tbk")
    assert not (tmp_path / "missing.tbk").exists()
    assert not partial_path(tmp_path / "missing.tbk").exists()
    with pytest.raises(BackupFileMissing):
        storage.stream(key)
    return expected


def check_keys_listing(storage: BackupStorage, tmp_path: Path) -> None:
    """keys() lists exactly what was put, sorted, by prefix."""
    source = tmp_path / "small.tbk"
    random_file(source, 1000)
    made = ["live/2026-12-03/b2.tbk", "live/2026-12-03/b10.tbk", "test/b1.tbk", "top.tbk"]
    for key in made:
        storage.put(key, source)
    try:
        assert list(storage.keys()) == sorted(made)
        assert list(storage.keys("live/")) == sorted(made[:2])
        assert list(storage.keys("test/")) == ["test/b1.tbk"]
        assert list(storage.keys("nothing/")) == []
    finally:
        for key in made:
            storage.delete(key)
    assert list(storage.keys()) == []


#: a child process that puts one file into a store and is killed while doing it. argv: a JSON
#: object with the cluster, the install id, the key, the source, the storage class's extra
#: arguments, and `pause_after_part` (S3: after the first part is stored, every later part
#: waits, so the kill surely lands mid-upload; the server is real, only the client waits)
PUT_CHILD = r"""
import json, sys, time
from pathlib import Path
from tether.providers.base import ClusterSpec
from tether.backups import storage as st

args = json.loads(sys.argv[1])
cluster = ClusterSpec(**args["cluster"])
store = {"local-files": lambda: st.LocalBackupStorage(cluster),
         "s3": lambda: st.S3BackupStorage(cluster, args["install"], **args["extra"]),
         "azure-blob": lambda: st.AzureBackupStorage(cluster, args["install"], **args["extra"]),
         }[cluster.kind]()
store.ensure()
if args.get("pause_after_part"):
    parts = []
    def after(**kwargs):
        parts.append(1)
        print("part stored", flush=True)
    def before(**kwargs):
        if parts:
            time.sleep(3600)
    store.client.meta.events.register("after-call.s3.UploadPart", after)
    store.client.meta.events.register("before-call.s3.UploadPart", before)
print("putting", flush=True)
store.put(args["key"], Path(args["source"]))
print("done", flush=True)
"""


def start_put(cluster: ClusterSpec, key: str, source: Path, *, install: str = INSTALL,
              extra: dict[str, Any] | None = None,
              pause_after_part: bool = False) -> subprocess.Popen[str]:
    """Run `put` in a child process (killed by the caller)."""
    args = {"cluster": asdict(cluster), "install": install, "key": key, "source": str(source),
            "extra": extra or {}, "pause_after_part": pause_after_part}
    return subprocess.Popen([sys.executable, "-c", PUT_CHILD, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], Any], what: str, proc: subprocess.Popen[str],
             timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the put ended ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def feed_fifo(fifo: Path, proc: subprocess.Popen[str], size: int) -> Any:
    """Open the FIFO the child reads its source from, write `size` random bytes into it and
    return it still open (the child waits for more)."""
    fd = wait_for(lambda: _open_fifo(fifo), "the child opening its source", proc)
    os.set_blocking(fd, True)
    writer = os.fdopen(fd, "wb", buffering=0)
    left = size
    while left:
        data = os.urandom(min(left, 1 << 20))
        writer.write(data)
        left -= len(data)
    return writer


def _open_fifo(fifo: Path) -> int | None:
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


# -- local files ----------------------------------------------------------------------------------


@pytest.fixture
def media(tmp_path: Path) -> Path:
    base = tmp_path / "data" / "media"
    base.mkdir(parents=True)
    return base


def test_round_trip_beside_the_media_dir(media: Path, tmp_path: Path) -> None:
    storage = backup_storage(spec(media), INSTALL)
    assert isinstance(storage, LocalBackupStorage)
    storage.ensure()
    root = media.parent / "media-backups"
    assert storage.root == root
    assert "local-files cluster 5" in storage.where and str(root) in storage.where
    found = root.lstat()
    assert stat.S_ISDIR(found.st_mode) and stat.S_IMODE(found.st_mode) == 0o700
    assert found.st_uid == os.geteuid()
    assert not os.path.realpath(root).startswith(os.path.realpath(media) + os.sep)

    key = "live/2026-12-03/b1.tbk"
    source = tmp_path / "staged.tbk"
    random_file(source, 1000)
    storage.put(key, source)
    for path in (root / "live", root / "live" / "2026-12-03"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / key).stat().st_mode) == 0o600
    for not_a_key in ("live", "live/2026-12-03"):  # directories of keys are no keys
        assert storage.size(not_a_key) is None
        with pytest.raises(BackupFileMissing):
            storage.stream(not_a_key)
    storage.delete(key)
    assert list(root.iterdir()) == []  # empty directories go with their last file

    check_round_trip(storage, tmp_path, key)
    assert list(root.iterdir()) == []


def test_keys_lists_exactly_what_was_put(media: Path, tmp_path: Path) -> None:
    storage = backup_storage(spec(media), INSTALL)
    check_keys_listing(storage, tmp_path)


def test_put_killed_midway_leaves_no_key_and_sweep_clears_it(media: Path,
                                                             tmp_path: Path) -> None:
    storage = backup_storage(spec(media), INSTALL)
    assert isinstance(storage, LocalBackupStorage)
    storage.ensure()
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo)
    key = "live/b7.tbk"
    proc = start_put(spec(media), key, fifo)
    writer = feed_fifo(fifo, proc, 5 << 20)
    try:
        # whatever it writes to (the key itself would be wrong: that is the assertion below)
        wait_for(lambda: [p for p in (storage.root / "live").glob("*")
                          if p.stat().st_size >= 4 << 20] if (
            storage.root / "live").is_dir() else None, "4 MiB stored", proc)
        kill(proc)
    finally:
        writer.close()
    assert storage.size(key) is None
    assert list(storage.keys()) == []
    partial = list((storage.root / "live").glob("*.partial"))
    assert len(partial) == 1
    with pytest.raises(BackupFileMissing):
        storage.get(key, tmp_path / "out.tbk")
    assert partial[0].exists()
    assert stat.S_IMODE(partial[0].stat().st_mode) == 0o600

    assert storage.sweep_incomplete() == 0  # fresh: it might be a put still running
    assert storage.sweep_incomplete(older_than=0) == 1
    assert not partial[0].exists()
    assert storage.sweep_incomplete(older_than=0) == 0


def test_refuses_a_symlink_or_a_foreign_directory(media: Path, tmp_path: Path) -> None:
    root = media.parent / "media-backups"
    (media / "inst").mkdir()
    root.symlink_to(media / "inst")  # would put backups where media URLs serve them
    storage = backup_storage(spec(media), INSTALL)
    with pytest.raises(ClusterError, match="media directory"):
        storage.ensure()
    root.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.symlink_to(elsewhere)
    with pytest.raises(ClusterError, match="not a directory"):
        storage.ensure()
    source = tmp_path / "s.tbk"
    random_file(source, 10)
    with pytest.raises(ClusterError):
        storage.put("b.tbk", source)
    assert list(elsewhere.iterdir()) == []  # never followed
    root.unlink()
    if os.geteuid() == 0:
        root.mkdir()
        os.chown(root, 65534, 65534)
        with pytest.raises(ClusterError, match="another user"):
            storage.ensure()
        root.rmdir()
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    storage.ensure()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # made private again


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_other_users_cannot_read_backups(media: Path, tmp_path: Path) -> None:
    storage = backup_storage(spec(media), INSTALL)
    source = tmp_path / "staged.tbk"
    random_file(source, 1000)
    storage.put("live/b1.tbk", source)
    assert isinstance(storage, LocalBackupStorage)
    for path in (storage.root / "live" / "b1.tbk", storage.root / "live"):
        run = subprocess.run(["cat" if path.is_file() else "ls", str(path)], user="nobody",
                             capture_output=True, text=True, check=False)
        assert run.returncode != 0 and "Permission denied" in run.stderr


def test_keys_and_names_checked(media: Path, tmp_path: Path) -> None:
    for bad in ("", "/abs", "a//b", "../x", "a/../b", "a/./b", "x.partial", "a b", "ä",
                "a/" + "x" * 201, "-x"):
        with pytest.raises(ValueError, match="invalid backup key"):
            check_key(bad)
    storage = backup_storage(spec(media), INSTALL)
    with pytest.raises(ValueError):
        storage.size("../media/secret")
    with pytest.raises(ValueError, match="install id"):
        backup_storage(spec(media), "Not-An-Id")
    with pytest.raises(ClusterError, match="cannot hold backup files"):
        backup_storage(ClusterSpec(id=1, kind="postgres", region="local",
                                   url="postgres://u:p@h/db"), INSTALL)


def test_install_id_is_stable_per_secret() -> None:
    key = b"o" * 43 + b"="
    one, again = install_id(SecretBox(key)), install_id(SecretBox(key))
    other = install_id(SecretBox(b"p" * 43 + b"="))
    assert one == again != other
    assert len(one) == 16 and all(c in "0123456789abcdef" for c in one)
    assert key.decode()[:8] not in one
