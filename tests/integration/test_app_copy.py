"""Issue 8, second review, findings 3 and 4: the release's copy of the app directory (made by
root, readable by the app's user) may not hand the app files it should not read.

- Finding 4: the copy walked by path, so whoever can write the app directory could swap a
  subdirectory for a symlink to a root-only directory during the copy and have it copied.
- Finding 3: any directory was accepted as app directory (`/root/.config` held the admin token,
  `/etc` the shadow file), and every file was re-moded readable for the app, 0600 ones included.

Runs as root (as the tests do in CI): the copy is made as `tether up` makes it. Nothing here
reads `/etc` or `/root/.config`: those are only refused, a stand-in is copied instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.actions import clusters, projects
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.runtime import appcopy
from tether.runtime.appcopy import CopyFailed, make_copy
from tether.store.db import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files of other users")

NOBODY = 65534
SECRET = "PRIVATE-KEY-h9"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def ctx(data_dir: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    store.migrate()
    context = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir,
                      actor="alice")
    media = data_dir / "media"
    clusters.add_cluster(context, "local-files", "local", f"file://{media}", name="media",
                         settings={"base_dir": str(media),
                                   "public_url": "http://127.0.0.1:8071/"})
    yield context
    store.dispose()


def _leaked(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()
            and SECRET in p.read_text(errors="replace")]


def test_a_directory_swapped_for_a_symlink_during_the_copy_is_never_followed(
        tmp_path: Path, data_dir: Path) -> None:
    """The app directory's owner renames `s/` away and puts a symlink to a root-only directory
    in its place as soon as the copy has made its `s/`: the secret never reaches a copy."""
    secret = tmp_path / "rootonly"
    secret.mkdir(mode=0o700)
    (secret / "x").write_text(SECRET)
    (secret / "x").chmod(0o600)
    for trial in range(12):
        src = tmp_path / f"app{trial}"
        (src / "s").mkdir(parents=True)
        (src / "s" / "x").write_text("harmless")
        for i in range(2000):
            (src / f"f{i}").write_text("x")
        env_key = f"p/t{trial}"
        env_dir = appcopy.environment_dir(data_dir, env_key)
        done = threading.Event()

        def attacker(src: Path = src, env_dir: Path = env_dir, done: threading.Event = done
                     ) -> None:
            while not done.is_set():
                try:
                    made = [n for n in os.listdir(env_dir) if n.startswith(".1.partial-")
                            and os.path.isdir(env_dir / n / "s")]
                except OSError:
                    made = []
                if made:
                    os.rename(src / "s", src / "s_old")
                    os.symlink(secret, src / "s")
                    return

        thread = threading.Thread(target=attacker)
        thread.start()
        try:
            copied = make_copy(data_dir, env_key, 1, src, None)
        finally:
            done.set()
            thread.join()
        assert _leaked(copied.path) == [], f"trial {trial}: the root-only file was copied"


def test_app_dirs_in_system_or_secret_locations_are_refused_at_create(
        ctx: Context, tmp_path: Path, unique_id: str) -> None:
    links = {}
    for target in ("/root/.config", "/etc"):
        link = tmp_path / f"link{len(links)}"
        link.symlink_to(target)
        links[target] = str(link)
    for value in ("/root/.config", "/etc", links["/root/.config"], links["/etc"], "/root",
                  "/var/lib", "/proc"):
        with pytest.raises(UserError, match="refused"):
            projects.create_project(ctx, f"h9{unique_id}", app_dir=value)
    with pytest.raises(UserError):
        projects.create_project(ctx, f"h9{unique_id}", app_dir="/")
    # what stays allowed: an app directory of its own, and a clone under /root (quick start)
    app = tmp_path / "app"
    app.mkdir()
    projects.create_project(ctx, f"h9a{unique_id}", app_dir=str(app))
    clone = Path(tempfile.mkdtemp(prefix="tether-h9-clone-", dir="/root"))
    try:
        projects.create_project(ctx, f"h9b{unique_id}", app_dir=str(clone))
    finally:
        shutil.rmtree(clone)


def test_an_app_dir_re_pointed_into_a_secret_location_is_refused_at_deploy(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's app directory is a symlink, allowed when the project was created, later
    re-pointed: the copy each deploy makes checks it again. A CLI config dir of its own stands
    for `/root/.config` (copied by the old code, so nothing real is read there)."""
    config_home = tmp_path / "config"
    (config_home / "tether").mkdir(parents=True)
    (config_home / "tether" / "config.json").write_text(SECRET)
    (config_home / "tether" / "config.json").chmod(0o600)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("print('hi')\n")
    link = tmp_path / "current"
    link.symlink_to(app)
    projects._check_app_dir(data_dir, str(link))  # allowed at create
    assert (make_copy(data_dir, "p/test", 1, link, None).path / "app.py").is_file()
    for n, target in enumerate([config_home / "tether", config_home, Path("/root/.config"),
                                Path("/etc")], start=2):
        link.unlink()
        link.symlink_to(target)
        with pytest.raises(CopyFailed, match="refused"):
            make_copy(data_dir, "p/test", n, link, None)
        assert not appcopy.release_dir(data_dir, "p/test", n).exists()


