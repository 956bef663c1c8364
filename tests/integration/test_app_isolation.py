"""Issue 8, finding 2: applications ran as Tether's own user (root) through `/bin/sh -c`, and
could read the secret key and the store. Now each environment's processes run as a system user of
their own, from an immutable copy of the application directory.

Shown with the engine and the process runtime, as `tether up` runs them: a deployed app tries to
read the secret key, the store, an operator's world-readable file in the data dir, the logs and
another environment's release, and reports what it could (over HTTP); each is denied. Also:
finding 6 (a bare password printed at start reached the deployment log unmasked), the README's
quick start in miniature (`python examples/hello/app.py` from the clone, connecting to PostgreSQL
with psycopg as the app's user), and a program under a private (0700) directory.

Runs as root (as the tests do in CI), so the users are really made; they are removed at the end.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from tests.plane import wait_op
from tether.actions import clusters, deployments, projects, services, variables
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.errors import UserError
from tether.net import free_port
from tether.runtime import acl, appcopy
from tether.runtime.accounts import APPS_GROUP, account_name, accounts_of, remove_accounts
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store
from tether.store.models import Environment, Project, Release

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)"),
]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Legacy-Pa55word-9f3b2c"
SIGNATURE = "AbCdEf0123+sig/Zz=="
BLOB_DSN = ("az://acct:" + quote(f"sv=2022-11-02&sr=c&sp=rwdl&sig={quote(SIGNATURE, safe='')}",
                                 safe="") + "@acct.blob.example.net/media")

# Prints the bare password of LEGACY_DSN and the SAS signature of BLOB_DSN at start (finding 6).
# "/probe?read=P&write=D": what this process could read (a file), list (a directory) or write
# into (a directory), as an errno name when it could not. "/version": version.txt of its cwd.
PROBE = textwrap.dedent(
    """
    import errno, json, os, pwd, tempfile
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, unquote, urlsplit

    legacy = urlsplit(os.environ["LEGACY_DSN"])
    print("the password of LEGACY_DSN is", unquote(legacy.password), flush=True)
    sas = parse_qs(unquote(urlsplit(os.environ["BLOB_DSN"]).password))
    print("the signature of BLOB_DSN is", sas["sig"][0], flush=True)

    def code(exc):
        return errno.errorcode.get(exc.errno, str(exc.errno))

    def read(path):
        try:
            os.listdir(path)
            return "listed"
        except NotADirectoryError:
            pass
        except OSError as exc:
            return code(exc)
        try:
            with open(path, "rb") as f:
                f.read(1)
            return "read"
        except OSError as exc:
            return code(exc)

    def write(path):
        try:
            fd, name = tempfile.mkstemp(dir=path)
            os.close(fd)
            os.unlink(name)
            return "written"
        except OSError as exc:
            return code(exc)

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path == "/probe":
                body = json.dumps({
                    "uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name,
                    "groups": os.getgroups(), "cwd": os.getcwd(), "home": os.environ["HOME"],
                    "read": {p: read(p) for p in query.get("read", [])},
                    "write": {p: write(p) for p in query.get("write", [])},
                }).encode()
            elif parts.path == "/version":
                with open("version.txt") as f:
                    body = f.read().encode()
            else:
                body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'tether.db'}")
    store.migrate()
    store.dispose()
    yield data
    remove_accounts(name for name, _ in accounts_of(data))
    assert accounts_of(data) == [], "the environments' users were not removed"


@pytest.fixture
def ctx(data_dir: Path, pg_server: Any) -> Iterator[Context]:
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    context = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir,
                      actor="alice")
    media = data_dir / "media"
    clusters.add_cluster(context, "local-files", "local", f"file://{media}", name="media",
                         settings={"base_dir": str(media),
                                   "public_url": "http://127.0.0.1:8071/"})
    clusters.add_cluster(context, "postgres", "local", pg_server.admin_url, name="pg")
    yield context
    store.dispose()


