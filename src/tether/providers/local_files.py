"""Local files: one directory per instance under the cluster's `base_dir`, served over HTTP under
the cluster's `public_url`. For the `local` region and development; there is no credential to
isolate (the application and Tether share the machine).

`public_url` must be an origin of its own, never the control plane's: whatever an application
(or its end user) puts into the directory is served from there. `tether up` serves its embedded
cluster's files on their own port (tether.media: `nosniff`, a sandboxing CSP, active types as
downloads) and keeps the cluster's `public_url` and its instances' URLs pointed at it.

Who may read an instance's directory: only its owner (0700). Tether (root) makes it, and hands
it to the system user of the environment that uses it at its deploy (runtime/isolation.py, which
also sets 0700 again): that application lists and writes its own directory, no other
application lists or reads it (upload names and files are theirs), and Tether's media origin
(root, or Tether's own user without root) serves its files. A base dir this provider makes is
0711: applications pass through it to their own directory, without listing the others.

Drift (`observe`) and its repair (`provision` again): a missing directory is made again, its mode
set back to 0700 (its owner is left as it is: the application's user once handed over). What
cannot be repaired: a directory deleted by hand comes back EMPTY (its
files are lost); a symlink or a file in its place is left alone (never followed out of
base_dir)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from tether import naming
from tether.errors import ClusterError, UserError
from tether.providers.base import (
    ClusterSettings,
    ClusterSpec,
    Credentials,
    Observation,
    ProviderBase,
    ResourceNames,
    lost,
)
from tether.providers.common import check_names

#: an instance's directory: its owner's only (root's, then the application's user's)
MODE = 0o700
#: a base dir made here: traversed by applications, listed by nobody but its owner
BASE_MODE = 0o711
#: the file in a local-files cluster's base dir that names that directory tree for good
MARKER = ".tether-server-id"


def _base_dir(cluster: ClusterSpec) -> Path:
    raw = cluster.settings.get("base_dir")
    if not raw or not os.path.isabs(str(raw)):
        raise ClusterError("a local-files cluster needs an absolute base_dir setting "
                           "(e.g. /var/lib/tether/media)")
    return Path(str(raw))


def _public_url(cluster: ClusterSpec) -> str:
    url = str(cluster.settings.get("public_url") or "")
    if not url.startswith(("http://", "https://")):
        raise ClusterError("a local-files cluster needs a public_url setting, an origin of its "
                           "own (e.g. http://127.0.0.1:8071/ or https://media.example.com/)")
    return url if url.endswith("/") else url + "/"


def _make_base(base: Path) -> None:
    """The base dir, made 0711 when missing (an operator's existing directory is left as it
    is)."""
    if base.is_dir():
        return
    base.mkdir(parents=True, exist_ok=True, mode=BASE_MODE)
    base.chmod(BASE_MODE)  # mkdir's mode is masked by the umask


def _instance_dir(cluster: ClusterSpec, names: ResourceNames) -> Path:
    check_names(names)  # never let one escape base_dir
    return _base_dir(cluster) / names.base


def _tree_id(base_dir: Path) -> str:
    """The id in the base dir's marker file, written (once, atomically) when missing."""
    marker = base_dir / MARKER
    try:
        found = marker.read_text().strip()
    except FileNotFoundError:
        found = ""
    except OSError as exc:
        raise UserError(f"cannot read {marker} ({exc.strerror or exc}): make the media "
                        "directory readable for Tether") from None
    if found:
        return found
    fresh = secrets.token_hex(12)
    tmp = marker.with_name(f"{marker.name}.{fresh}.tmp")
    try:
        tmp.write_text(fresh + "\n")
        with contextlib.suppress(FileExistsError):  # another process wrote it meanwhile: keep it
            os.link(tmp, marker)
    except OSError as exc:
        raise UserError(f"cannot write {marker} ({exc.strerror or exc}): make the media "
                        "directory writable for Tether") from None
    finally:
        tmp.unlink(missing_ok=True)
    return marker.read_text().strip()


class LocalFilesSettings(ClusterSettings):
    """`base_dir` (absolute) holds the instances' directories; `public_url` is the media
    origin that serves them."""

    base_dir: str
    public_url: str


class LocalFilesProvider(ProviderBase):
    """A directory per instance; its URL is where Tether serves it."""

    kind = "local-files"
    title = "Local media files: a directory per instance, served by Tether's media origin"
    category = "STORAGE"
    backup_engine = "tether.backups.engines:MediaEngine"
    backup_storage = "tether.backups.storage:LocalBackupStorage"
    backup_storage_rank = 2
    service = "local-media"
    versioned = False
    family = "local"
    variables = ("{P}_STORAGE_DSN",)
    settings_model = LocalFilesSettings

    def identity(self, cluster: ClusterSpec) -> str | None:
        """A random id kept in a file at the top of the base dir: a moved data dir is the
        same tree, and the same path on another machine is not."""
        raw = cluster.settings.get("base_dir")
        if not raw or not os.path.isabs(str(raw)):
            return None
        return f"local-files:{_tree_id(Path(str(raw)))}"

    def check(self, cluster: ClusterSpec) -> str:
        """The base dir exists (or can be made) and is writable."""
        base = _base_dir(cluster)
        _public_url(cluster)
        try:
            _make_base(base)
            with tempfile.TemporaryFile(dir=base):
                pass
        except OSError as exc:
            raise ClusterError(f"cannot write to the media directory {base} "
                               f"({exc.strerror or exc}): create it and make it writable for "
                               "Tether, or choose another base_dir") from None
        return "1"

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: the instance's directory, mode 0700 (whoever owns it: the application's
        user once handed over). A symlink or a file in its place is refused, never followed."""
        directory = _instance_dir(cluster, names)
        url = _public_url(cluster) + names.base + "/"
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            raise ClusterError(f"{directory} is not a directory (a symlink or a file): remove "
                               "it, then retry")
        try:
            _make_base(directory.parent)
            directory.mkdir(mode=MODE, exist_ok=True)
            directory.chmod(MODE)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise ClusterError(f"cannot create the media directory {directory} "
                               f"({exc.strerror or exc})") from None
        return Credentials({"directory": str(directory), "url": url})

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        directory = _instance_dir(cluster, names)
        return directory.exists() or directory.is_symlink()

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The directory: there, a directory (not a symlink), mode 0700."""
        directory = _instance_dir(cluster, names)
        try:
            found = directory.lstat()
        except FileNotFoundError:
            return Observation(False, (lost(f"directory {directory}"),))
        except OSError as exc:
            raise ClusterError(f"cannot look at the media directory {directory} "
                               f"({exc.strerror or exc})") from None
        if not stat.S_ISDIR(found.st_mode):
            return Observation(True, (f"{directory} is not a directory (a symlink or a file): "
                                      "Tether does not touch it",))
        mode = stat.S_IMODE(found.st_mode)
        if mode != MODE:
            return Observation(True, (f"directory {directory} has mode {mode:04o}, not "
                                      f"{MODE:04o}",))
        return Observation(True)

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


PROVIDER = LocalFilesProvider
