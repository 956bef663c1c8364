"""The system users applications run as, and what they may reach.

When Tether runs as root, each environment's processes run as a system user of their own,
`tether-<10 hex digits>` (a hash of the data dir and the environment's id, so two control planes
on one machine never share one), made on the environment's first deploy with

    useradd --system --user-group --no-create-home --home-dir /nonexistent
            --shell /usr/sbin/nologin --groups tether-apps --comment "Tether app, ..."

Its own group is the group of its release copies (see `releases.py`), which no other user may
enter; the shared group `tether-apps` (made once) is what the POSIX ACLs below name:

- the data dir: `tether-apps` may traverse it (`--x`) but not list it, and is denied (`---`)
  every top-level entry that anybody else could read (a `clusters.toml` left 0644, a directory
  0755…), except `releases/` and the media directories, which it may traverse. The secret key,
  the store and its -wal/-shm, the logs and the embedded servers' data are private to their owner
  (0600/0700) anyway;
- the directories above the data dir and above a media directory, where "other" may not
  traverse them: `tether-apps` gets `--x` there and nothing more (e.g. `/root`, 0700, when the
  clone lives under it). This stays shared: every environment's user takes that way to its
  release copy (`releases/` is root's, in group `tether-apps`, 0710);
- the directories above each program the app command names (following its symlinks: a venv's
  `python` leads into the interpreter it was made from), where "other" may not traverse them:
  the environment's own group (`account.gid`) gets `--x` there;
- a Python interpreter's installation (a venv and the base it was made from) that "other" may not
  read: the environment's own group may list and enter its top, and read in it what "other" may
  (`_readable_tree`): never a file "other" may not read.

A program is only acted on, and only read (its `#!` line, a venv's pyvenv.cfg: a few KiB at
most, from a regular file opened without following a link or blocking on a FIFO, never in
/proc, /sys or /dev, and before the module's lock is taken), when nobody but root can change it
(`_trusted`: every component of its real path, and of each symlink hop, root's and writable by
nobody else, as sudo's secure path) and it neither is, holds nor sits in the data dir or the
config dir of the user Tether runs as: the app's PATH, `#!` lines and a venv's pyvenv.cfg are
the app's (or a developer's) word, and an app can write a fake venv whose `home` names the data
dir.

Nothing else is opened. Without root Tether cannot switch users: the apps run as Tether's own
user, and it says so once in its log.

What a user's own group is given outside the data dir (the directories above its programs, a
private Python installation) is recorded in `GRANTS_DIR`; `remove_accounts` takes it back with
the user: a group made later with the same gid would inherit those entries.

Users are made under a lock (within this process) and retried while another process holds the
passwd lock (`useradd` exits 10), so concurrent deploys are safe; a user made meanwhile by another
process is simply used.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import OperationError
from tether.runtime import acl
from tether.runtime.command import named_programs

log = logging.getLogger("tether.runtime")

APPS_GROUP = "tether-apps"
NAME_PREFIX = "tether-"
_COMMENT = "Tether app, environment {env_id}, {data_dir}"
_COMMENT_RE = re.compile(r"^Tether app, environment \d+, (/.*)$")
_NAME_RE = re.compile(r"^tether-[0-9a-f]{10}$")
#: top-level entries of the data dir apps may traverse (to their release copy, their media)
REACHABLE_TOP = ("releases", "media")
#: what each app user's own group was given outside the data dir (`make_reachable`), one JSON
#: file per user, root's alone: removing the user takes those ACL entries back, since a group
#: made later with the same gid would inherit them. System-wide, as the users are (a data dir
#: may be gone before its users: they outlive it until removed).
GRANTS_DIR = Path("/var/lib/tether/app-users")

_lock = threading.Lock()
_warned = False


class AccountError(OperationError):
    """An application's system user could not be made or prepared; the message says what to do."""


@dataclass(frozen=True)
class AppAccount:
    """The system user an environment's processes run as."""

    name: str
    uid: int
    gid: int  # its own group: the group of its release copies
    apps_gid: int  # the shared `tether-apps` group (a supplementary group)

    @property
    def groups(self) -> tuple[int, ...]:
        return (self.apps_gid,)


def switches_users() -> bool:
    """Whether apps run as users of their own: only root can switch users."""
    return os.geteuid() == 0