@pytest.fixture
def engine(ctx: Context) -> Iterator[Engine]:
    eng = Engine(ctx.store, ctx.box, ctx.data_dir, runtime=ProcessRuntime())
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()


def deploy_ok(ctx: Context, project: str, env: str) -> dict[str, Any]:
    dep = deployments.deploy(ctx, project, env)
    op = wait_op(ctx, dep["operation"]["id"], timeout=120)
    shown = deployments.get_deployment(ctx, dep["id"])
    assert op["status"] == "succeeded", (op, shown["logs"])
    return shown


def environment(ctx: Context, project: str, env: str) -> tuple[int, str, int | None]:
    """The environment's id, its stable address (an ephemeral port) and current release."""
    with ctx.store.session() as s:
        row = s.scalars(select(Environment).join(Project).where(
            Project.name == project, Environment.name == env)).one()
        return row.id, f"http://127.0.0.1:{row.port}", row.current_release_id


def use_ephemeral_ports(ctx: Context, project: str) -> None:
    with ctx.store.session() as s:
        for row in s.scalars(select(Environment).join(Project).where(Project.name == project)):
            row.port = free_port()


def release_row(ctx: Context, release_id: int) -> Release:
    with ctx.store.session() as s:
        row = s.get(Release, release_id)
        assert row is not None
        s.expunge(row)
        return row


