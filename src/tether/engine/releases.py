"""The releases Tether runs: give every environment its stable address again at start, and bring
back the release that was running when Tether stopped."""

from __future__ import annotations

import logging

from sqlalchemy import select

from tether.engine.parts import EngineParts
from tether.errors import TetherError
from tether.redact import redact
from tether.runtime.process import ReleaseFailed, ReleaseSpec
from tether.store.models import Environment, Project, Release

log = logging.getLogger("tether.engine")


class Releases:
    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts

    def restore(self) -> None:
        """Give every environment its stable address, and start again the release that was
        running when Tether stopped."""
        runtime = self.parts.runtime
        if runtime is None:
            return
        with self.parts.store.session() as s:
            rows = s.execute(select(Environment, Project).join(Project)).all()
            envs = [(e.id, e.port, e.current_release_id, p.name, e.name, p) for e, p in rows]
            s.expunge_all()
        for _env_id, port, release_id, pname, ename, project in envs:
            key = f"{pname}/{ename}"
            try:
                runtime.ensure_address(key, port)
            except TetherError as exc:
                log.error("address of %s: %s", key, exc.message)
                continue
            if release_id is None or not project.app_command:
                continue
            with self.parts.store.session() as s:
                release = s.get(Release, release_id)
                env_vars = self.parts.box.open(release.env_enc) if release else None
            if env_vars is None:
                continue
            try:
                running = runtime.start(ReleaseSpec(
                    release_id=release_id, environment_key=key, command=project.app_command,
                    env=env_vars, health_path=project.health_path, cwd=project.app_dir,
                    health_timeout=float(project.health_timeout)))
                runtime.switch(key, running)
            except ReleaseFailed as exc:
                log.error("release %s of %s did not come back: %s", release_id, key,
                          redact(exc.message, env_vars.values()))