def say_not_root_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("Tether does not run as root, so it cannot switch users: applications run "
                    "as Tether's own user (%s) and can read what it can (see README, "
                    "\"What an application needs\")", _current_user())


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def account_name(data_dir: Path, environment_id: int) -> str:
    """`tether-` and 10 hex digits: within useradd's 32 characters, unique per data dir and
    environment (two control planes on one machine have environments with the same ids)."""
    digest = hashlib.sha256(f"{Path(data_dir).resolve()}\0{environment_id}".encode()).hexdigest()
    return NAME_PREFIX + digest[:10]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60,
                          stdin=subprocess.DEVNULL, env={"PATH": _SBIN_PATH, "LC_ALL": "C"})


_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOCKED = 10  # useradd/groupadd/userdel: could not lock the passwd or group file
_RETRY_FOR = 30.0


def _retrying(args: list[str], exists: Callable[[], bool]) -> None:
    """Run useradd/groupadd until it succeeds or `exists()` says the result is there (made by a
    concurrent process); retried while another process holds the passwd lock."""
    deadline = time.monotonic() + _RETRY_FOR
    delay = 0.05
    while True:
        if exists():
            return
        try:
            proc = _run(args)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AccountError(f"could not run {args[0]}: {exc}; install the `passwd` package "
                               "(useradd, groupadd) or run Tether as a user that cannot switch "
                               "users") from None
        if proc.returncode == 0 or exists():
            return
        if proc.returncode != _LOCKED or time.monotonic() > deadline:
            detail = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
            raise AccountError(f"could not make the system user or group for the application "
                               f"({' '.join(args[:1] + args[-1:])}: {detail})")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def apps_group() -> int:
    """The gid of `tether-apps`, made when missing."""
    _retrying(["groupadd", "--system", APPS_GROUP], lambda: _gid_of(APPS_GROUP) is not None)
    gid = _gid_of(APPS_GROUP)
    assert gid is not None
    return gid


def ensure_account(data_dir: Path, environment_id: int) -> AppAccount | None:
    """The environment's system user, made when missing; None when Tether is not root (it runs
    the app as itself, and says so once)."""
    if not switches_users():
        say_not_root_once()
        return None
    name = account_name(data_dir, environment_id)
    with _lock:
        apps_gid = apps_group()

        def made() -> bool:
            try:
                pwd.getpwnam(name)
            except KeyError:
                return False
            return True

        comment = _COMMENT.format(env_id=environment_id,
                                  data_dir=str(Path(data_dir).resolve()).replace(":", "_"))
        _retrying(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                   "/nonexistent", "--shell", "/usr/sbin/nologin", "--groups", APPS_GROUP,
                   "--comment", comment, name], made)
        entry = pwd.getpwnam(name)
        members = grp.getgrgid(apps_gid).gr_mem
    if name not in members:  # made by hand, or by an older Tether: the ACLs name the group
        _retrying(["usermod", "--append", "--groups", APPS_GROUP, name],
                  lambda: name in grp.getgrgid(apps_gid).gr_mem)
    return AppAccount(name=name, uid=entry.pw_uid, gid=entry.pw_gid, apps_gid=apps_gid)


def accounts_of(data_dir: Path | None = None) -> list[tuple[str, Path]]:
    """The app users Tether made (for any data dir, or for `data_dir`), with their data dir."""
    found = []
    wanted = Path(data_dir).resolve() if data_dir is not None else None
    for entry in pwd.getpwall():
        match = _COMMENT_RE.match(entry.pw_gecos)
        if not (_NAME_RE.match(entry.pw_name) and match):
            continue
        where = Path(match.group(1))
        if wanted is None or where == wanted:
            found.append((entry.pw_name, where))
    return found


def remove_accounts(names: Iterable[str]) -> list[str]:
    """`userdel` each of these app users (their own group goes with them), and take back the
    ACL entries their group was given (`GRANTS_DIR`); returns those removed. A user with
    processes still running is left, with its access (userdel refuses)."""
    removed = []
    for name in names:
        if not _NAME_RE.match(name):
            continue
        with _lock:
            try:
                gid: int | None = pwd.getpwnam(name).pw_gid
            except KeyError:
                gid = None
            if _run(["userdel", name]).returncode == 0:
                _take_back(name, gid)
                removed.append(name)
    return removed


def _grants_file(name: str) -> Path:
    return GRANTS_DIR / f"{name}.json"


