"""Deploy an environment: provision what is pending, start the new release with its variables,
switch traffic once it is healthy, stop the previous one, and settle the states.

A failed deployment changes nothing (rule 4): the previous release keeps serving, and no state
moves. A successful one settles each instance by what the new release really has, so a user's
change while it ran (a detach, an attach, a removal asked) has one defined outcome (see
`lifecycle.after`). The release remembers the instances whose variables it has: that, not the
recorded state, is what "the running release has the instance" means to the rules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import lifecycle, naming
from tether.engine.parts import EngineParts, before, reason_of
from tether.engine.provisioning import Provisioning
from tether.engine.releases import (
    media_directories,
    prune_copies,
    record_process,
    release_secrets,
)
from tether.engine.rotation import revoke_after_deploy
from tether.envvars import live_instances, release_env, service_vars
from tether.errors import OperationError, TetherError, TransientError
from tether.faults import crash_point
from tether.lifecycle import Event, Pending, State
from tether.providers.base import Credentials, Renewable
from tether.providers.registry import get_provider
from tether.redact import redact
from tether.runtime.isolation import PreparedRelease, prepare_release
from tether.runtime.logs import release_log_file
from tether.runtime.process import ReleaseFailed, ReleaseSpec, RunningRelease
from tether.store.models import (
    Cluster,
    Deployment,
    DeploymentLog,
    Environment,
    Instance,
    Operation,
    Release,
    utcnow,
)
from tether.store.records import apply_event, audit, cluster_spec, pending_removals

log = logging.getLogger("tether.engine")


def _deployment_environment(s: Session, dep_id: int) -> Environment:
    dep = s.get(Deployment, dep_id)
    env = s.get(Environment, dep.environment_id) if dep is not None else None
    assert env is not None
    return env


class Deploying:
    def __init__(self, parts: EngineParts, provisioning: Provisioning) -> None:
        self.parts = parts
        self.provisioning = provisioning

    def _log(self, deployment_id: int, line: str) -> None:
        with self.parts.store.session() as s:
            s.add(DeploymentLog(deployment_id=deployment_id, line=line[:4000]))

    def _log_lines(self, deployment_id: int, lines: list[str]) -> None:
        """Several lines in one transaction (the app's output while its release starts)."""
        with self.parts.store.session() as s:
            s.add_all([DeploymentLog(deployment_id=deployment_id, line=line[:4000])
                       for line in lines])

    def _progress(self, deployment_id: int, percent: int, line: str | None = None) -> None:
        with self.parts.store.session() as s:
            dep = s.get(Deployment, deployment_id)
            if dep is not None:
                dep.percent = percent
        if line:
            self._log(deployment_id, line)

    def run(self, op: Operation) -> str:
        """The handler of a `deploy` operation."""
        assert op.deployment_id is not None
        dep_id = op.deployment_id
        with self.parts.store.session() as s:
            dep = s.get(Deployment, dep_id)
            assert dep is not None
            if dep.status in ("succeeded", "failed"):
                return f"deployment {dep_id} already {dep.status}"
            resumed = dep.status == "running"
            dep.status = "running"
            dep.started_at = dep.started_at or utcnow()
            env = s.get(Environment, dep.environment_id)
            assert env is not None
            key = f"{env.project.name}/{env.name}"
            actor = f"deployment {dep_id} (asked by {dep.requested_by})"
        self._progress(dep_id, 5, f"deployment {dep_id} of {key} "
                       f"{'resumed' if resumed else 'started'}")
        try:
            self._deploy(dep_id, actor, key, op.deadline)
        except TransientError as exc:
            if before(op.deadline):
                self._log(dep_id, f"waiting: {exc.message}; retrying")
                raise
            # given up here: a final error, so the worker fails the operation with it (a
            # TransientError would have it retried a deployment already marked failed)
            self._finish(dep_id, success=False, error=exc.message)
            raise OperationError(exc.message) from None
        except TetherError as exc:
            self._finish(dep_id, success=False, error=exc.message)
            raise
        except Exception as exc:
            message = f"internal error ({type(exc).__name__}); nothing was changed"
            log.error("deployment %s crashed: %s", dep_id, redact(str(exc)))
            self._finish(dep_id, success=False, error=message)
            raise OperationError(message) from None
        finally:
            self._best_effort(lambda: self._prune(dep_id, key))
        # switched, the previous release stopped: revoke rotated-away credentials (issue 8)
        self._best_effort(lambda: revoke_after_deploy(self.parts, dep_id, actor))
        self._finish(dep_id, success=True)
        return f"deployment {dep_id} succeeded"

    def _prune(self, dep_id: int, key: str) -> None:
        """Remove the release copies of the environment that are no longer kept (a failed
        release's, the one before the previous)."""
        if self.parts.runtime is None:
            return
        with self.parts.store.session() as s:
            env_id = _deployment_environment(s, dep_id).id
        prune_copies(self.parts, env_id, key)

    def _finish(self, dep_id: int, success: bool, error: str | None = None) -> None:
        with self.parts.store.session() as s:
            dep = s.get(Deployment, dep_id)
            assert dep is not None
            dep.status = "succeeded" if success else "failed"
            dep.success, dep.error, dep.finished_at = success, error, utcnow()
            if success:
                dep.percent = 100
        self._log(dep_id, "deployment succeeded" if success else
                  f"deployment failed: {error}; the previous release keeps running and no "
                  "service changed state")

    def _deploy(self, dep_id: int, actor: str, key: str, deadline: datetime | None) -> None:
        with self.parts.store.session() as s:
            env = _deployment_environment(s, dep_id)
            removing = pending_removals(s, env.id)
            pending = [(i.id, i.prefix, i.service) for i in live_instances(s, env)
                       if State(i.state) in (State.NEW, State.PROVISIONING)
                       and i.id not in removing]
        for n, (inst_id, prefix, service) in enumerate(pending):
            self._progress(dep_id, 10 + 40 * n // max(len(pending), 1),
                           f"provisioning {prefix} ({service})")
            self.provisioning.provision_instance(inst_id, actor, deadline)
            self._log(dep_id, f"{prefix} is provisioned")
        self._renew_credentials(dep_id, actor)
        with self.parts.store.session() as s:
            env = _deployment_environment(s, dep_id)
            project = env.project
            variables = release_env(s, self.parts.box, env)
            removing = pending_removals(s, env.id)
            in_release = sorted(
                i.id for i in live_instances(s, env)
                if lifecycle.takes_part(State(i.state),
                                        Pending.REMOVE if i.id in removing else None)
                and service_vars(self.parts.box, i))
            release = Release(environment_id=env.id, deployment_id=dep_id,
                              env_enc=self.parts.box.seal(variables),
                              variable_names=sorted(variables), command=project.app_command,
                              instance_ids=in_release, node_id=self.parts.node_id)
            s.add(release)
            s.flush()
            release_id, previous_id = release.id, env.current_release_id
            command, app_dir = project.app_command, project.app_dir
            health_path, timeout, port = project.health_path, project.health_timeout, env.port
            env_id = env.id
            media = media_directories(s, self.parts.box, in_release)
            s.get(Deployment, dep_id).release_id = release_id  # type: ignore[union-attr]
        # every secret component (a DSN's bare password, a SAS signature), as the log files
        secret_values = release_secrets(variables)
        self._progress(dep_id, 55, f"release {release_id} has {len(variables)} variables: "
                       f"{', '.join(sorted(variables))}")
        runtime = self.parts.runtime
        if command and runtime is not None:
            runtime.ensure_address(key, port)
            runtime.wait_restored(key)  # after a start: the current release is back first
            log_path = release_log_file(self.parts.data_dir, key, release_id)
            prepared = self._prepare(dep_id, release_id, env_id, key, app_dir, command,
                                     variables, media)
            self._progress(dep_id, 60, f"starting release {release_id}: {command}")
            try:
                # starting is mostly waiting for the release to become healthy (up to the
                # project's health timeout): no worker slot is held meanwhile
                with self.parts.waiting():
                    running = runtime.start(ReleaseSpec(
                        release_id=release_id, environment_key=key, command=command,
                        env=variables, health_path=health_path, cwd=str(prepared.cwd),
                        health_timeout=float(timeout), log_path=log_path,
                        secrets=secret_values, account=prepared.account,
                        log=lambda lines: self._log_lines(
                            dep_id, ["app: " + redact(line, secret_values) for line in lines]),
                        on_start=lambda started: self._record_process(release_id, started)))
            except ReleaseFailed as exc:
                self._set_release(release_id, "failed")
                raise OperationError(redact(exc.message, secret_values)) from None
            try:
                self._progress(dep_id, 80, f"release {release_id} is healthy at GET "
                               f"{health_path}; its output goes on in its log "
                               f"(`tether logs {key.split('/')[-1]}`)")
                crash_point("deploy.before_switch")
                previous = runtime.switch(key, running)
            except BaseException:  # not switched: the new release goes, the old one serves on
                runtime.stop(running, drain_timeout=0)
                self._set_release(release_id, "failed")
                raise
            # The switch is the commit point: from here the new release serves, so nothing may
            # record this deployment as failed (the states would then describe a release that
            # no longer runs, and a removal could delete data the serving release uses).
            self._best_effort(lambda: self._progress(
                dep_id, 85, f"traffic switched to release {release_id}"))
            crash_point("deploy.after_switch")
            self._settle_switched(dep_id, actor, release_id, previous_id, set(in_release))
            if previous is not None:
                self._best_effort(lambda: self._stop_previous(dep_id, previous))
            return
        self._log(dep_id, "no application command: only the services' states are settled")
        crash_point("deploy.before_switch")
        self._settle(dep_id, actor, release_id, previous_id, set(in_release))

    def _prepare(self, dep_id: int, release_id: int, env_id: int, key: str,
                 app_dir: str | None, command: str, variables: dict[str, str],
                 media: list[Path]) -> PreparedRelease:
        """The release's user and its own copy of the app directory, made before it starts; a
        failure fails the release (nothing was started)."""
        try:
            prepared = prepare_release(self.parts.data_dir, env_id, key, release_id, app_dir,
                                       command, variables, media)
        except BaseException:
            self._set_release(release_id, "failed")
            raise
        self._progress(dep_id, 58, f"release {release_id} {prepared.describe()}")
        return prepared

    def _settle_switched(self, dep_id: int, actor: str, release_id: int,
                         previous_id: int | None, in_release: set[int]) -> None:
        """Settle after the traffic switch. A failure (the store away for a moment) is an error
        that may pass: the operation is retried and the deployment goes on (its retry starts
        the release again and settles), never recorded as failed."""
        try:
            self._settle(dep_id, actor, release_id, previous_id, in_release)
        except Exception as exc:
            raise TransientError(f"release {release_id} serves, but recording it failed "
                                 f"({redact(reason_of(exc))})") from None

    def _stop_previous(self, dep_id: int, previous: RunningRelease) -> None:
        runtime = self.parts.runtime
        assert runtime is not None
        runtime.stop(previous)
        self._set_release(previous.release_id, "stopped")
        self._log(dep_id, f"previous release {previous.release_id} stopped")

    @staticmethod
    def _best_effort(step: Callable[[], object]) -> None:
        """A step after the switch whose failure changes nothing that was decided (a log line,
        stopping the old release: a start stops leftovers): logged, not raised."""
        try:
            step()
        except Exception as exc:
            log.warning("after the traffic switch: %s", redact(reason_of(exc)))

    def _settle(self, dep_id: int, actor: str, release_id: int, previous_id: int | None,
                in_release: set[int]) -> None:
        """In one transaction: the new release is the running one, and every instance settles by
        what it really has."""
        with self.parts.store.session() as s:
            env = _deployment_environment(s, dep_id)
            for inst in live_instances(s, env):
                apply_event(s, actor, "deployed", inst, Event.DEPLOY_SUCCEEDED,
                            in_release=inst.id in in_release)
            for old in s.scalars(select(Release).where(Release.environment_id == env.id,
                                                       Release.status == "running")):
                old.status = "stopped"
            s.get(Release, release_id).status = "running"  # type: ignore[union-attr]
            env.current_release_id = release_id
            audit(s, actor, "release", environment_id=env.id,
                  detail=f"release {release_id} replaces {previous_id or 'nothing'}")

    def _record_process(self, release_id: int, running: RunningRelease) -> None:
        """Where the release's process runs, recorded as soon as it runs (before its health
        wait), so a crash at any point leaves a process a restart can find."""
        record_process(self.parts.store, release_id, running, self.parts.node_id)

    def _renew_credentials(self, dep_id: int, actor: str) -> None:
        """Renew credentials that expire soon (Azure SAS tokens) before the release gets them.
        A failure fails the deployment; the old credentials stay valid until they expire."""
        box = self.parts.box
        with self.parts.store.session() as s:
            env = _deployment_environment(s, dep_id)
            due = []
            for inst in live_instances(s, env):
                provider = get_provider(inst.kind)
                creds = box.open(inst.credentials_enc)
                if (creds and inst.cluster_id and isinstance(provider, Renewable)
                        and lifecycle.takes_part(State(inst.state))
                        and provider.needs_renewal(Credentials(creds))):
                    cluster = s.get(Cluster, inst.cluster_id)
                    assert cluster is not None
                    due.append((inst.id, inst.prefix, provider, cluster_spec(box, cluster),
                                Credentials(creds)))
        for inst_id, prefix, provider, spec, creds in due:
            self._log(dep_id, f"renewing the credentials of {prefix}: they expire soon")
            fresh = provider.renew(spec, naming.resource_names(inst_id), creds)
            with self.parts.store.session() as s:
                inst = s.get(Instance, inst_id)
                assert inst is not None
                inst.credentials_enc = box.seal(fresh.values)
                audit(s, actor, "credentials renewed", instance=inst, detail="expiring soon")

    def _set_release(self, release_id: int, status: str) -> None:
        with self.parts.store.session() as s:
            release = s.get(Release, release_id)
            if release is not None:
                release.status = status