def app_processes(writer_pid: int) -> dict[int, int]:
    """The processes of a release's group but its log writer: pid -> real uid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == writer_pid:
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) != writer_pid or fields[0] in ("Z", "X"):
                continue
            status = (entry / "status").read_text()
            uid = next(line.split()[1] for line in status.splitlines()
                       if line.startswith("Uid:"))
            found[int(entry.name)] = int(uid)
    return found


def probe(url: str, read: list[Path] = (), write: list[Path] = ()) -> dict[str, Any]:
    params = [("read", str(p)) for p in read] + [("write", str(p)) for p in write]
    answer = httpx.get(url + "/probe", params=params, timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_app_reads_neither_secrets_nor_the_store_nor_another_environment(
        ctx: Context, engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "probe-src"
    source.mkdir()
    (source / "probe.py").write_text(PROBE)
    (source / "version.txt").write_text("v1")
    (source / ".git").mkdir()
    (source / ".git" / "config").write_text("[remote]")
    (source / "scratch").mkdir()
    (source / "scratch" / "big.bin").write_bytes(b"x" * 1000)
    (source / ".tetherignore").write_text("# not part of a release\nscratch/\n")
    # an operator's file left world-readable in the data dir, holding an admin URL
    operator_file = ctx.data_dir / "clusters.toml"
    operator_file.write_text('url = "postgres://admin:ADMIN-PW@db:5432/postgres"\n')
    operator_file.chmod(0o644)

    projects.create_project(ctx, "iso", app_command=f"{sys.executable} probe.py",
                            app_dir=str(source), health_path="/health")
    use_ephemeral_ports(ctx, "iso")
    for env in ("test", "live"):
        variables.set_variable(ctx, "iso", env, "LEGACY_DSN",
                               f"postgres://legacy:{PASSWORD}@db.example.net:5432/legacy")
        variables.set_variable(ctx, "iso", env, "BLOB_DSN", BLOB_DSN)
        services.add(ctx, "iso", env, "local-media", prefix="MEDIA")
    test_dep = deploy_ok(ctx, "iso", "test")
    deploy_ok(ctx, "iso", "live")
    test_id, test_url, test_release = environment(ctx, "iso", "test")
    live_id, live_url, live_release = environment(ctx, "iso", "live")
    assert test_release and live_release
    data = ctx.data_dir

    row = release_row(ctx, test_release)
    test_copy = appcopy.release_dir(data, "iso/test", test_release)
    live_copy = appcopy.release_dir(data, "iso/live", live_release)
    test_log = Path(row.log_path)  # type: ignore[arg-type]
    live_log = Path(release_row(ctx, live_release).log_path)  # type: ignore[arg-type]
    media = {env: Path(next(v["value"] for v in variables.list_variables(
        ctx, "iso", env, include_all=True) if v["name"] == "MEDIA_STORAGE_DSN"
        ).split("file://", 1)[1].split("?", 1)[0]) for env in ("test", "live")}
    secrets_of_tether = [data / "secret.key", data / "tether.db", operator_file, data,
                         data / "logs", test_log, live_log, data / "releases",
                         data / "releases" / "iso", live_copy, live_copy / "probe.py",
                         live_copy / "version.txt"]
    secrets_of_tether += [data / name for name in ("tether.db-wal", "tether.db-shm")
                          if (data / name).exists()]
    # another environment's media (third review, finding 4): an upload there, its directory and
    # the media directory holding every environment's are neither listed nor read
    (media["live"] / "upload-name-of-a-customer.pdf").write_text("theirs")
    (media["live"] / "upload-name-of-a-customer.pdf").chmod(0o644)
    secrets_of_tether += [data / "media", media["live"],
                          media["live"] / "upload-name-of-a-customer.pdf"]
    seen = probe(test_url, read=[*secrets_of_tether, test_copy / "probe.py", test_copy,
                                 media["test"]],
                 write=[test_copy, media["test"], media["live"]])
    denied = {path: result for path, result in seen["read"].items()
              if Path(path) in secrets_of_tether}
    assert denied == {str(p): "EACCES" for p in secrets_of_tether}, denied

    # each environment has its own user; neither is root, nor the other's
    test_user, live_user = account_name(data, test_id), account_name(data, live_id)
    test_account = pwd.getpwnam(test_user)
    assert pwd.getpwnam(live_user).pw_uid not in (0, test_account.pw_uid)
    assert set(app_processes(row.pid).values()) == {test_account.pw_uid}  # type: ignore[arg-type]
    assert (seen["uid"], seen["user"]) == (test_account.pw_uid, test_user)
    assert grp.getgrnam(APPS_GROUP).gr_gid in seen["groups"]
    assert seen["cwd"] == seen["home"] == str(test_copy)
    # its own release it reads, but cannot change; its own media it writes, another's not
    assert seen["read"][str(test_copy / "probe.py")] == "read"
    assert seen["read"][str(test_copy)] == "listed"
    assert seen["read"][str(media["test"])] == "listed"
    media_stat = media["test"].stat()  # the provider's mode, which its drift check expects
    assert (media_stat.st_uid, stat.S_IMODE(media_stat.st_mode)) == (test_account.pw_uid, 0o700)
    assert seen["write"] == {str(test_copy): "EACCES", str(media["test"]): "written",
                             str(media["live"]): "EACCES"}
    # and the other way round
    other = probe(live_url, read=[test_copy / "probe.py", test_copy, test_log])
    assert set(other["read"].values()) == {"EACCES"}, other
    assert other["user"] == live_user

    # the copy belongs to root and to the environment's group, read-only; skipped what it must
    copy_stat, file_stat = test_copy.stat(), (test_copy / "probe.py").stat()
    assert (copy_stat.st_uid, copy_stat.st_gid) == (0, test_account.pw_gid)
    assert stat.S_IMODE(copy_stat.st_mode) == 0o750
    assert (file_stat.st_uid, stat.S_IMODE(file_stat.st_mode)) == (0, 0o640)
    assert sorted(p.name for p in test_copy.iterdir()) == [".tetherignore", "probe.py",
                                                           "version.txt"]
    # the log file stays Tether's: the app writes into its writer's pipe
    log_stat = test_log.stat()
    assert (log_stat.st_uid, stat.S_IMODE(log_stat.st_mode)) == (0, 0o600)

    lines = [entry["line"] for entry in test_dep["logs"]]
    assert any(line.startswith(f"release {test_release} runs as the system user {test_user}")
               for line in lines), lines

    # a later edit of the application directory does not change the running release ...
    (source / "version.txt").write_text("v2")
    assert httpx.get(test_url + "/version", trust_env=False).text == "v1"
    deploy_ok(ctx, "iso", "test")  # ... the next release has it
    assert httpx.get(test_url + "/version", trust_env=False).text == "v2"
    deploy_ok(ctx, "iso", "test")
    _, _, current = environment(ctx, "iso", "test")
    assert current is not None
    # the copies of the current release and the previous one are kept, older ones removed
    kept = appcopy.copies(data, "iso/test")
    assert len(kept) == 2 and current in kept and test_release not in kept, kept


def test_secrets_an_app_prints_at_start_are_masked_in_the_deployment_log(
        ctx: Context, engine: Engine, tmp_path: Path) -> None:
    """Finding 6: an app printing the bare password of its DSN (or the signature of its SAS
    token) while its release starts had it stored unmasked in the deployment log. Every secret
    component of every variable is masked there, as in the release's log file."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "probe.py").write_text(PROBE)
    projects.create_project(ctx, "masked", app_command=f"{sys.executable} probe.py",
                            app_dir=str(source), health_path="/health")
    use_ephemeral_ports(ctx, "masked")
    variables.set_variable(ctx, "masked", "test", "LEGACY_DSN",
                           f"postgres://legacy:{PASSWORD}@db.example.net:5432/legacy")
    variables.set_variable(ctx, "masked", "test", "BLOB_DSN", BLOB_DSN)
    shown = deploy_ok(ctx, "masked", "test")
    lines = [entry["line"] for entry in shown["logs"]]
    assert "app: the password of LEGACY_DSN is ***" in lines, lines
    assert "app: the signature of BLOB_DSN is ***" in lines, lines
    _, _, release_id = environment(ctx, "masked", "test")
    assert release_id is not None
    log_file = Path(release_row(ctx, release_id).log_path)  # type: ignore[arg-type]
    for text in ("\n".join(lines), log_file.read_text()):
        assert PASSWORD not in text and SIGNATURE not in text
        assert quote(SIGNATURE, safe="") not in text


