"""Everything a release needs before its process starts: the environment's system user
(`accounts.py`), the release's own copy of the application directory (`appcopy.py`), its media
directories handed to that user, and the way to its release and interpreter opened for it.

The engine calls `prepare_release` before `ProcessRuntime.start`, and passes what it returns on
in the `ReleaseSpec` (`cwd`, `account`)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tether.errors import OperationError
from tether.providers.local_files import MODE as MEDIA_MODE
from tether.runtime import appcopy
from tether.runtime.accounts import (
    AppAccount,
    ensure_account,
    make_reachable,
)


@dataclass(frozen=True)
class PreparedRelease:
    cwd: Path
    account: AppAccount | None
    copied: appcopy.Copied

    def describe(self) -> str:
        who = (f"as the system user {self.account.name}" if self.account else
               "as Tether's own user (Tether is not root: it cannot switch users)")
        return f"runs {who}, from {self.copied.describe()}"


def file_directories(values: Iterable[str]) -> list[Path]:
    """The local directories named by `file://` storage DSNs among `values` (the variables of
    the release's service instances, never custom variables: those name anything)."""
    found = []
    for value in values:
        if value.startswith("file://"):
            path = unquote(urlsplit(value).path)
            if os.path.isabs(path):
                found.append(Path(path))
    return found


def app_path(variables: Mapping[str, str]) -> str:
    """The PATH the app gets (its own PATH variable, else Tether's)."""
    return variables.get("PATH") or os.environ.get("PATH") or os.defpath


_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


def _hand_over(directory: Path, account: AppAccount, data_dir: Path) -> None:
    """Make a media directory the account's, and its owner's only (the provider's mode, 0700:
    no other environment's app may list or read it): the app writes its files there. Handed
    over the first time only, while the directory is not the account's yet (root's, as its
    provider made it): once its owner is the account, it is never walked again, whatever its
    group (the app may `chgrp` it, and fill it, to make root walk it); only its own mode is set
    back (on the descriptor), should the app have opened it to others. The walk is relative to
    the file descriptors of the directories it opens (`O_NOFOLLOW`), never by path: a
    directory swapped for a symlink while it runs is never followed (a walk by path chowned the
    link's target). Never a link, never the data dir or above; a file with more than one name
    (a hard link to something elsewhere) is left as it is."""
    try:
        st = directory.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    data_dir = data_dir.resolve()
    if directory.resolve() in (data_dir, *data_dir.parents) or directory.resolve() == Path("/"):
        return
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return  # swapped for a link or a file meanwhile: never followed
        raise
    try:
        opened = os.fstat(fd)
        if opened.st_uid != account.uid:
            _chown_entries(fd, account, depth=0)
            os.fchown(fd, account.uid, account.gid)  # the top last: nobody else wrote meanwhile
        if stat.S_IMODE(opened.st_mode) != MEDIA_MODE:
            os.fchmod(fd, MEDIA_MODE)
    finally:
        os.close(fd)


def _chown_entries(dir_fd: int, account: AppAccount, depth: int) -> None:
    """Give every entry below the open directory `dir_fd` to the account, relative to it."""
    if depth > 256:  # far below the limit of open files
        return
    for name in os.listdir(dir_fd):
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    _chown_entries(child, account, depth + 1)
                    os.fchown(child, account.uid, account.gid)
                finally:
                    os.close(child)
            elif not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
                os.chown(name, account.uid, account.gid, dir_fd=dir_fd, follow_symlinks=False)


def prepare_release(data_dir: Path, environment_id: int, environment_key: str,
                    release_id: int, app_dir: str | None, command: str | None,
                    variables: Mapping[str, str],
                    media_dirs: Iterable[Path] = ()) -> PreparedRelease:
    """The environment's user, the release's copy, its media directories and the way to them;
    raises an `OperationError` (nothing started) when one cannot be made."""
    account = ensure_account(data_dir, environment_id)
    copied = appcopy.make_copy(data_dir, environment_key, release_id,
                               Path(app_dir) if app_dir else None, account)
    media = list(media_dirs)
    if account is not None:
        for directory in media:
            try:
                _hand_over(directory, account, Path(data_dir))
            except OSError as exc:
                raise OperationError(
                    f"could not give the media directory {directory} to the application's "
                    f"user {account.name}: {exc.strerror or exc}") from None
        make_reachable(account, data_dir, command, app_path(variables), media)
    return PreparedRelease(copied.path, account, copied)