def _grants(name: str) -> dict[str, Any]:
    """The record of `name` (`GRANTS_DIR`); an empty one when it has none (or it is unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(_grants_file(name).read_text())
        if isinstance(found, dict):
            return found
    return {"gid": None, "paths": [], "trees": []}


def _record_grants(account: AppAccount, paths: Iterable[Path], trees: Iterable[Path]) -> None:
    """Add to what `account`'s own group was given (under `_lock`)."""
    if not _NAME_RE.match(account.name):
        return
    known = _grants(account.name)
    wanted_paths = sorted({*map(str, known.get("paths") or []), *map(str, paths)})
    wanted_trees = sorted({*map(str, known.get("trees") or []), *map(str, trees)})
    if (known.get("gid") == account.gid and wanted_paths == known.get("paths")
            and wanted_trees == known.get("trees")):
        return
    GRANTS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = _grants_file(account.name)
    temporary = target.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"gid": account.gid, "paths": wanted_paths, "trees": wanted_trees}, out)
    os.replace(temporary, target)


def _take_back(name: str, gid: int | None) -> None:
    """Remove the ACL entries of a removed user's group from what it was given; a path
    gone or changed meanwhile is skipped (never followed through a link)."""
    known = _grants(name)
    gid = gid if gid is not None else known.get("gid")
    if isinstance(gid, int):
        for path in known.get("paths") or []:
            with contextlib.suppress(OSError):
                acl.remove_group(Path(path), gid)
        for top in known.get("trees") or []:
            with contextlib.suppress(OSError):
                acl.remove_group(Path(top), gid)
            for root, dirs, files in os.walk(top):  # never into a linked directory
                for entry in (*dirs, *files):
                    with contextlib.suppress(OSError):
                        acl.remove_group(Path(root, entry), gid)
    _grants_file(name).unlink(missing_ok=True)


# -- reachability --------------------------------------------------------------------------------


def _others_may(path: Path, bits: int) -> bool:
    try:
        return os.stat(path).st_mode & bits == bits
    except OSError:
        return True  # nothing there to open


def _traverse_down_to(path: Path, apps_gid: int, stop_at: Iterable[Path] = ()) -> list[Path]:
    """Let group `apps_gid` traverse every directory above `path` that "other" may not;
    those directories."""
    stops = {Path(p) for p in stop_at}
    opened = []
    for parent in reversed(path.parents):
        if parent in stops:
            continue
        if not _others_may(parent, stat.S_IXOTH):
            acl.set_group(parent, apps_gid, acl.EXECUTE)
            opened.append(parent)
    return opened


def _symlink_chain(path: Path) -> list[Path]:
    """`path` and every path its symlinks lead through, to the file itself."""
    chain = [path]
    current = path
    for _ in range(40):
        try:
            target = os.readlink(current)
        except OSError:
            break
        current = (current.parent / target) if not os.path.isabs(target) else Path(target)
        chain.append(current)
    real = path.resolve()
    if real not in chain:
        chain.append(real)
    return chain


def _trusted(path: Path) -> Path | None:
    """The real path of `path` when nobody but root can change what it is, else None: like
    sudo's secure path, every component (after resolving) is root's and writable by nobody
    else, but for a sticky directory (/tmp) above a component, where nobody else may rename or
    remove root's entries."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, RuntimeError):
        return None
    components = [*reversed(real.parents), real]
    for index, component in enumerate(components):
        try:
            st = os.lstat(component)
        except OSError:
            return None
        if st.st_uid != 0 or stat.S_ISLNK(st.st_mode):
            return None  # not root's, or changed since it was resolved
        sticky_above = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and \
            index < len(components) - 1
        if st.st_mode & 0o022 and not sticky_above:
            return None
    return real


def _forbidden(data_dir: Path) -> list[Path]:
    """What is never opened for apps, nor anything holding it or in it: the data dir and the
    config dir of the user Tether runs as (its CLI token)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    found = [Path(data_dir).resolve()]
    with contextlib.suppress(OSError, RuntimeError):
        found.append(Path(os.path.realpath(Path(base) / "tether")))
    return found


def _touches(path: Path, forbidden: Iterable[Path]) -> bool:
    return any(path.is_relative_to(f) or f.is_relative_to(path) for f in forbidden)