def test_the_quick_start_app_connects_to_postgres_as_its_own_user(
        ctx: Context, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's quick start: the clone is the app directory, `python` on PATH is the venv's
    (its interpreter here lives under /root, mode 0700), the app logs in to PostgreSQL with
    psycopg and writes to its media directory, as a user that is not root."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    projects.create_project(ctx, "quick", app_command="python examples/hello/app.py",
                            app_dir=str(ROOT), health_path="/health")
    use_ephemeral_ports(ctx, "quick")
    services.add(ctx, "quick", "test", "postgres", prefix="DEFAULT")
    services.add(ctx, "quick", "test", "local-media", prefix="MEDIA")
    try:
        deploy_ok(ctx, "quick", "test")
        env_id, url, release_id = environment(ctx, "quick", "test")
        status = httpx.get(url + "/status.json", timeout=20, trust_env=False).json()
        database = status["services"]["DEFAULT_DATABASE_DSN"]
        assert database["ok"] and database["detail"].startswith("connected, PostgreSQL"), status
        assert status["services"]["MEDIA_STORAGE_DSN"]["ok"], status
        assert release_id is not None
        row = release_row(ctx, release_id)
        uid = pwd.getpwnam(account_name(ctx.data_dir, env_id)).pw_uid
        assert set(app_processes(row.pid).values()) == {uid}  # type: ignore[arg-type]
        copy = appcopy.release_dir(ctx.data_dir, "quick/test", release_id)
        assert (copy / "examples" / "hello" / "app.py").is_file()
        for skipped in (".git", ".venv", ".test-servers", "build"):  # .tetherignore, defaults
            assert not (copy / skipped).exists(), skipped
    finally:
        _deprovision_all(ctx)


