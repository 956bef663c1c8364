"""Each release runs from its own copy of the application directory, made before it starts:
`DATA_DIR/releases/<project>/<env>/<release id>/`. A later edit of the application directory
cannot change a running release, and a release started again after a restart of Tether runs
what it ran before.

Who may read a copy: when Tether runs as root, the copy belongs to root and to the group of the
environment's own user (directories 0750, files 0640, or 0750 when executable), inside
`releases/<project>/<env>/` (0750, the same group); `releases/` and `releases/<project>/` are
0710 for `tether-apps` (traverse, not list). So the app reads its own release and nothing of
another environment's, and cannot change its release, not even by `chmod` (it does not own it).
Without root, everything is Tether's own and read-only for it (directories 0500, files 0400 or
0500 when executable), inside 0700 directories.

What is not copied:
- version control and caches: `.git`, `.hg`, `.svn`, `__pycache__`, `.pytest_cache`,
  `.ruff_cache`, `.mypy_cache`, `.tox`, `.nox`;
- virtualenvs (any directory holding a `pyvenv.cfg`): a venv copied elsewhere breaks (its scripts
  name their interpreter by absolute path), and the app uses the interpreter where it is;
- Tether's own data dir, should it lie inside the application directory;
- what the app directory's `.tetherignore` names (like `.gitignore`, without `!`: one pattern per
  line, `#` comments; a trailing `/` matches directories only; a pattern holding another `/` is
  matched against the path from the app directory, any other against each name at any depth;
  `*`, `?` and `[...]` as in the shell);
- sockets, FIFOs and devices. Symbolic links are copied as links, never followed;
- what the app directory's owner may not read by the mode bits (another user's 0600 file, a
  directory they cannot list): root makes the copy, and would otherwise hand it to the app. When
  that owner is root (a clone under `/root`, `/srv/x`, `/var/backups`...), only what every user
  may read (a file "other" may read, a directory "other" may read and enter). The deployment
  log names what was left out.

The copy walks by open directories, each opened relative to its parent's descriptor without
following symlinks, and copies each file from the descriptor whose type it checked: whoever can
write the app directory cannot swap a part of it for a symlink mid-copy. An app directory in a
system or secret location (`/etc`, `/root/.config`, ...: `refused_location`) is refused when
the project is created and again before each copy, as a symlink may be re-pointed in between.

Copies are made into a hidden directory, then renamed into place: a crash mid-copy never leaves a
half copy taken for a whole one. `prune` removes the copies of releases that are gone (the
engine keeps the current release, the previous one and any still starting or running).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import pwd
import re
import secrets
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tether.config import config_path
from tether.errors import OperationError
from tether.runtime.accounts import AppAccount

RELEASES = "releases"
IGNORE_FILE = ".tetherignore"
SKIPPED_NAMES = frozenset({".git", ".hg", ".svn", "__pycache__", ".pytest_cache",
                           ".ruff_cache", ".mypy_cache", ".tox", ".nox"})
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_PARTIAL = re.compile(r"^\.(\d+)\.partial-[0-9a-f]+$")


class CopyFailed(OperationError):
    """The application directory could not be copied for a release."""


#: system locations an app directory may neither be, lie in, nor hold (besides `/root`'s and
#: homes' dot directories, Tether's data dir and the CLI config dir: see `refused_location`)
SYSTEM_DIRS = tuple(Path(p) for p in ("/etc", "/proc", "/sys", "/dev", "/boot", "/var/lib",
                                      "/root"))


def refused_location(app_dir: str | Path, data_dir: Path) -> str | None:
    """Why `app_dir` may not be an app directory, or None. Root copies it for the app, so it
    may not be, lie in, resolve into or hold a system or secret location: `/`, `/etc`,
    `/proc`, `/sys`, `/dev`, `/boot`, `/var/lib`, `/root` itself and its dot directories
    (`/root/.config`, `/root/.ssh`, ...), the dot directories of homes (`/home/*/.*`), the
    CLI config dir and Tether's data dir; nor may another user than root and its owner be able
    to replace it or a directory on the way to it (`_replaceable`: a world-writable directory
    on the way, e.g. `/tmp` itself, or another user's directory inside `/tmp`). Checked when a
    project is created and again before each copy (a symlink may be re-pointed in between). A
    clone under `/root` stays allowed."""
    literal = Path(os.path.normpath(os.path.abspath(app_dir)))
    try:
        real = Path(os.path.realpath(app_dir))
    except (OSError, ValueError):
        real = literal
    secret = [Path(os.path.realpath(data_dir)), Path(os.path.realpath(config_path().parent))]
    for path in dict.fromkeys([literal, real]):
        reason = _refused(path, secret)
        if reason:
            return reason if path == literal else f"{reason} (it resolves to {path})"
    try:
        owner = os.stat(real).st_uid
    except OSError:
        return None  # not there (a directory is required where the project is created)
    for path in dict.fromkeys([literal, real]):
        reason = _replaceable(path, owner)
        if reason:
            return (f"{reason}: another user could put a link to another directory in its "
                    "place between two deploys; keep the application in a directory that only "
                    "root and its owner may change, e.g. /srv/shop (under /tmp: a directory "
                    "of the owner's own, with every directory between /tmp and it the owner's)")
    return None


def _replaceable(path: Path, owner: int) -> str | None:
    """Why a user other than root and `owner` (the app directory's owner) could replace the app
    directory, or a directory on the way to it: a world-writable directory on the way without
    the sticky bit, the app directory itself world-writable, or, below a sticky world-writable
    directory (`/tmp`), an entry of another user. None when nobody else could."""
    components = [*reversed(path.parents), path]
    shared: Path | None = None  # the last sticky world-writable directory on the way
    for component in components:
        try:
            st = os.lstat(component)
        except OSError:
            return None
        if shared is not None and st.st_uid not in (0, owner):
            return (f"{component} is another user's (uid {st.st_uid}) inside {shared}, which "
                    "every user may write")
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & stat.S_IWOTH:
            continue
        if component == path:
            return "every user may write into it"
        if not st.st_mode & stat.S_ISVTX:
            return f"every user may write into {component} (without the sticky bit)"
        shared = component
    return None


def _refused(path: Path, secret: list[Path]) -> str | None:
    parts = path.parts
    if path == Path("/"):
        return "it is the root directory"
    for system in [*SYSTEM_DIRS, *secret]:
        if system.is_relative_to(path):
            return f"it is or holds {system}"
        if path.is_relative_to(system) and system != Path("/root"):
            return f"it is inside {system}"
    if parts[1] == "root" and len(parts) > 2 and parts[2].startswith("."):
        return f"it is inside {Path(*parts[:3])}"
    if parts[1] == "home":
        if len(parts) <= 3:
            return f"it is or holds the home directories' dot directories ({path}/.*)"
        if parts[3].startswith("."):
            return f"it is inside {Path(*parts[:4])}"
    return None


def environment_dir(data_dir: Path, environment_key: str) -> Path:
    """`DATA_DIR/releases/<project>/<env>` for `environment_key` "project/env"."""
    parts = [_SAFE.sub("_", p) or "_" for p in environment_key.split("/")]
    return Path(data_dir).joinpath(RELEASES, *parts)


def release_dir(data_dir: Path, environment_key: str, release_id: int) -> Path:
    return environment_dir(data_dir, environment_key) / str(release_id)


@dataclass
class Copied:
    """A release's copy: where, and what went into it."""

    path: Path
    files: int = 0
    size: int = 0
    skipped: list[str] = field(default_factory=list)
    #: what the owner of the app directory could not read by its mode bits (not copied)
    unreadable: list[str] = field(default_factory=list)
    #: why `unreadable` was left out
    unreadable_why: str = ""
    reused: bool = False

    def describe(self) -> str:
        if self.reused:
            return f"its copy of the app directory, {self.path}"
        skipped = f"; not copied: {', '.join(self.skipped[:8])}" if self.skipped else ""
        more = f" and {len(self.skipped) - 8} more" if len(self.skipped) > 8 else ""
        unreadable = ""
        if self.unreadable:
            unreadable = (f"; not copied as {self.unreadable_why}: "
                          f"{', '.join(self.unreadable[:8])}")
            if len(self.unreadable) > 8:
                unreadable += f" and {len(self.unreadable) - 8} more"
        return (f"a copy of the app directory in {self.path} ({self.files} files, "
                f"{self.size / 1e6:.1f} MB{skipped}{more}{unreadable})")


@dataclass(frozen=True)
class _Pattern:
    glob: str
    directories_only: bool
    anchored: bool


def read_ignore_file(source: Path) -> list[_Pattern]:
    """The patterns of `source/.tetherignore` (none when it has no such file)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        return _read_ignore_at(fd)
    finally:
        os.close(fd)


def _parse_ignore(text: str) -> list[_Pattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        directories_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        if line:
            patterns.append(_Pattern(line, directories_only, anchored))
    return patterns


def _ignored(patterns: list[_Pattern], relative: str, name: str, is_dir: bool) -> bool:
    for pattern in patterns:
        if pattern.directories_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(relative if pattern.anchored else name, pattern.glob):
            return True
    return False


class _Owner:
    """Who a copy belongs to, and the modes of what is in it (see the module docstring)."""

    def __init__(self, account: AppAccount | None) -> None:
        self.account = account
        self.uid = 0 if account else os.geteuid()
        self.gid = account.gid if account else os.getegid()
        self.shared = account is not None  # readable by the account's group

    def dir_mode(self) -> int:
        return 0o750 if self.shared else 0o500

    def file_mode(self, source_mode: int) -> int:
        executable = bool(source_mode & 0o111)
        if self.shared:
            return 0o750 if executable else 0o640
        return 0o500 if executable else 0o400

    def apply(self, path: Path, mode: int | None) -> None:
        if self.shared:
            os.lchown(path, self.uid, self.gid)
        if mode is not None:
            os.chmod(path, mode)


def _prepare_parents(data_dir: Path, environment_key: str, owner: _Owner) -> Path:
    env_dir = environment_dir(data_dir, environment_key)
    top = Path(data_dir) / RELEASES
    env_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    account = owner.account
    for path in [top, *[p for p in env_dir.parents if p.is_relative_to(top) and p != top]]:
        if account is not None:
            os.chown(path, 0, account.apps_gid)
            os.chmod(path, 0o710)  # noqa: S103 - tether-apps may traverse, not list
        else:
            os.chmod(path, 0o700)
    if account is not None:
        os.chown(env_dir, 0, account.gid)
        os.chmod(env_dir, 0o750)  # noqa: S103 - the environment's own group only
    else:
        os.chmod(env_dir, 0o700)
    return env_dir


def make_copy(data_dir: Path, environment_key: str, release_id: int, source: Path | None,
              account: AppAccount | None) -> Copied:
    """The release's copy of `source` (an empty directory when the project has none); an
    existing complete copy is reused (a release started again)."""
    owner = _Owner(account)
    try:
        env_dir = _prepare_parents(Path(data_dir), environment_key, owner)
    except OSError as exc:
        raise CopyFailed(f"could not prepare {environment_dir(data_dir, environment_key)} for "
                         f"the release's copy: {exc.strerror or exc}") from None
    target = env_dir / str(release_id)
    if target.is_dir() and not target.is_symlink():
        return Copied(target, reused=True)
    if source is not None:
        refused = refused_location(source, Path(data_dir))
        if refused:
            raise CopyFailed(f"the app directory {source} is refused: {refused}, and the copy "
                             "would give its files to the app: create the project again with "
                             "the application's own directory as --app-dir (e.g. /srv/shop)")
    partial = env_dir / f".{release_id}.partial-{secrets.token_hex(4)}"
    copied = Copied(target)
    try:
        partial.mkdir(mode=0o700)
        if source is not None:
            _copy_tree(Path(source), partial, Path(data_dir), owner, copied)
        owner.apply(partial, owner.dir_mode())
        os.rename(partial, target)
    except CopyFailed:
        _remove_tree(partial)
        raise
    except OSError as exc:
        _remove_tree(partial)
        where = exc.filename or source
        raise CopyFailed(f"could not copy the app directory {source} for release {release_id} "
                         f"({where}: {exc.strerror or exc}): make it readable for Tether, or "
                         f"leave what cannot be read out with {IGNORE_FILE}") from None
    return copied


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: what changed under the copy (a swapped-in symlink, a vanished entry): skipped, never followed
_RACED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO)


class _Reader:
    """Whether the owner of the app directory may read a file by its mode bits: only what they
    could read goes into the copy, which the app (another user) reads. Root makes the copy and
    could read anything; without this, `--app-dir` would hand the app root-only files.

    When the owner is root, "what they may read" would be everything: then only what every
    user may read goes in ("other" may read a file, and read and enter a directory), so an app
    directory such as `/var/backups` hands the app nothing a local user could not read."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.name = f"uid {uid}"
        self.groups: set[int] = set()
        with contextlib.suppress(KeyError, OSError):
            entry = pwd.getpwuid(uid)
            self.name = entry.pw_name
            self.groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))

    def reads(self, st: os.stat_result, directory: bool) -> bool:
        need = 0o5 if directory else 0o4  # a directory is listed and entered
        if self.uid == 0:
            bits = st.st_mode  # root reads anything: only what everybody may read
        elif st.st_uid == self.uid:
            bits = st.st_mode >> 6
        elif st.st_gid in self.groups:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & need == need

    def says_why(self) -> str:
        """Why what `reads` refused was left out (for the deployment log)."""
        if self.uid == 0:
            return ("the app directory is root's, and only what every user may read is copied "
                    "from a directory of root's (make them readable for all, e.g. chmod o+r, "
                    "if the app needs them)")
        return f"{self.name}, the app directory's owner, may not read them"