def _trusted_chain(program: Path, forbidden: list[Path]) -> list[Path] | None:
    """The real paths of `program` and of every hop its symlinks lead through (each hop's
    directory resolved), when every one is trusted (`_trusted`) and none touches a forbidden
    path; None otherwise (nothing of it is opened then)."""
    hops = []
    for hop in _symlink_chain(program):
        parent = _trusted(hop.parent)
        if parent is None:
            return None
        real = parent / hop.name
        try:
            st = os.lstat(real)
        except OSError:
            return None
        if st.st_uid != 0 or (not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022):
            return None
        if _touches(real, forbidden) or _touches(parent, forbidden):
            return None
        hops.append(real)
    final = _trusted(program)
    if final is None or _touches(final, forbidden):
        return None
    return list(dict.fromkeys([*hops, final]))


def _python_homes(chain: list[Path], forbidden: list[Path]) -> list[Path]:
    """The installation a Python interpreter reads: its venv (`bin/..` holding pyvenv.cfg) and
    the base install its `home` names; the prefix above `bin/` otherwise. `chain` is the
    interpreter's trusted hops (`_trusted_chain`); a pyvenv.cfg, and the home it names, count
    only when they are trusted too and touch nothing forbidden (an app could write a venv that
    names the data dir as its home)."""
    homes = []
    for path in chain:
        prefix = path.parent.parent
        cfg = prefix / "pyvenv.cfg"
        if cfg.is_file():
            if _trusted(cfg) != cfg:
                continue
            homes.append(prefix)
            text = (_read_head(cfg, 64 * 1024) or b"").decode("utf-8", errors="replace")
            for line in text.splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and os.path.isabs(value.strip()):
                    home = _trusted(Path(value.strip()).parent)
                    if home is not None:
                        homes.append(home)
        elif path.parent.name == "bin":
            homes.append(prefix)
    return [h for h in dict.fromkeys(homes)
            if h != Path("/") and h.is_dir() and _trusted(h) == h and not _touches(h, forbidden)]


def _readable_tree(top: Path, gid: int) -> bool:
    """Let group `gid` into a tree "other" may not read (a Python installation): list and enter
    its top, and below it exactly what "other" may use: files "other" may read (read, and
    execute where "other" may) and directories "other" may enter (with "other"'s bits). A file
    "other" may not read (a 0600 key or token left in the installation) or a directory "other"
    may not enter stays its owner's: an entry an older Tether granted there is set to `---`.
    Never into a directory somebody but root may change (its entries could be swapped for
    links)."""
    if _others_may(top, stat.S_IROTH | stat.S_IXOTH):
        return False
    acl.set_group(top, gid, acl.READ | acl.EXECUTE)
    for root, dirs, files in os.walk(top):
        for name in files:
            path = Path(root, name)
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    _as_for_others(path, st, gid)
        kept = []
        for name in dirs:
            path = Path(root, name)
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISDIR(st.st_mode) and _as_for_others(path, st, gid) and \
                        _root_only(path):
                    kept.append(name)
        dirs[:] = kept
    return True


def _as_for_others(path: Path, st: os.stat_result, gid: int) -> bool:
    """Give group `gid` on `path` what "other" may do there when "other" may read it (a file)
    or enter it (a directory), and say so; otherwise take back an entry granted before."""
    need = stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else stat.S_IROTH
    if st.st_mode & need:
        acl.set_group(path, gid, st.st_mode & (acl.READ | acl.EXECUTE))
        return True
    if acl.group_permissions(path, gid):
        acl.set_group(path, gid, 0)
    return False


def _root_only(directory: Path) -> bool:
    """A directory (not a link) that only root may change."""
    try:
        st = directory.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def _find(word: str, path_env: str) -> Path | None:
    if os.path.isabs(word):
        return Path(word) if os.path.isfile(word) else None
    if "/" not in word:
        where = shutil.which(word, path=path_env)
        return Path(where) if where else None
    return None  # relative to the release's copy: reachable with it