def _deprovision_all(ctx: Context) -> None:
    """Drop what the test made on the shared PostgreSQL server."""
    from tether.naming import resource_names
    from tether.providers.registry import get_provider
    from tether.store.models import Cluster, Instance
    from tether.store.records import cluster_spec

    with ctx.store.session() as s:
        rows = [(i.id, s.get(Cluster, i.cluster_id)) for i in s.scalars(select(Instance))
                if i.cluster_id is not None]
        specs = [(inst_id, cluster_spec(ctx.box, c)) for inst_id, c in rows if c]
    for inst_id, spec in specs:
        with contextlib.suppress(Exception):
            get_provider(spec.kind).deprovision(spec, resource_names(inst_id))


def test_a_program_under_a_private_directory_is_reached_through_it_only(
        ctx: Context, engine: Engine, tmp_path: Path) -> None:
    """A program inside a 0700 directory (as a venv under /root): the environment's user may
    traverse the directories above it (an ACL for its own group, `--x`) but not list them."""
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    private.chmod(0o700)
    server = private / "bin" / "serve"
    server.write_text(f"#!{sys.executable}\n" + PROBE)
    server.chmod(0o755)
    app_dir = tmp_path / "empty-app"
    app_dir.mkdir()
    projects.create_project(ctx, "priv", app_command=str(server), app_dir=str(app_dir),
                            health_path="/health")
    use_ephemeral_ports(ctx, "priv")
    variables.set_variable(ctx, "priv", "test", "LEGACY_DSN", f"postgres://u:{PASSWORD}@h/d")
    variables.set_variable(ctx, "priv", "test", "BLOB_DSN", BLOB_DSN)
    deploy_ok(ctx, "priv", "test")
    env_id, url, _ = environment(ctx, "priv", "test")
    apps = grp.getgrnam(APPS_GROUP).gr_gid
    own = pwd.getpwnam(account_name(ctx.data_dir, env_id)).pw_gid
    # the environment's own group, not every app's (finding 9 of the second review)
    assert acl.group_permissions(private, own) == acl.EXECUTE
    assert acl.group_permissions(private, apps) is None
    assert stat.S_IMODE(private.stat().st_mode) & 0o007 == 0  # others: still nothing
    seen = probe(url, read=[private, private / "bin"])
    # through it, never listing it (bin/ is 0755: anybody who reaches it may list it)
    assert seen["read"] == {str(private): "EACCES", str(private / "bin"): "listed"}


@pytest.mark.parametrize("app_dir, message", [
    ("relative/dir", "not an absolute path"),
    ("/nonexistent/tether-app", "does not exist"),
    ("{data}/media", "inside Tether's data dir"),
    ("{data_parent}", "holds Tether's data dir"),
    ("{file}", "not a directory"),
])
def test_an_app_dir_is_checked_at_the_edge(ctx: Context, tmp_path: Path, app_dir: str,
                                           message: str) -> None:
    data_dir = ctx.data_dir
    (data_dir / "media").mkdir(exist_ok=True)
    (tmp_path / "a-file").write_text("x")
    value = app_dir.format(data=data_dir, data_parent=data_dir.parent,
                           file=tmp_path / "a-file")
    with pytest.raises(UserError, match=message):
        projects.create_project(ctx, "shop", app_command="python app.py", app_dir=value)
    projects.create_project(ctx, "shop", app_command="python app.py",
                            app_dir=str(ROOT / "examples"))


