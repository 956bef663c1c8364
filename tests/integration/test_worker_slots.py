"""A deploy waiting for its release to become healthy holds no worker slot (issue 12: "4 worker
threads, and a deploy holds one through its health wait (up to 600 s): four slow deploys stall
every other environment"). With one slot, an environment's provision runs and finishes while
another environment's deploy is still waiting for its application."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plane import wait_op
from tether.actions import clusters, deployments, projects, services
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store

pytestmark = pytest.mark.integration

#: an application that answers its health check only once the file named by argv[1] exists
SLOW_APP = """
import http.server, os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])),
                                http.server.SimpleHTTPRequestHandler).serve_forever()
"""


@pytest.fixture
def flag() -> Iterator[Path]:
    """Where the test tells the slow application to start serving: a directory any account can
    read (the application runs under an account of its own)."""
    where = Path(tempfile.mkdtemp(prefix="tether-slots-"))
    where.chmod(0o755)
    yield where / "go"
    shutil.rmtree(where, ignore_errors=True)


def log_lines(ctx: Context, dep_id: object) -> list[str]:
    logs = deployments.get_deployment(ctx, int(str(dep_id)))["logs"]
    assert isinstance(logs, list)
    return [str(entry["line"]) for entry in logs]


def test_a_deploy_waiting_for_health_holds_no_worker_slot(tmp_path: Path, flag: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'tether.db'}")
    store.migrate()
    box = SecretBox.from_data_dir(data)
    engine = Engine(store, box, data, runtime=ProcessRuntime())
    engine.worker.max_parallel = 1  # one slot: whatever holds it stalls every environment
    ctx = Context(store=store, box=box, data_dir=data, actor="alice", notify=engine.notify)
    media = data / "media"
    media.mkdir()
    clusters.add_cluster(ctx, "local-files", "local", f"file://{media}", name="media",
                         settings={"base_dir": str(media),
                                   "public_url": "http://127.0.0.1:1/media/"})
    app = tmp_path / "app"
    app.mkdir()
    (app / "slow.py").write_text(SLOW_APP)
    projects.create_project(ctx, "slow", app_command=f"{sys.executable} slow.py {flag}",
                            app_dir=str(app), health_timeout=120)
    projects.create_project(ctx, "quick")
    engine.start()
    try:
        dep = deployments.deploy(ctx, "slow", "test")
        deadline = time.monotonic() + 60
        while not any("starting release" in line for line in log_lines(ctx, dep["id"])):
            assert time.monotonic() < deadline, "the slow deploy never started its release"
            time.sleep(0.05)

        # the slow deploy waits for its health check: the provision of another environment is
        # claimed and finished meanwhile
        added = services.add(ctx, "quick", "test", "local-media", "MEDIA", provision=True)
        assert wait_op(ctx, added["operation"]["id"], timeout=30)["status"] == "succeeded"
        assert deployments.get_deployment(ctx, int(str(dep["id"])))["finished_at"] is None

        flag.touch()  # now the slow application serves, and its deploy finishes
        assert wait_op(ctx, dep["operation"]["id"], timeout=60)["status"] == "succeeded"
    finally:
        engine.stop()
        store.dispose()