def test_what_the_app_dirs_owner_may_not_read_is_not_copied(
        tmp_path: Path, data_dir: Path) -> None:
    """Root makes the copy, the app reads it: only what the app directory's owner may read by
    the mode bits goes in, and the deploy log says what was left out."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "public.txt").write_text("ok")
    private = app / "theirs.key"  # another user's 0600 file inside a root-owned app dir
    private.write_text(SECRET)
    private.chmod(0o600)
    os.chown(private, NOBODY, NOBODY)
    shared = app / "theirs.txt"
    shared.write_text("ok")
    shared.chmod(0o644)
    os.chown(shared, NOBODY, NOBODY)
    closed = app / "closed"  # another user's private directory
    closed.mkdir(mode=0o700)
    (closed / "k").write_text(SECRET)
    os.chown(closed, NOBODY, NOBODY)
    copied = make_copy(data_dir, "p/test", 1, app, None)
    assert sorted(p.name for p in copied.path.iterdir()) == ["public.txt", "theirs.txt"]
    assert _leaked(copied.path) == []
    assert "theirs.key" in copied.describe() and "closed/" in copied.describe()

    # an app directory owned by a developer (not root): root's own 0600 file stays out
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY, NOBODY)
    (mine / "app.py").write_text("print('hi')\n")
    os.chown(mine / "app.py", NOBODY, NOBODY)
    (mine / "token.json").write_text(SECRET)
    (mine / "token.json").chmod(0o600)
    copied = make_copy(data_dir, "p/test", 2, mine, None)
    assert sorted(p.name for p in copied.path.iterdir()) == ["app.py"]
    assert "token.json" in copied.describe()


def test_a_root_owned_app_dir_hands_the_app_only_what_every_user_may_read(
        tmp_path: Path, data_dir: Path) -> None:
    """Issue 8, third review, finding 1: the copy took what the app directory's owner may read,
    and when that owner is root, that was everything: a developer set `--app-dir /var/backups`
    and deployed `cat shadow.bak`. Now a root-owned app directory gives only what every user may
    read ("other" may read a file, read and enter a directory); the README's quick start (a
    clone under /root with 0644 files) keeps its files. Here a stand-in for /var/backups."""
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o755)
    backups.chmod(0o755)
    for name, mode in [("shadow.bak", 0o600), ("group.bak", 0o640), ("app.py", 0o644),
                       ("run.sh", 0o755)]:
        (backups / name).write_text(SECRET if mode & 0o004 == 0 else "print('hi')\n")
        (backups / name).chmod(mode)
    for name, mode in [("private", 0o700), ("traverse-only", 0o711), ("lib", 0o755)]:
        (backups / name).mkdir()
        (backups / name / "mod.py").write_text(SECRET if mode != 0o755 else "x = 1\n")
        (backups / name / "mod.py").chmod(0o644)
        (backups / name).chmod(mode)
    assert os.stat(backups).st_uid == 0
    assert appcopy.refused_location(backups, data_dir) is None  # allowed, as /var/backups is
    copied = make_copy(data_dir, "p/test", 1, backups, None)
    assert sorted(p.name for p in copied.path.iterdir()) == ["app.py", "lib", "run.sh"]
    assert (copied.path / "lib" / "mod.py").read_text() == "x = 1\n"
    assert _leaked(copied.path) == []
    described = copied.describe()
    for left_out in ("shadow.bak", "group.bak", "private/", "traverse-only/"):
        assert left_out in described, described
    assert "only what every user may read" in described


def test_an_app_dir_another_user_could_replace_is_refused(
        ctx: Context, tmp_path: Path, data_dir: Path, unique_id: str) -> None:
    """Issue 8, third review, finding 1: an app directory in a world-writable directory (or in
    another user's directory inside /tmp) could be swapped for a link to anything between two
    deploys by that user (an app, say); refused at create and again at deploy. A directory of
    the owner's own inside a sticky world-writable directory (/tmp) stays allowed."""
    open_dir = tmp_path / "open"  # world-writable, not sticky
    (open_dir / "app").mkdir(parents=True)
    open_dir.chmod(0o777)
    sticky = tmp_path / "sticky"  # as /tmp
    sticky.mkdir()
    sticky.chmod(0o1777)
    theirs = sticky / "theirs"  # another user's directory holding root's app dir
    (theirs / "app").mkdir(parents=True)
    os.chown(theirs, NOBODY, NOBODY)
    mine = sticky / "mine"  # the owner's own all the way down: fine
    (mine / "app").mkdir(parents=True)
    for path in (mine, mine / "app"):
        os.chown(path, NOBODY, NOBODY)
    roots = sticky / "roots"  # root's, which nobody else may rename in a sticky directory
    roots.mkdir()
    link = sticky / "current"  # another user's link, re-pointed at will
    link.symlink_to(roots)
    os.lchown(link, NOBODY, NOBODY)
    for value, why in [(open_dir / "app", "without the sticky bit"),
                       (sticky, "every user may write into it"),
                       (theirs / "app", "another user's"), (link, "another user's")]:
        with pytest.raises(UserError, match=f"refused: .*{why}"):
            projects.create_project(ctx, f"h1{unique_id}", app_dir=str(value))
        with pytest.raises(CopyFailed, match="refused"):
            make_copy(data_dir, f"p/t{unique_id}", 1, value, None)
    for value in (mine / "app", roots):
        projects._check_app_dir(data_dir, str(value))
