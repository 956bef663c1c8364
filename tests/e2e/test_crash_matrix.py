"""The crash matrix on the embedded default (PostgreSQL run by `tether up`), and real `kill -9`
of `tether up` mid-provision and mid-deploy. See tests/crash.py for what each cell proves; the
other providers' columns run beside their servers' fixtures (tests/integration/*/)."""

from __future__ import annotations

import shutil
import signal
import sys
import time

import pytest

from tests.conftest import world_traversable_tmpdir
from tests.crash import CrashRun, Provider, run_matrix

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # restarts tether up 8 times: minutes on a loaded machine
def test_crash_matrix_postgres() -> None:
    run_matrix(Provider("postgres", "postgres", embedded=True))


def test_kill_9_mid_provision_and_mid_deploy() -> None:
    """A real SIGKILL from outside, at whatever point the work happens to be."""
    base = world_traversable_tmpdir("tether-kill9-")
    run = CrashRun(base, Provider("postgres", "postgres", embedded=True))
    try:
        run.start(None)
        run.tether.ok("project", "create", run.project, "--app-command",
                      f"{sys.executable} examples/hello/app.py",
                      "--health-path", "/health", "--no-database")
        run.ok("project", "env-vars", "-e", "test", "--set", "CRASH_MARKER", run.marker)
        for n in range(3):
            run.ok("service", "add", "test", "postgres", "--prefix", f"P{n}", "--provision",
                   "--no-wait")
        time.sleep(0.3)
        assert run.tether.proc is not None
        run.tether.proc.send_signal(signal.SIGKILL)
        run.tether.proc.wait(30)
        run.start(None)
        for n in range(3):
            run.wait_instance(f"P{n}", "pending attachment")
        run.check_resources()
        dep = run.ok("deploy", "test", "--no-wait")
        time.sleep(1.0)  # the app is starting or being health-checked
        run.tether.proc.send_signal(signal.SIGKILL)
        run.tether.proc.wait(30)
        run.start(None)
        run.wait_deployment(dep["id"])
        for n in range(3):
            run.wait_instance(f"P{n}", "attached")
        run.check_resources()
        run.check_app()
        waited = run.tether.ok("service", "wait", "test", "P0", "-p", run.project, "--json")
        assert waited.json()["state"] == "attached"
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
