"""Dedicated servers Tether runs for `--private` instances: started with Tether, stopped with it.
Each belongs to the node that made it (`clusters.node_id`): a node starts and stops only its own."""

from __future__ import annotations

import logging

from sqlalchemy import or_, select

from tether import naming
from tether.engine.parts import EngineParts
from tether.errors import TetherError
from tether.redact import redact
from tether.store.models import Cluster, Instance

log = logging.getLogger("tether.engine")


class PrivateServers:
    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts

    def _mine(self) -> list[tuple[int, str, int]]:
        """(instance id, kind, port) of the dedicated servers this node runs."""
        with self.parts.store.session() as s:
            q = select(Instance, Cluster).join(Cluster, Cluster.id == Instance.cluster_id).where(
                Cluster.managed.is_(True), Cluster.owner_instance_id.is_not(None))
            if self.parts.node_id is not None:
                q = q.where(or_(Cluster.node_id == self.parts.node_id, Cluster.node_id.is_(None)))
            return [(i.id, c.kind, int(c.settings["port"])) for i, c in s.execute(q).all()
                    if c.settings.get("spawned")]

    def start(self) -> None:
        for inst_id, kind, port in self._mine():
            try:
                self.parts.private(kind).start(naming.resource_names(inst_id), port)
            except TetherError as exc:
                log.error("private server of instance %s did not start: %s", inst_id,
                          redact(exc.message))

    def stop(self) -> None:
        for inst_id, kind, port in self._mine():
            try:
                self.parts.private(kind).stop(naming.resource_names(inst_id), port)
            except TetherError as exc:
                log.error("private server of instance %s did not stop: %s", inst_id,
                          redact(exc.message))