#: where a "regular file" may block its reader or change something by being read (/proc/kmsg)
_PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
_HEAD_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_head(path: Path, limit: int) -> bytes | None:
    """At most `limit` bytes from the start of `path`, when it is a regular file that is not a
    link (opened without following one, without blocking on a FIFO, and checked on the
    descriptor: the path may have been swapped since it was looked at) and not in /proc, /sys
    or /dev (a read of /proc/kmsg blocks, and takes the kernel's messages); None otherwise."""
    if any(path.is_relative_to(p) for p in _PSEUDO_FILE_SYSTEMS):
        return None
    try:
        fd = os.open(path, _HEAD_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _shebang(program: Path, path_env: str) -> Path | None:
    """The interpreter a script names on its `#!` line (`/usr/bin/env NAME`: NAME on PATH).
    `program` is a real path `_trusted_chain` accepted: only then is it read (see
    `_read_head`)."""
    head = _read_head(program, 256)
    if head is None:
        return None
    first = head.split(b"\n", 1)[0]
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env":
        names = [w for w in words[1:] if not w.startswith("-")]
        return _find(names[0], path_env) if names else None
    return _find(words[0], path_env)


def resolve_programs(command: str, path_env: str,
                     forbidden: list[Path] | None = None) -> list[tuple[Path, list[Path] | None]]:
    """The programs an app command names, found as the app would find them (its PATH), and the
    interpreters of those that are scripts (`#!`), each with its trusted chain
    (`_trusted_chain`) or None when it is not trusted. Only a trusted program is read (for its
    `#!` line): a path an app may write is never opened by root, so it cannot hand root a FIFO
    to block on."""
    forbidden = forbidden if forbidden is not None else []
    found: dict[Path, list[Path] | None] = {}
    for word in named_programs(command):
        program = _find(word, path_env)
        if program is None or program in found:
            continue
        chain = _trusted_chain(program, forbidden)
        found[program] = chain
        if chain is None:
            continue
        interpreter = _shebang(chain[-1], path_env)
        if interpreter is not None and interpreter not in found:
            found[interpreter] = _trusted_chain(interpreter, forbidden)
    return list(found.items())


def make_reachable(account: AppAccount, data_dir: Path, command: str | None, path_env: str,
                   directories: Iterable[Path] = ()) -> None:
    """Open exactly what the app's user needs (see the module docstring): the way into the data
    dir (and nothing in it but its release copies and media), the way to `directories` (its
    media), and the programs its command names with their interpreter's installation."""
    data_dir = Path(data_dir).resolve()
    gid = account.apps_gid
    try:
        # programs are looked at (and trusted ones read) before the lock, never under it
        forbidden = _forbidden(data_dir)
        programs = []
        for program, chain in resolve_programs(command or "", path_env, forbidden):
            if chain is None:
                log.warning("the program %s is not opened for the application's user %s: "
                            "it, or a directory above it, is not root's or writable by "
                            "others, or it is in Tether's data or config dir", program,
                            account.name)
                continue
            homes = (_python_homes(chain, forbidden) if chain[-1].name.startswith("python")
                     else [])
            programs.append((chain, homes))
        with _lock:
            _traverse_down_to(data_dir / "releases", gid)
            acl.set_group(data_dir, gid, acl.EXECUTE)  # traverse, never list
            for entry in data_dir.iterdir():
                if entry.name in REACHABLE_TOP:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = entry.lstat()
                    if stat.S_ISLNK(st.st_mode) or st.st_mode & 0o007 == 0:
                        continue  # private to its owner already (or a link, never followed)
                    if acl.group_permissions(entry, gid) is None:
                        acl.set_group(entry, gid, 0)
            for directory in directories:
                directory = Path(directory)
                _traverse_down_to(directory, gid)
                for parent in directory.parents:
                    if parent.parent == data_dir and parent.name not in REACHABLE_TOP:
                        acl.set_group(parent, gid, acl.EXECUTE)  # a media base elsewhere
            opened: list[Path] = []
            trees: list[Path] = []
            for chain, homes in programs:
                for hop in chain:
                    opened += _traverse_down_to(hop, account.gid)
                for home in homes:
                    opened += _traverse_down_to(home, account.gid)
                    if _readable_tree(home, account.gid):
                        trees.append(home)
            try:
                _record_grants(account, opened, trees)
            except OSError as exc:  # the app runs all the same; its removal cannot take back
                log.warning("could not record what %s's group was given in %s: %s",
                            account.name, GRANTS_DIR, exc.strerror or exc)
    except acl.AclUnsupported as exc:
        raise AccountError(f"{exc.strerror}: the application's user {account.name} cannot be "
                           "given access to its release and interpreter; mount that file "
                           "system with ACL support, or make those paths readable") from None
    except OSError as exc:
        raise AccountError(f"could not open the way to the application for its user "
                           f"{account.name}: {exc.strerror or exc} ({exc.filename})") from None