def test_restarted_release_runs_its_own_copy(ctx: Context, tmp_path: Path) -> None:
    """A release started again after a restart of Tether runs its copy, not the app directory
    as it is now."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "probe.py").write_text(PROBE)
    (source / "version.txt").write_text("v1")
    projects.create_project(ctx, "again", app_command=f"{sys.executable} probe.py",
                            app_dir=str(source), health_path="/health")
    use_ephemeral_ports(ctx, "again")
    variables.set_variable(ctx, "again", "test", "LEGACY_DSN", f"postgres://u:{PASSWORD}@h/d")
    variables.set_variable(ctx, "again", "test", "BLOB_DSN", BLOB_DSN)
    engine = Engine(ctx.store, ctx.box, ctx.data_dir, runtime=ProcessRuntime())
    engine.start()
    try:
        deploy_ok(ctx, "again", "test")
    finally:
        engine.stop()  # the app stops with Tether; its release stays the current one
    (source / "version.txt").write_text("v2")
    engine = Engine(ctx.store, ctx.box, ctx.data_dir, runtime=ProcessRuntime())
    engine.start()
    try:
        _, url, _ = environment(ctx, "again", "test")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(url + "/version", timeout=5, trust_env=False)
                if answer.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the release did not come back"
            time.sleep(0.2)
        assert answer.text == "v1"
    finally:
        engine.stop()


@pytest.mark.parametrize("owner", ["the app, which chgrp-ed it", "root, handed over once"])
def test_a_media_directory_swapped_for_a_link_never_hands_over_its_target(
        tmp_path: Path, owner: str) -> None:
    """Issue 8, second review, finding 1: root handed a media directory over to the app by
    path on every deploy unless it had the app's uid AND gid; the app (owning it) chgrp-ed it to
    force the walk, filled `a/` and swapped `a` for a link to /etc once root listed it: root
    chowned /etc/shadow to the app. Now a directory the app owns is never walked again, and the
    first walk (of root's directory) is relative to the directories it opened, never following
    a link. Here the victim is a file in a temporary directory, never /etc."""
    from tether.runtime.accounts import AppAccount
    from tether.runtime.isolation import _hand_over

    account = AppAccount("tether-nobody", 65534, 65534, 65534)
    media = tmp_path / "media" / "inst"
    inner = media / "a"
    inner.mkdir(parents=True)
    for i in range(20000):
        (inner / f"f{i:05d}").touch()
    (inner / "zz_shadow").touch()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "zz_shadow").write_text("root:...")
    os.chown(media, *((account.uid, 0) if owner.startswith("the app") else (0, 0)))
    done, swapped = threading.Event(), threading.Event()

    def attacker() -> None:  # the app: swaps a/ for a link once root works in it
        while not done.is_set():
            with contextlib.suppress(OSError):
                if os.lstat(inner / "f00000").st_uid == account.uid:
                    os.rename(inner, media / "a_old")
                    os.symlink(victim, inner)
                    swapped.set()
                    return

    thread = threading.Thread(target=attacker)
    thread.start()
    try:
        _hand_over(media, account, tmp_path / "data")
    finally:
        done.set()
        thread.join()
    assert os.lstat(victim / "zz_shadow").st_uid == 0
    assert os.lstat(victim).st_uid == 0
    if owner.startswith("root"):  # handed over, the moved directory included
        assert swapped.is_set()
        assert os.lstat(media).st_uid == account.uid
        assert os.lstat(media / "a_old" / "f19999").st_uid == account.uid


@pytest.mark.parametrize("planted_by", ["the app", "root"])
def test_a_planted_pyvenv_cfg_opens_nothing_in_the_data_dir(tmp_path: Path,
                                                            planted_by: str) -> None:
    """Issue 8, second review, finding 2: for a `python*` program the app command named, root
    read the pyvenv.cfg beside it and let `tether-apps` read the tree above the `home` it names:
    an app wrote /tmp/x/bin/python3 and /tmp/x/pyvenv.cfg naming the data dir, a developer set
    the command to it, and every app could read the secret key and the store. Now a program is
    opened only when its whole path is root's and writable by nobody else, and never the data
    dir, anything in it or holding it (even for a venv root made)."""
    from tether.runtime.accounts import AppAccount, make_reachable

    apps = grp.getgrnam(APPS_GROUP).gr_gid
    account = AppAccount("tether-nobody", 65534, 65533, apps)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    secrets = [data / "secret.key", data / "tether.db"]
    for path in secrets:
        path.write_text("secret")
        path.chmod(0o600)
    planted = tmp_path / "x"
    (planted / "bin").mkdir(parents=True)
    (planted / "bin" / "python3").write_text("#!/bin/false\n")
    (planted / "bin" / "python3").chmod(0o755)
    (planted / "pyvenv.cfg").write_text(f"home = {data}/anything\n")
    if planted_by == "the app":
        for path in (planted, planted / "bin", planted / "bin" / "python3",
                     planted / "pyvenv.cfg"):
            os.chown(path, account.uid, account.gid)
    make_reachable(account, data, f"{planted}/bin/python3 app.py", "/usr/bin:/bin")
    for gid in (apps, account.gid):
        for path in secrets:
            assert acl.group_permissions(path, gid) is None, (path, gid)
    assert acl.group_permissions(data, apps) == acl.EXECUTE  # traverse, never list
    assert acl.group_permissions(data, account.gid) is None


def test_a_program_in_a_world_writable_directory_is_not_made_reachable(tmp_path: Path) -> None:
    """Issue 8, second review, finding 2: a program anybody could replace (its directory is
    world-writable) opens no way to it: the directories above it get no ACL."""
    from tether.runtime.accounts import AppAccount, make_reachable

    apps = grp.getgrnam(APPS_GROUP).gr_gid
    account = AppAccount("tether-nobody", 65534, 65533, apps)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    private = tmp_path / "private"
    shared = private / "shared"
    shared.mkdir(parents=True)
    private.chmod(0o700)
    shared.chmod(0o777)  # not sticky: anybody may swap the program
    program = shared / "serve"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    make_reachable(account, data, str(program), "/usr/bin:/bin")
    for gid in (apps, account.gid):
        assert acl.group_permissions(private, gid) is None, gid


SWAPPER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    target, i = Path(sys.argv[1]), 0
    while True:
        i += 1
        a, b = target.with_name(f"r{i}"), target.with_name(f"f{i}")
        a.write_text("#!/bin/sh\\n")
        os.rename(a, target)
        os.mkfifo(b)
        os.rename(b, target)
    """
)