def _read_ignore_at(dir_fd: int) -> list[_Pattern]:
    """`read_ignore_file` for an open directory, never following a symlinked `.tetherignore`."""
    try:
        fd = os.open(IGNORE_FILE, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return []
        text = f.read(1 << 20).decode("utf-8", errors="replace")
    return _parse_ignore(text)


def _copy_tree(source: Path, target: Path, data_dir: Path, owner: _Owner,
               copied: Copied) -> None:
    """Copy `source` into `target`, walking by open directories (each opened relative to its
    parent's descriptor, without following symlinks) and copying from the file descriptor
    whose type was checked: whoever can write the app directory cannot swap a directory or a
    file for a symlink during the copy and make Tether copy what it points to."""
    try:
        top = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise CopyFailed(f"the app directory {source} is not a directory: create the project "
                         "with another --app-dir") from None
    except OSError as exc:
        raise CopyFailed(f"the app directory {source} cannot be read ({exc.strerror}): fix "
                         "it, or create the project with another --app-dir") from None
    # (open source dir, target dir, path relative to the app dir, names left to copy)
    stack: list[tuple[int, Path, str, list[str]]] = []
    try:
        # what was opened, should the app directory (a symlink) have been re-pointed since
        # make_copy checked it
        with contextlib.suppress(OSError):
            refused = refused_location(os.readlink(f"/proc/self/fd/{top}"), data_dir)
            if refused:
                raise CopyFailed(f"the app directory {source} is refused: {refused}: create "
                                 "the project again with the application's own directory as "
                                 "--app-dir (e.g. /srv/shop)")
        try:
            data = os.stat(data_dir)
            data_id: tuple[int, int] | None = (data.st_dev, data.st_ino)
        except OSError:
            data_id = None
        reader = _Reader(os.fstat(top).st_uid)
        patterns = _read_ignore_at(top)
        stack.append((top, target, "", sorted(os.listdir(top), reverse=True)))
        directories: list[Path] = []
        while stack:
            dir_fd, dst_dir, rel_dir, names = stack[-1]
            if not names:
                stack.pop()
                os.close(dir_fd)
                continue
            name = names.pop()
            relative = f"{rel_dir}{name}"
            dst = dst_dir / name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            is_dir = stat.S_ISDIR(st.st_mode)
            if name in SKIPPED_NAMES or _ignored(patterns, relative, name, is_dir):
                copied.skipped.append(relative + ("/" if is_dir else ""))
                continue
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=dir_fd), dst)
                owner.apply(dst, None)
            elif is_dir:
                child = _open_at(name, dir_fd, _DIR_FLAGS, copied, relative + "/")
                if child is None:
                    continue
                try:
                    st = os.fstat(child)
                    if (st.st_dev, st.st_ino) == data_id or _holds_pyvenv_cfg(child):
                        copied.skipped.append(relative + "/")
                        os.close(child)
                        continue
                    if not reader.reads(st, directory=True):
                        copied.unreadable.append(relative + "/")
                        os.close(child)
                        continue
                    entries = sorted(os.listdir(child), reverse=True)
                    dst.mkdir(mode=0o700)
                except BaseException:
                    os.close(child)
                    raise
                directories.append(dst)
                stack.append((child, dst, relative + "/", entries))
            elif stat.S_ISREG(st.st_mode):
                fd = _open_at(name, dir_fd, _FILE_FLAGS, copied, relative)
                if fd is None:
                    continue
                with os.fdopen(fd, "rb") as fsrc:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        copied.skipped.append(relative)
                        continue
                    if not reader.reads(st, directory=False):
                        copied.unreadable.append(relative)
                        continue
                    with open(dst, "xb") as fdst:
                        shutil.copyfileobj(fsrc, fdst)
                owner.apply(dst, owner.file_mode(st.st_mode))
                copied.files += 1
                copied.size += st.st_size
            else:
                copied.skipped.append(relative)
        if copied.unreadable:
            copied.unreadable_why = reader.says_why()
        for directory in reversed(directories):  # read-only last: they were written into first
            owner.apply(directory, owner.dir_mode())
    finally:
        for dir_fd, *_rest in stack:
            with contextlib.suppress(OSError):
                os.close(dir_fd)


