"""Everything a release needs before its process starts: the environment's system user
(`accounts.py`), the release's own copy of the application directory (`appcopy.py`), its media
directories handed to that user, and the way to its release and interpreter opened for it.

The engine calls `prepare_release` before `ProcessRuntime.start`, and passes what it returns on
in the `ReleaseSpec` (`cwd`, `account`)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tether.errors import OperationError
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


def _hand_over(directory: Path, account: AppAccount, data_dir: Path) -> None:
    """Make a media directory the account's: the app writes its files there. Done recursively
    the first time only (later files are its own). Never a link, never the data dir or above."""
    try:
        st = directory.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    data_dir = data_dir.resolve()
    if directory.resolve() in (data_dir, *data_dir.parents) or directory.resolve() == Path("/"):
        return
    if st.st_uid == account.uid and st.st_gid == account.gid:
        return
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                os.lchown(Path(root, name), account.uid, account.gid)
    os.lchown(directory, account.uid, account.gid)


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
