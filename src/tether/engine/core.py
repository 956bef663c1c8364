"""The engine: what operations do. Provision and remove one instance on its cluster; deploy an
environment (provision what is pending, start the release, switch traffic when healthy, settle
the states). Every step can be repeated safely; a failure leaves things as they were."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import catalog, lifecycle, naming
from tether.actions.clusters import cluster_spec
from tether.actions.common import audit, change_state
from tether.crypto import SecretBox
from tether.engine.worker import Worker
from tether.envvars import live_instances, release_env, service_vars
from tether.errors import ClusterError, OperationError, TetherError
from tether.lifecycle import Action, State
from tether.net import free_port
from tether.providers.base import ClusterSpec, Credentials, PrivateServers, Renewable
from tether.providers.registry import get_provider, private_servers
from tether.redact import redact
from tether.runtime.process import ProcessRuntime, ReleaseFailed, ReleaseSpec
from tether.store.db import Store
from tether.store.models import (
    Cluster,
    Deployment,
    DeploymentLog,
    Environment,
    Instance,
    Operation,
    Project,
    Release,
    utcnow,
)

log = logging.getLogger("tether.engine")


def _deployment_environment(s: Session, dep_id: int) -> Environment:
    dep = s.get(Deployment, dep_id)
    env = s.get(Environment, dep.environment_id) if dep is not None else None
    assert env is not None
    return env


class Engine:
    def __init__(self, store: Store, box: SecretBox, data_dir: Path,
                 runtime: ProcessRuntime | None = None, node_id: str | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.box = box
        self.data_dir = data_dir
        self.runtime = runtime
        self.worker = Worker(store, {
            "provision": self._op_provision,
            "remove": self._op_remove,
            "deploy": self._op_deploy,
        }, node_id=node_id)

    # -- life of the engine -------------------------------------------------------------------

    def start(self) -> None:
        self.start_private_servers()
        self.restore_releases()
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        if self.runtime:
            self.runtime.shutdown()
        self.stop_private_servers()

    def notify(self) -> None:
        self.worker.notify()

    def _spawned(self) -> list[tuple[Instance, Cluster]]:
        with self.store.session() as s:
            rows = s.execute(select(Instance, Cluster).join(
                Cluster, Cluster.id == Instance.cluster_id).where(
                Cluster.managed.is_(True), Cluster.owner_instance_id.is_not(None))).all()
            return [(i, c) for i, c in rows]

    def start_private_servers(self) -> None:
        for inst, cluster in self._spawned():
            try:
                self._private(cluster.kind).start(naming.resource_names(inst.id),
                                                  int(cluster.settings["port"]))
            except TetherError as exc:
                log.error("private server of instance %s did not start: %s", inst.id,
                          redact(exc.message))

    def stop_private_servers(self) -> None:
        for inst, cluster in self._spawned():
            self._private(cluster.kind).stop(naming.resource_names(inst.id),
                                             int(cluster.settings["port"]))

    def _private(self, kind: str) -> PrivateServers:
        return private_servers(kind, self.data_dir / "private")

    def restore_releases(self) -> None:
        """Give every environment its stable address, and start again the release that was
        running when Tether stopped."""
        if self.runtime is None:
            return
        with self.store.session() as s:
            rows = s.execute(select(Environment, Project).join(Project)).all()
            envs = [(e.id, e.port, e.current_release_id, p.name, e.name, p) for e, p in rows]
            s.expunge_all()
        for _env_id, port, release_id, pname, ename, project in envs:
            key = f"{pname}/{ename}"
            try:
                self.runtime.ensure_address(key, port)
            except TetherError as exc:
                log.error("address of %s: %s", key, exc.message)
                continue
            if release_id is None or not project.app_command:
                continue
            with self.store.session() as s:
                release = s.get(Release, release_id)
                env_vars = self.box.open(release.env_enc) if release else None
            if env_vars is None:
                continue
            try:
                running = self.runtime.start(ReleaseSpec(
                    release_id=release_id, environment_key=key, command=project.app_command,
                    env=env_vars, health_path=project.health_path, cwd=project.app_dir,
                    health_timeout=float(project.health_timeout)))
                self.runtime.switch(key, running)
            except ReleaseFailed as exc:
                log.error("release %s of %s did not come back: %s", release_id, key,
                          redact(exc.message, env_vars.values()))

    # -- provisioning -------------------------------------------------------------------------

    def _op_provision(self, op: Operation) -> str:
        assert op.instance_id is not None
        return self.provision_instance(op.instance_id, op.requested_by)

    def _choose_cluster(self, s: Session, inst: Instance, region: str) -> Cluster:
        """The cluster an instance lives on: the first shared cluster of its service, or for
        `--private` a free registered private cluster, else a dedicated server run by Tether."""
        clusters = s.scalars(select(Cluster).where(Cluster.kind == inst.kind,
                                                   Cluster.region == region)
                             .order_by(Cluster.id)).all()
        fitting = [c for c in clusters
                   if catalog.service_name(c.kind, c.version) == inst.service]
        if not inst.private:
            for c in fitting:
                if not c.private:
                    return c
            raise OperationError(f"no shared cluster for {inst.service} in region {region} "
                                 "any more: register one with `tether cluster add`")
        for c in fitting:
            if c.private and c.owner_instance_id is None:
                c.owner_instance_id = inst.id
                return c
        if inst.kind not in catalog.SPAWNABLE_PRIVATE:
            raise OperationError(f"no free private {inst.kind} cluster in region {region}: "
                                 "register one with `tether cluster add ... --private`")
        servers = self._private(inst.kind)
        embedded = servers.version()
        if catalog.service_name(inst.kind, embedded) != inst.service:
            raise OperationError(f"Tether runs private servers of {inst.kind} {embedded}, not "
                                 f"{inst.service}: register a private {inst.service} cluster "
                                 "with `tether cluster add ... --private`")
        names = naming.resource_names(inst.id)
        port = free_port()
        password = secrets.token_urlsafe(24)
        # the admin URL is only known once the server exists: kept as a placeholder with the
        # password (sealed) until `create` returns the real one
        url = f"pending://admin:{password}@127.0.0.1:{port}/"
        cluster = Cluster(name=f"private-{names.base}", kind=inst.kind, region=region,
                          private=True, version=embedded,
                          url_enc=self.box.seal(url), settings={"port": port, "spawned": True},
                          managed=True, owner_instance_id=inst.id)
        s.add(cluster)
        s.flush()
        return cluster

    def provision_instance(self, instance_id: int, actor: str) -> str:
        """Create the instance's resources (idempotent). On failure: clean up, back to `new`
        with the error recorded (rule 5), and raise."""
        names = naming.resource_names(instance_id)
        with self.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            state = State(inst.state)
            if state not in (State.NEW, State.PROVISIONING):
                return f"{inst.prefix} is already provisioned ({state})"
            change_state(s, actor, "provision", inst, State.PROVISIONING)
            env = s.get(Environment, inst.environment_id)
            assert env is not None
            if inst.cluster_id is None:
                inst.cluster_id = self._choose_cluster(s, inst, env.project.region).id
            if inst.secret_enc is None:
                inst.secret_enc = self.box.seal(secrets.token_urlsafe(24))
            cluster = s.get(Cluster, inst.cluster_id)
            assert cluster is not None
            spec = cluster_spec(self.box, cluster)
            secret = self.box.open(inst.secret_enc)
            prefix, kind, spawned = inst.prefix, inst.kind, bool(spec.settings.get("spawned"))
        provider = get_provider(kind)
        try:
            if spawned:
                password = unquote(urlsplit(spec.url).password or "")
                url = self._private(kind).create(names, int(spec.settings["port"]), password)
                spec = self._record_admin_url(spec, url)
            creds = provider.provision(spec, names, secret)
        except Exception as exc:
            reason = exc.message if isinstance(exc, TetherError) else (
                f"{type(exc).__name__}: {exc}")
            reason = redact(reason, [secret, spec.url])
            self._undo_provision(instance_id, kind, spec, spawned, actor, reason)
            raise ClusterError(f"provisioning {prefix} failed: {reason}") from None
        with self.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            inst.credentials_enc = self.box.seal(creds.values)
            inst.last_error = None
            change_state(s, actor, "provisioned", inst,
                         lifecycle.after_provision(State(inst.state), succeeded=True))
        return f"{prefix} is provisioned"

    def _record_admin_url(self, spec: ClusterSpec, url: str) -> ClusterSpec:
        """Keep the admin URL a dedicated server answered with (sealed) and use it."""
        if url != spec.url:
            with self.store.session() as s:
                cluster = s.get(Cluster, spec.id)
                if cluster is not None:
                    cluster.url_enc = self.box.seal(url)
        return dataclasses.replace(spec, url=url)

    def _undo_provision(self, instance_id: int, kind: str, spec: ClusterSpec, spawned: bool,
                        actor: str, reason: str) -> None:
        names = naming.resource_names(instance_id)
        try:
            if spawned:
                self._private(kind).destroy(names, int(spec.settings["port"]))
            else:
                get_provider(kind).deprovision(spec, names)
        except Exception as exc:  # recorded; the retry converges
            reason += f" (clean-up also failed: {redact(str(exc), [spec.url])})"
        with self.store.session() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            if spawned:
                cluster = s.get(Cluster, inst.cluster_id)
                inst.cluster_id = None
                s.flush()
                if cluster is not None:
                    s.delete(cluster)
            elif inst.private and inst.cluster_id is not None:
                cluster = s.get(Cluster, inst.cluster_id)
                if cluster is not None:
                    cluster.owner_instance_id = None
                inst.cluster_id = None
            inst.last_error = reason
            change_state(s, actor, "provision failed", inst,
                         lifecycle.after_provision(State(inst.state), succeeded=False),
                         detail=reason)

    # -- removal ------------------------------------------------------------------------------

    def _op_remove(self, op: Operation) -> str:
        assert op.instance_id is not None
        names = naming.resource_names(op.instance_id)
        with self.store.session() as s:
            inst = s.get(Instance, op.instance_id)
            assert inst is not None
            env = s.get(Environment, inst.environment_id)
            decision = lifecycle.decide(State(inst.state), Action.REMOVE, inst.prefix,
                                        env.name if env else "ENV")
            if not decision.allowed:
                raise OperationError(decision.message)
            if decision.operation is None:
                return decision.message
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            spec = cluster_spec(self.box, cluster) if cluster else None
            kind, prefix = inst.kind, inst.prefix
        if spec is not None:
            try:
                if spec.settings.get("spawned"):
                    self._private(kind).destroy(names, int(spec.settings["port"]))
                else:
                    get_provider(kind).deprovision(spec, names)
            except TetherError as exc:
                self._record_error(op.instance_id, f"removing {prefix} failed: {exc.message}")
                raise
        with self.store.session() as s:
            inst = s.get(Instance, op.instance_id)
            assert inst is not None
            cluster = s.get(Cluster, inst.cluster_id) if inst.cluster_id else None
            if cluster is not None and cluster.owner_instance_id == inst.id:
                if cluster.settings.get("spawned"):
                    inst.cluster_id = None
                    s.flush()
                    s.delete(cluster)
                else:
                    cluster.owner_instance_id = None
            inst.credentials_enc = None
            inst.secret_enc = None
            inst.last_error = None
            change_state(s, op.requested_by, "removed", inst, State.REMOVED,
                         detail="data deleted for good")
        return f"{prefix} is removed: its data is deleted"

    def _record_error(self, instance_id: int, message: str) -> None:
        with self.store.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is not None:
                inst.last_error = message

    # -- deployment ---------------------------------------------------------------------------

    def _log(self, deployment_id: int, line: str) -> None:
        with self.store.session() as s:
            s.add(DeploymentLog(deployment_id=deployment_id, line=line[:4000]))

    def _progress(self, deployment_id: int, percent: int, line: str | None = None) -> None:
        with self.store.session() as s:
            dep = s.get(Deployment, deployment_id)
            if dep is not None:
                dep.percent = percent
        if line:
            self._log(deployment_id, line)

    def _op_deploy(self, op: Operation) -> str:
        assert op.deployment_id is not None
        dep_id = op.deployment_id
        with self.store.session() as s:
            dep = s.get(Deployment, dep_id)
            assert dep is not None
            if dep.status in ("succeeded", "failed"):
                return f"deployment {dep_id} already {dep.status}"
            dep.status, dep.started_at = "running", utcnow()
            env = s.get(Environment, dep.environment_id)
            assert env is not None
            key = f"{env.project.name}/{env.name}"
            actor = f"deployment {dep_id} (asked by {dep.requested_by})"
        self._progress(dep_id, 5, f"deployment {dep_id} of {key} started")
        try:
            self._deploy(dep_id, actor, key)
        except TetherError as exc:
            self._finish(dep_id, success=False, error=exc.message)
            raise
        except Exception as exc:
            message = f"internal error ({type(exc).__name__}); nothing was changed"
            log.error("deployment %s crashed: %s", dep_id, redact(str(exc)))
            self._finish(dep_id, success=False, error=message)
            raise OperationError(message) from None
        self._finish(dep_id, success=True)
        return f"deployment {dep_id} succeeded"

    def _finish(self, dep_id: int, success: bool, error: str | None = None) -> None:
        with self.store.session() as s:
            dep = s.get(Deployment, dep_id)
            assert dep is not None
            dep.status = "succeeded" if success else "failed"
            dep.success, dep.error, dep.finished_at = success, error, utcnow()
            if success:
                dep.percent = 100
        self._log(dep_id, "deployment succeeded" if success else
                  f"deployment failed: {error}; the previous release keeps running and no "
                  "service changed state")

    def _deploy(self, dep_id: int, actor: str, key: str) -> None:
        with self.store.session() as s:
            env = _deployment_environment(s, dep_id)
            pending = [(i.id, i.prefix, i.service) for i in live_instances(s, env)
                       if State(i.state) in (State.NEW, State.PROVISIONING)]
        for n, (inst_id, prefix, service) in enumerate(pending):
            self._progress(dep_id, 10 + 40 * n // max(len(pending), 1),
                           f"provisioning {prefix} ({service})")
            self.provision_instance(inst_id, actor)
            self._log(dep_id, f"{prefix} is provisioned")
        self._renew_credentials(dep_id, actor)
        with self.store.session() as s:
            env = _deployment_environment(s, dep_id)
            project = env.project
            variables = release_env(s, self.box, env)
            in_release = {i.id for i in live_instances(s, env)
                          if lifecycle.gets_variables_next(State(i.state))
                          and service_vars(self.box, i)}
            release = Release(environment_id=env.id, deployment_id=dep_id,
                              env_enc=self.box.seal(variables),
                              variable_names=sorted(variables), command=project.app_command)
            s.add(release)
            s.flush()
            release_id, previous_id = release.id, env.current_release_id
            command, app_dir = project.app_command, project.app_dir
            health_path, timeout, port = project.health_path, project.health_timeout, env.port
            s.get(Deployment, dep_id).release_id = release_id  # type: ignore[union-attr]
        secret_values = [v for k, v in variables.items() if k != "STAGE"]
        self._progress(dep_id, 55, f"release {release_id} has {len(variables)} variables: "
                       f"{', '.join(sorted(variables))}")
        if command and self.runtime is not None:
            self.runtime.ensure_address(key, port)
            self._progress(dep_id, 60, f"starting release {release_id}: {command}")
            try:
                running = self.runtime.start(ReleaseSpec(
                    release_id=release_id, environment_key=key, command=command,
                    env=variables, health_path=health_path, cwd=app_dir,
                    health_timeout=float(timeout),
                    log=lambda line: self._log(dep_id, "app: " + redact(line, secret_values))))
            except ReleaseFailed as exc:
                self._set_release(release_id, "failed")
                raise OperationError(redact(exc.message, secret_values)) from None
            self._progress(dep_id, 80, f"release {release_id} is healthy at GET {health_path}")
            previous = self.runtime.switch(key, running)
            self._progress(dep_id, 85, f"traffic switched to release {release_id}")
            if previous is not None:
                self.runtime.stop(previous)
                self._log(dep_id, f"previous release {previous.release_id} stopped")
        else:
            self._log(dep_id, "no application command: only the services' states are settled")
        with self.store.session() as s:
            env = _deployment_environment(s, dep_id)
            for inst in live_instances(s, env):
                target = lifecycle.settle(State(inst.state), in_release=inst.id in in_release)
                change_state(s, actor, "deployed", inst, target)
            for old in s.scalars(select(Release).where(Release.environment_id == env.id,
                                                       Release.status == "running")):
                old.status = "stopped"
            s.get(Release, release_id).status = "running"  # type: ignore[union-attr]
            env.current_release_id = release_id
            audit(s, actor, "release", environment_id=env.id,
                  detail=f"release {release_id} replaces {previous_id or 'nothing'}")

    def _renew_credentials(self, dep_id: int, actor: str) -> None:
        """Renew credentials that expire soon (Azure SAS tokens) before the release gets them.
        A failure fails the deployment; the old credentials stay valid until they expire."""
        with self.store.session() as s:
            env = _deployment_environment(s, dep_id)
            due = []
            for inst in live_instances(s, env):
                provider = get_provider(inst.kind)
                creds = self.box.open(inst.credentials_enc)
                if (creds and inst.cluster_id and isinstance(provider, Renewable)
                        and lifecycle.gets_variables_next(State(inst.state))
                        and provider.needs_renewal(Credentials(creds))):
                    cluster = s.get(Cluster, inst.cluster_id)
                    assert cluster is not None
                    due.append((inst.id, inst.prefix, provider, cluster_spec(self.box, cluster),
                                Credentials(creds)))
        for inst_id, prefix, provider, spec, creds in due:
            self._log(dep_id, f"renewing the credentials of {prefix}: they expire soon")
            fresh = provider.renew(spec, naming.resource_names(inst_id), creds)
            with self.store.session() as s:
                inst = s.get(Instance, inst_id)
                assert inst is not None
                inst.credentials_enc = self.box.seal(fresh.values)
                audit(s, actor, "credentials renewed", instance=inst, detail="expiring soon")

    def _set_release(self, release_id: int, status: str) -> None:
        with self.store.session() as s:
            release = s.get(Release, release_id)
            if release is not None:
                release.status = status
