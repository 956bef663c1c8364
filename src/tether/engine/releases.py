"""The releases Tether runs, across its own restarts.

At start, every environment gets its stable address at once; then, in the background (the API
answers meanwhile), each environment's current release is brought back: *adopted* when the
process recorded on its row is still alive on this node (same pid, same start time: a pid reused
by another process is never taken for it), started again otherwise. Any other release of this
node whose process a crash left running (a release that was starting, a previous one not yet
stopped) is stopped first, so an environment never has two processes. Releases recorded by
another node are left to it.

A release row says the truth about its process: `starting` (started, not yet healthy), `running`,
`failed` (it never became healthy, or a crash cut its deployment short), `stopped` (replaced, or
stopped with Tether: the environment's `current_release_id` is kept, so the next start brings it
back). A deploy of an environment waits until that environment has been restored
(`ProcessRuntime.wait_restored`), so a restore and a deploy never race.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.crypto import SecretBox
from tether.engine.parts import EngineParts, reason_of
from tether.envvars import service_vars
from tether.redact import redact
from tether.runtime import appcopy
from tether.runtime.isolation import file_directories, prepare_release
from tether.runtime.logs import release_log_file
from tether.runtime.process import (
    ProcessRuntime,
    ReleaseSpec,
    RunningRelease,
    kill_process_group,
)
from tether.store.db import Store
from tether.store.models import Environment, Instance, Project, Release

log = logging.getLogger("tether.engine")

#: statuses of a release whose process may still run
LIVE = ("starting", "running")
#: statuses of a release that once served (the previous one is kept for a restart or roll-back)
SERVED = ("running", "stopped")

#: query parameters whose values are secrets (a SAS token's `sig`, a password in a query…)
_SECRET_PARAMETERS = frozenset({
    "password", "pass", "passwd", "pwd", "secret", "secret_key", "secretkey", "sig",
    "signature", "token", "access_token", "auth_token", "key", "api_key", "apikey",
    "access_key", "sas", "x-amz-signature", "x-amz-credential", "x-goog-signature",
})
_PARAMETER = re.compile(r"(?:^|[?&;])([^=&;?]+)=([^&;]*)")


def _query_secrets(query: str) -> list[str]:
    found = []
    for name, raw in _PARAMETER.findall(query):
        if unquote(name).strip().lower() in _SECRET_PARAMETERS and raw:
            found += [raw, unquote(raw)]
    return found


def secret_parts(value: str) -> list[str]:
    """A variable's value and each secret component inside it, in the forms it may be printed
    in: a URL's password (as written and decoded), and the secret parameters of a query string
    (a SAS token's signature), the password's own included (an Azure DSN's password is a SAS
    token). An app printing the bare password of its DSN prints one of these."""
    parts = [value]
    try:
        split = urlsplit(value)
    except ValueError:
        return parts
    if split.scheme and "@" in split.netloc:
        userinfo = split.netloc.rpartition("@")[0]
        _user, sep, password = userinfo.partition(":")
        if sep and password:
            parts += [password, unquote(password)]
            parts += _query_secrets(unquote(password))
    if split.scheme:
        parts += _query_secrets(split.query)
    return list(dict.fromkeys(parts))


def release_secrets(variables: dict[str, str]) -> list[str]:
    """The values masked in a release's logs (its log files and its deployment log): every
    variable but STAGE (the environment's name, which would otherwise be masked everywhere it is
    printed), and every secret component of each (`secret_parts`)."""
    found: list[str] = []
    for name, value in variables.items():
        if name != "STAGE" and value:
            found += secret_parts(value)
    return list(dict.fromkeys(found))


def media_directories(s: Session, box: SecretBox, instance_ids: Iterable[int]) -> list[Path]:
    """The local media directories of these instances (made by their providers, so trusted),
    which the release's user gets to write into."""
    ids = list(instance_ids)
    if not ids:
        return []
    values = [value for inst in s.scalars(select(Instance).where(Instance.id.in_(ids)))
              for value in service_vars(box, inst).values()]
    return file_directories(values)


def copies_to_keep(s: Session, environment_id: int) -> set[int]:
    """The releases whose copies stay: the current one, the two latest that served (so the
    previous release can run again) and any that may still run."""
    env = s.get(Environment, environment_id)
    rows = s.execute(select(Release.id, Release.status)
                     .where(Release.environment_id == environment_id)).all()
    keep = {release_id for release_id, status in rows if status in LIVE}
    keep |= set(sorted((release_id for release_id, status in rows if status in SERVED),
                       reverse=True)[:2])
    if env is not None and env.current_release_id is not None:
        keep.add(env.current_release_id)
    return keep


def prune_copies(parts: EngineParts, environment_id: int, environment_key: str) -> list[int]:
    """Remove the release copies of the environment that are no longer kept."""
    with parts.store.session() as s:
        keep = copies_to_keep(s, environment_id)
    removed = appcopy.prune(parts.data_dir, environment_key, keep)
    if removed:
        log.info("release copies of %s removed: %s", environment_key,
                 ", ".join(map(str, removed)))
    return removed


def record_process(store: Store, release_id: int, running: RunningRelease,
                   node_id: str | None) -> None:
    """Record where a release's process runs, as soon as it runs, so a restarted Tether finds
    it: node, pid and start time, port, log file."""
    with store.session() as s:
        release = s.get(Release, release_id)
        if release is not None:
            release.node_id = node_id
            release.pid, release.pid_start = running.pid, running.pid_start
            release.port, release.log_path = running.port, str(running.log_path)


def set_release_status(store: Store, release_id: int, status: str,
                       only_from: tuple[str, ...] | None = None) -> None:
    with store.session() as s:
        release = s.get(Release, release_id)
        if release is not None and (only_from is None or release.status in only_from):
            release.status = status


@dataclass(frozen=True)
class _Leftover:
    id: int
    status: str
    pid: int | None
    pid_start: str | None


@dataclass(frozen=True)
class _Environment:
    id: int
    key: str
    port: int
    current_release_id: int | None
    leftovers: tuple[_Leftover, ...]


class Releases:
    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts
        self._thread: threading.Thread | None = None
        if parts.runtime is not None:
            parts.runtime.on_shutdown(self._stopped_with_tether)

    def restore(self) -> None:
        """Give every environment its stable address, stop what a crash left running, and adopt
        or start again each environment's current release; returns when all are done."""
        self._restore(self._prepare())

    def restore_in_background(self) -> threading.Thread | None:
        """As `restore`, but only the stable addresses before returning: the releases are
        restored by the returned thread (None: nothing to restore). Deploys of an environment
        wait until its release has been restored."""
        plan = self._prepare()
        if not plan:
            return None
        thread = threading.Thread(target=self._restore, args=(plan,), name="tether-restore",
                                  daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def _mine(self, node_id: str | None) -> bool:
        """Whether a release row is this node's to run (rows from before nodes were recorded
        are: one node ran them all)."""
        return node_id is None or node_id == self.parts.node_id

    def _prepare(self) -> list[_Environment]:
        runtime = self.parts.runtime
        if runtime is None:
            return []
        with self.parts.store.session() as s:
            rows = s.execute(select(Environment, Project).join(Project)
                             .order_by(Environment.id)).all()
            live = s.scalars(select(Release).where(Release.status.in_(LIVE))).all()
            plan = []
            for env, project in rows:
                leftovers = tuple(
                    _Leftover(r.id, r.status, r.pid, r.pid_start) for r in live
                    if r.environment_id == env.id and r.id != env.current_release_id
                    and self._mine(r.node_id))
                plan.append(_Environment(env.id, f"{project.name}/{env.name}", env.port,
                                         env.current_release_id, leftovers))
        for item in plan:
            try:
                runtime.ensure_address(item.key, item.port)
            except Exception as exc:  # one environment's port must not keep the others down
                log.error("stable address of %s: %s", item.key, redact(reason_of(exc)))
        runtime.hold_for_restore([item.key for item in plan])
        return plan

    def _restore(self, plan: list[_Environment]) -> None:
        runtime = self.parts.runtime
        assert runtime is not None
        try:
            for item in plan:
                if runtime.closed:
                    break
                try:
                    self._stop_leftovers(runtime, item)
                    self._restore_current(runtime, item)
                except Exception as exc:
                    log.error("restoring the release of %s failed: %s", item.key,
                              redact(reason_of(exc)))
                try:  # copies of releases that ended while Tether was down; before a deploy
                    # of the environment may start (it waits for `restored`)
                    prune_copies(self.parts, item.id, item.key)
                except Exception as exc:
                    log.warning("removing old release copies of %s: %s", item.key,
                                redact(reason_of(exc)))
                finally:
                    runtime.restored(item.key)
        finally:
            for item in plan:
                runtime.restored(item.key)

    def _stop_leftovers(self, runtime: ProcessRuntime, item: _Environment) -> None:
        """Stop the processes a crash left running for releases that are not the current one,
        and say so on their rows (a release cut short while starting failed)."""
        own = {(r.pid, r.pid_start) for r in runtime.releases()}
        for left in item.leftovers:
            if (left.pid, left.pid_start) in own:
                continue  # started by this runtime: not a leftover
            stopped = bool(left.pid and left.pid_start
                           and kill_process_group(left.pid, left.pid_start))
            status = "failed" if left.status == "starting" else "stopped"
            set_release_status(self.parts.store, left.id, status, only_from=LIVE)
            if stopped:
                log.warning("release %s of %s was left running by a crash: stopped",
                            left.id, item.key)

    def _restore_current(self, runtime: ProcessRuntime, item: _Environment) -> None:
        if item.current_release_id is None or runtime.current(item.key) is not None:
            return
        store = self.parts.store
        with store.session() as s:
            release = s.get(Release, item.current_release_id)
            if release is None or not release.command or not self._mine(release.node_id):
                return
            env = s.get(Environment, release.environment_id)
            assert env is not None
            project = env.project
            release_id, command = release.id, release.command
            pid, pid_start, port = release.pid, release.pid_start, release.port
            log_path = release.log_path
            env_enc = release.env_enc
            app_dir, health_path = project.app_dir, project.health_path
            health_timeout = float(project.health_timeout)
            environment_id = env.id
            media = media_directories(s, self.parts.box, release.instance_ids or ())
        adopted = runtime.adopt(release_id, item.key, pid, pid_start, port, log_path)
        if adopted is not None:
            runtime.switch(item.key, adopted)
            set_release_status(store, release_id, "running")
            log.info("release %s of %s adopted (pid %s, port %s)", release_id, item.key, pid,
                     port)
            return
        variables = self.parts.box.open(env_enc)
        if variables is None:
            return
        secrets = release_secrets(variables)
        set_release_status(store, release_id, "starting")
        try:
            # its own copy, made when it first started (made again from the app directory only
            # when it is gone, e.g. for a release started by a Tether that made no copies)
            prepared = prepare_release(self.parts.data_dir, environment_id, item.key,
                                       release_id, app_dir, command, variables, media)
            running = runtime.start(ReleaseSpec(
                release_id=release_id, environment_key=item.key, command=command,
                env=variables, health_path=health_path, cwd=str(prepared.cwd),
                health_timeout=health_timeout,
                log_path=Path(log_path) if log_path else
                release_log_file(self.parts.data_dir, item.key, release_id),
                secrets=secrets, account=prepared.account,
                on_start=lambda r: record_process(store, release_id, r, self.parts.node_id)))
        except Exception as exc:
            self._not_back(runtime, item.key, release_id, exc, secrets)
            return
        try:
            runtime.switch(item.key, running)
        except Exception as exc:
            runtime.stop(running, drain_timeout=0)
            self._not_back(runtime, item.key, release_id, exc, secrets)
            return
        set_release_status(store, release_id, "running")
        log.info("release %s of %s started again: it %s", release_id, item.key,
                 prepared.describe())

    def _not_back(self, runtime: ProcessRuntime, key: str, release_id: int, exc: Exception,
                  secrets: list[str]) -> None:
        if runtime.closed:
            return  # stopped with Tether: marked stopped, and started again next time
        set_release_status(self.parts.store, release_id, "failed")
        log.error("release %s of %s did not come back: %s", release_id, key,
                  redact(reason_of(exc), secrets))

    def _stopped_with_tether(self, release_ids: list[int]) -> None:
        """The runtime stopped these releases because Tether stops: `stopped`, not failed, and
        each environment keeps its current release, so the next start brings it back."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)  # it sees the runtime closed and ends
        for release_id in release_ids:
            set_release_status(self.parts.store, release_id, "stopped", only_from=LIVE)
