"""LocalFilesProvider on a real directory tree."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tether.errors import ClusterError, UserError
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.local_files import LocalFilesProvider
from tether.providers.registry import get_provider, kinds

pytestmark = pytest.mark.integration

PUBLIC_URL = "http://127.0.0.1:8070/media/"
PROVIDER = LocalFilesProvider()


def spec(base_dir: Path | str, public_url: str = PUBLIC_URL) -> ClusterSpec:
    return ClusterSpec(id=3, kind="local-files", region="local", url=f"file://{base_dir}",
                       settings={"base_dir": str(base_dir), "public_url": public_url})


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSpec:
    return spec(tmp_path / "media")


def test_check_creates_the_base_dir(cluster: ClusterSpec) -> None:
    assert PROVIDER.check(cluster) == "1"
    assert Path(cluster.settings["base_dir"]).is_dir()


def test_check_refuses_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="absolute base_dir"):
        PROVIDER.check(spec("relative/media"))
    with pytest.raises(ClusterError, match="public_url"):
        PROVIDER.check(spec(tmp_path / "media", public_url=""))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ClusterError, match="choose another base_dir"):
        PROVIDER.check(spec(blocker / "media"))


def test_provision_write_deprovision(cluster: ClusterSpec, unique_id: str) -> None:
    a = ResourceNames(base=f"tether_t{unique_id}a")
    b = ResourceNames(base=f"tether_t{unique_id}b")
    creds_a = PROVIDER.provision(cluster, a, "unused")
    assert PROVIDER.provision(cluster, a, "unused") == creds_a  # idempotent
    creds_b = PROVIDER.provision(cluster, b, "unused")

    dir_a = Path(creds_a.values["directory"])
    dir_b = Path(creds_b.values["directory"])
    assert dir_a.is_absolute() and dir_a.is_dir() and dir_a != dir_b
    assert dir_a == Path(cluster.settings["base_dir"]) / a.base
    assert stat.S_IMODE(dir_a.stat().st_mode) == 0o700
    assert creds_a.values["url"] == f"{PUBLIC_URL}{a.base}/"
    assert PROVIDER.exists(cluster, a) and PROVIDER.exists(cluster, b)

    (dir_a / "upload.txt").write_text("hello")
    (dir_a / "sub").mkdir()
    (dir_a / "sub" / "deep.bin").write_bytes(b"\0\1")
    assert not (dir_b / "upload.txt").exists()

    PROVIDER.deprovision(cluster, a)
    assert not dir_a.exists()
    assert not PROVIDER.exists(cluster, a)
    PROVIDER.deprovision(cluster, a)  # already gone: still succeeds
    assert dir_b.is_dir()
    PROVIDER.deprovision(cluster, b)
    assert not dir_b.exists()


def test_deprovision_never_follows_a_symlink_out_of_base_dir(cluster: ClusterSpec,
                                                              tmp_path: Path,
                                                              unique_id: str) -> None:
    names = ResourceNames(base=f"tether_t{unique_id}l")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    base = Path(cluster.settings["base_dir"])
    base.mkdir(parents=True)
    os.symlink(outside, base / names.base)
    PROVIDER.deprovision(cluster, names)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert not (base / names.base).is_symlink()


def test_env_vars_give_a_file_storage_dsn(cluster: ClusterSpec, unique_id: str) -> None:
    names = ResourceNames(base=f"tether_t{unique_id}e")
    creds = PROVIDER.provision(cluster, names, "unused")
    try:
        env = PROVIDER.env_vars("MEDIA", creds)
        assert set(env) == {"MEDIA_STORAGE_DSN"}
        dsn = env["MEDIA_STORAGE_DSN"]
        directory = creds.values["directory"]
        assert dsn == (f"file://{directory}/?url=http%3A%2F%2F127.0.0.1%3A8070%2Fmedia%2F"
                       f"{names.base}%2F")
        parts = urlsplit(dsn)
        assert parts.scheme == "file" and unquote(parts.path) == directory + "/"
        assert parse_qs(parts.query)["url"] == [f"{PUBLIC_URL}{names.base}/"]
    finally:
        PROVIDER.deprovision(cluster, names)


def test_observe_finds_a_removed_dir_and_a_changed_mode(cluster: ClusterSpec,
                                                       unique_id: str) -> None:
    names = ResourceNames(base=f"tether_t{unique_id}o")
    assert not PROVIDER.observe(cluster, names).exists
    creds = PROVIDER.provision(cluster, names, "unused")
    directory = Path(creds.values["directory"])
    seen = PROVIDER.observe(cluster, names)
    assert seen.exists and seen.in_sync
    try:
        (directory / "kept.txt").write_text("v")
        directory.chmod(0o755)
        assert PROVIDER.observe(cluster, names).differences == (
            f"directory {directory} has mode 0755, not 0700",)
        PROVIDER.provision(cluster, names, "unused")
        assert PROVIDER.observe(cluster, names).in_sync
        assert (directory / "kept.txt").read_text() == "v"

        shutil.rmtree(directory)
        assert PROVIDER.observe(cluster, names).differences == (
            f"directory {directory} is missing: its data is lost (a repair makes it again, "
            "EMPTY)",)
        assert PROVIDER.provision(cluster, names, "unused") == creds
        assert PROVIDER.observe(cluster, names).in_sync
        assert list(directory.iterdir()) == []
    finally:
        PROVIDER.deprovision(cluster, names)
    assert not PROVIDER.observe(cluster, names).exists


def test_a_symlink_in_place_of_the_dir_is_reported_and_never_followed(
        cluster: ClusterSpec, tmp_path: Path, unique_id: str) -> None:
    names = ResourceNames(base=f"tether_t{unique_id}k")
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    outside.chmod(0o700)
    base = Path(cluster.settings["base_dir"])
    base.mkdir(parents=True)
    os.symlink(outside, base / names.base)
    seen = PROVIDER.observe(cluster, names)
    assert seen.exists and "is not a directory" in seen.differences[0]
    with pytest.raises(ClusterError, match="not a directory"):
        PROVIDER.provision(cluster, names, "unused")
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700  # not chmod-ed through the link
    PROVIDER.deprovision(cluster, names)
    assert outside.is_dir()


def test_registry_knows_the_supported_kinds() -> None:
    assert set(kinds()) >= {"postgres", "local-files"}
    assert get_provider("local-files").kind == "local-files"
    assert get_provider("postgres").kind == "postgres"
    with pytest.raises(UserError, match=r"supported kinds are .*postgres"):
        get_provider("oracle")
