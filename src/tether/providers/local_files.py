"""Local files: one directory per instance under the cluster's `base_dir`, served over HTTP by
Tether under the cluster's `public_url`. For the `local` region and development; there is no
credential to isolate (the application and Tether share the machine)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from tether import naming
from tether.errors import ClusterError
from tether.providers.base import ClusterSpec, Credentials, ResourceNames

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _base_dir(cluster: ClusterSpec) -> Path:
    raw = cluster.settings.get("base_dir")
    if not raw or not os.path.isabs(str(raw)):
        raise ClusterError("a local-files cluster needs an absolute base_dir setting "
                           "(e.g. /var/lib/tether/media)")
    return Path(str(raw))


def _public_url(cluster: ClusterSpec) -> str:
    url = str(cluster.settings.get("public_url") or "")
    if not url.startswith(("http://", "https://")):
        raise ClusterError("a local-files cluster needs a public_url setting "
                           "(e.g. http://127.0.0.1:8070/media/)")
    return url if url.endswith("/") else url + "/"


def _instance_dir(cluster: ClusterSpec, names: ResourceNames) -> Path:
    # Names come from instance ids, but never let one escape base_dir.
    if not _NAME_RE.fullmatch(names.base):
        raise ClusterError(f"refusing the resource name {names.base!r}: not a plain identifier")
    return _base_dir(cluster) / names.base


class LocalFilesProvider:
    """A directory per instance; its URL is where Tether serves it."""

    kind = "local-files"

    def check(self, cluster: ClusterSpec) -> str:
        """The base dir exists (or can be made) and is writable."""
        base = _base_dir(cluster)
        _public_url(cluster)
        try:
            base.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=base):
                pass
        except OSError as exc:
            raise ClusterError(f"cannot write to the media directory {base} "
                               f"({exc.strerror or exc}): create it and make it writable for "
                               "Tether, or choose another base_dir") from None
        return "1"

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        directory = _instance_dir(cluster, names)
        url = _public_url(cluster) + names.base + "/"
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            directory.chmod(0o755)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise ClusterError(f"cannot create the media directory {directory} "
                               f"({exc.strerror or exc})") from None
        return Credentials({"directory": str(directory), "url": url})

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        directory = _instance_dir(cluster, names)
        return directory.exists() or directory.is_symlink()

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        directory = _instance_dir(cluster, names)
        try:
            if directory.is_symlink() or directory.is_file():
                directory.unlink()  # never follow a link out of base_dir
            elif directory.exists():
                shutil.rmtree(directory)
        except OSError as exc:
            raise ClusterError(f"cannot delete the media directory {directory} "
                               f"({exc.strerror or exc})") from None

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        c = credentials.values
        dsn = naming.file_storage_dsn(str(c["directory"]), str(c["url"]))
        return naming.storage_vars(prefix, dsn)
