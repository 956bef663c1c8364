"""The crash matrix for rabbitmq (see tests/crash.py): `tether up` killed at every crash point of
provision, deploy, detach-then-deploy and remove, then started again, converges with nothing
orphaned on the real server and one application process serving."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import world_traversable_tmpdir
from tests.crash import CrashRun, Provider, record

pytestmark = pytest.mark.e2e


def test_crash_matrix_rabbitmq(rabbit: Any) -> None:
    base = world_traversable_tmpdir("tether-crash-rabbitmq-")
    settings = [f"--setting={k}={v}" for k, v in rabbit.settings.items()]
    run = CrashRun(base, Provider("rabbitmq", "rabbitmq", region="local",
                                  cluster_args=["--url", rabbit.admin_url, *settings]))
    try:
        record("rabbitmq", run.run())
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