def _open_at(name: str, dir_fd: int, flags: int, copied: Copied, relative: str) -> int | None:
    """`name` opened in `dir_fd`; None (noted as not copied) when it changed since it was
    listed: a symlink now (O_NOFOLLOW), no longer a directory, or gone."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _RACED:
            copied.skipped.append(relative)
            return None
        raise


def _holds_pyvenv_cfg(dir_fd: int) -> bool:
    try:
        return stat.S_ISREG(os.stat("pyvenv.cfg", dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _remove_tree(path: Path) -> None:
    """Remove a copy, read-only directories included (without root they are 0500)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    if os.geteuid() != 0:
        for root, dirs, _files in os.walk(path):
            for name in dirs:
                with contextlib.suppress(OSError):
                    p = Path(root, name)
                    if not p.is_symlink():
                        p.chmod(0o700)
        with contextlib.suppress(OSError):
            path.chmod(0o700)
    shutil.rmtree(path, ignore_errors=True)


def copies(data_dir: Path, environment_key: str) -> list[int]:
    """The release ids that have a complete copy."""
    env_dir = environment_dir(data_dir, environment_key)
    try:
        return sorted(int(p.name) for p in env_dir.iterdir() if p.name.isdigit())
    except OSError:
        return []


def prune(data_dir: Path, environment_key: str, keep: set[int]) -> list[int]:
    """Remove the copies (and half-made copies) of releases not in `keep`; returns their ids."""
    env_dir = environment_dir(data_dir, environment_key)
    removed = []
    try:
        entries = list(env_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        partial = _PARTIAL.match(entry.name)
        release_id = int(entry.name) if entry.name.isdigit() else (
            int(partial.group(1)) if partial else None)
        if release_id is None or release_id in keep:
            continue
        _remove_tree(entry)
        if not partial:
            removed.append(release_id)
    return sorted(removed)
