"""The engine: executes the operations the actions queued, through the worker.

One module per kind of work (CloudNativePG keeps one file per phase): `provisioning` (provision
and remove one instance), `deploy` (an environment's deployment), `releases` (the releases that
run), `private` (dedicated servers Tether runs), `reconcile` (the slow pass that finds and repairs
drift), `rotation` (new credentials without downtime), `backups` (backup, restore, copy and
verify), `schedules` (scheduled backups and retention), `worker` (leased operations). This
module assembles them; it never imports `actions/`, and it never decides a state:
`tether.lifecycle` does, through `store.records`."""

from __future__ import annotations

import time
from pathlib import Path

from tether.crypto import SecretBox
from tether.engine.backups import Backups
from tether.engine.deploy import Deploying
from tether.engine.parts import EngineParts
from tether.engine.private import PrivateServers
from tether.engine.provisioning import Provisioning
from tether.engine.reconcile import Reconciler, configured_interval
from tether.engine.releases import Releases
from tether.engine.rotation import Rotation
from tether.engine.schedules import Scheduler
from tether.engine.schedules import configured_interval as schedule_interval
from tether.engine.worker import Worker
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store
from tether.store.models import Operation


class Engine:
    def __init__(self, store: Store, box: SecretBox, data_dir: Path,
                 runtime: ProcessRuntime | None = None, node_id: str | None = None,
                 max_parallel: int = 4) -> None:
        self.parts = EngineParts(store, box, data_dir, runtime, node_id)
        self.store, self.box, self.data_dir, self.runtime = store, box, data_dir, runtime
        self.node_id = node_id
        self.provisioning = Provisioning(self.parts)
        self.deploying = Deploying(self.parts, self.provisioning)
        self.releases = Releases(self.parts)
        self.private_servers = PrivateServers(self.parts)
        self.rotation = Rotation(self.parts)
        self.backups = Backups(self.parts)
        self.worker = Worker(store, {
            "provision": self._op_provision,
            "remove": self._op_remove,
            "deploy": self.deploying.run,
            "rotate": self.rotation.run,
            "backup": self.backups.run_backup,
            "restore": self.backups.run_restore,
            "copy": self.backups.run_copy,
            "verify": self.backups.run_verify,
            "delete-backup": self.backups.run_delete,
        }, max_parallel=max_parallel, node_id=node_id)
        self.parts.waiting = self.worker.waiting
        self.parts.finish_in = self.worker.finish_in
        self.parts.prepared = self.worker.prepared
        # a waited provision's plan is made in the transaction that adds the instance
        self.worker.preparers["provision"] = self.provisioning.prepare
        self.reconciler = Reconciler(store, box, data_dir, node_id=node_id)
        self.scheduler = Scheduler(self.parts)

    def start(self) -> None:
        self.private_servers.start()
        self.backups.sweep_staging()
        self.releases.restore_in_background()
        self.worker.start()
        self.provisioning.recover_stranded()
        interval = configured_interval()
        if interval > 0:
            self.reconciler.start(interval)
        every = schedule_interval()
        if every > 0:
            self.scheduler.start(every, self.worker.notify)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop in order: the drift pass, the worker (operations under way get what is left of
        `timeout` seconds, then are handed back), the releases' processes, the private
        servers."""
        until = time.monotonic() + timeout
        self.reconciler.stop(min(5.0, timeout / 3))
        self.scheduler.stop(min(5.0, timeout / 3))
        self.worker.stop(max(0.0, until - time.monotonic()))
        if self.runtime:
            self.runtime.shutdown()
        self.private_servers.stop()

    def notify(self) -> None:
        self.worker.notify()

    def provision_instance(self, instance_id: int, actor: str) -> str:
        return self.provisioning.provision_instance(instance_id, actor)

    def _op_provision(self, op: Operation) -> str:
        assert op.instance_id is not None
        return self.provisioning.provision_instance(op.instance_id, op.requested_by,
                                                    op.deadline, operation_id=op.id)

    def _op_remove(self, op: Operation) -> str:
        assert op.instance_id is not None
        return self.provisioning.remove_instance(op.instance_id, op.requested_by, op.deadline,
                                                 operation_id=op.id)