def test_a_command_naming_a_file_that_blocks_its_reader_returns_promptly(tmp_path: Path) -> None:
    """Issue 8, third review, finding 3: to find a script's interpreter, root opened every
    absolute path the app command names with a plain `open()`, holding the lock every deploy
    takes: `/proc/kmsg` (a "regular file" whose read blocks) or a FIFO swapped in after the
    `isfile()` check blocked it for good, and every later deploy on the node with it. Now only a
    program `_trusted_chain` accepted is read, without blocking, following no link and only
    from a regular file (never in /proc), before the lock. The old code blocks here; the test
    then unblocks it (a kernel message, a writer on the FIFO) and fails."""
    from tether.runtime import accounts
    from tether.runtime.accounts import AppAccount, make_reachable

    apps = grp.getgrnam(APPS_GROUP).gr_gid
    account = AppAccount("tether-nobody", 65534, 65533, apps)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    race = tmp_path / "race"  # root's (as a trusted program's directory would be)
    race.mkdir(mode=0o755)
    target = race / "start.sh"
    target.write_text("#!/bin/sh\n")
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(target)])
    finished = threading.Event()

    def deploys() -> None:
        make_reachable(account, data, "true; /proc/kmsg --follow", "/usr/bin:/bin")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            make_reachable(account, data, f"{target} serve", "/usr/bin:/bin")
        finished.set()

    thread = threading.Thread(target=deploys, daemon=True)
    try:
        thread.start()
        thread.join(30)
        blocked = thread.is_alive()
    finally:
        swapper.kill()
        swapper.wait()
        for _ in range(20):  # the old code: let the blocked open() or read() return
            if not thread.is_alive():
                break
            with contextlib.suppress(OSError):
                Path("/dev/kmsg").write_text("tether test: unblocking a read of /proc/kmsg\n")
            with contextlib.suppress(OSError):
                os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(0.5)
    assert not blocked, "make_reachable blocked on a file that blocks its reader"
    assert finished.is_set()
    assert not accounts._lock.locked()


def test_a_private_python_home_opens_only_what_others_may_read(tmp_path: Path) -> None:
    """Issue 8, third review, finding 5: for a Python installation "other" may not read (0700),
    the environment's group was granted read on every file in it, 0600 ones included (a key or
    token someone left there). Now it may list and enter the top, and read below it only what
    "other" may: a 0600 file and a 0700 directory stay their owner's."""
    from tether.runtime.accounts import AppAccount, make_reachable

    apps = grp.getgrnam(APPS_GROUP).gr_gid
    account = AppAccount("tether-nobody", 65534, 65533, apps)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    home = tmp_path / "pyhome"
    (home / "bin").mkdir(parents=True)
    (home / "lib" / "private").mkdir(parents=True)
    python = home / "bin" / "python3"
    python.write_text("#!/bin/false\n")
    python.chmod(0o755)
    module, secret = home / "lib" / "os.py", home / "lib" / "token.json"
    module.write_text("x = 1\n")
    module.chmod(0o644)
    secret.write_text("SECRET")
    secret.chmod(0o600)
    hidden = home / "lib" / "private" / "k.py"
    hidden.write_text("x = 2\n")
    hidden.chmod(0o644)
    (home / "lib" / "private").chmod(0o700)
    home.chmod(0o700)
    make_reachable(account, data, f"{python} app.py", "/usr/bin:/bin")
    gid = account.gid
    assert acl.group_permissions(home, gid) == acl.READ | acl.EXECUTE
    assert acl.group_permissions(python, gid) == acl.READ | acl.EXECUTE
    assert acl.group_permissions(module, gid) == acl.READ
    assert not acl.group_permissions(secret, gid)  # never granted
    assert not acl.group_permissions(home / "lib" / "private", gid)
    assert not acl.group_permissions(hidden, gid)


def test_removing_an_app_user_takes_back_what_its_group_was_given(tmp_path: Path) -> None:
    """The ACL entries an environment's own group got on the way to its programs (a 0700
    directory above one, as /root above a venv's interpreter) and in a private Python
    installation went on naming its gid after `userdel`: a group made later with that gid
    inherited them (seen: /root held entries of ~50 deleted groups on a test machine, and a
    deploy passed only because of one). Removing the user takes them back."""
    from tether.runtime import accounts

    data = tmp_path / "data"
    data.mkdir()
    private = tmp_path / "private"
    home = private / "pyhome"
    (home / "bin").mkdir(parents=True)
    python = home / "bin" / "python3"
    python.write_text("#!/bin/false\n")
    python.chmod(0o755)
    module = home / "os.py"
    module.write_text("x = 1\n")
    module.chmod(0o644)
    home.chmod(0o700)
    private.chmod(0o700)
    account = accounts.ensure_account(data, 4242)
    assert account is not None
    try:
        accounts.make_reachable(account, data, f"{python} app.py", "/usr/bin:/bin")
        gid = account.gid
        assert acl.group_permissions(private, gid) == acl.EXECUTE
        assert acl.group_permissions(home, gid) == acl.READ | acl.EXECUTE
        assert acl.group_permissions(module, gid) == acl.READ
        record = json.loads((accounts.GRANTS_DIR / f"{account.name}.json").read_text())
        assert record["gid"] == gid and str(private) in record["paths"]
        assert record["trees"] == [str(home)]
        assert stat.S_IMODE((accounts.GRANTS_DIR / f"{account.name}.json").stat().st_mode) \
            == 0o600
    finally:
        assert accounts.remove_accounts([account.name]) == [account.name]
    for path in (private, home, python, module):
        assert acl.group_permissions(path, gid) is None, path
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # the mode as it was
    assert not (accounts.GRANTS_DIR / f"{account.name}.json").exists()
